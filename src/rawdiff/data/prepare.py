"""Build a paired RAW / RGB dataset with train/val/test splits.

For every source (see :class:`rawdiff.data.corpus.Source`):

* ``photo``: an sRGB photo (8- or 16-bit; a PNG with a ``cICP`` chunk for BT.2020/P3 with
  PQ/HLG/linear transfer is converted to sRGB first) is cropped to even size and
  *unprocessed* (Brooks et al. 2019, :func:`rawdiff.raw.unprocess.unprocess`) into a
  12-bit RAW mosaic with noise. The random camera (CFA phase, gains, colour matrix,
  noise) is drawn from a seed derived from ``seed`` and the source name, so a source
  gives the same frame whatever else is in the run;
* ``video``: every ``every``-th frame (default 25), at most ``max_frames`` (default 32),
  each unprocessed like a photo with the same CFA; all frames are one source;
* ``dng`` / ``raw``: :func:`rawdiff.raw.read_raw` (camera RAW, or a mosaic with sidecar);
* ``bag``: the Bayer ``sensor_msgs/Image`` messages of ``topic``
  (:func:`rawdiff.ros.bag.iter_raw_frames`, imported only when a bag is given), every
  ``every``-th (default 1), at most ``max_frames`` (default: all).

Each RAW frame is written as ``frames/<source>/<frame>.npy`` with its JSON sidecar
(:func:`rawdiff.raw.io.write_raw`), and its RGB target, rendered by the reference ISP
(:func:`rawdiff.raw.isp.render`) from the *whole* frame, as ``<frame>.rgb.png`` next to it
(:func:`target_path`). Odd sizes lose their last row/column (the CFA phase is kept);
frames smaller than ``min_size`` pixels on a side, and grayscale photos, are skipped with
a note.

Index files ``train.txt``, ``val.txt``, ``test.txt`` list the ``.npy`` files, one a line,
relative to the output folder. The split is by source *group* (all frames of a video, the
two views of a stereo pair): groups are ordered by ``sha256(seed, group)`` and cut
0.6 / 0.2 / 0.2 (rounded; with 3 or more groups every split gets at least one), so it is
deterministic and independent of the order the sources are given in. ``manifest.json``
records every source (origin, licence, split, frame files, unprocessing parameters), the
skipped ones with the reason, the settings and a summary.

Re-running on the same folder skips the sources already done with the same settings
(``frames/<source>/source.json`` is written last), adds new ones and re-writes the split
and the index; a source done with other settings is refused (:class:`PrepareError`)
unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import sys
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from rawdiff.data.corpus import BAG, DNG, PHOTO, RAW, VIDEO, Source, find_sources, slug
from rawdiff.raw.frame import CFA_PATTERNS, RawFrame, check_cfa

SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
MANIFEST = "manifest.json"
SOURCE_DONE = "source.json"
FRAMES_DIR = "frames"
TARGET_SUFFIX = ".rgb.png"
FORMAT_VERSION = 1

IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".ppm", ".pnm", ".pgm", ".pbm", ".tif", ".tiff",
                            ".bmp", ".webp", ".jp2"))
VIDEO_SUFFIXES = frozenset((".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv"))
BAG_SUFFIXES = frozenset((".bag",))
LIST_SUFFIXES = frozenset((".txt", ".lst"))

DEFAULT_EVERY = {VIDEO: 25, BAG: 1}
DEFAULT_MAX_FRAMES = {VIDEO: 32, BAG: None}


class PrepareError(ValueError):
    """A problem with the sources or the output folder (the CLI prints it on one line)."""


class SkipSource(Exception):
    """A source that gives no frame (too small, grayscale, unreadable); carries the reason."""


# --------------------------------------------------------------------------------------
# naming


def target_path(raw_path: Union[str, os.PathLike[str]]) -> str:
    """The RGB target of a RAW frame file: ``x.npy`` -> ``x.rgb.png`` (same folder)."""
    raw_path = os.fspath(raw_path)
    stem, _ = os.path.splitext(raw_path)
    return stem + TARGET_SUFFIX


def _derive_seed(seed: int, *parts: Any) -> int:
    text = "\x1f".join([str(int(seed))] + [str(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def split_groups(groups: Iterable[str], seed: int = 0,
                 fractions: Sequence[float] = FRACTIONS) -> Dict[str, str]:
    """Assign each group to ``train``/``val``/``test``: deterministic, by hash, by count.

    Groups are ordered by ``sha256(seed, group)``; the first ``round(n*f_test)`` go to test,
    the next ``round(n*f_val)`` to val, the rest to train. With ``n >= 3`` each split gets
    at least one group (taken from the largest).
    """
    groups = sorted(set(groups))
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or min(fr) < 0 or sum(fr) <= 0:
        raise ValueError("fractions must be three non-negative numbers, got %r" % (fractions,))
    total = sum(fr)
    n = len(groups)
    counts = [int(math.floor(n * f / total + 0.5)) for f in fr]
    counts[0] = n - counts[1] - counts[2]
    if n >= 3:
        for i in range(3):
            while counts[i] < 1:
                j = max(range(3), key=lambda k: counts[k])
                counts[j] -= 1
                counts[i] += 1
    order = sorted(groups, key=lambda g: hashlib.sha256(("%d\x1f%s" % (int(seed), g)).encode()).hexdigest())
    _, n_val, n_test = counts
    out = {}
    for i, group in enumerate(order):
        out[group] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


# --------------------------------------------------------------------------------------
# collecting sources from paths


def _classify(path: str, explicit: bool) -> Optional[str]:
    from rawdiff.raw.io import RAWPY_SUFFIXES, sidecar_path

    suffix = os.path.splitext(path)[1].lower()
    if suffix in RAWPY_SUFFIXES:
        return DNG
    if suffix in BAG_SUFFIXES:
        return BAG
    if suffix in VIDEO_SUFFIXES:
        return VIDEO
    if suffix == ".npy":
        return RAW
    if suffix in IMAGE_SUFFIXES:
        if path.endswith(TARGET_SUFFIX):  # a target written by prepare: not a source
            return None
        if suffix in (".png", ".tif", ".tiff") and os.path.isfile(str(sidecar_path(path))):
            return RAW
        return PHOTO
    if explicit:
        raise PrepareError("%s: unknown source type %r (photos, videos, DNG/camera RAW, .npy mosaics, "
                           ".bag, folders or .txt lists)" % (path, suffix))
    return None


def collect_sources(paths: Iterable[Union[str, Source]], topic: Optional[str] = None,
                    origin: str = "user", licence: str = "") -> List[Source]:
    """Turn command-line paths into sources.

    A folder gives every photo, video, DNG/camera RAW, ``.npy`` mosaic and bag under it
    (recursively, sorted; ``*.rgb.png`` targets excluded); a ``.txt``/``.lst`` file lists
    paths, one a line (``#`` comments; relative to the list's folder); any other file is
    one source. Bags need ``topic``. Names are ``<folder>/<relative path>`` for files found
    in a folder and the file name otherwise, made unique with ``~2``, ``~3``...
    """
    out: List[Source] = []
    seen_names: Dict[str, int] = {}
    seen_paths = set()

    def add(path: str, kind: str, name: str) -> None:
        real = os.path.realpath(path)
        if real in seen_paths:
            return
        seen_paths.add(real)
        if kind == BAG and not topic:
            raise PrepareError("%s: a bag source needs --topic (the Bayer image topic)" % path)
        base = "%s/%s" % (origin, name)
        count = seen_names.get(base, 0) + 1
        seen_names[base] = count
        unique = base if count == 1 else "%s~%d" % (base, count)
        out.append(Source(path=path, origin_package=origin, licence=licence, kind=kind, name=unique,
                          topic=topic if kind == BAG else None))

    def visit(item: str, depth: int = 0) -> None:
        if depth > 8:
            raise PrepareError("%s: list files nested too deeply" % item)
        if os.path.isdir(item):
            root = os.path.normpath(item)
            label = os.path.basename(os.path.abspath(root)) or "root"
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fname in sorted(filenames):
                    path = os.path.join(dirpath, fname)
                    kind = _classify(path, explicit=False)
                    if kind is not None:
                        add(path, kind, "%s/%s" % (label, os.path.relpath(path, root).replace(os.sep, "/")))
            return
        if not os.path.exists(item):
            raise PrepareError("source not found: %s" % item)
        if os.path.splitext(item)[1].lower() in LIST_SUFFIXES:
            base = os.path.dirname(os.path.abspath(item))
            with open(item, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        visit(line if os.path.isabs(line) else os.path.join(base, line), depth + 1)
            return
        add(item, _classify(item, explicit=True), os.path.basename(item))

    for item in paths:
        if isinstance(item, Source):
            if item.kind == BAG and not (item.topic or topic):
                raise PrepareError("%s: a bag source needs --topic (the Bayer image topic)" % item.path)
            if item.kind == BAG and not item.topic:
                item = Source(**{**_source_fields(item), "topic": topic})
            out.append(item)
        else:
            visit(os.fspath(item))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PrepareError("source names are not unique: %s" % ", ".join(dup))
    return out


def _source_fields(src: Source) -> Dict[str, Any]:
    return {"path": src.path, "origin_package": src.origin_package, "licence": src.licence,
            "kind": src.kind, "name": src.name, "group": src.group, "topic": src.topic, "note": src.note}


# --------------------------------------------------------------------------------------
# colour: photos to sRGB floats


# Linear RGB of other primaries -> linear BT.709/sRGB (D65).
_BT2020_TO_709 = np.array([[1.6604910, -0.5876411, -0.0728499],
                           [-0.1245505, 1.1328999, -0.0083494],
                           [-0.0181508, -0.1005789, 1.1187297]])
_P3_TO_709 = np.array([[1.2249401, -0.2249404, 0.0000000],
                       [-0.0420569, 1.0420571, 0.0000000],
                       [-0.0196376, -0.0786361, 1.0982735]])
_PRIMARIES = {1: None, 9: _BT2020_TO_709, 12: _P3_TO_709}
_SRGB_LIKE_TRANSFERS = (1, 6, 13, 14, 15)  # BT.709, BT.601, sRGB, BT.2020 10/12-bit
_LINEAR, _PQ, _HLG = 8, 16, 18


def png_cicp(path: str) -> Optional[Tuple[int, int, int, int]]:
    """The ``cICP`` chunk (primaries, transfer, matrix, full range) of a PNG, or None."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return None
                length, ctype = struct.unpack(">I4s", head)
                if ctype == b"cICP" and length == 4:
                    return tuple(fh.read(4))  # type: ignore[return-value]
                if ctype in (b"IDAT", b"IEND"):
                    return None
                fh.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None


def _hlg_inverse_oetf(e: np.ndarray) -> np.ndarray:
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(e, 0.0, 1.0)
    return np.where(e <= 0.5, e * e / 3.0, (np.exp((e - c) / a) + b) / 12.0)


def _pq_eotf_nits(e: np.ndarray) -> np.ndarray:
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    p = np.power(np.clip(e, 0.0, 1.0), 1.0 / m2)
    return 10000.0 * np.power(np.maximum(p - c1, 0.0) / (c2 - c3 * p), 1.0 / m1)


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def to_srgb(rgb: np.ndarray, cicp: Optional[Tuple[int, int, int, int]]) -> Tuple[np.ndarray, str]:
    """Float RGB in [0, 1] encoded as ``cicp`` says -> sRGB in [0, 1], and a note.

    HLG and PQ are mapped so that reference white (HLG 75 %, PQ 203 cd/m2) becomes sRGB
    white; brighter highlights clip.
    """
    if cicp is None:
        return rgb, ""
    primaries, transfer = int(cicp[0]), int(cicp[1])
    if primaries not in _PRIMARIES or transfer not in _SRGB_LIKE_TRANSFERS + (_LINEAR, _PQ, _HLG):
        return rgb, "cICP %d/%d not supported, read as sRGB" % (primaries, transfer)
    if primaries == 1 and transfer in _SRGB_LIKE_TRANSFERS:
        return rgb, ""
    if transfer in _SRGB_LIKE_TRANSFERS:
        linear = np.where(rgb <= 0.04045, rgb / 12.92, np.power((rgb + 0.055) / 1.055, 2.4))
    elif transfer == _LINEAR:
        linear = rgb
    elif transfer == _HLG:
        linear = _hlg_inverse_oetf(rgb) / float(_hlg_inverse_oetf(np.array(0.75)))
    else:
        linear = _pq_eotf_nits(rgb) / 203.0
    matrix = _PRIMARIES[primaries]
    if matrix is not None:
        linear = linear @ matrix.T
    names = {1: "BT.709", 9: "BT.2020", 12: "P3"}
    tnames = {_LINEAR: "linear", _PQ: "PQ", _HLG: "HLG"}
    note = "converted %s/%s to sRGB" % (names[primaries], tnames.get(transfer, "gamma"))
    return _srgb_encode(linear).astype(np.float32), note


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


# --------------------------------------------------------------------------------------
# frames of one source


def _even(frame_or_rgb):
    if isinstance(frame_or_rgb, RawFrame):
        h, w = frame_or_rgb.height & ~1, frame_or_rgb.width & ~1
        if (h, w) == frame_or_rgb.shape:
            return frame_or_rgb
        return frame_or_rgb.copy(mosaic=np.ascontiguousarray(frame_or_rgb.mosaic[:h, :w]))
    h, w = frame_or_rgb.shape[0] & ~1, frame_or_rgb.shape[1] & ~1
    return frame_or_rgb[:h, :w]


def _check_size(h: int, w: int, min_size: int) -> None:
    if min(h, w) < min_size:
        raise SkipSource("too small (%dx%d < %d px)" % (w, h, min_size))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Unprocessor:
    """Calls :func:`rawdiff.raw.unprocess.unprocess` with this run's settings."""

    def __init__(self, bits: int, noise: bool, cfa: str, options: Optional[Dict[str, Any]],
                 clean_target: bool = False):
        from rawdiff.raw.unprocess import unprocess

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
        rng = np.random.default_rng(_derive_seed(seed, name, "cfa"))
        return CFA_PATTERNS[int(rng.integers(len(CFA_PATTERNS)))]

    def __call__(self, rgb: np.ndarray, seed: int, name: str, index: int, cfa: str) -> Tuple[RawFrame, dict]:
        white = (1 << self.bits) - 1
        black = int(round(256 * (white + 1) / 4096.0))  # unprocess's 12-bit default, 1/16 of the range
        kwargs = dict(seed=_derive_seed(seed, name, index), cfa=cfa, black_level=black, white_level=white,
                      **self.options)
        frame, meta = self.fn(rgb, noise=self.noise, **kwargs)
        if self.clean_target and self.noise:
            # the same camera without the noise field: the draws do not depend on ``noise``
            clean, _ = self.fn(rgb, noise=False, **kwargs)
            frame.extra = dict(frame.extra or {}, _clean=clean)
        return frame, meta


def _photo_frames(src: Source, ctx: _Context) -> Iterator[Tuple[str, int, RawFrame, dict]]:
    rgb, note = load_photo(src.path)
    rgb = _even(rgb)
    _check_size(rgb.shape[0], rgb.shape[1], ctx.min_size)
    cfa = ctx.unprocessor.source_cfa(ctx.seed, src.name)
    frame, meta = ctx.unprocessor(rgb, ctx.seed, src.name, 0, cfa)
    if note:
        meta = dict(meta, colour=note)
    yield "frame", 0, frame, meta


def _video_frames(src: Source, ctx: _Context) -> Iterator[Tuple[str, int, RawFrame, dict]]:
    import cv2

    every = ctx.every or DEFAULT_EVERY[VIDEO]
    cap_frames = ctx.max_frames if ctx.max_frames is not None else DEFAULT_MAX_FRAMES[VIDEO]
    cap = cv2.VideoCapture(src.path)
    if not cap.isOpened():
        raise SkipSource("cannot open the video")
    cfa = ctx.unprocessor.source_cfa(ctx.seed, src.name)
    taken = 0
    index = 0
    try:
        while cap_frames is None or taken < cap_frames:
            if index % every:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = _even(bgr[:, :, ::-1].astype(np.float32) / 255.0)
            if taken == 0:
                _check_size(rgb.shape[0], rgb.shape[1], ctx.min_size)
            frame, meta = ctx.unprocessor(np.ascontiguousarray(rgb), ctx.seed, src.name, index, cfa)
            yield "f%06d" % index, index, frame, meta
            taken += 1
            index += 1
    finally:
        cap.release()
    if taken == 0:
        raise SkipSource("no frame could be decoded")


def _raw_frames(src: Source, ctx: _Context) -> Iterator[Tuple[str, int, RawFrame, dict]]:
    from rawdiff.raw import read_raw

    try:
        frame = read_raw(src.path, **ctx.raw_overrides)
    except (ValueError, OSError) as exc:
        raise SkipSource(str(exc)) from None
    frame = _even(frame)
    _check_size(frame.height, frame.width, ctx.min_size)
    yield "frame", 0, frame, {}


def _bag_frames(src: Source, ctx: _Context) -> Iterator[Tuple[str, int, RawFrame, dict]]:
    from rawdiff.ros.bag import iter_raw_frames  # ROS only when a bag is given

    every = ctx.every or DEFAULT_EVERY[BAG]
    cap_frames = ctx.max_frames if ctx.max_frames is not None else DEFAULT_MAX_FRAMES[BAG]
    taken = 0
    for index, (t, frame) in enumerate(iter_raw_frames(src.path, src.topic, **ctx.conversion)):
        if cap_frames is not None and taken >= cap_frames:
            break
        if index % every:
            continue
        frame = _even(frame)
        _check_size(frame.height, frame.width, ctx.min_size)
        yield "m%06d" % index, index, frame, {"bag_time": float(t.to_sec()) if hasattr(t, "to_sec") else t}
        taken += 1
    if taken == 0:
        raise SkipSource("no message on topic %s" % src.topic)


_READERS = {PHOTO: _photo_frames, VIDEO: _video_frames, DNG: _raw_frames, RAW: _raw_frames, BAG: _bag_frames}


class _Context:
    def __init__(self, out_dir: str, seed: int, every: Optional[int], max_frames: Optional[int],
                 min_size: int, bits: int, noise: bool, cfa: str, raw_overrides: Dict[str, Any],
                 conversion: Dict[str, Any], unprocess_options: Dict[str, Any], clean_target: bool = False):
        self.out_dir = out_dir
        self.seed = seed
        self.every = every
        self.max_frames = max_frames
        self.min_size = min_size
        self.raw_overrides = raw_overrides
        self.conversion = conversion
        self.params = _jsonable({
            "version": FORMAT_VERSION, "seed": seed, "every": every, "max_frames": max_frames,
            "min_size": min_size, "bits": bits, "noise": noise, "cfa": cfa,
            "raw_overrides": raw_overrides, "conversion": conversion, "unprocess": unprocess_options,
            "clean_target": clean_target,
        })
        self._unprocessor: Optional[_Unprocessor] = None
        self._unprocess_args = (bits, noise, cfa, unprocess_options, clean_target)

    @property
    def unprocessor(self) -> _Unprocessor:
        if self._unprocessor is None:
            self._unprocessor = _Unprocessor(*self._unprocess_args)
        return self._unprocessor


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_jsonable(data), fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)


def _source_identity(src: Source) -> Dict[str, Any]:
    try:
        size = os.path.getsize(src.path)
    except OSError:
        size = None
    return {"path": os.path.abspath(src.path), "bytes": size, "kind": src.kind, "topic": src.topic}


def _done_entry(src: Source, ctx: _Context, overwrite: bool) -> Optional[dict]:
    """The saved entry of a source done before with the same settings, else None."""
    marker = os.path.join(ctx.out_dir, FRAMES_DIR, slug(src.name), SOURCE_DONE)
    if not os.path.isfile(marker):
        return None
    try:
        with open(marker, encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return None
    same = saved.get("params") == ctx.params and saved.get("identity") == _jsonable(_source_identity(src))
    if not same:
        if overwrite:
            return None
        what = "settings" if saved.get("params") != ctx.params else "input file"
        raise PrepareError(
            "%s: source %s was prepared with other %s (%s); use another output folder or overwrite=True "
            "(--overwrite)" % (ctx.out_dir, src.name, what, marker))
    entry = saved.get("entry") or {}
    for fr in entry.get("frames", []):
        for key in ("raw", "target"):
            if not os.path.isfile(os.path.join(ctx.out_dir, fr[key])):
                return None
    return entry


def _prepare_source(src: Source, ctx: _Context) -> dict:
    """Write all frames of one source; returns its manifest entry (frames may be empty)."""
    import cv2

    from rawdiff.raw.io import write_raw
    from rawdiff.raw.isp import render

    folder_rel = "%s/%s" % (FRAMES_DIR, slug(src.name))
    folder = os.path.join(ctx.out_dir, FRAMES_DIR, slug(src.name))
    if os.path.isdir(folder):
        shutil.rmtree(folder)  # partial or outdated output of this source
    entry = dict(src.to_dict())
    entry["frames"] = []
    try:
        for stem, index, frame, meta in _READERS[src.kind](src, ctx):
            os.makedirs(folder, exist_ok=True)
            extra = dict(frame.extra or {})
            clean = extra.pop("_clean", None)
            frame = frame.copy(frame_id=frame.frame_id or src.name, extra=dict(extra, source=src.name, index=index))
            raw_rel = "%s/%s.npy" % (folder_rel, stem)
            raw_abs = os.path.join(ctx.out_dir, raw_rel)
            write_raw(frame, raw_abs)
            rgb = render(frame if clean is None else clean)  # the whole frame, before any crop
            if not cv2.imwrite(target_path(raw_abs), np.ascontiguousarray(rgb[:, :, ::-1])):
                raise PrepareError("could not write %s" % target_path(raw_abs))
            entry["frames"].append({
                "raw": raw_rel, "target": target_path(raw_rel), "index": index,
                "height": frame.height, "width": frame.width, "cfa": frame.cfa, "meta": _jsonable(meta),
            })
    except SkipSource as exc:
        if not entry["frames"]:
            entry["skipped"] = str(exc)
        else:
            entry["note"] = (entry.get("note", "") + "; stopped: %s" % exc).lstrip("; ")
    os.makedirs(folder, exist_ok=True)
    _write_json(os.path.join(folder, SOURCE_DONE),
                {"params": ctx.params, "identity": _source_identity(src), "entry": entry})
    return entry


def prepare(
    sources: Iterable[Union[str, Source]],
    out_dir: str,
    seed: int = 0,
    topic: Optional[str] = None,
    every: Optional[int] = None,
    max_frames: Optional[int] = None,
    min_size: int = 64,
    bits: int = 12,
    noise: bool = True,
    cfa: str = "random",
    fractions: Sequence[float] = FRACTIONS,
    raw_overrides: Optional[Dict[str, Any]] = None,
    conversion: Optional[Dict[str, Any]] = None,
    unprocess_options: Optional[Dict[str, Any]] = None,
    clean_target: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> dict:
    """Build the paired dataset in ``out_dir``; returns the manifest (also ``manifest.json``).

    Args:
        sources: :class:`Source` objects and/or paths (folders, files, ``.txt`` lists).
        seed: seeds the unprocessing of every source (with its name) and the split.
        topic: the Bayer image topic of bag sources.
        every, max_frames: frame sampling of videos and bags (defaults: video every 25th,
            at most 32; bag every message, all).
        min_size: frames with a side below this many pixels are skipped.
        bits, noise, cfa: unprocessing: white level ``2**bits - 1``, shot/read noise, the
            CFA pattern (``"random"``: drawn per source from the seed).
        fractions: train/val/test shares of the source groups.
        raw_overrides: keyword overrides for :func:`rawdiff.raw.read_raw` (DNG/mosaic sources).
        conversion: keyword arguments of :func:`rawdiff.ros.conversions.image_to_frame`
            for bag sources (``cfa``, ``black_level``, ``white_level``, ``input_format``).
        unprocess_options: more keyword arguments for ``unprocess``.
        clean_target: render the RGB target of an unprocessed photo from the same camera
            without noise (a denoising target) instead of from the noisy RAW frame itself.
        overwrite: redo sources prepared before with other settings instead of refusing.
    """
    started = time.time()
    out_dir = os.fspath(out_dir)
    if every is not None and int(every) < 1:
        raise PrepareError("every must be >= 1, got %r" % every)
    if max_frames is not None and int(max_frames) < 1:
        raise PrepareError("max_frames must be >= 1, got %r" % max_frames)
    if cfa != "random":
        cfa = check_cfa(cfa)
    srcs = collect_sources(sources, topic=topic)
    if not srcs:
        raise PrepareError("no sources given")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PrepareError("output %s exists and is not a folder" % out_dir)
    os.makedirs(out_dir, exist_ok=True)
    ctx = _Context(out_dir, int(seed), None if every is None else int(every),
                   None if max_frames is None else int(max_frames), int(min_size), int(bits), bool(noise),
                   cfa, {k: v for k, v in (raw_overrides or {}).items() if v is not None},
                   {k: v for k, v in (conversion or {}).items() if v is not None}, dict(unprocess_options or {}),
                   bool(clean_target))
    log = sys.stderr

    done = {src.name: _done_entry(src, ctx, overwrite) for src in srcs}  # refuse before any work
    entries: List[dict] = []
    reused = 0
    bar = _progress(srcs, progress)
    for src in bar:
        entry = done[src.name]
        if entry is not None:
            reused += 1
        else:
            entry = _prepare_source(src, ctx)
        if verbose and entry.get("skipped"):
            _write_note(bar, "prepare: skipped %s (%s): %s" % (src.name, src.path, entry["skipped"]), log)
        entries.append(entry)
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str("%d frames" % sum(len(e["frames"]) for e in entries))

    used = [e for e in entries if e["frames"]]
    splits = split_groups([e["group"] for e in used], seed=ctx.seed, fractions=fractions)
    index: Dict[str, List[str]] = {s: [] for s in SPLITS}
    for e in entries:
        e["split"] = splits.get(e["group"]) if e["frames"] else None
        if e["split"]:
            index[e["split"]].extend(fr["raw"] for fr in e["frames"])
    for split in SPLITS:
        with open(os.path.join(out_dir, split + ".txt"), "w", encoding="utf-8") as fh:
            fh.writelines(path + "\n" for path in sorted(index[split]))

    n_frames = sum(len(e["frames"]) for e in used)
    pixels = sum(fr["height"] * fr["width"] for e in used for fr in e["frames"])
    summary = {
        "frames": n_frames,
        "sources": len(used),
        "groups": len(set(splits)),
        "skipped": len(entries) - len(used),
        "reused": reused,
        "megapixels": round(pixels / 1e6, 3),
        "split_frames": {s: len(index[s]) for s in SPLITS},
        "split_sources": {s: sum(1 for e in used if e["split"] == s) for s in SPLITS},
        "seconds": round(time.time() - started, 1),
    }
    manifest = {
        "format": "rawdiff-dataset",
        "version": FORMAT_VERSION,
        "created_by": "rawdiff.data.prepare",
        "params": ctx.params,
        "fractions": list(fractions),
        "index": {s: s + ".txt" for s in SPLITS},
        "naming": "frames/<source>/<frame>.npy (+ .json sidecar); RGB target <frame>%s" % TARGET_SUFFIX,
        "summary": summary,
        "sources": entries,
    }
    _write_json(os.path.join(out_dir, MANIFEST), manifest)
    if verbose:
        print("prepare: %d frames from %d sources (%d groups), %.1f Mpixel; train %d/%d, val %d/%d, "
              "test %d/%d (frames/sources); %d skipped, %d reused; %s in %.0f s"
              % (n_frames, len(used), summary["groups"], pixels / 1e6,
                 summary["split_frames"]["train"], summary["split_sources"]["train"],
                 summary["split_frames"]["val"], summary["split_sources"]["val"],
                 summary["split_frames"]["test"], summary["split_sources"]["test"],
                 summary["skipped"], reused, out_dir, summary["seconds"]), file=log)
    return manifest


def _progress(items: List[Source], enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc="prepare", unit="source", file=sys.stderr, dynamic_ncols=True)


def _write_note(bar, text: str, log) -> None:
    if hasattr(bar, "write"):
        bar.write(text, file=log)
    else:
        print(text, file=log)


def prepare_default_corpus(out_dir: str, seed: int = 0, **kwargs) -> dict:
    """:func:`prepare` on :func:`rawdiff.data.corpus.find_sources` (``make data``)."""
    sources = find_sources(verbose=kwargs.get("verbose", True))
    if not sources:
        raise PrepareError("no default corpus source found on this machine (install opencv-doc, "
                           "libjxl-testdata, scikit-image or scikit-learn)")
    return prepare(sources, out_dir, seed=seed, **kwargs)


# --------------------------------------------------------------------------------------
# command line glue (``rawdiff prepare-data``)


def add_arguments(parser) -> None:
    """The options of ``rawdiff prepare-data``."""
    parser.add_argument("--source", nargs="+", default=[],
                        help="folders (recursive), photos, .txt lists, videos, DNGs, .npy mosaics, bags")
    parser.add_argument("--default", action="store_true", help="the default corpus from packaged images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--topic", help="Bayer image topic of bag sources")
    parser.add_argument("--every", type=int, help="take every N-th video frame / bag message "
                        "(default 25 / 1)")
    parser.add_argument("--max-frames", type=int, help="at most N frames per video / bag (default 32 / all)")
    parser.add_argument("--min-size", type=int, default=64, help="skip frames smaller than this (px)")
    parser.add_argument("--cfa", default="random", help="CFA of unprocessed photos: random|RGGB|BGGR|GRBG|GBRG")
    parser.add_argument("--bag-cfa", help="CFA for mono16/packed bag images")
    parser.add_argument("--input-format", choices=["raw10p", "raw12p"], help="packed bag images")
    parser.add_argument("--black-level", type=float, help="black level of bag/DNG/mosaic frames")
    parser.add_argument("--white-level", type=float, help="white level of bag/DNG/mosaic frames")
    parser.add_argument("--clean-target", action="store_true",
                        help="render targets of unprocessed photos without the added noise")
    parser.add_argument("--overwrite", action="store_true", help="redo sources prepared with other settings")


def run(args) -> int:
    """Run ``rawdiff prepare-data`` from parsed :func:`add_arguments` options."""
    common = dict(seed=args.seed, every=getattr(args, "every", None),
                  max_frames=getattr(args, "max_frames", None), min_size=getattr(args, "min_size", 64),
                  cfa=getattr(args, "cfa", "random"), overwrite=getattr(args, "overwrite", False),
                  clean_target=getattr(args, "clean_target", False))
    levels = {"black_level": getattr(args, "black_level", None), "white_level": getattr(args, "white_level", None)}
    if args.default:
        prepare_default_corpus(args.out, **common)
        return 0
    if not args.source:
        raise PrepareError("give --default or at least one --source PATH")
    conversion = dict(levels, cfa=getattr(args, "bag_cfa", None), input_format=getattr(args, "input_format", None))
    prepare(args.source, args.out, topic=getattr(args, "topic", None), raw_overrides=levels,
            conversion=conversion, **common)
    return 0


__all__ = [
    "FRACTIONS", "SPLITS", "PrepareError", "add_arguments", "collect_sources", "load_photo", "prepare",
    "prepare_default_corpus", "run", "split_groups", "target_path", "to_srgb",
]
