"""The reference ISP: stages, every CFA phase, determinism, profiles, and LibRaw agreement."""

from __future__ import annotations

import numpy as np
import pytest

from rawdiff.raw.dng import read_dng
from rawdiff.raw.frame import CFA_PATTERNS, RawFrame
from rawdiff.raw.isp import (
    DEFAULT_PROFILES_PATH,
    apply_ccm,
    auto_white_balance,
    camera_profile_matrix,
    camera_to_srgb_matrix,
    demosaic,
    inverse_smoothstep,
    load_camera_profiles,
    render,
    render_float,
    rgb_to_camera_matrix,
    smoothstep,
    srgb_gamma,
    srgb_gamma_inverse,
    white_balance,
)
from rawdiff.raw.unprocess import XYZ_TO_CAMERA, mosaic

CCM = camera_to_srgb_matrix(XYZ_TO_CAMERA[3])
GAINS = np.array([2.0, 1.0, 1.6])


def flat_frame(camera_rgb, cfa, shape=(16, 20), gains=GAINS, ccm=CCM, white=4095, black=0):
    """A frame whose white-balanced camera colour is ``camera_rgb`` everywhere."""
    raw = np.asarray(camera_rgb, dtype=np.float64) / np.asarray(gains)
    plane = np.broadcast_to(raw, shape + (3,))
    dn = np.rint(black + mosaic(plane, cfa) * (white - black)).astype(np.uint16)
    return RawFrame(dn, cfa=cfa, black_level=black, white_level=white, wb_gains=gains, color_matrix=ccm)


# --- stages -------------------------------------------------------------------------------------


def test_srgb_curve_is_iec_61966_2_1():
    x = np.array([0.0, 0.0031308, 0.01, 0.18, 0.5, 1.0], dtype=np.float32)
    np.testing.assert_allclose(srgb_gamma(x), [0.0, 0.04045, 0.0998528, 0.4613561, 0.7353570, 1.0], atol=2e-5)
    y = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(srgb_gamma(srgb_gamma_inverse(y)), y, atol=2e-6)


def test_smoothstep_and_its_inverse():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(smoothstep(x), 3 * x**2 - 2 * x**3, atol=1e-6)
    np.testing.assert_allclose(inverse_smoothstep(smoothstep(x)), x, atol=1e-3)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("method", ["ea", "bilinear"])
def test_demosaic_flat_colour_every_phase(cfa, method):
    """OpenCV names Bayer codes by the 2nd row's 2nd and 3rd pixels; a flat colour catches a mix-up."""
    colour = np.array([0.2, 0.5, 0.8])
    out = demosaic(mosaic(np.broadcast_to(colour, (12, 14, 3)), cfa), cfa, method)
    assert out.shape == (12, 14, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to(colour, out.shape), atol=1e-4)


def test_white_balance_applies_gains_by_colour():
    m = mosaic(np.ones((4, 4, 3)), "GRBG")
    out = white_balance(m, "GRBG", (2.0, 1.0, 1.5))
    np.testing.assert_allclose(out[0::2, 1::2], 2.0)  # R in GRBG
    np.testing.assert_allclose(out[1::2, 0::2], 1.5)  # B
    np.testing.assert_allclose(out[0::2, 0::2], 1.0)
    with pytest.raises(ValueError, match="wb gains must be 3 positive"):
        white_balance(m, "GRBG", (2.0, 0.0, 1.5))


def test_apply_ccm_rows_are_outputs():
    rgb = np.array([[[1.0, 0.0, 0.0]]], dtype=np.float32)
    np.testing.assert_allclose(apply_ccm(rgb, CCM)[0, 0], CCM[:, 0], rtol=1e-6)


def test_auto_white_balance_gray_world_ignores_clipped_tiles():
    rng = np.random.default_rng(0)
    grey = np.kron(rng.uniform(0.1, 0.6, size=(16, 16, 1)), np.ones((2, 2, 3)))  # one grey per 2x2 tile
    scene = grey / GAINS  # a grey world seen through the sensor's colour response
    scene[:8] = [1.0, 1.0, 1.0]  # a blown-out sky: clipped in every channel
    m = mosaic(scene, "BGGR")
    np.testing.assert_allclose(auto_white_balance(m, "BGGR"), GAINS, rtol=1e-6)
    assert np.allclose(auto_white_balance(np.zeros((8, 8)), "RGGB"), 1.0)  # no signal: gains 1


# --- render -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("colour", [(0.18, 0.18, 0.18), (0.6, 0.3, 0.1), (0.05, 0.25, 0.45)])
def test_render_flat_patch_every_phase(cfa, colour):
    frame = flat_frame(colour, cfa, black=256)
    for tone in ("none", "smoothstep"):
        expected = srgb_gamma(np.clip(CCM @ np.asarray(colour), 0, 1))
        if tone == "smoothstep":
            expected = smoothstep(expected)
        out = render(frame, tone_curve=tone)
        assert out.shape == (16, 20, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(float) - expected * 255).max() <= 1.0, (cfa, colour, tone, out[8, 8])
    if len(set(colour)) == 1:  # rows of the matrix sum to 1: grey stays grey
        out = render(frame)
        assert np.ptp(out.astype(int), axis=-1).max() <= 1


def test_render_is_deterministic():
    rng = np.random.default_rng(1)
    frame = RawFrame(rng.integers(200, 4000, size=(48, 64), dtype=np.uint16), "GRBG", 200, 4095)
    first = render(frame)
    for _ in range(2):
        np.testing.assert_array_equal(render(frame), first)
    np.testing.assert_array_equal(render(frame.copy()), first)


def test_wb_options():
    frame = flat_frame((0.3, 0.3, 0.3), "RGGB")
    grey = render(frame, tone_curve="none")
    np.testing.assert_array_equal(render(frame, wb=GAINS, tone_curve="none"), grey)
    np.testing.assert_array_equal(render(frame, wb="auto", tone_curve="none"), grey)  # flat grey: gray world
    no_gains = frame.copy(wb_gains=None)
    np.testing.assert_array_equal(render(no_gains, tone_curve="none"), grey)  # falls back to gray world
    tinted = render(frame, wb="none", tone_curve="none")
    assert tinted[..., 1].mean() > tinted[..., 0].mean() + 20
    with pytest.raises(ValueError, match="wb 'daylight' is not one of"):
        render(frame, wb="daylight")
    with pytest.raises(ValueError, match="tone_curve 'filmic' is not one of"):
        render(frame, tone_curve="filmic")
    with pytest.raises(ValueError, match="demosaic method 'vng' is not one of"):
        render(frame, demosaic_method="vng")
    with pytest.raises(ValueError, match="frame must be a RawFrame"):
        render(np.zeros((4, 4), np.uint16))


def test_saturated_highlights_render_neutral():
    """A RAW-saturated area stays neutral whatever the gains, also with a gain below 1."""
    for gains in ([2.0, 1.0, 1.6], [1.6, 0.83, 1.3]):
        frame = RawFrame(np.full((8, 8), 4095, np.uint16), "RGGB", 256, 4095, wb_gains=gains, color_matrix=CCM)
        out = render(frame)
        assert np.ptp(out.astype(int), axis=-1).max() == 0, (gains, out[4, 4])


def test_color_matrix_priority(tmp_path):
    colour = (0.5, 0.2, 0.1)
    frame = flat_frame(colour, "RGGB")
    identity = render_float(frame.copy(color_matrix=None), tone_curve="none")
    np.testing.assert_allclose(identity[4, 4], srgb_gamma(np.array(colour)), atol=1e-3)
    own = render_float(frame, tone_curve="none")
    np.testing.assert_allclose(own[4, 4], srgb_gamma(np.clip(CCM @ colour, 0, 1)), atol=1e-3)
    np.testing.assert_allclose(render_float(frame, profile="identity", tone_curve="none"), identity)
    other = camera_to_srgb_matrix(XYZ_TO_CAMERA[0])
    np.testing.assert_allclose(
        render_float(frame, profile="brooks2019_1", tone_curve="none")[4, 4],
        srgb_gamma(np.clip(other @ colour, 0, 1)),
        atol=1e-3,
    )
    explicit = render_float(frame, color_matrix=np.eye(3), profile="brooks2019_1", tone_curve="none")
    np.testing.assert_allclose(explicit, identity)


def test_camera_profiles_file():
    assert DEFAULT_PROFILES_PATH.is_file()
    profiles = load_camera_profiles()
    assert "identity" in profiles
    for k in range(4):  # the YAML copy of Brooks' matrices agrees with unprocess'
        np.testing.assert_allclose(
            camera_profile_matrix("brooks2019_%d" % (k + 1)), camera_to_srgb_matrix(XYZ_TO_CAMERA[k])
        )
    for profile in profiles.values():
        np.testing.assert_allclose(profile["color_matrix"].sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="camera profile 'nikon' is not one of .*identity"):
        camera_profile_matrix("nikon")


def test_bad_camera_profiles(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  warm:\n    color_matrix: [[1.2, 0, 0], [0, 1, 0], [0, 0, 1]]\n")
    with pytest.raises(ValueError, match="profile 'warm': color_matrix rows must sum to 1"):
        load_camera_profiles(path)
    path.write_text("profiles:\n  half:\n    color_matrix: [[1, 0], [0, 1]]\n")
    with pytest.raises(ValueError, match="profile 'half': color_matrix must be 3x3"):
        load_camera_profiles(path)
    path.write_text("- just a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_camera_profiles(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_camera_profiles(tmp_path / "missing.yaml")
    path.write_text("profiles:\n  cam:\n    xyz_to_camera: %s\n" % XYZ_TO_CAMERA[1].tolist())
    np.testing.assert_allclose(
        camera_profile_matrix("cam", path), np.linalg.inv(rgb_to_camera_matrix(XYZ_TO_CAMERA[1]))
    )


# --- against LibRaw -------------------------------------------------------------------------------

PATCH = 24
#: sRGB 8-bit colours of a ColorChecker-like chart (moderately saturated, with a grey ramp).
CHART = [
    [115, 82, 68], [194, 150, 130], [98, 122, 157], [87, 108, 67], [133, 128, 177], [103, 189, 170],
    [214, 126, 44], [80, 91, 166], [193, 90, 99], [94, 60, 108], [157, 188, 64], [224, 163, 46],
    [56, 61, 150], [70, 148, 73], [175, 54, 60], [231, 199, 31], [8, 133, 161], [243, 243, 242],
    [200, 200, 200], [160, 160, 160], [122, 122, 121], [85, 85, 85], [52, 52, 52], [20, 20, 20],
]  # fmt: skip


def chart_scene():
    """4x6 patches of PATCH px over a 32 px band of smooth colour gradients (uint8 sRGB)."""
    img = np.zeros((4 * PATCH + 32, 6 * PATCH, 3), np.uint8)
    for i, colour in enumerate(CHART):
        r, c = divmod(i, 6)
        img[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = colour
    ramp = np.linspace(30, 230, img.shape[1])
    img[4 * PATCH :, :, 0] = np.rint(ramp)
    img[4 * PATCH :, :, 1] = np.rint(ramp[::-1])
    img[4 * PATCH :, :, 2] = 128
    return img


def interior_mask(shape, margin=4):
    """Patch and gradient interiors: ``margin`` px away from every patch edge and the frame border.

    Near the hard patch edges the two demosaicers (OpenCV EA here, LibRaw's AHD there)
    legitimately differ; colour is judged away from them.
    """
    mask = np.zeros(shape[:2], bool)
    for i in range(len(CHART)):
        r, c = divmod(i, 6)
        mask[r * PATCH + margin : (r + 1) * PATCH - margin, c * PATCH + margin : (c + 1) * PATCH - margin] = True
    mask[4 * PATCH + margin : -margin, margin:-margin] = True
    return mask


def psnr(a, b):
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_matches_libraw_on_a_dng(tmp_path, cfa):
    """A DNG written by pidng (another library) from a known scene, rendered by us and by LibRaw.

    The scene's linear sRGB is taken to the camera with the DNG's ColorMatrix1 (XYZ -> camera,
    D65) and divided by the as-shot gains, mosaiced, and stored as 12-bit DN over per-position
    black levels. LibRaw renders it with the embedded matrix and as-shot gains and the sRGB curve
    (gamma=(2.4, 12.92)); ``adjust_maximum_thr=0`` stops LibRaw from replacing WhiteLevel with
    the brightest pixel of the frame (its default 0.75 brightened this chart by ~6.5 levels).

    Thresholds: on the interiors the two renderings agree to ~55 dB (mean |diff| ~0.1 level,
    measured; the whole frame only ~28 dB, from the demosaicers at the hard patch edges). A
    wrong matrix, gain, black/white level or transfer curve shifts colours by 5+ levels
    (< 35 dB), so >= 40 dB (RMS 2.5 levels) separates right from wrong with room for the
    demosaicers' differences. Every patch's mean colour must agree within 1.5 levels (measured
    <= 1.0) and be within 1 level of the scene itself.
    """
    rawpy = pytest.importorskip("rawpy")
    from test_dng import AS_SHOT_GAINS, TILE_BLACK, XYZ_TO_CAMERA, write_dng

    scene = chart_scene()
    h, w = scene.shape[:2]
    camera = apply_ccm(srgb_gamma_inverse(scene / 255.0), rgb_to_camera_matrix(XYZ_TO_CAMERA))
    raw = mosaic(camera / np.asarray(AS_SHOT_GAINS), cfa)
    black = np.tile(np.asarray(TILE_BLACK, float).reshape(2, 2), (h // 2, w // 2))
    dn = np.rint(black + raw * (4095 - black)).astype(np.uint16)
    path = write_dng(tmp_path / ("chart_%s.dng" % cfa), dn, cfa=cfa)

    frame = read_dng(path)
    ours = render(frame, tone_curve="none")
    with rawpy.imread(str(path)) as libraw:
        theirs = libraw.postprocess(
            use_camera_wb=True,
            no_auto_bright=True,
            gamma=(2.4, 12.92),
            output_color=rawpy.ColorSpace.sRGB,
            output_bps=8,
            user_flip=0,
            adjust_maximum_thr=0.0,
        )
    assert theirs.shape == ours.shape
    inner = interior_mask(ours.shape)
    diff = ours.astype(float) - theirs
    assert psnr(ours[inner], theirs[inner]) >= 40.0
    assert np.abs(diff[inner]).mean() < 0.5
    for i in range(len(CHART)):
        r, c = divmod(i, 6)
        box = (slice(r * PATCH + 4, (r + 1) * PATCH - 4), slice(c * PATCH + 4, (c + 1) * PATCH - 4))
        ours_mean = ours[box].reshape(-1, 3).mean(axis=0)
        assert np.abs(ours_mean - theirs[box].reshape(-1, 3).mean(axis=0)).max() <= 1.5, CHART[i]
        assert np.abs(ours_mean - scene[box].reshape(-1, 3).mean(axis=0)).max() <= 1.0, CHART[i]
