"""A decoder side stored as 8-bit differences from the model's own weights
(rawdiff.models.decoder_update, `rawdiff decoder-update`): the arithmetic, what it refuses,
and a model directory made of one on frozen codes that decodes as the decoder it came from."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic import ROOT

from rawdiff.cli import main
from rawdiff.codec import Codec
from rawdiff.codec.modeldir import DECODER_UPDATE_FILE, compute_model_id, read_model_dir
from rawdiff.models.decoder_update import (
    LEVELS,
    UPDATE_FORMAT,
    apply_update,
    embedder_weights,
    make_update,
    update_error,
)
from rawdiff.train import train

TINY = os.path.join(ROOT, "config", "models", "tiny.yaml")
SCALABLE = ["model.params.embedder.embed_dim=8", "model.params.embedder.linear_paths=true",
            "model.params.embedder.encoder_network=false", "model.params.embedder.quality_channel=true",
            "model.params.embedder.rate_lambda=0.02", "model.params.embedder.skip_code=true"]
STAGE = ["model.params.frozen_codes=true", "model.params.embedder.synthesis=per_quality"]


def weights(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"quantize.codebooks.0.embedding.weight": torch.randn(16, 8, generator=g),
            "decoder.conv.weight": torch.randn(6, 4, 3, 3, generator=g),
            "decoder.conv.bias": torch.randn(6, generator=g),
            "decoder.norm.gain": torch.tensor(1.5),
            "decoder.steps": torch.tensor([3, 4]),
            "synthesis.weight": torch.randn(5, 8, generator=g),
            "refine.weight": torch.zeros(2, 2)}


def trained_on(base, seed: int = 1, size: float = 0.2):
    """``base`` with its decoder side moved as further training moves it."""
    g = torch.Generator().manual_seed(seed)
    new = {k: v.clone() for k, v in base.items()}
    for k in ("decoder.conv.weight", "decoder.conv.bias", "synthesis.weight"):
        new[k] = base[k] + size * base[k].std() * torch.randn(base[k].shape, generator=g)
    new["decoder.norm.gain"] = torch.tensor(1.25)
    new["decoder.steps"] = torch.tensor([3, 5])
    return new


# --------------------------------------------------------------------------- the arithmetic


def test_an_update_holds_eight_bit_differences_a_scale_a_row_and_only_what_changed():
    base = weights()
    new = trained_on(base)
    update = make_update(base, new)
    assert set(update) == {"decoder.conv.weight", "decoder.conv.weight:scale", "decoder.conv.bias",
                           "decoder.conv.bias:scale", "synthesis.weight", "synthesis.weight:scale",
                           "decoder.norm.gain", "decoder.steps"}  # not the codebook, not refine (unchanged)
    assert update["decoder.conv.weight"].dtype == torch.int8
    assert update["decoder.conv.weight:scale"].shape == (6,)
    assert update["decoder.conv.bias:scale"].shape == (6,)
    assert int(update["decoder.conv.weight"].abs().max()) == LEVELS  # each row's largest difference
    applied = apply_update(base, update)
    for key in ("decoder.conv.weight", "decoder.conv.bias", "synthesis.weight"):
        rows = (new[key] - base[key]).reshape(new[key].shape[0], -1)
        step = rows.abs().amax(1) / LEVELS
        err = (applied[key] - new[key]).reshape(rows.shape).abs()
        assert bool((err <= step[:, None] / 2 + 1e-6).all()), key  # half a step at most, row by row
        assert applied[key].dtype == base[key].dtype
    assert float(applied["decoder.norm.gain"]) == 1.25  # single values and integers: the new value itself
    assert torch.equal(applied["decoder.steps"], torch.tensor([3, 5]))
    assert torch.equal(applied["quantize.codebooks.0.embedding.weight"], base["quantize.codebooks.0.embedding.weight"])
    assert torch.equal(base["decoder.conv.weight"], weights()["decoder.conv.weight"])  # base untouched
    worst, relative = update_error(base, new, update)
    assert 0 < worst < 0.05 and 0 < relative < 0.01
    assert make_update(base, {k: v.clone() for k, v in base.items()}) == {}


def test_rounding_the_difference_beats_rounding_the_weights():
    base = weights()
    new = trained_on(base, size=0.2)
    update = make_update(base, new)
    _, relative = update_error(base, new, update)
    rows = new["decoder.conv.weight"].reshape(6, -1)
    step = rows.abs().amax(1, keepdim=True) / LEVELS
    direct = (torch.round(rows / step) * step - rows).norm() / (new["decoder.conv.weight"]
                                                                - base["decoder.conv.weight"]).norm()
    assert relative * 3 < float(direct)


def test_an_update_refuses_to_move_the_codes_or_other_weights():
    base = weights()
    moved = trained_on(base)
    moved["quantize.codebooks.0.embedding.weight"] = moved["quantize.codebooks.0.embedding.weight"] + 1e-3
    with pytest.raises(ValueError, match="quantize.codebooks.0.embedding.weight differs, and it is not on the "
                                         "decoder side"):
        make_update(base, moved)
    fewer = dict(base)
    del fewer["refine.weight"]
    with pytest.raises(ValueError, match="other weights: refine.weight"):
        make_update(base, fewer)
    wider = dict(base, **{"synthesis.weight": torch.zeros(10, 8)})
    with pytest.raises(ValueError, match=r"synthesis.weight has shape \(5, 8\) in one embedder, \(10, 8\)"):
        make_update(base, wider)
    nan = dict(base, **{"synthesis.weight": torch.full((5, 8), float("nan"))})
    with pytest.raises(ValueError, match="synthesis.weight is not finite"):
        make_update(base, nan)


@pytest.mark.parametrize("change, message", [
    (lambda u: u.update({"encoder.conv.weight": torch.zeros(1, dtype=torch.int8)}),
     "changes encoder.conv.weight, which is not on the decoder side"),
    (lambda u: u.update({"decoder.extra": torch.zeros(2)}), "changes decoder.extra, which the embedder's weights "
                                                            "do not have"),
    (lambda u: u.update({"decoder.conv.bias": torch.zeros(7, dtype=torch.int8)}),
     r"decoder.conv.bias of shape \(7,\) for weights of shape \(6,\)"),
    (lambda u: u.update({"decoder.conv.weight:scale": torch.ones(5)}), "needs 6 floating-point scales"),
    (lambda u: u["decoder.conv.weight:scale"].__setitem__(0, -1.0), "must be finite and not negative"),
    (lambda u: u["decoder.conv.weight:scale"].__setitem__(0, float("inf")), "must be finite and not negative"),
    (lambda u: u["decoder.conv.weight"].__setitem__((0, 0, 0, 0), -128), r"must be in \[-127, 127\]"),
    (lambda u: u.pop("decoder.conv.weight:scale"), "decoder.conv.weight is torch.int8, which does not fit weights "
                                                   "of dtype torch.float32"),
    (lambda u: u.pop("decoder.conv.weight"), "scales decoder.conv.weight:scale without their differences"),
    (lambda u: u.update({"decoder.steps": torch.zeros(2)}), "decoder.steps is torch.float32, which does not fit"),
    (lambda u: u["decoder.conv.weight:scale"].__setitem__(0, 1e38), "makes decoder.conv.weight infinite or NaN"),
    (lambda u: u.update({"decoder.norm.gain": torch.tensor(float("nan"))}), "makes decoder.norm.gain infinite or NaN"),
    (lambda u: u.update({"decoder.norm.gain:scale": torch.ones(1)}),
     "scales decoder.norm.gain:scale for decoder.norm.gain, which is torch.float32, not 8-bit differences"),
])
def test_an_update_that_does_not_fit_the_weights_is_refused_by_name(change, message):
    base = weights()
    update = make_update(base, trained_on(base))
    change(update)
    with pytest.raises(ValueError, match="the model's update.*" + message):
        apply_update(base, update, "the model's update")


def test_a_half_precision_base_is_updated_in_float32_and_empty_rows_are_rows():
    base = weights()
    base["decoder.conv.weight"] = base["decoder.conv.weight"].half()
    base["decoder.empty"] = torch.zeros(0, 3)
    new = trained_on({k: v.float() if v.is_floating_point() else v for k, v in base.items()})
    new["decoder.conv.weight"] = new["decoder.conv.weight"] + 1e-4  # finer than a float16 step at these sizes
    update = make_update(base, new)
    applied = apply_update(base, update)
    assert applied["decoder.conv.weight"].dtype == torch.float32
    step = (new["decoder.conv.weight"].double() - base["decoder.conv.weight"].double()).reshape(6, -1).abs().amax(1)
    err = (applied["decoder.conv.weight"].double() - new["decoder.conv.weight"].double()).reshape(6, -1).abs()
    assert bool((err <= step[:, None] / LEVELS / 2 + 1e-6).all())
    assert "decoder.empty" not in update
    update["decoder.empty"] = torch.zeros(0, 3, dtype=torch.int8)
    update["decoder.empty:scale"] = torch.zeros(0)
    assert apply_update(base, update)["decoder.empty"].shape == (0, 3)


def test_an_update_file_of_another_format_is_refused(tmp_path):
    base = weights()
    save_file(base, str(tmp_path / "embedder.safetensors"))
    save_file(make_update(base, trained_on(base)), str(tmp_path / DECODER_UPDATE_FILE), metadata={"format": "other"})
    with pytest.raises(ValueError, match="decoder_update.safetensors is of format 'other', not "
                                         "'rawdiff-decoder-update-1'"):
        embedder_weights(str(tmp_path))


# --------------------------------------------------------------------------- a model directory


@pytest.fixture(scope="module")
def decoders(tiny_corpus, tmp_path_factory):
    """(base, decoder, other codes): a tiny scalable embedder's decoder stage, a decoder stage
    trained on from it (the same codes), and an embedder with codes of its own."""
    tmp = tmp_path_factory.mktemp("decoder_update")
    common = ["data.params.root=" + tiny_corpus, "data.params.crop_size=128"] + SCALABLE
    first = train([TINY], common, max_steps=2, logdir=str(tmp / "first"))["model_dir"]
    base = train([TINY], common + STAGE + ["model.params.init=" + first], max_steps=2,
                 logdir=str(tmp / "base"))["model_dir"]
    decoder = train([TINY], common + STAGE + ["model.params.init=" + base, "codec.keep_prior=true",
                                              "model.params.learning_rate=0.01"],
                    max_steps=3, logdir=str(tmp / "decoder"))["model_dir"]
    return first, base, decoder


def test_a_decoder_update_decodes_as_the_decoder_it_came_from(decoders, frame, tmp_path, capsys):
    first, base, decoder = decoders
    out = str(tmp_path / "updated")
    assert main(["decoder-update", "--model", base, "--decoder", decoder, "-o", out]) == 0
    entry = json.loads(capsys.readouterr().out)
    with open(os.path.join(base, "embedder.safetensors"), "rb") as a, \
            open(os.path.join(out, "embedder.safetensors"), "rb") as b:
        assert a.read() == b.read()  # the base's file as it was
    meta = read_model_dir(out)["meta"]
    ids = {json.load(open(os.path.join(d, "model.json")))["model_id"] for d in (base, decoder)}
    assert meta["model_id"] == compute_model_id(out) and meta["model_id"] not in ids
    assert entry["base_model_id"] in ids and entry["decoder_model_id"] in ids
    assert entry["tensors"] > 0 and entry["bytes"] == os.path.getsize(os.path.join(out, DECODER_UPDATE_FILE))
    assert "operating_points" not in meta and "onnx" not in meta
    assert "## Decoder update" in open(os.path.join(out, "MODEL_CARD.md")).read()
    assert main(["info", "--model", out]) == 0
    assert "the decoder side of model %s stored as an update of model %s's weights" % (
        entry["decoder_model_id"], entry["base_model_id"]) in capsys.readouterr().out
    assert main(["info", "--model", out, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["decoder_update"]["bytes"] == entry["bytes"] and shown["streams_of"] == [entry["base_model_id"]]
    assert main(["info", "--model", out]) == 0
    assert "also decodes the streams of model %s (the same codes and prior)" % entry["base_model_id"] \
        in capsys.readouterr().out
    # the weights the codec runs: the decoder's, within half a step a row
    got, want, old = embedder_weights(out), embedder_weights(decoder), embedder_weights(base)
    moved = [k for k in want if k.startswith("decoder.") and not torch.equal(want[k].float(), old[k].float())]
    assert moved
    for k in moved:
        assert float((got[k].float() - want[k].float()).abs().max()) <= float(
            (want[k].float() - old[k].float()).abs().max()) / LEVELS / 2 + 1e-6, k
    codecs = {name: Codec.load(d, device="cpu") for name, d in (("base", base), ("decoder", decoder),
                                                                  ("updated", out))}
    images = {}
    for name, codec in codecs.items():
        stream = codec.compress(frame, quality=3)
        images[name] = codec.decompress(stream).astype(np.float64)

    def psnr(a, b):
        return 10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12))

    assert psnr(images["updated"], images["decoder"]) > 45
    assert psnr(images["updated"], images["decoder"]) > psnr(images["updated"], images["base"]) + 5
    # the same codes and prior: the base's streams (an archive, a vehicle not yet updated) decode here
    assert meta["streams_of"] == [entry["base_model_id"]]
    assert codecs["updated"].streams_of == (entry["base_model_id"],)
    old_stream = codecs["base"].compress(frame, quality=3)
    assert np.array_equal(codecs["updated"].decompress(old_stream), images["updated"].astype(np.uint8))
    with pytest.raises(ValueError, match="model mismatch: .* the loaded model is %s \\(which also decodes the "
                                         "streams of %s\\)" % (meta["model_id"], entry["base_model_id"])):
        codecs["updated"].decompress(codecs["decoder"].compress(frame, quality=3))  # another model's id
    with pytest.raises(ValueError, match="model mismatch"):  # and not the other way round
        codecs["base"].decompress(codecs["updated"].compress(frame, quality=3))


def test_a_decoder_update_from_other_codes_or_shapes_is_one_line(decoders, tiny_corpus, tmp_path, capsys):
    first, base, decoder = decoders
    common = ["data.params.root=" + tiny_corpus, "data.params.crop_size=128"] + SCALABLE
    other = train([TINY], common, max_steps=1, seed=5, logdir=str(tmp_path / "other"))["model_dir"]
    cases = [(["--model", base, "--decoder", other], "does not code as"),
             (["--model", first, "--decoder", base], "model.params.embedder differs in synthesis"),
             (["--model", base, "--decoder", base], "nothing to store"),
             (["--model", base, "--decoder", decoder, "-o", base], "would overwrite one of its inputs")]
    for args, message in cases:
        if "-o" not in args:
            args = args + ["-o", str(tmp_path / "out")]
        assert main(["decoder-update"] + args) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("rawdiff decoder-update: error:") and message in err
        assert not os.path.exists(str(tmp_path / "out"))


def test_a_tampered_update_is_refused_when_the_model_is_read(decoders, tmp_path, frame):
    _, base, decoder = decoders
    out = str(tmp_path / "updated")
    main(["decoder-update", "--model", base, "--decoder", decoder, "-o", out])
    path = os.path.join(out, DECODER_UPDATE_FILE)
    update = load_file(path)
    key = next(k for k in update if k.endswith(":scale"))
    update[key] = -update[key]
    save_file(update, path, metadata={"format": UPDATE_FORMAT})
    with pytest.raises(ValueError, match="weights do not match model.json"):  # the model_id covers it
        Codec.load(out, device="cpu")
    meta = json.load(open(os.path.join(out, "model.json")))
    meta["model_id"] = compute_model_id(out)  # even with the id made to match, it is named
    json.dump(meta, open(os.path.join(out, "model.json"), "w"))
    with pytest.raises(ValueError, match="decoder_update.safetensors: the scales of .* must be finite and not "
                                         "negative"):
        Codec.load(out, device="cpu").decompress(Codec.load(out, device="cpu").compress(frame, quality=1))
    del meta["decoder_update"]  # the file without its entry, or the entry without its file: named
    json.dump(meta, open(os.path.join(out, "model.json"), "w"))
    with pytest.raises(ValueError, match="decoder_update.safetensors is there but model.json has no 'decoder_update'"):
        read_model_dir(out)



@pytest.mark.parametrize("value, message", [
    ("0123", "must be a list of model ids"),
    (["0123"], "must be a list of model ids"),
    (["A" * 32], "must be a list of model ids"),
    ("self", "names the model itself"),
])
def test_streams_of_in_model_json_is_checked(fixture_model, tmp_path, value, message):
    import shutil

    out = str(tmp_path / "model")
    shutil.copytree(fixture_model, out)
    meta = json.load(open(os.path.join(out, "model.json")))
    meta["streams_of"] = [meta["model_id"]] if value == "self" else value
    json.dump(meta, open(os.path.join(out, "model.json"), "w"))
    with pytest.raises(ValueError, match="streams_of " + message):
        read_model_dir(out)


def test_a_decoder_node_takes_codes_of_the_models_its_model_decodes():
    from types import SimpleNamespace

    from rawdiff.ros.transcode import check_codes

    msg = SimpleNamespace(data=b"", model_id="b" * 32)
    with pytest.raises(ValueError, match="no data"):
        check_codes(msg, "a" * 32, ("b" * 32,))
    msg.data = b"x"
    with pytest.raises(ValueError, match="model mismatch: codes from model b+, but this decoder runs model a+ "
                                         "\\(which also decodes the streams of c+\\)"):
        check_codes(msg, "a" * 32, ("c" * 32,))
    with pytest.raises(ValueError, match="magic|bitstream|short"):  # past the model check: the header is read
        check_codes(msg, "a" * 32, ("b" * 32,))


def test_a_diffusion_decoder_decodes_the_streams_of_its_embedder(scalable_ldm, frame):
    emb, ldm, _ = scalable_ldm
    embedder_id = json.load(open(os.path.join(emb, "model.json")))["model_id"]
    assert read_model_dir(ldm)["meta"]["streams_of"] == [embedder_id]
    own, other = Codec.load(ldm, device="cpu"), Codec.load(emb, device="cpu")
    mine = own.decompress(own.compress(frame, quality=2))
    assert np.array_equal(own.decompress(other.compress(frame, quality=2)), mine)


def test_a_model_with_an_update_is_a_base_and_carries_it_to_its_diffusion_decoder(decoders, tiny_corpus, tmp_path):
    _, base, decoder = decoders
    updated = str(tmp_path / "updated")
    assert main(["decoder-update", "--model", base, "--decoder", decoder, "-o", updated]) == 0
    # its decoder side is the one it runs: taking it again stores nothing
    assert main(["decoder-update", "--model", updated, "--decoder", updated, "-o", str(tmp_path / "again")]) == 1
    assert not os.path.exists(str(tmp_path / "again"))
    ldm = str(tmp_path / "ldm")
    train([os.path.join(ROOT, "config", "models", "ldm_tiny.yaml")],
          ["model.params.embedder=" + updated, "data.params.root=" + tiny_corpus,
           "model.params.diffusion.min_snr_gamma=0", "model.params.sampling.val_steps=2"],
          max_steps=1, logdir=str(tmp_path / "runs"), export=ldm)
    meta = read_model_dir(ldm)["meta"]
    assert os.path.isfile(os.path.join(ldm, DECODER_UPDATE_FILE)) and meta["decoder_update"]
    for k, v in embedder_weights(updated).items():
        assert torch.equal(embedder_weights(ldm)[k], v), k
    assert meta["streams_of"][0] == json.load(open(os.path.join(updated, "model.json")))["model_id"]
