"""Exact likelihoods of the benchmark tasks: test vectors, independent formulas, simulations."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import simulators

# sbibm observation 1 of each task
TWO_MOONS_THETA, TWO_MOONS_X = [-0.8177, -0.5757], [-0.6397, 0.1623]
SLCP_THETA = [-2.8581, -0.4445, 2.9473, 1.2396, 2.9713]
SLCP_X = [2.3719, 0.4995, 9.9314, 1.7137, -10.4364, -1.9068, -1.2344, -0.0974]


def cell_probabilities(sim, theta, edges_1, edges_2, k=40):
    """∫ p(x | θ) dx over each cell of the grid ``edges_1 × edges_2`` (k × k midpoints per cell)."""
    e1, e2 = np.asarray(edges_1, float), np.asarray(edges_2, float)
    u = (np.arange(k) + 0.5) / k
    x1 = (e1[:-1, None] + np.diff(e1)[:, None] * u).ravel()  # [n1 * k] midpoints
    x2 = (e2[:-1, None] + np.diff(e2)[:, None] * u).ravel()
    grid = np.stack(np.meshgrid(x1, x2, indexing="ij"), -1).reshape(-1, 2)
    density = sim.log_likelihood(torch.tensor([theta]), torch.from_numpy(grid)).exp().numpy()
    area = np.outer(np.repeat(np.diff(e1) / k, k), np.repeat(np.diff(e2) / k, k)).ravel()
    mass = (density * area).reshape(len(e1) - 1, k, len(e2) - 1, k)
    return mass.sum((1, 3))


def histogram_pvalue(sim, theta, edges_1, edges_2, n=20_000, seed=0):
    """Chi-square test of simulated x against the exact likelihood's cell probabilities."""
    probs = cell_probabilities(sim, theta, edges_1, edges_2)
    theta_rows = torch.tensor([theta]).expand(n, -1)
    x = sim(theta_rows, generator=torch.Generator().manual_seed(seed)).double().numpy()
    counts, *_ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges_1, edges_2])
    expected = n * probs
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())  # cells with few expected counts pooled
    expected = np.append(expected[big], expected[~big].sum())
    if expected[-1] == 0:  # nothing to pool
        observed, expected = observed[:-1], expected[:-1]
    pvalue = stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue
    return probs.sum(), n - counts.sum(), pvalue


# ------------------------------------------------------------------------------------------- two moons


def test_two_moons_test_vector():
    sim = simulators.get("two_moons")
    log_l = sim.log_likelihood(torch.tensor([TWO_MOONS_THETA]), torch.tensor([TWO_MOONS_X])).item()
    # u = 0.09559, v = -0.00882, ρ = 0.09600: log N(ρ; 0.1, 0.01²) - log(πρ) (hand computation)
    assert log_l == pytest.approx(4.8046, abs=2e-3)
    # the true θ is among the most likely parameters for x_o
    torch.manual_seed(0)
    others = sim.log_likelihood(sim.prior.sample((10_000,)), torch.tensor([TWO_MOONS_X]))
    assert (others < log_l).float().mean() > 0.99


def test_two_moons_likelihood_support():
    sim = simulators.get("two_moons")
    theta = torch.tensor([[0.3, -0.2]])  # z0 = 0.0707, z1 = -0.3536
    z0, z1 = 0.1 / math.sqrt(2), -0.5 / math.sqrt(2)
    # u = x1 + |z0| - 0.25 <= 0: density zero
    assert sim.log_likelihood(theta, torch.tensor([[0.25 - z0 - 1e-3, z1 + 0.1]])).item() == -math.inf
    # on the ring, ρ = 0.1 at angle 0: the density's maximum along the radius ≈ 1/(σ√(2π) π 0.1)
    x = torch.tensor([[0.35 - z0, z1]])
    peak = 1 / (0.01 * math.sqrt(2 * math.pi) * math.pi * 0.1)
    assert sim.log_likelihood(theta, x).exp().item() == pytest.approx(peak)


def test_two_moons_likelihood_integrates_to_one():
    sim = simulators.get("two_moons")
    theta = [0.3, -0.2]
    z0, z1 = 0.1 / math.sqrt(2), -0.5 / math.sqrt(2)
    edges_1 = np.linspace(0.25 - z0, 0.25 - z0 + 0.2, 9)  # the support starts at u = 0
    edges_2 = np.linspace(z1 - 0.2, z1 + 0.2, 9)
    total = cell_probabilities(sim, theta, edges_1, edges_2, k=80).sum()
    assert total == pytest.approx(1.0, abs=2e-3)  # without the 1/(πρ) Jacobian it would be ≈ 0.31


def test_two_moons_simulator_matches_likelihood():
    sim = simulators.get("two_moons")
    theta = [0.3, -0.2]
    z0, z1 = 0.1 / math.sqrt(2), -0.5 / math.sqrt(2)
    edges_1 = np.linspace(0.25 - z0, 0.25 - z0 + 0.16, 9)
    edges_2 = np.linspace(z1 - 0.14, z1 + 0.14, 9)
    total, outside, pvalue = histogram_pvalue(sim, theta, edges_1, edges_2)
    assert total == pytest.approx(1.0, abs=2e-3) and outside == 0
    assert pvalue > 0.01


# ------------------------------------------------------------------------------------------------ SLCP


def slcp_covariance(theta):
    s1, s2, rho = theta[2] ** 2, theta[3] ** 2, math.tanh(theta[4])
    return np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]]) + 1e-6 * np.eye(2)


def test_slcp_likelihood_equals_scipy():
    sim = simulators.get("slcp")
    torch.manual_seed(1)
    theta = sim.prior.sample((20,)).double()
    x = sim(theta).double()
    expected = [
        stats.multivariate_normal(t[:2], slcp_covariance(t.tolist())).logpdf(xi.reshape(4, 2)).sum()
        for t, xi in zip(theta.numpy(), x.numpy(), strict=True)
    ]
    np.testing.assert_allclose(sim.log_likelihood(theta, x).numpy(), expected, rtol=1e-9)


def test_slcp_test_vector():
    sim = simulators.get("slcp")
    theta, x = torch.tensor([SLCP_THETA]), torch.tensor([SLCP_X])
    log_l = sim.log_likelihood(theta, x).item()
    cov = slcp_covariance(SLCP_THETA)
    expected = stats.multivariate_normal(SLCP_THETA[:2], cov).logpdf(np.reshape(SLCP_X, (4, 2))).sum()
    assert log_l == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(0)
    others = sim.log_likelihood(sim.prior.sample((10_000,)), x)
    assert (others < log_l).float().mean() > 0.99
    # the sign symmetry θ3 → -θ3, θ4 → -θ4
    flipped = theta * torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0])
    assert sim.log_likelihood(flipped, x).item() == pytest.approx(log_l, rel=1e-12)


def test_slcp_simulator_moments_and_order():
    sim = simulators.get("slcp")
    theta = [1.0, -0.5, 1.2, 0.8, 0.7]  # std 1.44 and 0.64, ρ = 0.60
    x = sim(torch.tensor([theta]).expand(20_000, -1), generator=torch.Generator().manual_seed(0)).double()
    points = x.reshape(-1, 4, 2)  # x = (x_11, x_12, x_21, ...): point-major
    cov = slcp_covariance(theta)
    for j in range(4):
        p = points[:, j].numpy()
        np.testing.assert_allclose(p.mean(0), theta[:2], atol=0.04)
        np.testing.assert_allclose(np.cov(p.T), cov, atol=0.05)
    # E[log p(x|θ)] = 4 (-log 2π - ½ log det S - 1)
    log_l = sim.log_likelihood(torch.tensor([theta]), x)
    expected = 4 * (-math.log(2 * math.pi) - 0.5 * math.log(np.linalg.det(cov)) - 1)
    assert abs(log_l.mean().item() - expected) < 4 * log_l.std().item() / math.sqrt(len(x))


# ------------------------------------------------------------------------------------- Gaussian linear


def test_gaussian_linear_likelihood_equals_scipy():
    sim = simulators.get("gaussian_linear")
    torch.manual_seed(2)
    theta = sim.prior.sample((10,))
    x = sim(theta)
    mvn = stats.multivariate_normal
    expected = [mvn(t, 0.1 * np.eye(10)).logpdf(xi) for t, xi in zip(theta.numpy(), x.numpy(), strict=True)]
    np.testing.assert_allclose(sim.log_likelihood(theta, x).numpy(), expected, rtol=1e-10)


def test_gaussian_linear_prior_and_noise_are_variances_of_0_1():
    sim = simulators.get("gaussian_linear")
    torch.manual_seed(3)
    theta = sim.prior.sample((20_000,))
    x = sim(theta)
    assert theta.var(0).mean().item() == pytest.approx(0.1, rel=0.02)
    assert (x - theta).var(0).mean().item() == pytest.approx(0.1, rel=0.02)
    # E[log p(x|θ)] = -(d/2)(1 + log(2π 0.1))
    log_l = sim.log_likelihood(theta, x)
    expected = -5 * (1 + math.log(2 * math.pi * 0.1))
    assert abs(log_l.mean().item() - expected) < 4 * log_l.std().item() / math.sqrt(len(x))


# ------------------------------------------------------------------------------------ Gaussian mixture


def test_gaussian_mixture_likelihood_equals_manual_density():
    sim = simulators.get("gaussian_mixture")
    torch.manual_seed(4)
    theta = sim.prior.sample((50,))
    x = sim(theta)
    t, xi = theta.double().numpy(), x.double().numpy()
    pdf = stats.multivariate_normal.pdf
    density = 0.5 * pdf(xi - t, cov=np.eye(2)) + 0.5 * pdf(xi - t, cov=0.01 * np.eye(2))
    np.testing.assert_allclose(sim.log_likelihood(theta, x).numpy(), np.log(density), rtol=1e-10)


def test_gaussian_mixture_simulator_matches_likelihood():
    sim = simulators.get("gaussian_mixture")
    theta = [1.0, -2.0]
    offsets = np.array([-5, -2, -1, -0.3, -0.1, 0, 0.1, 0.3, 1, 2, 5])
    total, outside, pvalue = histogram_pvalue(sim, theta, theta[0] + offsets, theta[1] + offsets)
    assert total == pytest.approx(1.0, abs=1e-3) and outside <= 2
    assert pvalue > 0.01


def test_gaussian_mixture_component_is_drawn_per_row():
    sim = simulators.get("gaussian_mixture")
    for seed in range(5):
        x = sim(torch.zeros(1000, 2), generator=torch.Generator().manual_seed(seed))
        # P(|x|_∞ < 0.4) = ½ · 1 + ½ · P(|N(0,1)| < 0.4)² ≈ 0.548 with per-row components;
        # a component shared by the batch gives ≈ 1.0 or ≈ 0.097
        inner = (x.abs().amax(1) < 0.4).float().mean().item()
        assert 0.48 < inner < 0.62
