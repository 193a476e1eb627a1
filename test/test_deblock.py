"""The decoder's deblocking filter (rawdiff.codec.deblock), its model.json entry and its fit."""

import json
import os
import shutil

import numpy as np
import pytest

from rawdiff.cli import main
from rawdiff.codec import Codec, truncate
from rawdiff.codec.deblock import Deblock, deblock, entry_of, settings_of
from rawdiff.codec.modeldir import check_deblock_entry, deblocked_qualities, read_model_dir
from rawdiff.deblock_fit import fit_deblock, write_deblock
from rawdiff.metrics import grid_strength

SETTING = Deblock(3, 8.0, 32.0)


def _blocky(height=64, width=96, seed=0, noise=1.0):
    """A smooth ramp with a random offset on each 8 x 8 cell (a cell decoder's grid) and a
    little noise, and the same image without the offsets."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    smooth = 80 + 0.5 * x + 0.3 * y + rng.normal(0, noise, (height, width))
    offsets = np.kron(rng.uniform(-4, 4, (-(-height // 8), -(-width // 8))), np.ones((8, 8)))[:height, :width]
    as_rgb = lambda a: np.repeat(np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    return as_rgb(smooth + offsets), as_rgb(smooth)


def test_the_filter_takes_the_grid_away_and_comes_closer_to_the_smooth_image():
    blocky, smooth = _blocky()
    out = deblock(blocky, 8, SETTING)
    assert grid_strength(blocky) > 2.0
    assert grid_strength(out) < 1.3
    err = lambda a: np.abs(a.astype(np.int16) - smooth).mean()  # noqa: E731
    assert err(out) < 0.9 * err(blocky)  # the offsets inside the cells stay: the steps become ramps
    # it changes pixels near the cells' edges only (taps on each side)
    rows, cols = np.nonzero((out != blocky).any(axis=2))
    near = lambda i: np.isin(i % 8, [5, 6, 7, 0, 1, 2])  # noqa: E731
    assert len(rows) and (near(rows) | near(cols)).all()


def test_an_edge_of_the_scene_on_a_cell_edge_is_kept():
    img = np.full((32, 32, 3), 60, np.uint8)
    img[:, 16:] = 200  # a step of 140 levels on the cell edge at column 16
    out = deblock(img, 8, SETTING)
    assert np.array_equal(out, img)
    # a small step there is a cell's and is spread as a ramp over 2 x taps pixels
    img[:, 16:] = 66
    row = deblock(img, 8, SETTING)[5, :, 0].astype(int)
    assert row[12:20].tolist() == [60, 61, 62, 63, 63, 64, 65, 66]
    assert (row[:12] == 60).all() and (row[20:] == 66).all()


@pytest.mark.parametrize("shape", [(5, 7), (9, 9), (57, 83), (300, 70)])
def test_strips_filter_as_the_whole_image(shape):
    blocky = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    smoothish, _ = _blocky(*shape, seed=2)
    for img in (blocky, smoothish):
        whole = deblock(img, 8, SETTING, strip_rows=10 ** 6)
        for rows in (8, 16, 24, 256):
            assert np.array_equal(deblock(img, 8, SETTING, strip_rows=rows), whole)


def test_bad_input_and_settings_are_refused():
    img = np.zeros((16, 16, 3), np.uint8)
    assert deblock(img, 8, None) is img
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        deblock(img.astype(np.float32), 8, SETTING)
    with pytest.raises(ValueError, match="taps must be in \\[1, 4\\]"):
        deblock(img, 8, Deblock(5, 8.0, 32.0))
    good = entry_of([SETTING] * 3)
    check_deblock_entry(good, 3, 8)
    check_deblock_entry(entry_of([SETTING, None, SETTING]), 3, 8)  # a point without the filter
    assert entry_of([None])["taps"] == [0] and settings_of(entry_of([None, SETTING]), 1) is None
    assert settings_of(entry_of([None, SETTING]), 2) == SETTING
    partial = dict(entry_of([SETTING] * 4), clip=[8.0, 0.0, 8.0, 8.0], beta=[32.0, 32.0, 32.0, 0.0])
    assert deblocked_qualities(partial) == [1, 3]  # any of taps, clip or beta 0: that point is not filtered
    assert [settings_of(partial, q) for q in (1, 2, 3, 4)] == [SETTING, None, SETTING, None]
    for key, value, message in (("taps", [3, 3], "taps must be 3 integers"), ("taps", [3, 5, 3], "taps"),
                                ("taps", [3, 2.5, 3], "taps"), ("clip", [8.0, -1.0, 8.0], "clip must be 3 numbers"),
                                ("clip", [8.0, 256.0, 8.0], "clip"),
                                ("beta", [32.0, True, 32.0], "beta"), ("beta", None, "beta"),
                                ("clip", [8.0, 8.0, float("nan")], "clip")):
        bad = dict(good, **{key: value})
        with pytest.raises(ValueError, match=message):
            check_deblock_entry(bad, 3, 8)
    with pytest.raises(ValueError, match="must be an object"):
        check_deblock_entry([1, 2], 3, 8)


def test_the_fit_keeps_fidelity_and_brings_the_grid_to_the_references():
    examples = []
    for seed in range(3):
        blocky, smooth = _blocky(64, 96, seed)
        examples.append((smooth, np.stack([blocky, smooth])))  # point 1 blocky, point 2 already clean
    settings, record = fit_deblock(examples, 8)
    assert len(settings) == 2 and record["frames"] == 3
    assert settings[0] is not None and settings[1] is None  # the clean point is best left alone
    first, second = record["points"]
    assert first["filtered"]["grid8"] < first["unfiltered"]["grid8"] - 0.5
    assert first["filtered"]["ms_ssim"] >= first["unfiltered"]["ms_ssim"] - 5e-4
    assert abs(second["filtered"]["grid8"] - record["reference_grid"]["grid8"]) <= 0.05
    with pytest.raises(ValueError, match="no frame larger"):
        fit_deblock([(smooth[:20], np.stack([smooth[:20]]))], 8)


@pytest.fixture(scope="module")
def deblocked_model(scalable_ldm, tmp_path_factory):
    """A copy of the tiny scalable model with a deblocking filter in its model.json."""
    out = str(tmp_path_factory.mktemp("deblock") / "model")
    shutil.copytree(scalable_ldm[0], out)
    qualities = len(read_model_dir(out)["meta"]["stages"])
    write_deblock(out, [Deblock(2, 16.0, 64.0)] * qualities, {"test": True})
    return out


def test_the_codec_filters_its_decodes_and_keeps_the_model_id(deblocked_model, scalable_ldm, frame):
    assert read_model_dir(deblocked_model)["meta"]["model_id"] == read_model_dir(scalable_ldm[0])["meta"]["model_id"]
    plain, codec = Codec.load(scalable_ldm[0]), Codec.load(deblocked_model)
    top = codec.compress(frame, quality=codec.qualities)
    for q in range(1, codec.qualities + 1):
        cut = truncate(top, q)
        unfiltered = codec.decompress(cut, deblock=False)
        assert np.array_equal(unfiltered, plain.decompress(cut))
        filtered = codec.decompress(cut)
        assert np.array_equal(filtered, deblock(unfiltered, codec.factor, Deblock(2, 16.0, 64.0)))
        # the truncation identity holds through the filter
        assert np.array_equal(filtered, codec.decompress(codec.compress(frame, quality=q)))
    assert not np.array_equal(codec.decompress(top), codec.decompress(top, deblock=False))
    # decoded in tiles, the filter runs on the whole frame
    tiled = Codec.load(deblocked_model, tile=8)
    assert tiled.tiled(tiled.parse(top)[0].code_shape)
    assert np.array_equal(tiled.decompress(top), deblock(tiled.decompress(top, deblock=False), 8,
                                                         Deblock(2, 16.0, 64.0)))


def test_a_bad_deblock_entry_is_refused_by_name(deblocked_model, tmp_path):
    out = str(tmp_path / "model")
    shutil.copytree(deblocked_model, out)
    path = os.path.join(out, "model.json")
    meta = json.load(open(path))
    meta["deblock"]["taps"] = meta["deblock"]["taps"][:-1]
    json.dump(meta, open(path, "w"))
    with pytest.raises(ValueError, match="model.json's deblock taps must be"):
        read_model_dir(out)


def test_cli_fit_deblock_writes_the_entry(scalable_ldm, tiny_corpus, tmp_path, capsys):
    out = str(tmp_path / "model")
    shutil.copytree(scalable_ldm[0], out)
    assert main(["fit-deblock", "--model", out, os.path.join(tiny_corpus, "val.txt"), "--max-frames", "1"]) == 0
    entry = json.loads(capsys.readouterr().out)
    meta = read_model_dir(out)["meta"]
    assert meta["deblock"] == entry and len(entry["taps"]) == len(meta["stages"])
    assert entry["fit"]["frames"] == 1 and entry["fit"]["data"] == [os.path.join(tiny_corpus, "val.txt")]
    assert main(["fit-deblock", "--model", str(tmp_path / "missing"), os.path.join(tiny_corpus, "val.txt")]) != 0


def test_info_lists_the_filter(deblocked_model, capsys):
    assert main(["info", "--model", deblocked_model]) == 0
    qualities = len(read_model_dir(deblocked_model)["meta"]["stages"])
    assert ", deblocking filter at qualities %s" % ",".join(str(q) for q in range(1, qualities + 1)) \
        in capsys.readouterr().out
    assert main(["info", "--model", deblocked_model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deblock"] == {"taps": [2] * qualities, "clip": [16.0] * qualities,
                                                              "beta": [64.0] * qualities}


def test_rendered_on_the_device_the_decode_is_the_host_s(deblocked_model, frame):
    """Codec.render_on_device (the colour stage and the filter in torch on the networks'
    device) against the host's numpy: within a level, the filter's decisions the same."""
    host, dev = Codec.load(deblocked_model), Codec.load(deblocked_model)
    host.render_on_device, dev.render_on_device = False, True
    assert not Codec.load(deblocked_model, device="cpu").render_on_device  # the CPU's default: the host
    tiled = Codec.load(deblocked_model, tile=8)  # in tiles: gathered into one frame on the device
    tiled.render_on_device = True
    for q in (1, host.qualities):
        data = host.compress(frame, quality=q)
        assert tiled.tiled(tiled.parse(data)[0].code_shape)
        for kwargs in ({}, {"deblock": False}):
            a = host.decompress(data, **kwargs)
            for b in (dev.decompress(data, **kwargs), tiled.decompress(data, **kwargs)):
                assert a.shape == b.shape == (frame.height, frame.width, 3) and b.dtype == np.uint8
                diff = np.abs(a.astype(int) - b)
                assert diff.max() <= 1 and (diff == 0).mean() > 0.99, kwargs


def test_a_frame_of_a_cell_or_less_renders_on_the_device_as_on_the_host(deblocked_model):
    from rawdiff.raw import RawFrame

    host, dev = Codec.load(deblocked_model), Codec.load(deblocked_model)
    host.render_on_device, dev.render_on_device = False, True
    rng = np.random.default_rng(9)
    for h, w in ((6, 10), (8, 14), (10, 6)):  # one 8 x 8 cell or none: whole-frame statistics, no edge
        small = RawFrame(rng.integers(64, 1023, (h, w)).astype(np.uint16), cfa="RGGB", black_level=64,
                         white_level=1023)
        data = host.compress(small)
        a, b = host.decompress(data), dev.decompress(data)
        assert a.shape == b.shape == (h, w, 3) and np.abs(a.astype(int) - b).max() <= 1
