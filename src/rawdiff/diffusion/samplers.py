"""Samplers: pure functions that integrate a trained denoiser from noise to data.

Every sampler has the same signature (after k-diffusion's ``sample_x(model, x, sigmas, ...)``)::

    sample_x(model, x, abar, steps, cond=None, prediction="eps", generator=None, callback=None) -> x0

- ``model(x_t, t, cond) -> output``: t is a B-vector of integer timesteps, ``output`` is
  eps, v or x0 as ``prediction`` says. The network never knows which sampler runs it.
- ``x`` is the starting noise x_{T-1} (draw it with :func:`initial_noise` and an explicit
  ``torch.Generator``, so a seed reproduces a sample on any device).
- ``abar`` is the schedule's alphas_cumprod (:mod:`rawdiff.diffusion.schedules`);
  ``steps`` (1 .. T) model evaluations at trailing timesteps; the last one is followed by
  the step to the clean sample (abar = 1), so one step returns the network's x0 at t = T-1.
- ``callback(i, t, x, x0)`` after every step, for progress or previews.

Samplers: :func:`sample_ddim` (Song et al. 2021; eta = 0 is deterministic) and
:func:`sample_dpmpp_2m` (Lu et al. 2022, *DPM-Solver++*, multistep second order).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch

from rawdiff.diffusion.schedules import timesteps, to_x0_eps

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
Callback = Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]]


def initial_noise(shape: Sequence[int], generator: torch.Generator, device=None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) drawn on the generator's device, then moved: the same seed gives the same
    noise on the CPU and on an accelerator."""
    noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device) if device is not None else noise


def _evaluate(model: Denoiser, x: torch.Tensor, t: int, cond: Any, abar: torch.Tensor, prediction: str):
    """(x0, eps, alpha_t, sigma_t) of the model at timestep ``t``."""
    a = abar[t]
    alpha, sigma = float(a.sqrt()), float((1 - a).sqrt())
    t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    x0, eps = to_x0_eps(prediction, model(x, t_batch, cond), x, alpha, sigma)
    return x0, eps, alpha, sigma


@torch.no_grad()
def sample_ddim(model: Denoiser, x: torch.Tensor, abar: torch.Tensor, steps: int, cond: Any = None,
                prediction: str = "eps", eta: float = 0.0, generator: Optional[torch.Generator] = None,
                callback: Callback = None) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, *Denoising Diffusion Implicit Models*). eta = 0 is the
    deterministic sampler; eta = 1 is DDPM's ancestral sampler on the same timesteps and
    needs ``generator``."""
    if eta and generator is None:
        raise ValueError("DDIM with eta=%g draws noise: pass a torch.Generator" % eta)
    abar = abar.double().cpu()
    ts = timesteps(len(abar), steps).tolist()
    for i, t in enumerate(ts):
        x0, eps, _, _ = _evaluate(model, x, t, cond, abar, prediction)
        abar_t = float(abar[t])
        abar_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0  # the last step lands on clean data
        # sigma_t(eta) = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)   (DDIM eq. 16)
        noise_std = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        # "direction pointing to x_t": sqrt(1 - abar_prev - sigma_t^2) eps_theta                 (DDIM eq. 12)
        direction = (max(1 - abar_prev - noise_std ** 2, 0.0)) ** 0.5 * eps
        # x_prev = sqrt(abar_prev) x0_pred + direction + sigma_t z                               (DDIM eq. 12)
        x = abar_prev ** 0.5 * x0 + direction
        if noise_std > 0:
            x = x + noise_std * initial_noise(x.shape, generator, x.device, x.dtype)
        if callback is not None:
            callback(i, t, x, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Denoiser, x: torch.Tensor, abar: torch.Tensor, steps: int, cond: Any = None,
                    prediction: str = "eps", generator: Optional[torch.Generator] = None,
                    callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, *DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models*, Algorithm 2): a multistep second-order solver of the
    probability-flow ODE in data prediction, lambda_t = log(alpha_t / sigma_t).

    The first step is first order (DPM-Solver++1, which is DDIM); the step to clean data
    (sigma = 0, lambda = inf) is first order too and gives the last data prediction, as
    diffusers' ``final_sigmas_type="zero"``. Deterministic: ``generator`` is not used.
    """
    abar = abar.double().cpu()
    ts = timesteps(len(abar), steps).tolist()
    x0_prev = None
    h_prev = None
    for i, t in enumerate(ts):
        x0, _, alpha_s, sigma_s = _evaluate(model, x, t, cond, abar, prediction)
        if i + 1 == len(ts):
            x = x0  # sigma_next = 0: exp(-h) = 0 in the update below                         (Alg. 2, t_M -> 0)
        else:
            t_next = ts[i + 1]
            alpha_t, sigma_t = float(abar[t_next].sqrt()), float((1 - abar[t_next]).sqrt())
            # h_i = lambda_{t_i} - lambda_{t_{i-1}}, lambda = log(alpha / sigma)                 (eq. 9 / Alg. 2)
            h = math.log(alpha_t / sigma_t) - math.log(alpha_s / sigma_s)
            if x0_prev is None:
                d = x0  # first step: first order                                             (Alg. 2, line 3)
            else:
                r = h_prev / h  # r_i = h_{i-1} / h_i                                        (Alg. 2, line 5)
                # D_i = (1 + 1/(2 r_i)) x_theta(x_{i-1}) - 1/(2 r_i) x_theta(x_{i-2})           (Alg. 2, line 6)
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            # x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i  (Alg. 2, line 7)
            x = (sigma_t / sigma_s) * x - alpha_t * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, t, x, x0)
    return x


SAMPLERS = {"ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise ValueError("sampler must be one of %s, got %r" % (", ".join(sorted(SAMPLERS)), name))
    return SAMPLERS[name]


__all__ = ["SAMPLERS", "get_sampler", "initial_noise", "sample_ddim", "sample_dpmpp_2m"]
