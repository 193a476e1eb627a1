"""Latent diffusion decoder conditioned on the RAW codes (``target: ldm`` in a config).

    training:  planes --Embedder.encode (frozen)--> z_e --l2-normalise--> z;  z --VQ--> indices, z_q
               x0 = (z - z_q) * latent_scale          (the quantization residual)
               x_t = alpha_t x0 + sigma_t eps;  UNet(x_t, t, concat=[z_q, E(indices)], context=tokens) -> v
    decoding:  grid --codebook--> z_q;  noise --sampler(UNet)--> x0
               z = normalise(z_q + x0 / latent_scale) --Embedder.decode (frozen)--> RGB

Design: what is diffused, and why
---------------------------------
The latent is the embedder's own decoder input, the continuous pre-quantization latent
z = normalise(encoder(planes)) (D = 8 channels at f8, l2-normalised per position like the
codes). Its decoder already exists and is trained, so nothing but the UNet is trained: no
second autoencoder, and the UNet works at 1/64 of the pixels with 8 channels, which a
2-core CPU can train in about half an hour (config/models/ldm.yaml: 2.9 M parameters,
19 GFLOP per step of 8 crops of 256^2 plus 20 GFLOP for the frozen encoder). The
alternatives cost more CPU for the same budget: a small RGB autoencoder would have to be
trained first, and its latent would not be aligned with the codes; pixel-space residual
diffusion runs the UNet at 64 times the positions, in training and in every sampling step
of a 1936x1112 frame.

The price: the result can be no better than ``decode(z)``, the embedder's decoder on the
unquantized latent, and that decoder was trained on codebook vectors only (straight-through
estimator), so between codes it interpolates. Validation logs ``val/psnr_ceiling``
(decode(z)) next to ``val/psnr_fast`` (decode(z_q)) and ``val/psnr_diffusion``, so the
headroom is measured, not assumed. On checkpoints of the default embedder early in its
training the ceiling was 0.03 dB, then 0.35 dB above the fast path (val crops).

The diffusion restores what quantization removed, so it runs on the residual z - z_q
(``residual: true``), scaled to unit variance (``latent_scale: auto`` measures it on the
first batch, as latent diffusion's scale_by_std, averaged over devices). With the
zero-initialised UNet output and v prediction (Salimans & Ho 2022), an untrained or
one-step model returns about z_q, the fast path; the loss is Min-SNR weighted (Hang et al.
2023), which converges faster in a short training.

Conditioning: the quantized latent z_q and a learned embedding of the code indices are
concatenated to x_t at full latent resolution (the local detail: one code per 8x8 pixels).
For context across the frame, cross-attention (at the lowest UNet level and in the middle
block) reads 8 x 8 = 64 tokens: the code embedding average-pooled to a fixed grid, plus a
learned position. Tokens of the whole code grid (33,638 codes at 1936x1112) are too long a
sequence; with a fixed grid the cost and the number of keys do not change with the frame
size (each token averages more codes on a whole frame than on a training crop). Self-
attention runs in 8 x 8 windows of the lowest level, the size of that level for a 256
crop, so whole frames see what training saw. Classifier-free guidance (Ho & Salimans 2022)
is optional: ``conditioning.drop_prob`` replaces the codes by a null code in training,
``sampling.guidance_scale`` != 1 mixes the two predictions when sampling.

EMA weights (decay ``ema_decay``) are used for validation and exported to the model
directory as ``diffusion.safetensors`` (:func:`rawdiff.export.model_dir.export_model`).

A scalable embedder whose decoder is told its operating point (the shipped model)
-------------------------------------------------------------------------------
``LatentDenoiser(qualities=S)``; config/models/ldm_scalable.yaml.

    training:  planes --analysis (frozen)--> z_e (32 principal components per 8x8 cell, not normalised)
               n ~ U{1..S};  codes of the first n stages --> z_q(n), quality channel n / S
               x0 = (z_e - z_q(n)) * residual_scale[n]        (per channel: unit variance at each n)
               UNet(x_t, t, concat=[z_q(n) * condition_scale, n / S, E(stage-1 codes)], context) -> v
    decoding:  noise --sampler(UNet)--> x0;  z = z_q(n) + mask(realism) * x0 / residual_scale[n]
               --Embedder.decode with the quality channel n / S (frozen)--> RGB

- What it diffuses: the residual between the latent the vehicle computed and what the first
  n stages sent. At quality 1 that is most of every cell's detail (the trailing
  components), at quality 6 little. The scales are measured per operating point and per
  channel on the first batch (the residual of quality 1 is several times that of 6, and the
  components' variances differ by orders of magnitude), so every target has unit variance.
- The embedder's decoder renders the result, told the operating point of the codes
  (``decode_at: coded``). Told the finest (``finest``), with the coarse channels kept from
  the codes, it did worse on the validation crops on MS-SSIM (0.02 to 0.03) and on the
  sliced Wasserstein distance.
- Loss: plain v prediction (``min_snr_gamma: 0``). With 1 to 4 sampling steps the first
  prediction, made from pure noise, matters, and Min-SNR weighting gives it almost no
  weight.
- Realism (:func:`realism_mask`): the drawn residual is kept in the trailing share of the
  channels only, finest first; the other channels keep the codes' values. 0 is the fast
  path exactly, 1 the whole sample. On the validation crops this was better on both
  MS-SSIM and the sliced Wasserstein distance than moving the whole latent from the mean
  estimate to the sample.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rawdiff.codec.modeldir import check_realism
from rawdiff.config import register
from rawdiff.diffusion import samplers
from rawdiff.diffusion import schedules as sch
from rawdiff.models.embedder import model_input, rendered, target_of, training_only
from rawdiff.models.unet import UNet

Condition = Tuple[torch.Tensor, torch.Tensor]


class CodeConditioner(nn.Module):
    """Code grid -> (concat map B x (D + extra + channels) x h x w, context tokens B x grid^2 x context_dim).

    Index ``codebook_size`` is the null code of classifier-free guidance (its z_q is zero).
    ``z`` is the codebook latent as :meth:`LatentDenoiser.condition` scales it, with
    ``extra_channels`` more (the operating point of a quality-channel embedder)."""

    def __init__(self, codebook_size: int, embed_dim: int, channels: int = 16, context_dim: int = 64,
                 context_grid: int = 8, extra_channels: int = 0):
        super().__init__()
        self.codebook_size = codebook_size
        self.embed_dim = embed_dim
        self.context_grid = int(context_grid)
        self.embedding = nn.Embedding(codebook_size + 1, channels)
        self.position = nn.Parameter(0.02 * torch.randn(1, self.context_grid ** 2, channels))
        self.to_context = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, context_dim))
        self.out_channels = embed_dim + int(extra_channels) + channels

    def forward(self, indices: torch.Tensor, z: torch.Tensor) -> Condition:
        e = self.embedding(indices).permute(0, 3, 1, 2)
        concat = torch.cat([z, e.to(z.dtype)], dim=1)
        pooled = F.adaptive_avg_pool2d(e, self.context_grid).flatten(2).transpose(1, 2)
        return concat, self.to_context(pooled + self.position)

    def null(self, indices: torch.Tensor, z: torch.Tensor) -> Condition:
        return self(torch.full_like(indices, self.codebook_size), torch.zeros_like(z))


class LatentDenoiser(nn.Module):
    """Conditioner, UNet and schedule: the network that ``diffusion.safetensors`` holds.

    ``qualities`` > 0: the embedder is a scalable one whose decoder is told its operating
    point (a quality-channel embedder of that many stages, unnormalised latent). The residual
    z - z_q(n) of a prefix of n stages is then scaled per operating point and per channel
    (``residual_scale``, S x D, each 1 / the std measured on the first batch: the residual of
    quality 1 is many times that of quality 6, and the principal-component channels of the
    latent differ by orders of magnitude), z_q by ``condition_scale`` (D), and the condition
    carries the quality channel. Otherwise (a unit-norm latent, one global ``latent_scale``)
    it is the single-rate decoder of the colour model."""

    def __init__(self, codebook_size: int, embed_dim: int, unet: Optional[Dict[str, Any]] = None,
                 conditioning: Optional[Dict[str, Any]] = None, diffusion: Optional[Dict[str, Any]] = None,
                 normalized: bool = True, qualities: int = 0):
        super().__init__()
        cond = dict(conditioning or {})
        self.drop_prob = float(cond.pop("drop_prob", 0.0))
        diff = dict(diffusion or {})
        self.prediction = diff.get("prediction", "v")
        if self.prediction not in sch.PREDICTIONS:
            raise ValueError("diffusion.prediction must be one of %s, got %r"
                             % (", ".join(sch.PREDICTIONS), self.prediction))
        self.residual = bool(diff.get("residual", True))
        self.min_snr_gamma = diff.get("min_snr_gamma", 5.0)
        self.normalized = normalized
        self.embed_dim = int(embed_dim)
        self.qualities = int(qualities)
        #: the quality channel the embedder decoder gets with a drawn latent: ``coded`` (the
        #: operating point of the codes) or ``finest`` (S / S: the latent now has all its detail)
        self.decode_at = diff.get("decode_at", "coded")
        if self.decode_at not in DECODE_AT:
            raise ValueError("diffusion.decode_at must be one of %s, got %r" % (", ".join(DECODE_AT), self.decode_at))
        betas = sch.make_betas(diff.get("schedule", "linear"), int(diff.get("num_timesteps", 1000)),
                               **(diff.get("schedule_args") or {}))
        self.register_buffer("alphas_cumprod", sch.alphas_cumprod(betas), persistent=False)
        scale = diff.get("latent_scale", "auto")
        if self.qualities:
            if normalized:
                raise ValueError("a diffusion decoder of operating points needs the unnormalised latent of "
                                 "linear paths (embedder.linear_paths)")
            if scale != "auto":
                raise ValueError("a decoder of operating points measures its scales: diffusion.latent_scale "
                                 "must be auto, got %r" % (scale,))
            self.register_buffer("residual_scale", torch.zeros(self.qualities, self.embed_dim))
            self.register_buffer("condition_scale", torch.zeros(self.embed_dim))
        else:
            self.register_buffer("latent_scale", torch.tensor(0.0 if scale == "auto" else float(scale)))
        self.conditioner = CodeConditioner(codebook_size, embed_dim, extra_channels=int(self.qualities > 0), **cond)
        self.unet = UNet(embed_dim, cond_channels=self.conditioner.out_channels,
                         context_dim=self.conditioner.to_context[1].out_features, **(unet or {}))

    # -- latents ---------------------------------------------------------------------------

    @property
    def scales_set(self) -> bool:
        """False until the scales of ``latent_scale: auto`` are measured (first batch)."""
        if self.qualities:
            return bool((self.residual_scale > 0).all()) and bool((self.condition_scale > 0).all())
        return float(self.latent_scale) > 0

    def _scale(self, quality: Optional[int] = None) -> torch.Tensor:
        self._check_scales()
        if not self.qualities:
            return self.latent_scale
        return self.residual_scale[self._quality_index(quality)][None, :, None, None]

    def _check_scales(self) -> None:
        if not self.scales_set:
            raise ValueError("the diffusion scales are not set (train at least one step%s)"
                             % ("" if self.qualities else " or give diffusion.latent_scale"))

    def _quality_index(self, quality: Optional[int]) -> int:
        if quality is None or not 1 <= int(quality) <= self.qualities:
            raise ValueError("this diffusion decoder has operating points 1..%d, got %r" % (self.qualities, quality))
        return int(quality) - 1

    def unscaled_target(self, z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        z = F.normalize(z_e, dim=1) if self.normalized else z_e
        return z - z_q[:, : self.embed_dim] if self.residual else z

    def target(self, z_e: torch.Tensor, z_q: torch.Tensor, quality: Optional[int] = None) -> torch.Tensor:
        """x0 of the diffusion from the encoder's latent and the quantized one (of ``quality``
        stages, for a decoder of operating points)."""
        return self.unscaled_target(z_e, z_q) * self._scale(quality)

    def restore(self, x0: torch.Tensor, z_q: torch.Tensor, quality: Optional[int] = None) -> torch.Tensor:
        """The decoder's input from a sampled x0 (inverse of :meth:`target`, on the sphere for a
        normalised latent; with the quality channel that ``decode_at`` names)."""
        z = x0 / self._scale(quality) + (z_q[:, : self.embed_dim] if self.residual else 0)
        if self.normalized:
            z = F.normalize(z, dim=1)
        if z_q.shape[1] == self.embed_dim:
            return z
        level = z_q[:, self.embed_dim:] if self.decode_at == "coded" else torch.ones_like(z_q[:, self.embed_dim:])
        return torch.cat([z, level.to(z.dtype)], dim=1)

    def condition(self, indices: torch.Tensor, z_q: torch.Tensor, null: bool = False) -> Condition:
        """The conditioner's output for the codes ``indices`` and their latent ``z_q`` (with
        its quality channel, for a decoder of operating points)."""
        if self.qualities:
            self._check_scales()
            z = torch.cat([z_q[:, : self.embed_dim] * self.condition_scale[None, :, None, None],
                           z_q[:, self.embed_dim:]], dim=1)
        else:  # codes are unit vectors: sqrt(D) brings their entries to about unit variance
            z = z_q * math.sqrt(self.embed_dim)
        return (self.conditioner.null if null else self.conditioner)(indices, z)

    @torch.no_grad()
    def measure_scales(self, z_e: torch.Tensor, z_qs, reduce=None) -> None:
        """Set the scales of ``latent_scale: auto`` from a batch: ``z_qs`` the codebook latent
        of every operating point (or of the one code grid); ``reduce`` averages a tensor over
        devices, so every device gets the same scales."""
        reduce = reduce or (lambda t: t)
        if not self.qualities:
            std = reduce(self.unscaled_target(z_e, z_qs[0]).float().std())
            self.latent_scale.fill_(1.0 / float(std.clamp(min=1e-6)))
            return
        dims = (0, 2, 3)
        for n, z_q in enumerate(z_qs):
            std = reduce(self.unscaled_target(z_e, z_q).float().std(dim=dims))
            self.residual_scale[n].copy_(1.0 / std.clamp(min=1e-6))
        std = reduce(z_e.float().std(dim=dims))
        self.condition_scale.copy_(1.0 / std.clamp(min=1e-6))

    # -- the network -----------------------------------------------------------------------

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        return self.unet(x_t, t, cond[0], cond[1])

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, null: Optional[Condition] = None,
                guidance_scale: float = 1.0) -> torch.Tensor:
        """``model(x, t, cond)`` for the samplers, with classifier-free guidance when
        ``guidance_scale`` != 1: u + w (c - u) (Ho & Salimans 2022, eq. 6)."""
        if guidance_scale == 1.0 or null is None:
            return self(x_t, t, cond)
        both = self(torch.cat([x_t, x_t]), torch.cat([t, t]),
                    (torch.cat([cond[0], null[0]]), torch.cat([cond[1], null[1]])))
        c, u = both.chunk(2)
        return u + guidance_scale * (c - u)

    def loss(self, z_e: torch.Tensor, indices: torch.Tensor, z_q: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             quality: Optional[int] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """DDPM training loss (Ho et al. 2020, Algorithm 1), Min-SNR weighted when ``min_snr_gamma``."""
        b = z_e.shape[0]
        x0 = self.target(z_e, z_q, quality)
        dev = x0.device
        gen_dev = generator.device if generator is not None else dev
        t = torch.randint(0, len(self.alphas_cumprod), (b,), generator=generator, device=gen_dev).to(dev)
        noise = samplers.initial_noise(x0.shape, generator, dev, x0.dtype) if generator is not None \
            else torch.randn_like(x0)
        if self.training and self.drop_prob > 0:
            drop = torch.rand(b, device=dev) < self.drop_prob
            null = torch.full_like(indices, self.conditioner.codebook_size)
            indices = torch.where(drop[:, None, None], null, indices)
            z_q = torch.where(drop[:, None, None, None], torch.zeros_like(z_q), z_q)
        x_t, target = sch.training_target(x0, noise, self.alphas_cumprod, t, self.prediction)
        pred = self(x_t, t, self.condition(indices, z_q))
        per_sample = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
        logs = {"mse": per_sample.mean().detach()}
        if self.min_snr_gamma:
            weight = sch.min_snr_weight(sch.snr(self.alphas_cumprod, t), self.prediction, float(self.min_snr_gamma))
            per_sample = per_sample * weight.to(per_sample.dtype)
        return per_sample.mean(), logs

    def draw(self, model, z_q: torch.Tensor, steps: int, generator: torch.Generator, sampler: str = "dpmpp_2m",
             eta: float = 0.0, realism: float = 1.0) -> torch.Tensor:
        """x0 for the codebook latent ``z_q``: ``steps`` sampler steps from noise drawn with
        ``generator``; ``model(x_t, t, None)`` is the network with its condition. ``realism``
        keeps the drawn residual in the trailing share of the channels only
        (:func:`realism_mask`); at 0 nothing is drawn and the network is not run."""
        realism = check_realism(realism)
        shape = (z_q.shape[0], self.embed_dim) + tuple(z_q.shape[-2:])
        if realism == 0.0:
            return torch.zeros(shape, device=z_q.device, dtype=z_q.dtype)
        noise = samplers.initial_noise(shape, generator, z_q.device, z_q.dtype)
        extra = {"eta": eta} if sampler == "ddim" else {}
        x0 = samplers.get_sampler(sampler)(model, noise, self.alphas_cumprod, steps, None,
                                           prediction=self.prediction, generator=generator, **extra)
        if realism != 1.0:
            x0 = x0 * realism_mask(realism, x0.shape[1]).to(x0.device, x0.dtype)
        return x0

    @torch.no_grad()
    def sample(self, indices: torch.Tensor, z_q: torch.Tensor, steps: int, generator: torch.Generator,
               sampler: str = "dpmpp_2m", guidance_scale: float = 1.0, eta: float = 0.0, realism: float = 1.0,
               quality: Optional[int] = None) -> torch.Tensor:
        """The decoder's input (B x D x h x w, and the quality channel where there is one) for a
        code grid, from noise drawn with ``generator``. Realism 0 draws nothing: it is the codes."""
        cond = self.condition(indices, z_q)
        null = self.condition(indices, z_q, null=True) if guidance_scale != 1.0 else None

        def model(x, t, _):
            return self.predict(x, t, cond, null, float(guidance_scale))

        x0 = self.draw(model, z_q, steps, generator, sampler, eta, realism)
        return self.restore(x0, z_q, quality)


#: the quality channel a drawn latent is decoded with (LatentDenoiser.decode_at)
DECODE_AT = ("coded", "finest")


def realism_mask(realism: float, channels: int) -> torch.Tensor:
    """1 x C x 1 x 1 weights of the drawn residual per latent channel for a ``realism`` R in
    [0, 1]: the trailing R share of the channels get it (weight 1, the one at the edge a
    fraction), the others none, so they keep the codes' value and the image the fast path's.

    R = 0 is the fast path (with ``decode_at: coded`` and an unnormalised latent, exactly),
    R = 1 the whole sample. The shipped latent's channels are the
    principal components of each 8x8 mosaic cell, by falling variance: from coarse to fine
    detail, so R adds texture from the finest scale up. Drawn texture is not the scene's:
    at the finest scales it costs MS-SSIM least and restores most of what blur took
    (perception-distortion, Blau and Michaeli 2018; texture at fine scales, as HiFiC and CDC
    give it)."""
    c = torch.arange(channels, dtype=torch.float32)
    return (float(realism) * channels - (channels - 1 - c)).clamp(0.0, 1.0).view(1, channels, 1, 1)


def qualities_of(quantizer) -> int:
    """Operating points a diffusion decoder of this quantizer distinguishes: the stages of an
    embedder whose decoder is told the operating point, else 0."""
    return int(quantizer.num_stages) if getattr(quantizer, "quality_channel", False) else 0


def denoiser_from_params(params: Dict[str, Any], quantizer) -> LatentDenoiser:
    """The bare network from the ``model.params`` of an ldm config, for an embedder's quantizer."""
    return LatentDenoiser(quantizer.codebook_size, quantizer.embed_dim, unet=params.get("unet"),
                          conditioning=params.get("conditioning"), diffusion=params.get("diffusion"),
                          normalized=quantizer.normalize, qualities=qualities_of(quantizer))


def load_matching(denoiser: nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``denoiser``, or a ValueError naming the first keys that do not match
    (a diffusion decoder of another config or of another embedder)."""
    own = denoiser.state_dict()
    wrong = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if wrong or missing or unexpected:
        raise ValueError("%s: the diffusion weights do not match the config and the embedder (shape %s, "
                         "missing %s, unexpected %s)" % (what, wrong[:3], sorted(missing)[:3], sorted(unexpected)[:3]))
    denoiser.load_state_dict(state)


def same_codes(state: Dict[str, torch.Tensor], embedder) -> bool:
    """True when the embedder weights ``state`` code as ``embedder`` does: the same encoder
    (network or fitted analysis) and codebooks, so the same latents and indices (a decoder
    stage trained with ``frozen_codes`` keeps them)."""
    own = embedder.state_dict()
    keys = [k for k in own if k.startswith(("encoder.", "analysis_", "quantize.")) and not training_only(k)]

    def equal(k: str) -> bool:
        return k in state and state[k].shape == own[k].shape and torch.equal(state[k], own[k].to(state[k].dtype))

    return bool(keys) and all(equal(k) for k in keys)


def load_frozen_embedder(model_dir: str):
    """The embedder of a model directory, in eval mode and without gradients."""
    from rawdiff.codec.modeldir import read_model_dir
    from rawdiff.models.decoder_update import embedder_weights
    from rawdiff.models.embedder import load_embedder

    info = read_model_dir(model_dir)
    params = info["config"].get("model", {}).get("params", {})
    net = load_embedder(params, embedder_weights(model_dir))
    return net.requires_grad_(False).eval()


def _lightning_base():
    import lightning as L

    return L.LightningModule


@register("ldm")
class LDM(_lightning_base()):
    """Trains :class:`LatentDenoiser` on the frozen embedder of ``embedder`` (a model directory)."""

    is_diffusion = True  # rawdiff.export.model_dir.export_model writes a diffusion model directory

    def __init__(self, embedder: str, unet: Optional[Dict[str, Any]] = None,
                 conditioning: Optional[Dict[str, Any]] = None, diffusion: Optional[Dict[str, Any]] = None,
                 sampling: Optional[Dict[str, Any]] = None, learning_rate: float = 2e-4,
                 weight_decay: float = 0.0, ema_decay: float = 0.999, init: Optional[str] = None):
        super().__init__()
        self.save_hyperparameters()
        if not isinstance(embedder, str) or not embedder:
            raise ValueError("model.params.embedder must be the path of an embedder model directory, got %r"
                             % (embedder,))
        self.embedder_dir = os.path.abspath(embedder)
        self.embedder = load_frozen_embedder(self.embedder_dir)
        q = self.embedder.quantize
        self.denoiser = denoiser_from_params(self.hparams, q)
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False).eval()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.init_training: Optional[Dict[str, Any]] = None
        if init:
            self.init_from(init)
        self.sampling = dict(sampling or {})
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay

    def init_from(self, model_dir: str) -> None:
        """Start from the diffusion decoder of another model directory (same UNet config), e.g.
        the one trained on an earlier embedder. With ``latent_scale: auto`` the scale is measured
        again on this embedder's latents (first batch)."""
        from safetensors.torch import load_file

        from rawdiff.codec.modeldir import read_model_dir
        from rawdiff.models.decoder_update import embedder_weights

        info = read_model_dir(model_dir)
        #: what the decoder it starts from had been trained for (the model card and model.json say it)
        self.init_training = dict((info["meta"].get("diffusion") or {}).get("training") or {},
                                  model_id=info["meta"].get("model_id"))
        path = os.path.join(model_dir, "diffusion.safetensors")
        if not os.path.isfile(path):
            raise ValueError("init %s: the model directory has no diffusion decoder (diffusion.safetensors)"
                             % model_dir)
        load_matching(self.denoiser, load_file(path), "init %s" % model_dir)
        # the scales were measured on that model's latents: they hold where its codes are these
        same = same_codes(embedder_weights(model_dir), self.embedder)
        if not same and (self.hparams.get("diffusion") or {}).get("latent_scale", "auto") == "auto":
            for name in ("latent_scale", "residual_scale", "condition_scale"):
                if hasattr(self.denoiser, name):
                    getattr(self.denoiser, name).fill_(0.0)
        self.ema.load_state_dict(self.denoiser.state_dict())

    def train(self, mode: bool = True):
        super().train(mode)
        self.embedder.eval()  # frozen: the quantizer's restart counters and norms stay put
        self.ema.eval()
        return self

    @torch.no_grad()
    def latent_and_codes(self, batch: Dict[str, torch.Tensor]):
        """(z_e, code grids of every stage) of a batch (the embedder's input: :func:`model_input`),
        in float32 even under bf16 autocast: the diffusion target is the small residual z_e - z_q."""
        with torch.autocast(self.device.type, enabled=False):
            z_e = self.embedder.encode(model_input(self.embedder, batch).float())
            return z_e, self.embedder.codes_of_latent(z_e)

    @torch.no_grad()
    def encode(self, batch: Dict[str, torch.Tensor], quality: Optional[int] = None):
        """(z_e, indices, z_q, quality) of a batch. A staged model codes the first ``quality``
        stages (None: in training a random prefix, so every operating point is decoded with
        diffusion; else all); quality is None for a decoder without operating points."""
        z_e, codes = self.latent_and_codes(batch)
        if not self.embedder.staged:
            return z_e, codes[0], self.embedder.lookup_codes(codes), None
        if quality is None:
            quality = int(torch.randint(1, len(codes) + 1, ())) if self.training else len(codes)
        codes = codes[:quality]
        shape = tuple(z_e.shape[-2:])
        return (z_e, self.embedder.condition_indices(codes, shape), self.embedder.lookup_codes(codes, shape),
                quality if self.denoiser.qualities else None)

    def on_train_batch_start(self, batch, batch_idx):
        if self.denoiser.scales_set:
            return
        z_e, codes = self.latent_and_codes(batch)
        shape = tuple(z_e.shape[-2:])
        with torch.no_grad():
            z_qs = [self.embedder.lookup_codes(codes[:n], shape) for n in range(1, len(codes) + 1)]
            if not self.denoiser.qualities:
                z_qs = z_qs[-1:]  # one global scale, of the full code
            # the same scales on every device; the EMA copies them after the step
            self.denoiser.measure_scales(z_e, z_qs, lambda t: self.trainer.strategy.reduce(t, reduce_op="mean"))
        if self.denoiser.qualities:
            print("rawdiff ldm: residual std per operating point (mean over channels) %s"
                  % ", ".join("%.4g" % float((1.0 / s).mean()) for s in self.denoiser.residual_scale))
        else:
            print("rawdiff ldm: latent_scale = %.4f" % float(self.denoiser.latent_scale))

    def training_step(self, batch, batch_idx):
        z_e, indices, z_q, quality = self.encode(batch)
        loss, logs = self.denoiser.loss(z_e, indices, z_q, quality=quality)
        n = z_e.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({"train/" + k: v for k, v in logs.items()}, batch_size=n)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        # EMA with warm-up (latent-diffusion's LitEma): decay min(d, (1 + n) / (10 + n))
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1.0 + n) / (10.0 + n))
        for e, p in zip(self.ema.parameters(), self.denoiser.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.denoiser.buffers()):
            e.copy_(b)
        self.ema_updates += 1

    def validation_step(self, batch, batch_idx):
        """PSNR of the fast path, of the unquantized latent (the ceiling) and of diffusion;
        for a decoder of operating points, batch i is coded at quality 1 + i mod S (the lowest
        first: with ``limit_val_batches: 2`` the two where diffusion matters most) and the
        sliced Wasserstein distances of the fast path and diffusion are logged."""
        from rawdiff.metrics import SlicedWassersteinReference, psnr

        quality = 1 + batch_idx % self.denoiser.qualities if self.denoiser.qualities else None
        z_e, indices, z_q, quality = self.encode(batch, quality)
        gen = torch.Generator().manual_seed(1000 + batch_idx)
        loss, _ = self.ema.loss(z_e, indices, z_q, generator=gen, quality=quality)
        target = target_of(self.embedder, batch)
        n = target.shape[0]
        steps = int(self.sampling.get("val_steps", 2))
        z_hat = self.ema.sample(indices, z_q, steps, gen, sampler=self.sampling.get("sampler", "dpmpp_2m"),
                                eta=float(self.sampling.get("eta", 0.0)),
                                realism=float(self.sampling.get("realism", 1.0)), quality=quality)
        ceiling = F.normalize(z_e, dim=1) if self.ema.normalized else z_e
        if z_q.shape[1] > ceiling.shape[1]:  # the quality channel: all the detail is there
            ceiling = self.embedder.quantize.with_quality(ceiling, self.embedder.quantize.num_stages)
        refs = None
        for name, z in (("fast", z_q), ("ceiling", ceiling), ("diffusion", z_hat)):
            out = rendered(self.embedder, self.embedder.decode(z).float(), batch, straight_through=False)
            self.log("val/psnr_" + name, psnr(out, target), sync_dist=True, batch_size=n)
            if quality is None or name == "ceiling":
                continue
            with torch.autocast(self.device.type, enabled=False):  # measured as rawdiff eval does
                if refs is None:
                    refs = [SlicedWassersteinReference(target[i:i + 1].float(), patches=512) for i in range(n)]
                swd = sum(r.distance(out[i:i + 1].float().clamp(0, 1)) for i, r in enumerate(refs)) / n
            self.log("val/swd_%s_q%d" % (name, quality), swd, sync_dist=True, batch_size=n)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.denoiser.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)

    def diffusion_state(self) -> Dict[str, torch.Tensor]:
        """The EMA weights, as ``diffusion.safetensors`` holds them."""
        return {k: v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()}

    def diffusion_meta(self) -> Dict[str, Any]:
        d = self.ema
        meta = {"prediction": d.prediction, "residual": d.residual, "num_timesteps": len(d.alphas_cumprod),
                "ema_updates": int(self.ema_updates),
                "parameters": sum(p.numel() for p in d.parameters()),
                "sampler": self.sampling.get("sampler", "dpmpp_2m"),
                "guidance_scale": float(self.sampling.get("guidance_scale", 1.0))}
        if d.qualities:
            meta.update(qualities=d.qualities, decode_at=d.decode_at,
                        realism=float(self.sampling.get("realism", 1.0)), eta=float(self.sampling.get("eta", 0.0)))
        else:
            meta["latent_scale"] = float(d.latent_scale)
        return meta


class DiffusionDecoder:
    """What :meth:`rawdiff.codec.Codec.decompress` runs for ``mode="diffusion"``: the
    sampling settings of the model directory (sampler, DDIM's eta, guidance, the default
    realism) around its :class:`LatentDenoiser`."""

    def __init__(self, embedder, denoiser: LatentDenoiser, device: torch.device, sampler: str = "dpmpp_2m",
                 guidance_scale: float = 1.0, eta: float = 0.0, realism: float = 1.0):
        samplers.get_sampler(sampler)  # fail early on a bad name
        self.embedder = embedder
        self.denoiser = denoiser
        self.device = device
        self.sampler = sampler
        self.guidance_scale = float(guidance_scale)
        self.eta = float(eta)
        #: the realism a decode without one uses (the model's ``sampling.realism``)
        self.realism = check_realism(realism)

    def check_steps(self, steps) -> int:
        steps = int(steps)
        if steps < 1 or steps > len(self.denoiser.alphas_cumprod):
            raise ValueError("steps %d must be in [1, %d]" % (steps, len(self.denoiser.alphas_cumprod)))
        return steps

    def realism_for(self, realism: Optional[float]) -> float:
        """``realism`` checked, or the model's default for None."""
        return self.realism if realism is None else check_realism(realism)

    def quality_of(self, codes) -> Optional[int]:
        """The operating point of a prefix of code grids, for a decoder that has them."""
        return len(codes) if self.denoiser.qualities else None

    @torch.inference_mode()
    def decode(self, codes, steps: int = 4, seed: int = 0, sampler: Optional[str] = None,
               guidance_scale: Optional[float] = None, shape: Optional[Tuple[int, int]] = None,
               realism: Optional[float] = None, means=None) -> torch.Tensor:
        """The embedder decoder's output (C x H x W, clipped to [0, 1]) for code grids (a grid,
        or the grids of a prefix of the stages: numpy arrays or 1 x h x w tensors; ``shape``
        the finest grid); the same codes and seed give the same output (the noise is drawn on
        the CPU from ``seed``). ``realism`` (default: the model's) is
        :meth:`LatentDenoiser.draw`'s; ``means``: the bounds the stream's mean layers sent
        (``Embedder.with_means``: the drawn latent keeps the sent cell means). The codec
        renders it as it renders the fast decoder's."""
        steps = self.check_steps(steps)
        if isinstance(codes, (np.ndarray, torch.Tensor)):
            codes = [codes]
        idx = [c if isinstance(c, torch.Tensor) else
               torch.from_numpy(np.ascontiguousarray(c, dtype=np.int64))[None].to(self.device) for c in codes]
        z_q = self.embedder.lookup_codes(idx, shape)
        indices = self.embedder.condition_indices(idx, tuple(z_q.shape[-2:]))
        gen = torch.Generator().manual_seed(int(seed))
        z = self.denoiser.sample(indices, z_q, steps, gen, sampler=sampler or self.sampler,
                                 guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
                                 eta=self.eta, realism=self.realism_for(realism),
                                 quality=self.quality_of(idx))
        if means is not None:
            z = self.embedder.with_means(z, *means)
        return self.embedder.decode(z)[0].clamp(0, 1)


def load_diffusion_decoder(codec, path: str) -> DiffusionDecoder:
    """The diffusion decoder of a codec's model directory (``diffusion.safetensors`` at ``path``;
    its network is described by the ``diffusion`` node of the directory's config)."""
    from safetensors.torch import load_file

    ldm_cfg = codec.config.get("diffusion")
    if not isinstance(ldm_cfg, dict) or "model" not in ldm_cfg:
        raise ValueError("model %s has diffusion weights but its config.yaml has no 'diffusion' node"
                         % codec.model_id)
    params = ldm_cfg["model"].get("params") or {}
    denoiser = denoiser_from_params(params, codec.embedder.quantize)
    load_matching(denoiser, load_file(path), path)
    denoiser = codec.for_inference(denoiser)
    sampling = params.get("sampling") or {}
    return DiffusionDecoder(codec.embedder, denoiser, codec.device, sampler=sampling.get("sampler", "dpmpp_2m"),
                            guidance_scale=sampling.get("guidance_scale", 1.0), eta=sampling.get("eta", 0.0),
                            realism=sampling.get("realism", 1.0))
