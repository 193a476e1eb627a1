"""The decoder's last steps in torch, on the device its networks run on.

``Codec.render`` and ``Codec.deblocked`` run on the host in numpy (the reference ISP's own
colour stage, :mod:`rawdiff.codec.deblock`). A decoder whose networks run on an accelerator
would copy the float frame to the host and spend there most of a frame's time: at 1936x1112
the colour stage and the deblocking filter took 0.65 s of numpy on a 2-core CPU, a hundred
times what the networks take on a GPU. Here the same steps run on the network's output where
it lies, and one uint8 image crosses to the host::

    decoder output (3 x H x W float, device)
      --crop--> colour statistics of the code cells (float64, device) --> transport map (host, 3x3)
      --map, colour matrix, clip, sRGB curve, tone curve, round--> integer levels (device)
      --deblocking filter--> uint8 H x W x 3 (host)

The colour stage is the numpy one's arithmetic in float32; products and powers may round
differently, so a level can differ by one from the host's in rare pixels. The deblocking
filter is exact arithmetic on integer levels (its decisions in 256ths of a level) and gives
the host filter's bytes for the same levels, on any device.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from rawdiff.codec.colour_stats import _statistics
from rawdiff.codec.deblock import LUMA_256, Deblock


def cell_statistics(rgb: torch.Tensor, factor: int) -> Tuple[float, ...]:
    """:func:`rawdiff.codec.colour_stats.rgb_statistics` of a 3 x H x W camera RGB tensor: the
    means of its whole ``factor`` x ``factor`` cells in float64 on the device, their mean and
    covariance on the host (a few ten thousand cells)."""
    cell = max(1, int(factor))
    h, w = rgb.shape[1] // cell * cell, rgb.shape[2] // cell * cell
    if h == 0 or w == 0:
        cells = rgb.reshape(3, -1).double().mean(dim=1, keepdim=True)
    else:
        blocks = rgb[:, :h, :w].double().reshape(3, h // cell, cell, w // cell, cell)
        cells = blocks.mean(dim=(2, 4)).reshape(3, -1)
    return _statistics(cells.t().cpu().numpy())


def _affine(rgb: torch.Tensor, matrix: np.ndarray, offset: Optional[np.ndarray] = None) -> torch.Tensor:
    """``matrix @ x (+ offset)`` of every pixel of a 3 x H x W tensor, float32."""
    m = torch.as_tensor(np.asarray(matrix, dtype=np.float32), device=rgb.device)
    out = torch.einsum("ij,jhw->ihw", m, rgb)
    if offset is not None:
        out = out + torch.as_tensor(np.asarray(offset, dtype=np.float32), device=rgb.device)[:, None, None]
    return out


def colour_stage(rgb: torch.Tensor, ccm: Optional[np.ndarray], tone_curve: str, colour_map=None) -> torch.Tensor:
    """What ``Codec._render_piece`` does before its rounding, on a 3 x H x W float32 tensor:
    the colour map (``(A, b)`` or None), then for a colour-exact decoder (``ccm`` not None)
    :func:`rawdiff.raw.isp.colour_stage` (colour matrix, clip, sRGB curve, tone curve)."""
    from rawdiff.raw.isp import TONE_CURVES

    x = rgb.float()
    if colour_map is not None:
        x = _affine(x, colour_map[0], colour_map[1]).clamp_(0.0, 1.0)
    if ccm is None:
        return x
    if tone_curve not in TONE_CURVES:
        raise ValueError("tone_curve %r is not one of %s" % (tone_curve, ", ".join(TONE_CURVES)))
    x = _affine(x, ccm).clamp_(0.0, 1.0)
    x = torch.where(x <= 0.0031308, 12.92 * x, 1.055 * torch.pow(torch.clamp(x, min=0.0031308), 1.0 / 2.4) - 0.055)
    if tone_curve == "smoothstep":
        x = x.clamp(0.0, 1.0)
        x = x * x * (3.0 - 2.0 * x)
    return x


def to_levels(rgb: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> its nearest of the 256 levels (ties to even, as ``np.round``), float32."""
    return torch.round(rgb * 255.0).clamp_(0.0, 255.0)


def _across(x: torch.Tensor, dim: int, cell: int, setting: Deblock) -> None:
    """:func:`rawdiff.codec.deblock._across_columns` of a 3 x H x W tensor of levels across the
    cell edges along ``dim`` (2: the vertical edges, 1: the horizontal ones), in place."""
    n, width = setting.taps, x.shape[dim]
    reach = max(n, 3)
    edges = (width - reach) // cell
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

    def luma(a: torch.Tensor) -> torch.Tensor:
        return LUMA_256[0] * a[0] + LUMA_256[1] * a[1] + LUMA_256[2] * a[2]

    p0, p1, p2 = p(0), p(1), p(2)
    q0, q1, q2 = q(0), q(1), q(2)
    step = q0 - p0
    excess = step - 0.5 * ((p0 - p1) + (q1 - q0))
    bend = torch.abs(luma(p2 - 2 * p1 + p0)) + torch.abs(luma(q2 - 2 * q1 + q0))
    flat = (torch.abs(luma(step)) < 256.0 * setting.beta) & (bend < 128.0 * setting.beta)
    e = torch.clamp(excess, -setting.clip, setting.clip) * flat[None]
    for j in range(n):
        change = e * float(np.float32((n - j) / (2.0 * n)))
        p(j).add_(change)
        q(j).sub_(change)
    torch.round(x, out=x).clamp_(0.0, 255.0)


def deblock(levels: torch.Tensor, cell: int, setting: Optional[Deblock]) -> torch.Tensor:
    """The deblocking filter (:func:`rawdiff.codec.deblock.deblock`) of a 3 x H x W float32
    tensor of integer levels, whole (no strips: the frame is in device memory already), in
    place; returned for chaining. ``setting`` None leaves it."""
    if setting is None:
        return levels
    if not 1 <= setting.taps <= cell // 2:
        raise ValueError("deblock taps must be in [1, %d] for cells of %d pixels, got %d"
                         % (cell // 2, cell, setting.taps))
    _across(levels, 2, cell, setting)
    _across(levels, 1, cell, setting)
    return levels


def to_host(levels: torch.Tensor) -> np.ndarray:
    """3 x H x W integer levels -> uint8 H x W x 3 on the host."""
    return levels.to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


__all__ = ["cell_statistics", "colour_stage", "deblock", "to_host", "to_levels"]
