"""The data layer's frame readers: photos and videos unprocessed into RAW, and RAW files.

    photo  --load_photo (sRGB [0, 1]; cICP -> sRGB)--> Unprocessor --> RawFrame (one)
    video  --every N-th frame (cv2), at most max_frames--> Unprocessor --> RawFrame, ...
    dng / raw  --rawdiff.raw.read_raw--> RawFrame (one)

A photo is *unprocessed* (Brooks et al. 2019, :func:`rawdiff.raw.unprocess.unprocess`)
into a 12-bit RAW mosaic with noise. The random camera (CFA phase, gains, colour matrix,
noise) is drawn from a seed derived from the run's seed and the source's name, so a
source gives the same frame whatever else is in the run; all frames of a video share one
CFA. Videos default to every 25th frame, at most 32. Odd sizes lose their last row and
column; frames smaller than ``min_size``, and grayscale photos, are skipped.

Importing this module registers these readers (:mod:`rawdiff.data.readers`).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from rawdiff.data.corpus import DNG, PHOTO, RAW, VIDEO, Source
from rawdiff.data.readers import FrameItem, ReadOptions, SkipSource, check_size, even_size, register_reader
from rawdiff.data.sources import PrepareError
from rawdiff.raw import read_raw
from rawdiff.raw.cicp import png_cicp, to_srgb
from rawdiff.raw.frame import CFA_PATTERNS, RawFrame
from rawdiff.raw.unprocess import unprocess

VIDEO_EVERY = 25
VIDEO_MAX_FRAMES = 32


def derive_seed(seed: int, *parts: Any) -> int:
    """A 64-bit seed from the run's seed and names (sha256), independent of anything else."""
    text = "\x1f".join([str(int(seed))] + [str(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def load_photo(path: str) -> Tuple[np.ndarray, str]:
    """An RGB photo as float32 HxWx3 sRGB in [0, 1] (alpha dropped), and a colour note.

    Raises :class:`SkipSource` for unreadable or grayscale images.
    """
    import cv2

    image = cv2.imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise SkipSource("unreadable image")
    if image.ndim == 2 or image.shape[2] == 1:
        raise SkipSource("grayscale image")
    image = image[:, :, 2::-1] if image.shape[2] >= 3 else image
    if image.dtype == np.uint8:
        rgb = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        rgb = image.astype(np.float32) / 65535.0
    elif image.dtype.kind == "f":
        rgb = np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)
    else:
        raise SkipSource("unsupported pixel type %s" % image.dtype)
    if is_grayscale(rgb):
        raise SkipSource("grayscale image (equal channels)")
    note = ""
    if path.lower().endswith(".png"):
        rgb, note = to_srgb(rgb, png_cicp(path))
    return np.ascontiguousarray(rgb, dtype=np.float32), note


def is_grayscale(rgb: np.ndarray, tol: float = 3.0 / 255.0) -> bool:
    """True when 99 % of the pixels have channels within ``tol`` of each other."""
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / 65536.0)))
    sample = rgb[::step, ::step].astype(np.float32)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return float(np.percentile(spread, 99)) <= tol


class Unprocessor:
    """Calls :func:`rawdiff.raw.unprocess.unprocess` with this run's settings."""

    def __init__(self, bits: int, noise: bool, cfa: str, options: Optional[Dict[str, Any]],
                 clean_target: bool = False):
        if not 8 <= int(bits) <= 16:
            raise PrepareError("bits must be in 8..16, got %r" % bits)
        self.fn = unprocess
        self.bits = int(bits)
        self.noise = bool(noise)
        self.cfa = cfa
        self.options = dict(options or {})
        self.clean_target = bool(clean_target)

    def source_cfa(self, seed: int, name: str) -> str:
        if self.cfa != "random":
            return self.cfa
        rng = np.random.default_rng(derive_seed(seed, name, "cfa"))
        return CFA_PATTERNS[int(rng.integers(len(CFA_PATTERNS)))]

    def __call__(self, rgb: np.ndarray, seed: int, name: str, index: int, cfa: str) -> Tuple[RawFrame, dict]:
        white = (1 << self.bits) - 1
        black = int(round(256 * (white + 1) / 4096.0))  # unprocess's 12-bit default, 1/16 of the range
        kwargs = dict(seed=derive_seed(seed, name, index), cfa=cfa, black_level=black, white_level=white,
                      **self.options)
        frame, meta = self.fn(rgb, noise=self.noise, **kwargs)
        if self.clean_target and self.noise:
            # the same camera without the noise field: the draws do not depend on ``noise``
            clean, _ = self.fn(rgb, noise=False, **kwargs)
            frame.extra = dict(frame.extra or {}, _clean=clean)
        return frame, meta


def read_photo(src: Source, options: ReadOptions) -> Iterator[FrameItem]:
    """The one frame of a photo source."""
    rgb, note = load_photo(src.path)
    rgb = even_size(rgb)
    check_size(rgb.shape[0], rgb.shape[1], options.min_size)
    cfa = options.unprocessor.source_cfa(options.seed, src.name)
    frame, meta = options.unprocessor(rgb, options.seed, src.name, 0, cfa)
    if note:
        meta = dict(meta, colour=note)
    yield "frame", 0, frame, meta


def read_video(src: Source, options: ReadOptions) -> Iterator[FrameItem]:
    """Every ``every``-th frame of a video source (default 25) from frame ``start`` (default 0), at
    most ``max_frames`` (default 32)."""
    import cv2

    every = options.every or VIDEO_EVERY
    cap_frames = options.max_frames if options.max_frames is not None else VIDEO_MAX_FRAMES
    cap = cv2.VideoCapture(src.path)
    if not cap.isOpened():
        raise SkipSource("cannot open the video")
    cfa = options.unprocessor.source_cfa(options.seed, src.name)
    taken = 0
    index = 0
    try:
        while cap_frames is None or taken < cap_frames:
            if index < options.start or (index - options.start) % every:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = even_size(bgr[:, :, ::-1].astype(np.float32) / 255.0)
            if taken == 0:
                check_size(rgb.shape[0], rgb.shape[1], options.min_size)
            frame, meta = options.unprocessor(np.ascontiguousarray(rgb), options.seed, src.name, index, cfa)
            yield "f%06d" % index, index, frame, meta
            taken += 1
            index += 1
    finally:
        cap.release()
    if taken == 0:
        raise SkipSource("no frame could be decoded")


def read_raw_file(src: Source, options: ReadOptions) -> Iterator[FrameItem]:
    """The one frame of a DNG/camera RAW file or a mosaic with its sidecar."""
    try:
        frame = read_raw(src.path, **options.raw_overrides)
    except (ValueError, OSError) as exc:
        raise SkipSource(str(exc)) from None
    frame = even_size(frame)
    check_size(frame.height, frame.width, options.min_size)
    yield "frame", 0, frame, {}


for _kind, _reader in ((PHOTO, read_photo), (VIDEO, read_video), (DNG, read_raw_file), (RAW, read_raw_file)):
    register_reader(_kind, _reader)


__all__ = ["VIDEO_EVERY", "VIDEO_MAX_FRAMES", "Unprocessor", "derive_seed", "is_grayscale", "load_photo",
           "read_photo", "read_raw_file", "read_video"]
