"""Amortised posteriors over sets of i.i.d. observations: simulate(..., iid=M) and PosteriorEstimator(iid=True).

θ ~ N(0, 1), x_j | θ ~ N(θ, 1) i.i.d.: p(θ | x_1..m) = N(Σ x_j / (m + 1), 1 / (m + 1)).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import Independent, Normal

import simgen
import simulators

PRIOR = Independent(Normal(torch.zeros(1), torch.ones(1)), 1)


class _Sim:
    def __call__(self, theta, generator=None):
        return theta + torch.randn(theta.shape, generator=generator)


class _SometimesFails:
    """NaN for the draws of θ > 1 whose noise is above −1: about 84 % of the draws of such a θ fail."""

    def __call__(self, theta, generator=None):
        x = theta + torch.randn(theta.shape, generator=generator)
        return torch.where((theta > 1) & (x > theta - 1), torch.full_like(x, math.nan), x)


def _exact(x_obs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    m = x_obs.shape[0]
    return x_obs.sum(0) / (m + 1) + torch.randn(n, 1, generator=torch.Generator().manual_seed(seed)) / math.sqrt(m + 1)


@pytest.fixture(scope="module")
def iid_posterior() -> simgen.PosteriorEstimator:
    theta, x = simgen.simulate(_Sim(), PRIOR, 4000, iid=10, seed=0, progress=False)
    post = simgen.PosteriorEstimator(PRIOR, "flow", iid=True, device="cpu")
    post.fit(theta, x, seed=0, progress=False, max_epochs=30)
    return post


def test_simulate_iid_shapes_seeds_and_failures():
    theta, x = simgen.simulate(_Sim(), PRIOR, 50, iid=7, seed=1, progress=False, chunk_size=20)
    assert theta.shape == (50, 1) and x.shape == (50, 7, 1)
    again = simgen.simulate(_Sim(), PRIOR, 50, iid=7, seed=1, progress=False, chunk_size=20)
    assert torch.equal(x, again[1])
    assert float(x.std(dim=1).mean()) > 0.5  # the draws of one θ differ (noise sd 1)
    with pytest.warns(RuntimeWarning, match="simulations failed"):
        theta_f, x_f = simgen.simulate(_SometimesFails(), PRIOR, 400, iid=5, seed=2, progress=False)
    theta_all, _ = simgen.simulate(_Sim(), PRIOR, 400, iid=5, seed=2, progress=False)  # the same θ draws
    # a θ > 1 keeps all 5 draws with probability 0.16^5 ≈ 1e-4: every such θ is dropped, every other kept
    assert torch.equal(theta_f, theta_all[theta_all[:, 0] <= 1]) and bool(torch.isfinite(x_f).all())
    with pytest.raises(ValueError, match="iid"):
        simgen.simulate(_Sim(), PRIOR, 10, iid=0, progress=False)


def test_one_model_gives_the_posterior_for_one_and_ten_observations(iid_posterior):
    x_all = 0.7 + torch.randn(10, 1, generator=torch.Generator().manual_seed(5))
    for m in (1, 10):
        draws = iid_posterior.sample(2000, x_all[:m], generator=torch.Generator().manual_seed(0))
        assert simgen.diagnostics.c2st(draws, _exact(x_all[:m], 2000, seed=1)) <= 0.6, m


def test_batched_sampling_log_prob_and_errors(iid_posterior, tmp_path):
    xs = torch.randn(3, 4, 1, generator=torch.Generator().manual_seed(6))
    assert iid_posterior.sample_batched(7, xs).shape == (3, 7, 1)
    assert iid_posterior.log_prob(torch.zeros(5, 1), xs[0]).shape == (5,)
    with pytest.raises(ValueError, match="m = 11"):
        iid_posterior.sample(5, torch.zeros(11, 1))
    with pytest.raises(ValueError, match="row_shape"):
        iid_posterior.sample(5, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="embedding"):
        simgen.PosteriorEstimator(PRIOR, iid=True, embedding=simgen.nets.Flatten((3,)))
    path = tmp_path / "iid.pt"
    iid_posterior.save(path)
    loaded = simgen.load(path)
    assert loaded.iid and loaded.iid_size == 10
    theta = torch.linspace(-1, 1, 5)[:, None]
    assert torch.allclose(loaded.log_prob(theta, xs[1]), iid_posterior.log_prob(theta, xs[1]), atol=1e-5)


def test_random_subsets_are_drawn_in_training_only():
    net = simgen.nets.SubsetDeepSets((6, 2))
    x = torch.cat([torch.randn(50, 6, 1), torch.ones(50, 6, 1)], dim=-1)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    assert not torch.allclose(net(x), net(x))


@pytest.mark.slow
def test_gaussian_linear_with_1_5_and_20_observations_from_one_model():
    sim = simulators.get("gaussian_linear")
    theta, x = simgen.simulate(sim, sim.prior, 10_000, iid=20, seed=0, progress=False)
    post = simgen.PosteriorEstimator(sim.prior, "flow", iid=True)
    post.fit(theta, x, seed=0, progress=False)
    theta_o = torch.full((1, 10), 0.1)
    x_o = sim(theta_o.expand(20, -1), generator=torch.Generator().manual_seed(7))
    scores = {}
    for m in (1, 5, 20):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draws = post.sample(5000, x_o[:m], generator=torch.Generator().manual_seed(0))
        reference = sim.reference_posterior(x_o[:m], 5000, generator=torch.Generator().manual_seed(1))
        scores[m] = simgen.diagnostics.c2st(draws, reference)
    print(scores)
    assert all(v <= 0.6 for v in scores.values()), scores
