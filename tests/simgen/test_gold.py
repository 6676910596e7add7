"""Mining gold (Brehmer et al. 2020): joint scores from ``simulate(..., gold=True)``, their store round trip, and
the estimators that train on them (SCANDAL, SALLY, the ratio estimator's score term)."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
from torch.distributions import Independent, Normal, Uniform

import simgen
import simulators
from simgen.campaign import chunk_seeds, joint_gold
from simgen.cli import main
from simgen.config import ConfigError, ModelConfig, parse_config
from simgen.estimators.gold import (
    DEFAULT_GOLD_WEIGHT,
    GOLD_START_MARGIN,
    GOLD_START_PATIENCE,
    SCORE_HUBER_DELTA,
    gold_training_defaults,
    score_term,
)

#: the parton-smeared collider simulated with gold: the head of the configurations below
COLLIDER_GOLD = """
[simulator]
name = "collider"
options = { level = "parton_smeared" }
[simulation]
gold = true
"""


def _simulate_collider(store, num: int, *options: str) -> int:
    """``simgen simulate`` of the parton-smeared collider into ``store``: its exit status."""
    return main(["simulate", "--simulator", "collider", "--option", "level=parton_smeared", "--num", str(num),
                 "--store", str(store), *options, "--quiet"])

SIGMA_Z, SIGMA_N = 1.0, 1.0


class LatentShift:
    """x = θ + z + ε, z ~ N(0, σ_z²), ε ~ N(0, σ_n²): the joint score is (x − θ − z)/σ_n², the marginal score
    (x − θ)/(σ_z² + σ_n²)."""

    x_shape = (1,)

    def __call__(self, theta, generator=None, return_latents=False):
        z = SIGMA_Z * torch.randn(theta.shape, generator=generator)
        x = theta + z + SIGMA_N * torch.randn(theta.shape, generator=generator)
        return (x, z) if return_latents else x

    def joint_log_prob(self, theta, x, z):
        log_z = Normal(0.0, SIGMA_Z).log_prob(z.double())
        return (log_z + Normal(theta + z.double(), SIGMA_N).log_prob(x.double())).sum(-1)


def box(low, high):
    return Independent(Uniform(torch.tensor(low), torch.tensor(high)), 1)


def test_joint_score_matches_finite_differences():
    sim = simulators.get("collider", level="parton_smeared")
    theta, x, gold = simgen.simulate(sim, sim.prior, 64, seed=3, chunk_size=64, progress=False, gold=True,
                                     gold_reference=torch.tensor([500.0, 20.0, 1.0]))
    # the chunk's latents, drawn again from its seeds
    theta_seed, sim_seed = chunk_seeds(3, 0)
    _, z = sim(theta, generator=torch.Generator().manual_seed(sim_seed), return_latents=True)
    t = theta.double()
    h = torch.tensor([1e-3, 1e-4, 1e-6], dtype=torch.float64)
    for j in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[j] = h[j]
        fd = (sim.joint_log_prob(t + step, x, z) - sim.joint_log_prob(t - step, x, z)) / (2 * h[j])
        assert torch.allclose(gold["joint_score"][:, j].double(), fd, rtol=1e-3, atol=1e-3 * fd.abs().max()), j
    ref = torch.tensor([[500.0, 20.0, 1.0]], dtype=torch.float64).expand(64, -1)
    expected = sim.joint_log_prob(t, x, z) - sim.joint_log_prob(ref, x, z)
    assert torch.allclose(gold["joint_log_ratio"][:, 0].double(), expected, rtol=1e-4, atol=1e-3)
    # collider_detector's joint score too, against its own joint_log_prob
    det = simulators.get("collider_detector")
    theta = det.prior.sample((200,))
    x, e = det(theta, generator=torch.Generator().manual_seed(0), return_latents=True)
    score = joint_gold(det, theta, x, e)["joint_score"].double()
    t = theta.double()
    for j, hj in ((0, 1e-4), (2, 1e-7)):
        step = torch.zeros(3, dtype=torch.float64)
        step[j] = hj
        fd = (det.joint_log_prob(t + step, x, e) - det.joint_log_prob(t - step, x, e)) / (2 * hj)
        assert torch.allclose(score[:, j], fd, rtol=1e-3, atol=1e-3), j


def test_average_joint_score_is_the_marginal_score():
    # E[t(x, z | θ) | x, θ] = ∂/∂θ log p(x | θ) = (x − θ)/(σ_z² + σ_n²): the least-squares line of t on x − θ
    theta, x, gold = simgen.simulate(LatentShift(), box([-1.0], [1.0]), 20_000, seed=0, progress=False, gold=True)
    r = (x - theta)[:, 0].double()
    t = gold["joint_score"][:, 0].double()
    slope = (r * t).sum() / (r * r).sum()
    assert slope.item() == pytest.approx(1 / (SIGMA_Z**2 + SIGMA_N**2), rel=0.03)
    # the residual is pure latent noise, uncorrelated with x: its mean is 0
    resid = t - slope * r
    assert abs(resid.mean().item()) < 4 * resid.std().item() / math.sqrt(len(t))


def test_gold_store_round_trip_and_resume(tmp_path):
    sim = simulators.get("collider", level="parton_smeared")
    path = tmp_path / "gold.h5"
    ref = sim.prior.sample((2,))
    theta, x, gold = simgen.simulate(sim, sim.prior, 300, seed=1, chunk_size=100, progress=False, gold=True,
                                     gold_reference=ref, store=path)
    store = simgen.open_store(path)
    assert store.has_gold and store.metadata["gold"]["fields"] == ["joint_score", "joint_log_ratio"]
    back = store.load_gold()
    assert set(back) == {"joint_score", "joint_log_ratio"}
    for name in back:
        assert torch.equal(back[name], gold[name])
    assert back["joint_log_ratio"].shape == (theta.shape[0], 2)
    # extending the campaign keeps the first rows and their gold; the data match a run without gold
    theta2, x2, gold2 = simgen.simulate(sim, sim.prior, 500, seed=1, chunk_size=100, progress=False, gold=True,
                                        gold_reference=ref, store=path)
    assert torch.equal(gold2["joint_score"][: theta.shape[0]], gold["joint_score"])
    plain_theta, plain_x = simgen.simulate(sim, sim.prior, 500, seed=1, chunk_size=100, progress=False)
    assert torch.equal(plain_x, x2) and torch.equal(plain_theta, theta2)
    # a campaign is simulated with gold or without it
    with pytest.raises(ValueError, match="different campaign: its gold"):
        simgen.simulate(sim, sim.prior, 500, seed=1, chunk_size=100, progress=False, store=path)
    plain = tmp_path / "plain.h5"
    simgen.simulate(sim, sim.prior, 100, seed=1, chunk_size=100, progress=False, store=plain)
    with pytest.raises(ValueError, match="without gold"):
        simgen.simulate(sim, sim.prior, 100, seed=1, chunk_size=100, progress=False, store=plain, gold=True)
    with pytest.raises(ValueError, match="holds no gold"):
        simgen.open_store(plain).load_gold()


def test_simulator_without_gold_is_refused():
    sim = simulators.get("two_moons")
    with pytest.raises(ValueError, match="joint_log_prob"):
        simgen.simulate(sim, sim.prior, 10, gold=True, progress=False)
    with pytest.raises(ValueError, match="goes with gold=True"):
        simgen.simulate(LatentShift(), box([-1.0], [1.0]), 10, gold_reference=[0.0], progress=False)


class ExactGaussian(torch.nn.Module):
    """An exact conditional density: y | c ~ N(a c, v) (per dimension); loss the NLL."""

    def __init__(self, a: float, v: float) -> None:
        super().__init__()
        self.a, self.v = a, v
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def log_prob(self, y, c):
        return Normal(self.a * c, math.sqrt(self.v)).log_prob(y).sum(-1) + 0 * self.dummy

    def loss(self, y, c):
        return -self.log_prob(y, c).mean()


def test_scandal_term_is_zero_for_the_exact_model():
    # x = θ + ε (no latents: the joint score is the score), θ ~ N(0, 1)
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    theta = prior.sample((500,))
    x = theta + torch.randn(500, 2)
    score = x - theta
    # likelihood direction: q(x | θ) = N(x; θ, 1), ∇_θ log q = x − θ
    emu = simgen.LikelihoodEstimator(prior, gold="score", gold_weight=3.0)
    objective = emu.gold_objective(ExactGaussian(1.0, 1.0), score).train()
    assert objective.score_loss(x, theta, score).item() == pytest.approx(0.0, abs=1e-10)
    with_gold = objective.loss(x, torch.cat([theta, score], 1))
    assert with_gold.item() == pytest.approx(objective.model.loss(x, theta).item(), abs=1e-6)
    # a wrong score costs in training; validation (eval mode) goes by the model's own loss
    wrong = torch.cat([theta, score + 1.0], 1)
    assert objective.loss(x, wrong).item() > objective.model.loss(x, theta).item() + 1.0
    assert objective.eval().loss(x, wrong).item() == pytest.approx(objective.model.loss(x, theta).item())
    # posterior direction: p(θ | x) = N(x/2, 1/2); the target is the score plus the prior's, x − 2θ
    post = simgen.PosteriorEstimator(prior, gold="score")
    objective = post.gold_objective(ExactGaussian(0.5, 0.5), score).train()
    assert objective.score_loss(theta, x, score).item() == pytest.approx(0.0, abs=1e-9)
    # ... and positive for a wrong model, through the estimator's own weighting
    assert objective.score_loss(theta, x, score + 1.0).item() > 0.1


def test_score_term_is_huber_past_delta():
    # standardised errors within δ count squared, beyond it linearly, with a gradient bounded by 2δ
    delta = SCORE_HUBER_DELTA
    target, scale = torch.zeros(4, 2), torch.tensor([1.0, 0.5])
    grad = torch.tensor([[1.0, 2.0], [-3.0, 0.0], [0.0, 4 * delta], [-100.0, 0.0]], requires_grad=True)
    errors = (grad * scale).detach()
    expected = torch.where(errors.abs() <= delta, errors.square(), 2 * delta * errors.abs() - delta**2)
    term = score_term(grad, target, scale)
    assert term.item() == pytest.approx(expected.sum(1).mean().item())
    assert score_term(grad[:2], target[:2], scale).item() == pytest.approx(errors[:2].square().sum(1).mean().item())
    assert score_term(grad, target, scale, delta=math.inf).item() == pytest.approx(errors.square().sum(1).mean().item())
    (g,) = torch.autograd.grad(term, grad)
    assert (g.abs() <= 2 * delta * scale / 4 + 1e-6).all()   # ∂/∂grad of the mean of 4 rows, ≤ 2δ·scale each
    assert g[3, 0].item() == pytest.approx(-2 * delta / 4)


def test_gold_fits_default_to_small_steps_restarts_and_start_patience():
    prior = box([0.0], [1.0])
    gold_defaults = simgen.LikelihoodEstimator(prior, "flow", gold="score").training_defaults()
    assert gold_defaults["restart_on_decay"] is True and gold_defaults["learning_rate"] <= 2e-3
    plain_defaults = simgen.LikelihoodEstimator(prior, "flow").training_defaults()
    # the start patience and margin are raised, the patience after the start is the family's
    assert (gold_defaults["start_patience"], gold_defaults["start_margin"]) == (GOLD_START_PATIENCE,
                                                                                GOLD_START_MARGIN)
    assert gold_defaults.get("patience", 10) == plain_defaults.get("patience", 10) < GOLD_START_PATIENCE
    assert not {"restart_on_decay", "start_patience", "start_margin"} & set(plain_defaults)
    # a longer patience than the gold floor is kept for the start too
    assert gold_training_defaults({"patience": 50}) == {**gold_training_defaults({}), "patience": 50,
                                                        "start_patience": 50}
    assert simgen.RatioEstimator(prior, "nre", gold="ratio+score").training_defaults()["restart_on_decay"] is True


def test_gold_estimators_fit_save_and_load(tmp_path):
    sim = simulators.get("collider", level="parton_smeared")
    path = tmp_path / "gold.h5"
    theta, x, gold = simgen.simulate(sim, sim.prior, 400, seed=0, chunk_size=200, progress=False, gold=True,
                                     store=path)
    settings = {"max_epochs": 2, "seed": 0, "progress": False}
    for est in (simgen.LikelihoodEstimator(sim.prior, gold="score", gold_weight=0.5),
                simgen.PosteriorEstimator(sim.prior, gold="score", gold_weight=0.5),
                simgen.RatioEstimator(sim.prior, gold="score", gold_weight=0.5)):
        history = est.fit(theta, x, gold=gold, **settings)
        assert math.isfinite(history.best_validation_loss)
        est.save(tmp_path / "est.pt")
        loaded = simgen.load(tmp_path / "est.pt")
        assert (loaded.gold, loaded.gold_weight) == ("score", 0.5)
    # from the store: in memory and streamed
    emu = simgen.LikelihoodEstimator(sim.prior, gold="score")
    assert math.isfinite(emu.fit(path, **settings).best_validation_loss)
    assert math.isfinite(emu.fit(path, max_memory_gb=1e-6, **settings).best_validation_loss)
    # refusals: a family without an exact log-density, gold on one side only, a store without gold
    with pytest.raises(ValueError, match="'cnf' family"):
        simgen.LikelihoodEstimator(sim.prior, model="cnf", gold="score")
    with pytest.raises(ValueError, match="gold must be None or one of"):
        simgen.PosteriorEstimator(sim.prior, gold="ratios")
    for cls in (simgen.PosteriorEstimator, simgen.LikelihoodEstimator):  # the ratio term is the ratio estimator's
        with pytest.raises(ValueError, match="implemented for simgen.RatioEstimator"):
            cls(sim.prior, gold="ratio+score")
    with pytest.raises(ValueError, match="built with gold=None"):
        simgen.LikelihoodEstimator(sim.prior).fit(theta, x, gold=gold, **settings)
    with pytest.raises(ValueError, match="fit it with its gold"):
        simgen.PosteriorEstimator(sim.prior, gold="score").fit(theta, x, **settings)
    plain = tmp_path / "plain.h5"
    simgen.simulate(sim, sim.prior, 100, seed=0, progress=False, store=plain)
    with pytest.raises(ValueError, match="holds no gold"):
        simgen.RatioEstimator(sim.prior, gold="score").fit(plain, **settings)


def test_sally_score_summary_learns_the_score_and_embeds(tmp_path):
    sim = LatentShift()
    theta = torch.zeros(4000, 1)  # θ_ref = 0
    x, z = sim(theta, generator=torch.Generator().manual_seed(0), return_latents=True)
    gold = joint_gold(sim, theta, x, z)
    summary = simgen.nets.ScoreSummary((1,), 1, hidden_features=32)
    summary.fit(x, gold, seed=0, progress=False, max_epochs=60)
    grid = torch.linspace(-2.0, 2.0, 9)[:, None]
    # the marginal score at θ_ref: x / (σ_z² + σ_n²)
    assert torch.allclose(summary(grid)[:, 0], grid[:, 0] / (SIGMA_Z**2 + SIGMA_N**2), atol=0.1)
    assert not any(p.requires_grad for p in summary.parameters())
    # an estimator's embedding, saved and rebuilt without code
    prior = box([-1.0], [1.0])
    theta, x = simgen.simulate(sim, prior, 300, seed=1, progress=False)
    post = simgen.PosteriorEstimator(prior, embedding=summary)
    post.fit(theta, x, seed=0, progress=False, max_epochs=2)
    post.save(tmp_path / "sally.pt")
    loaded = simgen.load(tmp_path / "sally.pt")
    assert isinstance(loaded.density.embedding, simgen.nets.ScoreSummary)
    assert torch.allclose(loaded.density.embedding(grid), summary(grid))


def test_gold_in_the_config_and_the_cli(tmp_path, capsys):
    text = COLLIDER_GOLD + textwrap.dedent("""
        [posterior]
        gold = "score"
        gold_weight = 0.1
        [ratio]
        gold = "score"
    """)
    config, _ = parse_config(text)
    assert config.gold and config.posterior.gold == "score" and config.posterior.gold_weight == 0.1
    assert config.ratio.gold == "score" and config.likelihood.gold is None
    assert config.ratio.gold_weight == ModelConfig(True, "flow").gold_weight == DEFAULT_GOLD_WEIGHT
    with pytest.raises(ConfigError, match="simulation.gold"):
        parse_config(text.replace('name = "collider"', 'name = "two_moons"').replace(
            'options = { level = "parton_smeared" }', ""))
    with pytest.raises(ConfigError, match="posterior.gold"):
        parse_config(text.replace("gold = true", "gold = false"))
    with pytest.raises(ConfigError, match="log_prob is 'ode'"):
        parse_config(text.replace('[posterior]\n', '[posterior]\nmodel = "cnf"\n'))
    # simulate --gold, then train on the store's gold
    store = tmp_path / "gold.h5"
    assert _simulate_collider(store, 300, "--gold") == 0
    assert simgen.open_store(store).has_gold
    out = tmp_path / "emu.pt"
    assert main(["train", "--store", str(store), "--out", str(out), "--direction", "likelihood", "--gold-weight",
                 "0.1", "--max-epochs", "2", "--quiet"]) == 0
    assert simgen.load(out).gold_weight == 0.1
    # the early-stopping settings reach the trainer (which refuses a start patience below 1)
    assert main(["train", "--store", str(store), "--out", str(out), "--direction", "likelihood", "--gold-weight",
                 "0.1", "--max-epochs", "1", "--patience", "5", "--start-patience", "0", "--quiet"]) != 0
    assert "start_patience must be >= 1" in capsys.readouterr().err
    plain = tmp_path / "plain.h5"
    assert _simulate_collider(plain, 100) == 0
    assert main(["train", "--store", str(plain), "--out", str(out), "--gold-weight", "0.1", "--quiet"]) == 2
    assert main(["simulate", "--simulator", "two_moons", "--num", "10", "--store", str(tmp_path / "m.h5"),
                 "--gold", "--quiet"]) == 2


class FlakyLatentShift(LatentShift):
    """LatentShift whose joint score is NaN for θ > 0.5 (no usable gold) and whose batch call raises when any
    θ < −0.8 (so the chunk is retried row by row, and those rows fail)."""

    def __call__(self, theta, generator=None, return_latents=False):
        if (theta < -0.8).any():
            raise RuntimeError("solver failed")
        return super().__call__(theta, generator=generator, return_latents=return_latents)

    def joint_log_prob(self, theta, x, z):
        log_p = super().joint_log_prob(theta, x, z)
        # θ times a constant that is NaN on those rows: their score is NaN, the others' untouched (a torch.where
        # over a NaN branch would make every row's gradient NaN)
        nan_rows = torch.where(theta > 0.5, math.nan, 0.0).to(log_p)
        return log_p + (theta * nan_rows).sum(-1)


@pytest.mark.parametrize("low", [-0.5, -1.0])  # one batch call per chunk / row-by-row retries
def test_rows_without_usable_gold_are_failures(low):
    """A row whose joint score is NaN is set aside as a failure (never kept with NaN gold), whether the chunk was
    simulated in one call or retried row by row."""
    prior = box([low], [1.0])
    with pytest.warns(RuntimeWarning, match="NonFiniteGold"):
        theta, x, gold = simgen.simulate(FlakyLatentShift(), prior, 200, seed=0, chunk_size=50, progress=False,
                                         gold=True)
    assert (theta <= 0.5).all() and (theta >= -0.8).all()
    assert torch.isfinite(x).all() and torch.isfinite(gold["joint_score"]).all()
    assert len(theta) == len(x) == len(gold["joint_score"]) > 50


# ----------------------------------------------------------------- the ratio term (RASCAL / ALICES)
class ExactLogLikelihood(torch.nn.Module):
    """A ratio 'classifier' whose logit is the exact log p(x | θ) of LatentShift plus an arbitrary c(x) (as NRE-B's
    may carry): f(θ_ref, x) − f(θ, x) is the exact log ratio whatever c(x)."""

    def __init__(self, sd: float) -> None:
        super().__init__()
        self.sd = sd
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def features(self, x):
        return x

    def logits(self, theta, h):
        c = 3.0 * torch.sin(h[:, 0]) + self.dummy  # c(x)
        if theta.dim() == 3:
            return Normal(theta[..., 0], self.sd).log_prob(h) + c[:, None]
        return Normal(theta[:, 0], self.sd).log_prob(h[:, 0]) + c


def test_ratio_term_is_minimal_at_the_exact_log_ratio():
    # x = θ + z + ε: log p(x | θ_ref)/p(x | θ) in closed form; e^{−L} is an unbiased but noisy observation of it
    sd = math.sqrt(SIGMA_Z**2 + SIGMA_N**2)
    ref = torch.tensor([[-0.5], [0.0], [1.0]])
    theta, x, gold = simgen.simulate(LatentShift(), box([-1.0], [1.0]), 20_000, seed=0, progress=False, gold=True,
                                     gold_reference=ref)
    log_ratio = gold["joint_log_ratio"]
    exact = (Normal(ref.T, sd).log_prob(x) - Normal(theta, sd).log_prob(x)).double()
    term = simgen.estimators.gold.ratio_term
    at_exact = term(exact, log_ratio.double()).item()
    for wrong in (exact + 0.2, exact - 0.2, 1.3 * exact, 0.7 * exact):
        assert term(wrong, log_ratio.double()).item() > at_exact + 1e-3
    # the gradient in g, σ(g) − s σ(−g), averages to zero at the exact log ratio (not at a shifted one)
    s = (-log_ratio.double()).exp()
    grad = torch.sigmoid(exact) - s * torch.sigmoid(-exact)
    se = grad.std() / math.sqrt(grad.numel())
    assert abs(grad.mean().item()) < 4 * se.item()
    shifted = torch.sigmoid(exact + 0.2) - s * torch.sigmoid(-exact - 0.2)
    assert shifted.mean().item() > 10 * se.item()
    # the objective the estimator trains compares f(θ_ref, x) − f(θ, x): c(x) cancels
    est = simgen.RatioEstimator(box([-1.0], [1.0]), gold="ratio+score", gold_weight=1.0)
    columns, reference = est.check_gold_fit(gold, theta, ref)
    assert columns.shape == (20_000, 1 + 3) and torch.equal(columns[:, 1:], log_ratio)
    objective = est.gold_objective(ExactLogLikelihood(sd), columns, theta, reference).train()
    assert objective.ratio_loss(theta, x, log_ratio).item() == pytest.approx(at_exact, rel=1e-4)
    # without latents (L is the exact log ratio) the term is zero at the exact model
    assert term(exact, -exact).item() == pytest.approx(0.0, abs=1e-6)


class SharpLatentShift(LatentShift):
    """LatentShift with a small latent (σ_z = 0.3): its gold is informative."""

    SZ = 0.3

    def __call__(self, theta, generator=None, return_latents=False):
        z = self.SZ * torch.randn(theta.shape, generator=generator)
        x = theta + z + SIGMA_N * torch.randn(theta.shape, generator=generator)
        return (x, z) if return_latents else x

    def joint_log_prob(self, theta, x, z):
        log_z = Normal(0.0, self.SZ).log_prob(z.double())
        return (log_z + Normal(theta + z.double(), SIGMA_N).log_prob(x.double())).sum(-1)


def test_ratio_term_recovers_the_log_ratio_with_fewer_simulations():
    prior, ref = box([-2.0], [2.0]), torch.tensor([[-1.0], [0.0], [1.0]])
    theta, x, gold = simgen.simulate(SharpLatentShift(), prior, 500, seed=1, progress=False, gold=True,
                                     gold_reference=ref)
    sd = math.sqrt(SharpLatentShift.SZ**2 + SIGMA_N**2)
    grid = torch.linspace(-1.8, 1.8, 400)[:, None]
    x_grid = grid + sd * torch.randn(400, 1, generator=torch.Generator().manual_seed(5))
    exact = Normal(ref.T, sd).log_prob(x_grid) - Normal(grid, sd).log_prob(x_grid)
    errors = {}
    for mode in (None, "ratio"):
        est = simgen.RatioEstimator(prior, gold=mode, gold_weight=1.0)
        est.fit(theta, x, gold=gold if mode else None, gold_reference=ref if mode else None, seed=1, progress=False,
                max_epochs=200)
        with torch.no_grad():
            g = est.gold_log_ratio(est.density, grid, x_grid, ref)
        errors[mode] = (g - exact).square().mean().sqrt().item()
    assert errors["ratio"] < errors[None], errors


def test_ratio_gold_errors_store_and_save_load(tmp_path):
    sim = simulators.get("collider", level="parton_smeared")
    path = tmp_path / "gold.h5"
    ref = torch.tensor([[500.0, 20.0, 1.0], [480.0, 30.0, 1.02]])
    theta, x, gold = simgen.simulate(sim, sim.prior, 400, seed=0, chunk_size=200, progress=False, gold=True,
                                     gold_reference=ref, store=path)
    settings = {"max_epochs": 2, "seed": 0, "progress": False}
    for mode in ("ratio", "ratio+score"):
        est = simgen.RatioEstimator(sim.prior, "nre_b", gold=mode, gold_weight=0.5)
        assert math.isfinite(est.fit(theta, x, gold=gold, gold_reference=ref, **settings).best_validation_loss)
        est.save(tmp_path / "nre.pt")
        assert (simgen.load(tmp_path / "nre.pt").gold, simgen.load(tmp_path / "nre.pt").gold_weight) == (mode, 0.5)
        # from the store, which records its references: in memory and streamed
        assert math.isfinite(est.fit(path, **settings).best_validation_loss)
        assert math.isfinite(est.fit(path, max_memory_gb=1e-6, **settings).best_validation_loss)
    est = simgen.RatioEstimator(sim.prior, gold="ratio")
    with pytest.raises(ValueError, match="must hold 'joint_log_ratio'"):
        est.fit(theta, x, gold={"joint_score": gold["joint_score"]}, gold_reference=ref, **settings)
    with pytest.raises(ValueError, match="needs the references"):
        est.fit(theta, x, gold=gold, **settings)
    with pytest.raises(ValueError, match=r"shape \[n, k\]"):
        est.fit(theta, x, gold=gold, gold_reference=ref[:1], **settings)
    with pytest.raises(ValueError, match="NaN or −inf"):
        est.fit(theta, x, gold={**gold, "joint_log_ratio": gold["joint_log_ratio"] * math.nan},
                gold_reference=ref, **settings)
    with pytest.raises(ValueError, match="reads the store's own gold"):
        est.fit(path, gold=gold, **settings)
    score_only = tmp_path / "score.h5"
    simgen.simulate(sim, sim.prior, 100, seed=0, progress=False, gold=True, store=score_only)
    with pytest.raises(ValueError, match="holds no joint log ratio"):
        est.fit(score_only, **settings)
    # the score term alone still trains on a store with references
    assert math.isfinite(simgen.RatioEstimator(sim.prior, gold="score").fit(path, **settings).best_validation_loss)


def test_ratio_gold_in_the_config_and_the_cli(tmp_path):
    text = COLLIDER_GOLD + textwrap.dedent("""
        gold_reference = [[500.0, 20.0, 1.0]]
        [ratio]
        gold = "ratio+score"
        gold_weight = 0.5
    """)
    config, _ = parse_config(text)
    assert config.gold_reference == [[500.0, 20.0, 1.0]]
    assert (config.ratio.gold, config.ratio.gold_weight) == ("ratio+score", 0.5)
    with pytest.raises(ConfigError, match="ratio.gold"):
        parse_config(text.replace("gold_reference = [[500.0, 20.0, 1.0]]\n", ""))
    with pytest.raises(ConfigError, match="simulation.gold_reference"):
        parse_config(text.replace("[[500.0, 20.0, 1.0]]", "[[500.0, 20.0]]"))
    with pytest.raises(ConfigError, match="posterior.gold"):
        parse_config(text + '[posterior]\ngold = "ratio"\n')
    store = tmp_path / "gold.h5"
    assert _simulate_collider(store, 300, "--gold", "--gold-reference", "[[500.0, 20.0, 1.0]]") == 0
    assert simgen.open_store(store).metadata["gold"]["reference"] == [[500.0, 20.0, 1.0]]
    out = tmp_path / "nre.pt"
    assert main(["train", "--store", str(store), "--out", str(out), "--direction", "ratio", "--gold", "ratio",
                 "--gold-weight", "0.3", "--max-epochs", "2", "--quiet"]) == 0
    assert (simgen.load(out).gold, simgen.load(out).gold_weight) == ("ratio", 0.3)
    assert main(["train", "--store", str(store), "--out", str(out), "--direction", "likelihood", "--gold", "ratio",
                 "--quiet"]) == 2
    score_only = tmp_path / "score.h5"
    assert _simulate_collider(score_only, 100, "--gold") == 0
    assert main(["train", "--store", str(score_only), "--out", str(out), "--direction", "ratio", "--gold",
                 "ratio", "--quiet"]) == 2
    assert _simulate_collider(tmp_path / "r.h5", 10, "--gold-reference", "[[500.0, 20.0, 1.0]]") == 2
