"""RAW Bayer frames and the colour filter array (CFA) geometry.

A :class:`RawFrame` is the sensor's mosaic plus what is needed to interpret it::

    mosaic (uint16 HxW) --normalize()--> [0, 1] float, black level removed
                        --to_planes()--> 4 x H/2 x W/2 in the fixed order R, G1, G2, B

``G1`` is the green on the red row and ``G2`` the green on the blue row, whatever the
phase of the pattern, so a model sees the same channel order for RGGB, BGGR, GRBG and
GBRG sensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
PLANE_ORDER = ("R", "G1", "G2", "B")

BlackLevel = Union[float, Sequence[float]]
#: The mosaic is uint16: a white level above this can never be reached.
MAX_WHITE_LEVEL = 65535


def check_cfa(cfa: str) -> str:
    """Return the canonical (upper-case) pattern name or raise ``ValueError``."""
    name = str(cfa).upper()
    if name not in CFA_PATTERNS:
        raise ValueError("cfa %r is not one of %s" % (cfa, ", ".join(CFA_PATTERNS)))
    return name


def plane_offsets(cfa: str) -> Dict[str, Tuple[int, int]]:
    """(row, col) of R, G1, G2 and B inside the 2x2 tile of ``cfa``.

    >>> plane_offsets("GRBG")["R"]
    (0, 1)
    """
    cfa = check_cfa(cfa)
    cells = {(0, 0): cfa[0], (0, 1): cfa[1], (1, 0): cfa[2], (1, 1): cfa[3]}
    out = {}
    for pos, colour in cells.items():
        if colour in "RB":
            out[colour] = pos
    red_row = out["R"][0]
    for pos, colour in cells.items():
        if colour == "G":
            out["G1" if pos[0] == red_row else "G2"] = pos
    return out


def flip_cfa(cfa: str, horizontal: bool = False, vertical: bool = False) -> str:
    """The pattern seen after mirroring an even-sized mosaic."""
    cfa = check_cfa(cfa)
    tile = [[cfa[0], cfa[1]], [cfa[2], cfa[3]]]
    if horizontal:
        tile = [row[::-1] for row in tile]
    if vertical:
        tile = tile[::-1]
    return "".join(tile[0] + tile[1])


def crop_cfa(cfa: str, top: int, left: int) -> str:
    """The pattern of a crop starting at (top, left)."""
    cfa = check_cfa(cfa)
    tile = [[cfa[0], cfa[1]], [cfa[2], cfa[3]]]
    return "".join(tile[(top + r) % 2][(left + c) % 2] for r in (0, 1) for c in (0, 1))


def check_black_level(black_level) -> np.ndarray:
    """``black_level`` (a scalar or 4 values) as a float64 array of 1 or 4 values; a
    ValueError unless each is finite and >= 0."""
    black = np.asarray(black_level, dtype=np.float64).reshape(-1)
    if black.size not in (1, 4):
        raise ValueError("black_level must be a scalar or 4 values, got %d" % black.size)
    if not np.all(np.isfinite(black)):
        raise ValueError("black_level must be finite, got %s" % (black,))
    if np.any(black < 0):
        raise ValueError("black_level must be >= 0 (the mosaic's unsigned values minus it), got %s"
                         % (black.tolist() if black.size > 1 else black[0],))
    return black


@dataclass(eq=False)
class RawFrame:
    """One RAW Bayer frame.

    Attributes:
        mosaic: uint16 HxW sensor values.
        cfa: the 2x2 pattern read row by row from the top-left pixel, e.g. ``"RGGB"``.
        black_level: scalar, or four values for the 2x2 tile positions in row-major order.
        white_level: the saturation value (e.g. 4095 for 12 bits).
        wb_gains: optional as-shot white-balance gains (R, G, B) the ISP multiplies by (green is
            usually 1; unprocessed frames fold a brightness gain in).
        color_matrix: optional 3x3 matrix from white-balanced camera RGB to linear sRGB
            (rows sum to 1, as in Brooks et al. 2019's ``cam2rgb``).
        timestamp: optional capture time in seconds.
        frame_id: optional source frame name (a ROS ``frame_id`` or a file name).
    """

    mosaic: np.ndarray
    cfa: str = "RGGB"
    black_level: BlackLevel = 0.0
    white_level: float = 65535.0
    wb_gains: Optional[np.ndarray] = None
    color_matrix: Optional[np.ndarray] = None
    timestamp: Optional[float] = None
    frame_id: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        mosaic = np.asarray(self.mosaic)
        if mosaic.ndim != 2:
            raise ValueError("mosaic must be 2-D (HxW), got shape %s" % (mosaic.shape,))
        if mosaic.size == 0:
            raise ValueError("mosaic is empty (shape %s)" % (mosaic.shape,))
        if mosaic.dtype != np.uint16:
            if mosaic.dtype.kind not in "ui" or mosaic.min() < 0 or mosaic.max() > 65535:
                raise ValueError("mosaic must hold unsigned 16-bit values, got %s" % mosaic.dtype)
            mosaic = mosaic.astype(np.uint16)
        self.mosaic = mosaic
        self.cfa = check_cfa(self.cfa)
        black = check_black_level(self.black_level)
        self.black_level = float(black[0]) if black.size == 1 else tuple(float(b) for b in black)
        self.white_level = float(self.white_level)
        if not np.isfinite(self.white_level):
            raise ValueError("white_level must be finite, got %r" % self.white_level)
        if self.white_level > MAX_WHITE_LEVEL:
            raise ValueError("white_level %g is above the largest value of the 16-bit mosaic (%d)"
                             % (self.white_level, MAX_WHITE_LEVEL))
        if self.white_level <= float(black.max()):
            raise ValueError(
                "white_level %g <= black_level %g" % (self.white_level, float(black.max()))
            )
        if self.wb_gains is not None:
            gains = np.asarray(self.wb_gains, dtype=np.float64).reshape(-1)
            if gains.size != 3 or not np.all(np.isfinite(gains)) or np.any(gains <= 0):
                raise ValueError("wb_gains must be 3 positive finite values (R, G, B), got %s" % (gains.tolist(),))
            self.wb_gains = gains
        if self.color_matrix is not None:
            ccm = np.asarray(self.color_matrix, dtype=np.float64)
            if ccm.shape != (3, 3) or not np.all(np.isfinite(ccm)):
                raise ValueError("color_matrix must be a finite 3x3 matrix, got shape %s" % (ccm.shape,))
            scale = float(np.abs(ccm).max())
            det = float(np.linalg.det(ccm))
            if scale == 0 or abs(det) < 1e-6 * scale ** 3:
                raise ValueError("color_matrix %s is singular (determinant %.3g)" % (ccm.tolist(), det))
            self.color_matrix = ccm

    @property
    def height(self) -> int:
        return int(self.mosaic.shape[0])

    @property
    def width(self) -> int:
        return int(self.mosaic.shape[1])

    @property
    def shape(self) -> Tuple[int, int]:
        return self.height, self.width

    def black_level_map(self) -> np.ndarray:
        """The black level of every pixel as a float32 HxW array (broadcast view)."""
        if isinstance(self.black_level, tuple):
            tile = np.asarray(self.black_level, dtype=np.float32).reshape(2, 2)
            reps = ((self.height + 1) // 2, (self.width + 1) // 2)
            return np.tile(tile, reps)[: self.height, : self.width]
        return np.full(self.shape, self.black_level, dtype=np.float32)

    def normalize(self) -> np.ndarray:
        """float32 HxW mosaic with the black level removed, scaled and clipped to [0, 1]."""
        black = self.black_level_map()
        scale = self.white_level - black
        return np.clip((self.mosaic.astype(np.float32) - black) / scale, 0.0, 1.0)

    def to_planes(self) -> np.ndarray:
        """float32 4 x H/2 x W/2 normalised planes in the order R, G1, G2, B."""
        return mosaic_to_planes(self.normalize(), self.cfa)

    def copy(self, **changes) -> RawFrame:
        return replace(self, **changes)


def _require_even(shape: Tuple[int, ...], what: str) -> None:
    if shape[-2] % 2 or shape[-1] % 2:
        raise ValueError("%s height and width must be even for a 2x2 CFA, got %s" % (what, shape[-2:]))


def mosaic_to_planes(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """Pack an HxW mosaic into 4 x H/2 x W/2 planes ordered R, G1, G2, B."""
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2:
        raise ValueError("mosaic must be 2-D (HxW), got shape %s" % (mosaic.shape,))
    _require_even(mosaic.shape, "mosaic")
    offsets = plane_offsets(cfa)
    return np.stack([mosaic[r::2, c::2] for r, c in (offsets[p] for p in PLANE_ORDER)])


def planes_to_mosaic(planes: np.ndarray, cfa: str) -> np.ndarray:
    """The exact inverse of :func:`mosaic_to_planes`."""
    planes = np.asarray(planes)
    if planes.ndim != 3 or planes.shape[0] != 4:
        raise ValueError("planes must be 4 x H/2 x W/2, got shape %s" % (planes.shape,))
    h, w = planes.shape[1] * 2, planes.shape[2] * 2
    mosaic = np.empty((h, w), dtype=planes.dtype)
    offsets = plane_offsets(cfa)
    for plane, name in zip(planes, PLANE_ORDER):
        r, c = offsets[name]
        mosaic[r::2, c::2] = plane
    return mosaic
