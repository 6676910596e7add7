"""The flow-matching CNF, and what it shares with the diffusion (both are ContinuousFlow): the ODE sampler,
the exact / Hutchinson log-density, accuracy on 2-D targets, estimators end to end, saving."""

import math

import pytest
import torch

import simgen
from simgen.diagnostics import c2st
from simgen.models import CNF, FAMILIES, Diffusion, make_family
from simgen.training import TrainingConfig, train

FAMILY_NAMES = ["cnf", "diffusion"]
SMALL = dict(hidden_features=32, num_blocks=1, time_features=16)


def _gaussian():
    return torch.distributions.MultivariateNormal(torch.zeros(2), scale_tril=torch.tensor([[1.0, 0.0], [0.8, 0.6]]))


def _mixture():
    """½ N((−2, 0), 0.5² I) + ½ N((2, 0), 0.5² I)."""
    comp = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.full((2, 2), 0.5)), 1
    )
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(2)), comp)


class FreshSamples:
    """A BatchSource for the shared trainer: every training batch is a fresh draw from ``target`` (unlimited
    data, so the fit measures the model and the solver, not over-fitting); validation is one fixed draw."""

    def __init__(self, target, steps_per_epoch: int, num_validation: int = 4096) -> None:
        self.target, self.steps = target, steps_per_epoch
        with torch.random.fork_rng():
            torch.manual_seed(123)
            self.y_val = target.sample((num_validation,))
        self.num_train, self.num_validation = steps_per_epoch * 2048, num_validation

    def train_batches(self, batch_size, generator):
        for _ in range(self.steps):
            yield self.target.sample((batch_size,)), None

    def validation_batches(self, batch_size):
        for s in range(0, self.num_validation, batch_size):
            yield self.y_val[s: s + batch_size], None


def fit_unconditional(family: str, target, epochs: int = 20, steps_per_epoch: int = 50):
    """1,000 AdamW steps of 2,048 fresh rows, cosine learning rate from 3e-3, EMA of the weights."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        density = make_family(family, dict(hidden_features=64, num_blocks=2)).build((2,), None)
    config = TrainingConfig(batch_size=2048, learning_rate=3e-3, max_epochs=epochs, patience=epochs,
                            lr_schedule="cosine", ema_decay=0.99)
    train(density, FreshSamples(target, steps_per_epoch), config=config, seed=0, progress=False)
    return density


@pytest.fixture(scope="module")
def fitted():
    """The four fits of the accuracy tests, made once: {(family, target): density}."""
    targets = {"gaussian": _gaussian(), "mixture": _mixture()}
    return {(f, name): (fit_unconditional(f, t), t) for f in FAMILY_NAMES for name, t in targets.items()}


# Solver of the accuracy tests: RK4 on 20 uniform steps (80 network evaluations, each with 2 backward passes
# for the exact trace); test_rk4_and_dopri5_log_probs_agree checks it against dopri5 (rtol = atol = 1e-5).
SOLVER = dict(method="rk4", steps=20)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize(("target", "tolerance"), [("gaussian", 0.05), ("mixture", 0.1)])
def test_log_prob_matches_the_true_density(fitted, family, target, tolerance):
    density, dist = fitted[(family, target)]
    with torch.random.fork_rng():
        torch.manual_seed(7)
        y = dist.sample((1000,))
    logq = density.log_prob(y, None, **SOLVER)
    assert density.last_nfe == 80
    gap = (dist.log_prob(y) - logq).abs().mean().item()
    print(f"{family} {target}: mean |log p - log q| = {gap:.4f} nats")
    assert gap <= tolerance


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_rk4_and_dopri5_log_probs_agree(fitted, family):
    """On 100 draws of the target the fixed-step solver is within 0.02 nats of dopri5 on average (the RK4
    error grows in the tails, where trajectories bend most: ~0.08 nats at log p ≈ −5.6)."""
    density, dist = fitted[(family, "gaussian")]
    with torch.random.fork_rng():
        torch.manual_seed(9)
        y = dist.sample((100,))
    fixed = density.log_prob(y, None, **SOLVER)
    adaptive = density.log_prob(y, None, method="dopri5")
    assert density.last_nfe > 20
    assert (fixed - adaptive).abs().mean() < 0.02
    assert (dist.log_prob(y) - adaptive).abs().mean() < 0.05


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("target", ["gaussian", "mixture"])
def test_heun_samples_match_the_target(fitted, family, target):
    density, dist = fitted[(family, target)]
    samples = density.sample(2000, None, generator=torch.Generator().manual_seed(0))
    assert density.last_nfe == 50  # the default sampler: Heun, 25 steps
    with torch.random.fork_rng():
        torch.manual_seed(8)
        reference = dist.sample((2000,))
    score = c2st(samples, reference)
    print(f"{family} {target}: C2ST {score:.3f}")
    assert score <= 0.6


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_fresh_model_is_the_exact_flow_of_a_standard_normal(family):
    """Before training F = 0: the velocity (noise prediction) is the one of N(0, I) data, so log_prob is
    log N(y; 0, I) up to the solver (and, for the diffusion, its t_min / α₁ approximations)."""
    density = make_family(family, SMALL).build((3,), None)
    y = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * 1.5
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(y).sum(-1)
    tol = 1e-3 if family == "cnf" else 2e-2
    assert torch.allclose(density.log_prob(y, None), expected, atol=tol)
    samples = density.sample(4000, None, generator=torch.Generator().manual_seed(1))
    assert samples.mean(0).abs().max() < 0.1 and (samples.std(0) - 1).abs().max() < 0.06


def _perturbed(family, d, context=None, seed=0, steps=8):
    torch.manual_seed(seed)
    density = make_family(family, dict(SMALL, log_prob_method="rk4", log_prob_steps=steps)).build((d,), context)
    with torch.no_grad():
        for p in density.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return density


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_hutchinson_log_prob_is_unbiased_and_frozen_by_a_generator(family):
    """With a fixed-step solver the trajectory does not depend on the probes, so the Hutchinson log-density
    is unbiased for the exact-trace one: the mean over 100 seeds lies within 4 standard errors, row by row."""
    density = _perturbed(family, 4, context=2, steps=3)
    y, c = torch.randn(6, 4), torch.randn(6, 2)
    exact = density.log_prob(y, c, exact=True)
    draws = torch.stack([density.log_prob(y, c, exact=False, generator=torch.Generator().manual_seed(s))
                         for s in range(100)])
    se = draws.std(0) / math.sqrt(100)
    assert (draws.std(0) > 1e-4).all()
    assert ((draws.mean(0) - exact).abs() < 4 * se).all()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(density.log_prob(y, c, exact=False, generator=g1),
                       density.log_prob(y, c, exact=False, generator=g2))
    # above exact_trace_max_dim, Hutchinson is the default
    small = make_family(family, dict(SMALL, exact_trace_max_dim=2, log_prob_method="rk4", log_prob_steps=4))
    assert small.build((4,), 2).log_prob(y, c, generator=torch.Generator().manual_seed(0)).shape == (6,)


class _LinearField(CNF):
    """v(y, τ) = M y: log p(y) = log N(e^M y; 0, I) + tr M exactly; M's off-diagonal part is pure Hutchinson noise."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__(log_prob_method="rk4", log_prob_steps=8, exact_trace_max_dim=0)
        self.matrix = matrix

    def velocity(self, y, tau, c):
        return y @ self.matrix.T


def test_hutchinson_rows_get_independent_probes_unless_a_generator_freezes_them():
    """Without a generator each row has its own probes, so a mean over rows converges to the exact value;
    with one, every row shares the probes: identical rows get identical values, whatever the batch holds."""
    g = torch.Generator().manual_seed(0)
    d = 32
    matrix = 0.3 * torch.randn(d, d, generator=g) / math.sqrt(d)
    density = _LinearField(matrix).build((d,), None)
    y = torch.randn(1, d, generator=g).expand(400, d)
    exact = (-0.5 * (y @ torch.linalg.matrix_exp(matrix).T).pow(2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
             + torch.trace(matrix))
    independent = density.log_prob(y, None) - exact
    assert independent.std() > 0.05  # real Hutchinson noise
    assert independent.mean().abs() < 4 * independent.std() / math.sqrt(400)
    frozen = density.log_prob(y, None, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(frozen, frozen[0].expand(400))
    alone = density.log_prob(y[:1], None, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(alone, frozen[:1])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_conditional_shapes_nfe_and_generators(family):
    density = _perturbed(family, 3, context=2)
    c = torch.randn(4, 2)
    out = density.sample(5, c, generator=torch.Generator().manual_seed(0), steps=3)
    assert out.shape == (4, 5, 3) and density.last_nfe == 6
    again = density.sample(5, c, generator=torch.Generator().manual_seed(0), steps=3)
    assert torch.equal(out, again)
    assert density.sample(5, c, method="euler", steps=4).shape == (4, 5, 3) and density.last_nfe == 4
    assert density.sample(2, c, method="dopri5").shape == (4, 2, 3) and density.last_nfe > 6
    assert density.log_prob(torch.randn(4, 3), c).shape == (4,) and density.last_nfe == 32
    assert density.loss(torch.randn(8, 3), torch.randn(8, 2)).shape == ()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_bad_inputs_are_rejected_clearly(family):
    cls = FAMILIES[family]
    with pytest.raises(ValueError, match="ODE method must be one of"):
        cls(method="midpoint")
    with pytest.raises(ValueError, match="positive int"):
        cls(steps=0)
    with pytest.raises(RuntimeError, match="not built"):
        cls().sample(3, None)
    density = cls(**SMALL).build((3,), 2)
    with pytest.raises(ValueError, match=r"y must have shape \[n, 3\]"):
        density.log_prob(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"c must have shape \[4, 2\]"):
        density.log_prob(torch.zeros(4, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="needs a context c"):
        density.sample(3, None)
    with pytest.raises(ValueError, match="positive int"):
        density.sample(0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="models vectors"):
        cls(**SMALL).build((2, 3, 4, 5), None)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_config_rebuilds_the_family(family):
    density = make_family(family, dict(SMALL, steps=7, method="rk4"))
    rebuilt = type(density)(**density.config())
    assert rebuilt.config() == density.config()
    assert isinstance(density, CNF if family == "cnf" else Diffusion)


# ----------------------------------------------------------------- estimators end to end
@pytest.fixture(scope="module")
def conjugate_pairs(conjugate):
    return simgen.simulate(conjugate, conjugate.prior, 600, seed=3, progress=False)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_posterior_estimator_fits_samples_and_roundtrips(family, conjugate, conjugate_pairs, tmp_path):
    theta, x = conjugate_pairs
    post = simgen.PosteriorEstimator(conjugate.prior, make_family(family, SMALL))
    post.fit(theta, x, seed=0, progress=False, max_epochs=3)
    x_o = torch.tensor([0.5, -0.3])
    samples = post.sample(50, x_o, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (50, 2) and torch.isfinite(samples).all()
    logp = post.log_prob(samples[:5], x_o)
    assert logp.shape == (5,) and torch.isfinite(logp).all()
    path = tmp_path / "post.pt"
    post.save(path)
    loaded = simgen.load(path)
    assert type(loaded.density.density) is type(post.density.density)
    assert torch.allclose(loaded.log_prob(samples[:5], x_o), logp, atol=1e-5)
    assert torch.equal(loaded.sample(50, x_o, generator=torch.Generator().manual_seed(0)), samples)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_model_strings_build_the_families(family, two_moons):
    post = simgen.PosteriorEstimator(two_moons.prior, family)
    assert post.model_spec == family and isinstance(make_family(family), FAMILIES[family])


@pytest.mark.filterwarnings("ignore:MCMC may not have converged")  # 8 short chains: a shape test
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_likelihood_estimator_posterior_by_mcmc(family, conjugate, conjugate_pairs):
    theta, x = conjugate_pairs
    emu = simgen.LikelihoodEstimator(conjugate.prior, make_family(family, dict(SMALL, log_prob_method="rk4",
                                                                               log_prob_steps=6)))
    emu.fit(theta, x, seed=0, progress=False, max_epochs=3)
    mcmc = emu.posterior(num_chains=8, warmup=2, thin=1, num_init=200, progress=False)
    samples = mcmc.sample(16, torch.tensor([0.5, -0.3]), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (16, 2) and torch.isfinite(samples).all()


def _maps(n: int, seed: int):
    """θ ~ N(0, I₂); x = θ₁ · a horizontal ramp + θ₂ · a vertical ramp + 0.1 noise, on 16 × 16 pixels."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, 2, generator=g)
    ramp = torch.linspace(-1, 1, 16)
    pattern = torch.stack([ramp[None, :].expand(16, 16), ramp[:, None].expand(16, 16)])
    x = torch.einsum("nk,khw->nhw", theta, pattern) + 0.1 * torch.randn(n, 16, 16, generator=g)
    return theta, x


MAP_FAMILY = dict(channels=[8, 16], blocks_per_level=1, time_features=16, steps=3, log_prob_method="heun",
                  log_prob_steps=2)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_map_emulator_and_map_posterior_train_and_sample(family):
    theta, x = _maps(128, 0)
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    emu = simgen.LikelihoodEstimator(prior, make_family(family, MAP_FAMILY))
    # the network as built outputs zeros, whose divergence every probe count estimates exactly: the probe checks
    # below need one that has taken steps, not the initial state the trainer may return after one short epoch
    emu.fit(theta, x, seed=0, progress=False, max_epochs=1, batch_size=64, validate_initial=False)
    fake = emu.sample(3, theta[0], generator=torch.Generator().manual_seed(0))
    assert fake.shape == (3, 16, 16) and torch.isfinite(fake).all()
    assert emu.density.density.last_nfe == 6
    # D = 256 > 16: Hutchinson's estimate, frozen by the generator
    a = emu.log_prob(x[:4], theta[:4], generator=torch.Generator().manual_seed(1))
    b = emu.log_prob(x[:4], theta[:4], generator=torch.Generator().manual_seed(1))
    assert a.shape == (4,) and torch.isfinite(a).all() and torch.equal(a, b)
    post = simgen.PosteriorEstimator(prior, make_family(family, dict(SMALL, steps=3)))
    post.fit(theta, x, seed=0, progress=False, max_epochs=1, batch_size=64)
    samples = post.sample(7, x[0], generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 2) and torch.isfinite(samples).all()
    # the family's log_prob options pass through the estimators; log_prob_with_se's mean is log_prob's value
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    three = emu.log_prob(x[:4], theta[:4], generator=g(), num_probes=3)
    mean, se = emu.log_prob_with_se(x[:4], theta[:4], generator=g(), num_probes=3)
    assert not torch.equal(three, a) and torch.equal(mean, three) and (se > 0).all() and torch.isfinite(se).all()
    assert emu.log_prob_kind == post.log_prob_kind == "ode"
    # and the family's sampling options through sample / sample_batched
    assert post.sample(5, x[0], generator=g(), method="euler", steps=2).shape == (5, 2)
    assert post.density.density.last_nfe == 2
    exact, zero = post.log_prob_with_se(samples, x[0])  # D = 2: exact trace, no estimation error
    assert torch.equal(zero, torch.zeros(7)) and torch.allclose(exact, post.log_prob(samples, x[0]))
    hutchinson, se = post.log_prob_with_se(samples, x[0], generator=g(), exact=False, num_probes=4)
    assert hutchinson.shape == se.shape == (7,) and torch.isfinite(hutchinson).all() and (se >= 0).all()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_circular_map_models_give_torus_shifted_maps_the_same_log_prob(family):
    """With circular padding (the default) a map shifted on the torus by 2^L pixels (L = 1 downsampling here)
    has the same log p (exact trace); zero padding breaks the invariance."""
    logps = {}
    for mode in ("circular", "zeros"):
        torch.manual_seed(0)
        density = make_family(family, dict(channels=(8, 8), blocks_per_level=1, attention=True, time_features=8,
                                           log_prob_method="rk4", log_prob_steps=1, padding_mode=mode))
        density.build((4, 4), 2)
        with torch.no_grad():
            for p in density.parameters():
                p.add_(0.2 * torch.randn_like(p))
        y, c = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(1)), torch.randn(2, 2)
        shifted = torch.roll(y, (2, -2), dims=(-2, -1))
        logps[mode] = density.log_prob(torch.cat([y, shifted]), c.repeat(2, 1), exact=True)
    circular, zeros = logps["circular"], logps["zeros"]
    assert torch.allclose(circular[:2], circular[2:], atol=1e-3)
    assert not torch.allclose(zeros[:2], zeros[2:], atol=1e-2)
