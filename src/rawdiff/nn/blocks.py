"""Convolutional building blocks shared by the embedder and the diffusion UNet.

After taming-transformers / latent-diffusion (Esser et al. 2021, Rombach et al. 2022):
GroupNorm + SiLU residual blocks, strided-conv downsampling, nearest + conv upsampling.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also takes groups of one value each (one channel a group over a
    1x1 map: what a frame of one cell gives a narrow network). Torch refuses such input for
    a batch of one; the formula gives 0 there for any eps > 0 (the value is its group's mean),
    so the output is the bias, as torch gives for the same input in a larger batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 2 and self.num_channels // self.num_groups * x[:1, :1].numel() == 1:
            out = torch.zeros_like(x)
            if self.affine:
                out = out + self.bias.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
            return out
        return super().forward(x)


def normalize(channels: int) -> GroupNorm:
    """GroupNorm with up to 32 groups that divide ``channels``."""
    groups = 32
    while channels % groups:
        groups //= 2
    return GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """Pre-activation residual block; adds a projected embedding when ``emb_channels``."""

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, emb_channels: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels) if emb_channels else None
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb_proj is not None and emb is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError("activation must be one of %s, got %r" % (", ".join(sorted(ACTIVATIONS)), name))
    return ACTIVATIONS[name]()


class PlainResBlock(nn.Module):
    """Residual block without normalisation (Lim et al. 2017, EDSR): ``x + conv(act(conv(x)))``.

    Every conv is followed by its activation or by the residual addition, which inference
    engines fuse into the convolution (onnxruntime's FusedConv / NCHWc kernels); and with no
    GroupNorm the output at a position does not depend on the size of the frame, so a model
    trained on crops encodes whole frames the same way."""

    def __init__(self, channels: int, act: str = "relu"):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = activation(act)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv (zero pad right/bottom like taming)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest neighbour then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
