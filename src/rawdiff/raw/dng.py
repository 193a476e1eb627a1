"""Read a DNG (or another Bayer camera RAW that LibRaw reads) into a :class:`RawFrame`.

rawpy (LibRaw) reads the file; this module only maps LibRaw's fields onto RawFrame's::

    raw_image_visible            -> mosaic (uint16, margins removed, not flipped)
    raw_pattern + color_desc     -> cfa ("RGGB", ...); anything but a 2x2 R/G/B pattern is refused
    black_level_per_channel      -> black_level on the 2x2 tile positions (a scalar when all equal)
    white_level                  -> white_level
    camera_whitebalance          -> wb_gains (R, G, B) / G; None when missing (LibRaw gives 0)
    color_matrix | rgb_xyz_matrix -> color_matrix (camera -> linear sRGB, rows sum to 1)

The colour matrix: for a DNG, LibRaw converts the ``ColorMatrix`` tag (XYZ -> camera) with
dcraw's ``cam_xyz_coeff`` into ``color_matrix`` (its ``rgb_cam``) and leaves
``rgb_xyz_matrix`` at zero (LibRaw 0.21), so that matrix is used when populated: it is what
LibRaw itself renders with. Otherwise (other RAW formats) the matrix is derived from
``rgb_xyz_matrix`` (dcraw's ``cam_xyz``, from LibRaw's camera table) with
:func:`rawdiff.raw.isp.camera_to_srgb_matrix`, the same formula. Both are rows-sum-to-1
matrices for white-balanced camera RGB, the RawFrame convention.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Iterator, List, Optional, Union

import numpy as np

from rawdiff.raw.frame import CFA_PATTERNS, RawFrame
from rawdiff.raw.isp import camera_to_srgb_matrix

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def read_dng(path: PathLike) -> RawFrame:
    """Read the Bayer mosaic and its metadata from ``path`` with rawpy.

    Raises ``ValueError`` naming the path when the file is missing, not a RAW file LibRaw
    can read, or not a 2x2 Bayer mosaic (X-Trans, monochrome, linear/demosaiced DNG).
    ``extra`` holds ``flip`` (LibRaw's orientation code; the mosaic is never flipped) and
    ``color_matrix_source``.
    """
    import rawpy

    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError("%s: %s" % (name, "not a file" if os.path.exists(name) else "no such file"))
    said: List[str] = []
    failure = None
    with _stderr_into(said):
        try:
            with rawpy.imread(name) as raw:
                frame = _frame_from_rawpy(raw, name)
        except (rawpy.LibRawError, NotImplementedError, RuntimeError, OSError) as exc:
            failure = exc
    if failure is not None:
        arg = failure.args[0] if failure.args else None
        detail = arg.decode(errors="replace") if isinstance(arg, bytes) else failure
        also = "; LibRaw: %s" % "; ".join(said) if said else ""
        raise ValueError("%s: not a RAW file rawpy can read (%s: %s%s)"
                         % (name, type(failure).__name__, detail, also)) from None
    for line in said:  # read all the same: what LibRaw printed is a warning, through the logger
        logger.warning("%s: LibRaw: %s", name, line)
    return frame


#: one redirection of the process's standard error at a time
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _stderr_into(lines: List[str]) -> Iterator[None]:
    """What C code writes to file descriptor 2 meanwhile (LibRaw prints ``NAME: Unexpected end
    of file`` itself), appended to ``lines`` instead of printed, so that a command's error stays
    one line and names it. Best effort: where the redirection cannot be made (no descriptor 2,
    no temporary file), the read goes on without it. Everything written to the descriptor
    meanwhile is caught, Python's own stderr included (it is flushed first)."""
    import tempfile

    with _STDERR_LOCK:
        saved = sink = None
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            sink = tempfile.TemporaryFile()
            os.dup2(sink.fileno(), 2)
        except (OSError, ValueError, AttributeError):
            if saved is not None:
                os.close(saved)
            if sink is not None:
                sink.close()
            saved = sink = None
        try:
            yield
        finally:
            if saved is not None and sink is not None:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read(4096).decode(errors="replace")
                sink.close()
                lines.extend(line.strip() for line in text.splitlines() if line.strip())


def _cfa_from_rawpy(raw, name: str):
    import rawpy

    if raw.raw_type != rawpy.RawType.Flat:
        raise ValueError("%s: raw_type %s is not a Bayer mosaic (linear or demosaiced data)" % (name, raw.raw_type))
    pattern = np.asarray(raw.raw_pattern)
    desc = bytes(raw.color_desc).decode("ascii", errors="replace")
    if pattern.shape != (2, 2):
        kind = {1: " (monochrome)", 6: " (Fujifilm X-Trans)"}.get(pattern.shape[0], "")
        raise ValueError(
            "%s: CFA pattern is %dx%d%s, not a 2x2 Bayer pattern; only RGGB, BGGR, GRBG, GBRG are supported"
            % (name, pattern.shape[0], pattern.shape[1], kind)
        )
    cfa = "".join(desc[int(i)] if 0 <= int(i) < len(desc) else "?" for i in pattern.ravel())
    if cfa not in CFA_PATTERNS:
        raise ValueError("%s: CFA %r (colours %r) is not one of %s" % (name, cfa, desc, ", ".join(CFA_PATTERNS)))
    return cfa, pattern, desc


def _wb_gains(raw, desc: str) -> Optional[np.ndarray]:
    cam = np.asarray(raw.camera_whitebalance, dtype=np.float64)
    gains = np.array([cam[desc.index(c)] for c in "RGB"])
    if not np.all(np.isfinite(gains)) or np.any(gains <= 0):
        return None
    return gains / gains[1]


def _color_matrix(raw, desc: str):
    idx = [desc.index(c) for c in "RGB"]
    rgb_cam = np.asarray(raw.color_matrix, dtype=np.float64)  # 3 x 4: sRGB rows, camera colour columns
    if rgb_cam.shape == (3, 4) and np.all(np.isfinite(rgb_cam)) and np.any(rgb_cam != 0):
        ccm = rgb_cam[:, idx].copy()
        if len(desc) > 3 and desc[3] == "G" and raw.num_colors == 4:  # a separate second green
            ccm[:, 1] += rgb_cam[:, 3]
        sums = ccm.sum(axis=1, keepdims=True)
        if np.all(sums > 1e-6):
            return ccm / sums, "libraw_color_matrix"
    cam_xyz = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)  # 4 x 3: camera colour rows, XYZ columns
    if cam_xyz.shape == (4, 3) and np.all(np.isfinite(cam_xyz)) and np.any(cam_xyz != 0):
        try:
            return camera_to_srgb_matrix(cam_xyz[idx]), "rgb_xyz_matrix"
        except ValueError:
            return None, "none"
    return None, "none"


def _frame_from_rawpy(raw, name: str) -> RawFrame:
    cfa, pattern, desc = _cfa_from_rawpy(raw, name)
    mosaic = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
    per_colour = [float(b) for b in raw.black_level_per_channel]
    black = [per_colour[int(i)] for i in pattern.ravel()]
    black_level = black[0] if len(set(black)) == 1 else black
    white_level = float(raw.white_level)
    if white_level <= max(black):
        raise ValueError("%s: white_level %g <= black_level %g" % (name, white_level, max(black)))
    color_matrix, source = _color_matrix(raw, desc)
    return RawFrame(
        mosaic=mosaic,
        cfa=cfa,
        black_level=black_level,
        white_level=white_level,
        wb_gains=_wb_gains(raw, desc),
        color_matrix=color_matrix,
        frame_id=os.path.basename(name),
        extra={"flip": int(raw.sizes.flip), "color_matrix_source": source},
    )


# --- writing -------------------------------------------------------------------------------------

_DNG_CFA_CODES = {"R": 0, "G": 1, "B": 2}


def _rational(value: float, denominator: int = 1000000):
    from fractions import Fraction

    frac = Fraction(float(value)).limit_denominator(denominator)
    return [frac.numerator, frac.denominator]


def _srational(value: float):
    num, den = _rational(value, 100000)
    return [num, den]


def write_dng(frame: RawFrame, path: PathLike) -> str:
    """Write ``frame`` as an uncompressed 16-bit CFA DNG (pidng) that :func:`read_dng` reads back.

    Tags: CFA pattern, black level per 2x2 tile position, white level; ``AsShotNeutral`` =
    1 / the white-balance gains; ``ColorMatrix1`` (D65, XYZ -> camera) from the frame's
    colour matrix (camera -> linear sRGB): ``inv(color_matrix) @ inv(SRGB_TO_XYZ)``, which
    LibRaw turns back into the same matrix (it normalises the rows, dcraw's ``cam_xyz_coeff``).
    DNG gains are relative to green: a green gain other than 1 (an exposure gain) is written
    as ``BaselineExposure`` (log2 of it), which LibRaw and :func:`read_dng` do not apply.
    The file is written under a temporary name and renamed, so a failure leaves no half file.
    """
    import tempfile

    from pidng.core import RAW2DNG
    from pidng.defs import CalibrationIlluminant, PhotometricInterpretation
    from pidng.dng import DNGTags, Tag

    from rawdiff.raw.isp import SRGB_TO_XYZ

    name = os.fspath(path)
    if not name.lower().endswith(".dng"):
        raise ValueError("%s: a DNG file name must end in .dng" % name)
    h, w = frame.shape
    tags = DNGTags()
    for tag, value in ((Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, 1), (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16)):
        tags.set(tag, value)
    tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    tags.set(Tag.CFARepeatPatternDim, [2, 2])
    tags.set(Tag.CFAPattern, [_DNG_CFA_CODES[c] for c in frame.cfa])
    black = frame.black_level if isinstance(frame.black_level, tuple) else (frame.black_level,) * 4
    tags.set(Tag.BlackLevelRepeatDim, [2, 2])
    tags.set(Tag.BlackLevel, [int(round(b)) for b in black])
    tags.set(Tag.WhiteLevel, int(round(frame.white_level)))
    if frame.wb_gains is not None:
        gains = np.asarray(frame.wb_gains, dtype=np.float64)
        tags.set(Tag.AsShotNeutral, [_rational(gains[1] / g) for g in gains])
        if abs(gains[1] - 1.0) > 1e-6:
            tags.set(Tag.BaselineExposure, [_srational(float(np.log2(gains[1])))])
    if frame.color_matrix is not None:
        xyz_to_camera = np.linalg.inv(np.asarray(frame.color_matrix, dtype=np.float64)) @ np.linalg.inv(SRGB_TO_XYZ)
        tags.set(Tag.ColorMatrix1, [_srational(v) for v in xyz_to_camera.ravel()])
        tags.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    tags.set(Tag.Make, "rawdiff")
    tags.set(Tag.Model, "reconstruction")
    tags.set(Tag.UniqueCameraModel, "rawdiff reconstruction")
    folder = os.path.dirname(os.path.abspath(name))
    os.makedirs(folder, exist_ok=True)  # as rawdiff.outputs.atomic_output makes it for every other output
    with tempfile.TemporaryDirectory(dir=folder, prefix=".rawdiff-dng-") as tmp:
        writer = RAW2DNG()
        writer.options(tags, path=tmp, compress=False)
        writer.convert(np.ascontiguousarray(frame.mosaic, dtype=np.uint16), filename="frame")
        os.replace(os.path.join(tmp, "frame.dng"), name)
    return name
