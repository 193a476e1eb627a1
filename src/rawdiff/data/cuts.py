"""Test frames cut to a sensor size: the centre of a large prepared frame, RAW and target.

    frames/<source>/<frame>.npy + .rgb.png  --centre window, even offsets-->
    frames/<source>/<frame>.crop<W>x<H>.npy (+ .json) + .crop<W>x<H>.rgb.png

A test split of 12-20 Mpixel photos would make every evaluation (each operating point and
each standard codec's quality sweep, on a CPU) many times slower without telling more, so
:func:`rawdiff.data.prepare.prepare` can cut the test frames of the groups its split rule
placed to a sensor's size. The window lies at even offsets, so the CFA phase is the
frame's; the RAW cut comes from the written frame and the target cut from its target,
which was rendered from the whole frame (so both are exactly the frame's own pixels). The
whole frame stays on disk; the index lists the cut.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from rawdiff.data.layout import source_dir, target_path
from rawdiff.data.sources import PrepareError
from rawdiff.raw import read_raw
from rawdiff.raw.io import write_raw

CUT_MARK = ".crop"


def centre_window(height: int, width: int, cut: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """(top, left, rows, columns) of the centred window of at most ``cut`` (rows, columns)
    in an even-sized frame, at even offsets."""
    rows, cols = min(height, cut[0]), min(width, cut[1])
    return (height - rows) // 2 & ~1, (width - cols) // 2 & ~1, rows, cols


def cut_frames(entry: dict, out_dir: str, cut: Optional[Tuple[int, int]]) -> int:
    """Replace the frames of a manifest ``entry`` larger than ``cut`` by their centre window.

    Each cut is written once (a later run finds it) and recorded in its frame entry as
    ``cut_from`` (the whole frame's file, the window). Cut files of the source that this
    call does not use (``cut=None``, or another size) are removed. Returns the number of
    frames cut.
    """
    import cv2

    frames, keep, n_cut = [], set(), 0
    for fr in entry["frames"]:
        h, w = fr["height"], fr["width"]
        if cut is None or (h <= cut[0] and w <= cut[1]):
            frames.append(fr)
            continue
        top, left, rows, cols = centre_window(h, w, cut)
        raw_rel = "%s%s%dx%d.npy" % (os.path.splitext(fr["raw"])[0], CUT_MARK, cols, rows)
        raw_abs = os.path.join(out_dir, raw_rel)
        target_abs = target_path(raw_abs)
        keep.update(os.path.basename(p) for p in (raw_abs, os.path.splitext(raw_abs)[0] + ".json", target_abs))
        if not (os.path.isfile(raw_abs) and os.path.isfile(target_abs)):
            frame = read_raw(os.path.join(out_dir, fr["raw"]))
            target = cv2.imread(os.path.join(out_dir, fr["target"]), cv2.IMREAD_UNCHANGED)
            if target is None or target.shape[:2] != (h, w):
                raise PrepareError("%s: the target of %s is missing or not %dx%d; prepare it again (--overwrite)"
                                   % (out_dir, fr["raw"], w, h))
            window = (slice(top, top + rows), slice(left, left + cols))
            write_raw(frame.copy(mosaic=np.ascontiguousarray(frame.mosaic[window]),
                                 extra=dict(frame.extra or {}, cut_from=[top, left, h, w])), raw_abs)
            tmp = target_abs[:-len(".png")] + ".tmp.png"
            if not cv2.imwrite(tmp, np.ascontiguousarray(target[window])):
                raise PrepareError("could not write %s" % tmp)
            os.replace(tmp, target_abs)  # last: a cut whose target exists is complete
        frames.append(dict(fr, raw=raw_rel, target=target_path(raw_rel), height=rows, width=cols,
                           cut_from={"raw": fr["raw"], "top": top, "left": left, "height": h, "width": w}))
        n_cut += 1
    folder = os.path.join(out_dir, source_dir(entry["name"]))
    if os.path.isdir(folder):
        for fname in os.listdir(folder):
            if CUT_MARK in fname and fname not in keep:
                os.remove(os.path.join(folder, fname))
    entry["frames"] = frames
    return n_cut


__all__ = ["CUT_MARK", "centre_window", "cut_frames"]
