"""The tasks beyond sbibm's four: likelihoods against scipy, simulators against their likelihoods, and reference
posteriors against independent derivations (scipy's truncated normal, Gaussian conditioning) and SBC."""

import numpy as np
import pytest
import torch
from scipy import stats
from test_reference_posteriors import sbc_pvalue, sbc_ranks

import simulators


def test_gaussian_linear_uniform_likelihood_and_prior():
    sim = simulators.get("gaussian_linear_uniform")
    theta = sim.prior.sample((6,))
    assert theta.abs().max() <= 1
    x = sim(theta, generator=torch.Generator().manual_seed(0))
    expected = stats.norm(theta.double().numpy(), np.sqrt(0.1)).logpdf(x.double().numpy()).sum(-1)
    np.testing.assert_allclose(sim.log_likelihood(theta, x).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("m", [1, 3])
def test_gaussian_linear_uniform_posterior_is_the_truncated_normal(m):
    """Kolmogorov–Smirnov per coordinate against scipy's truncnorm, with means inside, at and far outside the box
    (where the sampler mirrors the tail)."""
    sim = simulators.get("gaussian_linear_uniform")
    mean = np.array([-2.0, -1.5, -0.9, -0.3, 0.0, 0.3, 0.99, 1.0, 1.5, 2.0])
    samples = sim.reference_posterior(torch.tensor(mean).repeat(m, 1), 50_000,
                                      generator=torch.Generator().manual_seed(1)).double().numpy()
    assert np.abs(samples).max() <= 1
    sd = np.sqrt(0.1 / m)
    pvalues = [stats.kstest(samples[:, i], stats.truncnorm((-1 - mu) / sd, (1 - mu) / sd, loc=mu, scale=sd).cdf)
               .pvalue for i, mu in enumerate(mean)]
    assert min(pvalues) * len(pvalues) > 0.01, pvalues


def test_gaussian_signal_likelihood_and_simulator():
    sim = simulators.get("gaussian_signal")
    theta = sim.prior.sample((5,))
    x = sim(theta, generator=torch.Generator().manual_seed(0))
    signal = theta.double() @ sim.design.T
    expected = stats.norm(signal.numpy(), 0.5).logpdf(x.double().numpy()).sum(-1)
    np.testing.assert_allclose(sim.log_likelihood(theta, x).numpy(), expected, rtol=1e-10)
    # residuals of 20,000 draws at one θ: mean 0 and standard deviation 0.5 in every coordinate
    many = sim(theta[:1].expand(20_000, -1), generator=torch.Generator().manual_seed(1)).double() - signal[:1]
    assert many.mean(0).abs().max() < 4 * 0.5 / np.sqrt(20_000)
    assert (many.std(0) - 0.5).abs().max() < 0.02


def test_gaussian_signal_posterior_is_gaussian_conditioning():
    """The reference's moments equal those of θ | x from the joint Gaussian of (θ, x) (Schur complement), an
    independent route to the conjugate formula."""
    sim = simulators.get("gaussian_signal")
    a = sim.design.numpy()
    cov_x = a @ a.T + 0.25 * np.eye(20)
    gain = a.T @ np.linalg.inv(cov_x)
    x_obs = sim(sim.prior.sample((1,)), generator=torch.Generator().manual_seed(2))[0].double()
    mean, cov = gain @ x_obs.numpy(), np.eye(3) - gain @ a
    samples = sim.reference_posterior(x_obs, 200_000, generator=torch.Generator().manual_seed(3)).double().numpy()
    sd = np.sqrt(np.diag(cov))
    assert np.abs(samples.mean(0) - mean).max() < 5 * sd.max() / np.sqrt(200_000)
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.02 * sd.max() ** 2)
    assert abs(np.corrcoef(samples.T)[0, 1]) > 0.1  # the bumps overlap: the posterior is correlated


def test_poisson_glm_likelihood_and_simulator():
    sim = simulators.get("poisson_glm")
    theta = sim.prior.sample((5,))
    x = sim(theta, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x.round()) and (x >= 0).all()
    rate = (np.log(5.0) + theta.double() @ sim.design.T).exp().numpy()
    expected = stats.poisson(rate).logpmf(x.numpy()).sum(-1)
    np.testing.assert_allclose(sim.log_likelihood(theta, x).numpy(), expected, rtol=1e-10)
    many = sim(theta[:1].expand(20_000, -1), generator=torch.Generator().manual_seed(1)).double()
    np.testing.assert_allclose(many.mean(0).numpy(), rate[0], rtol=4 / np.sqrt(20_000 * rate[0].min()))


@pytest.mark.parametrize(("name", "m"), [("gaussian_signal", 1), ("gaussian_signal", 3), ("poisson_glm", 1)])
def test_sbc(name, m):
    _, _, ranks = sbc_ranks(simulators.get(name), 100, seed=0, m=m)
    assert sbc_pvalue(ranks) > 0.01


def test_poisson_glm_posterior_matches_importance_weights():
    """The ensemble's posterior mean against self-normalised importance sampling from the prior (10⁶ draws)
    on the exact likelihood."""
    sim = simulators.get("poisson_glm")
    x_obs = sim(torch.tensor([[0.5, -0.5, 0.3, 0.0]]), generator=torch.Generator().manual_seed(4))
    samples = sim.reference_posterior(x_obs, 20_000, generator=torch.Generator().manual_seed(5)).double()
    draws = sim.prior.sample((1_000_000,)).double()
    log_w = sim.log_likelihood(draws, x_obs)
    w = torch.softmax(log_w, 0)
    assert 1 / (w**2).sum() > 1000  # enough effective draws for the comparison below
    mean = (w[:, None] * draws).sum(0)
    sd = ((w[:, None] * (draws - mean) ** 2).sum(0)).sqrt()
    assert ((samples.mean(0) - mean).abs() / sd).max() < 0.05
    assert ((samples.std(0) - sd).abs() / sd).max() < 0.05
