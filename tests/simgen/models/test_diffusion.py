"""The VP diffusion: schedules, the probability-flow ODE as a linear-path CNF, score, reverse-SDE sampler.

Accuracy after training (log_prob against the true density, C2ST of samples) and the estimator paths are tested
for both continuous families together in test_cnf.py.
"""

import pytest
import torch

from simgen.models import Diffusion

SMALL = dict(hidden_features=32, num_blocks=1, time_features=16)


def _perturbed(**kwargs):
    torch.manual_seed(0)
    density = Diffusion(**SMALL, **kwargs).build((3,), 2)
    with torch.no_grad():
        for p in density.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return density


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_is_variance_preserving_and_beta_is_its_rate(schedule):
    model = Diffusion(schedule=schedule)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    alpha, sigma = model.alpha_sigma(t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t))
    h = 1e-6
    dlog_alpha = (model.alpha_sigma(t + h)[0].log() - model.alpha_sigma(t - h)[0].log()) / (2 * h)
    assert torch.allclose(model.beta(t), -2 * dlog_alpha, rtol=1e-5)
    assert (alpha[1:] < alpha[:-1]).all()
    a1, _ = model.alpha_sigma(torch.tensor(1.0, dtype=torch.float64))
    assert 0 < a1 < 0.01  # t = 1 is (almost) pure noise


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_linear_path_time_inverts_the_diffusion_time(schedule):
    model = Diffusion(schedule=schedule, t_min=1e-3)
    t = torch.linspace(1e-3, 1.0, 101, dtype=torch.float64)
    assert torch.allclose(model.t_of_tau(model.tau_of_t(t)), t, atol=1e-9)
    tau0, tau1 = model.tau_range
    assert 0 < tau0 < 0.05 and 0.99 < tau1 < 1


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_velocity_is_the_probability_flow_ode_in_linear_path_coordinates(schedule):
    """dx/dt = −½β(t)(x − ε̂/σ_t), mapped by y = x/(α_t + σ_t), τ = σ_t/(α_t + σ_t), is dy/dτ = v(y, τ)."""
    model = _perturbed(schedule=schedule).double()
    x, c = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.8, 0.97], dtype=torch.float64)
    alpha, sigma = model.alpha_sigma(t)
    with torch.no_grad():
        eps = model.noise_prediction(x, t, c)
        dx_dt = -0.5 * model.beta(t)[:, None] * (x - eps / sigma[:, None])
        h = 1e-6
        a_p, s_p = model.alpha_sigma(t + h)
        a_m, s_m = model.alpha_sigma(t - h)
        dk_dt = ((a_p + s_p) - (a_m + s_m)) / (2 * h)
        dtau_dt = (model.tau_of_t(t + h) - model.tau_of_t(t - h)) / (2 * h)
        k = alpha + sigma
        y = x / k[:, None]
        dy_dtau = (dx_dt / k[:, None] - y * (dk_dt / k)[:, None]) / dtau_dt[:, None]
        v = model.velocity(y, model.tau_of_t(t), c)
    assert torch.allclose(v, dy_dtau, rtol=1e-5, atol=1e-6)


def test_score_is_minus_noise_over_sigma_and_exact_for_a_standard_normal_at_start():
    fresh = Diffusion(**SMALL).build((3,), None)
    x, t = torch.randn(6, 3), torch.rand(6) * 0.9 + 0.05
    with torch.no_grad():
        assert torch.allclose(fresh.score(x, t, None), -x, atol=1e-5)  # ∇ log N(0, I) = −x for every t
    model = _perturbed()
    c = torch.randn(6, 2)
    with torch.no_grad():
        _, sigma = model.alpha_sigma(t)
        assert torch.allclose(model.score(x, t, c), -model.noise_prediction(x, t, c) / sigma[:, None])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_reverse_sde_sampler_draws_the_modelled_distribution(schedule):
    """A fresh model has the exact score of N(0, I) data, so Euler–Maruyama must return N(0, I) samples."""
    model = Diffusion(schedule=schedule, **SMALL).build((2,), None)
    samples = model.sample(4000, None, method="sde", steps=200, generator=torch.Generator().manual_seed(0))
    assert model.last_nfe == 200
    assert samples.mean(0).abs().max() < 0.08
    assert (samples.std(0) - 1).abs().max() < 0.06
    assert torch.cov(samples.T)[0, 1].abs() < 0.06
    again = model.sample(4000, None, method="sde", steps=200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_sde_sampler_shapes_and_default():
    model = _perturbed(method="sde", sde_steps=5)
    out = model.sample(4, torch.randn(3, 2))
    assert out.shape == (3, 4, 3) and torch.isfinite(out).all() and model.last_nfe == 5
    ode = model.sample(4, torch.randn(3, 2), method="heun", steps=2)
    assert ode.shape == (3, 4, 3) and model.last_nfe == 4


def test_diffusion_rejects_bad_hyper_parameters_and_rebuilds_from_config():
    with pytest.raises(ValueError, match="schedule must be"):
        Diffusion(schedule="quadratic")
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        Diffusion(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="t_min"):
        Diffusion(t_min=0.0)
    with pytest.raises(ValueError, match="sde_steps"):
        Diffusion(sde_steps=0)
    model = Diffusion(schedule="cosine", method="sde", sde_steps=50, t_min=1e-4)
    assert Diffusion(**model.config()).config() == model.config()


def test_edm_schedule_preconditioning_and_a_fresh_model_are_exact_for_standard_normal_data():
    """schedule="edm": σ runs log-linearly from 0.002 to 80, EDM's c_skip/c_out/c_in, a fresh network (F = 0)
    is the exact denoiser of N(0, I) data, so its log_prob is log N(y; 0, I) up to the solver and the prior at
    σ_max; a few training steps on maps give a finite loss and finite samples of the right shape."""
    model = Diffusion(schedule="edm", hidden_features=16, num_blocks=1, time_features=8).build((3,), None)
    level, c_skip, c_out, c_in, c_noise = model.preconditioning(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(level, torch.tensor([0.002, (0.002 * 80) ** 0.5, 80.0], dtype=torch.float64))
    assert torch.allclose(c_skip, 1 / (1 + level**2)) and torch.allclose(c_out, level / (1 + level**2).sqrt())
    assert torch.allclose(c_in, 1 / (1 + level**2).sqrt())
    y = torch.randn(5, 3)
    exact = torch.distributions.Normal(0.0, 1.0).log_prob(y).sum(-1)
    assert torch.allclose(model.log_prob(y, None), exact, atol=1e-3)
    maps = Diffusion(schedule="edm", channels=(8,), blocks_per_level=1, attention=False).build((8, 8), 2)
    loss = maps.loss(torch.randn(16, 8, 8), torch.randn(16, 2))
    loss.backward()
    assert torch.isfinite(loss)
    for method in ("heun", "edm"):
        out = maps.sample(3, torch.randn(2, 2), method=method, steps=4)
        assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
    assert Diffusion(**maps.config()).schedule == "edm"
