"""Denoising UNet for latent diffusion (Ronneberger et al. 2015; Ho et al. 2020; Dhariwal &
Nichol 2021; Rombach et al. 2022), with the blocks of :mod:`rawdiff.nn`.

    x_t (C) ++ concat condition --conv_in--> [ResBlock(+t) (+SelfAttn) (+CrossAttn)] x n, Downsample
        ... lowest level ... middle: ResBlock, SelfAttn, CrossAttn, ResBlock
        ... [ResBlock(+t, skip) (+SelfAttn) (+CrossAttn)] x (n+1), Upsample --norm, SiLU, conv_out--> output (C)

- The timestep enters every ResBlock through a sinusoidal embedding and an MLP (DDPM).
- Self-attention runs in ``attention_window`` x ``attention_window`` windows (0: the whole
  map). A window the size of the training crop's lowest level sees in training exactly
  what it sees on a whole frame, so cost and attention statistics do not change with the
  frame size (Liu et al. 2021, *Swin*, without the shift).
- Cross-attention queries the feature map against a context sequence (B x N x context_dim).
- Any input size: the input is replicate-padded to a multiple of 2^(levels - 1) and the
  output cropped back.
- ``conv_out`` starts at zero, so an untrained network predicts 0 (Dhariwal & Nichol 2021).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rawdiff.nn.attention import CrossAttention, SelfAttention2d
from rawdiff.nn.blocks import Downsample, ResBlock, Upsample, normalize


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: B -> B x dim (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class WindowAttention(nn.Module):
    """:class:`SelfAttention2d` within non-overlapping ``window`` x ``window`` tiles (0: global)."""

    def __init__(self, channels: int, heads: int = 4, window: int = 0):
        super().__init__()
        self.attn = SelfAttention2d(channels, heads)
        self.window = int(window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.window
        b, c, h, w = x.shape
        if k <= 0 or (h <= k and w <= k):
            return self.attn(x)
        ph, pw = (-h) % k, (-w) % k
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        nh, nw = (h + ph) // k, (w + pw) // k
        tiles = x.reshape(b, c, nh, k, nw, k).permute(0, 2, 4, 1, 3, 5).reshape(b * nh * nw, c, k, k)
        out = self.attn(tiles).reshape(b, nh, nw, c, k, k).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * k, nw * k)
        return out[:, :, :h, :w]


class Stage(nn.ModuleList):
    """Layers run in order; ResBlocks get the timestep embedding, cross-attention the context."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, CrossAttention):
                h = layer(h, context)
            else:
                h = layer(h)
        return h


class UNet(nn.Module):
    """Args:
        in_channels: channels of x_t (and of the output unless ``out_channels``).
        cond_channels: channels of the condition concatenated to x_t (0: none).
        model_channels, ch_mult, num_res_blocks: width, per-level multipliers, blocks per level.
        attention_levels: levels (0 = full resolution; negative from the lowest) with
            self-attention; the middle block always has it when the list is not empty.
        attention_window: self-attention window at every level (0 = global).
        context_dim: width of the context tokens (0: no cross-attention).
        cross_attention_levels: levels with cross-attention (and the middle block, when not empty).
    """

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, cond_channels: int = 0,
                 model_channels: int = 64, ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_levels: Sequence[int] = (-1,), attention_window: int = 8, heads: int = 4,
                 context_dim: int = 0, cross_attention_levels: Sequence[int] = (-1,), dropout: float = 0.0):
        super().__init__()
        levels = len(ch_mult)
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.multiple = 2 ** (levels - 1)
        attn = {lv % levels for lv in attention_levels}
        cross = {lv % levels for lv in cross_attention_levels} if context_dim else set()
        mc = model_channels
        emb_ch = 4 * mc
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.conv_in = nn.Conv2d(in_channels + cond_channels, mc, 3, padding=1)

        def extras(level: int, ch: int):
            out = []
            if level in attn:
                out.append(WindowAttention(ch, heads, attention_window))
            if level in cross:
                out.append(CrossAttention(ch, context_dim, heads))
            return out

        self.down = nn.ModuleList()
        skips = [mc]
        ch = mc
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(Stage([ResBlock(ch, mc * mult, emb_ch, dropout)] + extras(level, mc * mult)))
                ch = mc * mult
                skips.append(ch)
            if level < levels - 1:
                self.down.append(Stage([Downsample(ch)]))
                skips.append(ch)
        middle = [ResBlock(ch, ch, emb_ch, dropout)]
        if attn:
            middle.append(WindowAttention(ch, heads, attention_window))
        if cross:
            middle.append(CrossAttention(ch, context_dim, heads))
        self.middle = Stage(middle + [ResBlock(ch, ch, emb_ch, dropout)])
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            mult = ch_mult[level]
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mc * mult, emb_ch, dropout)] + extras(level, mc * mult)
                ch = mc * mult
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.up.append(Stage(layers))
        self.norm_out = normalize(ch)
        self.conv_out = nn.Conv2d(ch, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, concat: Optional[torch.Tensor] = None,
                context: Optional[torch.Tensor] = None) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        if self.cond_channels:
            if concat is None or concat.shape[1] != self.cond_channels:
                raise ValueError("the UNet needs a %d-channel concat condition, got %s"
                                 % (self.cond_channels, None if concat is None else tuple(concat.shape)))
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        ph, pw = (-h0) % self.multiple, (-w0) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb, context)
            hs.append(h)
        h = self.middle(h, emb, context)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb, context)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[:, :, :h0, :w0]
