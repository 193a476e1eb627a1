"""Encoding a frame in horizontal strips, so the encoder's memory grows with a strip.

    planes (4 x h x w) --plan_strips(rows, halo, align)--> strips: a core of ``rows`` plane
    rows and, above and below it, a halo
    each strip: encoder(planes[core + halo]) --crop each stage's grid to the core--> codes

Why: the code search holds a table of distances to every code at every position of a stage
(256 or 512 float32 a cell), so ``compress`` of a whole 8 Mpixel frame peaked at 1277 MiB
with onnxruntime; a vehicle has a camera or several of that size. In strips the tables are a
strip's; each strip recomputes a halo of 24 plane rows above and below its core, which is
what strips cost in time (``benchmarks/encoder_speed.py --encode-rows``). The default strip
(576 plane rows, ``limits.DEFAULT_ENCODE_ROWS``) keeps a 1936x1112 frame whole and cuts the
memory of an 8 Mpixel one by 32 % in the same time; 256 rows cut it to 37 % for 7 to 16 %
more time. On the CPU only: a GPU library picks kernels per input shape (the codec codes
whole frames there).

Why the codes are the whole frame's, exactly: an encoder without a network (the analysis is
a matrix per cell) searches each position from its own cell, except where a coarse stage's
code is spread over the finer grid (bilinearly, :func:`rawdiff.models.quantize.expand_to`)
and a later stage searches what it left (pooled, ``pool_to``). Each such step lets a code
depend on cells a little further away; :func:`quantizer_reach` counts how far, and a halo
at least that wide, aligned to the coarsest stage's cells, gives every core code the inputs
it has in the whole frame. ``test/test_encode_strips.py`` checks equality on noise, where any
shortfall shows. An encoder with a network (convolutions, a frame-wide context vector) has
no such bound: the codec codes it whole. The bound is loose by half a coarse cell per coarse
stage (a coarse codeword reaches half a coarse cell into its neighbour): for the shipped
stages 6 finest cells where 5 suffice, which the alignment to a coarse cell rounds to the
same 24 plane rows.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import numpy as np


def quantizer_reach(scales: Sequence[int]) -> int:
    """How many finest-grid cells beyond its own a code may depend on, for residual stages of
    these scales (coarse to fine; 1 for the finest grid). Stage k searches the residual pooled
    to its grid (a wrong fine cell spoils the coarse cell holding it) and, when a later stage
    follows, leaves its codeword spread bilinearly over the fine grid (a coarse cell then
    reaches into its neighbours, up to one coarse cell further)."""
    scales = [int(s) for s in scales]
    if not scales or min(scales) < 1:
        raise ValueError("stage scales must be a non-empty list of integers >= 1, got %s" % (scales,))
    reach = 0
    for k, s in enumerate(scales):
        if s > 1 and k < len(scales) - 1:
            coarse = -(-reach // s)  # coarse cells a wrong fine cell spoils
            reach = max(reach, (coarse + 1) * s)
    return reach


def strip_halo(scales: Sequence[int], plane_multiple: int) -> Tuple[int, int]:
    """(halo, align) in plane rows: the halo each strip needs above and below its core so its
    codes are the whole frame's, and the alignment of strip edges (a cell of the coarsest
    stage); the halo is a multiple of the alignment."""
    coarsest = max(int(s) for s in scales)
    if any(coarsest % int(s) for s in scales):
        raise ValueError("stage scales must each divide the coarsest, got %s" % (list(scales),))
    align = int(plane_multiple) * coarsest
    need = quantizer_reach(scales) * int(plane_multiple)
    return -(-need // align) * align, align


def plan_strips(height: int, rows: int, halo: int, align: int) -> List[Tuple[int, int, int, int]]:
    """(core start, core end, input start, input end) plane rows of each strip of a frame of
    ``height`` plane rows; cores of ``rows`` rounded up to ``align``, the last one shorter."""
    if height < 1:
        raise ValueError("a frame needs at least one plane row, got %d" % height)
    if rows < 1 or align < 1 or halo < 0:
        raise ValueError("strip rows and alignment must be >= 1 and the halo >= 0, got %d, %d, %d"
                         % (rows, align, halo))
    rows = -(-int(rows) // align) * align
    return [(y0, min(height, y0 + rows), max(0, y0 - halo), min(height, y0 + rows + halo))
            for y0 in range(0, height, rows)]


def encode_in_strips(encode: Callable[[np.ndarray], Sequence[np.ndarray]], planes: np.ndarray,
                     scales: Sequence[int], plane_multiple: int, rows: int) -> List[np.ndarray]:
    """The code grids of ``planes`` (4 x h x w) computed strip by strip by ``encode`` (planes
    -> one grid per stage, coarse to fine, as for the whole frame; it pads to
    ``plane_multiple`` itself), joined: equal to ``encode(planes)`` for an encoder whose codes
    depend only on the samples :func:`quantizer_reach` allows. ``rows`` <= 0, or a frame of one
    strip, calls ``encode`` once on the whole frame."""
    height = int(planes.shape[-2])
    if rows <= 0 or height <= rows:
        return list(encode(planes))
    halo, align = strip_halo(scales, plane_multiple)
    parts: List[List[np.ndarray]] = []
    for y0, y1, a, b in plan_strips(height, rows, halo, align):
        grids = encode(planes[:, a:b])
        if len(grids) > len(scales):
            raise ValueError("the encoder gave %d code grids for %d stages" % (len(grids), len(scales)))
        kept = []
        for grid, s in zip(grids, scales):
            cell = int(plane_multiple) * int(s)
            first = (y0 - a) // cell
            kept.append(grid[first: first + -(-(y1 - y0) // cell)])
        parts.append(kept)
    return [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(parts[0]))]
