"""The emulator's posterior importance-sampled from an amortised one (simgen.estimators.importance), and a
PosteriorEstimator that samples with it (``sample_with``)."""

import math

import pytest
import torch

import simgen
from simgen.estimators.importance import HeldOutGain, ImportancePosterior, held_out_gain


class ExactLikelihood:
    """x | θ ~ N(θ, s² I₂): the conjugate simulator's likelihood in closed form."""

    def __init__(self, noise: float) -> None:
        self.noise = noise

    def log_prob(self, x, theta):
        return torch.distributions.Normal(theta, self.noise).log_prob(x).sum(-1)


class GaussianProposal:
    """q(θ | x) = N(x / (1 + s²) + shift, scale² I₂): the exact posterior's mean (shifted) with another spread."""

    def __init__(self, noise: float, scale: float, shift: float = 0.0) -> None:
        self.noise, self.scale, self.shift = noise, scale, shift

    def _dist(self, x):
        return torch.distributions.Normal(x / (1 + self.noise**2) + self.shift, self.scale)

    def sample(self, n, x_obs, *, generator=None):
        x = torch.as_tensor(x_obs).reshape(-1, 2)[0]
        return self._dist(x).mean + self.scale * torch.randn(n, 2, generator=generator)

    def log_prob(self, theta, x):
        return self._dist(torch.as_tensor(x).reshape(-1, 2)).log_prob(theta).sum(-1)


def exact_posterior(conjugate, x):
    s2 = conjugate.noise**2
    return torch.distributions.Normal(x / (1 + s2), math.sqrt(s2 / (1 + s2)))


def test_importance_sampling_reaches_the_likelihoods_posterior(conjugate):
    """With the exact likelihood and a proposal twice as wide as the posterior, the draws have the analytic
    posterior's moments, no θ twice (each comes from its own 32 proposals), and ``log_prob`` is the analytic log
    posterior within its own standard error (the evidence is estimated, the rest is exact)."""
    x_obs = torch.tensor([0.6, -0.4])
    sampler = ImportancePosterior(GaussianProposal(conjugate.noise, 0.9), ExactLikelihood(conjugate.noise),
                                  conjugate.prior)
    draws = sampler.sample(4000, x_obs, generator=torch.Generator().manual_seed(0))
    truth = exact_posterior(conjugate, x_obs)
    assert draws.shape == (4000, 2)
    assert torch.allclose(draws.mean(0), truth.mean, atol=0.03), draws.mean(0)
    assert torch.allclose(draws.var(0), truth.variance, rtol=0.1), draws.var(0)
    assert draws.unique(dim=0).shape[0] == 4000
    assert sampler.last_run.num_draws == 32 * 4000 and 3 < sampler.last_run.batch_ess < 32
    theta = torch.tensor([[0.5, -0.3], [0.0, 0.0], [1.2, -1.5]])
    log_p, se = sampler.log_prob(theta, x_obs.expand(3, 2), generator=torch.Generator().manual_seed(1))
    exact = truth.log_prob(theta).sum(-1)
    assert bool((se > 0).all()) and float(se.max()) < 0.05
    assert bool(((log_p - exact).abs() <= 3 * se + 1e-3).all()), (log_p, exact, se)


def test_the_log_evidence_is_not_biased_upward_into_log_prob(conjugate):
    """Over 1,600 independent estimates from 64 draws each of a proposal four times wider than the posterior,
    log Ẑ(x) averages the exact log Z(x) = log N(x; 0, (1 + s²) I) within three standard errors, so that
    log π̂ = log p + log ℓ − log Ẑ is not above the exact log posterior on average (the plain log of the mean
    weight is below log Z by several standard errors here, by Jensen's inequality)."""
    x_obs = torch.tensor([0.6, -0.4])
    sampler = ImportancePosterior(GaussianProposal(conjugate.noise, 2.0), ExactLikelihood(conjugate.noise),
                                  conjugate.prior)
    exact = float(torch.distributions.Normal(0.0, math.sqrt(1 + conjugate.noise**2)).log_prob(x_obs).sum())
    g = torch.Generator().manual_seed(0)
    estimates = torch.tensor([sampler.log_evidence(x_obs, num_draws=64, generator=g) for _ in range(1600)])
    error = estimates[:, 0] - exact
    assert abs(float(error.mean())) < 3 * float(error.std()) / 40, (float(error.mean()), float(error.std()))


def test_a_poor_proposal_is_reported(conjugate):
    """A proposal ten times wider than the posterior leaves each draw's 32 proposals resting on one or two of
    them: the draws come with a warning that says so."""
    sampler = ImportancePosterior(GaussianProposal(conjugate.noise, 4.5),
                                  ExactLikelihood(conjugate.noise), conjugate.prior, prior_weight=0.0)
    with pytest.warns(RuntimeWarning, match="the 32 proposal draws behind each draw rest on 1.[0-9] of them"):
        sampler.sample(200, torch.tensor([0.6, -0.4]), generator=torch.Generator().manual_seed(0))
    assert sampler.last_run.num_draws == 200 * 32 and sampler.last_run.batch_ess < 2


def test_the_held_out_comparison_prefers_the_better_posterior(conjugate):
    """On simulations from the conjugate model, the exact likelihood's posterior scores far above a shifted,
    too-narrow proposal (importance chosen), and level with the exact posterior as proposal (direct kept)."""
    theta, x = simgen.simulate(conjugate, conjugate.prior, 200, seed=3, progress=False)
    likelihood = ExactLikelihood(conjugate.noise)
    wrong = GaussianProposal(conjugate.noise, 0.35, shift=0.3)
    exact = GaussianProposal(conjugate.noise, math.sqrt(0.2))
    gains = {}
    for name, proposal in (("wrong", wrong), ("exact", exact)):
        sampler = ImportancePosterior(proposal, likelihood, conjugate.prior)
        gains[name] = held_out_gain(sampler, proposal.log_prob(theta, x), theta, x,
                                    generator=torch.Generator().manual_seed(0))
    assert gains["wrong"].favours_importance and gains["wrong"].gain > 0.3, gains
    assert not gains["exact"].favours_importance and abs(gains["exact"].gain) < 0.01, gains
    assert gains["exact"].rows == 200 and gains["exact"].median_ess > 500


def test_the_decision_rule():
    """Importance sampling is chosen when it scores more than two standard errors ahead and its weights rest on at
    least 1 % of their draws."""
    assert HeldOutGain(0.5, 0.1, 300, 50.0, 1024).favours_importance
    assert not HeldOutGain(0.15, 0.1, 300, 50.0, 1024).favours_importance
    assert not HeldOutGain(0.5, 0.1, 300, 5.0, 1024).favours_importance
    assert not HeldOutGain(-math.inf, 0.0, 300, 50.0, 1024).favours_importance
    assert "importance − direct +0.500 ± 0.100 nats over 300 simulations" in str(HeldOutGain(0.5, 0.1, 300, 50, 1024))


@pytest.fixture(scope="module")
def importance_posterior(conjugate, conjugate_data):
    """A flow posterior trained a few epochs on 1,500 simulations and 1,500 emulated pairs, sampling by importance
    from the emulator fitted on the same simulations."""
    theta, x = conjugate_data[0][:1500], conjugate_data[1][:1500]
    post = simgen.PosteriorEstimator(conjugate.prior, "flow", sample_with="importance")
    post.fit(theta, x, seed=0, progress=False, max_epochs=3, num_emulated=1500)
    return post


def test_a_posterior_samples_by_importance_and_saves_its_emulator(conjugate, importance_posterior, tmp_path):
    """``sample_with="importance"``: draws, ``log_prob`` and its error come from the emulator's posterior; the
    emulator held out the posterior's held-out simulations; the file keeps the emulator, so the loaded posterior
    answers alike."""
    post = importance_posterior
    assert post.sample_with == "importance" and post.held_out is None
    assert post.emulator.history.num_validation == 150 and post.history.num_validation == 300
    x_obs = torch.tensor([0.6, -0.4])
    draws = post.sample(300, x_obs, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (300, 2) and post.importance.last_run.num_draws >= 600
    assert torch.equal(post.sample(300, x_obs, generator=torch.Generator().manual_seed(0)), draws)  # seeded
    assert post.sample_batched(20, torch.stack([x_obs, -x_obs])).shape == (2, 20, 2)
    theta = torch.tensor([[0.5, -0.3], [0.0, 0.0]])
    log_p, se = post.log_prob_with_se(theta, x_obs, generator=torch.Generator().manual_seed(1))
    assert log_p.shape == (2,) and bool((se > 0).all())
    emulator_only = post.importance.log_target(theta, x_obs)  # the emulator's, not the flow's, up to log Z
    assert torch.allclose(log_p - emulator_only, (log_p - emulator_only)[:1].expand(2), atol=1e-4)
    post.save(tmp_path / "post.pt")
    loaded = simgen.load(tmp_path / "post.pt")
    assert loaded.sample_with == "importance" and loaded.requested_sample_with == "importance"
    assert isinstance(loaded.emulator, simgen.LikelihoodEstimator)
    again = loaded.log_prob(theta, x_obs, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(again, log_p, atol=1e-5)
    with pytest.raises(ValueError, match="sampling options"):
        post.sample(10, x_obs, steps=5)


def test_direct_sampling_keeps_the_emulator_out_of_the_file(conjugate, conjugate_data, tmp_path):
    theta, x = conjugate_data[0][:600], conjugate_data[1][:600]
    post = simgen.PosteriorEstimator(conjugate.prior, "flow", sample_with="direct")
    post.fit(theta, x, seed=0, progress=False, max_epochs=2, num_emulated=600)
    assert post.sample_with == "direct" and post.importance is None and post.emulator is not None
    post.save(tmp_path / "post.pt")
    loaded = simgen.load(tmp_path / "post.pt")
    assert loaded.emulator is None and loaded.sample_with == "direct"


def test_auto_compares_on_the_simulations_neither_model_trained_on(conjugate, conjugate_data, monkeypatch):
    """``sample_with="auto"`` compares the two posteriors on the held-out simulations (here the ones given as
    ``validation_index``, which the emulator held out too) and samples by whichever scored better."""
    theta, x = conjugate_data[0][:600], conjugate_data[1][:600]
    seen = {}

    def spy(sampler, log_q, theta_v, x_v, **kwargs):
        seen["theta"] = theta_v
        return held_out_gain(sampler, log_q, theta_v, x_v, **kwargs)

    monkeypatch.setattr("simgen.estimators.posterior.held_out_gain", spy)
    rows = torch.arange(0, 600, 4)  # a quarter, where the default split holds out a tenth
    post = simgen.PosteriorEstimator(conjugate.prior, "flow")
    post.fit(theta, x, seed=0, progress=False, max_epochs=2, num_emulated=600, validation_index=rows)
    assert post.emulator.history.num_validation == 150 and post.history.num_validation == 150 + 60
    held = {tuple(t.tolist()) for t in seen["theta"]}
    assert held == {tuple(t.tolist()) for t in theta[rows]}
    assert post.held_out.rows == 150
    assert post.sample_with == ("importance" if post.held_out.favours_importance else "direct")
    assert (post.importance is not None) == (post.sample_with == "importance")


def test_sample_with_is_checked(conjugate, conjugate_data):
    theta, x = conjugate_data[0][:300], conjugate_data[1][:300]
    with pytest.raises(ValueError, match=r"sample_with must be one of \['auto', 'direct', 'importance'\]"):
        simgen.PosteriorEstimator(conjugate.prior, sample_with="mcmc")
    with pytest.raises(ValueError, match="iid=True does not fit"):
        simgen.PosteriorEstimator(conjugate.prior, iid=True, sample_with="importance")
    post = simgen.PosteriorEstimator(conjugate.prior, "flow", sample_with="importance")
    with pytest.raises(ValueError, match="pass emulator= or num_emulated="):
        post.fit(theta, x, progress=False, max_epochs=1)
    cnf = simgen.PosteriorEstimator(conjugate.prior, "cnf", sample_with="importance")
    with pytest.raises(ValueError, match="needs a family with an exact log_prob"):
        cnf.fit(theta, x, progress=False, max_epochs=1, num_emulated=300)
    with pytest.raises(ValueError, match="validation_index must hold between 1 and 299"):
        simgen.PosteriorEstimator(conjugate.prior, "flow").fit(theta, x, validation_index=torch.arange(300),
                                                               progress=False)
