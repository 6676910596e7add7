"""Accuracy at the issue's simulation budgets (``python -m pytest -m slow``; several minutes)."""

import pytest
import torch

import simgen
import simulators
from simgen.diagnostics import c2st

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gaussian_linear():
    sim = simulators.get("gaussian_linear")
    return sim, simgen.simulate(sim, sim.prior, 10_000, seed=0, progress=False)


@pytest.fixture(scope="module")
def two_moons_10k():
    sim = simulators.get("two_moons")
    return sim, simgen.simulate(sim, sim.prior, 10_000, seed=0, progress=False)


def _observations(sim, n, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        theta = sim.prior.sample((n,))
    return theta, sim(theta, generator=torch.Generator().manual_seed(seed))


def _c2st_per_observation(posterior, sim, x_o):
    """C2ST of ``posterior.sample`` against the reference posterior at each observation row (10⁴ samples each)."""
    g = torch.Generator().manual_seed(0)
    return [c2st(posterior.sample(10_000, x_o[i], generator=g), sim.reference_posterior(x_o[i], 10_000, generator=g))
            for i in range(x_o.shape[0])]


def test_gaussian_linear_posterior_c2st(gaussian_linear):
    sim, (theta, x) = gaussian_linear
    post = simgen.PosteriorEstimator(sim.prior, "flow")
    post.fit(theta, x, seed=0, progress=False)
    _, x_o = _observations(sim, 3, seed=1)
    scores = _c2st_per_observation(post, sim, x_o)
    print("gaussian_linear NPE C2ST per observation:", [round(s, 3) for s in scores])
    # the flow returns its linear-Gaussian start, the exact posterior up to the regression's error, when no epoch
    # is better (TrainingConfig.validate_initial)
    assert sum(scores) / 3 <= 0.52


def test_gaussian_linear_emulator_held_out_gap(gaussian_linear):
    sim, (theta, x) = gaussian_linear
    emu = simgen.LikelihoodEstimator(sim.prior, "flow")
    emu.fit(theta, x, seed=0, progress=False)
    theta_t, x_t = simgen.simulate(sim, sim.prior, 5_000, seed=123, progress=False)
    gap = (sim.log_likelihood(theta_t, x_t) - emu.log_prob(x_t, theta_t).double()).mean().item()
    print(f"gaussian_linear NLE held-out gap E[log p - log q] = {gap:.4f} nats")
    # above the exact log-likelihood on average would be a bug, not a good result
    assert -0.01 <= gap <= 0.02


def test_two_moons_posterior_samples_stay_in_the_prior_box(two_moons_10k):
    sim, (theta, x) = two_moons_10k
    post = simgen.PosteriorEstimator(sim.prior, "flow")
    post.fit(theta, x, seed=0, progress=False)
    _, x_o = _observations(sim, 10, seed=2)
    samples = post.sample_batched(10_000, x_o).reshape(-1, 2)
    assert (samples.abs() < 1).all()
    assert torch.isfinite(sim.prior.log_prob(samples)).all()


def test_two_moons_emulator_posterior_by_slice_sampling(two_moons_10k):
    sim, (theta, x) = two_moons_10k
    emu = simgen.LikelihoodEstimator(sim.prior, "flow")
    emu.fit(theta, x, seed=0, progress=False)
    _, x_o = _observations(sim, 10, seed=3)
    mcmc = emu.posterior(method="slice", progress=False)
    scores = _c2st_per_observation(mcmc, sim, x_o)
    print("two_moons NLE + slice sampling C2ST per observation:", [round(s, 3) for s in scores])
    assert sum(scores) / 10 <= 0.65


def test_gaussian_linear_vae_posterior_c2st(gaussian_linear):
    sim, (theta, x) = gaussian_linear
    post = simgen.PosteriorEstimator(sim.prior, "vae")
    post.fit(theta, x, seed=0, progress=False)
    _, x_o = _observations(sim, 3, seed=1)
    scores = _c2st_per_observation(post, sim, x_o)
    print("gaussian_linear VAE NPE C2ST per observation:", [round(s, 3) for s in scores])
    assert sum(scores) / 3 <= 0.65


def test_slcp_sequential_emulator_posterior_at_10k():
    """SLCP at 10⁴ simulations for one observation, with the defaults of the best route there: sequential NLE
    (``LikelihoodEstimator(prior).fit_sequential(sim, x_o, num_simulations=10_000)``, two rounds, the second
    from the first round's MCMC posterior), against the exact reference posterior at 10⁴ draws per C2ST
    (issue 17: mean ≤ 0.75 over 3 observations; sbibm's best published figure at 10⁴ is 0.71, sequential NLE)."""
    sim = simulators.get("slcp")
    _, x_o = _observations(sim, 3, seed=4)
    g = torch.Generator().manual_seed(0)
    scores = []
    for i in range(3):
        posterior = simgen.LikelihoodEstimator(sim.prior).fit_sequential(
            sim, x_o[i][None], num_simulations=10_000, seed=i, progress=False, mcmc={"progress": False})
        scores.append(c2st(posterior.sample(10_000, x_o[i][None], generator=g),
                           sim.reference_posterior(x_o[i], 10_000, generator=g)))
    print("slcp sequential NLE C2ST per observation:", [round(s, 3) for s in scores])
    assert sum(scores) / 3 <= 0.75


@pytest.mark.xfail(strict=True, reason="issue 17's bar on slcp at 10^4 is not met yet by the default posterior: "
                   "README, 'Which family for which problem', importance sampling of the emulator's posterior")
def test_slcp_default_posterior_at_10k():
    """SLCP at 10⁴ simulations with ``PosteriorEstimator(prior)`` and nothing else: ``model="auto"`` trains the
    flow on emulated pairs too, and ``sample_with="auto"`` finds on the held-out simulations that the emulator's
    posterior scores better and samples it by importance sampling from the flow; against the exact reference
    posterior at 10⁴ draws per C2ST (issue 17: mean ≤ 0.75 over 3 observations)."""
    sim = simulators.get("slcp")
    theta, x = simgen.simulate(sim, sim.prior, 10_000, seed=0, progress=False)
    post = simgen.PosteriorEstimator(sim.prior)
    post.fit(theta, x, seed=0, progress=False)
    assert post.sample_with == "importance", post.held_out
    _, x_o = _observations(sim, 3, seed=4)
    scores = _c2st_per_observation(post, sim, x_o)
    print("slcp default posterior C2ST per observation:", [round(s, 3) for s in scores], post.held_out)
    assert sum(scores) / 3 <= 0.75


@pytest.mark.xfail(strict=True, reason="issue 17's goal on slcp at 10^4 is not met yet by an amortised default: "
                   "README, 'Which family for which problem', the emulator's posterior by MCMC")
def test_slcp_emulator_posterior_at_10k():
    """SLCP at 10⁴ simulations with the defaults that are best there: the emulator ``LikelihoodEstimator(prior)``
    (``model="auto"``) and its posterior by MCMC (``emu.posterior()``), against the exact reference posterior at
    10⁴ draws per C2ST (issue 17: mean ≤ 0.75 over 3 observations)."""
    sim = simulators.get("slcp")
    theta, x = simgen.simulate(sim, sim.prior, 10_000, seed=0, progress=False)
    emu = simgen.LikelihoodEstimator(sim.prior)
    emu.fit(theta, x, seed=0, progress=False)
    _, x_o = _observations(sim, 3, seed=4)
    scores = _c2st_per_observation(emu.posterior(progress=False), sim, x_o)
    print("slcp NLE + MCMC C2ST per observation:", [round(s, 3) for s in scores])
    assert sum(scores) / 3 <= 0.75
