"""VQ-GAN embedder of RAW Bayer frames (Esser et al. 2021, *Taming Transformers*).

    RAW planes R,G1,G2,B (4 x H/2 x W/2)
      --space-to-depth(stem)--> Encoder --> z (D x H/f x W/f) --VQ--> indices (H/f x W/f)
      indices --codebook--> z_q --> Decoder --depth-to-space--> RGB (3 x H x W)   [out: rgb]
                                         or white-balanced camera RGB (3 x H x W) [out: linear]
                                                           or RAW planes (4 x H/2 x W/2) [out: raw]

``f = 2 * stem * 2 ** (len(ch_mult) - 1)`` is the downsampling factor relative to the
full-resolution frame. The decoder to RGB is the thesis' embedder: its target is the
reference-ISP rendering of the frame; ``out: raw`` trains the same network to give the
planes back instead.

``out: linear`` is the colour-exact model domain: the encoder codes the white-balanced planes
(:func:`model_input`) and the decoder gives white-balanced camera RGB, the reference ISP's
signal after demosaicing; the ISP's own colour stage (colour matrix, sRGB curve, tone curve)
renders sRGB from it with the frame's parameters (:func:`rendered`), which the bitstream
carries. Colour is then sent, not guessed by the network.

:class:`Embedder` is the plain network the codec runs; ``rawdiff.models.vqgan.VQGAN``
is the Lightning module that trains it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rawdiff.codec.cell_means import (
    MEAN_TRANSFORM,
    SENT,
    check_layers,
    estimate_bounds,
    gamma_channels,
    layers_at,
    levels,
)
from rawdiff.models.quantize import ResidualQuantizer, VectorQuantizer
from rawdiff.nn.attention import SelfAttention2d
from rawdiff.nn.blocks import Downsample, PlainResBlock, ResBlock, Upsample, activation, normalize
from rawdiff.nn.colour import render_camera_rgb, white_balance_planes

PLANES = 4
OUTPUTS = ("rgb", "linear", "raw")
#: the linear synthesis of ``linear_paths``: one for all operating points, or one for each
SYNTHESES = ("shared", "per_quality")


class Encoder(nn.Module):
    """Planes (after space-to-depth) -> latent, downsampling once per ``ch_mult`` level after the first.

    ``norm: group`` is taming's encoder (GroupNorm + SiLU pre-activation blocks). ``norm: none``
    is the vehicle encoder: conv + activation, :class:`PlainResBlock` s without normalisation,
    downsampling by a 2x2 stride-2 conv; every conv fuses with its activation or residual
    addition in onnxruntime, and no statistic is taken over the frame unless
    ``global_context`` asks for one vector of them (see :meth:`forward`)."""

    def __init__(self, in_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 z_channels: int, attention: bool = False, norm: str = "group", act: str = "silu",
                 global_context: bool = False):
        super().__init__()
        if norm not in ("group", "none"):
            raise ValueError("encoder norm must be 'group' or 'none', got %r" % (norm,))
        self.plain = norm == "none"
        self.context: Optional[nn.Module] = None
        if global_context and not self.plain:
            raise ValueError("global_context is for the plain encoder (norm: none); GroupNorm already sees the frame")
        if self.plain and attention:
            raise ValueError("a plain encoder (norm: none) has no attention (its GroupNorm would normalise over "
                             "the frame); set encoder.attention: false")
        prev = ch * ch_mult[0]
        blocks: List[nn.Module] = []
        if self.plain:
            blocks += [nn.Conv2d(in_channels, prev, 3, padding=1), activation(act)]
            for level, mult in enumerate(ch_mult):
                if level > 0:
                    blocks += [nn.Conv2d(prev, ch * mult, 2, stride=2), activation(act)]
                    prev = ch * mult
                blocks += [PlainResBlock(prev, act) for _ in range(num_res_blocks)]
            blocks += [PlainResBlock(prev, act) for _ in range(2)]
            if attention:
                blocks.append(SelfAttention2d(prev))
            blocks.append(nn.Conv2d(prev, z_channels, 3, padding=1))
            self.blocks = nn.Sequential(*blocks)
            if global_context:
                width = ch * ch_mult[0]
                self.context = nn.Sequential(nn.Linear(width, width), activation(act), nn.Linear(width, 2 * width))
                nn.init.zeros_(self.context[-1].weight)  # starts as the encoder without context
                nn.init.zeros_(self.context[-1].bias)
            return
        if act != "silu":
            raise ValueError("the GroupNorm encoder uses silu, got act %r" % (act,))
        self.conv_in = nn.Conv2d(in_channels, prev, 3, padding=1)
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(prev, ch * mult))
                prev = ch * mult
            if level < len(ch_mult) - 1:
                blocks.append(Downsample(prev))
        blocks.append(ResBlock(prev))
        if attention:
            blocks.append(SelfAttention2d(prev))
        blocks.append(ResBlock(prev))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = normalize(prev)
        self.conv_out = nn.Conv2d(prev, z_channels, 3, padding=1)

    @property
    def last_conv_name(self) -> str:
        """The name (in this module) of the conv that gives the latent."""
        return "blocks.%d" % (len(self.blocks) - 1) if self.plain else "conv_out"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain and self.context is None:
            return self.blocks(x)
        if self.plain:
            # global context: the mean of the first features over the whole input modulates
            # them (FiLM), one vector a frame, as GroupNorm's frame statistics do in taming's
            # encoder; the colour of the target depends on the frame's white balance, which
            # no local window shows.
            h = self.blocks[1](self.blocks[0](x))
            gamma, beta = self.context(h.mean(dim=(2, 3))).chunk(2, dim=1)
            h = h * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]
            return self.blocks[2:](h)
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class Decoder(nn.Module):
    def __init__(self, out_channels: int, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 z_channels: int, attention: bool = False):
        super().__init__()
        prev = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, prev, 3, padding=1)
        blocks = [ResBlock(prev)]
        if attention:
            blocks.append(SelfAttention2d(prev))
        blocks.append(ResBlock(prev))
        for level in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(prev, ch * ch_mult[level]))
                prev = ch * ch_mult[level]
            if level > 0:
                blocks.append(Upsample(prev))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = normalize(prev)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))


class Refine(nn.Module):
    """A residual head at full resolution after the depth-to-space: two 3x3 convs over the
    output pixels. Depth-to-space gives the ``(2 stem)^2`` pixels of each cell from separate
    channels, which shows as a fixed pattern of that period where they disagree; this head
    sees neighbouring pixels across cells and smooths it out. Its last conv starts at zero,
    so a decoder trained without it starts unchanged."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(x)))


ENCODER_KEYS = ("ch", "ch_mult", "num_res_blocks", "stem", "attention", "norm", "act", "global_context")


class Embedder(nn.Module):
    """Encoder, codebook and decoder; no training logic.

    ``encoder`` (a dict with any of ENCODER_KEYS) gives the encoder its own shape; what it
    leaves out is the decoder's. The vehicle runs the encoder and the receiving side the
    decoder, so they need not be symmetric, but both must have the same factor ``f``."""

    def __init__(self, ch: int = 64, ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 stem: int = 2, embed_dim: int = 8, codebook_size: int = 1024, out: str = "rgb",
                 attention: bool = False, beta: float = 0.25, restart_after: int = 200,
                 encoder: Optional[Dict[str, Any]] = None, stages: Optional[Sequence[Sequence[int]]] = None,
                 refine: int = 0, rate_lambda: float = 0.0, skip_code: bool = False,
                 linear_paths: bool = False, quality_channel: bool = False, encoder_network: bool = True,
                 synthesis: str = "shared", mean_layers: Optional[Sequence[Sequence[int]]] = None):
        super().__init__()
        if synthesis not in SYNTHESES:
            raise ValueError("synthesis must be one of %s, got %r" % (", ".join(SYNTHESES), synthesis))
        if synthesis == "per_quality" and not (linear_paths and quality_channel and stages):
            raise ValueError("synthesis: per_quality needs linear_paths, quality_channel and residual stages "
                             "(it picks its weights by the decoder's quality channel)")
        if out not in OUTPUTS:
            raise ValueError("out must be one of %s, got %r" % (", ".join(OUTPUTS), out))
        enc: Dict[str, Any] = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, stem=stem,
                                   attention=attention)
        unknown = sorted(set(encoder or {}) - set(ENCODER_KEYS))
        if unknown:
            raise ValueError("unknown embedder.encoder keys %s (known: %s)" % (unknown, ", ".join(ENCODER_KEYS)))
        enc.update(encoder or {})
        self.out = out
        self.stem = int(stem)
        self.encoder_stem = int(enc.pop("stem"))
        self.factor = 2 * self.stem * 2 ** (len(ch_mult) - 1)
        encoder_factor = 2 * self.encoder_stem * 2 ** (len(enc["ch_mult"]) - 1)
        if encoder_factor != self.factor:
            raise ValueError("the encoder downsamples by %d but the decoder upsamples by %d (f = 2 * stem * "
                             "2 ** (len(ch_mult) - 1))" % (encoder_factor, self.factor))
        out_per_cell = PLANES * self.stem ** 2 if out == "raw" else 3 * (2 * self.stem) ** 2
        if not encoder_network and not linear_paths:
            raise ValueError("encoder_network: false leaves the linear analysis as the encoder; it needs "
                             "linear_paths: true")
        # without the network the vehicle's encoder is the analysis transform alone (a matrix per
        # cell) and the code search
        self.encoder: Optional[Encoder] = (Encoder(PLANES * self.encoder_stem ** 2, z_channels=embed_dim, **enc)
                                           if encoder_network else None)
        if stages:
            self.quantize = ResidualQuantizer(stages, embed_dim, beta=beta, restart_after=restart_after,
                                              rate_lambda=rate_lambda, skip_code=skip_code,
                                              normalize=not linear_paths, quality_channel=quality_channel)
        else:
            if rate_lambda or skip_code or linear_paths or quality_channel:
                raise ValueError("rate_lambda, skip_code, linear_paths and quality_channel are for a residual "
                                 "quantizer (embedder.stages)")
            self.quantize = VectorQuantizer(codebook_size, embed_dim, beta=beta, restart_after=restart_after)
        #: (scale, codebook size) of each stage; one stage of scale 1 for a plain codebook
        self.stages: List[Tuple[int, int]] = (list(self.quantize.stages) if stages
                                              else [(1, int(codebook_size))])
        self.codebook_size = self.stages[0][1]
        self.decoder = Decoder(out_per_cell, ch, ch_mult, num_res_blocks,
                               getattr(self.quantize, "out_channels", embed_dim), attention)
        self.refine: Optional[Refine] = None
        if refine:
            if out == "raw":
                raise ValueError("refine is a head on RGB outputs; out: raw has none")
            self.refine = Refine(3, int(refine))
        self.linear_paths = bool(linear_paths)
        self.per_quality = synthesis == "per_quality"
        if self.linear_paths:
            if out == "raw":
                raise ValueError("linear_paths decode to RGB; out: raw has none")
            f = self.factor
            # analysis: the 4 (f/2)^2 mosaic samples of each f x f cell -> embed_dim values,
            # fixed once fitted (a principal-component basis); synthesis: 3x3 cells of the
            # latent -> the cell's 3 f^2 output values, trained on
            self.register_buffer("analysis_weight", torch.zeros(embed_dim, PLANES * (f // 2) ** 2))
            self.register_buffer("analysis_bias", torch.zeros(embed_dim))
            # shared: one synthesis for every operating point, fixed once fitted, as the analysis
            # (trained on every operating point it would learn to blur the fine ones; the decoder
            # network, which knows the operating point, learns what is left).
            # per_quality: one synthesis per operating point (S times the weights), each the
            # least-squares estimate of the cell from that point's *coded* latent
            # (:meth:`fit_synthesis`), then trained with the network. Fitted on the unquantized
            # latent, a synthesis turns a coded latent's errors into steps at the cell edges
            # (the grid of the fast decoder); fitted on the coded one it spreads them.
            copies = self.quantize.num_stages if self.per_quality else 1
            self.synthesis = nn.Conv2d(embed_dim, copies * 3 * f * f, 3, padding=1)
            self.synthesis.requires_grad_(self.per_quality)
            self.register_buffer("linear_initialised", torch.zeros((), dtype=torch.bool))
            if self.per_quality:
                self.register_buffer("synthesis_fitted", torch.zeros((), dtype=torch.bool))
        #: (after stage, exponent) of each mean layer (rawdiff.codec.cell_means): the cells'
        #: plane means sent beside the VQ stages; the decoder moves the latent to them
        self.mean_layers = check_layers(mean_layers, len(self.stages))
        if self.mean_layers and not (self.linear_paths and self.staged):
            raise ValueError("mean_layers need linear_paths and residual stages (the means are read off "
                             "the analysis' latent)")

    @property
    def plane_multiple(self) -> int:
        """Planes (H/2 x W/2) must be a multiple of this to encode."""
        return self.factor // 2

    def encode(self, planes: torch.Tensor) -> torch.Tensor:
        """B x 4 x h x w planes (h, w multiples of plane_multiple) -> continuous latents."""
        if self.encoder is None:
            with torch.autocast(planes.device.type, enabled=False):
                return self.analysis(planes.float())
        x = F.pixel_unshuffle(planes, self.encoder_stem) if self.encoder_stem > 1 else planes
        z = self.encoder(x)
        if self.linear_paths:  # in float32: the transform's large leading values need it
            with torch.autocast(z.device.type, enabled=False):
                z = z.float() + self.analysis(planes.float())
        return z

    def analysis(self, planes: torch.Tensor) -> torch.Tensor:
        """The fixed linear transform of each cell's mosaic samples (linear_paths)."""
        cells = F.pixel_unshuffle(planes, self.factor // 2)
        return F.conv2d(cells, self.analysis_weight.to(cells.dtype)[:, :, None, None],
                        self.analysis_bias.to(cells.dtype))

    @property
    def staged(self) -> bool:
        """True for a residual quantizer (several stages, operating points)."""
        return isinstance(self.quantize, ResidualQuantizer)

    def encode_indices(self, planes: torch.Tensor) -> torch.Tensor:
        """The index grid of a plain codebook (B x h x w); a staged model: :meth:`encode_codes`."""
        if self.staged:
            raise ValueError("a model of %d quantizer stages has a grid per stage: use encode_codes"
                             % len(self.stages))
        return self.quantize.encode_indices(self.encode(planes))

    def encode_codes(self, planes: torch.Tensor, stages: Optional[int] = None) -> List[torch.Tensor]:
        """The index grids of the first ``stages`` stages (default all), coarse to fine."""
        return self.codes_of_latent(self.encode(planes), stages)

    def codes_of_latent(self, z: torch.Tensor, stages: Optional[int] = None) -> List[torch.Tensor]:
        """:meth:`encode_codes` of a latent already encoded."""
        if self.staged:
            return self.quantize.encode_indices(z, stages)
        if stages not in (None, 1):
            raise ValueError("this model has one quantizer stage, %r asked for" % (stages,))
        return [self.quantize.encode_indices(z)]

    def lookup_codes(self, codes: Sequence[torch.Tensor], shape: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Index grids (one per stage, a prefix of the stages) -> the decoder's input."""
        if isinstance(codes, torch.Tensor):
            codes = [codes]
        if self.staged:
            return self.quantize.lookup(codes, shape)
        if len(codes) != 1:
            raise ValueError("this model has one quantizer stage, got %d code grids" % len(codes))
        return self.quantize.lookup(codes[0])

    def condition_indices(self, codes: Sequence[torch.Tensor], shape: Tuple[int, int]) -> torch.Tensor:
        """The first stage's indices on the finest grid ``shape`` (each coarse code repeated over
        its cells): the code map a diffusion decoder is conditioned on, at every quality."""
        if isinstance(codes, torch.Tensor):
            codes = [codes]
        scale = self.stages[0][0]
        idx = codes[0]
        if scale > 1:
            idx = idx.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        return idx[..., : shape[0], : shape[1]]

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        y = self.decoder(z_q)
        if self.out != "raw":
            y = F.pixel_shuffle(y, 2 * self.stem)
            if self.linear_paths:
                with torch.autocast(y.device.type, enabled=False):
                    y = y.float() + F.pixel_shuffle(self.synthesise(z_q.float()), self.factor)
            return self.refine(y) if self.refine is not None else y
        return F.pixel_shuffle(y, self.stem) if self.stem > 1 else y

    def sent_means(self, planes: torch.Tensor, stages: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The bounds ``(lo, hi)`` (B x 3 x h x w) of the decoder's estimate of the cell means
        that the mean layers of a stream of ``stages`` stages send for ``planes``
        (:func:`rawdiff.codec.cell_means.estimate_bounds`); None where it holds no layer."""
        count = layers_at(self.mean_layers, stages)
        if not count:
            return None
        exponent = self.mean_layers[count - 1][1]
        cells, _ = pad_planes(planes.detach(), self.plane_multiple)  # as the codec: edges replicated
        cells = cell_means_torch(cells, self.factor // 2).double().cpu().numpy()
        lo, hi = zip(*(estimate_bounds(levels(gamma_channels(c), exponent), exponent, count - 1) for c in cells))
        return (torch.from_numpy(np.stack(lo)).to(planes.device), torch.from_numpy(np.stack(hi)).to(planes.device))

    def with_means(self, z_q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """The decoder input ``z_q`` (with its quality channel) moved by the least change
        whose cells' means are its own, clipped into the sent bounds ``[lo, hi]``
        (:mod:`rawdiff.codec.cell_means`). The move is a constant to the gradient: an
        encoder trained through it sees the straight-through gradient of its codes."""
        d = self.quantize.embed_dim
        a, a_inv, transform, transform_inv = self._mean_maps()
        with torch.autocast(z_q.device.type, enabled=False):
            z = z_q[:, :d].detach().double()
            means = torch.einsum("cd,bdhw->bchw", a, z - self.analysis_bias.double()[None, :, None, None])
            gamma = torch.einsum("kc,bchw->bkhw", transform, means.clamp(0, 1).sqrt())
            h, w = gamma.shape[-2:]
            sent = torch.minimum(torch.maximum(gamma[:, :SENT], lo[..., :h, :w].to(gamma)), hi[..., :h, :w].to(gamma))
            gamma = torch.cat([sent, gamma[:, SENT:]], dim=1)
            target = torch.einsum("ck,bkhw->bchw", transform_inv, gamma).clamp_min(0) ** 2
            move = torch.einsum("dc,bchw->bdhw", a_inv, target - means)
        return torch.cat([z_q[:, :d] + move.to(z_q.dtype), z_q[:, d:]], dim=1)

    def _mean_maps(self) -> Tuple[torch.Tensor, ...]:
        """(A, its least-norm inverse, the perceptual transform and its inverse) of
        :meth:`with_means`, float64: made once for the analysis as it is (fitted once, then
        fixed), not for every frame."""
        w = self.analysis_weight
        key = (w.device, w._version, w.data_ptr())
        if getattr(self, "_mean_maps_key", None) != key:
            # plain tensors, whether first asked for while decoding (inference mode) or training
            with torch.inference_mode(False), torch.no_grad(), torch.autocast(w.device.type, enabled=False):
                a = cell_mean_functional(w.detach().double())  # 4 x D
                transform = torch.as_tensor(MEAN_TRANSFORM, dtype=torch.float64, device=w.device)
                self._mean_maps_cache = (a, a.t() @ torch.linalg.inv(a @ a.t()), transform,
                                         torch.linalg.inv(transform))
            self._mean_maps_key = key
        return self._mean_maps_cache

    def decoder_side(self) -> List[nn.Module]:
        """The networks :meth:`decode` runs (decoder, linear synthesis, refine head), not the
        encoder's: a decoder may lay them out as suits its device while the encoder's codes
        stay those of the exported graph."""
        return [m for m in (self.decoder, getattr(self, "synthesis", None), self.refine) if m is not None]

    def synthesise(self, z_q: torch.Tensor) -> torch.Tensor:
        """The linear synthesis of the decoder input ``z_q`` (B x (D + 1) x h x w with the
        quality channel): per cell its ``3 f^2`` output values, before the depth-to-space. A
        per-quality synthesis takes each sample's weights from its quality channel."""
        latent = z_q[:, : self.quantize.embed_dim]
        if not self.per_quality:
            return self.synthesis(latent)

        def at(x: torch.Tensor, n: int) -> torch.Tensor:
            sl = self._synthesis_rows(n)
            return F.conv2d(x, self.synthesis.weight[sl], self.synthesis.bias[sl], padding=1)

        levels = self.quality_levels(z_q)
        unique = torch.unique(levels).tolist()
        if len(unique) == 1:  # one operating point (a frame, a training batch): no gather
            return at(latent, unique[0])
        out = latent.new_empty((latent.shape[0], self.synthesis.out_channels // len(self.stages))
                               + tuple(latent.shape[-2:]))
        for n in unique:
            out[levels == n] = at(latent[levels == n], n)
        return out

    def _synthesis_rows(self, n: int) -> slice:
        """The output channels of operating point ``n``'s synthesis (``per_quality``)."""
        per = self.synthesis.out_channels // len(self.stages)
        return slice((n - 1) * per, n * per)

    def every_point(self, shared: torch.Tensor) -> torch.Tensor:
        """A shared synthesis weight or bias repeated for each operating point of a
        ``per_quality`` synthesis (as it is for a shared one): where each point starts."""
        copies = self.synthesis.out_channels // shared.shape[0]
        return shared.repeat((copies,) + (1,) * (shared.dim() - 1))

    def quality_levels(self, z_q: torch.Tensor) -> torch.Tensor:
        """The operating point (stages 1..S) of each sample of a decoder input, read off its
        quality channel (n / S everywhere)."""
        S = self.quantize.num_stages
        level = z_q[:, self.quantize.embed_dim].reshape(z_q.shape[0], -1)[:, 0]
        return torch.round(level.float() * S).long().clamp(1, S)

    @torch.no_grad()
    def fit_synthesis(self, planes: torch.Tensor, camera_rgb: torch.Tensor, ridge: float = 1e-3) -> None:
        """Fit each operating point's synthesis (``synthesis: per_quality``) by least squares
        from the 3x3 neighbourhood of the latent *as that point codes it* to the cell of
        ``camera_rgb``: the linear estimate of the cell given the codes, which spreads the
        coded latent's errors instead of showing them as cell edges."""
        if not self.per_quality:
            raise ValueError("fit_synthesis is for synthesis: per_quality")
        z = self.analysis(planes.float())
        target = F.pixel_unshuffle(camera_rgb.float(), self.factor)
        for n in range(1, len(self.stages) + 1):
            coded = self.lookup_codes(self.quantize.encode_indices(z, n))
            sent = self.sent_means(planes, n) if self.mean_layers else None
            if sent is not None:
                coded = self.with_means(coded, *sent)
            coded = coded[:, : self.quantize.embed_dim]
            weight, bias = least_squares_synthesis(coded, target, ridge)
            self.synthesis.weight[self._synthesis_rows(n)] = weight
            self.synthesis.bias[self._synthesis_rows(n)] = bias
        self.synthesis_fitted.fill_(True)

    def decode_indices(self, indices) -> torch.Tensor:
        """Decode one index grid (a plain codebook) or the grids of a prefix of the stages."""
        return self.decode(self.lookup_codes(indices))

    def forward(self, planes: torch.Tensor, stages: Optional[int] = None):
        """Reconstruction, quantizer loss, indices and statistics; a staged model decodes the
        first ``stages`` stages (default all) and returns the grids of every stage."""
        z = self.encode(planes)
        if self.staged:
            z_q, q_loss, indices, stats = self.quantize(z, stages)
            sent = self.sent_means(planes, stages or len(self.stages)) if self.mean_layers else None
            if sent is not None:
                z_q = self.with_means(z_q, *sent)
        else:
            z_q, q_loss, indices, stats = self.quantize(z)
        return self.decode(z_q), q_loss, indices, stats

    @torch.no_grad()
    def init_linear_paths(self, planes: torch.Tensor, camera_rgb: torch.Tensor, ridge: float = 1e-3) -> None:
        """Fit the linear paths on a batch (``linear_paths``; the first training step):

        - analysis: the leading ``embed_dim`` principal components of the cells' mosaic
          samples (centred), so the latent starts as the best linear code of that size;
        - synthesis: least squares from each latent's 3x3 neighbourhood to its cell of
          ``camera_rgb`` (the decoder's target), a linear demosaic-and-decode that overlaps
          cells, so it makes no block edges;
        - the encoder's and decoder's networks start silent (last convs zero): they learn
          what the linear paths miss."""
        d = self.quantize.embed_dim
        cells = F.pixel_unshuffle(planes.float(), self.factor // 2)
        flat = cells.permute(0, 2, 3, 1).reshape(-1, cells.shape[1]).double()
        if flat.shape[0] < 4 * flat.shape[1]:
            raise ValueError("fitting the linear paths needs at least %d cells, got %d"
                             % (4 * flat.shape[1], flat.shape[0]))
        mean = flat.mean(0)
        cov = (flat - mean).t() @ (flat - mean) / (flat.shape[0] - 1)
        _, vectors = torch.linalg.eigh(cov)
        basis = vectors[:, -d:].flip(1).t()  # d x C, leading components first
        self.analysis_weight.copy_(basis.float())
        self.analysis_bias.copy_((-basis @ mean).float())
        if self.encoder is not None:
            last = self.encoder.get_submodule(self.encoder.last_conv_name)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        nn.init.zeros_(self.decoder.conv_out.weight)
        nn.init.zeros_(self.decoder.conv_out.bias)
        weight, bias = least_squares_synthesis(self.analysis(planes.float()),
                                               F.pixel_unshuffle(camera_rgb.float(), self.factor), ridge)
        self.synthesis.weight.copy_(self.every_point(weight))
        self.synthesis.bias.copy_(self.every_point(bias))
        self.linear_initialised.fill_(True)

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


def least_squares_synthesis(latent: torch.Tensor, target: torch.Tensor, ridge: float
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ridge least squares from each cell's 3x3 neighbourhood of ``latent`` (B x D x h x w)
    to its values in ``target`` (B x C x h x w): the weight (C x D x 3 x 3) and bias (C) of a
    3x3 convolution."""
    d = latent.shape[1]
    inputs = F.unfold(latent.float(), 3, padding=1).transpose(1, 2).reshape(-1, d * 9).double()
    target = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1]).double()
    inputs = torch.cat([inputs, torch.ones_like(inputs[:, :1])], dim=1)
    gram = inputs.t() @ inputs
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    solution = torch.linalg.solve(gram, inputs.t() @ target)  # (9d + 1) x C
    weight = solution[:-1].t().reshape(-1, d, 3, 3)  # unfold orders (channel, ky, kx)
    return weight.float(), solution[-1].float()


def cell_means_torch(planes: torch.Tensor, cell: int) -> torch.Tensor:
    """The means of the ``cell`` x ``cell`` blocks of planes B x 4 x H x W."""
    return F.avg_pool2d(planes.float(), cell)


def cell_mean_functional(analysis_weight: torch.Tensor) -> torch.Tensor:
    """4 x D: the plane means of a cell as a linear function of its latent (less the
    analysis bias), through the analysis' pseudo-inverse."""
    pinv = torch.linalg.pinv(analysis_weight)  # cell samples x D, plane-major (pixel_unshuffle)
    per = pinv.shape[0] // PLANES
    return pinv.reshape(PLANES, per, -1).mean(1)


def pad_planes(planes: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Replicate-pad B x C x h x w to multiples of ``multiple``; returns the original size."""
    h, w = planes.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        planes = F.pad(planes, (0, pw, 0, ph), mode="replicate")
    return planes, (h, w)


def model_input(embedder: Embedder, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The planes the encoder codes: white-balanced for ``out: linear``, else as normalised."""
    if embedder.out == "linear":
        return white_balance_planes(batch["raw"], batch["wb_gains"])
    return batch["raw"]


def rendered(embedder: Embedder, x_hat: torch.Tensor, batch: Dict[str, torch.Tensor],
             straight_through: bool = True) -> torch.Tensor:
    """What the decoder's output is compared with the target as: sRGB through the reference
    ISP's colour stage for ``out: linear`` (the frame's colour matrix), else as it is."""
    if embedder.out == "linear":
        return render_camera_rgb(x_hat, batch["color_matrix"], straight_through=straight_through)
    return x_hat


def target_of(embedder: Embedder, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The training target: the reference-ISP image, or the planes for ``out: raw``."""
    return batch["raw"] if embedder.out == "raw" else batch["rgb"]


# Buffers that only matter while training (dead-code restart counters); not shipped.
TRAINING_ONLY_SUFFIXES = ("idle_steps", "quantize.initialised", "ecvq_usage", "ecvq_energy", "linear_initialised",
                          "synthesis_fitted")
# Buffers that weights written before they existed lack; their default is the old behaviour
# (code_cost zero: the nearest code).
DEFAULTED_SUFFIXES = ("code_cost",)


def training_only(key: str) -> bool:
    """True for buffers that only matter while training (dead-code restart counters, the
    flags of data-dependent codebook initialisation); they are not shipped."""
    return key.endswith(TRAINING_ONLY_SUFFIXES)


def may_be_missing(key: str) -> bool:
    """True for buffers that weights may lack: training-only ones, and those whose default is
    what older weights did."""
    return training_only(key) or key.endswith(DEFAULTED_SUFFIXES)



def embedder_from_config(params: Dict) -> Embedder:
    """Build the bare network from the ``model.params`` of a vqgan config."""
    return Embedder(**(params.get("embedder") or {}))


def load_embedder(params: Dict, state: Dict[str, torch.Tensor], device: Optional[torch.device] = None) -> Embedder:
    net = embedder_from_config(params)
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not may_be_missing(k)]
    if missing or unexpected:
        raise ValueError("embedder weights do not match the config: missing %s, unexpected %s"
                         % (sorted(missing)[:5], sorted(unexpected)[:5]))
    return net.to(device or "cpu").eval()
