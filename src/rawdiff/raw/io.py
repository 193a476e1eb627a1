"""Reading and writing RAW frames from files.

:func:`read_raw` dispatches on the file suffix:

* ``.dng`` and the other camera RAW formats rawpy reads: :func:`rawdiff.raw.dng.read_dng`.
* ``.npy`` / 16-bit ``.png`` / ``.tif`` ``.tiff``: a single-channel mosaic; the metadata
  comes from a JSON sidecar ``<stem>.json`` next to the file and from keyword overrides.
* packed MIPI CSI-2 data (V4L2 ``pixfmt-srggb10p`` / ``pixfmt-srggb12p``, see
  :mod:`rawdiff.raw.csi2`): ``.raw10`` / ``.raw12``, or any file with ``format="raw10p"`` /
  ``"raw12p"`` (from the keyword or the sidecar) plus ``width`` and ``height``.

The sidecar holds the :class:`RawFrame` fields by name::

    {"cfa": "RGGB", "black_level": [64, 64, 64, 64], "white_level": 1023,
     "wb_gains": [2.0, 1.0, 1.5], "color_matrix": [[...], [...], [...]],
     "timestamp": 12.5, "frame_id": "camera", "extra": {}}

plus, for packed files, ``format``, ``width``, ``height`` and ``stride``. Keyword
overrides win over the sidecar; an override of ``None`` counts as not given, so a
command line can pass its optional arguments straight through. :func:`frame_metadata`
and :func:`frame_from_metadata` are the one place where this dictionary is made and read.

What is checked on reading: a white level beyond the container (65535 for a 16-bit mosaic,
4095 for RAW12, ...) is an error, and so are sizes in a sidecar that contradict the array.
Pixels above the white level are clipped by the ISP and the codec (as a sensor's hot or
over-range pixels are) and counted: one warning on the ``rawdiff`` logger names how many
and how far, since many of them usually mean a wrong white level. Errors name the option
as the command line spells it and as :func:`read_raw` takes it (``--width W``,
``width=W``). Writing is atomic (:mod:`rawdiff.outputs`): a file, and its sidecar, is
complete or absent.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from rawdiff.outputs import atomic_output, write_text
from rawdiff.raw import csi2
from rawdiff.raw.frame import RawFrame

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Camera RAW suffixes handed to rawpy (through ``rawdiff.raw.dng``).
RAWPY_SUFFIXES = frozenset(
    (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".rw2",
     ".rwl", ".orf", ".pef", ".ptx", ".srw", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr",
     ".mos", ".mef", ".mrw", ".x3f")
)
#: Single-channel mosaic files with a JSON sidecar.
MOSAIC_SUFFIXES = frozenset((".npy", ".png", ".tif", ".tiff"))
#: Suffixes that imply a packed CSI-2 format.
PACKED_SUFFIXES = {".raw10": "raw10p", ".raw12": "raw12p"}

#: Sidecar / override keys that map to :class:`RawFrame` fields.
METADATA_KEYS = ("cfa", "black_level", "white_level", "wb_gains", "color_matrix",
                 "timestamp", "frame_id", "extra")
#: Sidecar / override keys that describe the geometry of packed CSI-2 data.
PACKED_KEYS = ("format", "width", "height", "stride")

#: How the command line and read_raw spell an option, for error messages.
_OPTION_HINT = {"cfa": ("--cfa RGGB", "cfa='RGGB'"), "white_level": ("--white-level 4095", "white_level=4095"),
                "width": ("--width W", "width=W"), "height": ("--height H", "height=H")}


def option_hint(*names: str) -> str:
    """``--cfa RGGB --white-level 4095 (read_raw: cfa='RGGB', white_level=4095)``."""
    cli = " ".join(_OPTION_HINT[n][0] for n in names)
    api = ", ".join(_OPTION_HINT[n][1] for n in names)
    return "%s (read_raw: %s)" % (cli, api)


# ---------------------------------------------------------------------------
# metadata <-> dict


def _number(value: float) -> Union[int, float]:
    value = float(value)
    return int(value) if value.is_integer() else value


def frame_metadata(frame: RawFrame) -> Dict[str, Any]:
    """The JSON-ready metadata of ``frame`` (everything but the mosaic), as in the sidecar."""
    black = frame.black_level
    meta: Dict[str, Any] = {
        "cfa": frame.cfa,
        "black_level": [_number(b) for b in black] if isinstance(black, tuple) else _number(black),
        "white_level": _number(frame.white_level),
        "wb_gains": None if frame.wb_gains is None else [float(g) for g in frame.wb_gains],
        "color_matrix": None if frame.color_matrix is None
        else [[float(v) for v in row] for row in frame.color_matrix],
        "timestamp": None if frame.timestamp is None else float(frame.timestamp),
        "frame_id": frame.frame_id,
    }
    if frame.extra:
        meta["extra"] = dict(frame.extra)
    return meta


def _merge(meta: Optional[Mapping[str, Any]], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """``meta`` updated with the overrides that are not None; unknown keys raise."""
    allowed = METADATA_KEYS + PACKED_KEYS
    merged: Dict[str, Any] = {}
    for what, values in (("metadata", meta or {}), ("option", overrides)):
        for key, value in values.items():
            if key not in allowed:
                raise ValueError("unknown %s key %r; known: %s" % (what, key, ", ".join(allowed)))
            if value is not None or what == "metadata":
                merged[key] = value
    return merged


def _numbers(name: str, value: Any) -> np.ndarray:
    if isinstance(value, (str, bytes, dict)):
        raise ValueError("%s must be numeric, got %r" % (name, value))
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("%s must be numeric, got %r" % (name, value)) from None


def frame_from_metadata(mosaic: np.ndarray, meta: Optional[Mapping[str, Any]] = None,
                        **overrides: Any) -> RawFrame:
    """Build a :class:`RawFrame` from a mosaic and a sidecar-style dict; overrides win.

    ``cfa`` and ``white_level`` must come from one of the two. Overrides that are None
    are ignored; the packed-geometry keys (``format``, ``width``, ``height``, ``stride``)
    are accepted and ignored. Raises ``ValueError`` naming the offending field.
    """
    merged = _merge(meta, overrides)
    missing = [key for key in ("cfa", "white_level") if merged.get(key) is None]
    if missing:
        raise ValueError(
            "missing %s: give %s in a JSON sidecar or as %s"
            % (" and ".join(missing), "them" if len(missing) > 1 else "it", option_hint(*missing))
        )
    fields = {k: v for k, v in merged.items() if k in METADATA_KEYS and v is not None}
    if not isinstance(fields["cfa"], str):
        raise ValueError("cfa must be a string such as 'RGGB', got %r" % (fields["cfa"],))
    for name in ("black_level", "white_level", "wb_gains", "color_matrix"):
        if name in fields:
            fields[name] = _numbers(name, fields[name])
    if fields["white_level"].size != 1:
        raise ValueError("white_level must be one number, got %r" % (merged["white_level"],))
    fields["white_level"] = float(fields["white_level"].reshape(-1)[0])
    if "timestamp" in fields:
        stamp = fields["timestamp"]
        if isinstance(stamp, (bool, str)) or not isinstance(stamp, (int, float, np.number)):
            raise ValueError("timestamp must be a number of seconds, got %r" % (stamp,))
        if not math.isfinite(stamp):
            raise ValueError("timestamp must be finite, got %r" % (stamp,))
        fields["timestamp"] = float(stamp)
    if "frame_id" in fields and not isinstance(fields["frame_id"], str):
        raise ValueError("frame_id must be a string, got %r" % (fields["frame_id"],))
    if "extra" in fields:
        if not isinstance(fields["extra"], dict):
            raise ValueError("extra must be a JSON object, got %r" % (fields["extra"],))
        fields["extra"] = dict(fields["extra"])
    return RawFrame(mosaic=mosaic, **fields)


# ---------------------------------------------------------------------------
# reading


def sidecar_path(path: PathLike) -> Path:
    """``<stem>.json`` next to ``path``."""
    return Path(os.fspath(path)).with_suffix(".json")


def read_sidecar(path: PathLike) -> Optional[Dict[str, Any]]:
    """The JSON sidecar of ``path`` as a dict, or None if there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("%s: cannot read the JSON sidecar: %s" % (side, exc)) from None
    if not isinstance(meta, dict):
        raise ValueError("%s: the sidecar must hold a JSON object, got %s" % (side, type(meta).__name__))
    return meta


def _existing_file(path: PathLike) -> Path:
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError("RAW file not found: %s" % path)
    if path.is_dir():
        raise ValueError("%s is a directory, not a RAW file" % path)
    if not path.is_file():
        raise ValueError("%s is not a regular file" % path)
    return path


def read_raw(path: PathLike, **overrides: Any) -> RawFrame:
    """Read one RAW frame from a camera RAW file, a mosaic file or packed CSI-2 data.

    Keyword overrides: ``cfa``, ``black_level`` (scalar or 4 values, tile order),
    ``white_level``, ``wb_gains``, ``color_matrix``, ``timestamp``, ``frame_id``, ``extra``;
    for packed data also ``format`` (``"raw10p"`` / ``"raw12p"``), ``width``, ``height``,
    ``stride``. Overrides that are None are ignored.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the path)
    for anything that cannot be read as a RAW mosaic.
    """
    path = _existing_file(path)
    suffix = path.suffix.lower()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(METADATA_KEYS + PACKED_KEYS))
    if unknown:
        raise ValueError(
            "%s: unknown read_raw option %s; known: %s"
            % (path, ", ".join(repr(k) for k in unknown), ", ".join(METADATA_KEYS + PACKED_KEYS))
        )
    if "format" in overrides or suffix in PACKED_SUFFIXES:
        frame = _read_packed(path, overrides)
    elif suffix in RAWPY_SUFFIXES:
        frame = _read_camera_raw(path, overrides)
    elif suffix in MOSAIC_SUFFIXES:
        frame = _read_mosaic_file(path, overrides)
    else:
        meta = read_sidecar(path)
        if meta is None or meta.get("format") is None:
            raise ValueError(
                "%s: unknown RAW file type %r; expected a camera RAW (.dng ...), %s, %s, "
                "or packed CSI-2 data: --format raw10p|raw12p --width W --height H (read_raw: format='raw12p', "
                "width=W, height=H)"
                % (path, path.suffix, "/".join(sorted(MOSAIC_SUFFIXES)), "/".join(sorted(PACKED_SUFFIXES)))
            )
        frame = _read_packed(path, overrides, meta)
    warn_above_white(frame, str(path))
    return frame


def pixels_above_white(frame: RawFrame, top: Optional[int] = None):
    """(count, largest value) of the mosaic's pixels above the white level (``top``: the
    mosaic's largest value when the caller has it; the pixels are counted only when it is
    above the white level, so a frame without clipping costs one pass)."""
    top = int(frame.mosaic.max()) if top is None else int(top)
    if top <= frame.white_level:
        return 0, None
    return int(np.count_nonzero(frame.mosaic > frame.white_level)), top


#: frames that all stay below this share of their white level are named to the user: 12-bit
#: data in 16-bit images read without the sensor's levels reaches 1/16 at most
DIM_SHARE = 1.0 / 16


def brightest_share(frame: RawFrame, top: Optional[int] = None) -> float:
    """The brightest pixel of the mosaic (``top``: its value when the caller has it) as a share
    of the range from the black level to the white level (0 at black, 1 at white; a 12-bit
    frame taken as 16-bit reaches 1/16 at most)."""
    black = float(np.max(frame.black_level))
    top = float(frame.mosaic.max()) if top is None else float(top)
    return max(0.0, (top - black) / (frame.white_level - black))


def dim_note(peak: float, frames: int, levels: str, first: bool = False) -> Optional[str]:
    """The sentence that names ``frames`` frames whose brightest pixel stays at ``peak`` (a
    share, :func:`brightest_share`) at most :data:`DIM_SHARE` of their white level, telling
    how to give the sensor's ``levels``; None for brighter frames (or none)."""
    if frames <= 0 or peak > DIM_SHARE:
        return None
    return ("the brightest pixel of the %s%d frames is at %.1f %% of the range up to the white level: if the sensor "
            "has fewer bits than its images, give its levels (%s)" % ("first " if first else "", frames,
                                                                      100.0 * peak, levels))


def warn_above_white(frame: RawFrame, name: str) -> int:
    """Log one warning when pixels of ``frame`` are above its white level (they are clipped
    to it); returns their number."""
    count, top = pixels_above_white(frame)
    if count:
        share = 100.0 * count / frame.mosaic.size
        hint = "; is the white level right?" if share > 1.0 else ""
        logger.warning("%s: %d pixels (%.3g %%) are above white_level %g (up to %d) and are clipped to it%s",
                       name, count, share, frame.white_level, top, hint)
    return count


def _read_camera_raw(path: Path, overrides: Dict[str, Any]) -> RawFrame:
    packed = [key for key in PACKED_KEYS if key in overrides]
    if packed:
        raise ValueError("%s: --%s only appl%s to packed CSI-2 data (--format raw10p|raw12p)"
                         % (path, ", --".join(packed), "ies" if len(packed) == 1 else "y"))
    from rawdiff.raw.dng import read_dng

    frame = read_dng(path)
    side = read_sidecar(path)
    if side is not None:
        frame = _with_sidecar(frame, side, sidecar_path(path))
    if not overrides:
        return frame
    try:
        return frame_from_metadata(frame.mosaic, frame_metadata(frame), **overrides)
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, exc)) from None


# What a sidecar may add to a camera RAW file; where the file has the value too, they must agree.
_DNG_SIDECAR_KEYS = ("cfa", "black_level", "white_level", "wb_gains", "color_matrix")


def _with_sidecar(frame: RawFrame, side: Mapping[str, Any], side_path: Path) -> RawFrame:
    """A camera RAW frame with what its JSON sidecar adds (values the file lacks, such as
    white-balance gains); a sidecar value that contradicts the file raises, naming both."""
    known = frame_metadata(frame)
    changes: Dict[str, Any] = {}
    for key in _DNG_SIDECAR_KEYS:
        value = side.get(key)
        if value is None:
            continue
        ours = known.get(key)
        if ours is None:
            changes[key] = value
            continue
        if key == "cfa":
            same = str(value).upper() == ours
        else:
            a, b = _numbers(key, value), np.asarray(ours, dtype=np.float64)
            if key == "black_level":
                a, b = np.broadcast_to(a.reshape(-1), (4,)) if a.size == 1 else a.reshape(-1), \
                    np.broadcast_to(b.reshape(-1), (4,)) if b.size == 1 else b.reshape(-1)
            same = a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-4, atol=1e-6))
        if not same:
            raise ValueError("%s: %s %s disagrees with the RAW file's %s" % (side_path, key, value, ours))
    if not changes:
        return frame
    try:
        return frame_from_metadata(frame.mosaic, dict(known, **changes))
    except ValueError as exc:
        raise ValueError("%s: %s" % (side_path, exc)) from None


def _load_mosaic(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                magic = fh.read(6)
            if magic != b"\x93NUMPY" and magic[:4] != b"PK\x03\x04":
                raise ValueError("not a NumPy .npy file (it starts with %r, not the .npy magic)" % (magic,))
            array = np.load(path, allow_pickle=False)
            if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
                raise ValueError("not a single .npy array")
            return array
        if suffix == ".png":
            return _read_png(path)
        import tifffile

        return tifffile.imread(path)
    except (PermissionError, MemoryError):
        raise
    except Exception as exc:  # each decoder raises its own exception types
        raise ValueError("%s: cannot read the %s file: %s" % (path, suffix, exc)) from None


def _read_png(path: Path) -> np.ndarray:
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 is present where ROS is
        import imageio.v3 as iio

        return iio.imread(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("not a readable PNG image")
    return image


def _check_mosaic(path: Path, mosaic: np.ndarray) -> np.ndarray:
    if mosaic.ndim == 3 and mosaic.shape[2] == 1:
        mosaic = mosaic[:, :, 0]
    if mosaic.ndim != 2:
        kind = "an RGB" if mosaic.ndim == 3 else "a %d-D" % mosaic.ndim
        raise ValueError(
            "%s is %s image (shape %s), not a RAW mosaic (a single-channel HxW array)"
            % (path, kind, "x".join(str(n) for n in mosaic.shape))
        )
    if mosaic.dtype == np.uint8 and path.suffix.lower() != ".npy":
        raise ValueError("%s is an 8-bit image, not a RAW mosaic (expected 16-bit)" % path)
    if mosaic.dtype.kind not in "ui":
        raise ValueError("%s holds %s values, not an integer RAW mosaic" % (path, mosaic.dtype))
    return mosaic


def _read_mosaic_file(path: Path, overrides: Dict[str, Any]) -> RawFrame:
    packed = [key for key in PACKED_KEYS if key in overrides]
    if packed:
        raise ValueError("%s: --%s only appl%s to packed CSI-2 data (--format raw10p|raw12p)"
                         % (path, ", --".join(packed), "ies" if len(packed) == 1 else "y"))
    mosaic = _check_mosaic(path, _load_mosaic(path))
    meta = read_sidecar(path)
    _check_sidecar_size(path, meta, mosaic.shape)
    try:
        frame = frame_from_metadata(mosaic, meta, **overrides)
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, _with_sidecar_hint(str(exc), path))) from None
    top = min(65535, int(np.iinfo(mosaic.dtype).max))
    _check_white_in_container(path, frame.white_level, top, "%s mosaic" % mosaic.dtype)
    return frame


def _check_sidecar_size(path: Path, meta: Optional[Mapping[str, Any]], shape) -> None:
    """A sidecar's ``width`` / ``height`` must be the array's (they describe packed data;
    on a mosaic file they can only agree or be wrong)."""
    if not meta:
        return
    for key, actual in (("height", shape[0]), ("width", shape[1])):
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != actual:
            raise ValueError("%s: %s %r contradicts the mosaic, which is %dx%d (width x height)"
                             % (sidecar_path(path), key, value, shape[1], shape[0]))


def _check_white_in_container(path: Path, white_level: float, top: int, container: str) -> None:
    if white_level > top:
        raise ValueError("%s: white_level %g is above the largest value of the %s (%d)"
                         % (path, white_level, container, top))


def _with_sidecar_hint(message: str, path: Path) -> str:
    return message.replace("a JSON sidecar", "the JSON sidecar %s" % sidecar_path(path).name)


def _read_packed(path: Path, overrides: Dict[str, Any], meta: Optional[Dict[str, Any]] = None) -> RawFrame:
    if meta is None:
        meta = read_sidecar(path)
    try:
        merged = _merge(meta, overrides)
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, exc)) from None
    implied = PACKED_SUFFIXES.get(path.suffix.lower())
    fmt = merged.get("format") or implied
    try:
        bits = csi2.format_bits(fmt)
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, exc)) from None
    if implied is not None and csi2.format_bits(implied) != bits:
        raise ValueError("%s: format %r contradicts the suffix %s (%s)" % (path, fmt, path.suffix, implied))
    missing = [key for key in ("width", "height") if merged.get(key) is None]
    if missing:
        raise ValueError(
            "%s: packed %s data needs %s; give %s as %s or in the JSON sidecar %s"
            % (path, csi2.format_name(bits), " and ".join(missing), "them" if len(missing) > 1 else "it",
               option_hint(*missing), sidecar_path(path).name)
        )
    if merged.get("white_level") is None:
        merged["white_level"] = (1 << bits) - 1
    try:
        mosaic = csi2.unpack(path.read_bytes(), merged["width"], merged["height"], bits, merged.get("stride"))
        frame = frame_from_metadata(mosaic, merged)
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, _with_sidecar_hint(str(exc), path))) from None
    _check_white_in_container(path, frame.white_level, (1 << bits) - 1, "%d-bit %s data"
                              % (bits, csi2.format_name(bits)))
    return frame


# ---------------------------------------------------------------------------
# writing


def write_sidecar(path: PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``meta`` as the JSON sidecar of ``path``; returns the sidecar's path."""
    side = sidecar_path(path)
    try:
        text = json.dumps(dict(meta), indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError("%s: metadata is not JSON-serialisable: %s" % (side, exc)) from None
    write_text(side, text + "\n")
    return side


def write_raw(frame: RawFrame, path: PathLike) -> Path:
    """Write the mosaic as ``.npy``, 16-bit ``.png`` or ``.tif``/``.tiff`` plus its JSON sidecar.

    Returns the path of the mosaic file.
    """
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in MOSAIC_SUFFIXES:
        raise ValueError(
            "%s: cannot write a RAW mosaic as %r; use one of %s (or write_csi2 for packed data)"
            % (path, path.suffix, ", ".join(sorted(MOSAIC_SUFFIXES)))
        )
    meta = frame_metadata(frame)
    with atomic_output(path) as part:
        if suffix == ".npy":
            with open(part, "wb") as fh:  # np.save(path) would append .npy to other names
                np.save(fh, frame.mosaic, allow_pickle=False)
        elif suffix == ".png":
            import cv2

            if not cv2.imwrite(part, np.ascontiguousarray(frame.mosaic)):
                raise ValueError("%s: OpenCV could not write the PNG" % path)
        else:
            import tifffile

            tifffile.imwrite(part, np.ascontiguousarray(frame.mosaic), photometric="minisblack")
    write_sidecar(path, meta)
    return path


def write_csi2(frame: RawFrame, path: PathLike, bits: csi2.Bits, stride: Optional[int] = None) -> Path:
    """Write the mosaic packed as V4L2 RAW10 / RAW12 plus a JSON sidecar with its geometry.

    ``bits`` is 10 / 12 or ``"raw10p"`` / ``"raw12p"``; the mosaic values and the white level
    must fit in that many bits. The sidecar holds the metadata plus ``format``, ``width``,
    ``height`` and, for padded lines, ``stride``. Returns the path of the packed file.
    """
    path = Path(os.fspath(path))
    bits = csi2.format_bits(bits)
    implied = PACKED_SUFFIXES.get(path.suffix.lower())
    if implied is not None and csi2.format_bits(implied) != bits:
        raise ValueError("%s: bits %d contradicts the suffix %s (%s)" % (path, bits, path.suffix, implied))
    top = (1 << bits) - 1
    if frame.white_level > top:
        raise ValueError(
            "%s: white_level %g exceeds the %d-bit maximum %d" % (path, frame.white_level, bits, top)
        )
    data = csi2.pack(frame.mosaic, bits, stride)
    meta = frame_metadata(frame)
    meta.update(format=csi2.format_name(bits), width=frame.width, height=frame.height)
    if len(data) // frame.height != csi2.packed_line_bytes(frame.width, bits):
        meta["stride"] = len(data) // frame.height
    with atomic_output(path) as part:
        with open(part, "wb") as fh:
            fh.write(data)
    write_sidecar(path, meta)
    return path
