"""ONNX encoder: export through the command line, parity with torch on frames unprocessed
from real photos and on the corpus's test frames (the same bitstream at every quality),
bitstreams that the torch codec decodes, refusal of stale graphs."""

import json
import logging
import os
import shutil

import numpy as np
import pytest

from rawdiff import cli
from rawdiff.codec import Codec, bitstream, onnx_runtime
from rawdiff.codec.modeldir import compute_model_id
from rawdiff.export import onnx as onnx_export
from rawdiff.raw.unprocess import unprocess


@pytest.fixture
def model_copy(onnx_model, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(onnx_model, model_dir)
    return model_dir


@pytest.fixture(scope="module")
def codecs(onnx_model):
    return Codec.load(onnx_model, device="cpu"), Codec.load(onnx_model, device="cpu", backend="onnx")


def _photo_frame(name, height, width, seed):
    """A RAW frame unprocessed (Brooks et al.) from one of scikit-image's photographs."""
    import cv2
    from skimage import data

    rgb = getattr(data, name)()[..., :3]
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    frame, _ = unprocess(rgb, seed=seed)
    return frame


def _read_meta(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        return json.load(f)


def test_export_records_the_weights_and_keeps_the_model_id(onnx_model, fixture_model, capsys):
    import onnx

    meta = _read_meta(onnx_model)
    assert compute_model_id(onnx_model) == meta["model_id"] == _read_meta(fixture_model)["model_id"]
    record = meta["onnx"]
    assert record["model_id"] == meta["model_id"] and record["opset"] == onnx_export.DEFAULT_OPSET
    assert record["embedder_id"] == onnx_runtime.embedder_id(onnx_model)
    assert record["check_agreement"] >= onnx_export.MIN_AGREEMENT
    model = onnx.load(os.path.join(onnx_model, onnx_runtime.ONNX_FILE))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["model_id"] == meta["model_id"] and props["embedder_id"] == record["embedder_id"]
    assert model.opset_import[0].version == onnx_export.DEFAULT_OPSET
    (inp,), outs = model.graph.input, model.graph.output
    assert [d.dim_param for d in inp.type.tensor_type.shape.dim[2:]] == ["height", "width"]
    # one output per quantizer stage, coarse to fine
    assert [o.name for o in outs] == ["indices", "indices_2", "indices_3"]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.INT64 for o in outs)
    assert props["stages"] == "3" and props["codebook_size"] == "16"


@pytest.mark.parametrize("name,height,width,seed", [("astronaut", 256, 256, 0), ("coffee", 200, 300, 1)])
def test_onnx_indices_match_torch_and_decode_alike(codecs, name, height, width, seed):
    torch_codec, onnx_codec = codecs
    frame = _photo_frame(name, height, width, seed)  # 200x300: planes 100x150, padded to 104x152
    ref, ours = torch_codec.encode_codes(frame), onnx_codec.encode_codes(frame)
    code_shape = (-(-height // 8), -(-width // 8))
    assert [g.shape for g in ours] == [g.shape for g in ref] == [
        (-(-code_shape[0] // sc), -(-code_shape[1] // sc)) for sc, _ in torch_codec.stages]
    assert all(g.dtype == np.int64 for g in ours)
    for a, b in zip(ours, ref):
        assert np.array_equal(a, b)
    for q in range(1, torch_codec.qualities + 1):
        assert onnx_codec.compress(frame, quality=q) == torch_codec.compress(frame, quality=q)


def test_onnx_and_torch_write_the_same_bitstream_at_every_quality(codecs, corpus_frames):
    """On the corpus's test frames (synthetic ones without the corpus): the ONNX encoder's
    bitstream of every quality is the torch encoder's, byte for byte (and so the cut of the
    torch bitstream of the highest quality)."""
    torch_codec, onnx_codec = codecs
    for name, frame in corpus_frames:
        top = torch_codec.compress(frame, quality=torch_codec.qualities)
        for q in range(1, torch_codec.qualities + 1):
            assert onnx_codec.compress(frame, quality=q) == bitstream.truncate(top, q), "%s: quality %d" % (name, q)


def test_onnx_bitstream_is_a_valid_torch_bitstream(codecs):
    torch_codec, onnx_codec = codecs
    frame = _photo_frame("chelsea", 120, 168, 2)
    payload = onnx_codec.compress(frame)
    header, codes = torch_codec.parse(payload)
    assert header.model_id == torch_codec.model_id and (header.height, header.width) == (120, 168)
    assert all(np.array_equal(a, b) for a, b in zip(codes, onnx_codec.encode_codes(frame)))
    assert bitstream.unpack(payload)[0].code_height == 15 and [g.shape for g in codes] == [(8, 11), (8, 11), (15, 21)]
    assert torch_codec.decompress(payload).shape == (120, 168, 3)
    assert onnx_codec.encode_indices(frame)[2].shape == (15, 21)  # a staged model: the list of grids


def test_the_chosen_provider_is_logged(onnx_model, caplog):
    with caplog.at_level(logging.INFO, logger="rawdiff.codec.onnx_runtime"):
        session = onnx_runtime.open_session(onnx_model, "cpu")
    assert onnx_runtime.session_provider(session) == "CPUExecutionProvider"
    assert "runs on CPUExecutionProvider" in caplog.text


def test_provider_order_is_tensorrt_cuda_cpu():
    everything = ["CPUExecutionProvider", "AzureExecutionProvider", "CUDAExecutionProvider",
                  "TensorrtExecutionProvider"]
    assert onnx_runtime.select_providers("auto", everything) == list(onnx_runtime.PROVIDER_ORDER)
    assert onnx_runtime.select_providers(None, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_runtime.select_providers("cpu", everything) == ["CPUExecutionProvider"]
    assert onnx_runtime.select_providers("cuda:1", everything)[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        onnx_runtime.select_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="mps"):
        onnx_runtime.select_providers("mps", everything)


def test_stale_or_missing_graphs_are_refused(model_copy):
    path = os.path.join(model_copy, onnx_runtime.ONNX_FILE)
    meta = _read_meta(model_copy)

    def write_meta(m):
        with open(os.path.join(model_copy, "model.json"), "w") as f:
            json.dump(m, f)

    write_meta(dict(meta, onnx=dict(meta["onnx"], embedder_id="0" * 32)))  # e.g. a retrained embedder
    with pytest.raises(ValueError, match="stale: exported from embedder weights 0000"):
        Codec.load(model_copy, device="cpu", backend="onnx")
    write_meta({k: v for k, v in meta.items() if k != "onnx"})  # e.g. the model directory was re-exported
    with pytest.raises(ValueError, match="stale: model.json has no record"):
        onnx_runtime.open_session(model_copy, "cpu")
    write_meta(meta)
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="changed since the export"):
        onnx_runtime.open_session(model_copy, "cpu")
    os.remove(path)
    with pytest.raises(ValueError, match="no encoder.onnx; run `rawdiff export-onnx"):
        onnx_runtime.open_session(model_copy, "cpu")


def test_new_weights_beside_the_same_embedder_keep_the_graph(model_copy, caplog):
    """A diffusion export copies the embedder's directory, encoder.onnx and record included,
    and adds weights: a new model_id, the same embedder_id, so the graph stays valid."""
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(4, np.float32)}, os.path.join(model_copy, "diffusion.safetensors"))
    meta = _read_meta(model_copy)
    meta["model_id"] = compute_model_id(model_copy)
    with open(os.path.join(model_copy, "model.json"), "w") as f:
        json.dump(meta, f)
    assert meta["model_id"] != meta["onnx"]["model_id"]
    with caplog.at_level(logging.INFO, logger="rawdiff.codec.onnx_runtime"):
        onnx_runtime.open_session(model_copy, "cpu")
    assert "has the same embedder weights" in caplog.text


def test_command_line_errors_are_one_line(model_copy, capsys):
    assert cli.main(["export-onnx", "--model", model_copy, "--opset", "9"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "rawdiff export-onnx: error: opset 9 is outside 13..20 (the exporter's opsets that " \
                  "onnxruntime 1.17 runs)"
    assert cli.main(["export-onnx", "--model", model_copy + "-missing"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_run_encoder_checks_the_planes_and_gives_every_stage(codecs):
    _, onnx_codec = codecs
    with pytest.raises(ValueError, match="planes must be 4 x h x w"):
        onnx_runtime.run_encoder(onnx_codec.onnx_session, np.zeros((3, 16, 16), np.float32), 4)
    grids = onnx_runtime.run_encoder(onnx_codec.onnx_session, np.zeros((4, 26, 38), np.float32), 4)
    assert [g.shape for g in grids] == [(4, 5), (4, 5), (7, 10)]  # padded to 28 x 40
    assert [onnx_runtime.stage_output_name(k) for k in range(3)] == ["indices", "indices_2", "indices_3"]


def test_auto_backend_takes_a_current_graph_else_torch_and_says_why(model_copy, fixture_model, caplog):
    assert Codec.load(model_copy, device="cpu", backend="auto").backend == "onnx"
    with caplog.at_level(logging.INFO, logger="rawdiff.codec.codec"):
        assert Codec.load(fixture_model, device="cpu", backend="auto").backend == "torch"
    assert "encoding with torch: model directory %s has no encoder.onnx" % fixture_model in caplog.text
    with open(os.path.join(model_copy, onnx_runtime.ONNX_FILE), "ab") as f:
        f.write(b"\0")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rawdiff.codec.codec"):
        codec = Codec.load(model_copy, device="cpu", backend="auto")
    assert codec.backend == "torch" and codec.onnx_session is None and "changed since the export" in caplog.text
    with pytest.raises(ValueError, match="changed since the export"):
        Codec.load(model_copy, device="cpu", backend="onnx")  # asked for by name: an error
    with pytest.raises(ValueError, match="backend must be one of auto, torch, onnx"):
        Codec.load(model_copy, device="cpu", backend="tensorrt")


def test_thread_count_reaches_onnxruntime_and_torch_when_it_loads(onnx_model):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        codec = Codec.load(onnx_model, device="cpu", backend="onnx", threads=1)
        assert codec.onnx_session.get_session_options().intra_op_num_threads == 1
        assert torch.get_num_threads() == 2  # the onnx encoder loads no torch network
        codec.embedder  # noqa: B018 - the decoder's networks load on first use, with the codec's threads
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        Codec.load(onnx_model, device="cpu", threads=0)
