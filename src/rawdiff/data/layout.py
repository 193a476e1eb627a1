"""The layout of a prepared dataset: where each file goes, the split, the index files.

    OUT/frames/<source>/<frame>.npy (+ .json)   a RAW frame (:func:`rawdiff.raw.io.write_raw`)
    OUT/frames/<source>/<frame>.rgb.png         its RGB target (:func:`target_path`)
    OUT/frames/<source>/source.json             written last: the source is done
    OUT/train.txt  val.txt  test.txt            the index: ``.npy`` paths relative to OUT
    OUT/manifest.json                           sources, settings, split and summary

The split is by source *group* (all frames of a video, the two views of a stereo pair):
groups are ordered by ``sha256(seed, group)`` and cut 0.6 / 0.2 / 0.2 (rounded; with 3 or
more groups every split gets at least one), so it is deterministic and independent of the
order the sources are given in.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, Iterable, List, Sequence, Union

import numpy as np

from rawdiff.data.corpus import slug

SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
MANIFEST = "manifest.json"
SOURCE_DONE = "source.json"
FRAMES_DIR = "frames"
TARGET_SUFFIX = ".rgb.png"
FORMAT_VERSION = 1


def target_path(raw_path: Union[str, os.PathLike[str]]) -> str:
    """The RGB target of a RAW frame file: ``x.npy`` -> ``x.rgb.png`` (same folder)."""
    raw_path = os.fspath(raw_path)
    stem, _ = os.path.splitext(raw_path)
    return stem + TARGET_SUFFIX


def source_dir(name: str) -> str:
    """The folder of a source's frames, relative to the output folder: ``frames/<slug>``."""
    return "%s/%s" % (FRAMES_DIR, slug(name))


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


def write_index(out_dir: str, index: Dict[str, List[str]]) -> None:
    """``train.txt``, ``val.txt``, ``test.txt``: the frames of each split, sorted, one a line."""
    for split in SPLITS:
        with open(os.path.join(out_dir, split + ".txt"), "w", encoding="utf-8") as fh:
            fh.writelines(path + "\n" for path in sorted(index[split]))


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
    "FORMAT_VERSION", "FRACTIONS", "FRAMES_DIR", "MANIFEST", "SOURCE_DONE", "SPLITS", "TARGET_SUFFIX", "jsonable",
    "source_dir", "split_groups", "target_path", "write_index", "write_json",
]
