import torch
from sbi.utils import BoxUniform

from simgen.mcmc import MCMCPosterior, sir_init, slice_sample


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


class ExactGaussianLikelihood:
    """x | θ ~ N(θ, s² I₂): the interface MCMCPosterior needs from a likelihood estimator."""

    device = torch.device("cpu")
    noise = 0.5

    def log_likelihood(self, theta, x_obs, generator=None):
        return torch.distributions.Normal(theta[:, None, :], self.noise).log_prob(x_obs[None]).sum((1, 2))

    def _check_x(self, x, name):
        return torch.as_tensor(x, dtype=torch.float32).reshape(-1, 2)


def test_mcmc_posterior_of_iid_observations_has_the_analytic_moments():
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    x_obs = torch.tensor([[0.5, -0.5], [0.9, -0.1], [0.2, -0.9]])
    post = MCMCPosterior(ExactGaussianLikelihood(), prior, num_chains=200, warmup=50, thin=5, progress=False)
    samples = post.sample(4000, x_obs, generator=torch.Generator().manual_seed(0))
    s2, m = 0.25, 3
    assert torch.allclose(samples.mean(0), x_obs.sum(0) / (m + s2), atol=0.03)
    assert torch.allclose(samples.std(0), torch.full((2,), (s2 / (m + s2)) ** 0.5), rtol=0.06)
    assert post.chains.shape == (200, 20, 2)
