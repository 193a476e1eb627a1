"""The layout of a prepared dataset: where each file goes, the split, the index files.

    OUT/frames/<source>/<frame>.npy (+ .json)   a RAW frame (:func:`rawdiff.raw.io.write_raw`)
    OUT/frames/<source>/<frame>.rgb.png         its RGB target (:func:`target_path`)
    OUT/frames/<source>/<frame>.crop<W>x<H>.*   a test frame's centre cut (:mod:`rawdiff.data.cuts`)
    OUT/frames/<source>/source.json             written last: the source is done
    OUT/train.txt  val.txt  test.txt            the index: ``.npy`` paths relative to OUT
    OUT/test_held.txt                           the test frames of held groups (when any)
    OUT/manifest.json                           sources, settings, split and summary

The split is by source *group* (all frames of a video, the two views of a stereo pair):
groups are ordered by ``sha256(seed, group)`` and cut 0.6 / 0.2 / 0.2 (rounded; with 3 or
more groups every split gets at least one), so it is deterministic and independent of the
order the sources are given in. Groups may be *held* in a split (a corpus that grows keeps
its earlier split; the rule cuts the others), and the frames the rule puts in test may be
capped (the test split is what every evaluation runs on).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from rawdiff.data.corpus import slug

SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
MANIFEST = "manifest.json"
SOURCE_DONE = "source.json"
FRAMES_DIR = "frames"
TARGET_SUFFIX = ".rgb.png"
HELD_TEST_INDEX = "test_held.txt"
FORMAT_VERSION = 1


def target_path(raw_path: Union[str, os.PathLike[str]]) -> str:
    """The RGB target of a RAW frame file: ``x.npy`` -> ``x.rgb.png`` (same folder)."""
    raw_path = os.fspath(raw_path)
    stem, _ = os.path.splitext(raw_path)
    return stem + TARGET_SUFFIX


def source_dir(name: str) -> str:
    """The folder of a source's frames, relative to the output folder: ``frames/<slug>``."""
    return "%s/%s" % (FRAMES_DIR, slug(name))


def split_groups(groups: Iterable[str], seed: int = 0, fractions: Sequence[float] = FRACTIONS,
                 held: Optional[Mapping[str, str]] = None, frames: Optional[Mapping[str, int]] = None,
                 max_test_frames: Optional[int] = None, max_val_frames: Optional[int] = None) -> Dict[str, str]:
    """Assign each group to ``train``/``val``/``test``: deterministic, by hash, by count.

    Groups are ordered by ``sha256(seed, group)``; the first ``round(n*f_test)`` go to test,
    the next ``round(n*f_val)`` to val, the rest to train. With ``n >= 3`` each split gets
    at least one group (taken from the largest).

    ``held`` maps groups to the split they keep; ``n`` and the cut count the other groups
    only. ``max_test_frames`` caps the frames (``frames``: per group, default 1) that the
    cut puts in test: walking the order, a group that would take test past the cap is
    passed over and goes on to val or train, as the groups after the test share do;
    ``max_val_frames`` caps val the same way (a group passed over goes to train).
    """
    held = dict(held or {})
    for group, split in held.items():
        if split not in SPLITS:
            raise ValueError("held split %r of group %r is not one of %s" % (split, group, ", ".join(SPLITS)))
    groups = sorted(set(groups))
    free = [g for g in groups if g not in held]
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or min(fr) < 0 or sum(fr) <= 0:
        raise ValueError("fractions must be three non-negative numbers, got %r" % (fractions,))
    for cap in (max_test_frames, max_val_frames):
        if cap is not None and int(cap) < 0:
            raise ValueError("a frame cap must be >= 0, got %r" % (cap,))
    total = sum(fr)
    n = len(free)
    counts = [int(math.floor(n * f / total + 0.5)) for f in fr]
    counts[0] = n - counts[1] - counts[2]
    if n >= 3:
        for i in range(3):
            while counts[i] < 1:
                j = max(range(3), key=lambda k: counts[k])
                counts[j] -= 1
                counts[i] += 1
    order = sorted(free, key=lambda g: hashlib.sha256(("%d\x1f%s" % (int(seed), g)).encode()).hexdigest())
    _, n_val, n_test = counts
    out = {g: held[g] for g in groups if g in held}

    def take(candidates: List[str], split: str, count: int, cap: Optional[int]) -> List[str]:
        """Give ``split`` the first ``count`` candidates within ``cap`` frames; the rest, in order."""
        rest: List[str] = []
        taken = used = 0
        for group in candidates:
            size = 1 if frames is None else int(frames.get(group, 1))
            if taken < count and (cap is None or used + size <= int(cap)):
                out[group] = split
                taken += 1
                used += size
            else:
                rest.append(group)
        return rest

    for group in take(take(order, "test", n_test, max_test_frames), "val", n_val, max_val_frames):
        out[group] = "train"
    return out


def write_index(out_dir: str, index: Dict[str, List[str]], held_test: Optional[List[str]] = None) -> None:
    """``train.txt``, ``val.txt``, ``test.txt``: the frames of each split, sorted, one a line;
    ``test_held.txt``: the test frames of held groups (an earlier corpus's test split, on
    which figures stay comparable), written when there are any, else removed."""
    for split in SPLITS:
        with open(os.path.join(out_dir, split + ".txt"), "w", encoding="utf-8") as fh:
            fh.writelines(path + "\n" for path in sorted(index[split]))
    held_path = os.path.join(out_dir, HELD_TEST_INDEX)
    if held_test:
        with open(held_path, "w", encoding="utf-8") as fh:
            fh.writelines(path + "\n" for path in sorted(held_test))
    elif os.path.exists(held_path):
        os.remove(held_path)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON through a temporary file, so a reader never sees half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(jsonable(data), fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)


__all__ = [
    "FORMAT_VERSION", "FRACTIONS", "FRAMES_DIR", "HELD_TEST_INDEX", "MANIFEST", "SOURCE_DONE", "SPLITS",
    "TARGET_SUFFIX", "jsonable", "source_dir", "split_groups", "target_path", "write_index", "write_json",
]
