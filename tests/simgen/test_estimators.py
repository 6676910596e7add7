import math

import pytest
import torch
from sbi.utils import BoxUniform

import simgen
from simgen.diagnostics import c2st
from simgen.models import Flow


def test_posterior_shapes(two_moons_posterior):
    post = two_moons_posterior
    x_obs = torch.tensor([0.1, -0.2])
    assert post.sample(50, x_obs).shape == (50, 2)
    assert post.sample(50, x_obs[None]).shape == (50, 2)
    assert post.sample_batched(7, torch.randn(3, 2) * 0.1).shape == (3, 7, 2)
    assert post.sample_batched(7, x_obs[None]).shape == (1, 7, 2)
    assert post.log_prob(torch.zeros(4, 2), x_obs).shape == (4,)
    assert post.log_prob(torch.zeros(4, 2), torch.zeros(4, 2)).shape == (4,)
    assert post.d_theta == 2


def test_posterior_samples_stay_inside_the_prior_box(two_moons_posterior, two_moons):
    samples = two_moons_posterior.sample(20_000, torch.tensor([0.9, 0.9]))  # x far out: mass pushed at the edge
    assert torch.isfinite(two_moons.prior.log_prob(samples)).all()


def test_posterior_density_is_normalised_on_the_box(two_moons_posterior):
    # exp(log q) integrated over the prior box must be 1: checks the support bijection's Jacobian.
    n = 300
    grid = torch.linspace(-1, 1, n + 1)[:-1] + 1.0 / n
    tt = torch.cartesian_prod(grid, grid)
    mass = two_moons_posterior.log_prob(tt, torch.tensor([0.0, 0.1])).exp().sum() * (2.0 / n) ** 2
    assert abs(mass.item() - 1.0) < 0.02


def test_log_prob_is_minus_inf_outside_the_support(two_moons_posterior):
    lp = two_moons_posterior.log_prob(torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, -1.0]]), torch.zeros(2))
    assert math.isfinite(lp[0]) and lp[1] == -math.inf and lp[2] == -math.inf


def test_small_posterior_fit_matches_the_analytic_posterior(conjugate, conjugate_data):
    post = simgen.PosteriorEstimator(conjugate.prior, Flow(transforms=3, hidden_features=32))
    post.fit(*conjugate_data, seed=0, progress=False)
    x_obs = torch.tensor([0.7, -1.2])
    score = c2st(post.sample(2000, x_obs, generator=torch.Generator().manual_seed(0)),
                 conjugate.posterior_samples(x_obs, 2000))
    assert score < 0.6


def test_fit_is_reproducible():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((300,))
    x = theta + 0.1 * torch.randn(300, 2)
    posts = []
    for _ in range(2):
        post = simgen.PosteriorEstimator(prior, Flow(transforms=2, hidden_features=16))
        post.fit(theta, x, seed=11, progress=False, max_epochs=3)
        posts.append(post)
    sa, sb = (p.density.state_dict() for p in posts)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(posts[0].sample(20, x[0], generator=g()), posts[1].sample(20, x[0], generator=g()))


def test_emulator_matches_the_exact_likelihood(conjugate, conjugate_emulator):
    g = torch.Generator().manual_seed(5)
    theta = conjugate.prior.sample((500,))
    x = conjugate(theta, generator=g)
    gap = (conjugate.log_likelihood(theta, x) - conjugate_emulator.log_prob(x, theta).double()).mean()
    assert abs(gap.item()) < 0.1
    assert conjugate_emulator.sample(30, theta[0]).shape == (30, 2)
    assert conjugate_emulator.sample_batched(30, theta[:4]).shape == (4, 30, 2)
    assert conjugate_emulator.log_prob(x[0], theta).shape == (500,)


def test_emulator_posterior_by_mcmc_has_the_analytic_moments(conjugate, conjugate_emulator):
    x_obs = torch.tensor([[0.5, -0.5], [0.9, -0.1], [0.2, -0.9]])  # three i.i.d. observations
    post = conjugate_emulator.posterior(num_chains=100, warmup=20, thin=2, progress=False)
    samples = post.sample(2000, x_obs, generator=torch.Generator().manual_seed(0))
    s2, m = conjugate.noise**2, x_obs.shape[0]
    mean = x_obs.sum(0) / (m + s2)  # prior N(0, I), m observations of variance s²
    std = math.sqrt(s2 / (m + s2))
    assert samples.shape == (2000, 2)
    # the sampler alone is checked against the exact likelihood in test_mcmc; here the emulator's own error
    # (tripled by three observations) adds to the Monte Carlo error
    assert torch.allclose(samples.mean(0), mean, atol=0.1)
    assert torch.allclose(samples.std(0), torch.full((2,), std), rtol=0.15)
    assert post.sample_batched(10, x_obs[:2], generator=torch.Generator().manual_seed(0)).shape == (2, 10, 2)
    assert post.log_prob(torch.zeros(3, 2), x_obs).shape == (3,)


def test_discrete_dimensions_are_dequantised_and_sampled_as_integers():
    prior = BoxUniform(torch.tensor([1.0]), torch.tensor([5.0]))
    theta = prior.sample((1500,))
    x = torch.cat([torch.poisson(theta), theta + 0.1 * torch.randn(1500, 1)], dim=1)
    emu = simgen.LikelihoodEstimator(prior, Flow(transforms=2, hidden_features=16), discrete=[0])
    emu.fit(theta, x, seed=0, progress=False, max_epochs=5)
    fake = emu.sample(200, torch.tensor([3.0]))
    assert torch.equal(fake[:, 0], fake[:, 0].round())
    with pytest.raises(ValueError, match="discrete indices"):
        simgen.LikelihoodEstimator(prior, discrete=[4]).fit(theta, x, progress=False, max_epochs=1)


class TestBadInput:
    def test_fit_errors(self, two_moons, two_moons_data):
        theta, x = two_moons_data
        post = simgen.PosteriorEstimator(two_moons.prior)
        with pytest.raises(ValueError, match="same number of rows"):
            post.fit(theta[:10], x[:11])
        with pytest.raises(ValueError, match="d_theta = 2"):
            post.fit(torch.zeros(10, 3), x[:10])
        bad = x[:20].clone()
        bad[3, 1] = float("nan")
        with pytest.raises(ValueError, match="NaN or inf in 1 of 20 rows"):
            post.fit(theta[:20], bad)
        with pytest.raises(ValueError, match="outside the prior's support"):
            post.fit(theta[:20] * 3, x[:20])
        with pytest.raises(ValueError, match="unknown training settings"):
            post.fit(theta[:20], x[:20], learning_rat=1e-3)
        with pytest.raises(ValueError, match="array-like"):
            post.fit("theta", x)
        with pytest.raises(ValueError, match="x_kind"):
            simgen.PosteriorEstimator(two_moons.prior, x_kind="image")
        with pytest.raises(ValueError, match="event shape"):
            simgen.PosteriorEstimator(torch.distributions.Uniform(0.0, 1.0))
        with pytest.raises(ValueError, match="model must be one of"):
            simgen.PosteriorEstimator(two_moons.prior, model="flows")
        with pytest.raises(RuntimeError, match="not fitted"):
            post.sample(10, torch.zeros(2))

    def test_sampling_errors(self, two_moons_posterior):
        post = two_moons_posterior
        with pytest.raises(ValueError, match="sample_batched"):
            post.sample(10, torch.zeros(3, 2))
        with pytest.raises(ValueError, match=r"x_obs must have shape \[m, 2\] or \[2\]; got \[1, 3\]"):
            post.sample(10, torch.zeros(1, 3))
        with pytest.raises(ValueError, match="positive int"):
            post.sample(0, torch.zeros(2))
        with pytest.raises(ValueError, match="same number of rows or one of them a single row"):
            post.log_prob(torch.zeros(3, 2), torch.zeros(2, 2))
        with pytest.raises(ValueError, match=r"theta must have shape \[n, 2\]"):
            post.log_prob(torch.zeros(3, 5), torch.zeros(2))

    def test_emulator_errors(self, conjugate_emulator):
        with pytest.raises(ValueError, match="sample_batched"):
            conjugate_emulator.sample(5, torch.zeros(2, 2))
        with pytest.raises(ValueError, match="needs a prior"):
            emu = simgen.LikelihoodEstimator(None)
            emu.density, emu.theta_shape, emu.x_shape = conjugate_emulator.density, (2,), (2,)
            emu.posterior()


# ------------------------------------------------------------------- validity: P(valid | θ) from a store
class _FailsAtLargeTheta:
    """x | θ ~ N(θ, 0.5² I₂) on θ ~ U(-2, 2)²; the simulation fails (NaN) with probability sigmoid(3 θ₀)."""

    x_shape = (2,)

    def __init__(self):
        from sbi.utils import BoxUniform

        self.prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))

    def __call__(self, theta, *, generator=None):
        x = theta + 0.5 * torch.randn(theta.shape, generator=generator)
        fails = torch.rand(theta.shape[0], generator=generator) < torch.sigmoid(3 * theta[:, 0])
        x[fails] = float("nan")
        return x


def test_validity_classifier_shifts_the_likelihood_posterior_the_right_way(tmp_path):
    import warnings

    from simgen.models import Flow

    sim = _FailsAtLargeTheta()
    path = tmp_path / "runs.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        simgen.simulate(sim, sim.prior, 3000, seed=0, chunk_size=500, progress=False, store=path, return_data=False)
    emu = simgen.LikelihoodEstimator(sim.prior, Flow(kind="maf", transforms=3, hidden_features=32), device="cpu")
    emu.fit(path, seed=0, progress=False, max_epochs=40)
    theta = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    log_valid = emu.validity.log_prob_valid(theta)
    assert torch.allclose(log_valid.exp(), 1 - torch.sigmoid(3 * theta[:, 0]), atol=0.1)

    x_obs = torch.tensor([0.5, 0.0])
    options = dict(num_chains=100, warmup=20, thin=2, num_init=2000, progress=False)
    plain = emu.posterior(**options).sample(1000, x_obs, generator=torch.Generator().manual_seed(0))
    corrected = emu.posterior(validity=True, **options).sample(1000, x_obs, generator=torch.Generator().manual_seed(0))
    # The exact posterior of a valid observation: p(θ) (1 − sigmoid(3 θ₀)) N(x_obs; θ, 0.25 I), on a grid.
    grid = torch.linspace(-2, 2, 2001)
    weights = (1 - torch.sigmoid(3 * grid)) * torch.exp(-0.5 * (x_obs[0] - grid) ** 2 / 0.25)
    exact_mean = float((weights * grid).sum() / weights.sum())
    assert exact_mean < 0.3 and float(plain[:, 0].mean()) > 0.4
    assert abs(float(corrected[:, 0].mean()) - exact_mean) < 0.15  # emulator, classifier and MCMC error
    assert float(corrected[:, 0].mean()) < float(plain[:, 0].mean()) - 0.3

    emu.save(tmp_path / "emu.pt")  # the classifier is saved with the model
    loaded = simgen.load(tmp_path / "emu.pt")
    assert torch.allclose(loaded.validity.log_prob_valid(theta), log_valid)


def test_validity_needs_a_store(conjugate_emulator):
    with pytest.raises(ValueError, match=r"validity=True.*fit the emulator with emu.fit\('runs.h5'\)"):
        conjugate_emulator.posterior(validity=True)


def test_family_training_defaults_scale_the_learning_rate_with_the_batch():
    """A flow trains on 10⁴ rows in 1024-row batches at twice its own base rate (4e-3, not the trainer's 2e-3);
    an explicit config wins."""
    prior = BoxUniform(torch.tensor([0.0]), torch.tensor([1.0]))
    theta = prior.sample((12_000,))
    x = theta + 0.1 * torch.randn_like(theta)
    small = Flow(transforms=1, hidden_features=8)
    post = simgen.PosteriorEstimator(prior, small)
    history = post.fit(theta, x, seed=0, progress=False, max_epochs=1)
    assert history.learning_rate[0] == pytest.approx(2 * 4e-3)
    history = post.fit(theta, x, config=simgen.TrainingConfig(max_epochs=1), seed=0, progress=False)
    assert history.learning_rate[0] == pytest.approx(simgen.TrainingConfig().learning_rate)


def _scale_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(θ₁, θ₀²): θ₀ a scale over a fifty-fold range."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 2, generator=g) * torch.tensor([0.98, 1.0]) + torch.tensor([0.02, 0.0])
    return theta, theta[:, :1] * torch.randn(n, 1, generator=g) + theta[:, 1:]


SCALE_PRIOR = BoxUniform(torch.tensor([0.02, 0.0]), torch.tensor([1.0, 1.0]))


class TestLogTheta:
    def test_a_scale_parameter_fed_as_its_log_is_learned_at_the_prior_edge(self):
        # log q is linear in log θ₀ (−log θ₀ − ...): one direction of the network's input as log θ₀, a curve
        # steepest at the prior's lower edge as θ₀
        theta, x = _scale_pairs(2000, 0)
        edge = torch.tensor([[0.025, 0.5]]).expand(4000, -1)
        x_edge = edge[:, 1:] + edge[:, :1] * torch.randn(4000, 1, generator=torch.Generator().manual_seed(1))
        exact = torch.distributions.Normal(edge[:, 1:], edge[:, :1]).log_prob(x_edge).sum(1)
        gaps = {}
        for log_theta, dims in ((True, (0,)), (False, ())):
            emu = simgen.LikelihoodEstimator(SCALE_PRIOR, Flow(kind="maf", transforms=2, hidden_features=16),
                                             log_theta=log_theta)
            assert emu.log_theta == dims
            emu.fit(theta, x, seed=0, progress=False, max_epochs=40)
            gaps[log_theta] = float((exact - emu.log_prob(x_edge, edge).detach()).mean())
        assert gaps[True] > -0.02, gaps  # a density estimate is not above the truth on average
        assert gaps[True] < 0.15 and gaps[False] > 2 * gaps[True], gaps

    def test_the_context_is_standardised_after_the_log(self):
        theta, x = _scale_pairs(500, 3)
        emu = simgen.LikelihoodEstimator(SCALE_PRIOR, Flow(transforms=1, hidden_features=8))
        assert emu.log_theta == (0,)  # the default: the prior's positive dimensions
        emu.fit(theta, x, seed=0, progress=False, max_epochs=1)
        features = torch.stack([theta[:, 0].log(), theta[:, 1]], 1)
        expected = (features - features.mean(0)) / features.std(0)
        torch.testing.assert_close(emu.density.standardized_context(theta), expected, atol=1e-4, rtol=1e-4)

    def test_options_are_checked_and_saved(self, tmp_path, monkeypatch):
        assert simgen.LikelihoodEstimator(SCALE_PRIOR, log_theta=False).log_theta == ()
        assert simgen.LikelihoodEstimator(None).log_theta == ()
        assert simgen.LikelihoodEstimator(None, log_theta=[1, 0, 1]).log_theta == (0, 1)
        with pytest.raises(ValueError, match="no prior was given"):
            simgen.LikelihoodEstimator(None, log_theta=True)
        with pytest.raises(ValueError, match=r"not positive in dimension\(s\) \[1\]"):
            simgen.LikelihoodEstimator(SCALE_PRIOR, log_theta=[1])
        with pytest.raises(ValueError, match="True, False or a list"):
            simgen.LikelihoodEstimator(SCALE_PRIOR, log_theta="log")
        theta, x = _scale_pairs(300, 4)
        with pytest.raises(ValueError, match="do not fit theta rows"):
            simgen.LikelihoodEstimator(None, log_theta=[2]).fit(theta, x, progress=False, max_epochs=1)
        emu = simgen.LikelihoodEstimator(SCALE_PRIOR, Flow(transforms=1, hidden_features=8))
        emu.fit(theta, x, seed=0, progress=False, max_epochs=2)
        emu.save(tmp_path / "log.pt")
        loaded = simgen.load(tmp_path / "log.pt")
        assert loaded.log_theta == (0,)
        torch.testing.assert_close(loaded.log_prob(x[:20], theta[:20]), emu.log_prob(x[:20], theta[:20]))
        # a file written before the option: θ as it was, whatever the prior's support
        plain = simgen.LikelihoodEstimator(SCALE_PRIOR, Flow(transforms=1, hidden_features=8), log_theta=False)
        plain.fit(theta, x, seed=0, progress=False, max_epochs=2)
        config = simgen.LikelihoodEstimator.config
        monkeypatch.setattr(simgen.LikelihoodEstimator, "config",
                            lambda self: {k: v for k, v in config(self).items() if k != "log_theta"})
        plain.save(tmp_path / "old.pt")
        monkeypatch.undo()
        old = simgen.load(tmp_path / "old.pt")
        assert old.log_theta == () and old.density.context_map is None
        torch.testing.assert_close(old.log_prob(x[:20], theta[:20]), plain.log_prob(x[:20], theta[:20]))


def test_log_prob_in_batches_equals_one_pass_and_shows_progress(conjugate_emulator, conjugate_data,
                                                               two_moons_posterior, two_moons_data, capsys):
    """``batch_size`` only splits the rows (an exact family gives the same values); ``progress`` draws a bar."""
    theta, x = (t[:50] for t in conjugate_data)
    whole = conjugate_emulator.log_prob(x, theta)
    assert torch.allclose(conjugate_emulator.log_prob(x, theta, batch_size=7), whole, atol=1e-5)
    value, se = conjugate_emulator.log_prob_with_se(x, theta, batch_size=16, progress=True)
    assert torch.allclose(value, whole, atol=1e-5) and value.shape == se.shape == (50,)
    assert "log_prob" in capsys.readouterr().err
    theta, x = (t[:30] for t in two_moons_data)
    assert torch.allclose(two_moons_posterior.log_prob(theta, x, batch_size=4), two_moons_posterior.log_prob(theta, x),
                          atol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        conjugate_emulator.log_prob(conjugate_data[1][:1], conjugate_data[0][:1], batch_size=0)
