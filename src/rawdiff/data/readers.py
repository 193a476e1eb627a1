"""Frame readers by source kind: the registry that ``prepare`` asks for a source's frames.

    Source(kind=...) --reader_for(kind)--> reader(source, options)
        --> (stem, index, RawFrame, meta), (stem, index, RawFrame, meta), ...

A reader yields the RAW frames of one source: ``stem`` names the frame's files in the
source's folder, ``index`` is its position in the source (a video frame or bag message
number), ``meta`` is JSON-able provenance for the manifest. It raises :class:`SkipSource`
for a source (or the rest of one) that gives no usable frame.

The data layer registers its own readers for ``photo``, ``video``, ``dng`` and ``raw``
(:mod:`rawdiff.data.frames`). Bags are read by :mod:`rawdiff.ros.bag`, which registers its
reader when it is imported: the data layer never imports ROS, and the program that wants
bag sources (``rawdiff prepare-data``) imports the ROS reader.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from rawdiff.data.corpus import BAG, Source
from rawdiff.data.sources import PrepareError
from rawdiff.raw.frame import RawFrame

FrameItem = Tuple[str, int, RawFrame, Dict[str, Any]]
Reader = Callable[[Source, "ReadOptions"], Iterator[FrameItem]]

# where the reader of a kind that the data layer does not read itself comes from
_PROVIDERS = {BAG: "bags are read by rawdiff.ros.bag (ROS Noetic's rosbag), which registers its reader "
                   "when imported, as `rawdiff prepare-data` does"}

_READERS: Dict[str, Reader] = {}


class SkipSource(Exception):
    """A source that gives no frame (too small, grayscale, unreadable); carries the reason."""


class ReadOptions:
    """What every reader of one ``prepare`` run is told.

    Attributes:
        seed: the run's seed; readers derive a source's seeds from it and the source's name.
        every, max_frames: sampling of streams (videos, bags); None: the reader's default.
        start: the first video frame taken (then every ``every``-th).
        min_size: frames with a side below this many pixels are skipped.
        raw_overrides: keyword arguments of :func:`rawdiff.raw.read_raw` (DNG/mosaic sources).
        conversion: keyword arguments of the bag reader's image conversion (``cfa``,
            ``black_level``, ``white_level``, ``input_format``).
        unprocessor: the photo unprocessor of the run, built on first use (so settings that
            only photos use are checked only when a photo is read).
    """

    def __init__(self, seed: int = 0, every: Optional[int] = None, max_frames: Optional[int] = None,
                 min_size: int = 64, raw_overrides: Optional[Dict[str, Any]] = None,
                 conversion: Optional[Dict[str, Any]] = None, make_unprocessor: Optional[Callable[[], Any]] = None,
                 start: int = 0):
        self.seed = seed
        self.start = int(start)
        self.every = every
        self.max_frames = max_frames
        self.min_size = min_size
        self.raw_overrides = dict(raw_overrides or {})
        self.conversion = dict(conversion or {})
        self._make_unprocessor = make_unprocessor
        self._unprocessor = None

    @property
    def unprocessor(self):
        if self._unprocessor is None:
            if self._make_unprocessor is None:
                raise PrepareError("this run has no photo unprocessor")
            self._unprocessor = self._make_unprocessor()
        return self._unprocessor


def register_reader(kind: str, reader: Reader) -> None:
    """Make ``reader`` the reader of ``kind`` sources (a later registration replaces it)."""
    if not callable(reader):
        raise TypeError("the reader of %r sources must be callable, got %r" % (kind, reader))
    _READERS[kind] = reader


def reader_for(kind: str) -> Reader:
    """The reader of ``kind`` sources; :class:`PrepareError` when none is registered."""
    reader = _READERS.get(kind)
    if reader is None:
        where = _PROVIDERS.get(kind)
        raise PrepareError("no reader for %s sources: %s" % (
            kind, where or "none is registered (there are readers for %s)" % ", ".join(sorted(_READERS))))
    return reader


def even_size(frame_or_rgb):
    """A RawFrame or an H x W x 3 image cut to even height and width (the CFA phase is kept)."""
    if isinstance(frame_or_rgb, RawFrame):
        h, w = frame_or_rgb.height & ~1, frame_or_rgb.width & ~1
        if (h, w) == frame_or_rgb.shape:
            return frame_or_rgb
        return frame_or_rgb.copy(mosaic=np.ascontiguousarray(frame_or_rgb.mosaic[:h, :w]))
    h, w = frame_or_rgb.shape[0] & ~1, frame_or_rgb.shape[1] & ~1
    return frame_or_rgb[:h, :w]


def check_size(h: int, w: int, min_size: int) -> None:
    """:class:`SkipSource` for a frame with a side below ``min_size`` pixels."""
    if min(h, w) < min_size:
        raise SkipSource("too small (%dx%d < %d px)" % (w, h, min_size))


__all__ = ["FrameItem", "ReadOptions", "Reader", "SkipSource", "check_size", "even_size", "reader_for",
           "register_reader"]
