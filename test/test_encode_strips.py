"""Encoding in strips: the plan, the halo, and the codes equal to the whole frame's."""

import os

import numpy as np
import pytest

from rawdiff.codec import codec as codec_module
from rawdiff.codec import encode_strips
from rawdiff.codec.encode_strips import encode_in_strips, plan_strips, quantizer_reach, strip_halo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "models", "default")


def test_reach_grows_with_each_coarse_stage_that_a_later_stage_follows():
    assert quantizer_reach([1]) == 0
    assert quantizer_reach([1, 1, 1]) == 0
    assert quantizer_reach([2]) == 0  # nothing follows: its codeword is never spread
    assert quantizer_reach([2, 1]) == 2
    assert quantizer_reach([2, 2, 1]) == 4
    assert quantizer_reach([2, 2, 2, 1, 1, 1]) == 6  # the shipped model's stages
    assert quantizer_reach([4, 2, 1]) == 6
    assert strip_halo([2, 2, 2, 1, 1, 1], 4) == (24, 8)
    assert strip_halo([1, 1], 4) == (0, 4)
    for bad in ([], [0, 1]):
        with pytest.raises(ValueError, match="stage scales"):
            quantizer_reach(bad)
    with pytest.raises(ValueError, match="divide the coarsest"):
        strip_halo([3, 2, 1], 4)


@pytest.mark.parametrize("height,rows,halo,align", [(301, 16, 24, 8), (64, 64, 8, 8), (65, 10, 8, 8), (7, 8, 0, 4)])
def test_strips_cover_the_frame_once_on_aligned_edges(height, rows, halo, align):
    plan = plan_strips(height, rows, halo, align)
    assert plan[0][0] == 0 and plan[-1][1] == height
    for (y0, y1, a, b), nxt in zip(plan, plan[1:] + [None]):
        assert y0 % align == 0 and 0 <= a <= y0 < y1 <= b <= height
        assert a == max(0, y0 - halo) and b == min(height, y1 + halo)
        if nxt is not None:
            assert nxt[0] == y1 and (y1 - y0) % align == 0
    with pytest.raises(ValueError, match="plane row"):
        plan_strips(0, 8, 0, 8)
    with pytest.raises(ValueError, match="strip rows"):
        plan_strips(10, 0, 0, 8)


@pytest.fixture(scope="module", params=["onnx", "torch"])
def shipped(request):
    from rawdiff.codec import Codec

    return Codec.load(SHIPPED, device="cpu", backend=request.param, threads=1)


def _noise(height, width, seed=0):
    # noise, not a scene: every code depends on its inputs' last bits, so any sample a strip
    # lacks shows up as a different code
    return np.random.default_rng(seed).random((4, height, width), dtype=np.float32)


@pytest.mark.parametrize("rows", [8, 24, 40, 128])
def test_the_shipped_encoder_codes_the_same_in_strips_as_whole(shipped, rows, monkeypatch):
    assert shipped.encoder_local
    planes = _noise(301, 37)  # the last strip cuts cells of both grids
    shipped.encode_rows = 0
    whole = shipped.encode_planes(planes)
    used = []
    real = codec_module.encode_in_strips
    monkeypatch.setattr(codec_module, "encode_in_strips",
                        lambda encode, p, scales, m, r: used.append(r) or real(encode, p, scales, m, r))
    shipped.encode_rows = rows
    strips = shipped.encode_planes(planes)
    assert used == [rows]  # on the CPU, in strips
    assert [g.shape for g in strips] == [g.shape for g in whole]
    for k, (a, b) in enumerate(zip(whole, strips)):
        assert np.array_equal(a, b), "stage %d: %d codes differ" % (k + 1, int((a != b).sum()))
    lower = shipped.encode_planes(planes, quality=2)  # the torch encoder runs two stages, a smaller halo
    assert len(lower) == 2 and all(np.array_equal(a, b) for a, b in zip(whole, lower))


def test_a_halo_short_of_the_reach_changes_codes(shipped, monkeypatch):
    """The equality above needs the halo: one coarse cell short of it, noise finds out in the
    fine stages. (The reach is a bound: a code beyond a short halo changes only where a chain
    of codes flips, so the frame is large.)"""
    planes = _noise(320, 200, seed=1)
    shipped.encode_rows = 0
    whole = shipped.encode_planes(planes)
    halo, align = strip_halo([s for s, _ in shipped.stages], shipped.plane_multiple)
    monkeypatch.setattr(encode_strips, "strip_halo", lambda scales, m: (halo - align, align))
    shipped.encode_rows = 16
    strips = shipped.encode_planes(planes)
    assert any(not np.array_equal(a, b) for a, b in zip(whole[3:], strips[3:]))
    # the coarse stages reach less
    assert all(np.array_equal(a, b) for a, b in zip(whole[:3], strips[:3]))


def test_an_encoder_network_is_coded_whole(fixture_model, onnx_model, monkeypatch, tmp_path):
    """An encoder with convolutions has no bounded reach: the codec never cuts its frames,
    even where the config (which model_id does not cover) claims it has no network."""
    import shutil

    import yaml

    from rawdiff.codec import Codec

    claimed = str(tmp_path / "model")
    shutil.copytree(onnx_model, claimed)
    with open(os.path.join(claimed, "config.yaml")) as f:
        config = yaml.safe_load(f)
    config["model"]["params"]["embedder"].update(encoder_network=False, linear_paths=True)
    with open(os.path.join(claimed, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    assert not Codec.load(claimed, device="cpu", backend="onnx").encoder_local
    codec = Codec.load(fixture_model, device="cpu")
    assert not codec.encoder_local
    calls = []
    monkeypatch.setattr("rawdiff.codec.codec.encode_in_strips",
                        lambda encode, planes, scales, m, rows: calls.append(rows) or list(encode(planes)))
    codec.encode_rows = 8
    codec.encode_planes(_noise(64, 32))
    assert calls == [0]


def test_encode_in_strips_names_an_encoder_that_gives_too_many_grids():
    with pytest.raises(ValueError, match="3 code grids for 2 stages"):
        encode_in_strips(lambda p: [np.zeros((1, 1), np.int64)] * 3, _noise(64, 8), [1, 1], 4, 16)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "x", None])
def test_encode_rows_must_be_a_whole_non_negative_count(bad):
    from rawdiff.codec import Codec

    with pytest.raises(ValueError, match="encode_rows must be"):
        Codec.load(SHIPPED, device="cpu", backend="onnx", encode_rows=bad)


def test_the_default_strip_keeps_a_1936x1112_frame_whole():
    from rawdiff.codec.limits import DEFAULT_ENCODE_ROWS

    assert 1112 // 2 <= DEFAULT_ENCODE_ROWS < 2176 // 2


def test_compress_writes_the_same_bytes_in_strips(tmp_path, frame):
    """`rawdiff compress --encode-rows N`: the stream of the whole frame, byte for byte."""
    from rawdiff.cli import main
    from rawdiff.raw.io import write_raw

    src = write_raw(frame, str(tmp_path / "f.npy"))
    streams = []
    for rows in ("0", "8", str(2 ** 40)):
        out = tmp_path / ("f%s.rdc" % rows)
        assert main(["compress", str(src), "-o", str(out), "--model", SHIPPED, "--encode-rows", rows,
                     "--quality", "6"]) == 0
        streams.append(out.read_bytes())
    assert streams[0] == streams[1]
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(src), "-o", str(tmp_path / "x.rdc"), "--model", SHIPPED, "--encode-rows", "-1"])
    assert exc.value.code != 0
