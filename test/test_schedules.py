"""rawdiff.diffusion.schedules: schedules against closed forms, conversions, training targets."""

import math

import pytest
import torch

from rawdiff.diffusion import schedules as sch


def test_linear_alphas_cumprod_is_the_product_of_one_minus_beta():
    betas = sch.linear_betas(1000, 1e-4, 2e-2)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(2e-2)
    abar = sch.alphas_cumprod(betas)
    # closed form: beta_t = b0 + t (b1 - b0) / (T - 1); abar_t = exp(sum_{s<=t} log(1 - beta_s))
    t = torch.arange(1000, dtype=torch.float64)
    closed = torch.exp(torch.cumsum(torch.log1p(-(1e-4 + t * (2e-2 - 1e-4) / 999)), 0))
    assert torch.allclose(abar, closed, rtol=1e-12, atol=0)
    assert abar[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # DDPM's T = 1000 ends near pure noise
    assert bool((abar[1:] < abar[:-1]).all())


def test_scaled_linear_is_linear_in_sqrt_beta():
    betas = sch.scaled_linear_betas(10, 0.00085, 0.012)
    root = betas.sqrt()
    assert torch.allclose(root[1:] - root[:-1], (root[1] - root[0]).expand(9), atol=1e-15)
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)


def test_cosine_schedule_follows_its_closed_form_where_betas_are_not_clipped():
    n, s = 1000, 0.008
    abar = sch.alphas_cumprod(sch.cosine_betas(n, s))
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    closed = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    unclipped = sch.cosine_betas(n, s, max_beta=1.0) < 0.999
    assert torch.allclose(abar[unclipped], closed[unclipped], rtol=1e-9, atol=1e-15)
    assert torch.allclose(sch.cosine_alphas_cumprod(n, s), closed, rtol=1e-12)
    assert not bool(unclipped[-1])  # the last beta is clipped at 0.999 (Nichol & Dhariwal)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="schedule must be one of"):
        sch.make_betas("sigmoid")
    with pytest.raises(ValueError, match="num_timesteps"):
        sch.linear_betas(0)
    with pytest.raises(ValueError, match="betas"):
        sch.alphas_cumprod(torch.tensor([0.1, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("steps", list(range(1, 51)))
def test_trailing_timesteps(steps):
    ts = sch.timesteps(1000, steps)
    assert ts.shape == (steps,) and ts.dtype == torch.long
    assert ts[0].item() == 999 and ts[-1].item() >= 0
    assert bool((ts[1:] < ts[:-1]).all())


def test_timesteps_bounds():
    assert sch.timesteps(10, 10).tolist() == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="steps 0"):
        sch.timesteps(1000, 0)
    with pytest.raises(ValueError, match="steps 11"):
        sch.timesteps(10, 11)


def test_v_eps_x0_conversions_invert_each_other():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64)
    abar = sch.alphas_cumprod(sch.cosine_betas(1000))
    t = torch.tensor([0, 10, 500, 999])
    a, s = sch.alpha_sigma(abar, t, x0)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(a))
    x_t = sch.q_sample(x0, eps, a, s)
    v = sch.v_from_x0_eps(x0, eps, a, s)
    assert torch.allclose(sch.x0_from_eps(x_t, eps, a, s), x0, atol=1e-6)
    assert torch.allclose(sch.eps_from_x0(x_t, x0, a, s), eps, atol=1e-9)
    assert torch.allclose(sch.x0_from_v(x_t, v, a, s), x0, atol=1e-12)
    assert torch.allclose(sch.eps_from_v(x_t, v, a, s), eps, atol=1e-12)
    for kind, out in (("eps", eps), ("v", v), ("x0", x0)):
        got_x0, got_eps = sch.to_x0_eps(kind, out, x_t, a, s)
        assert torch.allclose(got_x0, x0, atol=1e-6) and torch.allclose(got_eps, eps, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_training_target(prediction):
    x0 = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x0)
    abar = sch.alphas_cumprod(sch.linear_betas(100))
    t = torch.tensor([0, 50, 99])
    x_t, target = sch.training_target(x0, noise, abar, t, prediction)
    a, s = sch.alpha_sigma(abar, t, x0)
    assert torch.allclose(x_t, a * x0 + s * noise)
    got_x0, got_eps = sch.to_x0_eps(prediction, target, x_t, a, s)
    assert torch.allclose(got_x0, x0, atol=1e-9) and torch.allclose(got_eps, noise, atol=1e-9)
    with pytest.raises(ValueError, match="prediction"):
        sch.training_target(x0, noise, abar, t, "score")


def test_min_snr_weight_is_min_snr_gamma_on_the_x0_loss():
    abar = sch.alphas_cumprod(sch.linear_betas(1000))
    t = torch.tensor([0, 100, 500, 999])
    snr = sch.snr(abar, t)
    assert torch.allclose(snr, abar[t] / (1 - abar[t]))
    # ||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2 and ||v - v_hat||^2 = (SNR + 1) ||x0 - x0_hat||^2
    expect = snr.clamp(max=5.0)
    assert torch.allclose(sch.min_snr_weight(snr, "eps") * snr, expect)
    assert torch.allclose(sch.min_snr_weight(snr, "v") * (snr + 1), expect)
    assert torch.allclose(sch.min_snr_weight(snr, "x0"), expect)
