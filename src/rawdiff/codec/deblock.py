"""The decoder's deblocking filter: the steps a cell decoder leaves at its cells' edges.

The decoder makes each 8 x 8 cell of the frame from the latents around it, and where the
codes of neighbouring cells disagree their edges meet with a step: on flat areas, an 8-pixel
grid (``rawdiff.metrics.grid_strength``). Codecs with block transforms have a deblocking
filter for the same reason (H.264 and HEVC in the loop; here after the decoder, so that it
changes no stream and the encoder does not see it). Across every cell edge:

    p2 p1 p0 | q0 q1 q2                        (one row across a vertical edge)
    excess = (q0 - p0) - ((p0 - p1) + (q1 - q0)) / 2
             the step beyond what the gradients on both sides continue to
    filtered only where the edge is not in the scene: |luma step| < beta and the luma's
    second differences on both sides, summed, < beta / 2
    e = clip(excess, -clip, clip)                                   (each channel)
    p_i += e (n - i) / (2 n),  q_i -= e (n - i) / (2 n),  i < n = taps
             the excess spread as a ramp over the 2 n pixels around the edge

first across the vertical edges, then across the horizontal ones, on the uint8 sRGB image,
rounded to integer levels after each (the decisions are exact integer arithmetic, luma
weights in 256ths, so the filter gives the same bytes on any machine and device). With
``taps`` at most half the cell, what one edge reads and changes never meets another edge's,
so the filter is exact in strips of rows (memory grows with the strip, not the frame) and a
frame decoded in tiles is filtered as a whole one. One implementation in torch
(:func:`filter_levels`): the host filters uint8 images with it in strips on the CPU, a
decoder rendering on its GPU its levels there (:mod:`rawdiff.codec.device_render`).

Settings are per operating point (model.json's ``deblock``: ``taps``, ``clip``, ``beta``, a list
each, one an operating point; zeros where a point is not filtered); ``rawdiff fit-deblock``
chooses them on the validation split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from rawdiff.codec.modeldir import deblocked_qualities

if TYPE_CHECKING:  # torch is imported where the filter runs: a vehicle that only encodes has none
    import torch

#: BT.601 luma weights in 256ths (the decision is on the sRGB luma, as rawdiff.metrics' grid
#: figure's; integers, so that it is exact arithmetic on the integer levels)
LUMA_256 = (77.0, 150.0, 29.0)
#: rows filtered at a time (a multiple of every cell size used)
STRIP_ROWS = 256
#: the candidates ``rawdiff fit-deblock`` tries at each operating point
CANDIDATES = tuple((n, c, b) for n in (2, 3, 4) for c in (4.0, 8.0, 16.0) for b in (16.0, 32.0, 64.0))


class Deblock(NamedTuple):
    """One operating point's filter: ``taps`` pixels on each side of an edge (1 .. cell / 2),
    the largest change ``clip`` (levels), and ``beta``: the largest luma step (and twice the
    largest sum of the sides' second differences) that is taken for a cell's edge rather than
    the scene's."""

    taps: int
    clip: float
    beta: float


def settings_of(entry, quality: int) -> Optional[Deblock]:
    """The filter of operating point ``quality`` (1-based) in a ``deblock`` entry checked by
    :func:`rawdiff.codec.modeldir.check_deblock_entry`, or None where it filters nothing."""
    if int(quality) not in deblocked_qualities(entry):
        return None
    i = int(quality) - 1
    return Deblock(int(entry["taps"][i]), float(entry["clip"][i]), float(entry["beta"][i]))


def deblock_filters(entry, qualities: int) -> Optional[Tuple[Optional[Deblock], ...]]:
    """The filter of each of ``qualities`` operating points of a checked ``deblock`` entry (None
    where it filters nothing), or None for no entry: made once, when a codec is loaded."""
    return None if entry is None else tuple(settings_of(entry, q) for q in range(1, qualities + 1))


def _across(x: torch.Tensor, dim: int, cell: int, setting: Deblock) -> None:
    """Filter ``x`` (3 x rows x columns, float32 integer levels) across the cell edges along
    ``dim`` (2: the vertical edges, 1: the horizontal ones), in place. The j-th pixel before
    (p_j) and after (q_j) every edge are strided views of ``x``."""
    n, width = setting.taps, x.shape[dim]
    reach = max(n, 3)
    edges = (width - reach) // cell  # the edges at cell, 2 cell, ... that have reach pixels after them
    if edges < 1:
        return
    stop = cell * edges

    def side(start: int, end: int) -> torch.Tensor:
        index = [slice(None)] * x.dim()
        index[dim] = slice(start, end, cell)
        return x[tuple(index)]

    def p(j: int) -> torch.Tensor:
        return side(cell - 1 - j, stop - j)

    def q(j: int) -> torch.Tensor:
        return side(cell + j, stop + j + 1)

    def luma(a: torch.Tensor) -> torch.Tensor:  # 256 times the luma, exact on integer levels
        return LUMA_256[0] * a[0] + LUMA_256[1] * a[1] + LUMA_256[2] * a[2]

    import torch

    p0, p1, p2 = p(0), p(1), p(2)
    q0, q1, q2 = q(0), q(1), q(2)
    step = q0 - p0
    excess = step - 0.5 * ((p0 - p1) + (q1 - q0))
    bend = torch.abs(luma(p2 - 2 * p1 + p0)) + torch.abs(luma(q2 - 2 * q1 + q0))
    flat = (torch.abs(luma(step)) < 256.0 * setting.beta) & (bend < 128.0 * setting.beta)
    e = torch.clamp(excess, -setting.clip, setting.clip) * flat[None]
    for j in range(n):
        change = e * float(np.float32((n - j) / (2.0 * n)))  # the float32 ramp weight, exactly
        p(j).add_(change)
        q(j).sub_(change)
    torch.round(x, out=x).clamp_(0.0, 255.0)  # integer levels again (ties to even), as the next pass reads them


def check_taps(cell: int, setting: Deblock) -> None:
    """A ValueError unless ``setting.taps`` is in [1, cell / 2]."""
    if not 1 <= setting.taps <= cell // 2:
        raise ValueError("deblock taps must be in [1, %d] for cells of %d pixels, got %d"
                         % (cell // 2, cell, setting.taps))


def filter_levels(levels: torch.Tensor, cell: int, setting: Optional[Deblock]) -> torch.Tensor:
    """The filter of a 3 x H x W float32 tensor of integer levels (any device; its cells
    starting at the top-left pixel), in place, whole; returned for chaining. ``setting``
    None leaves it."""
    if setting is None:
        return levels
    check_taps(cell, setting)
    _across(levels, 2, cell, setting)
    _across(levels, 1, cell, setting)
    return levels


def deblock(rgb: np.ndarray, cell: int, setting: Optional[Deblock], strip_rows: int = STRIP_ROWS) -> np.ndarray:
    """``rgb`` (uint8 H x W x 3, its cells starting at the top-left pixel) filtered across its
    cells' edges (module docstring), in strips of rows on the CPU; a new array. ``setting``
    None returns ``rgb``."""
    if setting is None:
        return rgb
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("deblock needs a uint8 H x W x 3 image, got %s %s" % (rgb.dtype, rgb.shape))
    check_taps(cell, setting)
    import torch

    height = rgb.shape[0]
    rows = max(cell, int(strip_rows) // cell * cell)
    out = np.empty_like(rgb)
    with torch.inference_mode():
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            lo, hi = max(0, top - cell), min(height, bottom + cell)  # a cell of context: the edges at top and bottom
            x = torch.from_numpy(np.ascontiguousarray(rgb[lo:hi].transpose(2, 0, 1))).float()
            filter_levels(x, cell, setting)  # lo is a multiple of the cell: the strip's edges are the frame's
            out[top:bottom] = x[:, top - lo: bottom - lo].to(torch.uint8).permute(1, 2, 0).numpy()
    return out


def entry_of(settings: Sequence[Optional[Deblock]]) -> dict:
    """The settings as model.json's ``deblock`` entry (lists, one an operating point; None,
    no filter, as zeros)."""
    settings = [s if s is not None else Deblock(0, 0.0, 0.0) for s in settings]
    return {"taps": [int(s.taps) for s in settings], "clip": [float(s.clip) for s in settings],
            "beta": [float(s.beta) for s in settings]}


__all__ = ["CANDIDATES", "Deblock", "deblock", "deblock_filters", "entry_of", "filter_levels", "settings_of"]
