"""Noise schedules of discrete-time diffusion and the conversions between what a network
may predict. Pure functions on tensors: no ``nn.Module``, no weights.

Notation (Ho et al. 2020, *DDPM*; Kingma et al. 2021, *VDM*; Salimans & Ho 2022)::

    beta_t            variance added at step t, t = 0 .. T-1
    abar_t            alphas_cumprod = prod_{s<=t} (1 - beta_s)          (DDPM eq. 4)
    alpha_t, sigma_t  sqrt(abar_t), sqrt(1 - abar_t): x_t = alpha_t x0 + sigma_t eps
    v                 alpha_t eps - sigma_t x0                             (Salimans & Ho, sec. 4)

Schedules are computed in float64; conversions cast alpha/sigma to the sample's dtype.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch

PREDICTIONS = ("eps", "v", "x0")
SCHEDULES = ("linear", "scaled_linear", "cosine")
Timestep = Union[int, torch.Tensor]


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """DDPM's schedule: betas linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020, sec. 4)."""
    _check_steps(num_timesteps)
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def scaled_linear_betas(num_timesteps: int = 1000, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> torch.Tensor:
    """Latent diffusion's schedule: sqrt(beta) linear (Rombach et al. 2022, configs ``linear``)."""
    _check_steps(num_timesteps)
    return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=torch.float64) ** 2


def cosine_alphas_cumprod(num_timesteps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """abar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2) (Nichol & Dhariwal 2021, eq. 17),
    at t = 1 .. T (index 0 is one step of noise)."""
    _check_steps(num_timesteps)
    t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f / f[0])[1:]


def cosine_betas(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule, clipped at ``max_beta`` (Nichol & Dhariwal 2021, sec. 3.2)."""
    abar = torch.cat([torch.ones(1, dtype=torch.float64), cosine_alphas_cumprod(num_timesteps, s)])
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(schedule: str = "linear", num_timesteps: int = 1000, **kwargs) -> torch.Tensor:
    makers = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas}
    if schedule not in makers:
        raise ValueError("schedule must be one of %s, got %r" % (", ".join(SCHEDULES), schedule))
    return makers[schedule](num_timesteps, **kwargs)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s) (DDPM eq. 4)."""
    if betas.ndim != 1 or bool(((betas <= 0) | (betas >= 1)).any()):
        raise ValueError("betas must be a 1-d tensor in (0, 1)")
    return torch.cumprod(1.0 - betas.double(), dim=0)


def _check_steps(num_timesteps: int) -> None:
    if int(num_timesteps) < 1:
        raise ValueError("num_timesteps %r must be >= 1" % (num_timesteps,))


def alpha_sigma(abar: torch.Tensor, t: Timestep, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """alpha_t, sigma_t at timestep(s) ``t`` (int or B-vector), shaped to broadcast over ``like``."""
    t = torch.as_tensor(t, device=abar.device).long()
    a = abar[t].reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else abar[t]
    return a.sqrt().to(like.device, like.dtype), (1 - a).sqrt().to(like.device, like.dtype)


def timesteps(num_timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` timesteps, descending, "trailing" spacing: the first is always T - 1.

    Sampling must start from (nearly) pure noise, also with one step; the "leading" spacing
    of the DDIM paper starts at T - T/steps (Lin et al. 2024, *Common Diffusion Noise
    Schedules and Sample Steps are Flawed*, sec. 3.3 and Table 2).
    """
    _check_steps(num_timesteps)
    if not 1 <= int(steps) <= num_timesteps:
        raise ValueError("steps %r must be in [1, %d]" % (steps, num_timesteps))
    i = torch.arange(steps, dtype=torch.float64)
    return (torch.round(num_timesteps - i * num_timesteps / steps) - 1).long()


def snr(abar: torch.Tensor, t: Timestep) -> torch.Tensor:
    """Signal-to-noise ratio alpha_t^2 / sigma_t^2 = abar_t / (1 - abar_t) (Kingma et al. 2021, eq. 1)."""
    a = abar[torch.as_tensor(t, device=abar.device).long()]
    return a / (1 - a)


def min_snr_weight(snr_t: torch.Tensor, prediction: str, gamma: float = 5.0) -> torch.Tensor:
    """Per-sample loss weight of Min-SNR-gamma (Hang et al. 2023, eq. 11 and Table 1): the
    weight min(SNR, gamma) of the x0 loss, expressed for the target the network regresses."""
    clipped = snr_t.clamp(max=gamma)
    if prediction == "x0":
        return clipped
    if prediction == "eps":
        return clipped / snr_t
    if prediction == "v":
        return clipped / (snr_t + 1)
    raise ValueError("prediction must be one of %s, got %r" % (", ".join(PREDICTIONS), prediction))


# -- what the network predicts ------------------------------------------------------------

def q_sample(x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = alpha_t x0 + sigma_t eps (DDPM eq. 4)."""
    return alpha * x0 + sigma * noise


def v_from_x0_eps(x0, eps, alpha, sigma):
    """v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022, sec. 4)."""
    return alpha * eps - sigma * x0


def x0_from_eps(x_t, eps, alpha, sigma):
    """x0 = (x_t - sigma_t eps) / alpha_t (DDPM eq. 4 solved for x0; DDIM eq. 12, "predicted x0")."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    return (x_t - alpha * x0) / sigma


def x0_from_v(x_t, v, alpha, sigma):
    """x0 = alpha_t x_t - sigma_t v (Salimans & Ho 2022, eq. after (4), alpha^2 + sigma^2 = 1)."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t, v, alpha, sigma):
    return sigma * x_t + alpha * v


def to_x0_eps(prediction: str, output: torch.Tensor, x_t: torch.Tensor, alpha, sigma):
    """(x0, eps) from a network output of kind ``prediction`` ("eps", "v" or "x0")."""
    if prediction == "eps":
        return x0_from_eps(x_t, output, alpha, sigma), output
    if prediction == "v":
        return x0_from_v(x_t, output, alpha, sigma), eps_from_v(x_t, output, alpha, sigma)
    if prediction == "x0":
        return output, eps_from_x0(x_t, output, alpha, sigma)
    raise ValueError("prediction must be one of %s, got %r" % (", ".join(PREDICTIONS), prediction))


def training_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor, t: torch.Tensor,
                    prediction: str = "eps") -> Tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target) of one DDPM training step (Ho et al. 2020, Algorithm 1): the network sees
    x_t at t and regresses ``target`` (eps, v or x0) with an MSE."""
    alpha, sigma = alpha_sigma(abar, t, x0)
    x_t = q_sample(x0, noise, alpha, sigma)
    if prediction == "eps":
        return x_t, noise
    if prediction == "v":
        return x_t, v_from_x0_eps(x0, noise, alpha, sigma)
    if prediction == "x0":
        return x_t, x0
    raise ValueError("prediction must be one of %s, got %r" % (", ".join(PREDICTIONS), prediction))


__all__ = ["PREDICTIONS", "SCHEDULES", "alpha_sigma", "alphas_cumprod", "cosine_alphas_cumprod", "cosine_betas",
           "eps_from_v", "eps_from_x0", "linear_betas", "make_betas", "min_snr_weight", "q_sample",
           "scaled_linear_betas", "snr", "timesteps", "to_x0_eps", "training_target", "v_from_x0_eps",
           "x0_from_eps", "x0_from_v"]
