"""Reference posteriors: simulation-based calibration (SBC, Talts et al. 2018), grids and closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import simulators
from simulators._ensemble import stretch_move_sample

L = 99  # posterior samples per draw: ranks take the L + 1 = 100 values 0..99, five bins of 20 values


def sbc_pvalues(ranks: torch.Tensor, bins: int = 5) -> np.ndarray:
    """Chi-square uniformity p-value of the ranks in {0, ..., L}, per column."""
    counts = np.stack([np.bincount(r * bins // (L + 1), minlength=bins) for r in ranks.T.numpy()])
    return stats.chisquare(counts, axis=1).pvalue


def sbc_pvalue(ranks: torch.Tensor) -> float:
    """One p-value for all columns (Bonferroni: columns × the smallest); a correct task fails 1 % of runs."""
    pvalues = sbc_pvalues(ranks)
    return min(1.0, len(pvalues) * pvalues.min())


def sbc_ranks(sim, num_draws, seed, *, m=1, posterior=None):
    """Ranks of θ_i among L reference-posterior samples given x_i ~ p(x | θ_i) (m i.i.d. rows), per dim."""
    torch.manual_seed(seed)
    theta = sim.prior.sample((num_draws,))
    # not the stream that drew θ: sharing it would couple the noise of x to θ
    generator = torch.Generator().manual_seed(seed + 1)
    x = sim(theta.repeat_interleave(m, 0), generator=generator).reshape(num_draws, m, *sim.x_shape)
    if posterior is not None:
        samples = posterior(x, generator)
    elif m == 1:
        samples = sim.reference_posterior_batched(x[:, 0], L, generator=generator)
    else:
        samples = torch.stack([sim.reference_posterior(xi, L, generator=generator) for xi in x])
    assert samples.shape == (num_draws, L, sim.d_theta)
    return theta, samples, (samples < theta[:, None]).sum(1)


@pytest.mark.parametrize(
    ("name", "m"),
    [
        ("two_moons", 1),
        ("two_moons", 2),
        ("gaussian_linear", 1),
        ("gaussian_linear", 3),
        ("gaussian_mixture", 1),
        ("gaussian_mixture", 3),
    ],
)
def test_sbc_exact_samplers(name, m):
    _, _, ranks = sbc_ranks(simulators.get(name), 100, seed=0, m=m)
    assert sbc_pvalue(ranks) > 0.01


def test_sbc_detects_a_wrong_posterior():
    """Negative control: a posterior 1.5 times too wide fails the same test."""
    sim = simulators.get("gaussian_linear")

    def too_wide(x, generator):
        mean = x[:, 0, None] / 2
        return mean + 1.5 * math.sqrt(0.05) * torch.randn(len(x), L, 10, generator=generator)

    _, _, ranks = sbc_ranks(sim, 100, seed=0, posterior=too_wide)
    assert sbc_pvalue(ranks) < 0.01


def test_sbc_slcp():
    sim = simulators.get("slcp")
    theta, samples, ranks = sbc_ranks(sim, 50, seed=1)
    # also |θ3|, |θ4|: the sign flips alone would make the θ3, θ4 ranks look symmetric
    abs_ranks = (samples[..., 2:4].abs() < theta[:, None, 2:4].abs()).sum(1)
    assert sbc_pvalue(torch.cat((ranks, abs_ranks), 1)) > 0.01


def test_sbc_slcp_two_observations():
    sim = simulators.get("slcp")

    def posterior(x, generator):  # the vectorised hook behind reference_posterior: k sets of m rows
        return sim._posterior(x.double(), L, generator).float()

    _, _, ranks = sbc_ranks(sim, 40, seed=2, m=2, posterior=posterior)
    assert sbc_pvalue(ranks) > 0.01


# ------------------------------------------------------------------------------------------- two moons


def grid_expectations(sim, x_obs, functions, low, high, n=1001):
    """E[f(θ) | x_obs] for each f, by a uniform grid over the prior box (uniform prior)."""
    axis = torch.linspace(low, high, n, dtype=torch.float64)
    theta = torch.cartesian_prod(axis, axis)
    x_obs = torch.as_tensor(x_obs, dtype=torch.float64)
    log_post = sum(sim.log_likelihood(theta, xj[None]) for xj in x_obs)
    w = torch.softmax(log_post, 0)
    return [(w * f(theta)).sum().item() for f in functions]


def test_two_moons_reference_posterior_test_vector():
    sim = simulators.get("two_moons")
    theta_true = torch.tensor([-0.8177, -0.5757])
    samples = sim.reference_posterior(
        torch.tensor([-0.6397, 0.1623]), 10_000, generator=torch.Generator().manual_seed(0)
    )
    # every sample has a positive likelihood and lies in the prior box
    assert torch.isfinite(sim.log_likelihood(samples, torch.tensor([[-0.6397, 0.1623]]))).all()
    assert samples.abs().max() <= 1
    # two mirrored moons, θ ↦ (-θ2, -θ1), equally weighted; the true θ lies on one of them
    mirrored = -theta_true.flip(0)
    assert (samples - theta_true).norm(dim=1).min() < 0.01
    assert (samples - mirrored).norm(dim=1).min() < 0.01
    assert (samples.sum(1) > 0).float().mean().item() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "x_obs",
    [
        [[-0.2257, 0.1128]],  # simulated at θ = (0.2, 0.5)
        [[0.33, -0.05]],  # near θ1 = -θ2, where the sampler must reject p'_1 < x_1 (|z_0| < x_1 - 0.25)
        [[-0.2335, 0.1051], [-0.1549, 0.1408], [-0.1829, 0.2838]],  # three i.i.d. at θ = (0.2, 0.5)
    ],
)
def test_two_moons_reference_posterior_matches_grid(x_obs):
    sim = simulators.get("two_moons")
    x_obs = torch.tensor(x_obs)
    s = sim.reference_posterior(x_obs, 20_000, generator=torch.Generator().manual_seed(0)).double()
    functions = [
        lambda t: (t[:, 0] + t[:, 1]).abs(),
        lambda t: t[:, 1] - t[:, 0],
        lambda t: (t[:, 1] - t[:, 0]) ** 2,
    ]
    expected = grid_expectations(sim, x_obs, functions, -1.0, 1.0)
    got = [f(s).mean().item() for f in functions]
    np.testing.assert_allclose(got, expected, atol=3e-3)


# ------------------------------------------------------------------------------------ Gaussian mixture


def test_gaussian_mixture_reference_posterior_matches_grid_for_three_observations():
    sim = simulators.get("gaussian_mixture")
    x_obs = sim(torch.tensor([[9.5, -2.0]]).expand(3, 2), generator=torch.Generator().manual_seed(1))
    s = sim.reference_posterior(x_obs, 20_000, generator=torch.Generator().manual_seed(0)).double()
    assert s.abs().max() <= 10  # truncated at the prior's edge (θ1 = 10 is near the data)
    functions = [lambda t: t[:, 0], lambda t: t[:, 1], lambda t: t[:, 0] ** 2, lambda t: t[:, 1] ** 2]
    expected = grid_expectations(sim, x_obs, functions, -10.0, 10.0, n=2001)
    got = [f(s).mean().item() for f in functions]
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=3e-3)


def test_gaussian_mixture_too_many_observations():
    sim = simulators.get("gaussian_mixture")
    with pytest.raises(NotImplementedError, match="m <= 12"):
        sim.reference_posterior(torch.zeros(13, 2), 10)


# ------------------------------------------------------------------------------------- Gaussian linear


def test_gaussian_linear_posterior_moments():
    sim = simulators.get("gaussian_linear")
    x = sim(torch.full((4, 10), 0.3), generator=torch.Generator().manual_seed(0))
    for m in (1, 4):
        s = sim.reference_posterior(x[:m], 50_000, generator=torch.Generator().manual_seed(1)).double()
        # conjugate update with precisions: prior 1/0.1, each observation 1/0.1
        precision = (1 + m) / 0.1
        mean = (x[:m].double().sum(0) / 0.1) / precision
        np.testing.assert_allclose(s.mean(0), mean, atol=4 * math.sqrt(1 / precision / len(s)))
        np.testing.assert_allclose(s.var(0), 1 / precision, rtol=0.03)


# ------------------------------------------------------------------------------------------------ SLCP


def test_slcp_reference_posterior_has_four_symmetric_modes():
    sim = simulators.get("slcp")
    x_obs = torch.tensor([2.3719, 0.4995, 9.9314, 1.7137, -10.4364, -1.9068, -1.2344, -0.0974])
    s = sim.reference_posterior(x_obs, 4_000, generator=torch.Generator().manual_seed(0))
    assert s.abs().max() <= 3
    quadrant = (s[:, 2] > 0).long() * 2 + (s[:, 3] > 0).long()
    np.testing.assert_allclose(np.bincount(quadrant.numpy(), minlength=4) / len(s), 0.25, atol=0.03)
    # importance sampling from the prior: E|θ3|, E|θ4|, E θ5 under the posterior
    generator = torch.Generator().manual_seed(1)
    draws = 6 * torch.rand(1_000_000, 5, dtype=torch.float64, generator=generator) - 3
    w = torch.softmax(sim.log_likelihood(draws, x_obs[None]), 0)
    for f in (lambda t: t[:, 2].abs(), lambda t: t[:, 3].abs(), lambda t: t[:, 4]):
        expected = (w * f(draws)).sum()
        # standard error of the self-normalised importance sampling estimate
        se = (w**2 * (f(draws) - expected) ** 2).sum().sqrt()
        assert abs(f(s.double()).mean() - expected) < 4 * se + 0.02


# ------------------------------------------------------------------------------------ ensemble sampler


def test_stretch_move_recovers_gaussians_in_parallel_ensembles():
    cov = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0, 0.0], [5.0, -2.0, 1.0]], dtype=torch.float64)
    target = torch.distributions.MultivariateNormal(means[:, None], cov)

    generator = torch.Generator().manual_seed(0)
    walkers = means[:, None] + 0.01 * torch.randn(2, 64, 3, dtype=torch.float64, generator=generator)
    samples = stretch_move_sample(target.log_prob, walkers, 6400, burn_in=300, thin=5, generator=generator)
    assert samples.shape == (2, 6400, 3)
    for k in range(2):
        np.testing.assert_allclose(samples[k].mean(0), means[k], atol=0.1)
        np.testing.assert_allclose(torch.cov(samples[k].T), cov, atol=0.1)


def test_stretch_move_validates_walkers():
    log_prob = torch.distributions.Normal(0.0, 1.0).log_prob
    with pytest.raises(ValueError, match="even number of walkers"):
        stretch_move_sample(lambda t: log_prob(t).sum(-1), torch.zeros(5, 2), 10)
    with pytest.raises(ValueError, match="finite log_prob"):
        stretch_move_sample(lambda t: torch.full(t.shape[:-1], -math.inf), torch.randn(8, 2), 10)
