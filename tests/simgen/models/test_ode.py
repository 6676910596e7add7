"""The ODE/SDE toolbox: convergence orders, evaluation counts, Euler–Maruyama statistics, divergences."""

import math

import pytest
import torch

from simgen.models.ode import divergence, euler_maruyama, hutchinson_probes, integrate

A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)  # a damped rotation


def _linear(t, y):
    return y @ A.T


def _exact(y0, t0, t1):
    return y0 @ torch.linalg.matrix_exp(A * (t1 - t0)).T


@pytest.mark.parametrize(("method", "order", "per_step"), [("euler", 1, 1), ("heun", 2, 2), ("rk4", 4, 4)])
def test_fixed_step_methods_converge_at_their_order_and_count_evaluations(method, order, per_step):
    y0 = torch.tensor([[1.0, 0.0], [0.3, -2.0]], dtype=torch.float64)
    errors = []
    for steps in (20, 40):
        sol = integrate(_linear, y0, torch.linspace(0.0, 2.0, steps + 1, dtype=torch.float64), method=method)
        assert sol.nfe == per_step * steps
        errors.append((sol.y - _exact(y0, 0.0, 2.0)).abs().max().item())
    observed = math.log2(errors[0] / errors[1])
    assert abs(observed - order) < 0.3, (method, errors)


def test_dopri5_meets_its_tolerance_and_integrates_backwards():
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    sol = integrate(_linear, y0, torch.tensor([2.0, 0.0], dtype=torch.float64), method="dopri5", rtol=1e-8, atol=1e-8)
    assert torch.allclose(sol.y, _exact(y0, 2.0, 0.0), atol=1e-6)
    assert sol.nfe > 6
    heun_back = integrate(_linear, y0, torch.linspace(2.0, 0.0, 201, dtype=torch.float64), method="heun")
    assert torch.allclose(heun_back.y, _exact(y0, 2.0, 0.0), atol=1e-3)


def test_dopri5_split_controls_a_narrow_column_as_tightly_as_the_wide_block():
    """An augmented state [y (255 columns), log-det (1)]: the RMS norm over all 256 columns lets the last one's
    error grow 16-fold past the tolerance; ``split`` controls each block on its own."""
    d = 255

    def field(t, s):
        out = torch.zeros_like(s)
        out[:, d] = 40 * torch.cos(40 * t) * (1 + s[:, 0])  # ∫₀³ = sin(120) (1 + y₀)
        return out

    y0 = torch.zeros(3, d + 1, dtype=torch.float64)
    y0[:, 0] = torch.tensor([0.0, 1.0, 2.0])
    exact = math.sin(120.0) * (1 + y0[:, 0])
    grid = torch.tensor([0.0, 3.0], dtype=torch.float64)
    errors = {}
    for split in (None, d):
        sol = integrate(field, y0, grid, method="dopri5", rtol=1e-5, atol=1e-5, split=split)
        errors[split] = (sol.y[:, d] - exact).abs().max().item()
    assert errors[d] < 2e-4 < errors[None], errors
    with pytest.raises(ValueError, match="split"):
        integrate(field, y0, grid, method="dopri5", split=d + 1)


def test_integrate_rejects_bad_arguments():
    y0 = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ODE method must be one of"):
        integrate(_linear, y0, torch.linspace(0, 1, 3), method="midpoint")
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        integrate(_linear, y0, torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="at least 2 times"):
        integrate(_linear, y0, torch.tensor([0.0]))


def test_euler_maruyama_reproduces_ornstein_uhlenbeck_moments():
    """dy = −θ y dt + s dw from y₀ = 2: E y_T = 2 e^{−θT}, Var y_T = s²(1 − e^{−2θT}) / (2θ)."""
    theta, s, T = 1.0, 0.8, 1.0
    y0 = torch.full((20_000, 1), 2.0, dtype=torch.float64)
    grid = torch.linspace(0.0, T, 201, dtype=torch.float64)
    sol = euler_maruyama(lambda t, y: -theta * y, lambda t: torch.tensor(s), y0, grid,
                         generator=torch.Generator().manual_seed(0))
    assert sol.nfe == 200
    mean, var = 2 * math.exp(-theta * T), s**2 * (1 - math.exp(-2 * theta * T)) / (2 * theta)
    se_mean = math.sqrt(var / 20_000)
    assert abs(sol.y.mean().item() - mean) < 4 * se_mean + 0.01  # Euler's O(h) bias in the mean
    assert abs(sol.y.var().item() / var - 1) < 0.05
    again = euler_maruyama(lambda t, y: -theta * y, lambda t: torch.tensor(s), y0, grid,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.y, sol.y)


def _field():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5)).double()
    y = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    return net, y


def test_exact_divergence_is_the_jacobian_trace():
    net, y = _field()
    out = net(y)
    div = divergence(out, y)
    expected = torch.stack([torch.trace(torch.autograd.functional.jacobian(net, y[i])) for i in range(7)])
    assert torch.allclose(div, expected, atol=1e-10)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_the_trace(distribution):
    """Mean of 400 seeded single-probe estimates within 4 standard errors of the exact trace, row by row; the
    spread shrinks as 1/√K with K probes."""
    net, y = _field()
    out = net(y)
    exact = divergence(out, y)
    draws = torch.stack([
        divergence(out, y, probes=hutchinson_probes(1, 5, generator=torch.Generator().manual_seed(s),
                                                    dtype=torch.float64, distribution=distribution))
        for s in range(400)
    ])
    se = draws.std(0) / math.sqrt(400)
    assert ((draws.mean(0) - exact).abs() < 4 * se + 1e-9).all()
    assert (draws.std(0) > 0).all()  # the estimate is genuinely stochastic here
    many = torch.stack([
        divergence(out, y, probes=hutchinson_probes(16, 5, generator=torch.Generator().manual_seed(s),
                                                    dtype=torch.float64, distribution=distribution))
        for s in range(100)
    ])
    ratio = (many.std(0) / draws.std(0)).mean().item()
    assert 0.15 < ratio < 0.4  # ≈ 1/4


def test_hutchinson_probes_follow_the_generator_and_reject_bad_arguments():
    a = hutchinson_probes(3, 4, generator=torch.Generator().manual_seed(1))
    b = hutchinson_probes(3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="positive int"):
        hutchinson_probes(0, 4)
    with pytest.raises(ValueError, match="rademacher"):
        hutchinson_probes(1, 4, distribution="uniform")
    net, y = _field()
    with pytest.raises(ValueError, match=r"probes must have shape \[K, 5\]"):
        divergence(net(y), y, probes=torch.ones(2, 3))
    # per-row probes: row i's estimate uses probe row i only
    per_row = hutchinson_probes(1, 5, rows=y.shape[0], generator=torch.Generator().manual_seed(2))
    assert per_row.shape == (1, y.shape[0], 5)
    out = net(y)
    for i in range(y.shape[0]):
        shared = divergence(out, y, probes=per_row[:, i])
        assert torch.allclose(divergence(out, y, probes=per_row)[i], shared[i])


def test_karras_sigmas_and_the_heun_denoiser_sampler():
    """EDM's noise levels decrease from σ_max to σ_min, then 0; Heun on dx/dσ = (x − D)/σ with the exact
    denoiser of N(0, 1) data, D = x/(1 + σ²), maps N(0, σ_max²) to N(0, 1) in 2N − 1 evaluations."""
    from simgen.models.ode import heun_denoiser, karras_sigmas

    sigmas = karras_sigmas(30, 0.002, 80.0)
    assert sigmas.shape == (31,) and sigmas[0] == 80.0 and abs(float(sigmas[-2]) - 0.002) < 1e-12
    assert sigmas[-1] == 0 and (sigmas[1:] < sigmas[:-1]).all()
    x = 80.0 * torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = heun_denoiser(lambda s, y: y / (1 + s**2), x, sigmas)
    assert sol.nfe == 59
    # the exact flow is x(0) = x(σ_max) / √(1 + σ_max²); Heun's error shrinks with the number of levels
    exact = x.var().item() / (1 + 80.0**2)
    assert abs(sol.y.var().item() / exact - 1) < 0.05
    fine = heun_denoiser(lambda s, y: y / (1 + s**2), x, karras_sigmas(100, 0.002, 80.0))
    assert abs(fine.y.var().item() / exact - 1) < 0.01
    with pytest.raises(ValueError):
        karras_sigmas(1, 0.002, 80.0)
    with pytest.raises(ValueError):
        heun_denoiser(lambda s, y: y, x, torch.tensor([1.0, 2.0, 0.0]))
