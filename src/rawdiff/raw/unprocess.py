"""Unprocess an sRGB image into a realistic RAW Bayer frame.

Brooks, Mildenhall, Xue, Chen, Sharlet, Barron: *Unprocessing Images for Learned Raw
Denoising*, CVPR 2019 (http://timothybrooks.com/tech/unprocessing). Each step inverts
one stage of the forward pipeline (their Sec. 3; here :mod:`rawdiff.raw.isp`), with the
camera parameters drawn at random as in their Sec. 4 and released ``unprocess.py``::

    sRGB x --inverse_smoothstep--> --srgb_gamma_inverse--> linear sRGB
          --rgb_to_camera (random CCM)--> camera RGB --safe_invert_gains (random WB, brightness)-->
          clip [0, 1] --mosaic (cfa)--> --add_noise (shot/read)--> quantise to DN (black..white)

Deviations from the paper, all so that ``render(unprocess(x))`` is a faithful round trip
through *this* project's ISP:

* gamma: the IEC 61966-2-1 sRGB curve (the ISP's) instead of the paper's ``x^2.2``;
* brightness: the paper's ``rgb_gain`` (a digital gain its ``process()`` never re-applies)
  is folded into the frame's ``wb_gains`` = ``rgb_gain * (red_gain, 1, blue_gain)``, so the
  green gain is ``rgb_gain`` rather than 1; the ISP applies gains as given;
* the draw ``1 / rgb_gain ~ N(0.8, 0.1)`` is truncated to [0.4, 1.2] (+-4 sigma) so a gain is
  never negative;
* the mosaic is quantised to integer DN between ``black_level`` and ``white_level``
  (12 bit, black 256 by default), with noise allowed below black down to 0 DN.
"""

from __future__ import annotations

import operator
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from rawdiff.raw.frame import RawFrame, check_cfa
from rawdiff.raw.isp import apply_ccm, inverse_smoothstep, rgb_to_camera_matrix, srgb_gamma_inverse

PAPER = "Brooks et al. 2019, Unprocessing Images for Learned Raw Denoising, CVPR"

#: XYZ -> camera matrices of the paper's four cameras (``random_ccm`` in its released code).
XYZ_TO_CAMERA = np.array(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
    ]
)
RED_GAIN_RANGE = (1.9, 2.4)
BLUE_GAIN_RANGE = (1.5, 1.9)
#: ``1 / rgb_gain ~ N(mean, std)``, truncated to ``RGB_GAIN_INVERSE_RANGE``.
RGB_GAIN_INVERSE_MEAN, RGB_GAIN_INVERSE_STD = 0.8, 0.1
RGB_GAIN_INVERSE_RANGE = (0.4, 1.2)
#: ``log(shot) ~ U(log 0.0001, log 0.012)``.
SHOT_NOISE_RANGE = (0.0001, 0.012)
#: ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26)``.
READ_NOISE_SLOPE, READ_NOISE_INTERCEPT, READ_NOISE_STD = 2.18, 1.20, 0.26
#: Gray level above which ``safe_invert_gains`` fades the inverse gains out.
HIGHLIGHT_INFLECTION = 0.9

DEFAULT_BLACK_LEVEL = 256
DEFAULT_WHITE_LEVEL = 4095


# --- random camera parameters (drawn in this order from one Generator) -------------------------


def random_ccm(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A random linear sRGB -> camera matrix (rows sum to 1), and the convex weights used.

    ``xyz_to_camera = sum_k w_k XYZ_TO_CAMERA[k] / sum_k w_k`` with ``w_k ~ U(1e-8, 1e8)``
    (as the released code), then :func:`rawdiff.raw.isp.rgb_to_camera_matrix`: ``xyz_to_camera @ SRGB_TO_XYZ`` with
    each row divided by its sum, so white stays white. ``cam2rgb`` is its inverse.
    """
    weights = rng.uniform(1e-8, 1e8, size=len(XYZ_TO_CAMERA))
    weights = weights / weights.sum()
    return rgb_to_camera_matrix(np.tensordot(weights, XYZ_TO_CAMERA, axes=1)), weights


def random_gains(rng: np.random.Generator) -> Tuple[float, float, float]:
    """``(rgb_gain, red_gain, blue_gain)``: ``1/rgb_gain ~ N(0.8, 0.1)`` (truncated to [0.4, 1.2]),
    ``red_gain ~ U(1.9, 2.4)``, ``blue_gain ~ U(1.5, 1.9)`` (Brooks et al., ``random_gains``)."""
    inverse = rng.normal(RGB_GAIN_INVERSE_MEAN, RGB_GAIN_INVERSE_STD)
    inverse = min(max(float(inverse), RGB_GAIN_INVERSE_RANGE[0]), RGB_GAIN_INVERSE_RANGE[1])
    red = float(rng.uniform(*RED_GAIN_RANGE))
    blue = float(rng.uniform(*BLUE_GAIN_RANGE))
    return 1.0 / inverse, red, blue


def random_noise_levels(rng: np.random.Generator) -> Tuple[float, float]:
    """``(shot, read)`` noise levels from the paper's log-linear relation (Sec. 4):

    ``log(shot) ~ U(log 0.0001, log 0.012)`` and
    ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26^2)``.
    Both are variances per unit signal in [0, 1] units (see :func:`add_noise`).
    """
    log_shot = rng.uniform(np.log(SHOT_NOISE_RANGE[0]), np.log(SHOT_NOISE_RANGE[1]))
    log_read = READ_NOISE_SLOPE * log_shot + READ_NOISE_INTERCEPT + rng.normal(0.0, READ_NOISE_STD)
    return float(np.exp(log_shot)), float(np.exp(log_read))


# --- the inverse stages --------------------------------------------------------------------------


def safe_invert_gains(image: np.ndarray, rgb_gain: float, red_gain: float, blue_gain: float) -> np.ndarray:
    """Invert white balance and brightness while keeping highlights (Brooks' ``safe_invert_gains``).

    ``g = (1/red_gain, 1, 1/blue_gain) / rgb_gain``; with ``gray`` the channel mean and
    ``t = 0.9``, ``mask = (max(gray - t, 0) / (1 - t))^2`` and the applied gain is
    ``max(mask + (1 - mask) g, g)``: near white the gains fade to 1, so saturated pixels stay
    saturated instead of turning into dimmed, coloured raw values.
    """
    image = np.asarray(image, dtype=np.float32)
    gains = np.array([1.0 / red_gain, 1.0, 1.0 / blue_gain], dtype=np.float32) / np.float32(rgb_gain)
    gray = image.mean(axis=-1, keepdims=True)
    mask = (np.maximum(gray - HIGHLIGHT_INFLECTION, 0.0) / (1.0 - HIGHLIGHT_INFLECTION)) ** 2
    safe_gains = np.maximum(mask + (1.0 - mask) * gains, gains)
    return (image * safe_gains).astype(np.float32)


def mosaic(rgb: np.ndarray, cfa: str = "RGGB") -> np.ndarray:
    """Sample an HxWx3 image through the ``cfa`` filter: HxW, each pixel its filter's channel."""
    cfa = check_cfa(cfa)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError("rgb must be HxWx3, got shape %s" % (rgb.shape,))
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for k, colour in enumerate(cfa):
        r, c = divmod(k, 2)
        out[r::2, c::2] = rgb[r::2, c::2, "RGB".index(colour)]
    return out


def add_noise(clean: np.ndarray, shot_noise: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Heteroscedastic Gaussian noise (Sec. 3 "Shot and Read Noise"): ``y ~ N(x, shot x + read)``.

    ``clean`` is the linear mosaic in [0, 1]; ``shot`` and ``read`` are the paper's
    ``lambda_shot`` and ``lambda_read`` (variances). Not clipped.
    """
    clean = np.asarray(clean, dtype=np.float32)
    variance = np.maximum(clean * np.float32(shot_noise) + np.float32(read_noise), 0.0)
    return clean + np.sqrt(variance) * rng.standard_normal(clean.shape, dtype=np.float32)


# --- input and levels ----------------------------------------------------------------------------


def _to_linear(rgb) -> np.ndarray:
    """Validate ``rgb``, crop it to even size, and undo the tone curve and gamma (float32 linear sRGB)."""
    image = np.asarray(rgb)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError("rgb must be an HxWx3 image, got shape %s" % (image.shape,))
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if h == 0 or w == 0:
        raise ValueError("rgb must be at least 2x2, got shape %s" % (image.shape[:2],))
    image = image[:h, :w]
    if image.dtype in (np.uint8, np.uint16):
        # Integer input: the same float32 arithmetic, once per code value (a lookup table).
        top = np.iinfo(image.dtype).max
        codes = np.arange(top + 1, dtype=np.float32) / np.float32(top)
        return srgb_gamma_inverse(inverse_smoothstep(codes))[image]
    if image.dtype.kind != "f":
        raise ValueError("rgb must be uint8, uint16 or float in [0, 1], got dtype %s" % image.dtype)
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise ValueError("rgb has non-finite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise ValueError("float rgb must lie in [0, 1], got values in [%g, %g]" % (lo, hi))
    return srgb_gamma_inverse(inverse_smoothstep(image))  # tone curve, then gamma (Sec. 3)


def _levels(black_level, white_level) -> Tuple[Union[float, Tuple[float, ...]], float]:
    black = np.asarray(black_level, dtype=np.float64).reshape(-1)
    if black.size not in (1, 4) or not np.all(np.isfinite(black)) or np.any(black < 0):
        raise ValueError("black_level must be a value >= 0 or 4 of them, got %r" % (black_level,))
    white = float(white_level)
    if not (0 < white <= 65535) or white != int(white):
        raise ValueError("white_level must be an integer in 1..65535, got %r" % (white_level,))
    if white <= black.max():
        raise ValueError("white_level %g <= black_level %g" % (white, black.max()))
    if black.size == 1:
        return float(black[0]), white
    return tuple(float(b) for b in black), white


def _positive(name: str, value) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError("%s must be > 0, got %r" % (name, value))
    return value


# --- the whole inverse pipeline ------------------------------------------------------------------


def unprocess(
    rgb: np.ndarray,
    seed: Optional[int] = None,
    rng: Optional[np.random.Generator] = None,
    noise: bool = True,
    cfa: str = "RGGB",
    black_level: Union[float, Sequence[float]] = DEFAULT_BLACK_LEVEL,
    white_level: int = DEFAULT_WHITE_LEVEL,
    *,
    xyz_to_camera: Optional[np.ndarray] = None,
    rgb_gain: Optional[float] = None,
    red_gain: Optional[float] = None,
    blue_gain: Optional[float] = None,
    shot_noise: Optional[float] = None,
    read_noise: Optional[float] = None,
) -> Tuple[RawFrame, Dict[str, Any]]:
    """Turn an sRGB image into a RAW frame that :func:`rawdiff.raw.isp.render` re-processes.

    Args:
        rgb: HxWx3 uint8 (or uint16), or float in [0, 1]. An odd height or width is cropped
            by its last row/column so the 2x2 CFA tiles the frame (``meta["crop"]``).
        seed, rng: the only sources of randomness; give at most one. With neither, a fresh
            seed is drawn from the OS and recorded in ``meta["seed"]``.
        noise: add shot and read noise (the noise levels are drawn either way).
        cfa: the Bayer phase of the output mosaic.
        black_level, white_level: the DN range of the output (default 12 bit, black 256);
            ``black_level`` may be 4 values for the 2x2 tile positions.
        xyz_to_camera, rgb_gain, red_gain, blue_gain, shot_noise, read_noise: fix a
            parameter instead of drawing it (the draw still happens, so the other parameters
            of a seed do not change).

    Returns:
        ``(frame, meta)``. ``frame.wb_gains = rgb_gain * (red_gain, 1, blue_gain)`` (the gains the
        ISP must apply, brightness folded in) and ``frame.color_matrix`` = Brooks' ``cam2rgb``.
        ``meta`` is a JSON-serialisable dict of every parameter used.

    Random draws, in order: CCM weights, gains, noise levels, then the noise field.
    """
    if seed is not None and rng is not None:
        raise ValueError("give seed or rng, not both (seed=%r)" % (seed,))
    if rng is None:
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        try:
            seed = operator.index(seed)
        except TypeError:
            raise ValueError("seed must be an integer, got %r" % (seed,)) from None
        if seed < 0:
            raise ValueError("seed must be >= 0, got %d" % seed)
        rng = np.random.default_rng(seed)
    elif not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator, got %s" % type(rng).__name__)
    cfa = check_cfa(cfa)
    black, white = _levels(black_level, white_level)
    input_shape = list(np.shape(rgb)[:2])
    linear = _to_linear(rgb)
    h, w = linear.shape[:2]

    rgb_to_cam, weights = random_ccm(rng)
    drawn_gains = random_gains(rng)
    drawn_noise = random_noise_levels(rng)
    if xyz_to_camera is not None:
        rgb_to_cam, weights = rgb_to_camera_matrix(xyz_to_camera), None
    rgb_gain = drawn_gains[0] if rgb_gain is None else _positive("rgb_gain", rgb_gain)
    red_gain = drawn_gains[1] if red_gain is None else _positive("red_gain", red_gain)
    blue_gain = drawn_gains[2] if blue_gain is None else _positive("blue_gain", blue_gain)
    shot = drawn_noise[0] if shot_noise is None else _positive("shot_noise", shot_noise)
    read = drawn_noise[1] if read_noise is None else _positive("read_noise", read_noise)
    cam_to_rgb = np.linalg.inv(rgb_to_cam)

    camera = apply_ccm(linear, rgb_to_cam)  # inverse colour correction
    camera = safe_invert_gains(camera, rgb_gain, red_gain, blue_gain)  # inverse WB and brightness
    clean = mosaic(np.clip(camera, 0.0, 1.0), cfa)
    values = add_noise(clean, shot, read, rng) if noise else clean

    black_tile = np.broadcast_to(np.asarray(black, dtype=np.float32).reshape(-1), (4,)).reshape(2, 2)
    black_map = np.tile(black_tile, (h // 2, w // 2))
    dn = np.rint(black_map + values * (np.float32(white) - black_map))
    mosaic_dn = np.clip(dn, 0, white).astype(np.uint16)

    wb_gains = rgb_gain * np.array([red_gain, 1.0, blue_gain])
    frame = RawFrame(
        mosaic=mosaic_dn,
        cfa=cfa,
        black_level=black,
        white_level=white,
        wb_gains=wb_gains,
        color_matrix=cam_to_rgb,
    )
    meta = {
        "method": "unprocess",
        "paper": PAPER,
        "seed": seed,
        "input_shape": input_shape,
        "crop": [h, w],
        "cfa": cfa,
        "black_level": list(black) if isinstance(black, tuple) else black,
        "white_level": white,
        "gamma": "srgb",
        "tone_curve": "smoothstep",
        "xyz_to_camera_weights": None if weights is None else [float(v) for v in weights],
        "rgb_to_camera": rgb_to_cam.tolist(),
        "cam_to_rgb": cam_to_rgb.tolist(),
        "rgb_gain": float(rgb_gain),
        "red_gain": float(red_gain),
        "blue_gain": float(blue_gain),
        "wb_gains": [float(v) for v in wb_gains],
        "highlight_inflection": HIGHLIGHT_INFLECTION,
        "noise": bool(noise),
        "shot_noise": float(shot),
        "read_noise": float(read),
    }
    return frame, meta
