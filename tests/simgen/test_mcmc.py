import math

import pytest
import torch
from sbi.utils import BoxUniform

from simgen.diagnostics import c2st
from simgen.mcmc import (
    MCMCPosterior,
    effective_sample_size,
    hmc_sample,
    mala_sample,
    sir_init,
    sir_start,
    slice_sample,
    split_rhat,
)


def _correlated_gaussian():
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]]) * 0.04
    dist = torch.distributions.MultivariateNormal(torch.tensor([0.3, -0.2]), cov)
    return dist, cov


def test_slice_sampler_recovers_gaussian_moments():
    dist, cov = _correlated_gaussian()
    g = torch.Generator().manual_seed(0)
    init = dist.sample((200,))
    chains = slice_sample(dist.log_prob, init, 60, widths=torch.full((2,), 0.4), generator=g)
    assert chains.shape == (200, 60, 2)
    samples = chains[:, 10:].reshape(-1, 2)
    assert torch.allclose(samples.mean(0), dist.mean, atol=0.02)
    assert torch.allclose(torch.cov(samples.T), cov, atol=0.006)


def test_slice_sampler_respects_hard_boundaries_and_is_seeded():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))

    def log_fn(theta):
        return prior.log_prob(theta) - 0.5 * ((theta - 0.9) ** 2).sum(-1) / 0.25

    init = torch.full((50, 2), 0.5)
    a = slice_sample(log_fn, init, 20, widths=torch.ones(2), generator=torch.Generator().manual_seed(1))
    b = slice_sample(log_fn, init, 20, widths=torch.ones(2), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (a.abs() < 1).all()


def test_sir_init_concentrates_on_the_likelihood():
    prior = BoxUniform(-3 * torch.ones(2), 3 * torch.ones(2))
    dist, _ = _correlated_gaussian()

    def log_fn(theta):
        return dist.log_prob(theta) + prior.log_prob(theta)

    init = sir_init(log_fn, prior, 300, 20_000, torch.Generator().manual_seed(0))
    assert init.shape == (300, 2)
    assert torch.allclose(init.mean(0), dist.mean, atol=0.05)


# --------------------------------------------------------------------------- gradient-based samplers
@pytest.mark.parametrize("sampler", [hmc_sample, mala_sample], ids=["hmc", "mala"])
def test_gradient_samplers_recover_a_correlated_gaussian(sampler):
    dist, _ = _correlated_gaussian()
    g = torch.Generator().manual_seed(0)
    init = dist.mean + 0.5 * torch.randn(50, 2, generator=g)  # ~2.5 standard deviations off: warm-up must fix it
    thin = 1 if sampler is hmc_sample else 10  # MALA diffuses: slower along the correlated direction
    result = sampler(dist.log_prob, init, 40, generator=g, warmup=150, thin=thin)
    assert result.chains.shape == (50, 40, 2) and result.step_size.shape == (50,)
    # the mass matrix estimates the variances (0.04 each) from the warm-up draws
    assert torch.allclose(result.inv_mass, torch.full((2,), 0.04), rtol=0.5)
    samples = result.chains.reshape(-1, 2)[::2]
    reference = dist.sample((samples.shape[0],))
    assert c2st(samples, reference) <= 0.55
    assert (split_rhat(result.chains) < 1.05).all()
    assert 0.3 < float(result.acceptance_rate.mean()) < 1.0


def test_hmc_is_seeded_and_rejects_a_non_differentiable_target():
    dist, _ = _correlated_gaussian()
    init = dist.sample((10,))
    a = hmc_sample(dist.log_prob, init, 5, generator=torch.Generator().manual_seed(3), warmup=5)
    b = hmc_sample(dist.log_prob, init, 5, generator=torch.Generator().manual_seed(3), warmup=5)
    assert torch.equal(a.chains, b.chains)
    with pytest.raises(ValueError, match="not differentiable"):
        hmc_sample(lambda u: dist.log_prob(u).detach(), init, 5, generator=torch.Generator(), warmup=5)
    with pytest.raises(ValueError, match="one leapfrog step"):
        mala_sample(dist.log_prob, init, 5, generator=torch.Generator(), num_leapfrog=3)


# --------------------------------------------------------------------------- R̂ and ESS
def test_ess_of_iid_draws_is_about_their_number_and_rhat_about_one():
    draws = torch.randn(4, 1000, 3, generator=torch.Generator().manual_seed(0))
    ess = effective_sample_size(draws)
    assert ess.shape == (3,)
    assert ((ess > 3600) & (ess < 4400)).all()
    assert (split_rhat(draws) < 1.01).all()


def test_ess_of_an_autoregressive_chain_matches_its_autocorrelation_time():
    rho, g = 0.9, torch.Generator().manual_seed(1)
    noise = torch.randn(8, 4000, generator=g)
    chains = torch.empty_like(noise)
    chains[:, 0] = noise[:, 0] / math.sqrt(1 - rho**2)
    for t in range(1, 4000):
        chains[:, t] = rho * chains[:, t - 1] + noise[:, t]
    expected = 8 * 4000 * (1 - rho) / (1 + rho)  # τ = (1 + ρ)/(1 − ρ) for AR(1)
    assert abs(float(effective_sample_size(chains)[0]) / expected - 1) < 0.15


def test_rhat_flags_chains_stuck_in_separate_modes():
    g = torch.Generator().manual_seed(2)
    stuck = torch.cat([torch.randn(4, 200, 1, generator=g) - 3, torch.randn(4, 200, 1, generator=g) + 3])
    assert float(split_rhat(stuck)[0]) > 1.5
    drifting = torch.randn(4, 200, 1, generator=g) + torch.linspace(0, 4, 200)[None, :, None]
    assert float(split_rhat(drifting)[0]) > 1.2  # split halves disagree
    with pytest.raises(ValueError, match="at least 4 draws"):
        split_rhat(torch.randn(4, 3))


# --------------------------------------------------------------------------- MCMCPosterior
class ExactGaussianLikelihood:
    """x | θ ~ N(θ, s² I₂): the interface MCMCPosterior needs from a likelihood estimator."""

    device = torch.device("cpu")
    noise = 0.5

    def log_likelihood(self, theta, x_obs, generator=None, grad=False):
        return torch.distributions.Normal(theta[:, None, :], self.noise).log_prob(x_obs[None]).sum((1, 2))

    def check_x(self, x, name):
        return torch.as_tensor(x, dtype=torch.float32).reshape(-1, 2)

    def check_theta(self, theta, name="theta"):
        return torch.as_tensor(theta, dtype=torch.float32).reshape(-1, 2)


class MirrorLikelihood(ExactGaussianLikelihood):
    """x | θ ~ N(|θ|, s² I₂): a posterior with four mirror modes (signs of θ₁, θ₂)."""

    noise = 0.1

    def log_likelihood(self, theta, x_obs, generator=None, grad=False):
        return super().log_likelihood(theta.abs(), x_obs, generator, grad)


@pytest.mark.parametrize("method", ["hmc", "mala", "slice"])
def test_mcmc_posterior_of_iid_observations_has_the_analytic_moments(method):
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    x_obs = torch.tensor([[0.5, -0.5], [0.9, -0.1], [0.2, -0.9]])
    post = MCMCPosterior(ExactGaussianLikelihood(), prior, method=method, num_chains=100, warmup=50, thin=5,
                         progress=False)
    samples = post.sample(2000, x_obs, generator=torch.Generator().manual_seed(0))
    s2, m = 0.25, 3
    mean, std = x_obs.sum(0) / (m + s2), (s2 / (m + s2)) ** 0.5
    assert torch.allclose(samples.mean(0), mean, atol=0.03)
    assert torch.allclose(samples.std(0), torch.full((2,), std), rtol=0.06)
    assert post.chains.shape == (100, 20, 2)
    run = post.last_run
    assert run.method == method and run.num_chains == 100 and run.draws_per_chain == 20
    assert (run.r_hat < 1.05).all() and (run.ess > 500).all()
    assert run.num_evaluations > 100 * 20 and run.wall_time > 0
    assert (run.acceptance_rate is None) == (method == "slice")
    reference = mean + std * torch.randn(1500, 2, generator=torch.Generator().manual_seed(1))
    assert c2st(samples[:1500], reference) <= 0.55


def test_gradient_mcmc_respects_a_bounded_prior():
    """The posterior piles up against the box's edge (x_obs outside the box): u-space HMC stays inside and
    matches the truncated Gaussian."""
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    x_obs = torch.tensor([[1.1, 0.0]])
    post = MCMCPosterior(ExactGaussianLikelihood(), prior, method="hmc", num_chains=50, warmup=60, thin=3,
                         progress=False)
    samples = post.sample(1500, x_obs, generator=torch.Generator().manual_seed(0))
    assert (samples.abs() < 1).all() and torch.isfinite(prior.log_prob(samples)).all()
    assert (post.last_run.r_hat < 1.05).all()
    candidates = 1.1 * torch.tensor([1.0, 0.0]) + 0.5 * torch.randn(20_000, 2, generator=torch.Generator())
    reference = candidates[(candidates.abs() < 1).all(dim=1)][:1500]
    assert c2st(samples, reference) <= 0.55


def test_monitor_of_mode_invariant_quantities_and_the_convergence_warning():
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    x_obs = torch.tensor([[1.0, 1.0]])
    options = dict(method="hmc", num_chains=100, warmup=50, thin=3, progress=False)
    post = MCMCPosterior(MirrorLikelihood(), prior, **options)
    with pytest.warns(RuntimeWarning, match="R-hat > 1.05"):
        samples = post.sample(3000, x_obs, generator=torch.Generator().manual_seed(0))
    assert (post.last_run.r_hat > 1.5).all()  # chains sit in the four mirror modes
    assert ((samples[:, 0] > 0).float().mean() - 0.5).abs() < 0.1  # SIR shares the chains between the modes
    post = MCMCPosterior(MirrorLikelihood(), prior, monitor=torch.abs, **options)
    post.sample(3000, x_obs, generator=torch.Generator().manual_seed(0))
    assert post.last_run.monitored == "monitor" and (post.last_run.r_hat < 1.05).all()
    assert "R-hat" in str(post.last_run)


def test_mcmc_posterior_checks_its_options():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="method must be one of"):
        MCMCPosterior(ExactGaussianLikelihood(), prior, method="nuts")
    with pytest.raises(ValueError, match="target_accept"):
        MCMCPosterior(ExactGaussianLikelihood(), prior, target_accept=1.5)
    with pytest.raises(ValueError, match="num_chains"):
        MCMCPosterior(ExactGaussianLikelihood(), prior, num_chains=0)


def test_emulator_posterior_by_mala_matches_the_conjugate_posterior(conjugate, conjugate_emulator):
    x_obs = torch.tensor([0.6, -0.4])
    post = conjugate_emulator.posterior(method="mala", num_chains=50, warmup=60, thin=5, progress=False)
    samples = post.sample(1500, x_obs, generator=torch.Generator().manual_seed(0))
    reference = conjugate.posterior_samples(x_obs, 1500)
    # the emulator's own error adds to the sampler's
    assert c2st(samples, reference) <= 0.58
    assert (post.last_run.r_hat < 1.05).all()
    assert post.last_run.acceptance_rate > 0.3


def test_sir_start_draws_until_the_weights_rest_on_enough_draws():
    """Two narrow modes (masses 0.3 and 0.7) on a wide box: 10⁴ prior draws almost never land in them, so a
    single round gives chains a share of the modes resting on a handful of draws; more rounds (doubling) until
    the weights' ESS reaches the target give each mode its share."""
    prior = BoxUniform(-10 * torch.ones(2), 10 * torch.ones(2))
    modes = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
    sd = 0.05

    def log_fn(theta):
        d2 = ((theta[:, None, :] - modes) ** 2).sum(-1) / sd**2
        return torch.logsumexp(-0.5 * d2 + torch.log(torch.tensor([0.3, 0.7])), dim=1) + prior.log_prob(theta)

    once = sir_start(log_fn, prior, 2000, 10_000, torch.Generator().manual_seed(0))
    assert once.num_draws == 10_000 and once.ess < 10
    start = sir_start(log_fn, prior, 2000, 10_000, torch.Generator().manual_seed(0), min_ess=50,
                      max_init=2_000_000)
    assert start.ess >= 50 and 10_000 < start.num_draws <= 2_000_000
    assert start.theta.shape == (2000, 2)
    share = float((start.theta[:, 0] > 0).float().mean())
    assert abs(share - 0.7) < 3 * (0.21 / start.ess) ** 0.5 + 0.02, (share, start.ess)  # binomial SE at ESS draws
    capped = sir_start(log_fn, prior, 10, 10_000, torch.Generator().manual_seed(0), min_ess=1e9, max_init=50_000)
    assert capped.num_draws == 50_000  # 10⁴, 10⁴, 2·10⁴, then the cap's remaining 10⁴


# --------------------------------------------------------------------------- SIR from an amortised posterior
class ModesProposal:
    """An 'amortised posterior' q(θ | x) with the interface of a PosteriorEstimator: Gaussians at ``modes`` with
    shares ``weights`` and scale ``sd`` whatever x (each call's x is recorded)."""

    def __init__(self, modes, weights, sd):
        self.modes, self.weights, self.sd = modes, torch.as_tensor(weights), sd
        self.seen = []

    def _mixture(self):
        comp = torch.distributions.Independent(torch.distributions.Normal(self.modes, self.sd), 1)
        return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(self.weights), comp)

    def sample(self, n, x_obs, *, generator=None):
        self.seen.append(torch.as_tensor(x_obs).shape)
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.modes[idx] + self.sd * torch.randn(n, self.modes.shape[1], generator=generator)

    def log_prob(self, theta, x):
        self.seen.append(torch.as_tensor(x).shape)
        return self._mixture().log_prob(theta)


def test_the_defensive_mixture_draws_and_weighs_what_it_says():
    from simgen.mcmc import DefensiveMixture

    prior = BoxUniform(-10 * torch.ones(2), 10 * torch.ones(2))
    q = ModesProposal(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]), [0.5, 0.5], 0.1)
    mix = DefensiveMixture(q, torch.zeros(1, 2), prior, 0.2)
    theta = prior.sample((50,))
    expected = torch.logsumexp(torch.stack([q._mixture().log_prob(theta) + math.log(0.8),
                                            prior.log_prob(theta) + math.log(0.2)]), 0)
    assert torch.allclose(mix.log_prob(theta), expected)
    torch.manual_seed(0)
    draws = mix.sample((20_000,))
    near = ((draws[:, None, :] - q.modes).norm(dim=-1) < 1).any(1)
    assert draws.shape == (20_000, 2)
    assert abs(float((~near).float().mean()) - 0.2 * (1 - 2 * math.pi / 400)) < 0.01  # the prior's share
    assert all(shape == (1, 2) for shape in q.seen)  # q conditioned on the observation as given
    with pytest.raises(ValueError, match="prior_weight"):
        DefensiveMixture(q, torch.zeros(1, 2), prior, 1.0)
    wrong = DefensiveMixture(ModesProposal(torch.zeros(1, 3), [1.0], 0.1), torch.zeros(1, 2), prior, 0.1)
    with pytest.raises(ValueError, match=r"\[n, d_theta\]"):
        wrong.sample((10,))


def test_sir_from_a_proposal_corrects_its_mode_shares_with_few_draws():
    """The two narrow modes of the test above (masses 0.3 and 0.7): a proposal that finds both modes but gives
    them the wrong shares (0.8 and 0.2), three times too wide, reaches the ESS target in one round of 10⁴
    draws (the prior needs more
    than 10⁵), and its importance weights give each mode its mass."""
    from simgen.mcmc import DefensiveMixture

    prior = BoxUniform(-10 * torch.ones(2), 10 * torch.ones(2))
    modes, sd = torch.tensor([[-5.0, 0.0], [5.0, 0.0]]), 0.05

    def log_fn(theta):
        d2 = ((theta[:, None, :] - modes) ** 2).sum(-1) / sd**2
        return torch.logsumexp(-0.5 * d2 + torch.log(torch.tensor([0.3, 0.7])), dim=1) + prior.log_prob(theta)

    q = DefensiveMixture(ModesProposal(modes, [0.8, 0.2], 3 * sd), torch.zeros(1, 2), prior)
    start = sir_start(log_fn, q, 4000, 10_000, torch.Generator().manual_seed(0), min_ess=50, max_init=10**6)
    assert start.num_draws == 10_000 and start.ess > 500
    share = float((start.theta[:, 0] > 0).float().mean())
    assert abs(share - 0.7) < 3 * (0.21 / start.ess) ** 0.5 + 3 * (0.21 / 4000) ** 0.5, (share, start.ess)
    from_prior = sir_start(log_fn, prior, 4000, 10_000, torch.Generator().manual_seed(0), min_ess=50,
                           max_init=10**6)
    assert from_prior.num_draws > 100_000


def test_mcmc_posterior_started_from_a_proposal_gives_the_modes_their_shares():
    """Four mirror modes of equal mass; a proposal on all four with shares 0.7/0.1/0.1/0.1: the chains start in
    each mode in proportion to its posterior mass, not the proposal's."""
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    x_obs = torch.tensor([[1.0, 1.0]])
    modes = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    q = ModesProposal(modes, [0.7, 0.1, 0.1, 0.1], 0.15)
    options = dict(method="hmc", num_chains=200, warmup=30, thin=2, progress=False, monitor=torch.abs)
    post = MCMCPosterior(MirrorLikelihood(), prior, proposal=q, **options)
    samples = post.sample(4000, x_obs, generator=torch.Generator().manual_seed(0))
    quadrant = (samples[:, 0] > 0).long() * 2 + (samples[:, 1] > 0).long()
    shares = torch.bincount(quadrant, minlength=4).float() / samples.shape[0]
    assert (shares - 0.25).abs().max() < 0.08, shares  # 200 chains: binomial SE 0.03 per share
    assert post.last_run.init_from == "proposal" and "proposal draws" in str(post.last_run)
    assert post.last_run.init_draws == 10_000 and post.last_run.init_ess > 1000
    assert all(shape == (1, 2) for shape in q.seen)
    with pytest.raises(ValueError, match="proposal must be an amortised posterior"):
        MCMCPosterior(MirrorLikelihood(), prior, proposal=object())
    with pytest.raises(ValueError, match="prior_weight"):
        MCMCPosterior(MirrorLikelihood(), prior, proposal=q, prior_weight=-0.1)
