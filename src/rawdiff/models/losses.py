"""Embedder losses: L1 + MS-SSIM reconstruction, PatchGAN hinge loss with taming's
adaptive weight, and discriminator feature matching.

Nothing here depends on a pretrained network (none can be fetched where rawdiff trains).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from rawdiff.metrics import ms_ssim


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017) with GroupNorm; returns logits and intermediate features."""

    def __init__(self, in_channels: int = 3, ch: int = 64, n_layers: int = 3):
        super().__init__()
        layers: List[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2))]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers.append(nn.Sequential(
                nn.Conv2d(ch * prev, ch * mult, 4, stride, 1, bias=False),
                nn.GroupNorm(min(32, ch * mult // 4), ch * mult),
                nn.LeakyReLU(0.2),
            ))
        self.features = nn.ModuleList(layers)
        self.head = nn.Conv2d(ch * mult, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        feats = []
        for layer in self.features:
            x = layer(x)
            feats.append(x)
        return self.head(x), feats


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def feature_matching_loss(feats_fake: List[torch.Tensor], feats_real: List[torch.Tensor]) -> torch.Tensor:
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(feats_fake, feats_real)) / len(feats_fake)


def reconstruction_loss(x_hat: torch.Tensor, target: torch.Tensor, l1_weight: float = 1.0,
                        ms_ssim_weight: float = 0.5) -> Dict[str, torch.Tensor]:
    """``rec = l1_weight * L1 + ms_ssim_weight * (1 - MS-SSIM)``, with the parts for logging."""
    l1 = F.l1_loss(x_hat, target)
    out = {"l1": l1, "rec": l1_weight * l1}
    if ms_ssim_weight > 0 and min(target.shape[-2:]) >= 11:
        # MS-SSIM over the first three channels (RGB, or R/G1/G2 when decoding to RAW)
        ssim = ms_ssim(x_hat[:, :3].clamp(0, 1).float(), target[:, :3].float()).mean()
        out["ms_ssim"] = ssim
        out["rec"] = out["rec"] + ms_ssim_weight * (1.0 - ssim)
    return out


class VQLoss(nn.Module):
    """Reconstruction + codebook + adversarial loss of the embedder.

    ``rec = l1_weight * L1 + ms_ssim_weight * (1 - MS-SSIM)``; after ``disc_start`` steps
    the generator also gets ``disc_factor * lambda * g_loss + fm_weight * FM`` where
    lambda balances the gradient norms at the decoder's last layer (Esser et al. 2021,
    eq. 7).
    """

    def __init__(self, disc_start: int = 2000, disc_weight: float = 0.5, disc_factor: float = 1.0,
                 l1_weight: float = 1.0, ms_ssim_weight: float = 0.5, codebook_weight: float = 1.0,
                 fm_weight: float = 1.0, disc_channels: int = 64, disc_layers: int = 3,
                 out_channels: int = 3):
        super().__init__()
        self.disc_start = disc_start
        self.disc_weight = disc_weight
        self.disc_factor = disc_factor
        self.l1_weight = l1_weight
        self.ms_ssim_weight = ms_ssim_weight
        self.codebook_weight = codebook_weight
        self.fm_weight = fm_weight
        self.discriminator = PatchDiscriminator(out_channels, disc_channels, disc_layers)

    def reconstruction(self, x_hat: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        return reconstruction_loss(x_hat, target, self.l1_weight, self.ms_ssim_weight)

    def adaptive_weight(self, rec: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
        rec_grad = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
        return torch.clamp(weight, 0.0, 1e4).detach() * self.disc_weight

    def generator_loss(self, x_hat: torch.Tensor, target: torch.Tensor, q_loss: torch.Tensor, step: int,
                       last_layer: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        logs = self.reconstruction(x_hat, target)
        loss = logs["rec"] + self.codebook_weight * q_loss
        logs["q_loss"] = q_loss.detach()
        if step >= self.disc_start and self.disc_factor > 0:
            logits_fake, feats_fake = self.discriminator(x_hat)
            with torch.no_grad():
                _, feats_real = self.discriminator(target)
            g_loss = -logits_fake.mean()
            if last_layer is not None and torch.is_grad_enabled():
                d_weight = self.adaptive_weight(logs["rec"], g_loss, last_layer)
            else:
                d_weight = torch.tensor(self.disc_weight, device=x_hat.device)
            fm = feature_matching_loss(feats_fake, feats_real)
            loss = loss + self.disc_factor * d_weight * g_loss + self.fm_weight * fm
            logs.update(g_loss=g_loss.detach(), d_weight=d_weight, fm=fm.detach())
        logs["loss"] = loss.detach()
        return loss, {k: v.detach() for k, v in logs.items()}

    def discriminator_loss(self, x_hat: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, Dict]:
        logits_real, _ = self.discriminator(target.detach())
        logits_fake, _ = self.discriminator(x_hat.detach())
        d_loss = self.disc_factor * hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"d_loss": d_loss.detach(), "logits_real": logits_real.mean().detach(),
                        "logits_fake": logits_fake.mean().detach()}
