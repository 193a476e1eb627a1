"""rawdiff.diffusion.samplers: DDIM and DPM-Solver++(2M) with oracle denoisers, 1 to 50 steps."""

import pytest
import torch

from rawdiff.diffusion import samplers
from rawdiff.diffusion import schedules as sch

ABAR = sch.alphas_cumprod(sch.linear_betas(1000))
SAMPLERS = [samplers.sample_ddim, samplers.sample_dpmpp_2m]


def oracle(x0, prediction):
    """A perfect denoiser of a single data point x0: the exact eps / v / x0 for any x_t."""

    def model(x_t, t, cond):
        a, s = sch.alpha_sigma(ABAR, t, x_t)
        eps = sch.eps_from_x0(x_t, x0, a, s)
        return {"eps": eps, "v": sch.v_from_x0_eps(x0, eps, a, s), "x0": x0.expand_as(x_t)}[prediction]

    return model


def gaussian_denoiser(mu, std, prediction):
    """The exact denoiser of data N(mu, std^2): E[x0 | x_t] = mu + a std^2 (x_t - a mu) / (a^2 std^2 + s^2)."""

    def model(x_t, t, cond):
        a, s = sch.alpha_sigma(ABAR, t, x_t)
        x0 = mu + a * std ** 2 * (x_t - a * mu) / (a ** 2 * std ** 2 + s ** 2)
        eps = sch.eps_from_x0(x_t, x0, a, s)
        return {"eps": eps, "v": sch.v_from_x0_eps(x0, eps, a, s), "x0": x0}[prediction]

    return model


def gaussian_flow(x_start, mu, std):
    """Where the probability-flow ODE takes x_start at t = T-1 for data N(mu, std^2):
    x_t = a_t mu + sqrt(a_t^2 std^2 + s_t^2) z with z fixed."""
    a, s = ABAR[-1].sqrt().item(), (1 - ABAR[-1]).sqrt().item()
    z = (x_start - a * mu) / (a ** 2 * std ** 2 + s ** 2) ** 0.5
    return mu + std * z


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_oracle_denoiser_recovers_x0_at_every_step_count(sampler, prediction):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    for steps in range(1, 51):
        noise = samplers.initial_noise(x0.shape, torch.Generator().manual_seed(steps), dtype=torch.float64)
        out = sampler(oracle(x0, prediction), noise, ABAR, steps, prediction=prediction)
        assert torch.allclose(out, x0, atol=1e-8), (steps, (out - x0).abs().max())


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda f: f.__name__)
def test_one_model_evaluation_per_step_and_trailing_timesteps(sampler):
    seen = []

    def model(x, t, cond):
        assert cond == "c" and t.shape == (x.shape[0],)
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    for steps in (1, 2, 7, 50):
        seen.clear()
        sampler(model, torch.randn(2, 1, 3, 3), ABAR, steps, cond="c", prediction="eps")
        assert seen == sch.timesteps(1000, steps).tolist()


def test_dpmpp_2m_converges_faster_than_ddim_on_a_gaussian():
    mu, std = 0.7, 0.5
    x_start = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = gaussian_flow(x_start, mu, std)
    errors = {}
    for name in ("ddim", "dpmpp_2m"):
        errors[name] = []
        for steps in (5, 10, 20, 50):
            out = samplers.get_sampler(name)(gaussian_denoiser(mu, std, "v"), x_start, ABAR, steps, prediction="v")
            errors[name].append((out - exact).abs().max().item())
    for name, errs in errors.items():
        assert all(b < a for a, b in zip(errs, errs[1:])), (name, errs)
    assert errors["dpmpp_2m"][-1] < 0.01 < errors["ddim"][-1]
    # second order: below the first-order DDIM at the same number of steps, far below from 20 on
    assert all(d < e for d, e in zip(errors["dpmpp_2m"], errors["ddim"])), errors
    assert all(d < 0.5 * e for d, e in zip(errors["dpmpp_2m"][2:], errors["ddim"][2:])), errors


def test_ddim_with_eta_draws_from_the_generator_reproducibly():
    model = gaussian_denoiser(0.0, 1.0, "eps")
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    run = [samplers.sample_ddim(model, x, ABAR, 10, eta=1.0, generator=torch.Generator().manual_seed(s))
           for s in (5, 5, 6)]
    assert torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])
    assert torch.equal(samplers.sample_ddim(model, x, ABAR, 10), samplers.sample_ddim(model, x, ABAR, 10))
    with pytest.raises(ValueError, match="Generator"):
        samplers.sample_ddim(model, x, ABAR, 10, eta=1.0)


def test_initial_noise_depends_only_on_the_seed_and_sampler_names():
    a = samplers.initial_noise((2, 3), torch.Generator().manual_seed(4))
    b = samplers.initial_noise((2, 3), torch.Generator().manual_seed(4), device="cpu")
    assert torch.equal(a, b)
    assert samplers.get_sampler("ddim") is samplers.sample_ddim
    with pytest.raises(ValueError, match="sampler must be one of"):
        samplers.get_sampler("euler")
