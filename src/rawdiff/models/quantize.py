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

from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, embed_dim: int, beta: float = 0.25, restart_after: int = 200,
                 normalize: bool = True):
        super().__init__()
        if codebook_size < 2 or codebook_size > 65536:
            raise ValueError("codebook_size %d must be in [2, 65536]" % codebook_size)
        self.codebook_size = codebook_size
        self.embed_dim = embed_dim
        self.beta = beta
        self.restart_after = restart_after
        self.normalize = normalize
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        nn.init.normal_(self.embedding.weight)
        # steps since each code was last used; not a parameter, but saved with the weights
        self.register_buffer("idle_steps", torch.zeros(codebook_size, dtype=torch.long))

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=1) if self.normalize else w

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
        return dist.argmin(dim=1)

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
