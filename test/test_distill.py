"""A light vehicle encoder trained against a teacher model directory (rawdiff.models.distill):
codebook, decoder and diffusion decoder are the teacher's, the encoder and prior are new."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic import ROOT

TINY = os.path.join(ROOT, "config", "models", "vehicle_encoder_tiny.yaml")


@pytest.fixture(scope="module")
def teacher(tiny_ldm):
    """The fixture embedder with a tiny diffusion decoder (conftest): a teacher with every part."""
    return tiny_ldm[0]


@pytest.fixture(scope="module")
def student(teacher, tiny_corpus, tmp_path_factory):
    from rawdiff.train import train

    tmp = tmp_path_factory.mktemp("student")
    out = str(tmp / "model")
    summary = train([TINY], ["model.params.teacher=%s" % teacher, "data.params.root=%s" % tiny_corpus],
                    logdir=str(tmp / "runs"), export=out, log_every_n_steps=1)
    assert summary["global_step"] == 4 and summary["model_dir"] == out
    return out, summary


def _meta(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)


def test_the_student_keeps_the_teachers_codebook_decoder_and_diffusion(teacher, student):
    from rawdiff.codec.modeldir import compute_model_id, read_model_dir

    out, summary = student
    t_state = load_file(os.path.join(teacher, "embedder.safetensors"))
    s_state = load_file(os.path.join(out, "embedder.safetensors"))
    assert {k for k in s_state if not k.startswith("encoder.")} == {k for k in t_state if not k.startswith("encoder.")}
    for k, v in s_state.items():
        if not k.startswith("encoder."):
            assert torch.equal(v, t_state[k]), k
    assert not any("norm" in k for k in s_state if k.startswith("encoder."))
    with open(os.path.join(teacher, "diffusion.safetensors"), "rb") as a, \
            open(os.path.join(out, "diffusion.safetensors"), "rb") as b:
        assert a.read() == b.read()
    info = read_model_dir(out)
    embedder_cfg = info["config"]["model"]["params"]["embedder"]
    assert embedder_cfg["encoder"]["norm"] == "none" and embedder_cfg["encoder"]["stem"] == 4
    assert info["config"]["model"]["target"] == "vqgan" and info["config"]["diffusion"]["model"]["target"] == "ldm"
    assert info["config"]["encoder_distill"]["model"]["target"] == "encoder_distill"
    meta, t_meta = info["meta"], _meta(teacher)
    assert meta["encoder_teacher_model_id"] == t_meta["model_id"] != meta["model_id"] == compute_model_id(out)
    assert meta["diffusion"] == t_meta["diffusion"] and meta["training"]["global_step"] == 4
    assert meta["prior"]["frames"] == 3  # the run's codec.prior_frames, not the teacher's
    card = open(os.path.join(out, "MODEL_CARD.md")).read()
    assert "trained against the encoder of model %s" % t_meta["model_id"] in card
    (csv,) = glob.glob(os.path.join(summary["run_dir"], "csv", "**", "metrics.csv"), recursive=True)
    header = open(csv).readline()
    for key in ("train/latent", "train/rec", "train/agreement", "val/psnr", "val/psnr_teacher", "val/agreement"):
        assert key in header, key


def test_the_student_codes_decode_on_both_paths(student, tiny_corpus):
    from rawdiff.codec import Codec
    from rawdiff.data.dataset import read_index
    from rawdiff.raw import read_raw

    out, _ = student
    codec = Codec.load(out, device="cpu")
    assert codec.embedder.encoder.plain
    frame = read_raw(read_index(os.path.join(tiny_corpus, "test.txt"))[0])
    payload = codec.compress(frame)
    fast = codec.decompress(payload)
    slow = codec.decompress(payload, mode="diffusion", steps=2, seed=0)
    assert fast.shape == slow.shape == (frame.height, frame.width, 3) and fast.dtype == np.uint8


def test_latent_loss_pulls_the_student_to_the_teacher(teacher):
    """A few hundred latent-only steps on one batch must raise the code agreement: the
    loss and the frozen parts are wired the right way round."""
    from rawdiff.models.distill import EncoderDistill

    torch.manual_seed(0)
    model = EncoderDistill(teacher, encoder={"stem": 4, "ch": 16, "ch_mult": [1], "norm": "none", "act": "relu"},
                           rec_weight=0.0, learning_rate=3e-3).train()
    codebooks = list(model.embedder.quantize.parameters())  # the teacher's: one per quantizer stage
    assert len(codebooks) == len(model.embedder.stages) == 3
    frozen = [p.clone() for p in model.embedder.decoder.parameters()] + [c.clone() for c in codebooks]
    batch = {"raw": torch.rand(2, 4, 32, 32), "rgb": torch.rand(2, 3, 64, 64),
             "wb_gains": torch.tensor([[2.0, 1.0, 1.5], [1.6, 1.2, 2.2]]), "color_matrix": torch.eye(3).repeat(2, 1, 1)}
    opt = torch.optim.Adam(model.embedder.encoder.parameters(), lr=3e-3)
    with torch.no_grad():
        first = model.losses(batch, with_rec=False)
    for _ in range(80):
        out = model.losses(batch, with_rec=False)
        opt.zero_grad()
        out["latent"].backward()
        opt.step()
    with torch.no_grad():
        last = model.losses(batch, with_rec=True)
    assert float(last["latent"]) < 0.25 * float(first["latent"])
    assert float(last["agreement"]) > float(first["agreement"]) + 0.3
    assert float(last["commitment"]) > 0  # every stage's, summed
    after = list(model.embedder.decoder.parameters()) + codebooks
    assert all(torch.equal(a, b) for a, b in zip(frozen, after))
    idle = [b for name, b in model.embedder.quantize.named_buffers() if name.endswith("idle_steps")]
    assert len(idle) == 3 and sum(int(b.sum()) for b in idle) == 0  # no dead-code restart on a frozen codebook
    assert not bool(model.embedder.quantize.initialised.any())  # nor a codebook drawn anew from the data


def test_a_teacher_must_be_a_model_directory(tmp_path):
    from rawdiff.models.distill import EncoderDistill

    with pytest.raises(ValueError, match="teacher must be the path"):
        EncoderDistill()  # config/models/vehicle_encoder.yaml leaves it to the command line
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EncoderDistill(str(tmp_path / "nowhere"))


def test_the_plain_encoder_exports_to_onnx_with_torch_parity(student, tiny_corpus, tmp_path):
    import shutil

    from rawdiff.codec import Codec
    from rawdiff.data.dataset import read_index
    from rawdiff.export import onnx as onnx_export
    from rawdiff.raw import read_raw

    model_dir = str(tmp_path / "model")
    shutil.copytree(student[0], model_dir)
    record = onnx_export.export_encoder(model_dir)
    assert record["check_agreement"] >= onnx_export.MIN_AGREEMENT
    torch_codec, onnx_codec = Codec.load(model_dir, device="cpu"), Codec.load(model_dir, device="cpu", backend="onnx")
    for path in read_index(os.path.join(tiny_corpus, "test.txt")):
        frame = read_raw(path)
        ref, ours = torch_codec.encode_codes(frame), onnx_codec.encode_codes(frame)
        assert len(ours) == len(ref) == 3  # every quantizer stage
        same = sum(int(np.sum(a == b)) for a, b in zip(ours, ref))
        assert same / sum(g.size for g in ref) >= onnx_export.MIN_AGREEMENT


def test_export_into_the_teacher_and_resume_against_another_teacher_are_refused(teacher, student, tmp_path):
    from rawdiff.models.distill import EncoderDistill

    model = EncoderDistill(teacher, encoder={"stem": 4, "ch": 8, "ch_mult": [1], "norm": "none", "act": "relu"})
    with pytest.raises(ValueError, match="would overwrite its teacher"):
        model.export_config({}, teacher)
    assert os.path.isfile(os.path.join(teacher, "diffusion.safetensors"))
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["teacher_model_id"] == _meta(teacher)["model_id"]
    other = EncoderDistill(student[0], encoder={"stem": 4, "ch": 8, "ch_mult": [1], "norm": "none", "act": "relu"})
    with pytest.raises(ValueError, match="trained against teacher model %s" % checkpoint["teacher_model_id"]):
        other.on_load_checkpoint(checkpoint)


def test_a_student_can_start_from_another_students_encoder(teacher, student, tmp_path):
    from rawdiff.models.distill import EncoderDistill

    tiny = {"stem": 4, "ch": 8, "ch_mult": [1], "num_res_blocks": 1, "norm": "none", "act": "relu"}
    model = EncoderDistill(teacher, encoder=dict(tiny, global_context=True), init_encoder=student[0])
    given = load_file(os.path.join(student[0], "embedder.safetensors"))
    for k, v in model.embedder.encoder.state_dict().items():
        if k.startswith("context."):
            assert "encoder." + k not in given  # new: zero-initialised
        else:
            assert torch.equal(v, given["encoder." + k]), k
    extras = model.export_extras(str(tmp_path))  # what the exported model.json records
    assert extras["encoder_init"]["model_id"] == _meta(student[0])["model_id"]
    assert extras["encoder_teacher_training"] == _meta(teacher)["training"]
    with pytest.raises(ValueError, match="another encoder shape"):
        EncoderDistill(teacher, encoder=dict(tiny, ch=16), init_encoder=student[0])
