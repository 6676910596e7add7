"""sbi interoperability: sbi's diagnostics accept a wrapped simgen posterior and agree with simgen's."""

import math
import warnings

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import simulators  # noqa: E402
from simgen import diagnostics as D  # noqa: E402
from simgen.interop import SbiPosterior, to_sbi  # noqa: E402

sbi_diagnostics = pytest.importorskip("sbi.diagnostics")
from sbi.diagnostics.sbc import check_uniformity_frequentist  # noqa: E402


class ReplayPosterior:
    """Replays cached draws [m, L, d] for the m observations it was built with, whatever the batching."""

    def __init__(self, xs: torch.Tensor, draws: torch.Tensor) -> None:
        self.xs, self.draws = xs, draws

    def _rows(self, xs):
        xs = torch.as_tensor(xs).reshape(-1, self.xs.shape[1])
        return [int((self.xs == row).all(dim=1).nonzero()[0]) for row in xs]

    def sample_batched(self, n, xs):
        return self.draws[self._rows(xs)][:, :n]

    def sample(self, n, x):
        return self.sample_batched(n, x)[0]

    def log_prob(self, theta, x):  # the exact gaussian_linear posterior N(x/2, 0.05 I)
        return torch.distributions.Normal(torch.as_tensor(x) / 2, math.sqrt(0.05)).log_prob(theta).sum(-1)


@pytest.fixture(scope="module")
def cached():
    sim = simulators.get("gaussian_linear", dim=3)
    g = torch.Generator().manual_seed(0)
    theta = math.sqrt(0.1) * torch.randn(150, 3, generator=g)
    x = sim(theta, generator=g)
    draws = x[:, None] / 2 + math.sqrt(0.05) * torch.randn(150, 200, 3, generator=g)
    return theta, x, ReplayPosterior(x, draws)


def test_sbis_sbc_ranks_equal_simgens_on_the_same_cached_draws(cached):
    theta, x, post = cached
    ours = D.sbc(post, theta, x, num_samples=200, batch_size=37)  # chunked: the draws do not depend on it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks, dap = sbi_diagnostics.run_sbc(theta, x, SbiPosterior(post), num_posterior_samples=200,
                                             show_progress_bar=False)
    assert torch.equal(ranks, ours.ranks)
    assert torch.equal(dap, post.draws[:, 0])  # sbi's data-averaged posterior: the first draw per x (samples first)
    ks_pvalues = check_uniformity_frequentist(ranks, 200)  # sbi's KS test (check_sbc adds slow C2STs)
    assert (ks_pvalues > 0.01).all() and not ours.flagged


def test_sbis_expected_coverage_and_tarp_run_on_the_wrapper(cached):
    theta, x, post = cached
    wrapped = SbiPosterior(post)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # sbi's sample-based expected coverage: ranks of log q(θ*) among log q of the draws
        ranks, _ = sbi_diagnostics.run_sbc(theta, x, wrapped, num_posterior_samples=200, show_progress_bar=False,
                                           reduce_fns=wrapped.log_prob)
        ecp, alpha = sbi_diagnostics.run_tarp(theta, x, wrapped, num_posterior_samples=200, show_progress_bar=False)
    ours = D.coverage(post, theta, x, num_samples=200)
    # #{log q(θ_l) < log q(θ*)} is L minus simgen's count of draws of higher density (no ties here)
    k_higher = ours.hpd_credibility * 201 - 0.5
    assert torch.allclose(ranks[:, 0], 200 - k_higher, atol=1e-3)
    assert (ecp - alpha).abs().max() < 0.15  # an exact posterior's TARP curve follows the diagonal


def test_wrapper_follows_sbis_shapes_and_axis_order(two_moons, two_moons_posterior):
    x = two_moons(two_moons.prior.sample((3,)))
    wrapped = to_sbi(two_moons_posterior, x[0], generator=torch.Generator().manual_seed(5))
    assert wrapped.prior is two_moons.prior and torch.equal(wrapped.default_x, x[0])
    assert wrapped.sample((4, 5)).shape == (4, 5, 2)
    batched = SbiPosterior(two_moons_posterior, generator=torch.Generator().manual_seed(1)).sample_batched((7,), x)
    native = two_moons_posterior.sample_batched(7, x, generator=torch.Generator().manual_seed(1))
    assert batched.shape == (7, 3, 2) and torch.equal(batched, native.transpose(0, 1))  # samples first
    theta = batched[:, 0]
    assert torch.allclose(wrapped.log_prob(theta, x=x[0]), two_moons_posterior.log_prob(theta, x[0]))
    assert wrapped.log_prob(theta[0]).shape == ()
    assert wrapped.log_prob_batched(batched, x).shape == (7, 3)
    assert torch.equal(wrapped.potential(theta), wrapped.log_prob(theta))
    assert wrapped.map(num_samples=50).shape == (1, 2)
    with pytest.raises(ValueError, match="default x"):
        SbiPosterior(two_moons_posterior).sample((3,))


def test_sbc_of_a_posterior_estimator_through_sbi_matches_simgen_with_one_seed(two_moons, two_moons_posterior):
    theta = two_moons.prior.sample((30,))
    x = two_moons(theta)
    ours = D.sbc(two_moons_posterior, theta, x, num_samples=40, seed=3)
    wrapped = SbiPosterior(two_moons_posterior, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks, _ = sbi_diagnostics.run_sbc(theta, x, wrapped, num_posterior_samples=40, show_progress_bar=False)
    assert torch.equal(ranks, ours.ranks)


def test_sbi_pairplot_takes_the_wrappers_samples(two_moons, two_moons_posterior):
    from sbi.analysis import pairplot

    x_obs = two_moons(two_moons.prior.sample((1,)))
    fig, axes = pairplot(to_sbi(two_moons_posterior, x_obs).sample((300,)), labels=["a", "b"])
    assert axes.shape == (2, 2)
    matplotlib.pyplot.close(fig)
