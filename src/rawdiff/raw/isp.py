"""The reference ISP: a :class:`~rawdiff.raw.frame.RawFrame` to an 8-bit sRGB image.

Deterministic, and the exact forward model that :mod:`rawdiff.raw.unprocess` inverts
(Brooks et al. 2019, *Unprocessing Images for Learned Raw Denoising*, CVPR, Sec. 3
"Raw Image Pipeline")::

    mosaic --normalize()--> [0, 1] --white_balance--> clip [0, 1] --demosaic (OpenCV EA, 16 bit)-->
    camera RGB --apply_ccm (camera -> linear sRGB)--> clip [0, 1] --srgb_gamma--> [smoothstep] --> uint8

Each stage is a small public function, reused by the unprocessor and the tests.

Colour matrices follow the RawFrame convention: 3x3, white-balanced camera RGB to linear
sRGB, rows summing to 1 (Brooks' ``cam2rgb``, dcraw/LibRaw's ``rgb_cam``), so a
white-balanced grey stays grey.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from rawdiff.raw.frame import RawFrame, check_cfa, mosaic_to_planes

#: Linear sRGB (D65) -> CIE XYZ, IEC 61966-2-1 (dcraw's ``xyz_rgb``, Brooks' ``rgb2xyz``).
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)

TONE_CURVES = ("smoothstep", "none")
DEMOSAIC_METHODS = ("ea", "bilinear")
WB_MODES = ("as_shot", "auto", "none")
DEFAULT_PROFILE = "identity"
#: The camera profiles shipped with the repository (``config/camera_profiles.yaml``).
DEFAULT_PROFILES_PATH = Path(__file__).resolve().parents[3] / "config" / "camera_profiles.yaml"

# OpenCV names a Bayer pattern by the 2nd and 3rd pixels of its 2nd row, i.e. by the 2x2
# tile that starts at (1, 1): an RGGB sensor is "BayerBG". The two-letter names exist in
# every OpenCV 4 (the RGGB-style aliases only from 4.5).
_OPENCV_BAYER = {"RGGB": "BG", "BGGR": "RG", "GRBG": "GB", "GBRG": "GR"}
_OPENCV_SUFFIX = {"ea": "_EA", "bilinear": ""}
_U16 = 65535.0

# Gray-world white balance (auto_white_balance): a 2x2 tile with any sample at or above this
# normalised value is treated as clipped, and gains are kept in this range.
AWB_CLIP = 0.98
AWB_GAIN_RANGE = (1.0 / 16.0, 16.0)


# --- colour matrices -----------------------------------------------------------------------------


def rgb_to_camera_matrix(xyz_to_camera: np.ndarray) -> np.ndarray:
    """The linear sRGB -> camera matrix, rows normalised to sum 1 (Brooks' ``random_ccm``).

    ``xyz_to_camera`` is a DNG ``ColorMatrix`` (dcraw/LibRaw's ``cam_xyz``, Brooks'
    ``xyz2cam``) for a D65 scene. As dcraw's ``cam_xyz_coeff`` and Brooks' ``random_ccm``::

        rgb_to_cam = xyz_to_camera @ SRGB_TO_XYZ
        rgb_to_cam /= rgb_to_cam.sum(axis=1)          # white (1,1,1) -> camera (1,1,1)

    The row sums divided out are the inverse of the camera's D65 white-balance gains
    (dcraw's ``pre_mul``), so the result maps to *white-balanced* camera RGB.
    """
    xyz_to_camera = np.asarray(xyz_to_camera, dtype=np.float64)
    if xyz_to_camera.shape != (3, 3) or not np.all(np.isfinite(xyz_to_camera)):
        raise ValueError("xyz_to_camera must be a finite 3x3 matrix, got %r" % (xyz_to_camera.tolist(),))
    rgb_to_cam = xyz_to_camera @ SRGB_TO_XYZ
    sums = rgb_to_cam.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums) < 1e-9) or abs(np.linalg.det(rgb_to_cam)) < 1e-12:
        raise ValueError("xyz_to_camera %r is degenerate (a zero row sum or singular)" % (xyz_to_camera.tolist(),))
    return rgb_to_cam / sums


def camera_to_srgb_matrix(xyz_to_camera: np.ndarray) -> np.ndarray:
    """The camera -> linear sRGB matrix (rows sum to 1) from an XYZ -> camera matrix.

    The inverse of :func:`rgb_to_camera_matrix` (dcraw's ``rgb_cam``, Brooks' ``cam2rgb``);
    its rows sum to 1 as well, since ``rgb_to_cam @ 1 = 1``.
    """
    return np.linalg.inv(rgb_to_camera_matrix(xyz_to_camera))


def apply_ccm(rgb: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    """``out[..., i] = sum_j ccm[i, j] * rgb[..., j]`` (Brooks' ``apply_ccm``), float32."""
    ccm = np.asarray(ccm, dtype=np.float32)
    if ccm.shape != (3, 3):
        raise ValueError("ccm must be 3x3, got shape %s" % (ccm.shape,))
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1] != 3:
        raise ValueError("rgb must have 3 channels in its last axis, got shape %s" % (rgb.shape,))
    return rgb @ ccm.T


# --- transfer curves -----------------------------------------------------------------------------


def srgb_gamma(linear: np.ndarray) -> np.ndarray:
    """Linear -> sRGB-encoded, the IEC 61966-2-1 piecewise curve; input clipped to [0, 1].

    ``12.92 x`` for ``x <= 0.0031308``, else ``1.055 x^(1/2.4) - 0.055``. (Brooks et al. use
    a pure 2.2 power; the standard curve is used here so renders match LibRaw and displays.)
    """
    x = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1.0 / 2.4) - 0.055).astype(
        np.float32
    )


def srgb_gamma_inverse(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded -> linear, the exact inverse of :func:`srgb_gamma` (IEC 61966-2-1)."""
    y = np.clip(np.asarray(encoded, dtype=np.float32), 0.0, 1.0)
    return np.where(y <= 0.04045, y / 12.92, np.power((np.maximum(y, 0.04045) + 0.055) / 1.055, 2.4)).astype(np.float32)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Brooks et al.'s global tone curve (Sec. 3 "Tone Mapping"): ``3x^2 - 2x^3`` on [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def inverse_smoothstep(y: np.ndarray) -> np.ndarray:
    """The inverse of :func:`smoothstep` on [0, 1]: ``1/2 - sin(asin(1 - 2y) / 3)`` (Brooks et al.)."""
    y = np.clip(np.asarray(y, dtype=np.float32), 0.0, 1.0)
    return (0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)).astype(np.float32)


# --- white balance -------------------------------------------------------------------------------


def _gain_map(shape, cfa: str, gains: np.ndarray) -> np.ndarray:
    cfa = check_cfa(cfa)
    per_colour = {"R": gains[0], "G": gains[1], "B": gains[2]}
    tile = np.array([[per_colour[cfa[0]], per_colour[cfa[1]]], [per_colour[cfa[2]], per_colour[cfa[3]]]])
    reps = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    return np.tile(tile.astype(np.float32), reps)[: shape[0], : shape[1]]


def _check_gains(gains) -> np.ndarray:
    g = np.asarray(gains, dtype=np.float64).reshape(-1)
    if g.size != 3 or not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise ValueError("wb gains must be 3 positive values (R, G, B), got %r" % (gains,))
    return g


def white_balance(mosaic: np.ndarray, cfa: str, gains) -> np.ndarray:
    """Multiply each CFA sample by the gain of its colour; gains are (R, G, B).

    The gains are applied as given, not renormalised: a green gain other than 1 is a
    digital exposure gain (Brooks et al.'s ``rgb_gain``, see :mod:`rawdiff.raw.unprocess`).
    The result is not clipped (:func:`render_float` clips after this stage).
    """
    mosaic = np.asarray(mosaic, dtype=np.float32)
    if mosaic.ndim != 2:
        raise ValueError("mosaic must be 2-D, got shape %s" % (mosaic.shape,))
    return mosaic * _gain_map(mosaic.shape, cfa, _check_gains(gains))


def auto_white_balance(mosaic: np.ndarray, cfa: str, clip: float = AWB_CLIP) -> np.ndarray:
    """Gray-world white-balance gains (R, 1, B) estimated over the whole frame.

    ``mosaic`` is normalised to [0, 1] (black level removed). The frame is cut into its
    2x2 CFA tiles (the last row/column of an odd-sized mosaic is ignored); tiles with any
    sample ``>= clip`` are dropped, since a clipped channel no longer carries the scene's
    colour ratio (if fewer than 1% of the tiles remain, all tiles are used). With the means
    ``mean_R``, ``mean_G = (mean_G1 + mean_G2) / 2`` and ``mean_B`` of the remaining tiles,
    the gains are ``(mean_G / mean_R, 1, mean_G / mean_B)``: the average colour becomes
    grey. A channel whose mean is ~0 gets gain 1, and gains are kept within
    ``AWB_GAIN_RANGE`` (1/16 to 16).
    """
    m = np.asarray(mosaic, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError("mosaic must be 2-D, got shape %s" % (m.shape,))
    h, w = m.shape[0] // 2 * 2, m.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return np.ones(3)
    return gray_world_gains(mosaic_to_planes(m[:h, :w], cfa), clip)


def gray_world_gains(planes: np.ndarray, clip: float = AWB_CLIP) -> np.ndarray:
    """:func:`auto_white_balance` of a frame's normalised planes R, G1, G2, B (4 x h x w)."""
    flat = np.asarray(planes, dtype=np.float32).reshape(4, -1)
    keep = flat.max(axis=0) < clip
    count = int(np.count_nonzero(keep))
    if count < max(1, 0.01 * keep.size):
        keep, count = np.ones_like(keep), keep.size
    r, g1, g2, b = (flat @ keep.astype(np.float32)).astype(np.float64) / count
    g = 0.5 * (g1 + g2)
    lo, hi = AWB_GAIN_RANGE
    eps = 1e-6
    gr = float(np.clip(g / r, lo, hi)) if r > eps and g > eps else 1.0
    gb = float(np.clip(g / b, lo, hi)) if b > eps and g > eps else 1.0
    return np.array([gr, 1.0, gb])


# --- demosaicing ---------------------------------------------------------------------------------


def opencv_bayer_code(cfa: str, method: str = "ea") -> int:
    """The ``cv2.cvtColor`` code that demosaics a ``cfa`` mosaic to RGB with ``method``."""
    import cv2

    cfa = check_cfa(cfa)
    if method not in DEMOSAIC_METHODS:
        raise ValueError("demosaic method %r is not one of %s" % (method, ", ".join(DEMOSAIC_METHODS)))
    return getattr(cv2, "COLOR_Bayer%s2RGB%s" % (_OPENCV_BAYER[cfa], _OPENCV_SUFFIX[method]))


def demosaic(mosaic: np.ndarray, cfa: str, method: str = "ea") -> np.ndarray:
    """Demosaic a [0, 1] mosaic to float32 HxWx3 RGB with OpenCV at 16 bits.

    ``method``: ``"ea"`` (default) OpenCV's edge-aware demosaicing, which interpolates
    green along the direction of the smaller gradient and colour differences after it;
    ``"bilinear"`` OpenCV's bilinear interpolation. (OpenCV's VNG works on 8-bit input
    only, which would throw away the sensor's precision, so it is not offered.)
    The mosaic is clipped to [0, 1] and quantised to 16 bits (step 1.5e-5).
    """
    import cv2

    m = np.asarray(mosaic, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError("mosaic must be 2-D, got shape %s" % (m.shape,))
    if m.shape[0] < 4 or m.shape[1] < 4:
        raise ValueError("mosaic must be at least 4x4 to demosaic, got shape %s" % (m.shape,))
    code = opencv_bayer_code(cfa, method)
    u16 = np.rint(np.clip(m, 0.0, 1.0) * _U16).astype(np.uint16)
    rgb = cv2.cvtColor(u16, code)
    return rgb.astype(np.float32) * np.float32(1.0 / _U16)


# --- camera profiles -----------------------------------------------------------------------------


def _builtin_profiles() -> Dict[str, dict]:
    return {
        DEFAULT_PROFILE: {
            "description": "camera RGB taken as linear sRGB (no colour correction)",
            "color_matrix": np.eye(3),
        }
    }


def _profile_matrix(name: str, spec, path) -> np.ndarray:
    if not isinstance(spec, dict):
        raise ValueError("%s: profile %r must be a mapping, got %r" % (path, name, spec))
    keys = [k for k in ("color_matrix", "xyz_to_camera") if k in spec]
    if len(keys) != 1:
        raise ValueError(
            "%s: profile %r needs exactly one of color_matrix, xyz_to_camera; got %s" % (path, name, sorted(spec))
        )
    try:
        matrix = np.asarray(spec[keys[0]], dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise ValueError("%s: profile %r: %s must be 3x3 numbers, got %r" % (path, name, keys[0], spec[keys[0]]))
    if keys[0] == "xyz_to_camera":
        return camera_to_srgb_matrix(matrix)
    sums = matrix.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            "%s: profile %r: color_matrix rows must sum to 1 (white stays white), got row sums %s"
            % (path, name, np.round(sums, 4).tolist())
        )
    return matrix


def load_camera_profiles(path: Optional[Union[str, Path]] = None) -> Dict[str, dict]:
    """Camera profiles by name: ``{"description": str, "color_matrix": 3x3 camera -> sRGB}``.

    The built-in ``identity`` profile is always present. ``path`` (default
    ``config/camera_profiles.yaml`` of the repository, skipped when absent) is a YAML file
    ``profiles: {name: {description, color_matrix | xyz_to_camera}}``; ``xyz_to_camera`` is a
    D65 ``ColorMatrix`` as in a DNG, converted with :func:`camera_to_srgb_matrix`.
    """
    explicit = path is not None
    path = Path(path) if explicit else DEFAULT_PROFILES_PATH
    if not path.is_file():
        if explicit:
            raise ValueError("camera profiles file %s does not exist" % path)
        return _builtin_profiles()
    # read once per version of the file (a frame rendered with the default profile asks for it)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PROFILE_CACHE:
        _PROFILE_CACHE.clear()
        _PROFILE_CACHE[key] = _read_profiles(path)
    return {name: {"description": p["description"], "color_matrix": np.array(p["color_matrix"])}
            for name, p in _PROFILE_CACHE[key].items()}


_PROFILE_CACHE: Dict[tuple, Dict[str, dict]] = {}


def _read_profiles(path: Path) -> Dict[str, dict]:
    profiles = _builtin_profiles()
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError("%s: cannot read camera profiles: %s" % (path, exc)) from None
    entries = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise ValueError("%s: expected a mapping 'profiles: {name: {...}}'" % path)
    for name, spec in entries.items():
        profiles[str(name)] = {
            "description": str(spec.get("description", "")) if isinstance(spec, dict) else "",
            "color_matrix": _profile_matrix(str(name), spec, path),
        }
    return profiles


def camera_profile_matrix(name: str, path: Optional[Union[str, Path]] = None) -> np.ndarray:
    """The camera -> linear sRGB matrix of profile ``name`` (see :func:`load_camera_profiles`)."""
    profiles = load_camera_profiles(path)
    if name not in profiles:
        raise ValueError("camera profile %r is not one of %s" % (name, ", ".join(sorted(profiles))))
    return np.array(profiles[name]["color_matrix"], dtype=np.float64)


# --- the pipeline --------------------------------------------------------------------------------


def _resolve_gains(frame: RawFrame, normalized: Optional[np.ndarray], wb) -> np.ndarray:
    if isinstance(wb, str):
        if wb not in WB_MODES:
            raise ValueError("wb %r is not one of %s or 3 gains" % (wb, ", ".join(WB_MODES)))
        if wb == "none":
            return np.ones(3)
        if wb == "as_shot" and frame.wb_gains is not None:
            return _check_gains(frame.wb_gains)
        return auto_white_balance(frame.normalize() if normalized is None else normalized, frame.cfa)
    return _check_gains(wb)


def _resolve_ccm(frame: RawFrame, color_matrix, profile, profiles_path) -> np.ndarray:
    if color_matrix is not None:
        ccm = np.asarray(color_matrix, dtype=np.float64)
        if ccm.shape != (3, 3) or not np.all(np.isfinite(ccm)):
            raise ValueError("color_matrix must be a finite 3x3 matrix, got shape %s" % (ccm.shape,))
        return ccm
    if profile is not None:
        return camera_profile_matrix(profile, profiles_path)
    if frame.color_matrix is not None:
        return np.asarray(frame.color_matrix, dtype=np.float64)
    return camera_profile_matrix(DEFAULT_PROFILE, profiles_path)


def render_params(
    frame: RawFrame,
    *,
    wb: Union[str, Sequence[float]] = "as_shot",
    color_matrix: Optional[np.ndarray] = None,
    profile: Optional[str] = None,
    profiles_path: Optional[Union[str, Path]] = None,
):
    """The white-balance gains (R, G, B) and colour matrix :func:`render` uses for ``frame``.

    The options are :func:`render`'s; the gray-world estimate is taken over the whole frame.
    The codec sends these two in the bitstream, so its decoder renders as this ISP does.
    """
    if not isinstance(frame, RawFrame):
        raise ValueError("frame must be a RawFrame, got %s" % type(frame).__name__)
    ccm = _resolve_ccm(frame, color_matrix, profile, profiles_path)
    gains = _resolve_gains(frame, None, wb)
    return np.asarray(gains, dtype=np.float64), np.asarray(ccm, dtype=np.float64)


def render_parameters(frame: RawFrame, planes: Optional[np.ndarray] = None) -> Dict[str, object]:
    """The render parameters a bitstream carries for ``frame``, as :func:`render` uses them:
    the as-shot white-balance gains, else the gray-world estimate over the whole frame; the
    frame's colour matrix, else the default profile's (identity); the smoothstep tone curve.
    Gains and matrix are rounded to float32, as the bitstream stores them, so the encoder
    codes with exactly the values the decoder renders with. ``planes``: the frame's
    normalised planes (:meth:`RawFrame.to_planes`) when the caller has them (for the
    gray-world estimate)."""
    ccm = _resolve_ccm(frame, None, None, None)
    if frame.wb_gains is not None:
        gains = _check_gains(frame.wb_gains)
    elif planes is not None:
        gains = gray_world_gains(planes)
    else:
        gains = auto_white_balance(frame.normalize(), frame.cfa)
    return {
        "wb_gains": tuple(float(g) for g in np.asarray(gains, dtype=np.float32)),
        "color_matrix": tuple(float(v) for v in np.asarray(ccm, dtype=np.float32).ravel()),
        "wb_source": "as_shot" if frame.wb_gains is not None else "gray_world",
        "matrix_source": "frame" if frame.color_matrix is not None else "default",
        "tone_curve": "smoothstep",
    }


def white_balanced(mosaic: np.ndarray, cfa: str, gains) -> np.ndarray:
    """Stage 2 of :func:`render`: a [0, 1] mosaic times its gains, clipped to [0, min(1, min gain)].

    This is the signal the codec's network codes (the model domain): black level removed,
    white balance applied, so the network never has to guess the frame's illuminant."""
    gains = _check_gains(gains)
    limit = min(1.0, float(np.min(gains)))
    return np.clip(white_balance(mosaic, cfa, gains), 0.0, limit)


def model_planes(frame: RawFrame, gains=None, planes: Optional[np.ndarray] = None) -> np.ndarray:
    """The 4 x H/2 x W/2 float32 planes (R, G1, G2, B) a codec's network codes: normalised
    (:meth:`RawFrame.to_planes`) when ``gains`` is None, else white-balanced with ``gains``
    and clipped as :func:`white_balanced` does (the colour-exact domain). ``planes``: the
    frame's normalised planes when the caller has them; they are white-balanced in place.
    Raises ValueError for odd sizes."""
    if planes is None:
        planes = np.ascontiguousarray(frame.to_planes(), dtype=np.float32)
    if gains is None:
        return planes
    g = _check_gains(gains)
    limit = np.float32(min(1.0, float(np.min(g))))
    for plane, gain in zip(planes, (g[0], g[1], g[1], g[2])):
        np.multiply(plane, np.float32(gain), out=plane)
        np.clip(plane, 0.0, limit, out=plane)
    return planes


def colour_stage(camera_rgb: np.ndarray, ccm: np.ndarray, tone_curve: str = "smoothstep") -> np.ndarray:
    """Stages 4 to 6 of :func:`render`: white-balanced camera RGB (H x W x 3, [0, 1]) to
    float32 sRGB in [0, 1] (colour matrix, clip, sRGB transfer curve, tone curve).

    The codec's decoder applies exactly this to what its network decodes."""
    if tone_curve not in TONE_CURVES:
        raise ValueError("tone_curve %r is not one of %s" % (tone_curve, ", ".join(TONE_CURVES)))
    rgb = np.clip(apply_ccm(camera_rgb, ccm), 0.0, 1.0)
    out = srgb_gamma(rgb)
    if tone_curve == "smoothstep":
        out = smoothstep(out)
    return out


def render_float(
    frame: RawFrame,
    *,
    wb: Union[str, Sequence[float]] = "as_shot",
    color_matrix: Optional[np.ndarray] = None,
    profile: Optional[str] = None,
    profiles_path: Optional[Union[str, Path]] = None,
    demosaic_method: str = "ea",
    tone_curve: str = "smoothstep",
) -> np.ndarray:
    """Render ``frame`` to float32 HxWx3 sRGB in [0, 1]; see :func:`render` for the options."""
    if not isinstance(frame, RawFrame):
        raise ValueError("frame must be a RawFrame, got %s" % type(frame).__name__)
    if tone_curve not in TONE_CURVES:
        raise ValueError("tone_curve %r is not one of %s" % (tone_curve, ", ".join(TONE_CURVES)))
    ccm = _resolve_ccm(frame, color_matrix, profile, profiles_path)
    mosaic = frame.normalize()
    gains = _resolve_gains(frame, mosaic, wb)
    # Clip as Brooks' process(), at the smallest gain when that is below 1 (see render()).
    rgb = demosaic(white_balanced(mosaic, frame.cfa, gains), frame.cfa, demosaic_method)
    return colour_stage(rgb, ccm, tone_curve)


def render(frame: RawFrame, **options) -> np.ndarray:
    """Render ``frame`` to a uint8 HxWx3 sRGB image (deterministic).

    Stages (Brooks et al. 2019, Sec. 3, in processing order):

    1. ``frame.normalize()``: black level removed, scaled by ``white_level - black`` to [0, 1].
    2. White balance, ``wb=``: ``"as_shot"`` (default) the frame's ``wb_gains`` when it has
       them, else :func:`auto_white_balance` (gray-world over the whole frame, clipped tiles
       excluded); ``"auto"`` always gray-world; ``"none"``; or explicit (R, G, B) gains.
       Gains are applied as given (a green gain != 1 acts as a digital exposure gain).
       Then clip to [0, min(1, smallest gain)]: a sample saturated in the RAW ends at or above
       the smallest gain in every channel, so clipping there renders saturated areas neutral
       instead of tinted (what dcraw/LibRaw's default highlight clipping does after scaling
       the gains to a minimum of 1; Brooks' process() clips at 1, its gains are >= 1).
    3. Demosaic, ``demosaic_method=``: ``"ea"`` (OpenCV edge-aware, default) or ``"bilinear"``.
    4. Colour correction to linear sRGB with the first of: ``color_matrix=`` (3x3),
       the named ``profile=`` from ``config/camera_profiles.yaml`` (``profiles_path=`` for
       another file), ``frame.color_matrix``, the ``identity`` profile. Clip to [0, 1].
    5. sRGB transfer curve (IEC 61966-2-1 piecewise).
    6. Tone curve, ``tone_curve=``: ``"smoothstep"`` (default) Brooks' ``3x^2 - 2x^3``, the curve
       :func:`rawdiff.raw.unprocess.unprocess` inverts, so ``render(unprocess(x))`` ~ ``x``;
       ``"none"`` for a plain sRGB rendering like LibRaw/dcraw (use it to compare with them).
       (Brooks' released ``process.py`` omits this step although ``unprocess.py`` inverts it.)
    7. Round to 8 bits.
    """
    out = render_float(frame, **options)
    return np.rint(out * 255.0).astype(np.uint8)
