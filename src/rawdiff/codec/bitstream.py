"""The rawdiff bitstream: the self-contained container of one compressed frame.

A ``.rdc`` file and the ``data`` field of a ``rawdiff/CompressedCodes`` message hold the
same bytes. Every frame decodes on its own (no inter-frame state).

Layout of format versions 9, 8, 7, 6, 5 and 4 (all integers and floats little-endian; varint: unsigned
LEB128, 1 to 5 bytes, the shortest form, at most 2**32 - 1)::

    size      type     field
    4         bytes    magic b"RDCF"
    2         uint16   format version (9 with adaptive coding that ages its counts, else 8
                       with adaptive coding that uses the parent level, else 7 with adaptive
                       coding, else 6 with detail statistics, else 5 with mean layers, else 4)
    16        bytes    model_id: a 128-bit digest, shown as 32 lower-case hex chars
    1         uint8    flags: bits 0-1 cfa (0 RGGB, 1 BGGR, 2 GRBG, 3 GBRG), bits 2-3 entropy
                       model of the indices (0 uniform, 1 unigram, 2 context), bit 4 wb_source
                       (0 as shot: the frame's own, 1 gray world: estimated by the encoder over
                       the whole frame, as the reference ISP does), bit 5 matrix_source (0 the
                       frame's, 1 the ISP's default: the identity), bit 6 tone_curve (0
                       smoothstep, 1 none), bit 7 levels as float64
    varint x4          height, width of the source frame in pixels (>= 1), code_height,
                       code_width: the grid of codebook indices (1..min(height, 65535),
                       1..min(width, 65535))
    10 or 40  levels   black_level of the 2x2 CFA tile (row-major) and white_level: 5 x uint16
                       when all are integers in 0..65535, else (flag bit 7) 5 x f64 (integers
                       in that range written as f64 are refused: one form for one header)
    12        3 x f32  wb_gains (R, G, B) the decoder renders with (finite, > 0)
    0 or 36   9 x f32  color_matrix, row-major: white-balanced camera RGB -> linear sRGB (finite,
                       not singular); only when matrix_source is the frame's
    36        9 x f32  colour_stats: mean (R, G, B) and covariance (RR, RG, RB, GG, GB, BB) of
                       the white-balanced signal over the code cells
                       (rawdiff.codec.colour_stats; finite, variances >= 0)
    1         uint8    n = length of source_encoding (0..64)
    n         ascii    source_encoding, e.g. "bayer_rggb16", "raw12p" ([A-Za-z0-9_.+-];
                       empty: unknown)
    1 + d     uint8s   versions 6 to 9: d (1..8; 0..8 in versions 7 to 9), then d bytes of the
                       frame's detail statistics (rawdiff.codec.detail_stats: quantised log
                       energies of its fine detail, measured on the planes the encoder codes;
                       they set the level of the realism path's texture and belong to no stage,
                       so a cut stream keeps them)
    1         uint8    S: the number of entries of the stage table (1..16)
    S entries stages   per quantizer stage, coarse to fine: uint8 scale (its grid is the
                       code grid divided by it, rounded up: 1, 2 or 4), uint16 K - 1 (its
                       codebook size), versions 7 to 9: uint8 e (0..24) and uint8 g (0..9),
                       the strength exponent and the pool weight of its adaptive coding
                       (rawdiff.codec.adaptive: the prior's tables adapted to the frame's own
                       counts as it is coded), version 8: then uint8 m (0..9, at most g when
                       g > 0, 0 in the first stage), its parent level, version 9: then one
                       uint8, m in bits 0-3 and in bits 4-7 h (0..12), its aging; then the
                       varint length of its entropy-coded indices in bytes;
                       versions 5 to 9: after a stage, the mean layers sent after it
                       (rawdiff.codec.cell_means), each uint8 0x80 | exponent (1..10), varint
                       length. The quality is the number of quantizer stages.
    P         bytes    payload: the entries' coded data in table order (see
                       rawdiff.codec.entropy and rawdiff.codec.cell_means); P = the sum of
                       their lengths
    4         uint32   CRC32 (zlib.crc32) of every byte before it

A stream with adaptive coding is written as version 9 when a stage ages its counts, else as
version 8 when a stage uses the parent level, else as version 7; one without it as version 6
with detail statistics, else 5 with mean layers, else 4 (the lowest version that holds it, so
that a cut stream is what encoding at its quality writes).

A 1936x1112 frame from a ROS ``bayer_rggb16`` image (integer levels, the default matrix,
stages of 128 bytes to 16 KiB: two-byte lengths) costs 112 bytes of container at quality 1 and 137 at quality
6 on top of the payload in version 4 (version 3: 196 and 231; version 6 adds the detail
statistics, 4 bytes with their count, version 7 two bytes a stage, versions 8 and 9 three); the render parameters
and colour statistics are 58 of them, 94 with the frame's own colour matrix.

Version 3 (still read, and written by :func:`pack` for a header of version 3, so that
:func:`truncate` cuts a version 3 file into a version 3 file) has fixed offsets::

    offset    size  type     field
    0         4     bytes    magic b"RDCF"
    4         2     uint16   format version (3)
    6         16    bytes    model_id
    22        4     uint32   height
    26        4     uint32   width
    30        1     uint8    cfa
    31        1     uint8    entropy model
    32        2     uint16   code_height
    34        2     uint16   code_width
    36        4     uint32   codebook_size K of the first stage
    40        32    4 x f64  black_level
    72        8     f64      white_level
    80        12    3 x f32  wb_gains
    92        36    9 x f32  color_matrix
    128       1     uint8    wb_source
    129       1     uint8    matrix_source
    130       1     uint8    tone_curve
    131       36    9 x f32  colour_stats
    167       4     uint32   payload length P in bytes
    171       1     uint8    n = length of source_encoding
    172       n     ascii    source_encoding
    172+n     1     uint8    S
    173+n     7 S   stages   per stage: uint8 scale, uint16 K - 1, uint32 length
    173+n+7S  P     bytes    payload
    ...+P     4     uint32   CRC32

**Progressive**: stage k's indices depend on the stages before it only, and each stage is
a range-coder stream of its own, so the first q stages of a bitstream, with the table cut
to q entries (:func:`truncate`; in versions 5 to 9 with the mean layers that follow them, which
depend on those stages only), are exactly the bitstream that encoding with q stages
gives (in version 4 no field of the header depends on the payload's length; version 3's
payload_length is rewritten). Version 2 (version 3's
layout without the stage table) is read as a bitstream of one stage. Version 1 (no render
parameters: the network had to guess each frame's colour) is refused with an error naming
the versions.

Reading checks, in this order: magic, version (before anything else, so a file of
another version fails with a clear message even if its layout changed), the header's
structure as it is read (a varint that runs long, a stage count out of range), lengths
(truncated / trailing bytes), CRC, then the plausibility of every field. All problems
raise :class:`BitstreamError` (a ``ValueError``) naming what is wrong; no ``struct.error``,
``IndexError`` or ``UnicodeDecodeError`` escapes. A format change must bump
:data:`FORMAT_VERSION`; ``test/golden/`` pins the bytes of versions 9, 8, 7, 6, 5, 4 and 3.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

MAGIC = b"RDCF"
FORMAT_VERSION = 9
SUPPORTED_VERSIONS = (2, 3, 4, 5, 6, 7, 8, 9)
#: versions :func:`pack` writes (a header's ``version``): 9 for a stream with a stage whose adaptive
#: coding ages its counts, else 8 for a stream with a stage coded with the adaptive coder's
#: parent level, else 7 for one with adaptive coding, else 6 for one with
#: detail statistics, 5 for one with mean layers, 4 for one with none of them (the same bytes
#: a version 4 reader reads), and 3 for cutting version 3 files
WRITABLE_VERSIONS = (3, 4, 5, 6, 7, 8, 9)
#: the largest strength exponent, pool weight, parent level and aging of a stage's adaptive
#: coding (rawdiff.codec.adaptive)
MAX_ADAPT = (24, 9, 9, 12)
#: the most bytes of detail statistics a version 6 to 9 header holds
MAX_DETAIL = 8
MAX_STAGES = 16
#: a stage table entry whose first byte has this bit is a mean layer (versions 5 to 9), its low bits
#: the exponent
MEAN_ENTRY_FLAG = 0x80
MAX_MEAN_EXPONENT = 10
STAGE_SCALES = (1, 2, 4)

# Codes pinned by the format: never reorder, only append (and bump the version).
CFA_CODES = ("RGGB", "BGGR", "GRBG", "GBRG")
ENTROPY_MODELS = ("uniform", "unigram", "context")
WB_SOURCES = ("as_shot", "gray_world")
MATRIX_SOURCES = ("frame", "default")
TONE_CURVES = ("smoothstep", "none")
_CODE_TABLES = {"cfa": CFA_CODES, "entropy_model": ENTROPY_MODELS, "wb_source": WB_SOURCES,
                "matrix_source": MATRIX_SOURCES, "tone_curve": TONE_CURVES}
IDENTITY_MATRIX = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

MODEL_ID_BYTES = 16
MAX_SOURCE_ENCODING = 64
MIN_CODEBOOK_SIZE = 2
MAX_CODEBOOK_SIZE = 65536

_PREFIX = struct.Struct("<4sH")  # magic, version
_FIXED = struct.Struct("<4sH16sIIBBHHI4dd3f9fBBB9fIB")  # version 3, up to the source_encoding
_CRC = struct.Struct("<I")
_STAGE = struct.Struct("<BHI")  # version 3: scale, K - 1, length
HEADER_FIXED_SIZE = _FIXED.size  # 172 (version 3)
_V4_START = struct.Struct("<4sH16sB")  # magic, version, model_id, flags
_STAGE_V4 = struct.Struct("<BH")  # scale, K - 1 (then a varint length)
_LEVELS_INT = struct.Struct("<5H")
_LEVELS_FLOAT = struct.Struct("<5d")
_GAINS = struct.Struct("<3f")
_NINE = struct.Struct("<9f")
_MAX_VARINT = 5
FLOAT_LEVELS_FLAG = 0x80
#: the smallest version 4 bitstream: one empty stage, integer levels, the default matrix
MIN_SIZE = _V4_START.size + 4 + _LEVELS_INT.size + _GAINS.size + _NINE.size + 2 + _STAGE_V4.size + 1 + 4
_SOURCE_ENCODING_RE = re.compile(r"^[A-Za-z0-9_.+-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]{32}$")


class BitstreamError(ValueError):
    """A byte string is not a valid rawdiff bitstream (or a header is not writable)."""


class ModelMismatchError(BitstreamError):
    """The bitstream was made with another model than the one that should decode it."""

    def __init__(self, found: str, expected: str, also: Sequence[str] = ()):
        self.found = found
        self.expected = expected
        super().__init__(
            "model mismatch: the bitstream was encoded with model %s, but the loaded model is %s%s"
            % (found, expected, " (which also decodes the streams of %s)" % ", ".join(also) if also else "")
        )


def make_model_id(data: bytes) -> str:
    """A model id from content: the first 16 bytes of SHA-256 of ``data`` as 32 hex chars."""
    return hashlib.sha256(bytes(data)).hexdigest()[: 2 * MODEL_ID_BYTES]


def _normalize_model_id(model_id: Any) -> str:
    if isinstance(model_id, (bytes, bytearray)):
        if len(model_id) != MODEL_ID_BYTES:
            raise BitstreamError("model_id must be %d bytes, got %d" % (MODEL_ID_BYTES, len(model_id)))
        return bytes(model_id).hex()
    if not isinstance(model_id, str):
        raise BitstreamError("model_id must be a string of 32 hex digits, got %r" % (model_id,))
    text = model_id.strip().lower()
    if not _HEX_RE.match(text):
        raise BitstreamError("model_id must be 32 hex digits (a 128-bit digest), got %r" % (model_id,))
    return text


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise BitstreamError("%s must be an integer, got %r" % (name, value))
    try:
        return operator.index(value)  # int and numpy integers, not floats
    except TypeError:
        raise BitstreamError("%s must be an integer, got %r" % (name, value)) from None


def _as_float(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BitstreamError("%s must be a number, got %r" % (name, value)) from None
    if not math.isfinite(out):
        raise BitstreamError("%s must be finite, got %r" % (name, value))
    return out


def _f32(value: float) -> float:
    """``value`` as float32 stores it (so a header reads back equal to the one written)."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _flat_floats(value: Any, name: str, count: int) -> Tuple[float, ...]:
    if isinstance(value, (str, bytes)):
        raise BitstreamError("%s must be %d numbers, got %r" % (name, count, value))
    try:
        rows = list(value)
        flat = []
        for row in rows:
            if isinstance(row, (str, bytes)):
                raise TypeError
            try:
                flat.extend(list(row))
            except TypeError:
                flat.append(row)
    except TypeError:
        raise BitstreamError("%s must be %d numbers, got %r" % (name, count, value)) from None
    if len(flat) != count:
        raise BitstreamError("%s must be %d numbers, got %d" % (name, count, len(flat)))
    out = []
    for v in flat:
        f = _as_float(v, name)
        if abs(f) > 3.0e38:
            raise BitstreamError("%s value %r does not fit a float32" % (name, v))
        out.append(_f32(f))
    return tuple(out)


def _wb_gains(value: Any) -> Tuple[float, ...]:
    gains = _flat_floats(value, "wb_gains", 3)
    if min(gains) <= 0:
        raise BitstreamError("wb_gains must be positive, got %r" % (list(gains),))
    return gains


def _color_matrix(value: Any) -> Tuple[float, ...]:
    m = _flat_floats(value, "color_matrix", 9)
    det = (m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
           + m[2] * (m[3] * m[7] - m[4] * m[6]))
    scale = max(abs(v) for v in m)
    if scale == 0 or abs(det) < 1e-6 * scale ** 3:
        raise BitstreamError("color_matrix %r is singular (determinant %.3g)"
                             % ([list(m[i:i + 3]) for i in (0, 3, 6)], det))
    return m


@dataclass(frozen=True)
class Header:
    """Everything about one compressed frame except the payload.

    Attributes:
        model_id: 32 lower-case hex chars (a 128-bit digest of the model's content); bytes
            of length 16 and upper-case hex are accepted and normalised.
        height, width: the source frame size in pixels.
        cfa: ``"RGGB"``, ``"BGGR"``, ``"GRBG"`` or ``"GBRG"``.
        source_encoding: how the source arrived, e.g. ``"bayer_rggb16"`` or ``"raw12p"``
            (``""``: unknown).
        black_level: a scalar or 4 values (2x2 tile, row-major); stored as a 4-tuple.
        white_level: the saturation value.
        code_height, code_width: the grid of codebook indices.
        codebook_size: K; indices are in ``[0, K)``.
        entropy_model: which prior coded the indices: ``"uniform"``, ``"unigram"`` or ``"context"``.
        wb_gains: the white-balance gains (R, G, B) of the frame, as the reference ISP applies
            them (stored as float32: the value read back is the value written).
        color_matrix: 9 values (or 3x3), row-major, white-balanced camera RGB to linear sRGB.
        wb_source: ``"as_shot"`` (the frame's gains) or ``"gray_world"`` (the encoder's estimate).
        matrix_source: ``"frame"`` (the frame's matrix) or ``"default"`` (the ISP's identity).
        tone_curve: the ISP's tone curve, ``"smoothstep"`` or ``"none"``.
        colour_stats: 9 numbers, the mean and covariance of the coded signal over the code
            cells (:mod:`rawdiff.codec.colour_stats`); all zeros: none measured.
        payload_length: set by :func:`unpack`/:func:`read_header`; :func:`pack` checks it if set.
        stages: per quantizer stage coded, ``(scale, codebook_size, length)``; None: one stage
            of scale 1 and ``codebook_size`` holding the whole payload (set by :func:`pack`).
        means: per mean layer coded (:mod:`rawdiff.codec.cell_means`), ``(after_stage,
            exponent, length)``: the cells' plane means, sent after the stage ``after_stage``.
        detail: the frame's detail statistics (:mod:`rawdiff.codec.detail_stats`), 1 to
            :data:`MAX_DETAIL` integers in 0..255, or none (``()``).
        adapt: per stage coded, the strength exponent (0..24), pool weight (0..9), parent
            level (0..9, not above a pool weight; 0 in the first stage) and aging (0..12) of its
            adaptive coding (:mod:`rawdiff.codec.adaptive`; a pair: neither of the last two, a
            triple: no aging), or ``()``: the prior's tables as they are. Needs ``stages``.
        version: the format version: None (default) picks 9 for a header with a stage whose
            coding ages its counts, else 8 for one with a stage coded
            with the parent level, else 7 for one with adaptive coding, else 6 for one with
            detail statistics, 5 for one with mean layers, else 4; 3 is written to cut version
            3 files.
    """

    model_id: str
    height: int
    width: int
    cfa: str
    source_encoding: str
    black_level: Union[float, Tuple[float, float, float, float]]
    white_level: float
    code_height: int
    code_width: int
    codebook_size: int
    entropy_model: str = "context"
    wb_gains: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    color_matrix: Tuple[float, ...] = IDENTITY_MATRIX
    wb_source: str = "gray_world"
    matrix_source: str = "default"
    tone_curve: str = "smoothstep"
    colour_stats: Tuple[float, ...] = (0.0,) * 9
    payload_length: Optional[int] = None
    stages: Optional[Tuple[Tuple[int, int, int], ...]] = None
    means: Tuple[Tuple[int, int, int], ...] = ()
    version: Optional[int] = None
    detail: Tuple[int, ...] = ()
    adapt: Tuple[Tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("model_id", _normalize_model_id(self.model_id))
        for name, hi in (("height", 0xFFFFFFFF), ("width", 0xFFFFFFFF),
                         ("code_height", 0xFFFF), ("code_width", 0xFFFF)):
            value = _as_int(getattr(self, name), name)
            if not 1 <= value <= hi:
                raise BitstreamError("%s must be in [1, %d], got %d" % (name, hi, value))
            put(name, value)
        if self.code_height > self.height or self.code_width > self.width:
            raise BitstreamError(
                "code grid %dx%d is inconsistent with a %dx%d frame (larger than the frame)"
                % (self.code_height, self.code_width, self.height, self.width)
            )
        cfa = str(self.cfa).upper() if isinstance(self.cfa, str) else self.cfa
        if cfa not in CFA_CODES:
            raise BitstreamError("cfa %r is not one of %s" % (self.cfa, ", ".join(CFA_CODES)))
        put("cfa", cfa)
        enc = self.source_encoding
        if not isinstance(enc, str) or len(enc) > MAX_SOURCE_ENCODING or not _SOURCE_ENCODING_RE.match(enc):
            raise BitstreamError(
                "source_encoding must be 0..%d characters of [A-Za-z0-9_.+-], got %r"
                % (MAX_SOURCE_ENCODING, enc)
            )
        black = self.black_level
        if isinstance(black, (str, bytes)):
            raise BitstreamError("black_level must be a number or 4 numbers, got %r" % (black,))
        try:
            values = list(black)
        except TypeError:  # a scalar
            values = [black]
        if len(values) == 1:
            values = values * 4
        if len(values) != 4:
            raise BitstreamError("black_level must be a scalar or 4 values, got %d values" % len(values))
        black4 = tuple(_as_float(v, "black_level") + 0.0 for v in values)  # + 0.0: no -0.0
        put("black_level", black4)
        white = _as_float(self.white_level, "white_level") + 0.0
        if white <= max(black4):
            raise BitstreamError("white_level %r must exceed the black level %r" % (white, max(black4)))
        put("white_level", white)
        k = _as_int(self.codebook_size, "codebook_size")
        if not MIN_CODEBOOK_SIZE <= k <= MAX_CODEBOOK_SIZE:
            raise BitstreamError(
                "codebook_size must be in [%d, %d], got %d" % (MIN_CODEBOOK_SIZE, MAX_CODEBOOK_SIZE, k)
            )
        put("codebook_size", k)
        if self.entropy_model not in ENTROPY_MODELS:
            raise BitstreamError(
                "entropy_model %r is not one of %s" % (self.entropy_model, ", ".join(ENTROPY_MODELS))
            )
        put("wb_gains", _wb_gains(self.wb_gains))
        put("color_matrix", _color_matrix(self.color_matrix))
        stats = _flat_floats(self.colour_stats, "colour_stats", 9)
        if min(stats[3], stats[6], stats[8]) < 0:
            raise BitstreamError("colour_stats variances must be >= 0, got %r" % ([stats[3], stats[6], stats[8]],))
        put("colour_stats", stats)
        for name, names in (("wb_source", WB_SOURCES), ("matrix_source", MATRIX_SOURCES),
                            ("tone_curve", TONE_CURVES)):
            if getattr(self, name) not in names:
                raise BitstreamError("%s %r is not one of %s" % (name, getattr(self, name), ", ".join(names)))
        if self.payload_length is not None:
            length = _as_int(self.payload_length, "payload_length")
            if not 0 <= length <= 0xFFFFFFFF:
                raise BitstreamError("payload_length must be in [0, 2**32), got %d" % length)
            put("payload_length", length)
        if self.stages is not None:
            put("stages", _stages(self.stages, k, None))
        means = _means(self.means, len(self.stages) if self.stages is not None else 1)
        put("means", means)
        if self.stages is not None and self.payload_length is not None:
            total = sum(e[2] for e in self.stages) + sum(n for _, _, n in means)
            if total != self.payload_length:
                raise BitstreamError("the stages' lengths add up to %d bytes, the payload has %d"
                                     % (total, self.payload_length))
        detail = _detail(self.detail)
        put("detail", detail)
        adapt = _adapt(self.adapt, self.stages)
        put("adapt", adapt)
        auto = _auto_version(adapt, detail, means)
        version = auto if self.version is None else _as_int(self.version, "version")
        if means and version < 5:
            raise BitstreamError("mean layers need format version 5 or later, the header says %d" % version)
        if detail and version < 6:
            raise BitstreamError("detail statistics need format version 6 or later, the header says %d" % version)
        if adapt and version < 7:
            raise BitstreamError("adaptive coding needs format version 7, 8 or 9, the header says %d" % version)
        if version in (5, 6, 7, 8, 9) and version != auto:
            raise BitstreamError("format version %d is for streams with %s; this one is version %d" % (
                version, {5: "mean layers", 6: "detail statistics", 7: "adaptive coding",
                          8: "adaptive coding with a parent level", 9: "adaptive coding with aging"}[version], auto))
        put("version", version)

    @property
    def index_bits(self) -> int:
        """Bits of a fixed-width index: ceil(log2(codebook_size))."""
        return (self.codebook_size - 1).bit_length()

    @property
    def code_shape(self) -> Tuple[int, int]:
        return self.code_height, self.code_width

    @property
    def quality(self) -> int:
        """The number of quantizer stages coded."""
        return len(self.stages) if self.stages is not None else 1

    def stage_shapes(self) -> List[Tuple[int, int]]:
        """The code grid of each stage (the code grid divided by its scale, rounded up)."""
        scales = [st[0] for st in self.stages] if self.stages is not None else [1]
        return [(-(-self.code_height // sc), -(-self.code_width // sc)) for sc in scales]

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able dict (``rawdiff info``); :meth:`from_dict` reads it back."""
        out = {
            "format_version": self.version,
            "model_id": self.model_id,
            "height": self.height,
            "width": self.width,
            "cfa": self.cfa,
            "source_encoding": self.source_encoding,
            "black_level": list(self.black_level),
            "white_level": self.white_level,
            "code_height": self.code_height,
            "code_width": self.code_width,
            "codebook_size": self.codebook_size,
            "index_bits": self.index_bits,
            "entropy_model": self.entropy_model,
            "wb_gains": list(self.wb_gains),
            "wb_source": self.wb_source,
            "color_matrix": [list(self.color_matrix[i:i + 3]) for i in (0, 3, 6)],
            "matrix_source": self.matrix_source,
            "tone_curve": self.tone_curve,
            "colour_stats": {"mean": list(self.colour_stats[:3]), "covariance": list(self.colour_stats[3:])},
            "payload_length": self.payload_length,
            "quality": self.quality,
            "stages": ([{"scale": sc, "codebook_size": k, "bytes": n} for sc, k, n in self.stages]
                       if self.stages is not None else None),
        }
        if self.means:
            out["means"] = [{"after_stage": a, "exponent": e, "bytes": n} for a, e, n in self.means]
        if self.detail:
            out["detail"] = list(self.detail)
        if self.adapt:
            for entry, params in zip(out["stages"], self.adapt):
                entry["adapt"] = list(params[:_adapt_fields(self.version)])
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Header:
        try:
            return cls(
                model_id=d["model_id"], height=d["height"], width=d["width"], cfa=d["cfa"],
                source_encoding=d["source_encoding"], black_level=d["black_level"],
                white_level=d["white_level"], code_height=d["code_height"],
                code_width=d["code_width"], codebook_size=d["codebook_size"],
                entropy_model=d.get("entropy_model", "context"),
                wb_gains=d["wb_gains"], color_matrix=d["color_matrix"], wb_source=d["wb_source"],
                matrix_source=d["matrix_source"], tone_curve=d.get("tone_curve", "smoothstep"),
                colour_stats=list(d["colour_stats"]["mean"]) + list(d["colour_stats"]["covariance"]),
                payload_length=d.get("payload_length"),
                stages=(tuple((st["scale"], st["codebook_size"], st["bytes"]) for st in d["stages"])
                        if d.get("stages") else None),
                means=tuple((m["after_stage"], m["exponent"], m["bytes"]) for m in d.get("means") or ()),
                version=d.get("format_version"), detail=d.get("detail") or (),
                adapt=tuple(tuple(st["adapt"]) for st in d["stages"] if "adapt" in st) if d.get("stages") else (),
            )
        except (KeyError, TypeError) as exc:
            raise BitstreamError("header dict lacks the field %s" % exc) from None


def _stages(value: Any, codebook_size: int, payload_length: Optional[int]) -> Tuple[Tuple[int, int, int], ...]:
    try:
        entries = [tuple(_as_int(v, "stages") for v in entry) for entry in value]
    except TypeError:
        raise BitstreamError("stages must be (scale, codebook_size, length) per stage, got %r" % (value,)) from None
    if not 1 <= len(entries) <= MAX_STAGES:
        raise BitstreamError("a bitstream codes 1 to %d stages, got %d" % (MAX_STAGES, len(entries)))
    for i, entry in enumerate(entries):
        if len(entry) != 3:
            raise BitstreamError("stage %d must be (scale, codebook_size, length), got %r" % (i + 1, entry))
        scale, k, n = entry
        if scale not in STAGE_SCALES:
            raise BitstreamError("stage %d: scale %d is not one of %s" % (i + 1, scale, STAGE_SCALES))
        if i and scale > entries[i - 1][0]:
            raise BitstreamError("stage %d: scale %d is coarser than the stage before it (%d)"
                                 % (i + 1, scale, entries[i - 1][0]))
        if not MIN_CODEBOOK_SIZE <= k <= MAX_CODEBOOK_SIZE:
            raise BitstreamError("stage %d: codebook_size %d is not in [%d, %d]"
                                 % (i + 1, k, MIN_CODEBOOK_SIZE, MAX_CODEBOOK_SIZE))
        if not 0 <= n <= 0xFFFFFFFF:
            raise BitstreamError("stage %d: length %d is not in [0, 2**32)" % (i + 1, n))
    if entries[0][1] != codebook_size:
        raise BitstreamError("codebook_size %d is not the first stage's (%d)" % (codebook_size, entries[0][1]))
    if payload_length is not None and sum(e[2] for e in entries) != payload_length:
        raise BitstreamError("the stages' lengths add up to %d bytes, the payload has %d"
                             % (sum(e[2] for e in entries), payload_length))
    return tuple(entries)  # type: ignore[return-value]


def _detail(value: Any) -> Tuple[int, ...]:
    try:
        values = tuple(_as_int(v, "detail") for v in value)
    except TypeError:
        raise BitstreamError("detail must be a sequence of integers, got %r" % (value,)) from None
    if len(values) > MAX_DETAIL:
        raise BitstreamError("detail holds %d values, at most %d" % (len(values), MAX_DETAIL))
    if any(not 0 <= v <= 0xFF for v in values):
        raise BitstreamError("detail values must be in 0..255, got %r" % (list(values),))
    return values


def _auto_version(adapt: Sequence[Tuple[int, int, int, int]], detail: Sequence[int], means: Sequence) -> int:
    """The lowest version that holds a stream with these adaptive parameters, detail
    statistics and mean layers: what :func:`pack` writes, and so what encoding writes."""
    return (9 if any(p[3] for p in adapt) else 8 if any(p[2] for p in adapt) else 7 if adapt
            else 6 if detail else 5 if means else 4)


def _adapt(value: Any, stages: Optional[Sequence]) -> Tuple[Tuple[int, int, int, int], ...]:
    """Each stage's (strength, pool, parent level, aging); a (strength, pool) pair has neither
    of the last two, a triple no aging."""
    try:
        values = tuple(tuple(_as_int(v, "adapt") for v in params) for params in value)
    except TypeError:
        raise BitstreamError("adapt must be a (strength, pool, parent level, aging) tuple per stage, got %r"
                             % (value,)) from None
    if not values:
        return ()
    if stages is None:
        raise BitstreamError("adaptive coding needs the stage table (stages)")
    if len(values) != len(stages):
        raise BitstreamError("adapt holds %d entries for %d stages" % (len(values), len(stages)))
    full = tuple(p + (0,) * (4 - len(p)) if 2 <= len(p) <= 4 else p for p in values)
    if any(len(p) != 4 or not all(0 <= v <= top for v, top in zip(p, MAX_ADAPT)) or 0 < p[1] < p[2]
           for p in full):
        raise BitstreamError("adaptive parameters must be (strength 0..%d, pool 0..%d[, parent level 0..%d, "
                             "not above a pool weight[, aging 0..%d]]) per stage, got %r"
                             % (MAX_ADAPT + ([list(p) for p in values],)))
    if full[0][2]:
        raise BitstreamError("stage 1 is coded with the parent level %d, but the first stage has no parent"
                             % full[0][2])
    return full  # type: ignore[return-value]


def _means(value: Any, stages: int) -> Tuple[Tuple[int, int, int], ...]:
    try:
        entries = [tuple(_as_int(v, "means") for v in entry) for entry in value]
    except TypeError:
        raise BitstreamError("means must be (after_stage, exponent, length) per layer, got %r" % (value,)) from None
    if entries and stages + len(entries) > MAX_STAGES:
        raise BitstreamError("a bitstream codes at most %d stages and mean layers, got %d"
                             % (MAX_STAGES, stages + len(entries)))
    for i, entry in enumerate(entries):
        if len(entry) != 3:
            raise BitstreamError("mean layer %d must be (after_stage, exponent, length), got %r" % (i + 1, entry))
        after, exponent, n = entry
        if not 1 <= after <= stages:
            raise BitstreamError("mean layer %d follows stage %d: the bitstream codes stages 1..%d"
                                 % (i + 1, after, stages))
        if not 1 <= exponent <= MAX_MEAN_EXPONENT:
            raise BitstreamError("mean layer %d: exponent %d is not in [1, %d]" % (i + 1, exponent, MAX_MEAN_EXPONENT))
        if i and (after < entries[i - 1][0] or exponent <= entries[i - 1][1]):
            raise BitstreamError("mean layer %d: layers follow the stages in order with increasing exponents"
                                 % (i + 1))
        if not 0 <= n <= 0xFFFFFFFF:
            raise BitstreamError("mean layer %d: length %d is not in [0, 2**32)" % (i + 1, n))
    return tuple(entries)  # type: ignore[return-value]


def table_order(header: Header) -> List[Tuple[str, int]]:
    """The entries of the stage table in stream order: ``("stage", i)`` and ``("means", j)``
    (0-based), each mean layer right after the stage it follows."""
    stages = len(header.stages) if header.stages is not None else 1
    out: List[Tuple[str, int]] = []
    for i in range(stages):
        out.append(("stage", i))
        out += [("means", j) for j, m in enumerate(header.means) if m[0] == i + 1]
    return out


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise BitstreamError("a bitstream is bytes, got str")
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise BitstreamError("a bitstream is bytes, got %s" % type(data).__name__) from None


def pack(header: Header, payload: Union[bytes, Sequence[bytes]], means: Sequence[bytes] = ()) -> bytes:
    """The bitstream of one frame: header, stage table, payload and CRC32. ``payload`` is the
    stages' entropy-coded indices, one byte string per stage of ``header.stages`` (the
    scales and codebook sizes; the lengths are taken from the payloads), or one byte string
    for a header without stages (one stage of scale 1); ``means`` the coded mean layers of
    ``header.means`` (the lengths taken from them too)."""
    if not isinstance(header, Header):
        raise BitstreamError("pack() needs a Header, got %s" % type(header).__name__)
    if isinstance(payload, (list, tuple)):
        chunks = [_as_bytes(p) for p in payload]
    else:
        chunks = [_as_bytes(payload)]
    if header.stages is None:
        layout = [(1, header.codebook_size)]
    else:
        layout = [(sc, k) for sc, k, _ in header.stages]
    if len(chunks) != len(layout):
        raise BitstreamError("%d stage payloads for a header of %d stages" % (len(chunks), len(layout)))
    stages = _stages([(sc, k, len(c)) for (sc, k), c in zip(layout, chunks)], header.codebook_size, None)
    mean_chunks = [_as_bytes(p) for p in means]
    if len(mean_chunks) != len(header.means):
        raise BitstreamError("%d mean layer payloads for a header of %d mean layers"
                             % (len(mean_chunks), len(header.means)))
    mean_entries = tuple((a, e, len(c)) for (a, e, _), c in zip(header.means, mean_chunks))
    declared = header.payload_length
    header = replace(header, stages=stages, means=mean_entries, payload_length=None)
    payload = b"".join(chunks[i] if kind == "stage" else mean_chunks[i] for kind, i in table_order(header))
    if header.version not in WRITABLE_VERSIONS:
        raise BitstreamError("cannot write format version %d (this build writes versions 9, 8, 7, 6, 5 and 4, and 3 to "
                             "cut version 3 files)" % header.version)
    if declared is not None and declared != len(payload):
        raise BitstreamError("header.payload_length is %d but the payload has %d bytes" % (declared, len(payload)))
    if len(payload) > 0xFFFFFFFF:
        raise BitstreamError("payload of %d bytes is too large (max 2**32 - 1)" % len(payload))
    body = (_head_v3 if header.version == 3 else _head_v4)(header, stages, len(payload)) + payload
    return body + _CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


def _head_v3(header: Header, stages, payload_length: int) -> bytes:
    enc = header.source_encoding.encode("ascii")
    table = bytes([len(stages)]) + b"".join(_STAGE.pack(sc, k - 1, n) for sc, k, n in stages)
    return _FIXED.pack(
        MAGIC, 3, bytes.fromhex(header.model_id), header.height, header.width,
        CFA_CODES.index(header.cfa), ENTROPY_MODELS.index(header.entropy_model),
        header.code_height, header.code_width, header.codebook_size,
        *header.black_level, header.white_level, *header.wb_gains, *header.color_matrix,
        WB_SOURCES.index(header.wb_source), MATRIX_SOURCES.index(header.matrix_source),
        TONE_CURVES.index(header.tone_curve), *header.colour_stats, payload_length, len(enc),
    ) + enc + table


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _uint16_levels(levels: Sequence[float]) -> Optional[List[int]]:
    """The black and white levels as uint16 when every one is an integer in 0..65535 (their
    one form in version 4), else None (float64)."""
    if all(math.isfinite(v) and v == int(v) and 0 <= v <= 0xFFFF for v in levels):
        return [int(v) for v in levels]
    return None


def _head_v4(header: Header, stages, payload_length: int) -> bytes:
    if header.matrix_source == "default" and header.color_matrix != IDENTITY_MATRIX:
        raise BitstreamError("matrix_source 'default' is the identity matrix, got %r: set matrix_source 'frame'"
                             % ([list(header.color_matrix[i:i + 3]) for i in (0, 3, 6)],))
    levels = _uint16_levels(header.black_level + (header.white_level,))
    flags = (CFA_CODES.index(header.cfa) | ENTROPY_MODELS.index(header.entropy_model) << 2
             | WB_SOURCES.index(header.wb_source) << 4 | MATRIX_SOURCES.index(header.matrix_source) << 5
             | TONE_CURVES.index(header.tone_curve) << 6 | (FLOAT_LEVELS_FLAG if levels is None else 0))
    parts = [_V4_START.pack(MAGIC, header.version, bytes.fromhex(header.model_id), flags)]
    parts += [_varint(v) for v in (header.height, header.width, header.code_height, header.code_width)]
    parts.append(_LEVELS_INT.pack(*levels) if levels is not None
                 else _LEVELS_FLOAT.pack(*header.black_level, header.white_level))
    parts.append(_GAINS.pack(*header.wb_gains))
    if header.matrix_source == "frame":
        parts.append(_NINE.pack(*header.color_matrix))
    parts.append(_NINE.pack(*header.colour_stats))
    enc = header.source_encoding.encode("ascii")
    order = table_order(header)
    parts.append(bytes([len(enc)]) + enc)
    if header.version >= 6:
        parts.append(bytes([len(header.detail)] + list(header.detail)))
    parts.append(bytes([len(order)]))
    for kind, i in order:
        if kind == "stage":
            sc, k, n = stages[i]
            adapt = _adapt_to_bytes(header.adapt[i], header.version) if header.adapt else b""
            parts.append(_STAGE_V4.pack(sc, k - 1) + adapt + _varint(n))
        else:
            _, exponent, n = header.means[i]
            parts.append(bytes([MEAN_ENTRY_FLAG | exponent]) + _varint(n))
    return b"".join(parts)


def _check_prefix(buf: bytes) -> None:
    if len(buf) < len(MAGIC):
        if MAGIC.startswith(buf) and buf:
            raise BitstreamError(
                "truncated bitstream: expected at least %d bytes, got %d" % (MIN_SIZE, len(buf))
            )
        raise BitstreamError("not a rawdiff bitstream (%d bytes, no magic %r)" % (len(buf), MAGIC))
    if buf[:4] != MAGIC:
        raise BitstreamError("not a rawdiff bitstream (bad magic %r, expected %r)" % (buf[:4], MAGIC))
    if len(buf) < _PREFIX.size:
        raise BitstreamError(
            "truncated bitstream: expected at least %d bytes, got %d" % (MIN_SIZE, len(buf))
        )
    _, version = _PREFIX.unpack_from(buf, 0)
    if version not in SUPPORTED_VERSIONS:
        reads = "version%s %s" % ("s" if len(SUPPORTED_VERSIONS) > 1 else "",
                                  ", ".join(str(v) for v in SUPPORTED_VERSIONS))
        why = (": version 1 carries no colour parameters; encode the RAW frame again"
               if version < min(SUPPORTED_VERSIONS) else "")
        raise BitstreamError("unsupported bitstream format version %d (this build reads %s)%s"
                             % (version, reads, why))


def _parse(buf: bytes, verify: bool) -> Tuple[Header, int]:
    """Parse and check; returns the header and the offset of the payload."""
    _check_prefix(buf)
    if _PREFIX.unpack_from(buf, 0)[1] >= 4:
        return _parse_v4(buf, verify)
    return _parse_v3(buf, verify)


def _check_length_and_crc(buf: bytes, start: int, payload_length: int, verify: bool) -> None:
    total = start + payload_length + _CRC.size
    if len(buf) < (total if verify else start):
        raise BitstreamError(
            "truncated bitstream: expected %d bytes (header %d, payload %d, CRC 4), got %d"
            % (total, start, payload_length, len(buf))
        )
    if verify:
        if len(buf) > total:
            raise BitstreamError(
                "%d bytes of trailing garbage after the CRC (expected %d bytes, got %d)"
                % (len(buf) - total, total, len(buf))
            )
        (stored,) = _CRC.unpack_from(buf, total - _CRC.size)
        computed = zlib.crc32(buf[: total - _CRC.size]) & 0xFFFFFFFF
        if stored != computed:
            raise BitstreamError(
                "CRC mismatch: stored 0x%08x, computed 0x%08x; the bitstream is corrupted" % (stored, computed)
            )


def _check_codes(**codes: int) -> None:
    """Each code (keyword: the field) an index into its table of :data:`_CODE_TABLES`."""
    for name, code in codes.items():
        names = _CODE_TABLES[name]
        if code >= len(names):
            raise BitstreamError("unknown %s code %d (known: %s)" % (
                name.replace("entropy_model", "entropy model"), code,
                ", ".join("%d=%s" % kv for kv in enumerate(names))))


def _parse_v3(buf: bytes, verify: bool) -> Tuple[Header, int]:
    """Versions 2 and 3 (fixed offsets; version 2 without the stage table)."""
    if len(buf) < HEADER_FIXED_SIZE:
        raise BitstreamError(
            "truncated bitstream: expected at least %d bytes, got %d" % (HEADER_FIXED_SIZE + 4, len(buf))
        )
    fields = _FIXED.unpack_from(buf, 0)
    (_, version, model_id, height, width, cfa_code, entropy_code, code_h, code_w, k) = fields[:10]
    black = fields[10:14]
    white = fields[14]
    gains, matrix = fields[15:18], fields[18:27]
    wb_code, matrix_code, tone_code = fields[27:30]
    stats = fields[30:39]
    payload_length, enc_len = fields[39:41]
    if enc_len > MAX_SOURCE_ENCODING:
        raise BitstreamError("source_encoding length %d is not in [0, %d]" % (enc_len, MAX_SOURCE_ENCODING))
    table = HEADER_FIXED_SIZE + enc_len
    start = table
    raw_stages: Optional[List[Tuple[int, int, int]]] = None
    if version >= 3:
        if len(buf) < table + 1:
            raise BitstreamError("truncated bitstream: expected at least %d bytes, got %d" % (table + 1, len(buf)))
        count = buf[table]
        if not 1 <= count <= MAX_STAGES:
            raise BitstreamError("the stage table declares %d stages (1..%d)" % (count, MAX_STAGES))
        start = table + 1 + count * _STAGE.size
        if len(buf) < start:
            raise BitstreamError("truncated bitstream: expected at least %d bytes (the stage table), got %d"
                                 % (start, len(buf)))
        raw_stages = [_STAGE.unpack_from(buf, table + 1 + i * _STAGE.size) for i in range(count)]
        raw_stages = [(sc, km1 + 1, n) for sc, km1, n in raw_stages]
    _check_length_and_crc(buf, start, payload_length, verify)
    _check_codes(cfa=cfa_code, entropy_model=entropy_code, wb_source=wb_code, matrix_source=matrix_code,
                 tone_curve=tone_code)
    try:
        enc = buf[HEADER_FIXED_SIZE:table].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("source_encoding is not ASCII: %r" % buf[HEADER_FIXED_SIZE:table]) from None
    header = Header(
        model_id=model_id, height=height, width=width, cfa=CFA_CODES[cfa_code],
        source_encoding=enc, black_level=black, white_level=white, code_height=code_h,
        code_width=code_w, codebook_size=k, entropy_model=ENTROPY_MODELS[entropy_code],
        wb_gains=gains, color_matrix=matrix, wb_source=WB_SOURCES[wb_code],
        matrix_source=MATRIX_SOURCES[matrix_code], tone_curve=TONE_CURVES[tone_code],
        colour_stats=stats, payload_length=payload_length, version=version,
        stages=raw_stages if raw_stages is not None else ((1, k, payload_length),),
    )
    return header, start


class _Cursor:
    """Reads a version 4 header front to back; running out of bytes is a truncation error
    naming what was being read."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def take(self, size: int, what: str) -> int:
        at, end = self.pos, self.pos + size
        if len(self.buf) < end:
            raise BitstreamError("truncated bitstream: expected at least %d bytes (%s), got %d"
                                 % (end, what, len(self.buf)))
        self.pos = end
        return at

    def varint(self, what: str) -> int:
        value = 0
        for i in range(_MAX_VARINT):
            byte = self.buf[self.take(1, what)]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and not byte:
                    raise BitstreamError("%s is not written in the shortest form" % what)
                if value > 0xFFFFFFFF:
                    raise BitstreamError("%s %d is more than 2**32 - 1" % (what, value))
                return value
        raise BitstreamError("%s runs over %d bytes" % (what, _MAX_VARINT))


def _parse_v4(buf: bytes, verify: bool) -> Tuple[Header, int]:
    cur = _Cursor(buf)
    _, version, model_id, flags = _V4_START.unpack_from(buf, cur.take(_V4_START.size, "the header"))
    height, width, code_h, code_w = (cur.varint(name) for name in ("height", "width", "code_height", "code_width"))
    if flags & FLOAT_LEVELS_FLAG:
        levels = _LEVELS_FLOAT.unpack_from(buf, cur.take(_LEVELS_FLOAT.size, "the black and white levels"))
    else:
        levels = _LEVELS_INT.unpack_from(buf, cur.take(_LEVELS_INT.size, "the black and white levels"))
    gains = _GAINS.unpack_from(buf, cur.take(_GAINS.size, "the white-balance gains"))
    matrix_code = flags >> 5 & 1
    matrix = (_NINE.unpack_from(buf, cur.take(_NINE.size, "the colour matrix"))
              if MATRIX_SOURCES[matrix_code] == "frame" else IDENTITY_MATRIX)
    stats = _NINE.unpack_from(buf, cur.take(_NINE.size, "the colour statistics"))
    enc_len = buf[cur.take(1, "the source_encoding's length")]
    if enc_len > MAX_SOURCE_ENCODING:
        raise BitstreamError("source_encoding length %d is not in [0, %d]" % (enc_len, MAX_SOURCE_ENCODING))
    enc_at = cur.take(enc_len, "the source_encoding")
    detail: Tuple[int, ...] = ()
    if version >= 6:
        n_detail = buf[cur.take(1, "the detail statistics' count")]
        least = 1 if version == 6 else 0
        if not least <= n_detail <= MAX_DETAIL:
            raise BitstreamError("the header declares %d bytes of detail statistics (%d..%d)"
                                 % (n_detail, least, MAX_DETAIL))
        at = cur.take(n_detail, "the detail statistics")
        detail = tuple(buf[at:at + n_detail])
    count = buf[cur.take(1, "the stage table")]
    if not 1 <= count <= MAX_STAGES:
        raise BitstreamError("the stage table declares %d stages (1..%d)" % (count, MAX_STAGES))
    raw_stages: List[Tuple[int, int, int]] = []
    raw_means: List[Tuple[int, int, int]] = []
    raw_adapt: List[Tuple[int, ...]] = []
    for i in range(count):
        first = buf[cur.take(1, "the stage table")]
        if first & MEAN_ENTRY_FLAG:
            if version < 5:
                raise BitstreamError("stage table entry %d is a mean layer, which version %d does not have"
                                     % (i + 1, version))
            if not raw_stages:
                raise BitstreamError("stage table entry 1 is a mean layer: the first entry is a stage")
            raw_means.append((len(raw_stages), first & ~MEAN_ENTRY_FLAG,
                              cur.varint("mean layer %d's length" % (len(raw_means) + 1))))
            continue
        km1 = struct.unpack_from("<H", buf, cur.take(2, "the stage table"))[0]
        if version >= 7:
            n_adapt = _adapt_bytes(version)
            at = cur.take(n_adapt, "the stage table")
            raw_adapt.append(_adapt_from_bytes(buf[at:at + n_adapt], version))
        raw_stages.append((first, km1 + 1, cur.varint("stage %d's length" % (len(raw_stages) + 1))))
    if not raw_stages:  # pragma: no cover - the first entry is a stage
        raise BitstreamError("the stage table holds no stage")
    start = cur.pos
    payload_length = sum(n for _, _, n in raw_stages) + sum(n for _, _, n in raw_means)
    _check_length_and_crc(buf, start, payload_length, verify)
    if flags & FLOAT_LEVELS_FLAG and _uint16_levels(levels) is not None:
        raise BitstreamError("the black and white levels %r are integers in 0..65535 written as float64 "
                             "(they have one form: uint16)" % (list(levels),))
    entropy_code = flags >> 2 & 3
    _check_codes(entropy_model=entropy_code)  # the one field whose bits can name no entry
    try:
        enc = buf[enc_at:enc_at + enc_len].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("source_encoding is not ASCII: %r" % buf[enc_at:enc_at + enc_len]) from None
    header = Header(
        model_id=model_id, height=height, width=width, cfa=CFA_CODES[flags & 3],
        source_encoding=enc, black_level=levels[:4], white_level=levels[4], code_height=code_h,
        code_width=code_w, codebook_size=raw_stages[0][1], entropy_model=ENTROPY_MODELS[entropy_code],
        wb_gains=gains, color_matrix=matrix, wb_source=WB_SOURCES[flags >> 4 & 1],
        matrix_source=MATRIX_SOURCES[matrix_code], tone_curve=TONE_CURVES[flags >> 6 & 1],
        colour_stats=stats, payload_length=payload_length, version=version, stages=raw_stages,
        means=raw_means, detail=detail, adapt=raw_adapt,
    )
    return header, start


def unpack(data: bytes) -> Tuple[Header, bytes]:
    """Check a whole bitstream and split it into its header and payload."""
    buf = _as_bytes(data)
    header, start = _parse(buf, verify=True)
    return header, buf[start: start + header.payload_length]


def split_payload(header: Header, payload: bytes) -> Tuple[List[bytes], List[bytes]]:
    """The payload of :func:`unpack` split into the stages' and the mean layers' byte strings."""
    if header.stages is None:
        return [payload], []
    parts: Dict[Tuple[str, int], bytes] = {}
    at = 0
    for kind, i in table_order(header):
        n = header.stages[i][2] if kind == "stage" else header.means[i][2]
        parts[kind, i] = payload[at: at + n]
        at += n
    if at != len(payload):
        raise BitstreamError("the stages' lengths add up to %d bytes, the payload has %d" % (at, len(payload)))
    return ([parts["stage", i] for i in range(len(header.stages))],
            [parts["means", j] for j in range(len(header.means))])


def stage_payloads(header: Header, payload: bytes) -> List[bytes]:
    """The payload of :func:`unpack` split into the stages' byte strings."""
    return split_payload(header, payload)[0]


def truncate(data: bytes, quality: int) -> bytes:
    """The bitstream of the first ``quality`` stages of ``data``: byte for byte what encoding
    the frame with ``quality`` stages gives (see the module docstring). ``data`` is checked
    whole first; a bitstream of exactly ``quality`` stages comes back as it is, and asking
    for more stages than it has is an error."""
    header, payload = unpack(data)
    q = _as_int(quality, "quality")
    if not 1 <= q <= header.quality:
        raise BitstreamError("quality %d is not in [1, %d]: the bitstream has %d stage%s"
                             % (q, header.quality, header.quality, "s" if header.quality > 1 else ""))
    if header.version < 3:
        raise BitstreamError("a version %d bitstream has one stage; it cannot be cut" % header.version)
    if q == header.quality:
        return _as_bytes(data)
    chunks, mean_chunks = split_payload(header, payload)
    kept = tuple(header.stages[:q])  # type: ignore[index]
    means = tuple(m for m in header.means if m[0] <= q)
    cut = replace(header, stages=kept, means=means, payload_length=None, adapt=header.adapt[:q],
                  version=(header.version if header.version == 3 else None))
    return pack(cut, chunks[:q], mean_chunks[: len(means)])


def _entry_size(version: int, length: int, mean: bool = False) -> int:
    """Bytes of one entry in the stage table of a bitstream of ``version``."""
    if version == 3:
        return _STAGE.size
    return (1 if mean else _STAGE_V4.size + _adapt_bytes(version)) + len(_varint(length))


def _adapt_bytes(version: int) -> int:
    """Bytes of a stage's adaptive parameters in a stage table entry: (e, g) in version 7,
    (e, g, m) in version 8, (e, g, m | h << 4) in version 9."""
    return 3 if version >= 8 else 2 if version == 7 else 0


def _adapt_fields(version: int) -> int:
    """How many of (e, g, m, h) a stream of ``version`` carries: its bytes' worth, and h in
    version 9's third byte beside m."""
    return _adapt_bytes(version) + (version >= 9)


def _adapt_to_bytes(params: Tuple[int, int, int, int], version: int) -> bytes:
    e, g, m, h = params
    return bytes((e, g, m | h << 4) if version >= 9 else (e, g, m)[:_adapt_bytes(version)])


def _adapt_from_bytes(raw: bytes, version: int) -> Tuple[int, ...]:
    """A stage's adaptive parameters as its entry holds them (checked by :class:`Header`)."""
    if version >= 9:
        return raw[0], raw[1], raw[2] & 0x0F, raw[2] >> 4
    return tuple(raw)


def truncated_sizes(header: Header, total: int) -> Dict[int, int]:
    """The size in bytes of the bitstream of ``total`` bytes with ``header`` cut to each quality
    1..header.quality (what :func:`truncate` would give), from the stage table alone."""
    stages = header.stages if header.stages is not None else ((1, header.codebook_size, total),)
    quality = len(stages)

    def table(version: int, q: int) -> int:  # the first q stages' entries and payloads, their layers'
        return (sum(n + _entry_size(version, n) for _, _, n in stages[:q])
                + sum(n + _entry_size(version, n, mean=True) for a, _, n in header.means if a <= q))

    def version_of(q: int) -> int:  # the version truncate writes the cut in
        if q == quality or header.version == 3:
            return header.version
        return _auto_version(header.adapt[:q], header.detail, [m for m in header.means if m[0] <= q])

    rest = int(total) - table(header.version, quality)  # everything but the stage table's entries and the payload
    return {q: rest + table(version_of(q), q) for q in range(1, quality + 1)}


def layout(data: bytes) -> Dict[str, Any]:
    """Where the parts of a bitstream lie, for fuzzing and tests: ``table`` (the offset of the
    stage count S), ``stages`` (the offset of each entry of the table, stages and mean layers,
    in :func:`table_order`), ``payload`` and ``crc``.
    Only the header is checked (as :func:`read_header` with ``verify=False``)."""
    buf = _as_bytes(data)
    header, start = _parse(buf, verify=False)
    if header.version < 3:
        raise BitstreamError("a version %d bitstream has no stage table" % header.version)
    sizes = [_entry_size(header.version, header.stages[i][2]) if kind == "stage"  # type: ignore[index]
             else _entry_size(header.version, header.means[i][2], mean=True) for kind, i in table_order(header)]
    entries, at = [], start - sum(sizes)
    for size in sizes:
        entries.append(at)
        at += size
    return {"table": start - sum(sizes) - 1, "stages": entries, "payload": start,
            "crc": start + (header.payload_length or 0)}


def read_header(data: bytes, verify: bool = True) -> Header:
    """The header of a bitstream (``rawdiff info``).

    With ``verify=True`` (default) the whole bitstream is checked as by :func:`unpack`
    (length and CRC); with ``verify=False`` a prefix holding the header is enough.
    """
    header, _ = _parse(_as_bytes(data), verify=verify)
    return header


def accepts_model(found: str, model_id: str, also: Sequence[str] = ()) -> bool:
    """True when codes of model ``found`` decode with model ``model_id``: the same model, or
    one of ``also`` (models whose streams it decodes: the same codes and prior). ``model_id``
    and ``also`` as model.json holds them (32 lowercase hex digits, checked when read)."""
    return found == model_id or found in also


def check_model(header: Header, model_id: str, also: Sequence[str] = ()) -> None:
    """Raise :class:`ModelMismatchError` unless ``header`` was made with ``model_id`` or one
    of ``also`` (:func:`accepts_model`)."""
    expected = _normalize_model_id(model_id)
    if not accepts_model(header.model_id, expected, also):
        raise ModelMismatchError(found=header.model_id, expected=expected, also=also)


__all__ = [
    "CFA_CODES", "ENTROPY_MODELS", "FORMAT_VERSION", "HEADER_FIXED_SIZE", "MAGIC", "MATRIX_SOURCES", "MAX_ADAPT",
    "MAX_STAGES", "MIN_SIZE", "SUPPORTED_VERSIONS", "TONE_CURVES", "WB_SOURCES", "WRITABLE_VERSIONS",
    "BitstreamError", "Header", "ModelMismatchError", "accepts_model", "check_model", "layout", "make_model_id", "pack",
    "read_header", "split_payload", "stage_payloads", "table_order", "truncate", "truncated_sizes", "unpack",
]
