"""The decoder's last steps in torch, on the device its networks run on.

``Codec.render`` and ``Codec.deblocked`` run on the host in numpy (the reference ISP's own
colour stage) and in strips on the CPU. A decoder whose networks run on an accelerator would
copy the float frame to the host and spend there most of a frame's time: at 1936x1112 the
colour stage and the deblocking filter took 0.27 s and 0.22 s of numpy on an H200's host
against 7 ms for the fast decoder's networks on the GPU. Here the same steps run on the
network's output where it lies, and one uint8 image crosses to the host::

    decoder output (3 x H x W float, device)
      --crop--> code-cell means (float32, device) --> their mean and covariance (float64,
      host) --> transport map (host, 3x3)
      --map, colour matrix, clip, sRGB curve, tone curve, round--> integer levels (device)
      --deblocking filter (rawdiff.codec.deblock.filter_levels)--> uint8 H x W x 3 (host)

The colour stage is the numpy one's arithmetic in float32, per pixel; products and powers may
round differently, so a level can differ by one from the host's in rare pixels. The
deblocking filter is one implementation for both (exact arithmetic on integer levels): the
host's bytes on any device. Memory: besides the float frame (12 bytes a pixel), the colour
stage holds about three more frames of float32 at its peak.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from rawdiff.codec.colour_stats import _statistics


def cell_statistics(rgb: torch.Tensor, factor: int) -> Tuple[float, ...]:
    """:func:`rawdiff.codec.colour_stats.rgb_statistics` of a 3 x H x W camera RGB tensor: the
    means of its whole ``factor`` x ``factor`` cells pooled on the device (float32), their
    mean and covariance in float64 on the host (a few ten thousand cells; a device without
    float64 is fine)."""
    cell = max(1, int(factor))
    h, w = rgb.shape[1] // cell * cell, rgb.shape[2] // cell * cell
    if h == 0 or w == 0:  # smaller than a cell: the whole image is one
        cells = rgb.float().reshape(3, -1).mean(dim=1, keepdim=True)
    else:
        cells = F.avg_pool2d(rgb[None, :, :h, :w].float(), cell)[0].reshape(3, -1)
    return _statistics(cells.cpu().double().numpy().T)


def _affine(rgb: torch.Tensor, matrix: np.ndarray, offset: Optional[np.ndarray] = None) -> torch.Tensor:
    """``matrix @ x (+ offset)`` of every pixel of a 3 x H x W tensor, float32: three
    multiply-adds a channel (no matrix product, which may run in reduced precision)."""
    m = np.asarray(matrix, dtype=np.float32)
    b = None if offset is None else np.asarray(offset, dtype=np.float32)
    out = torch.empty_like(rgb)
    for i in range(3):
        channel = rgb[0] * float(m[i, 0])
        channel.add_(rgb[1] * float(m[i, 1])).add_(rgb[2] * float(m[i, 2]))
        if b is not None:
            channel.add_(float(b[i]))
        out[i] = channel
    return out


def colour_stage(rgb: torch.Tensor, ccm: Optional[np.ndarray], tone_curve: str, colour_map=None) -> torch.Tensor:
    """What ``Codec._render_piece`` does before its rounding, on a 3 x H x W float32 tensor:
    the colour map (``(A, b)`` or None), then for a colour-exact decoder (``ccm`` not None)
    :func:`rawdiff.raw.isp.colour_stage` (colour matrix, clip, sRGB curve, tone curve)."""
    from rawdiff.raw.isp import TONE_CURVES

    if ccm is not None and tone_curve not in TONE_CURVES:
        raise ValueError("tone_curve %r is not one of %s" % (tone_curve, ", ".join(TONE_CURVES)))
    x = rgb.float()
    if colour_map is not None:
        x = _affine(x, colour_map[0], colour_map[1]).clamp_(0.0, 1.0)
    if ccm is None:
        return x
    x = _affine(x, ccm).clamp_(0.0, 1.0)
    toe = x <= 0.0031308
    curve = torch.clamp(x, min=0.0031308).pow_(1.0 / 2.4).mul_(1.055).sub_(0.055)
    x = torch.where(toe, x.mul_(12.92), curve, out=curve)
    if tone_curve == "smoothstep":
        x.clamp_(0.0, 1.0)
        x = (x * x).mul_(x.mul(-2.0).add_(3.0))
    return x


def to_levels(rgb: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> its nearest of the 256 levels (ties to even, as ``np.round``), float32."""
    return torch.round(rgb * 255.0).clamp_(0.0, 255.0)


def to_host(levels: torch.Tensor) -> np.ndarray:
    """3 x H x W integer levels -> uint8 H x W x 3 on the host."""
    return levels.to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


__all__ = ["cell_statistics", "colour_stage", "to_host", "to_levels"]
