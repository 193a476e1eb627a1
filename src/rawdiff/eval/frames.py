"""The frames of a ``rawdiff eval`` run and their references.

    DATA... (index files, folders, RAW files) --find_frames()--> RAW frame paths
    path --load_frame()--> (RawFrame, reference RGB, info)
        reference: the prepared target X.rgb.png next to X when there is one, else the
        reference ISP's rendering of the frame; an optional centre crop (CFA phase kept)

Every image of the evaluation is measured against the reference of its frame.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

from rawdiff.data.layout import TARGET_SUFFIX, target_path
from rawdiff.data.sources import LIST_SUFFIXES
from rawdiff.raw import read_raw
from rawdiff.raw.io import PACKED_SUFFIXES, RAWPY_SUFFIXES
from rawdiff.raw.isp import render


def find_frames(data: Sequence[str]) -> List[str]:
    """RAW frame files named by ``data``: index files (``.txt``/``.lst``, one path a line,
    relative to the index file), folders (searched recursively for camera RAW files,
    ``.npy`` mosaics, and PNG/TIFF/packed files that have a ``.json`` sidecar), or files."""
    from rawdiff.data.dataset import read_index

    frames: List[str] = []
    for item in data:
        suffix = os.path.splitext(item)[1].lower()
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    stem, ext = os.path.splitext(name)
                    ext = ext.lower()
                    path = os.path.join(root, name)
                    if ext in RAWPY_SUFFIXES or ext == ".npy":
                        frames.append(path)
                    elif ((ext in (".png", ".tif", ".tiff") or ext in PACKED_SUFFIXES)
                          and not name.endswith(TARGET_SUFFIX) and os.path.isfile(os.path.join(root, stem + ".json"))):
                        frames.append(path)
        elif suffix in LIST_SUFFIXES and os.path.isfile(item):
            frames.extend(read_index(item))
        elif os.path.isfile(item):
            frames.append(item)
        else:
            raise FileNotFoundError("%s does not exist" % item)
    frames = list(dict.fromkeys(frames))
    if not frames:
        raise ValueError("no RAW frames found in %s" % " ".join(data))
    return frames


def load_frame(path: str, max_pixels: Optional[int] = None):
    """``(frame, reference, info)``: the RAW frame (even size; the centre crop of at most
    ``max_pixels`` pixels when given) and its reference RGB image: the prepared target
    ``X.rgb.png`` next to ``X`` when there is one (``info["reference"] == "target"``), else
    the reference ISP's rendering (``"isp"``); ``info["cropped_from"]`` is the size before
    cropping, or None."""
    import cv2

    from rawdiff.metrics import centre_crop

    frame = read_raw(path)
    if frame.height % 2 or frame.width % 2:  # the CFA needs even sizes; the phase is kept
        frame = frame.copy(mosaic=frame.mosaic[: frame.height // 2 * 2, : frame.width // 2 * 2])
    ref, kind = None, "isp"
    target = target_path(path)
    if os.path.isfile(target):
        bgr = cv2.imread(target, cv2.IMREAD_COLOR)
        if bgr is not None and bgr.shape[:2] == frame.shape:
            ref, kind = np.ascontiguousarray(bgr[:, :, ::-1]), "target"
    if ref is None:
        ref = render(frame)
    info = {"reference": kind, "cropped_from": None}
    if max_pixels and frame.height * frame.width > max_pixels:
        info["cropped_from"] = [frame.height, frame.width]
        frame = frame.copy(mosaic=np.ascontiguousarray(centre_crop(frame.mosaic, max_pixels)))
        ref = np.ascontiguousarray(centre_crop(ref, max_pixels))
    return frame, ref, info
