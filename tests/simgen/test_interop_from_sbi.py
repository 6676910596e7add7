"""sbi → simgen: a (tiny) sbi NPE posterior goes through simgen's SBC, coverage, corner plot and HTML report via
``simgen.interop.from_sbi``, and its SBC ranks equal those of sbi's own ``run_sbc`` on the same draws."""

from __future__ import annotations

import math
import warnings

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from simgen import diagnostics, plots  # noqa: E402
from simgen.interop import FromSbi, from_sbi  # noqa: E402
from simgen.report import Report  # noqa: E402

sbi_inference = pytest.importorskip("sbi.inference")
from sbi.diagnostics import run_sbc  # noqa: E402

NOISE = 0.5  # x | θ ~ N(θ, NOISE² I₂), θ ~ N(0, I₂): the posterior is N(x / (1 + s²), s² / (1 + s²) I₂)


@pytest.fixture(scope="module")
def npe():
    prior = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(600, 2, generator=g)
    x = theta + NOISE * torch.randn(600, 2, generator=g)
    with torch.random.fork_rng(), warnings.catch_warnings():
        torch.manual_seed(0)
        warnings.simplefilter("ignore")  # "not yet fully converged": a few epochs on purpose
        inference = sbi_inference.NPE(prior=prior, density_estimator="mdn", show_progress_bars=False)
        inference.append_simulations(theta, x).train(max_num_epochs=5)
    return inference


@pytest.fixture(scope="module")
def test_pairs():
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(40, 2, generator=g)
    return theta, theta + NOISE * torch.randn(40, 2, generator=g)


def test_shapes_and_log_prob_are_sbis(npe, test_pairs):
    post = from_sbi(npe)
    assert isinstance(post, FromSbi) and post.prior is npe._prior and not post.log_prob_is_ode
    theta, x = test_pairs
    assert post.sample(7, x[0]).shape == (7, 2) and post.sample(7, x[:1]).shape == (7, 2)
    assert post.sample_batched(5, x[:3]).shape == (3, 5, 2)
    torch.testing.assert_close(post.log_prob(theta[:4], x[:1]), post.posterior.log_prob(theta[:4], x=x[:1]))
    assert post.log_prob(theta[0], x[0]).shape == (1,)
    # without sbi's leakage normalisation (a Gaussian prior has no leakage: the same values)
    unnormalised = from_sbi(npe, normalize=False).log_prob(theta[:4], x[:1])
    torch.testing.assert_close(unnormalised, post.log_prob(theta[:4], x[:1]))
    # a posterior (rather than the inference object) works too, without a training history
    assert from_sbi(post.posterior).history is None and post.history["epochs"] >= 5
    class OneAtATime:  # a posterior without batched sampling: one sample() call per observation
        def sample(self, sample_shape, x, show_progress_bars=False):
            return post.posterior.sample(sample_shape, x=x, show_progress_bars=show_progress_bars)

    assert from_sbi(OneAtATime()).sample_batched(4, x[:3]).shape == (3, 4, 2)
    with pytest.raises(ValueError, match="sbi posterior"):
        from_sbi(object())


def test_sbc_ranks_equal_sbis_run_sbc_on_the_same_draws(npe, test_pairs):
    theta, x = test_pairs
    post = from_sbi(npe)
    # one sample_batched call for all observations in each, after the same seed: the same draws
    ours = diagnostics.sbc(post, theta, x, num_samples=50, seed=3, batch_size=theta.shape[0])
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi warns below 100 test pairs and 100 draws
        torch.manual_seed(3)
        ranks, dap = run_sbc(theta, x, post.posterior, num_posterior_samples=50, show_progress_bar=False)
    assert torch.equal(ours.ranks, ranks.float())
    assert ours.ranks.shape == (40, 2) and 0 <= float(ours.ranks.min()) and float(ours.ranks.max()) <= 50


def test_coverage_corner_and_report_take_an_sbi_posterior(npe, test_pairs, tmp_path):
    theta, x = test_pairs
    post = from_sbi(npe)
    cov = diagnostics.coverage(post, theta, x, num_samples=50, seed=0)
    assert cov.hpd is not None and cov.tarp is not None and cov.hpd.shape == cov.levels.shape
    sbc = diagnostics.sbc(post, theta, x, num_samples=50, seed=0)
    samples = post.sample(500, x[:1])
    s2 = NOISE**2
    g = torch.Generator().manual_seed(2)
    exact = x[:1] / (1 + s2) + math.sqrt(s2 / (1 + s2)) * torch.randn(500, 2, generator=g)  # the exact posterior
    fig = plots.corner(samples, reference=exact, truth=theta[0])
    assert len(fig.axes) >= 4
    report = Report("an sbi NPE posterior, checked by simgen")
    report.add_training(post.history)
    report.add_posterior(samples, x_obs=x[0], truth=theta[0], reference=exact, c2st=diagnostics.c2st(samples, exact))
    report.add_calibration(sbc=sbc, coverage=cov)
    path = report.write(tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert "Calibration" in text and "Training" in text and text.count("data:image/png;base64") >= 4
