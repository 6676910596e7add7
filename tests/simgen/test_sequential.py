"""Sequential rounds for one observation (estimator.fit_sequential): TSNPE for a posterior estimator, sequential
NLE for a likelihood, rounds kept in campaign stores with their proposals.

The task: x ~ N(θ, σ² I) with σ = 0.05 under a uniform prior on [−10, 10]², observed at x_obs well inside the
box, so that the posterior is N(x_obs, σ² I) (its truncation to the box is negligible) and narrow against the
prior: simulations from the prior rarely land near x_obs, which is what later rounds fix.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Uniform

import simgen
from simgen.diagnostics import c2st
from simgen.estimators.sequential import TruncatedPrior, round_sizes

SIGMA = 0.05
PRIOR = Independent(Uniform(-10 * torch.ones(2), 10 * torch.ones(2)), 1)
X_OBS = torch.tensor([[0.7, -1.2]])


def simulator(theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return theta + SIGMA * torch.randn(theta.shape, generator=generator)


def reference(n: int = 1000) -> torch.Tensor:
    return X_OBS + SIGMA * torch.randn(n, 2, generator=torch.Generator().manual_seed(5))


def posterior_c2st(posterior, n: int = 500) -> float:
    return c2st(posterior.sample(n, X_OBS, generator=torch.Generator().manual_seed(0)), reference(n))


def test_round_sizes_share_the_budget() -> None:
    assert round_sizes(1000, 3) == [334, 333, 333]
    with pytest.raises(ValueError, match="at least rounds"):
        round_sizes(2, 3)


def test_two_round_tsnpe_beats_one_round_at_the_same_budget() -> None:
    scores = {}
    for rounds in (1, 2):
        est = simgen.PosteriorEstimator(PRIOR)
        post = est.fit_sequential(simulator, X_OBS, num_simulations=600, rounds=rounds, seed=0, progress=False,
                                  max_epochs=25)
        assert post is est and sum(r.num_simulations for r in est.sequential_rounds) == 600
        scores[rounds] = posterior_c2st(post)
    second = est.sequential_rounds[1]
    assert second.proposal["type"] == "custom" and "TruncatedPrior" in second.proposal["repr"]
    assert 0 < second.prior_mass < 0.5  # the region is a small part of the prior
    assert scores[2] < scores[1] - 0.03, scores


@pytest.mark.filterwarnings("ignore:MCMC may not have converged")  # short chains for the proposals
def test_two_round_snle_is_closer_to_the_posterior_than_its_first_round() -> None:
    # the sequential logic is under test, not the sampler: light thinning, SIR capped below its default
    mcmc = dict(num_chains=50, warmup=100, thin=2, max_init=100_000, progress=False)
    scores = {}
    for rounds in (1, 2):  # the same seed: the two-round run's first round is the one-round run
        # without the linear baseline, which alone would already be the exact linear-Gaussian likelihood
        est = simgen.LikelihoodEstimator(PRIOR, linear_baseline=False)
        post = est.fit_sequential(simulator, X_OBS, num_simulations=300 * rounds, rounds=rounds, seed=0,
                                  progress=False, max_epochs=25, mcmc=mcmc)
        scores[rounds] = posterior_c2st(post)
    assert "PosteriorProposal" in est.sequential_rounds[1].proposal["repr"]
    assert scores[2] < scores[1] - 0.05, scores


def test_rounds_are_kept_in_stores_with_their_proposals_and_read_back(tmp_path) -> None:
    calls = []

    def counting(theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        calls.append(theta.shape[0])
        return simulator(theta, generator)

    def run() -> simgen.PosteriorEstimator:
        est = simgen.PosteriorEstimator(PRIOR)
        est.fit_sequential(counting, X_OBS, num_simulations=200, rounds=2, store=tmp_path / "seq", seed=3,
                           progress=False, max_epochs=3)
        return est

    est = run()
    assert sum(calls) == 200
    first, second = (simgen.open_store(tmp_path / "seq" / f"round-{r}") for r in (0, 1))
    assert first.metadata["proposal"]["type"] == "Independent"  # the prior
    assert "TruncatedPrior" in second.metadata["proposal"]["repr"]
    assert second.metadata["sequential"]["round"] == 1 and second.metadata["sequential"]["method"] == "tsnpe"
    # each row records log q(θ) of the proposal it was drawn from: the prior's density over the region's mass
    lp = second.proposal_log_prob
    expected = PRIOR.log_prob(second.theta).double() - torch.log(torch.tensor(est.sequential_rounds[1].prior_mass,
                                                                               dtype=torch.float64))
    torch.testing.assert_close(lp, expected, rtol=1e-5, atol=1e-5)
    calls.clear()
    again = run()  # complete rounds are read back, not simulated again
    assert sum(calls) == 0
    assert [r.num_valid for r in again.sequential_rounds] == [r.num_valid for r in est.sequential_rounds]


def test_truncated_prior_is_the_prior_inside_the_region() -> None:
    def log_q(theta: torch.Tensor) -> torch.Tensor:  # the region is the disc of radius 2
        return -(theta**2).sum(dim=1)

    torch.manual_seed(0)
    region = TruncatedPrior(PRIOR, log_q, -4.0)
    assert region.mass == pytest.approx(torch.pi * 4 / 400, rel=0.05)
    draws = region.sample((5000,))
    assert draws.shape == (5000, 2) and ((draws**2).sum(dim=1) <= 4).all()
    assert draws.mean(dim=0).abs().max() < 0.05  # uniform on the disc
    assert torch.isneginf(region.log_prob(torch.tensor([[3.0, 0.0]]))).all()
    with pytest.raises(ValueError, match="highest-probability region"):
        TruncatedPrior(PRIOR, log_q, 10.0, num_mass=1000)


@pytest.mark.filterwarnings("ignore:MCMC may not have converged")
def test_sequential_nre_runs_and_returns_its_mcmc_posterior() -> None:
    est = simgen.RatioEstimator(PRIOR)
    post = est.fit_sequential(simulator, X_OBS, num_simulations=200, rounds=2, seed=0, progress=False,
                              max_epochs=2, mcmc=dict(num_chains=10, warmup=10, num_init=200))
    assert [r.num_simulations for r in est.sequential_rounds] == [100, 100]
    assert est.sequential_rounds[1].proposal["class"].endswith("PosteriorProposal")
    draws = post.sample(50, X_OBS, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (50, 2) and torch.isfinite(PRIOR.log_prob(draws)).all()
