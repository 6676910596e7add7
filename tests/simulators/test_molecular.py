"""double_well: exact Boltzmann sampler, trajectory likelihood, grid reference posterior (simulators/molecular.py)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import simulators
from simulators.molecular import BETA, TILT, Z0, DoubleWell, grad_potential, log_partition, potential

F64 = torch.float64
L = 99  # posterior samples per SBC draw: ranks in 0..99, five bins of 20


def sbc_pvalue(ranks: torch.Tensor, bins: int = 5) -> float:
    """Chi-square uniformity of the ranks per column, Bonferroni over columns."""
    counts = np.stack([np.bincount(r * bins // (L + 1), minlength=bins) for r in ranks.T.numpy()])
    return min(1.0, len(counts) * stats.chisquare(counts, axis=1).pvalue.min())


def sbc_ranks(sim, num_draws, seed, m=1):
    torch.manual_seed(seed)
    theta = sim.prior.sample((num_draws,))
    generator = torch.Generator().manual_seed(seed + 1)
    x = sim(theta.repeat_interleave(m, 0), generator=generator).reshape(num_draws, m, *sim.x_shape)
    if m == 1:
        samples = sim.reference_posterior_batched(x[:, 0], L, generator=generator)
    else:
        samples = torch.stack([sim.reference_posterior(xi, L, generator=generator) for xi in x])
    assert samples.shape == (num_draws, L, 2)
    return (samples < theta[:, None]).sum(1)


def x_marginal_cdf(T, h):
    """An independent CDF of x: cumulative trapezoid of exp(-(h(x²-1)²+cx)/T) on a 60001-point grid."""
    grid = np.linspace(-3, 3, 60001)
    dens = np.exp(-(h * (grid**2 - 1) ** 2 + TILT * grid) / T)
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0.0)
    return lambda v: np.interp(v, grid, cdf / cdf[-1])


# ------------------------------------------------------------------------------------------ protocol


@pytest.mark.parametrize(
    ("options", "x_shape", "x_kind", "tractable"),
    [
        ({}, (2,), "vector", True),
        ({"n_conf": 4}, (4, 2), "set", True),
        ({"mode": "trajectory"}, (100, 2), "sequence", True),
        ({"mode": "langevin"}, (2,), "vector", False),
    ],
)
def test_attributes_shapes_dtypes_seeding(options, x_shape, x_kind, tractable):
    sim = simulators.get("double_well", grid_size=32, **options)
    assert isinstance(sim, DoubleWell) and "double_well" in simulators.available()
    assert sim.parameter_names == ["T", "h"] and sim.d_theta == 2
    assert sim.x_shape == x_shape and sim.x_kind == x_kind and sim.tractable is tractable
    assert sim.x_discrete == ()
    low, high = sim.prior.support.base_constraint.lower_bound, sim.prior.support.base_constraint.upper_bound
    assert torch.equal(low, torch.tensor([0.2, 0.5])) and torch.equal(high, torch.tensor([1.0, 3.0]))
    theta = sim.prior.sample((6,))
    x = sim(theta, generator=torch.Generator().manual_seed(1))
    assert x.shape == (6, *x_shape) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sim(theta.double().numpy(), generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(x, sim(theta, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(5)
    y = sim(theta)
    torch.manual_seed(5)
    assert torch.equal(y, sim(theta))
    assert sim(theta[:0]).shape == (0, *x_shape)
    if tractable:
        log_l = sim.log_likelihood(theta, x)
        assert log_l.shape == (6,) and log_l.dtype == F64 and torch.isfinite(log_l).all()
        post = sim.reference_posterior(x[0], 7, generator=torch.Generator().manual_seed(0))
        assert post.shape == (7, 2) and post.dtype == torch.float32
        assert sim.prior.support.check(post).all()
    else:
        with pytest.raises(NotImplementedError, match="intractable likelihood"):
            sim.log_likelihood(theta, x)
        with pytest.raises(NotImplementedError, match="no reference posterior"):
            sim.reference_posterior(x[0], 7)


def test_bad_inputs():
    with pytest.raises(ValueError, match="mode must be one of"):
        DoubleWell(mode="md")
    with pytest.raises(ValueError, match="n_conf must be a positive integer"):
        DoubleWell(n_conf=0)
    with pytest.raises(ValueError, match="n_conf applies to mode='equilibrium' only"):
        DoubleWell(mode="trajectory", n_conf=3)
    with pytest.raises(ValueError, match="mala_dt must be positive"):
        DoubleWell(mala_dt=0.0)
    sim = DoubleWell()
    with pytest.raises(ValueError, match="temperature T > 0"):
        sim(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="temperature T > 0"):
        sim.log_likelihood(torch.tensor([[-0.1, 1.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"expected theta of shape \[n, 2\]"):
        sim(torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected x of shape \[n, 2\]"):
        sim.log_likelihood(torch.ones(1, 2), torch.zeros(1, 100, 2))
    # outside the strip |x| <= 3 the (truncated) Boltzmann density is zero
    assert sim.log_likelihood(torch.tensor([[0.5, 1.0]]), torch.tensor([[3.5, 0.0]])).item() == -math.inf


# --------------------------------------------------------------------------------------- equilibrium


def test_partition_function_against_2d_quadrature():
    for T, h in [(0.2, 3.0), (0.5, 1.0), (1.0, 0.5)]:
        x = np.linspace(-3, 3, 3001)
        y = np.linspace(-8, 13, 4001)
        X, Y = np.meshgrid(x, y, indexing="ij")
        U = h * (X**2 - 1) ** 2 + TILT * X + 0.5 * (Y - BETA * X**2) ** 2
        Z2 = integrate.simpson(integrate.simpson(np.exp(-U / T), x=y, axis=1), x=x)
        assert log_partition(torch.tensor(T, dtype=F64), torch.tensor(h, dtype=F64)).item() == pytest.approx(
            math.log(Z2), abs=1e-7
        )


def test_equilibrium_log_likelihood_by_hand():
    sim = DoubleWell(n_conf=2)
    theta = torch.tensor([[0.4, 1.2]], dtype=F64)
    x = torch.tensor([[[-1.0, 0.3], [0.9, 0.2]]], dtype=F64)
    u = [1.2 * (a**2 - 1) ** 2 + 0.25 * a + 0.5 * (b - 0.5 * a**2) ** 2 for a, b in x[0].tolist()]
    expected = -sum(u) / 0.4 - 2 * log_partition(torch.tensor(0.4, dtype=F64), torch.tensor(1.2, dtype=F64)).item()
    assert sim.log_likelihood(theta, x).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("T", "h"), [(0.2, 3.0), (0.5, 1.5), (1.0, 0.5)])
def test_equilibrium_samples_match_the_quadrature_cdf(T, h):
    """KS test of the x marginal (n = 3000) against an independent quadrature CDF, and y|x moments."""
    sim = DoubleWell()
    n = 3000
    theta = torch.tensor([[T, h]]).expand(n, 2)
    z = sim(theta, generator=torch.Generator().manual_seed(0)).double().numpy()
    assert stats.kstest(z[:, 0], x_marginal_cdf(T, h)).pvalue > 0.01 / 3
    # negative control: the CDF at a 30 % different temperature is rejected
    assert stats.kstest(z[:, 0], x_marginal_cdf(T * (1.3 if h / T > 3 else 0.7), h)).pvalue < 1e-3
    resid = (z[:, 1] - BETA * z[:, 0] ** 2) / math.sqrt(T)  # y | x ~ N(βx², T / k_y)
    assert abs(resid.mean()) < 4 / math.sqrt(n)
    assert abs(resid.var() - 1) < 4 * math.sqrt(2 / n)


def test_mala_acceptance_over_the_prior():
    sim = DoubleWell()
    T = torch.tensor([0.2, 0.2, 1.0, 1.0, 0.6], dtype=F64)
    h = torch.tensor([0.5, 3.0, 0.5, 3.0, 1.75], dtype=F64)
    _, acceptance = sim.sample_equilibrium(T, h, 200, generator=torch.Generator().manual_seed(0))
    assert ((acceptance > 0.5) & (acceptance < 0.99)).all(), acceptance


def score_z(sim, theta, n, seed):
    """Monte Carlo z-scores of E_x[∇_θ log p(x|θ)] (autograd), one per parameter."""
    x = sim(theta.expand(n, 2), generator=torch.Generator().manual_seed(seed)).double()
    th = theta.double().expand(n, 2).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sim.log_likelihood(th, x).sum(), th)
    return (grad.mean(0) / (grad.std(0) / math.sqrt(n))).abs()


@pytest.mark.parametrize("mode", ["equilibrium", "trajectory"])
def test_score_identity(mode):
    sim = DoubleWell(mode=mode)
    theta = torch.tensor([[0.5, 1.5]])
    assert (score_z(sim, theta, 2000, seed=0) < 4).all()
    # the same statistic detects a sample drawn at a slightly different θ
    shifted = DoubleWell(mode=mode)
    shifted._simulate = lambda th, g: sim._simulate(th * torch.tensor([1.2, 1.0]), g)
    assert (score_z(shifted, theta, 2000, seed=0) > 6).any()


# ---------------------------------------------------------------------------------------- trajectory


def manual_trajectory_log_likelihood(T, h, path):
    """Σ_k log N(z_{k+1}; z_k - Δt ∇U(z_k), 2TΔt I) with scipy, one transition at a time."""
    dt, prev, total = 0.01, np.array(Z0), 0.0
    for z in path:
        mean = prev - dt * grad_potential(torch.as_tensor(prev), torch.as_tensor(h)).numpy()
        total += stats.multivariate_normal(mean, 2 * T * dt * np.eye(2)).logpdf(z)
        prev = z
    return total


def test_trajectory_likelihood_by_hand():
    one = DoubleWell(mode="trajectory", n_record=1)
    theta = torch.tensor([[0.3, 2.0]], dtype=F64)
    x = one(theta, generator=torch.Generator().manual_seed(0)).double()
    assert x.shape == (1, 1, 2)
    assert one.log_likelihood(theta, x).item() == pytest.approx(
        manual_trajectory_log_likelihood(0.3, 2.0, x[0].numpy()), rel=1e-10
    )
    sim = DoubleWell(mode="trajectory")
    x = sim(theta.expand(2, 2), generator=torch.Generator().manual_seed(1)).double()
    log_l = sim.log_likelihood(theta, x)
    for i in range(2):
        assert log_l[i].item() == pytest.approx(manual_trajectory_log_likelihood(0.3, 2.0, x[i].numpy()), rel=1e-10)
    # the path starts near z_0 and is an Euler–Maruyama path: the first step has the right mean
    assert (x[:, 0] - torch.tensor(Z0, dtype=F64)).abs().max() < 0.5


def test_trajectory_grid_posterior_is_the_gaussian_in_h():
    """At each grid T, the grid log-posterior over h equals the hand likelihood (up to a constant) and is
    the quadratic whose Gaussian has mean -b/q and variance 1/q."""
    sim = DoubleWell(mode="trajectory", grid_size=32)
    theta = torch.tensor([[0.45, 1.3]], dtype=F64)
    x = sim(theta, generator=torch.Generator().manual_seed(3)).double()
    grid = sim.grid_log_posterior(x[None])[0]
    T_axis = 0.2 + 0.8 / 32 * (torch.arange(32, dtype=F64) + 0.5)
    h_axis = 0.5 + 2.5 / 32 * (torch.arange(32, dtype=F64) + 0.5)
    for i in (3, 17):
        row = grid[i]
        manual = torch.tensor([manual_trajectory_log_likelihood(T_axis[i].item(), h, x[0].numpy()) for h in h_axis])
        assert torch.allclose(row - row[0], manual - manual[0], atol=1e-6)
        a, b, q = sim.trajectory_h_quadratic(T_axis[i : i + 1], x)
        mean, var = -b / q, 1 / q
        gauss = -0.5 * (h_axis - mean) ** 2 / var
        assert torch.allclose(row - row[0], gauss - gauss[0], atol=1e-6)


# ------------------------------------------------------------------------------------------ posterior


@pytest.mark.parametrize(
    ("options", "m"),
    [({}, 1), ({}, 3), ({"n_conf": 4}, 1), ({"mode": "trajectory"}, 1)],
)
def test_sbc(options, m):
    sim = DoubleWell(grid_size=128, **options)
    assert sbc_pvalue(sbc_ranks(sim, 100, seed=0, m=m)) > 0.01


def test_grid_posterior_is_seeded_and_inside_the_prior():
    sim = DoubleWell(grid_size=64)
    x = sim(torch.tensor([[0.5, 1.0]]), generator=torch.Generator().manual_seed(0))
    a = sim.reference_posterior(x, 500, generator=torch.Generator().manual_seed(1))
    b = sim.reference_posterior(x, 500, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and sim.prior.support.check(a).all()
    assert potential(x.double(), torch.tensor(1.0)).shape == (1,)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["equilibrium", "trajectory"])
def test_sbc_300_draws_default_grid(mode):
    sim = DoubleWell(mode=mode)  # the default 256² grid
    p = sbc_pvalue(sbc_ranks(sim, 300, seed=10))
    print(f"double_well {mode} SBC (300 draws, 256²): Bonferroni p = {p:.3f}")
    assert p > 0.01


def test_inverse_cdf_stage_alone_is_exact():
    """Without MALA steps the draw is already Boltzmann: KS for x and the y|x moments at n = 4000."""
    sim = DoubleWell(n_steps=0)
    T, h, n = 0.5, 1.5, 4000
    z = sim(torch.tensor([[T, h]]).expand(n, 2), generator=torch.Generator().manual_seed(4)).double().numpy()
    assert stats.kstest(z[:, 0], x_marginal_cdf(T, h)).pvalue > 0.01
    resid = (z[:, 1] - BETA * z[:, 0] ** 2) / math.sqrt(T)
    assert abs(resid.mean()) < 4 / math.sqrt(n) and abs(resid.var() - 1) < 4 * math.sqrt(2 / n)
