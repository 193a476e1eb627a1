"""Resource limits of decoding, checked on the header before anything is allocated, and the
codec's other resource settings (decoding tiles, encoding strips).

    bytes --bitstream.unpack (lengths, CRC, fields)--> header
          --check_frame_size(header, max_pixels)--> FrameTooLargeError, or on to the
            entropy decoder, which allocates the code grid, and the networks

A bitstream of a few hundred bytes may declare a frame of 4 Gpixel; without a limit the
decoder would try to allocate and decode it (minutes of CPU and tens of GB). The limit is
a property of the decoding process (a node, a command), so it lives on the
:class:`rawdiff.codec.Codec` and every decode path (``parse``, ``decompress``,
``decompress_raw``) goes through it. The default is generous for real sensors: four
times the largest automotive sensor of the thesis (3868x2176, 8.4 Mpixel).
"""

from __future__ import annotations

from typing import Any, Optional

from rawdiff.codec.bitstream import BitstreamError, Header

#: The largest automotive sensor of the thesis (width, height).
LARGEST_SENSOR = (3868, 2176)
#: Default maximum frame size of a decoder in pixels: 4 x 3868 x 2176 = 33,667,072.
DEFAULT_MAX_PIXELS = 4 * LARGEST_SENSOR[0] * LARGEST_SENSOR[1]
#: Default tile side of decoding, in codes (2048 pixels at f8): a frame up to 2048 pixels
#: on both sides (1936x1112) decodes in one piece, a larger one in tiles of this size
#: (:mod:`rawdiff.codec.tiling`), so the decoder's memory stays that of a 2048x2048 frame.
DEFAULT_TILE = 256
#: The smallest tile: below it the halo of the decoder (12 codes) would dominate the work.
MIN_TILE = 8
#: Default plane rows an encoder without a network codes at a time (1152 RAW rows;
#: :mod:`rawdiff.codec.encode_strips`): a frame of 1936x1112 or smaller codes whole, as fast
#: as before; larger frames in strips with the same codes, for 30 % less memory at 3868x2176
#: in the same time on the 2-core CPU of the README's table (fewer rows: less memory for
#: some time, e.g. 256 rows)
DEFAULT_ENCODE_ROWS = 576


class FrameTooLargeError(BitstreamError):
    """The bitstream declares a frame larger than the decoder's limit."""

    def __init__(self, height: int, width: int, max_pixels: int):
        self.height = height
        self.width = width
        self.max_pixels = max_pixels
        super().__init__(
            "frame %dx%d (%d pixels) exceeds the decoder's limit of %d pixels (max_pixels); raise the limit "
            "(--max-pixels, ~max_pixels) to decode it" % (width, height, width * height, max_pixels))


def whole_number(value: Any, name: str, unit: str) -> int:
    """``value`` (an integer, or its text) as an int; a bool, a fraction or anything else is a
    ValueError naming ``name`` and ``unit``."""
    if isinstance(value, bool):
        raise ValueError("%s must be a number of %s, got %r" % (name, unit, value))
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("%s must be a number of %s, got %r" % (name, unit, value)) from None
    if number != value and not isinstance(value, str):
        raise ValueError("%s must be a whole number of %s, got %r" % (name, unit, value))
    return number


def check_max_pixels(value: Any, name: str = "max_pixels") -> Optional[int]:
    """``value`` as a limit: a positive integer, or None (and 0) for no limit."""
    if value is None:
        return None
    limit = whole_number(value, name, "pixels")
    if limit < 0:
        raise ValueError("%s must be >= 0 (0: no limit), got %d" % (name, limit))
    return limit or None


def check_tile(value: Any, name: str = "tile") -> int:
    """``value`` as a tile side in codes: an integer >= 8, or 0 for no tiling (whole frames)."""
    tile = whole_number(value, name, "codes")
    if tile != 0 and tile < MIN_TILE:
        raise ValueError("%s must be 0 (no tiling) or at least %d codes, got %d" % (name, MIN_TILE, tile))
    return tile


def check_encode_rows(value: Any, name: str = "encode_rows") -> int:
    """``value`` as plane rows an encoding strip codes: an integer >= 1, or 0 for whole frames."""
    rows = whole_number(value, name, "plane rows")
    if rows < 0:
        raise ValueError("%s must be 0 (whole frames) or a positive number of plane rows, got %d" % (name, rows))
    return rows


def check_frame_size(header: Header, max_pixels: Optional[int]) -> None:
    """Raise :class:`FrameTooLargeError` when ``header`` declares more than ``max_pixels``
    pixels (None: no limit). Reads two integers of the header, allocates nothing."""
    if max_pixels is not None and header.height * header.width > max_pixels:
        raise FrameTooLargeError(header.height, header.width, max_pixels)


__all__ = ["DEFAULT_ENCODE_ROWS", "DEFAULT_MAX_PIXELS", "DEFAULT_TILE", "LARGEST_SENSOR", "MIN_TILE",
           "FrameTooLargeError", "check_encode_rows", "check_frame_size", "check_max_pixels", "check_tile",
           "whole_number"]
