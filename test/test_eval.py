"""rawdiff.eval: baselines, butteraugli, RD interpolation, BD-rate and the WebP target check
(rd), the report, operating points written into a model directory, and `rawdiff eval` over
every operating point of the fixture model end to end on tiny frames."""

import json
import math
import os
import shutil
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest
from synthetic import textured_photo

from rawdiff import metrics
from rawdiff.eval import baselines, rd, report
from rawdiff.eval import evaluate as ev
from rawdiff.eval import frames as eval_frames
from rawdiff.eval import operating_points as ops

# magic numbers of the files the encoders write
MAGIC = {"jpeg": lambda b: b[:2] == b"\xff\xd8",
         "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
         "jxl": lambda b: b[:2] == b"\xff\x0a" or b[4:8] == b"JXL ",
         "avif": lambda b: b[4:12] == b"ftypavif"}


def _available(name):
    codec = baselines.BASELINES[name]()
    why = codec.missing()
    if why:
        pytest.skip(why)
    return codec


@pytest.fixture(scope="module")
def photo():
    return textured_photo(64, 96, 3)


def test_codec_names_match():
    assert tuple(baselines.BASELINES) == ev.CODECS


@pytest.mark.parametrize("name", ev.CODECS)
def test_baseline_round_trip_real_file(name, photo):
    codec = _available(name)
    low, high = codec.settings[0], codec.settings[-1]
    a, b = codec.sweep(photo, [low, high])
    for e in (a, b):
        assert e.decoded.shape == photo.shape and e.decoded.dtype == np.uint8
        assert e.nbytes == len(e.data) > 0 and MAGIC[name](e.data), "%s did not write a %s file" % (name, name)
    assert b.nbytes > a.nbytes
    hi_psnr = metrics.psnr(metrics.to_tensor(b.decoded), metrics.to_tensor(photo))
    assert hi_psnr > 24.0  # 4:2:0 drops the photo's chroma noise
    assert hi_psnr > metrics.psnr(metrics.to_tensor(a.decoded), metrics.to_tensor(photo))
    if name == "jpeg":  # the size is the encoder's own output
        ok, buf = cv2.imencode(".jpg", photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(high)])
        assert ok and buf.size == b.nbytes


ENCODER_TOOLS = ("cwebp", "cjxl", "avifenc")


@pytest.mark.parametrize("name", ev.CODECS)
def test_sweep_times_the_encoder_and_the_decoder_apart(name, photo, monkeypatch):
    """encode_s is the encoder's wall time and decode_s the decoder's: on a clock that only
    the encoder (0.25 s a call) and the decoder (0.125 s) move, they are exactly those."""
    codec = _available(name)
    now = [100.0]

    def costing(fn, seconds):
        def timed(*args, **kwargs):
            now[0] += seconds
            return fn(*args, **kwargs)
        return timed

    monkeypatch.setattr(baselines, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    if name == "jpeg":
        monkeypatch.setattr(cv2, "imencode", costing(cv2.imencode, 0.25))
        monkeypatch.setattr(cv2, "imdecode", costing(cv2.imdecode, 0.125))
    else:
        run_tool = baselines.run_tool
        monkeypatch.setattr(baselines, "run_tool", lambda argv, **kw: costing(
            run_tool, 0.25 if argv[0] in ENCODER_TOOLS else 0.125)(argv, **kw))
    points = codec.sweep(photo, codec.settings[:2])
    assert [(e.encode_s, e.decode_s) for e in points] == [(0.25, 0.125), (0.25, 0.125)]


@pytest.mark.parametrize("name", ev.CODECS)
def test_sweep_rates_rise(name, photo):
    codec = _available(name)
    sizes = [e.nbytes for e in codec.sweep(photo)]
    assert len(sizes) == len(codec.settings)
    inversions = sum(1 for x, y in zip(sizes, sizes[1:]) if y < x)
    assert inversions <= 1 and sizes[-1] > 2 * sizes[0], sizes


def test_missing_tool_skips_codec_with_note(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    ready, notes = baselines.get_baselines(["jpeg", "webp", "avif"])
    assert [c.name for c in ready] == ["jpeg"]
    assert len(notes) == 2 and "cwebp" in notes[0] and "webp" in notes[0] and "libavif-bin" in notes[1]
    with pytest.raises(metrics.ToolMissing, match="libjxl-devtools"):
        metrics.butteraugli(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown codec png"):
        baselines.get_baselines(["png"])


def _has(tool):
    try:
        metrics.find_tool(tool)
        return True
    except metrics.ToolMissing:
        return False


def test_butteraugli(photo):
    if not _has("butteraugli_main"):
        pytest.skip("butteraugli_main not installed")
    same, same3 = metrics.butteraugli(photo, photo)
    assert same == pytest.approx(0.0, abs=1e-3) and same3 == pytest.approx(0.0, abs=1e-3)
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    dist, dist3 = metrics.butteraugli(photo, noisy)
    assert dist > 1.0 and 0 < dist3 <= dist
    crop, _ = metrics.butteraugli(photo, noisy, max_pixels=32 * 48)
    assert crop > 0 and crop != dist


def test_centre_crop_keeps_cfa_phase():
    a = np.arange(100 * 150).reshape(100, 150)
    c = metrics.centre_crop(a, 1000)
    assert c.size <= 1000 and c.shape[0] % 2 == 0 and c.shape[1] % 2 == 0
    top, left = np.argwhere(a == c[0, 0])[0]
    assert top % 2 == 0 and left % 2 == 0
    assert metrics.centre_crop(a, None) is a


# --------------------------------------------------------------------------- RD maths


def _curve(rates, scale=1.0):
    # a concave RD curve; butteraugli falls with rate
    return [{"bpp": r * scale, "psnr": 30 + 8 * math.log2(r), "ms_ssim": 1 - 0.2 / (1 + r),
             "butteraugli": 8 / (1 + 4 * r), "setting": i} for i, r in enumerate(rates)]


def test_bd_rate_self_and_double():
    c = _curve([0.1, 0.2, 0.4, 0.8, 1.6])
    for key in ("psnr", "ms_ssim", "butteraugli"):
        assert rd.bd_rate(c, c, key) == pytest.approx(0.0, abs=1e-9)
        assert rd.bd_rate(c, _curve([0.1, 0.2, 0.4, 0.8, 1.6], 2.0), key) == pytest.approx(100.0, rel=1e-9)
        assert rd.bd_rate(_curve([0.1, 0.2, 0.4, 0.8, 1.6], 2.0), c, key) == pytest.approx(-50.0, rel=1e-9)
    assert rd.bd_rate(c, _curve([5, 6, 7])) is None  # no overlap in quality
    assert rd.bd_rate(c, c[:1]) is None  # one point is no curve


def test_matched_rate_interpolation():
    c = _curve([0.1, 0.2, 0.4, 0.8])
    assert rd.quality_at_rate(c, 0.2, "psnr") == (pytest.approx(30 + 8 * math.log2(0.2)), "ok")
    q, status = rd.quality_at_rate(c, 0.3, "psnr")
    assert status == "ok" and c[1]["psnr"] < q < c[2]["psnr"]
    assert rd.quality_at_rate(c, 0.05, "psnr") == (None, "below")
    assert rd.quality_at_rate(c, 2.0, "psnr") == (None, "above")
    r, status = rd.rate_at_quality(c, c[2]["psnr"], "psnr")
    assert status == "ok" and r == pytest.approx(0.4)
    r, status = rd.rate_at_quality(c, (c[1]["butteraugli"] + c[2]["butteraugli"]) / 2, "butteraugli")
    assert status == "ok" and 0.2 < r < 0.4
    assert rd.rate_at_quality(c, 0.0, "psnr") == (0.1, "below")
    assert rd.rate_at_quality(c, 99.0, "psnr") == (0.8, "above")
    # a worse point at a higher rate is not on the Pareto front
    bumpy = c + [{"bpp": 1.0, "psnr": 20.0, "setting": 9}]
    assert [p["setting"] for p in rd.pareto(bumpy, "psnr")] == [0, 1, 2, 3]


def test_bd_range_is_where_both_curves_exist():
    a, b = _curve([0.1, 0.2, 0.4, 0.8]), _curve([0.2, 0.4, 0.8, 1.6])
    lo, hi = rd.bd_range(a, b, "psnr")
    assert lo == pytest.approx(b[0]["psnr"]) and hi == pytest.approx(a[-1]["psnr"])
    lo, hi = rd.bd_range(a, b, "butteraugli")  # lower is better: the same overlap in its own values
    assert lo == pytest.approx(a[-1]["butteraugli"]) and hi == pytest.approx(b[0]["butteraugli"])
    assert rd.bd_range(a, _curve([5, 6, 7]), "psnr") is None and rd.bd_range(a, a[:1], "psnr") is None


# --------------------------------------------------------------------------- the WebP target check


def _webp_at(bpp):
    """Figures linear in log2 rate: PCHIP reproduces them exactly between sweep points."""
    x = math.log2(bpp / 0.1)
    return {"ms_ssim": 0.5 + 0.1 * x, "psnr": 20.0 + 3.0 * x, "butteraugli": 10.0 - 2.0 * x, "spectral": 0.2}


def _target_results(butteraugli=True):
    """Two frames of 32x32 RAW pixels; WebP's sweep of frame 1 starts at a higher rate."""
    sweeps = {0: [0.1, 0.2, 0.4, 0.8], 1: [0.145, 0.3, 0.6, 1.2]}
    # quality: (bpp on both frames, rawdiff's MS-SSIM, butteraugli, PSNR)
    rawdiff = {1: (0.05, 0.3, 12.0, 15.0), 2: (0.14, 0.6, 9.0, 20.0), 3: (0.15, 0.7, 8.0, 21.0),
               4: (0.3, 0.9, 5.0, 30.0)}
    points = []
    for f, rates in sweeps.items():
        for i, r in enumerate(rates):
            points.append(dict(_webp_at(r), frame=f, codec="webp", setting=[0, 10, 30, 60][i], bpp=r,
                               bytes=r * 128))
        for q, (bpp, ms, ba, psnr) in rawdiff.items():
            points.append({"frame": f, "codec": "rawdiff-fast", "setting": q, "bpp": bpp, "bytes": bpp * 128,
                           "ms_ssim": ms, "butteraugli": ba, "psnr": psnr, "spectral": 0.3})
    if not butteraugli:
        for p in points:
            p["butteraugli"] = None
    return {"points": points, "codecs": {"rawdiff-fast": {"kind": "rawdiff", "label": "rawdiff fast"},
                                         "webp": {"kind": "baseline", "label": "WebP (cwebp)"}}}


def test_target_check_compares_at_the_same_bytes_frame_by_frame():
    rows = {r["quality"]: r for r in rd.target_check(_target_results(), "rawdiff-fast")}
    assert sorted(rows) == [1, 2, 3]  # quality 4 is above 0.15 bpp
    assert rows[1]["status"] == "not reached" and rows[1]["frames_reached"] == 0 and rows[1]["pass"] is None
    # quality 2: frame 1's sweep starts above 0.14 bpp, so only frame 0 counts
    r = rows[2]
    assert (r["status"], r["frames_reached"], r["frames"]) == ("partial", 1, 2)
    webp = _webp_at(0.14)
    for k in ("ms_ssim", "butteraugli", "psnr"):
        assert r["anchor_" + k] == pytest.approx(webp[k], abs=1e-9)
    assert (r["pass_ms_ssim"], r["pass_butteraugli"], r["pass_psnr"], r["pass"]) == (True, True, False, False)
    # quality 3 at 0.15 bpp: both frames; PSNR 21.0 is within 1 dB of WebP's 21.75
    r = rows[3]
    assert r["status"] == "all" and r["anchor_psnr"] == pytest.approx(_webp_at(0.15)["psnr"], abs=1e-9)
    assert r["rawdiff_psnr"] == 21.0 and r["pass"] is True
    # beside it, WebP's curve of means (its settings' mean rates and figures) at rawdiff's mean rate
    mean_curve = rd.curves(_target_results())["webp"]
    assert r["curve_ms_ssim"] == rd.quality_at_rate(mean_curve, 0.15, "ms_ssim")[0] != r["anchor_ms_ssim"]
    # without butteraugli the overall verdict stays open
    r = {r["quality"]: r for r in rd.target_check(_target_results(False), "rawdiff-fast")}[3]
    assert r["pass_butteraugli"] is None and r["pass_ms_ssim"] is True and r["pass"] is None


def test_operating_points_are_the_means_per_quality():
    pts = rd.operating_points(_target_results(), "rawdiff-fast")
    assert [p["quality"] for p in pts] == [1, 2, 3, 4] and all(p["frames"] == 2 for p in pts)
    assert pts[2] == {"quality": 3, "bpp": 0.15, "psnr": 21.0, "ms_ssim": 0.7, "frames": 2}


def test_people_agreement_is_pooled_over_the_frames():
    # frame 0: 4 people, all found again; frame 1: none, and one false box in the decoded image.
    # The mean of the per-frame shares would say (1 + 0) / 2 = 0.5; pooled, one box of nine is wrong.
    rows = [{"frame": 0, "people_matched": 4, "people_reference": 4, "people_decoded": 4, "people": 1.0},
            {"frame": 1, "people_matched": 0, "people_reference": 0, "people_decoded": 1, "people": 0.0}]
    pts = [dict(r, codec="c", setting=1, bpp=0.1, bytes=10, psnr=20.0) for r in rows]
    (point,) = rd.curves({"points": pts})["c"]
    assert point["people"] == pytest.approx(8 / 9) and point["people_decoded"] == 2.5
    no_people = [dict(p, people_matched=0, people_reference=0, people_decoded=0, people=1.0) for p in pts]
    assert rd.curves({"points": no_people})["c"][0]["people"] == 1.0
    old = [{k: v for k, v in p.items() if k not in rd.PEOPLE_COUNTS} for p in pts]  # results without counts
    assert rd.curves({"points": old})["c"][0]["people"] == 0.5


# --------------------------------------------------------------------------- report


def _results(frames=2):
    points, colour = [], []
    for f in range(frames):
        for q, (bpp, psnr, ms, ba) in enumerate([(0.05, 16.0, 0.80, 8.0), (0.1, 18.0, 0.85, 6.0),
                                                 (0.2, 20.0, 0.9, 4.5)], 1):
            points.append({"frame": f, "codec": "rawdiff-fast", "setting": q, "bytes": int(bpp * 128), "bpp": bpp,
                           "psnr": psnr, "ms_ssim": ms, "butteraugli": ba, "spectral": 0.3, "encode_s": 0.1,
                           "decode_s": 0.2, "model": "m", "quality": q})
            colour.append({"frame": f, "model": "m", "quality": q, "psnr": psnr + f,
                           "colour_fit_gain_db": 0.2 + 0.4 * f + 0.1 * q, "raw_isp_psnr": None,
                           "raw_isp_gap_db": None, "raw_psnr": None})
        for i, p in enumerate(_curve([0.05, 0.1, 0.2, 0.4])):
            points.append(dict(p, frame=f, codec="jpeg", setting=[5, 10, 20, 40][i], bytes=int(p["bpp"] * 1000),
                               spectral=0.2, encode_s=0.01, decode_s=0.01))
            points.append(dict(p, frame=f, codec="webp", setting=[0, 10, 30, 60][i], bpp=p["bpp"] * 0.7,
                               bytes=int(p["bpp"] * 700), spectral=0.2, encode_s=0.01, decode_s=0.01))
    stage = {"stage": 1, "scale": 2, "grid_factor": 16, "codebook_size": 16, "indices": 48, "indices_per_frame": 24,
             "codes_used": 10, "usage": 10 / 16.0, "histogram_entropy_bits": 3.0, "perplexity": 8.0,
             "prior_bits_per_index": 2.5, "coded_bits_per_index": 2.75, "log2_k": 4.0, "bytes_per_frame": 8.25,
             "bpp": 0.0645}
    return {"settings": {"data": ["x.txt"], "butteraugli": True, "butteraugli_max_pixels": 1000},
            "models": [{"label": "m", "dir": "d", "model_id": "abc", "factor": 8, "codebook_size": 16,
                        "prior_kind": "context", "stages": [[2, 16], [2, 16], [1, 32]], "qualities": [1, 2, 3],
                        "curves": {"fast": "rawdiff-fast", "diffusion": {}}, "stage_stats": [stage],
                        "header_bytes_per_frame": 180.0, "truncation": {"checked": 4, "identical": 4,
                                                                        "differing": []}}],
            "codecs": {"rawdiff-fast": {"kind": "rawdiff", "label": "rawdiff fast", "setting_name": "quality",
                                        "model": "m", "path": "fast"},
                       "jpeg": {"kind": "baseline", "label": "JPEG (OpenCV)", "setting_name": "quality"},
                       "webp": {"kind": "baseline", "label": "WebP (cwebp)", "setting_name": "quality"}},
            "frames": [{"path": "d/f%d/frame.npy" % i, "width": 32, "height": 32} for i in range(frames)],
            "points": points, "notes": ["a note"], "figure": None, "colour": colour}


def test_report_files_and_tables(tmp_path):
    results = _results()
    paths = report.write_report(results, str(tmp_path))
    for name in ("report.md", "rd.png", "rd_psnr.png", "rd_ms_ssim.png", "rd_butteraugli.png", "rd_spectral.png"):
        assert (tmp_path / name).stat().st_size > 0, name
        assert str(tmp_path / name) in paths.values()
    md = (tmp_path / "report.md").read_text()
    assert "| rawdiff fast | 2 | 0.1000 | 12 | 18.00 | 0.8500 | 6.00 |" in md  # one row per quality
    assert "## Matched rates: rawdiff fast, quality 2" in md and "| JPEG (OpenCV) | quality 10 |" in md
    # at quality 2's PSNR of 18 dB JPEG needs the rate where 30 + 8 log2(r) = 18
    assert "%.3f (%+.0f %%)" % (2 ** (-12 / 8.0), 100 * (2 ** (-12 / 8.0) / 0.1 - 1)) in md
    # BD-rate of rawdiff's three points against each codec, with the range integrated over
    cv = rd.curves(results)
    bd = rd.bd_rate(cv["webp"], cv["rawdiff-fast"], "ms_ssim")
    lo, hi = rd.bd_range(cv["webp"], cv["rawdiff-fast"], "ms_ssim")
    assert "| WebP (cwebp) | %+.1f %%" % rd.bd_rate(cv["webp"], cv["rawdiff-fast"], "psnr") in md
    assert "%+.1f %% (%.4f–%.4f)" % (bd, lo, hi) in md
    assert "WebP (cwebp) | %+.1f %%" % -30.0 in md  # the sweeps' check: a curve at 0.7x JPEG's rate
    # the target check, per quality up to 0.15 bpp
    target = md.split("## Target: WebP at the same bytes")[1].split("## BD-rate")[0]
    assert "| 2 | 0.1000 | 2 / 2 |" in target and "| 3 | 0.2000 |" not in target
    # stages and truncation
    assert "| 1 | f16 | 16 | 24 | 10 (62.5 %) | 3.000 | 2.500 | 2.750 | 4.00 | 8 | 0.0645 |" in md
    assert "Truncation: 4 of 4 streams of quality 3" in md and "a note" in md
    # colour: means per quality, and each frame's gain at each quality (an sRGB-domain model has no RAW output)
    assert "## Colour and RAW output" in md and "| m | 2 | 18.50 | 0.60 (max 0.80) | — |" in md
    assert "| f1 | 0.70 | 0.80 | 0.90 |" in md
    assert cv["rawdiff-fast"][0]["frames"] == 2 and cv["jpeg"][1]["bpp"] == pytest.approx(0.1)
    from rawdiff.eval.cli import summary

    out = summary(dict(results, wall_s=1.0), "o")
    assert "colour m q2: colour-fit gain 0.60 dB (max 0.80); no RAW output" in out
    assert "rawdiff fast                 q3: 0.2000 bpp" in out
    assert "BD-rate rawdiff fast vs WebP (cwebp): PSNR %+.1f %%" % rd.bd_rate(cv["webp"], cv["rawdiff-fast"],
                                                                             "psnr") in out
    assert "stage 1 of m (f16, K=16): 10/16 codes used, 2.750 coded bits/index, 2.500 prior bits/index" in out


def test_side_by_side(tmp_path, photo):
    out = str(tmp_path / "sbs.png")
    report.side_by_side([("reference", photo), ("other\n12 B", photo[::-1].copy())], out, panel_width=48, crop=32)
    img = cv2.imread(out)
    assert img is not None and img.shape[1] >= 2 * 48 + 6 and img.shape[0] == 40 + 32 + 6 + 32


def test_at_bytes_finds_the_largest_file_no_larger_than_asked(photo):
    jpeg = baselines.JPEG()
    sizes = {e.setting: e.nbytes for e in jpeg.sweep(photo)}
    target = (sizes[20] + sizes[30]) // 2
    e, reached = ev.at_bytes(jpeg, photo, target)
    assert reached and e.nbytes <= target and e.nbytes >= sizes[20]
    # one quality step more writes more than asked: the bisection found the edge
    assert jpeg.encode(photo, int(round(e.setting)) + 1).nbytes > target or e.nbytes == target
    e, reached = ev.at_bytes(jpeg, photo, 10)
    assert not reached and e.setting == jpeg.settings[0]


def test_parse_qualities():
    assert ev.parse_qualities("3, 1,3") == [1, 3] and ev.parse_qualities(None) is None
    assert ev.parse_qualities("") is None
    with pytest.raises(ValueError, match="whole numbers"):
        ev.parse_qualities("1,a")
    with pytest.raises(ValueError, match="1 or more"):
        ev.parse_qualities("0,2")


# --------------------------------------------------------------------------- end to end


def _write_frames(folder, n=2, h=64, w=96):
    from rawdiff.raw import RawFrame
    from rawdiff.raw.io import write_raw

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        rgb = textured_photo(h, w, 10 + i).astype(np.uint16) * 16  # 12 bits
        mosaic = np.empty((h, w), np.uint16)
        mosaic[0::2, 0::2], mosaic[0::2, 1::2] = rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1]
        mosaic[1::2, 0::2], mosaic[1::2, 1::2] = rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]
        write_raw(RawFrame(mosaic, cfa="RGGB", black_level=0, white_level=4095), os.path.join(folder, "f%d.npy" % i))


def test_find_frames(tmp_path):
    _write_frames(str(tmp_path / "raw"), n=2, h=16, w=16)
    cv2.imwrite(str(tmp_path / "raw" / "f0.rgb.png"), np.zeros((16, 16, 3), np.uint8))  # a target, not a frame
    (tmp_path / "idx.txt").write_text("raw/f1.npy\n\n# comment\nraw/f0.npy\n")
    found = eval_frames.find_frames([str(tmp_path / "raw")])
    assert [os.path.basename(f) for f in found] == ["f0.npy", "f1.npy"]
    assert eval_frames.find_frames([str(tmp_path / "idx.txt")]) == [str(tmp_path / "raw" / "f1.npy"),
                                                                    str(tmp_path / "raw" / "f0.npy")]
    with pytest.raises(FileNotFoundError):
        eval_frames.find_frames([str(tmp_path / "nothing")])
    frame, ref, info = eval_frames.load_frame(found[0])
    assert info == {"reference": "target", "cropped_from": None} and ref.shape == (16, 16, 3)
    frame, ref, info = eval_frames.load_frame(found[1], max_pixels=100)
    assert info["reference"] == "isp" and info["cropped_from"] == [16, 16] and frame.cfa == "RGGB"
    assert ref.shape[:2] == frame.shape and frame.width * frame.height <= 100


@pytest.fixture
def model_copy(fixture_model, tmp_path):
    """A copy of the fixture model (its model.json and card get written)."""
    out = str(tmp_path / "model")
    shutil.copytree(fixture_model, out)
    return out


def test_rawdiff_eval_every_operating_point_end_to_end(tmp_path, model_copy, capsys):
    """All qualities of the staged fixture model on two tiny frames: a point per quality and
    frame with rising rates, per stage coded bits from the streams' real bytes, the truncation
    check, the target check against WebP, the pictures, and the operating points written into
    the model directory, where the codec and `rawdiff info --model` read them."""
    from rawdiff.cli import main
    from rawdiff.codec import Codec
    from rawdiff.codec.modeldir import compute_model_id
    from rawdiff.raw import read_raw

    codec = Codec.load(model_copy)
    assert codec.qualities >= 2, "the fixture model has one quantizer stage: run `make fixtures`"
    model_id, top = codec.model_id, codec.qualities
    _write_frames(str(tmp_path / "raw"), n=3)
    out = tmp_path / "out"
    rc = main(["eval", "--model", model_copy, str(tmp_path / "raw"), "--out", str(out), "--max-frames", "2",
               "--codecs", "webp", "jpeg", "--steps", "1", "--no-progress", "--write-operating-points"])
    assert rc == 0
    for name in ("results.json", "report.md", "rd.png", "rd_psnr.png", "rd_ms_ssim.png", "side_by_side.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert len(results["frames"]) == 2
    fast = [p for p in results["points"] if p["codec"] == "rawdiff-fast"]
    assert sorted((p["frame"], p["quality"]) for p in fast) == [(f, q) for f in (0, 1) for q in range(1, top + 1)]
    for f in (0, 1):
        rates = [p["bytes"] for p in sorted((p for p in fast if p["frame"] == f), key=lambda p: p["quality"])]
        assert all(b > a for a, b in zip(rates, rates[1:])), rates  # each stage adds its payload
    for p in fast:
        assert p["bpp"] == pytest.approx(8.0 * p["bytes"] / (64 * 96)) and p["setting"] == p["quality"]
        assert p["psnr"] > 0 and 0 < p["ms_ssim"] <= 1 and p["encode_s"] > 0 and p["decode_s"] > 0
        assert 0 <= p["people_matched"] <= min(p["people_reference"], p["people_decoded"])  # the pooled share's counts
    for name in ("webp", "jpeg"):
        assert len([p for p in results["points"] if p["codec"] == name]) == 2 * len(baselines.BASELINES[name].settings)

    # per stage: the streams' real bytes, as a stream encoded here again has them
    m = results["models"][0]
    assert m["truncation"] == {"checked": 2 * (top - 1), "identical": 2 * (top - 1), "differing": []}
    stats = m["stage_stats"]
    assert [s["stage"] for s in stats] == list(range(1, top + 1))
    from rawdiff.codec import bitstream

    frames = [read_raw(str(tmp_path / "raw" / ("f%d.npy" % i))) for i in (0, 1)]
    streams = [bitstream.unpack(codec.compress(fr, quality=top)) for fr in frames]
    for k, st in enumerate(stats):
        scale, size = codec.stages[k]
        shape = (-(-8 // scale), -(-12 // scale))
        stage_bytes = sum(h.stages[k][2] for h, _ in streams)
        assert st["codebook_size"] == size and st["indices"] == 2 * shape[0] * shape[1]
        assert st["coded_bits_per_index"] == pytest.approx(8.0 * stage_bytes / st["indices"])
        assert st["log2_k"] == math.log2(size) and 0 < st["prior_bits_per_index"] <= st["coded_bits_per_index"] + 1
    assert sum(s["bytes_per_frame"] for s in stats) + m["header_bytes_per_frame"] == pytest.approx(
        np.mean([p["bytes"] for p in fast if p["quality"] == top]))

    # the colour figures at every quality; the picture: rawdiff at the lowest and highest quality, WebP beside each
    assert sorted((c["frame"], c["quality"]) for c in results["colour"]) == sorted((p["frame"], p["quality"])
                                                                                   for p in fast)
    panels = results["figure"]["panels"]
    assert [p.get("quality") for p in panels if p.get("codec") == "rawdiff-fast"] == [1, top]
    for p in panels:
        if p.get("codec") == "webp":
            mine = next(r for r in panels if r.get("quality") == p["matches_q"])
            assert p["bytes"] <= mine["bytes"] or not p["reached"]
    md = (out / "report.md").read_text()
    for section in ("## rawdiff operating points", "## Target: WebP at the same bytes", "## BD-rate",
                    "## Stages: model", "## Colour and RAW output", "## Side by side"):
        assert section in md, section
    printed = capsys.readouterr().out
    if not os.path.isfile(os.path.join(model_copy, "diffusion.safetensors")):
        assert any("diffusion path skipped" in n for n in results["notes"])
    assert "rawdiff eval: 2 frames" in printed and "truncation model: %d of %d" % (2 * (top - 1), 2 * (top - 1)) \
        in printed

    # the operating points, in model.json: the same model, read by the codec and listed by `rawdiff info`
    written = Codec.load(model_copy)
    assert written.model_id == model_id == compute_model_id(model_copy)
    means = rd.operating_points(results, "rawdiff-fast")
    assert [p["quality"] for p in written.operating_points] == list(range(1, top + 1))
    for got, want in zip(written.operating_points, means):
        assert got["bpp"] == pytest.approx(want["bpp"], abs=1e-5) and got["frames"] == 2 and got["split"] == "raw"
        assert got["ms_ssim"] == pytest.approx(want["ms_ssim"], abs=1e-5)
    assert "## Operating points (measured)" in open(os.path.join(model_copy, "MODEL_CARD.md")).read()
    assert main(["info", "--model", model_copy]) == 0
    listed = capsys.readouterr().out
    assert "%-8s %.4f" % ("%d*" % top, written.operating_points[-1]["bpp"]) in listed
    assert main(["info", "--model", model_copy, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["qualities"] == top and len(info["stages"]) == top and info["operating_points"] == \
        written.operating_points


def test_info_of_a_bitstream_shows_each_stage(tmp_path, fixture_model, capsys):
    from rawdiff.cli import main

    _write_frames(str(tmp_path / "raw"), n=1)
    rdc = tmp_path / "f.rdc"
    assert main(["compress", str(tmp_path / "raw" / "f0.npy"), "-o", str(rdc), "--model", fixture_model,
                 "--quality", "2"]) == 0
    capsys.readouterr()
    assert main(["info", str(rdc)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["quality"] == 2 and len(info["stages"]) == 2
    for st in info["stages"]:
        h, w = st["grid"]
        assert (h, w) == (-(-8 // st["scale"]), -(-12 // st["scale"]))
        assert st["bits_per_index"] == pytest.approx(8.0 * st["bytes"] / (h * w), abs=1e-4)
        assert st["bpp"] == pytest.approx(8.0 * st["bytes"] / (64 * 96), abs=1e-6)
    assert main(["info"]) == 1 and main(["info", str(rdc), "--model", fixture_model]) == 1
    assert "one of them" in capsys.readouterr().err


def test_operating_points_keep_the_default_and_refuse_another_model(model_copy):
    from rawdiff.codec import Codec

    path = os.path.join(model_copy, "model.json")
    meta = json.load(open(path))
    meta["default_quality"] = 2
    with open(path, "w") as f:
        json.dump(meta, f)
    codec = Codec.load(model_copy)
    points = [{"quality": q, "bpp": 0.05 * q, "psnr": 20.0 + q, "ms_ssim": 0.8, "frames": 3}
              for q in range(1, codec.qualities + 1)]
    written = ops.write_operating_points(model_copy, codec.model_id, points, ops.split_name(["data/corpus/test.txt"]))
    again = Codec.load(model_copy)
    assert again.default_quality == 2 and written["default_quality"] == 2
    assert again.operating_points[0] == {"quality": 1, "bpp": 0.05, "psnr": 21.0, "ms_ssim": 0.8, "frames": 3,
                                         "split": "test"}
    card = open(os.path.join(model_copy, "MODEL_CARD.md")).read()
    assert card.count("## Operating points (measured)") == 1 and "| 2 (default) | 0.1000 |" in card
    ops.write_operating_points(model_copy, codec.model_id, points, "test")  # the section is replaced, not added
    assert open(os.path.join(model_copy, "MODEL_CARD.md")).read().count("## Operating points") == 1
    with pytest.raises(ValueError, match="need every quality"):
        ops.write_operating_points(model_copy, codec.model_id, points[:-1], "test")
    with pytest.raises(ValueError, match="not the evaluated 0123"):
        ops.write_operating_points(model_copy, "0123" + codec.model_id[4:], points, "test")
    assert not [n for n in os.listdir(model_copy) if n.endswith(".part.json") or ".part" in n]


def test_rawdiff_eval_bad_input(tmp_path, fixture_model, capsys):
    from rawdiff.cli import main

    assert main(["eval", "--model", fixture_model, str(tmp_path / "missing.txt"), "--out", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    _write_frames(str(tmp_path / "raw"), n=1, h=16, w=16)
    assert main(["eval", "--model", fixture_model, str(tmp_path / "raw"), "--out", str(tmp_path / "o"),
                 "--qualities", "1,9", "--codecs"]) == 1
    assert "quality 9 is not one of this model's operating points" in capsys.readouterr().err
    assert main(["eval", "--model", fixture_model, str(tmp_path / "raw"), "--out", str(tmp_path / "o"),
                 "--qualities", "1", "--write-operating-points"]) == 1
    assert "records every quality" in capsys.readouterr().err
    assert main(["eval", "--model", fixture_model, str(tmp_path / "raw"), "--out", str(tmp_path / "o"),
                 "--qualities", "1", "--figure-qualities", "2", "--codecs"]) == 1
    assert "figure qualities [2] are not among the qualities evaluated [1]" in capsys.readouterr().err


def test_unreadable_frame_is_skipped_with_note(tmp_path, fixture_model):
    _write_frames(str(tmp_path / "raw"), n=1, h=32, w=48)
    np.save(str(tmp_path / "raw" / "bad.npy"), np.zeros((2, 3, 4), np.uint16))
    results = ev.evaluate([fixture_model], [str(tmp_path / "raw")], str(tmp_path / "out"), qualities=[1], steps=[],
                          codecs=["jpeg"], butteraugli=False, progress=False)
    assert [os.path.basename(f["path"]) for f in results["frames"]] == ["f0.npy"]
    assert any(n.startswith("frame skipped") and "bad.npy" in n for n in results["notes"])
    assert results["settings"]["butteraugli"] is False
    assert all(p["butteraugli"] is None for p in results["points"])
    with pytest.raises(ValueError, match="no frame could be evaluated"):
        ev.evaluate([fixture_model], [str(tmp_path / "raw" / "bad.npy")], str(tmp_path / "out"), steps=[],
                    codecs=[], progress=False)


def test_the_eval_command_line_imports_without_torch():
    """`rawdiff --help` builds the eval parser: the command line and what it imports stay light."""
    code = "import sys, rawdiff.eval.cli; print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
