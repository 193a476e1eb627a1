"""Resource limits of decoding, checked on the header before anything is allocated.

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


class FrameTooLargeError(BitstreamError):
    """The bitstream declares a frame larger than the decoder's limit."""

    def __init__(self, height: int, width: int, max_pixels: int):
        self.height = height
        self.width = width
        self.max_pixels = max_pixels
        super().__init__(
            "frame %dx%d (%d pixels) exceeds the decoder's limit of %d pixels (max_pixels); raise the limit "
            "(--max-pixels, ~max_pixels) to decode it" % (width, height, width * height, max_pixels))


def check_max_pixels(value: Any, name: str = "max_pixels") -> Optional[int]:
    """``value`` as a limit: a positive integer, or None (and 0) for no limit."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("%s must be a number of pixels, got %r" % (name, value))
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number of pixels, got %r" % (name, value)) from None
    if limit != value and not isinstance(value, str):
        raise ValueError("%s must be a whole number of pixels, got %r" % (name, value))
    if limit < 0:
        raise ValueError("%s must be >= 0 (0: no limit), got %d" % (name, limit))
    return limit or None


def check_tile(value: Any, name: str = "tile") -> int:
    """``value`` as a tile side in codes: an integer >= 8, or 0 for no tiling (whole frames)."""
    if isinstance(value, bool):
        raise ValueError("%s must be a number of codes, got %r" % (name, value))
    try:
        tile = int(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number of codes, got %r" % (name, value)) from None
    if tile != value and not isinstance(value, str):
        raise ValueError("%s must be a whole number of codes, got %r" % (name, value))
    if tile != 0 and tile < MIN_TILE:
        raise ValueError("%s must be 0 (no tiling) or at least %d codes, got %d" % (name, MIN_TILE, tile))
    return tile


def check_frame_size(header: Header, max_pixels: Optional[int]) -> None:
    """Raise :class:`FrameTooLargeError` when ``header`` declares more than ``max_pixels``
    pixels (None: no limit). Reads two integers of the header, allocates nothing."""
    if max_pixels is not None and header.height * header.width > max_pixels:
        raise FrameTooLargeError(header.height, header.width, max_pixels)


__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_TILE", "LARGEST_SENSOR", "MIN_TILE", "FrameTooLargeError", "check_frame_size",
           "check_max_pixels", "check_tile"]
