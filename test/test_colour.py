"""Exact colour: render parameters in the bitstream, the colour-exact model domain, RAW output.

The codec's network codes the white-balanced signal and decodes white-balanced camera RGB;
the reference ISP's own colour stage renders sRGB with the frame's parameters, which the
bitstream carries. These tests pin each link of that chain against the reference ISP.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rawdiff.codec import Codec
from rawdiff.codec.bitstream import read_header
from rawdiff.codec.colour_stats import (
    GAIN_RANGE,
    CellMoments,
    match_statistics,
    planes_statistics,
    rgb_statistics,
    transport_map,
)
from rawdiff.metrics import colour_fit, colour_fit_gain, psnr_uint8
from rawdiff.nn.colour import camera_rgb_of, render_camera_rgb, white_balance_planes
from rawdiff.raw import RawFrame, read_raw
from rawdiff.raw.frame import mosaic_to_planes
from rawdiff.raw.io import write_raw
from rawdiff.raw.isp import (
    auto_white_balance,
    colour_stage,
    demosaic,
    render,
    render_float,
    render_parameters,
    white_balanced,
)
from rawdiff.raw.unprocess import unprocess

CCM = np.array([[1.6, -0.45, -0.15], [-0.2, 1.45, -0.25], [0.05, -0.55, 1.5]])


def _scene(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.5 - 0.3 * xx * yy], axis=-1)
    return np.clip(rgb + 0.03 * rng.standard_normal(rgb.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def frame():
    """A 12-bit unprocessed frame with as-shot gains and a colour matrix (a random camera)."""
    f, _ = unprocess(_scene(), seed=3, cfa="GRBG", black_level=256, white_level=4095, noise=False)
    assert f.wb_gains is not None and f.color_matrix is not None
    return f


@pytest.fixture(scope="module")
def codec(fixture_model):
    c = Codec.load(fixture_model, device="cpu", backend="torch")
    assert c.colour_exact, "the fixture model is trained in the colour-exact domain (config/models/tiny.yaml)"
    return c


# ------------------------------------------------------------------ the ISP split into its stages


def test_render_is_white_balance_then_demosaic_then_the_colour_stage(frame):
    gains, ccm = np.asarray(frame.wb_gains), np.asarray(frame.color_matrix)
    camera_rgb = demosaic(white_balanced(frame.normalize(), frame.cfa, gains), frame.cfa)
    np.testing.assert_array_equal(colour_stage(camera_rgb, ccm), render_float(frame))


def test_torch_colour_stage_equals_the_isp(frame):
    rng = np.random.default_rng(1)
    camera_rgb = rng.uniform(-0.1, 1.1, size=(2, 24, 40, 3)).astype(np.float32)
    ccms = np.stack([CCM, np.asarray(frame.color_matrix)]).astype(np.float32)
    got = render_camera_rgb(torch.from_numpy(camera_rgb).permute(0, 3, 1, 2), torch.from_numpy(ccms))
    for i in range(2):
        np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy(), colour_stage(np.clip(camera_rgb[i], 0, 1),
                                                                                  ccms[i]), atol=2e-6)
    assert np.array_equal(render_camera_rgb(torch.from_numpy(camera_rgb).permute(0, 3, 1, 2), torch.from_numpy(ccms),
                                            tone_curve="none")[0].permute(1, 2, 0).numpy() > 0.5,
                          colour_stage(np.clip(camera_rgb[0], 0, 1), ccms[0], "none") > 0.5)


def test_straight_through_clip_passes_gradients_outside_the_range():
    x = torch.tensor([[-0.2, 0.5, 1.3]]).reshape(1, 3, 1, 1).repeat(1, 1, 2, 2).requires_grad_()
    eye = torch.eye(3)[None]
    render_camera_rgb(x, eye, straight_through=True).sum().backward()
    assert torch.all(x.grad[:, 0] > 0)  # below 0: still pulled up
    x.grad = None
    render_camera_rgb(x, eye, straight_through=False).sum().backward()
    assert torch.all(x.grad[:, 0] == 0)


def test_torch_white_balance_equals_the_isp(frame):
    gains = np.asarray(frame.wb_gains, dtype=np.float32)
    planes = torch.from_numpy(frame.to_planes())[None]
    got = white_balance_planes(planes, torch.from_numpy(gains)[None])[0].numpy()
    want = mosaic_to_planes(white_balanced(frame.normalize(), frame.cfa, gains), frame.cfa)
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert got.max() <= min(1.0, gains.min()) + 1e-7  # the ISP's clip at the smallest gain


# ------------------------------------------------------------------ render parameters of a frame


def test_render_parameters_take_the_frame_s_own_values(frame):
    p = render_parameters(frame)
    assert p["wb_source"] == "as_shot" and p["matrix_source"] == "frame" and p["tone_curve"] == "smoothstep"
    np.testing.assert_allclose(p["wb_gains"], frame.wb_gains, rtol=1e-6)
    np.testing.assert_allclose(np.reshape(p["color_matrix"], (3, 3)), frame.color_matrix, rtol=1e-6, atol=1e-7)
    assert p["wb_gains"] == tuple(float(g) for g in np.float32(frame.wb_gains))  # float32, as the bitstream


def test_render_parameters_without_metadata_are_the_isp_s_gray_world(frame):
    bare = frame.copy(wb_gains=None, color_matrix=None)
    p = render_parameters(bare)
    assert p["wb_source"] == "gray_world" and p["matrix_source"] == "default"
    np.testing.assert_allclose(p["wb_gains"], auto_white_balance(bare.normalize(), bare.cfa), rtol=1e-6)
    assert p["color_matrix"] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


# ------------------------------------------------------------------ the codec


def test_bitstream_carries_the_render_parameters(codec, frame):
    header = read_header(codec.compress(frame))
    assert header.version == 9 and header.wb_source == "as_shot" and header.matrix_source == "frame"
    assert header.wb_gains == render_parameters(frame)["wb_gains"]
    assert header.color_matrix == render_parameters(frame)["color_matrix"]
    gray = read_header(codec.compress(frame.copy(wb_gains=None, color_matrix=None)))
    assert gray.wb_source == "gray_world" and gray.matrix_source == "default"
    assert gray.wb_gains == render_parameters(frame.copy(wb_gains=None))["wb_gains"]


def test_the_encoder_codes_the_white_balanced_signal(codec, frame):
    # the same scene under another white balance and exposure codes to the same indices
    gains = np.asarray(frame.wb_gains)
    darker = frame.copy(mosaic=np.clip(np.rint(256 + (frame.mosaic.astype(np.float64) - 256) * 0.5), 0, 4095)
                        .astype(np.uint16), wb_gains=gains * 2.0)
    for k, (a, b) in enumerate(zip(codec.encode_codes(frame), codec.encode_codes(darker))):  # every stage
        assert np.mean(a == b) > 0.95, "stage %d" % (k + 1)


def test_decompress_is_the_isp_colour_stage_of_the_decoder_output(codec, frame):
    data = codec.compress(frame)
    header, grid = codec.parse(data)
    out = codec.decode_indices(grid)[: frame.height, : frame.width]
    corrected = match_statistics(out, header.colour_stats, codec.factor)
    want = np.round(colour_stage(corrected, np.reshape(header.color_matrix, (3, 3))) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(codec.decompress(data), want)


# ------------------------------------------------------------------ colour statistics


def test_the_bitstream_carries_the_coded_signal_s_statistics(codec, frame):
    header = read_header(codec.compress(frame))
    planes = codec.model_planes(frame)
    assert header.colour_stats == tuple(float(np.float32(v)) for v in planes_statistics(planes, codec.factor))
    camera_rgb = demosaic(white_balanced(frame.normalize(), frame.cfa, np.float32(header.wb_gains)), frame.cfa)
    # the planes' statistics are those of the camera RGB the decoder should give back
    np.testing.assert_allclose(header.colour_stats[:3], rgb_statistics(camera_rgb, codec.factor)[:3], atol=2e-3)


def test_matching_statistics_undoes_a_colour_cast_and_lost_saturation():
    rgb = _scene(96, 128, seed=2)
    grey = rgb.mean(axis=-1, keepdims=True)
    cast = np.clip(0.6 * rgb + 0.4 * grey, 0, 1) * np.array([1.08, 0.95, 0.9]) + 0.02  # desaturated, tinted
    fixed = match_statistics(cast.astype(np.float32), rgb_statistics(rgb, 8), 8)
    # the symmetric (Monge-Kantorovich) map is not the cast's own inverse, but close to it
    assert psnr_uint8(fixed, rgb, peak=1.0) > psnr_uint8(cast, rgb, peak=1.0) + 5
    assert psnr_uint8(fixed, rgb, peak=1.0) > 30
    # statistics that already agree change nothing
    np.testing.assert_allclose(match_statistics(rgb, rgb_statistics(rgb, 8), 8), rgb, atol=1e-4)


def test_a_flat_decode_is_corrected_only_within_the_gain_range():
    rgb = _scene(64, 64, seed=3)
    a, _ = transport_map(rgb_statistics(rgb, 8), rgb_statistics(np.full_like(rgb, 0.4), 8))
    assert np.linalg.svd(a, compute_uv=False).max() <= GAIN_RANGE[1] + 1e-9


def test_cell_moments_gathered_in_pieces_are_the_whole_frame_s():
    rgb = _scene(72, 104, seed=4)  # 9 x 13 cells of 8 pixels
    moments = CellMoments(8)
    for top in (0, 40):
        for left in (0, 56):
            moments.add(rgb[top: top + 40, left: left + 56])
    np.testing.assert_allclose(moments.statistics(), rgb_statistics(rgb, 8), atol=1e-9)


def test_corrupt_statistics_are_refused():
    with pytest.raises(ValueError, match="9 finite numbers"):
        transport_map([0.1] * 8, [0.1] * 9)


def test_raw_frame_of_the_isp_s_own_camera_rgb_is_the_original_mosaic(codec, frame):
    """mosaic_frame inverts white balance and levels exactly: fed the ISP's camera RGB of the
    frame, it gives the frame's mosaic back (to 1 LSB, except where the ISP clipped and at
    the frame's border)."""
    data = codec.compress(frame)
    header = read_header(data)
    gains = np.asarray(header.wb_gains, dtype=np.float32)
    camera_rgb = demosaic(white_balanced(frame.normalize(), frame.cfa, gains), frame.cfa)
    # with the colour statistics the decoder output is first mapped onto them: close to the
    # identity for a perfect output (the planes' cells and the demosaiced cells differ a little)
    mapped = codec.mosaic_frame(camera_rgb, header)
    assert psnr_uint8(render(mapped), render(frame)) > 40
    raw = codec.mosaic_frame(camera_rgb, dataclasses.replace(header, colour_stats=(0.0,) * 9))
    assert (raw.cfa, raw.black_level, raw.white_level) == (frame.cfa, frame.black_level, frame.white_level)
    np.testing.assert_allclose(raw.wb_gains, gains, rtol=1e-7)
    np.testing.assert_allclose(raw.color_matrix, np.reshape(header.color_matrix, (3, 3)))
    limit = min(1.0, float(gains.min()))
    unclipped = white_balanced(frame.normalize(), frame.cfa, gains) < limit - 1e-4
    diff = np.abs(raw.mosaic.astype(int) - frame.mosaic.astype(int))
    inner = (slice(2, -2), slice(2, -2))  # OpenCV's demosaic alters the samples of the outer 2 pixels
    assert unclipped.mean() > 0.9 and diff[inner][unclipped[inner]].max() <= 1
    # and the reference ISP renders it as the frame itself
    assert psnr_uint8(render(raw), render(frame)) > 45


def test_decompress_raw_renders_close_to_the_fast_rgb_output(codec, frame):
    data = codec.compress(frame)
    raw = codec.decompress_raw(data)
    assert raw.shape == frame.shape and raw.cfa == frame.cfa
    assert raw.mosaic.max() <= frame.white_level
    rgb = codec.decompress(data)
    ref = render(frame)
    # demosaicing the re-mosaicked output loses a little against the network's own RGB
    assert abs(psnr_uint8(render(raw), ref) - psnr_uint8(rgb, ref)) < 1.5


def test_a_model_decoding_srgb_refuses_raw_output(fixture_model, tmp_path, frame):
    codec = Codec.load(fixture_model, device="cpu")
    data = codec.compress(frame)
    codec.out = "rgb"  # what an sRGB-domain model directory loads as
    with pytest.raises(ValueError, match="decodes sRGB only"):
        codec.decompress_raw(data)


# ------------------------------------------------------------------ metrics


def test_colour_fit_gain_sees_a_global_colour_error_and_not_noise():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)  # full-range channels: the fit cannot shrink noise
    noisy = np.clip(np.rint(ref + rng.normal(0, 3, ref.shape)), 0, 255).astype(np.uint8)
    assert abs(colour_fit_gain(noisy, ref)) < 0.1
    tinted = np.clip(ref.astype(float) @ np.array([[0.8, 0.1, 0.0], [0.0, 0.9, 0.05], [0.1, 0.0, 0.7]]).T + 12,
                     0, 255).astype(np.uint8)
    assert colour_fit_gain(tinted, ref) > 10
    assert psnr_uint8(colour_fit(tinted, ref), ref) > 40


# ------------------------------------------------------------------ command line


def _rawdiff(*args):
    return subprocess.run([sys.executable, "-m", "rawdiff.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_raw_output_png_sidecar_and_dng(fixture_model, tmp_path, frame):
    src = write_raw(frame, tmp_path / "in.png")
    rdc = tmp_path / "f.rdc"
    assert _rawdiff("compress", src, "-o", rdc, "--model", fixture_model).returncode == 0
    info = json.loads(_rawdiff("info", rdc).stdout)
    assert info["wb_source"] == "as_shot" and len(info["wb_gains"]) == 3 and len(info["color_matrix"]) == 3
    out = tmp_path / "out" / "raw.png"
    r = _rawdiff("decompress", rdc, "-o", out, "--output", "raw", "--model", fixture_model)
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "out" / "raw.json").read_text())
    assert side["cfa"] == frame.cfa and side["black_level"] == 256 and side["white_level"] == 4095
    np.testing.assert_allclose(side["wb_gains"], info["wb_gains"])
    back = read_raw(out)
    assert back.shape == frame.shape and back.cfa == frame.cfa
    assert _rawdiff("isp", out, "-o", tmp_path / "isp.png").returncode == 0
    dng = tmp_path / "raw.dng"
    r = _rawdiff("decompress", rdc, "-o", dng, "--model", fixture_model)  # .dng: RAW output by default
    assert r.returncode == 0, r.stderr
    got = read_raw(dng)
    np.testing.assert_array_equal(got.mosaic, back.mosaic)
    np.testing.assert_allclose(got.color_matrix, back.color_matrix, atol=1e-5)
    np.testing.assert_allclose(got.wb_gains, np.asarray(back.wb_gains) / back.wb_gains[1], rtol=1e-5)
    bad = _rawdiff("decompress", rdc, "-o", tmp_path / "raw.jpg", "--output", "raw", "--model", fixture_model)
    assert bad.returncode == 1 and "--output raw writes" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("field, value, message", [
    ("wb_gains", [1.0, 0.0, 1.0], "wb_gains must be 3 positive finite values"),
    ("wb_gains", [1.0, -1.0, 1.0], "wb_gains must be 3 positive finite values"),
    ("color_matrix", [[1, 2, 3], [2, 4, 6], [0, 0, 1]], "color_matrix .* is singular"),
    ("color_matrix", [[1, 0], [0, 1]], "color_matrix must be a finite 3x3 matrix"),
])
def test_cli_bad_render_parameters_fail_in_one_line(fixture_model, tmp_path, frame, field, value, message):
    src = write_raw(frame, tmp_path / "in.png")
    side = tmp_path / "in.json"
    meta = json.loads(side.read_text())
    meta[field] = value
    side.write_text(json.dumps(meta))
    r = _rawdiff("compress", src, "-o", tmp_path / "f.rdc", "--model", fixture_model)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    import re

    assert re.search(message, r.stderr), r.stderr


def test_a_sidecar_that_disagrees_with_the_dng_is_refused(tmp_path, frame):
    from rawdiff.raw.dng import write_dng

    path = tmp_path / "cam.dng"
    write_dng(frame.copy(wb_gains=np.asarray(frame.wb_gains) / frame.wb_gains[1]), path)
    (tmp_path / "cam.json").write_text(json.dumps({"white_level": 1023}))
    with pytest.raises(ValueError, match=r"cam.json: white_level 1023 disagrees with the RAW file's 4095"):
        read_raw(path)
    (tmp_path / "cam.json").write_text(json.dumps({"white_level": 4095, "cfa": frame.cfa}))
    assert read_raw(path).white_level == 4095


def test_a_sidecar_adds_what_the_dng_lacks(tmp_path, frame):
    from rawdiff.raw.dng import write_dng

    path = tmp_path / "cam.dng"
    write_dng(frame.copy(wb_gains=None, color_matrix=None), path)
    assert read_raw(path).wb_gains is None
    (tmp_path / "cam.json").write_text(json.dumps({"wb_gains": [2.0, 1.0, 1.5]}))
    assert read_raw(path).wb_gains.tolist() == [2.0, 1.0, 1.5]


def test_rawframe_refuses_a_bad_colour_matrix():
    with pytest.raises(ValueError, match="singular"):
        RawFrame(np.zeros((4, 4), np.uint16), color_matrix=np.ones((3, 3)))


def test_camera_rgb_of_inverts_the_rendering_where_nothing_clips():
    torch.manual_seed(0)
    ccm = torch.tensor([[[1.2, -0.1, -0.1], [-0.1, 1.2, -0.1], [-0.05, -0.1, 1.15]]])
    camera = 0.1 + 0.3 * torch.rand(1, 3, 8, 8)  # renders inside [0, 1]: no clip active
    srgb = render_camera_rgb(camera, ccm)
    assert torch.allclose(camera_rgb_of(srgb, ccm), camera, atol=2e-4)
    # a clipped value comes back as one that renders the same
    hot = torch.full((1, 3, 2, 2), 1.5)
    assert torch.allclose(render_camera_rgb(camera_rgb_of(render_camera_rgb(hot, ccm), ccm), ccm),
                          render_camera_rgb(hot, ccm), atol=1e-4)
