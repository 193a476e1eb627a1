"""MIPI CSI-2 packed RAW10 / RAW12 pixel formats, as Linux V4L2 stores them.

The layouts are those of the V4L2 documentation, ``pixfmt-srggb10p``
(``V4L2_PIX_FMT_SRGGB10P``, 'pRAA' and its BGGR/GBRG/GRBG siblings) and
``pixfmt-srggb12p`` (``V4L2_PIX_FMT_SRGGB12P``, 'pRCC' ...). The CFA phase is not part
of the packing; it travels separately (``RawFrame.cfa``).

RAW10, 4 pixels in 5 bytes::

    byte 0  P0[9:2]    byte 1  P1[9:2]    byte 2  P2[9:2]    byte 3  P3[9:2]
    byte 4  P3[1:0] P2[1:0] P1[1:0] P0[1:0]      (bits 7..6, 5..4, 3..2, 1..0)

RAW12, 2 pixels in 3 bytes::

    byte 0  P0[11:4]   byte 1  P1[11:4]
    byte 2  P1[3:0] P0[3:0]                      (bits 7..4, 3..0)

Each line of ``width`` pixels packs into :func:`packed_line_bytes` bytes; a buffer may
pad every line to ``stride`` (V4L2's ``bytesperline``) bytes. Padding bytes are ignored
by :func:`unpack` and written as zeros by :func:`pack`.
"""

from __future__ import annotations

import operator
from typing import Dict, Optional, Union

import numpy as np

#: Packed format names and their bit depths.
FORMATS: Dict[str, int] = {"raw10p": 10, "raw12p": 12}

# bits -> (pixels per group, bytes per group)
_GROUPS: Dict[int, tuple] = {10: (4, 5), 12: (2, 3)}

Bits = Union[int, str]


def format_bits(fmt: Bits) -> int:
    """The bit depth of a packed format, given as a name (``"raw12p"``) or as 10 / 12."""
    if isinstance(fmt, str):
        name = fmt.strip().lower()
        if name in FORMATS:
            return FORMATS[name]
        raise ValueError(
            "format %r is not a packed CSI-2 format; known: %s" % (fmt, ", ".join(sorted(FORMATS)))
        )
    if isinstance(fmt, bool):
        raise ValueError("bits %r is not a supported packed bit depth (10 or 12)" % (fmt,))
    try:
        bits = operator.index(fmt)
    except TypeError:
        raise ValueError("bits %r is not a supported packed bit depth (10 or 12)" % (fmt,)) from None
    if bits not in _GROUPS:
        raise ValueError("bits %r is not a supported packed bit depth (10 or 12)" % (fmt,))
    return bits


def format_name(bits: Bits) -> str:
    """The format name (``"raw10p"`` / ``"raw12p"``) of a bit depth or name."""
    bits = format_bits(bits)
    return next(name for name, b in FORMATS.items() if b == bits)


def _size(name: str, value) -> int:
    if isinstance(value, bool):
        raise ValueError("%s must be a positive integer, got %r" % (name, value))
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError("%s must be a positive integer, got %r" % (name, value)) from None
    if value <= 0:
        raise ValueError("%s must be a positive integer, got %r" % (name, value))
    return value


def packed_line_bytes(width: int, bits: Bits) -> int:
    """Bytes of one packed line of ``width`` pixels without padding (width*5/4 or width*3/2)."""
    bits = format_bits(bits)
    width = _size("width", width)
    pixels, nbytes = _GROUPS[bits]
    if width % pixels:
        raise ValueError("width %d is not a multiple of %d, as RAW%d packing needs" % (width, pixels, bits))
    return width // pixels * nbytes


def _stride(stride: Optional[int], width: int, bits: int) -> int:
    line = packed_line_bytes(width, bits)
    if stride is None:
        return line
    stride = _size("stride", stride)
    if stride < line:
        raise ValueError(
            "stride %d is smaller than the %d bytes of a RAW%d line of width %d" % (stride, line, bits, width)
        )
    return stride


def packed_size(width: int, height: int, bits: Bits, stride: Optional[int] = None) -> int:
    """Bytes of a whole packed frame: ``stride * height``."""
    bits = format_bits(bits)
    height = _size("height", height)
    return _stride(stride, width, bits) * height


def unpack(data, width: int, height: int, bits: Bits, stride: Optional[int] = None) -> np.ndarray:
    """Unpack a V4L2 RAW10 / RAW12 packed buffer into a uint16 HxW mosaic.

    Args:
        data: the packed bytes (``bytes``, ``bytearray``, ``memoryview`` or a uint8 array),
            exactly ``stride * height`` of them.
        width, height: the frame size in pixels; ``width`` must be a multiple of 4 (RAW10)
            or 2 (RAW12).
        bits: 10 or 12, or a name from :data:`FORMATS`.
        stride: bytes per line including padding; default :func:`packed_line_bytes`.
    """
    bits = format_bits(bits)
    width = _size("width", width)
    height = _size("height", height)
    stride = _stride(stride, width, bits)
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ValueError("data must be bytes or a uint8 array, got a %s array" % data.dtype)
        buf = data.reshape(-1)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(data, dtype=np.uint8)
    else:
        raise TypeError("data must be bytes-like, got %s" % type(data).__name__)
    expected = stride * height
    if buf.size != expected:
        raise ValueError(
            "RAW%d data has %d bytes, expected %d for %dx%d (stride %d)"
            % (bits, buf.size, expected, width, height, stride)
        )
    pixels, nbytes = _GROUPS[bits]
    low = bits - 8
    groups = buf.reshape(height, stride)[:, : width // pixels * nbytes].reshape(height, -1, nbytes)
    high = groups[:, :, :pixels].astype(np.uint16) << low
    shifts = np.arange(pixels, dtype=np.uint16) * low
    lows = (groups[:, :, pixels:].astype(np.uint16) >> shifts) & ((1 << low) - 1)
    return (high | lows).reshape(height, width)


def pack(mosaic: np.ndarray, bits: Bits, stride: Optional[int] = None) -> bytes:
    """Pack an HxW integer mosaic into V4L2 RAW10 / RAW12 bytes; the inverse of :func:`unpack`.

    Values must lie in ``0 .. 2**bits - 1``; lines are padded with zeros to ``stride`` bytes.
    """
    bits = format_bits(bits)
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2:
        raise ValueError("mosaic must be 2-D (HxW), got shape %s" % (mosaic.shape,))
    if mosaic.size == 0:
        raise ValueError("mosaic is empty (shape %s)" % (mosaic.shape,))
    if mosaic.dtype.kind not in "ui":
        raise ValueError("mosaic must be an integer array, got %s" % mosaic.dtype)
    height, width = mosaic.shape
    stride = _stride(stride, width, bits)
    top = (1 << bits) - 1
    low_value, high_value = mosaic.min(), mosaic.max()
    if low_value < 0 or high_value > top:
        bad = low_value if low_value < 0 else high_value
        row, col = np.argwhere(mosaic == bad)[0]
        raise ValueError(
            "mosaic value %d at (row %d, col %d) is outside the %d-bit range 0..%d"
            % (bad, row, col, bits, top)
        )
    pixels, nbytes = _GROUPS[bits]
    low = bits - 8
    groups = mosaic.astype(np.uint16).reshape(height, -1, pixels)
    body = np.empty(groups.shape[:2] + (nbytes,), dtype=np.uint8)
    body[:, :, :pixels] = (groups >> low).astype(np.uint8)
    shifts = np.arange(pixels, dtype=np.uint16) * low
    body[:, :, pixels] = np.bitwise_or.reduce((groups & ((1 << low) - 1)) << shifts, axis=-1).astype(np.uint8)
    line = body.shape[1] * nbytes
    if stride == line:
        return body.tobytes()
    out = np.zeros((height, stride), dtype=np.uint8)
    out[:, :line] = body.reshape(height, line)
    return out.tobytes()
