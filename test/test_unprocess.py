"""unprocess (Brooks et al. 2019): round trip through the ISP, noise statistics, determinism."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from rawdiff.raw.frame import CFA_PATTERNS
from rawdiff.raw.isp import render
from rawdiff.raw.unprocess import (
    BLUE_GAIN_RANGE,
    READ_NOISE_INTERCEPT,
    READ_NOISE_SLOPE,
    READ_NOISE_STD,
    RED_GAIN_RANGE,
    SHOT_NOISE_RANGE,
    mosaic,
    safe_invert_gains,
    unprocess,
)


def smooth_image(seed=0, shape=(96, 128)):
    """A smooth natural-ish uint8 sRGB image: blurred colour noise over colour gradients.

    Smooth on purpose: demosaicing cannot recover detail near the Nyquist frequency of the
    CFA (each colour is sampled at half resolution or less), so on fine texture the round
    trip would measure the demosaicer, not unprocess/render being inverses.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    field = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), 6)
    field = (field - field.min()) / (field.max() - field.min())
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None] * np.array([0.9, 0.6, 0.3], np.float32)
    image = 0.05 + 0.9 * (0.6 * field + 0.4 * ramp)
    return np.rint(image * 255).astype(np.uint8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_inverts_unprocess(cfa, seed):
    image = smooth_image(seed)
    frame, meta = unprocess(image, seed=seed, noise=False, cfa=cfa)
    assert frame.cfa == cfa and meta["cfa"] == cfa
    assert psnr(render(frame), image) >= 40.0  # measured ~54 dB


def test_meta_is_json_and_complete():
    frame, meta = unprocess(smooth_image(), seed=7)
    meta = json.loads(json.dumps(meta))
    assert meta["seed"] == 7 and meta["noise"] is True
    assert RED_GAIN_RANGE[0] <= meta["red_gain"] <= RED_GAIN_RANGE[1]
    assert BLUE_GAIN_RANGE[0] <= meta["blue_gain"] <= BLUE_GAIN_RANGE[1]
    assert 1 / 1.2 <= meta["rgb_gain"] <= 1 / 0.4
    assert SHOT_NOISE_RANGE[0] <= meta["shot_noise"] <= SHOT_NOISE_RANGE[1]
    assert abs(sum(meta["xyz_to_camera_weights"]) - 1) < 1e-9 and min(meta["xyz_to_camera_weights"]) >= 0
    # The frame carries what the ISP needs: brightness folded into the WB gains, and cam2rgb.
    rgb_gain = meta["rgb_gain"]
    expected_gains = [rgb_gain * meta["red_gain"], rgb_gain, rgb_gain * meta["blue_gain"]]
    np.testing.assert_allclose(frame.wb_gains, expected_gains)
    np.testing.assert_allclose(meta["wb_gains"], expected_gains)
    np.testing.assert_allclose(frame.color_matrix, np.linalg.inv(meta["rgb_to_camera"]), atol=1e-12)
    np.testing.assert_allclose(frame.color_matrix.sum(axis=1), 1.0, atol=1e-9)
    assert (frame.black_level, frame.white_level) == (256.0, 4095.0)
    assert frame.mosaic.dtype == np.uint16 and frame.mosaic.max() <= 4095


def test_deterministic_per_seed():
    image = smooth_image()
    a, meta_a = unprocess(image, seed=3)
    b, meta_b = unprocess(image, seed=3)
    np.testing.assert_array_equal(a.mosaic, b.mosaic)
    assert meta_a == meta_b
    c, meta_c = unprocess(image, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a.mosaic, c.mosaic)
    assert meta_c["seed"] is None
    d, meta_d = unprocess(image, seed=4)
    assert not np.array_equal(a.mosaic, d.mosaic) and meta_d["red_gain"] != meta_a["red_gain"]
    _, clean_meta = unprocess(image, seed=3, noise=False)  # the noise switch does not change the camera
    assert {k: v for k, v in clean_meta.items() if k != "noise"} == {k: v for k, v in meta_a.items() if k != "noise"}
    first, fresh = unprocess(image)  # no seed: one is drawn and recorded, so the frame can be remade
    assert isinstance(fresh["seed"], int)
    np.testing.assert_array_equal(unprocess(image, seed=fresh["seed"])[0].mosaic, first.mosaic)


def test_noisy_frames_differ_from_clean_and_each_other():
    image = smooth_image()
    clean, _ = unprocess(image, seed=5, noise=False)
    noisy, _ = unprocess(image, seed=5)
    other, _ = unprocess(image, seed=6)
    assert np.mean(clean.mosaic != noisy.mosaic) > 0.5
    assert not np.array_equal(noisy.mosaic, other.mosaic)


def test_noise_statistics_match_shot_and_read_levels():
    """On a flat grey the variance of each CFA plane is shot * x + read (+ quantisation)."""
    shot, read = 0.004, 2e-5
    grey = np.full((128, 128, 3), 0.5, np.float32)
    clean, _ = unprocess(grey, seed=11, noise=False, shot_noise=shot, read_noise=read)
    noisy, meta = unprocess(grey, seed=11, shot_noise=shot, read_noise=read)
    assert (meta["shot_noise"], meta["read_noise"]) == (shot, read)
    scale = noisy.white_level - noisy.black_level
    x = (clean.mosaic.astype(np.float64) - noisy.black_level) / scale
    y = (noisy.mosaic.astype(np.float64) - noisy.black_level) / scale
    for r in (0, 1):
        for c in (0, 1):
            level = x[r::2, c::2]
            assert np.ptp(level) == 0  # flat input: one clean value per plane
            samples = y[r::2, c::2]  # 4096 samples: the variance is known to ~2%
            expected = shot * level[0, 0] + read + 1.0 / (12 * scale**2)
            assert abs(samples.var() / expected - 1) < 0.1, (r, c, samples.var(), expected)
            assert abs(samples.mean() - level[0, 0]) < 4 * np.sqrt(expected / samples.size) + 0.5 / scale


def test_noise_levels_follow_the_log_linear_relation():
    """log shot ~ U(log 1e-4, log 0.012); log read = 2.18 log shot + 1.20 + N(0, 0.26^2)."""
    tiny = np.full((2, 2, 3), 0.5, np.float32)
    levels = np.array([[unprocess(tiny, seed=s)[1][k] for k in ("shot_noise", "read_noise")] for s in range(400)])
    log_shot, log_read = np.log(levels[:, 0]), np.log(levels[:, 1])
    lo, hi = np.log(SHOT_NOISE_RANGE[0]), np.log(SHOT_NOISE_RANGE[1])
    assert log_shot.min() >= lo and log_shot.max() <= hi
    assert abs(log_shot.mean() - (lo + hi) / 2) < 0.2  # the std of the mean is 0.07
    residual = log_read - (READ_NOISE_SLOPE * log_shot + READ_NOISE_INTERCEPT)
    assert abs(residual.mean()) < 0.05
    assert abs(residual.std() - READ_NOISE_STD) < 0.04


def test_levels_cfa_and_odd_size():
    image = smooth_image(shape=(33, 47))
    frame, meta = unprocess(image, seed=1, cfa="GBRG", black_level=(60, 64, 62, 66), white_level=1023)
    assert frame.shape == (32, 46) and meta["input_shape"] == [33, 47] and meta["crop"] == [32, 46]
    assert frame.black_level == (60.0, 64.0, 62.0, 66.0) and frame.white_level == 1023.0
    assert frame.mosaic.max() <= 1023
    ten_bit, _ = unprocess(image, seed=1, noise=False, white_level=1023, black_level=64)
    assert psnr(render(ten_bit), image[:32, :46]) > 35


def test_float_input_equals_uint8_input():
    image = smooth_image()
    a, _ = unprocess(image, seed=2)
    b, _ = unprocess(image.astype(np.float64) / 255.0, seed=2)
    np.testing.assert_array_equal(a.mosaic, b.mosaic)


def test_safe_invert_gains_keeps_white():
    image = np.array([[[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]], np.float32)
    out = safe_invert_gains(image, rgb_gain=1.25, red_gain=2.0, blue_gain=1.6)
    np.testing.assert_allclose(out[0, 0], 1.0, rtol=1e-6)  # saturated: gains faded to 1
    np.testing.assert_allclose(out[0, 1], 0.5 / 1.25 / np.array([2.0, 1.0, 1.6]), rtol=1e-6)


def test_mosaic_follows_the_cfa():
    rgb = np.zeros((4, 4, 3))
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1.0, 2.0, 3.0
    np.testing.assert_array_equal(mosaic(rgb, "GRBG")[:2, :2], [[2.0, 1.0], [3.0, 2.0]])
    np.testing.assert_array_equal(mosaic(rgb, "BGGR")[:2, :2], [[3.0, 2.0], [2.0, 1.0]])


def test_bad_input():
    image = smooth_image(shape=(8, 8))
    with pytest.raises(ValueError, match="rgb must be an HxWx3 image"):
        unprocess(image[..., 0], seed=0)
    with pytest.raises(ValueError, match=r"float rgb must lie in \[0, 1\]"):
        unprocess(image.astype(np.float32), seed=0)
    with pytest.raises(ValueError, match="give seed or rng, not both"):
        unprocess(image, seed=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="white_level 200 <= black_level 256"):
        unprocess(image, seed=0, white_level=200)
    with pytest.raises(ValueError, match="cfa 'RGBG' is not one of"):
        unprocess(image, seed=0, cfa="RGBG")
    with pytest.raises(ValueError, match="shot_noise must be > 0"):
        unprocess(image, seed=0, shot_noise=-1.0)
    with pytest.raises(ValueError, match="at least 2x2"):
        unprocess(image[:1], seed=0)
