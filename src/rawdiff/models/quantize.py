"""Vector quantizer with a straight-through estimator and a codebook kept alive.

    z (B x D x h x w) --l2-normalise--> nearest code (cosine) --> z_q, indices (B x h x w)

- The loss is van den Oord et al. 2017, eq. 3: ``||sg[z] - e||^2 + beta ||z - sg[e]||^2``:
  beta weights the *commitment* term (the encoder side). taming-transformers'
  ``legacy=True`` puts beta on the codebook term instead; that is not reproduced here.
- Codes and encoder outputs are l2-normalised (Yu et al. 2022, *Vector-quantized Image
  Modeling with Improved VQGAN*), which keeps most codes in use.
- Codes unused for ``restart_after`` training steps are re-seeded from random encoder
  outputs of the current batch (dead-code restart), so few bits are wasted.
- Usage (fraction of codes hit in the batch) and perplexity are exposed for logging.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, embed_dim: int, beta: float = 0.25, restart_after: int = 200,
                 normalize: bool = True, skip_code: bool = False):
        super().__init__()
        if codebook_size < 2 or codebook_size > 65536:
            raise ValueError("codebook_size %d must be in [2, 65536]" % codebook_size)
        self.codebook_size = codebook_size
        self.embed_dim = embed_dim
        self.beta = beta
        self.restart_after = restart_after
        self.normalize = normalize
        if skip_code and normalize:
            raise ValueError("a skip code (the zero vector) needs a codebook that is not l2-normalised")
        self.skip_code = bool(skip_code)
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        nn.init.normal_(self.embedding.weight)
        # steps since each code was last used; not a parameter, but saved with the weights
        self.register_buffer("idle_steps", torch.zeros(codebook_size, dtype=torch.long))
        # what choosing each code costs on top of its squared distance (entropy-constrained
        # search, see ResidualQuantizer); zero: the nearest code. Shipped with the weights:
        # the encoder searches with it.
        self.register_buffer("code_cost", torch.zeros(codebook_size))
        # running share of each code and mean squared norm of the input (training only: they
        # set code_cost in ResidualQuantizer.update_costs)
        self.register_buffer("ecvq_usage", torch.full((codebook_size,), 1.0 / codebook_size))
        self.register_buffer("ecvq_energy", torch.zeros(()))

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        if self.normalize:
            return F.normalize(w, dim=1)
        if self.skip_code:  # code 0 is the zero vector: "nothing to add here"
            keep = torch.ones_like(w[:, :1])
            keep[0] = 0.0
            return w * keep
        return w

    def _flat(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.embed_dim)
        return F.normalize(flat, dim=1) if self.normalize else flat

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` (N x D)."""
        codes = self.codebook()
        if self.normalize:
            # unit vectors: the nearest code is the one with the largest dot product
            return (flat @ codes.t()).argmax(dim=1)
        # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2; ||a||^2 is the same for every code
        dist = codes.pow(2).sum(1)[None, :] - 2.0 * flat @ codes.t()
        return (dist + self.code_cost.to(dist.dtype)[None, :]).argmin(dim=1)

    def encode_indices(self, z: torch.Tensor) -> torch.Tensor:
        """B x D x h x w latents -> B x h x w int64 indices."""
        b, _, h, w = z.shape
        return self.nearest(self._flat(z)).reshape(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """B x h x w indices -> B x D x h x w quantized latents."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError("code index out of range [0, %d)" % self.codebook_size)
        return F.embedding(indices, self.codebook()).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        b, _, h, w = z.shape
        flat = self._flat(z)
        idx = self.nearest(flat)
        zq_flat = F.embedding(idx, self.codebook())
        codebook_loss = F.mse_loss(zq_flat, flat.detach())
        commitment_loss = F.mse_loss(flat, zq_flat.detach())
        loss = codebook_loss + self.beta * commitment_loss
        zq_flat = flat + (zq_flat - flat).detach()  # straight-through estimator
        z_q = zq_flat.reshape(b, h, w, self.embed_dim).permute(0, 3, 1, 2).contiguous()

        counts = torch.bincount(idx, minlength=self.codebook_size).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        if self.training:
            self._restart_dead_codes(counts, flat.detach())
        stats = {
            "perplexity": perplexity.detach(),
            "batch_usage": (counts > 0).float().mean(),
            "codebook_loss": codebook_loss.detach(),
            "commitment_loss": commitment_loss.detach(),
        }
        return z_q, loss, idx.reshape(b, h, w), stats

    @torch.no_grad()
    def _restart_dead_codes(self, counts: torch.Tensor, flat: torch.Tensor) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        self.idle_steps.add_(1)
        self.idle_steps[counts > 0] = 0
        if self.restart_after <= 0:
            return
        dead = torch.nonzero(self.idle_steps >= self.restart_after).flatten()
        if dead.numel() == 0:
            return
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        new = flat[pick] + 0.01 * torch.randn_like(flat[pick])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(new, 0)  # every process must restart to the same codes
        self.embedding.weight.data[dead] = new.to(self.embedding.weight.dtype)
        self.idle_steps[dead] = 0
        self.ecvq_usage[dead] = 1.0 / self.codebook_size  # a restarted code is not priced out at once


def full_precision(t: torch.Tensor):
    """A context without autocast on ``t``'s device. The search runs in float32 under
    bf16-mixed training: distances as ``||c||^2 - 2 r.c`` lose the nearest code to bf16's
    8 bits of mantissa when the latent is not normalised."""
    return torch.autocast(t.device.type, enabled=False)


def pool_to(z: torch.Tensor, scale: int) -> torch.Tensor:
    """Average ``z`` (B x D x h x w) over ``scale`` x ``scale`` cells: the grid of a coarser
    stage, ``ceil(h / scale) x ceil(w / scale)``, the last row and column repeated where the
    edge cuts a cell. (Padding by ``scale - 1`` whatever the size gives exactly that, and a
    graph exported for one frame size that works for every size.)"""
    if scale == 1:
        return z
    return F.avg_pool2d(F.pad(z, (0, scale - 1, 0, scale - 1), mode="replicate"), scale)


def expand_to(z: torch.Tensor, scale: int, shape) -> torch.Tensor:
    """A coarser stage's latent (B x D x h' x w') on the finest grid ``shape``: bilinear
    interpolation (edges replicated), so a coarse stage gives a smooth latent, not blocks of
    ``scale`` x ``scale`` equal vectors that the decoder would show as a grid. (Sizes are
    taken from tensors, not fixed, so an exported graph takes any frame size.)"""
    if scale == 1:
        return z
    up = F.interpolate(z, scale_factor=float(scale), mode="bilinear", align_corners=False)
    return up[..., : shape[0], : shape[1]]


def stage_shape(shape: Tuple[int, int], scale: int) -> Tuple[int, int]:
    """The code grid of a stage of ``scale`` for a finest grid of ``shape``."""
    return -(-int(shape[0]) // scale), -(-int(shape[1]) // scale)


class ResidualQuantizer(nn.Module):
    """Multi-scale residual vector quantisation: one latent, coded in stages.

        x = encoder latent (B x D x h x w, l2-normalised unless normalize=False), r_1 = x
        stage k: q_k = VQ_k(pool(r_k, s_k))           indices on a grid s_k times coarser
                 r_{k+1} = r_k - expand(q_k, s_k)      what the stages before left
        z_q(n) = sum_{k <= n} expand(q_k, s_k)         the decoder's input at quality n

    Each stage has its own codebook (Euclidean, not normalised: residuals have no fixed
    norm). The residual scheme is RQ-VAE's (Lee et al. 2022); coarse stages on pooled
    grids are VAR's multi-scale residual quantisation (Tian et al. 2024), here to reach
    low rates: a stage on a grid twice as coarse costs a quarter of the bits. Stage k's
    indices never depend on later stages, so a bitstream of n stages cut to m < n is the
    bitstream of m stages, and the operating points are the prefixes ``n = 1..S``.

    Training draws the number of stages of each step's decoder input at random
    (quantizer dropout, Zeghidour et al. 2022, SoundStream), so every prefix decodes; every
    stage's codebook and commitment losses are taken every step. Codebooks start from the
    first batch's residuals (data-dependent initialisation) and dead codes restart as in
    :class:`VectorQuantizer`.

    Entropy-constrained search (``rate_lambda`` > 0; Chou, Lookabaugh and Gray 1989, ECVQ):
    a stage does not take the nearest code but the one of least

        ||r - c_i||^2 + rate_lambda * E_k * bits_i,      bits_i = -log2 p_i

    with p_i the running share of code i and E_k the running mean of ||r||^2 at the stage,
    so rate_lambda is the share of a stage's mean residual energy that one bit is worth.
    Where a residual is small (flat sky, road) every code is about as good and the common,
    cheap one wins; with ``skip_code`` that is code 0 of every stage after the first, the
    zero vector. A fixed-size index then costs bits where the picture needs them, which is
    what transform codecs do with zero coefficients. The costs are learnt while training
    and shipped (``code_cost``), so the encoder searches as it was trained.
    """

    def __init__(self, stages: Sequence[Sequence[int]], embed_dim: int, beta: float = 0.25,
                 restart_after: int = 200, rate_lambda: float = 0.0, skip_code: bool = False,
                 normalize: bool = True, quality_channel: bool = False):
        super().__init__()
        parsed = []
        for i, stage in enumerate(stages):
            try:
                scale, k = (int(v) for v in stage)
            except (TypeError, ValueError):
                raise ValueError("quantizer stage %d must be [scale, codebook_size], got %r" % (i + 1, stage)) from None
            if scale not in (1, 2, 4):
                raise ValueError("quantizer stage %d: scale must be 1, 2 or 4, got %d" % (i + 1, scale))
            if i and scale > parsed[-1][0]:
                raise ValueError("quantizer stages go from coarse to fine: stage %d (scale %d) is coarser than "
                                 "stage %d (scale %d)" % (i + 1, scale, i, parsed[-1][0]))
            parsed.append((scale, k))
        if not 1 <= len(parsed) <= 16:
            raise ValueError("a residual quantizer has 1 to 16 stages, got %d" % len(parsed))
        self.stages: List[Tuple[int, int]] = parsed
        self.embed_dim = embed_dim
        # the latent it codes is l2-normalised, as VectorQuantizer's, unless it is a transform
        # whose scale means something (Embedder.linear_paths)
        self.normalize = bool(normalize)
        # one more channel on the decoder's input, n / S everywhere for a prefix of n stages:
        # the decoder knows the operating point (it must not sharpen a coarse picture as if
        # detail were coming, nor blur a fine one)
        self.quality_channel = bool(quality_channel)
        if not 0.0 <= float(rate_lambda) <= 1.0:
            raise ValueError("rate_lambda (a share of the residual energy per bit) must be in [0, 1], got %r"
                             % (rate_lambda,))
        self.rate_lambda = float(rate_lambda)
        self.codebooks = nn.ModuleList(
            VectorQuantizer(k, embed_dim, beta=beta, restart_after=restart_after, normalize=False,
                            skip_code=bool(skip_code) and i > 0)
            for i, (_, k) in enumerate(parsed))
        for vq in self.codebooks:
            nn.init.normal_(vq.embedding.weight, std=0.01)
        # which codebooks were initialised from data (training only)
        self.register_buffer("initialised", torch.zeros(len(parsed), dtype=torch.bool))

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def codebook_size(self) -> int:
        """K of the first stage (the bitstream header's codebook_size)."""
        return self.stages[0][1]

    def _target(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) if self.normalize else z

    def _stage_input(self, k: int, residual: torch.Tensor) -> torch.Tensor:
        """Stage k's input: the residual on the stage's grid (codebook initialised from it on
        the first training step)."""
        r = pool_to(residual, self.stages[k][0])
        if self.training and not bool(self.initialised[k]):
            self._init_codebook(self.codebooks[k], r)
            self.initialised[k] = True
        return r

    @torch.no_grad()
    def _init_codebook(self, vq: VectorQuantizer, r: torch.Tensor) -> None:
        flat = r.detach().permute(0, 2, 3, 1).reshape(-1, self.embed_dim).float()
        pick = torch.randint(0, flat.shape[0], (vq.codebook_size,), device=flat.device)
        new = flat[pick] + 0.01 * flat.std() * torch.randn_like(flat[pick])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(new, 0)
        vq.embedding.weight.data.copy_(new.to(vq.embedding.weight.dtype))

    def encode_indices(self, z: torch.Tensor, stages: Optional[int] = None) -> List[torch.Tensor]:
        """B x D x h x w latents -> the index grids of the first ``stages`` stages (default all),
        stage k's B x ceil(h/s_k) x ceil(w/s_k) int64."""
        with full_precision(z):
            return self._encode_indices(z.float(), stages)

    def _encode_indices(self, z: torch.Tensor, stages: Optional[int]) -> List[torch.Tensor]:
        x = self._target(z)
        shape = tuple(x.shape[-2:])
        residual = x
        out = []
        for k in range(self._count(stages)):
            vq = self.codebooks[k]
            idx = vq.encode_indices(self._stage_input(k, residual))
            residual = residual - expand_to(vq.lookup(idx), self.stages[k][0], shape)
            out.append(idx)
        return out

    def lookup(self, codes: Sequence[torch.Tensor], shape: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Index grids of the first n stages -> the decoder's input z_q (B x D x h x w).
        ``shape``: the finest grid (default: what the finest stage given implies)."""
        if isinstance(codes, torch.Tensor):
            codes = [codes]
        if not 1 <= len(codes) <= self.num_stages:
            raise ValueError("%d code grids given; this quantizer has %d stages" % (len(codes), self.num_stages))
        if shape is None:
            scale = self.stages[len(codes) - 1][0]
            shape = (codes[-1].shape[-2] * scale, codes[-1].shape[-1] * scale)
        z = None
        for k, idx in enumerate(codes):
            scale = self.stages[k][0]
            expected = stage_shape(shape, scale)
            if tuple(idx.shape[-2:]) != expected:
                raise ValueError("stage %d codes are %dx%d, expected %dx%d for a %dx%d grid"
                                 % (k + 1, idx.shape[-2], idx.shape[-1], expected[0], expected[1], shape[0], shape[1]))
            q = expand_to(self.codebooks[k].lookup(idx), scale, shape)
            z = q if z is None else z + q
        return self.with_quality(z, len(codes))

    @property
    def out_channels(self) -> int:
        """Channels of the decoder's input: the latent's, plus the quality channel if any."""
        return self.embed_dim + int(self.quality_channel)

    def with_quality(self, z: torch.Tensor, count: int) -> torch.Tensor:
        """``z`` with the quality channel (``count`` / S) appended, where there is one."""
        if not self.quality_channel:
            return z
        level = torch.full_like(z[:, :1], float(count) / self.num_stages)
        return torch.cat([z, level], dim=1)

    def _count(self, stages: Optional[int]) -> int:
        if stages is None:
            return self.num_stages
        stages = int(stages)
        if not 1 <= stages <= self.num_stages:
            raise ValueError("stages must be in [1, %d], got %d" % (self.num_stages, stages))
        return stages

    def forward(self, z: torch.Tensor, stages: Optional[int] = None):
        """Quantize with every stage (their losses) and give the decoder the first ``stages``
        (default all) through the straight-through estimator. Returns z_q, the loss, the index
        grids of all stages and statistics."""
        with full_precision(z):
            return self._forward(z.float(), stages)

    def _forward(self, z: torch.Tensor, stages: Optional[int]):
        keep = self._count(stages)
        x = self._target(z)
        shape = tuple(x.shape[-2:])
        residual = x
        partial = torch.zeros_like(x)
        losses, codes = [], []
        stats: Dict[str, torch.Tensor] = {}
        for k in range(self.num_stages):
            inp = self._stage_input(k, residual)
            q, loss, idx, st = self.codebooks[k](inp)
            if self.training and self.rate_lambda > 0:
                st["bits"] = self.update_costs(self.codebooks[k], inp, idx)
                stats["bits_%d" % (k + 1)] = st["bits"]
            up = expand_to(q.detach(), self.stages[k][0], shape)
            residual = residual - up
            if k < keep:
                partial = partial + up
            losses.append(loss)
            codes.append(idx)
            stats["perplexity_%d" % (k + 1)] = st["perplexity"]
            for name in ("codebook_loss", "commitment_loss"):  # summed over the stages
                stats[name] = stats[name] + st[name] if name in stats else st[name]
        z_q = x + (partial - x).detach()  # straight-through: the encoder sees the identity
        stats["perplexity"] = stats["perplexity_1"]
        return self.with_quality(z_q, keep), torch.stack(losses).sum(), codes, stats

    @torch.no_grad()
    def update_costs(self, vq: VectorQuantizer, r: torch.Tensor, idx: torch.Tensor,
                     momentum: float = 0.99) -> torch.Tensor:
        """After a training step's search: move the running code shares and residual energy
        of ``vq`` towards this batch's and set its code costs from them. Returns the entropy
        of the shares in bits per index (what an order-0 coder would spend)."""
        counts = torch.bincount(idx.flatten(), minlength=vq.codebook_size).float()
        energy = r.detach().float().pow(2).sum(1).mean()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)  # every process keeps the same costs
            torch.distributed.all_reduce(energy)
            energy = energy / torch.distributed.get_world_size()
        share = counts / counts.sum().clamp_min(1.0)
        vq.ecvq_usage.mul_(momentum).add_((1.0 - momentum) * share)
        if float(vq.ecvq_energy) == 0.0:
            vq.ecvq_energy.fill_(float(energy))
        else:
            vq.ecvq_energy.mul_(momentum).add_((1.0 - momentum) * energy)
        # a floor on the share: a code nobody took lately costs at most log2(16 K) bits
        p = vq.ecvq_usage + 1.0 / (16 * vq.codebook_size)
        p = p / p.sum()
        bits = -torch.log2(p)
        vq.code_cost.copy_(self.rate_lambda * vq.ecvq_energy * bits)
        return (p * bits).sum()
