"""The all-in-one family (``model="simformer"``) and ``JointEstimator``: masks, token symmetry, shapes, saving,
and a posterior against an analytic one. (The family's ConditionalDensity contract is in test_contract.py.)"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, Uniform

import simgen
from simgen.diagnostics import c2st
from simgen.models import Simformer

SMALL = dict(hidden_features=16, num_blocks=1, num_heads=2, time_features=8, steps=4)


def randomised(family: Simformer, seed: int = 0) -> Simformer:
    """The family with every weight redrawn (a fresh head is zero, which would make any symmetry trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in family.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return family.eval()


def test_observed_tokens_have_zero_velocity_and_masks_keep_one_latent() -> None:
    family = randomised(Simformer(**SMALL).build((2,), 3))
    z, tau = torch.randn(5, 5), torch.rand(5)
    observed = torch.tensor([True, False, False, True, False])
    v = family.joint_velocity(z, tau, observed)
    assert (v[:, observed] == 0).all() and (v[:, ~observed] != 0).all()
    masks = family.draw_masks(1000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert not masks.all(dim=1).any()
    kinds = {tuple(m.tolist()) for m in masks}
    assert (False,) * 5 in kinds and (False, False, True, True, True) in kinds and (True, True, False, False, False) \
        in kinds


def test_attention_mask_cuts_the_dependencies_it_leaves_out() -> None:
    """With token 0 allowed to attend only to itself, its output ignores every other token's value."""
    allowed = torch.ones(4, 4, dtype=torch.bool)
    allowed[0, 1:] = False
    family = randomised(Simformer(**SMALL, attention_mask=allowed.tolist()).build((2,), 2))
    z, tau, observed = torch.randn(3, 4), torch.rand(3), torch.zeros(4, dtype=torch.bool)
    moved = z.clone()
    moved[:, 1:] += 1.0
    v, w = family.joint_velocity(z, tau, observed), family.joint_velocity(moved, tau, observed)
    torch.testing.assert_close(v[:, 0], w[:, 0])
    assert not torch.allclose(v[:, 1], w[:, 1])
    with pytest.raises(ValueError, match="attention_mask"):
        Simformer(**SMALL, attention_mask=allowed.tolist()).build((2,), 3)


def test_permuting_data_tokens_with_their_identities_leaves_log_prob_unchanged() -> None:
    family = randomised(Simformer(**SMALL, log_prob_method="rk4", log_prob_steps=8).build((2,), 3))
    g = torch.Generator().manual_seed(1)
    y, c = torch.randn(6, 2, generator=g), torch.randn(6, 3, generator=g)
    before = family.log_prob(y, c)
    perm = torch.tensor([2, 0, 1])
    assert not torch.allclose(family.log_prob(y, c[:, perm]), before, atol=1e-3)  # the test has teeth
    with torch.no_grad():
        family.net.identity[2:] = family.net.identity[2:][perm].clone()
    torch.testing.assert_close(family.log_prob(y, c[:, perm]), before, atol=1e-5, rtol=1e-5)


def _fitted_joint(seed: int = 0) -> simgen.JointEstimator:
    g = torch.Generator().manual_seed(seed)
    prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)
    theta = 2 * torch.rand(200, 2, generator=g) - 1
    x = torch.cat([theta + 0.3 * torch.randn(200, 2, generator=g), theta[:, :1] ** 2], dim=1)
    est = simgen.JointEstimator(prior, Simformer(**SMALL, log_prob_method="rk4", log_prob_steps=4))
    est.fit(theta, x, max_epochs=2, seed=seed, progress=False)
    return est


@pytest.fixture(scope="module")
def joint() -> simgen.JointEstimator:
    return _fitted_joint()


def test_joint_sampler_never_changes_observed_tokens_and_shapes(joint: simgen.JointEstimator) -> None:
    nan = float("nan")
    mask = torch.tensor([True, False, False, True, False])  # θ₀ and x₁ observed
    values = torch.tensor([0.3, nan, nan, -0.2, nan])
    draws = joint.sample(50, mask, values, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (50, 5) and torch.isfinite(draws).all()
    assert (draws[:, 0] == 0.3).all() and (draws[:, 3] == -0.2).all()
    assert draws[:, 1].std() > 0 and (draws[:, 1].abs() < 1).all()  # a generated θ stays in the prior's box
    rows = torch.stack([values, values.nan_to_num(0.5)])
    assert joint.sample(4, mask, rows).shape == (2, 4, 5)
    assert joint.sample(3, torch.zeros(5, dtype=torch.bool)).shape == (3, 5)
    logp = joint.log_prob(draws[:7], mask)
    assert logp.shape == (7,) and torch.isfinite(logp).all()
    same = torch.Generator().manual_seed(4)
    torch.testing.assert_close(joint.sample(5, mask, values, generator=same),
                               joint.sample(5, mask, values, generator=torch.Generator().manual_seed(4)))


@pytest.mark.parametrize(("mask", "message"), [
    (torch.tensor([1, 0, 0, 1, 0]), "booleans"),
    (torch.zeros(4, dtype=torch.bool), "shape \\[5\\]"),
    (torch.ones(5, dtype=torch.bool), "every token"),
])
def test_bad_condition_masks_are_refused(joint: simgen.JointEstimator, mask: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        joint.sample(2, mask, torch.zeros(5))
    with pytest.raises(ValueError, match=message):
        joint.log_prob(torch.zeros(3, 5), mask)


def test_bad_values_are_refused(joint: simgen.JointEstimator) -> None:
    mask = torch.tensor([True, False, False, False, False])
    with pytest.raises(ValueError, match="non-finite observed"):
        joint.sample(2, mask, torch.full((5,), float("nan")))
    with pytest.raises(ValueError, match="outside the prior"):
        joint.sample(2, mask, torch.tensor([3.0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="shape"):
        joint.sample(2, mask, torch.zeros(4))
    with pytest.raises(ValueError, match="values are needed"):
        joint.sample(2, mask)


def test_joint_log_prob_of_the_posterior_is_the_family_density(joint: simgen.JointEstimator) -> None:
    """The posterior conditional through the token maps equals the estimator's density p(θ | x) (the maps
    around the family, as the other estimators apply them)."""
    rows = joint.sample(5, torch.zeros(5, dtype=torch.bool), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([False, False, True, True, True])
    with torch.no_grad():
        expected = joint.density.log_prob(rows[:, :2], rows[:, 2:])
    torch.testing.assert_close(joint.log_prob(rows, mask), expected, atol=1e-4, rtol=1e-4)
    outside = rows.clone()
    outside[0, 1] = 2.0
    assert joint.log_prob(outside, mask)[0] == -torch.inf


def test_joint_save_load_round_trip(joint: simgen.JointEstimator, tmp_path) -> None:
    path = tmp_path / "joint.pt"
    joint.save(path)
    loaded = simgen.load(path)
    assert isinstance(loaded, simgen.JointEstimator) and loaded.family.config() == joint.family.config()
    mask = torch.tensor([False, False, True, True, True])
    rows = joint.sample(6, torch.zeros(5, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.log_prob(rows, mask), joint.log_prob(rows, mask))
    values = rows[0]
    torch.testing.assert_close(loaded.sample(4, mask, values, generator=torch.Generator().manual_seed(2)),
                               joint.sample(4, mask, values, generator=torch.Generator().manual_seed(2)))


def test_posterior_of_a_linear_gaussian_model_matches_the_analytic_one() -> None:
    """θ ~ N(0, I₂), x = θ + σ ε: p(θ | x) = N(x / (1 + σ²), σ² / (1 + σ²) I), sampled from the joint model."""
    torch.manual_seed(0)
    sigma, n = 0.5, 3000
    prior = MultivariateNormal(torch.zeros(2), torch.eye(2))
    theta = prior.sample((n,))
    x = theta + sigma * torch.randn(n, 2)
    est = simgen.JointEstimator(prior, Simformer(hidden_features=32, num_blocks=2, num_heads=2, time_features=16,
                                                 steps=10))
    est.fit(theta, x, seed=0, progress=False, max_epochs=100)
    x_obs = torch.tensor([0.8, -0.5])
    mask = torch.tensor([False, False, True, True])
    draws = est.sample(1000, mask, torch.cat([torch.zeros(2), x_obs]), generator=torch.Generator().manual_seed(0))
    posterior = Independent(Normal(x_obs / (1 + sigma**2), (sigma**2 / (1 + sigma**2)) ** 0.5 * torch.ones(2)), 1)
    assert c2st(draws[:, :2], posterior.sample((1000,))) <= 0.6
    # the ODE's log-density of the same conditional: on average not above the exact one (it is a density), and
    # close to it
    reference = posterior.sample((200,))
    gap = posterior.log_prob(reference).mean() - est.log_prob(torch.cat([reference, x_obs.expand(200, 2)], 1),
                                                                 mask).mean()
    assert -0.05 <= gap <= 0.3


# ------------------------------------------------------------------------------------------ config and CLI
def test_joint_table_is_read_and_checked() -> None:
    from simgen.config import ConfigError, parse_config

    config, _ = parse_config('simulator = "two_moons"\n[joint]\noptions = { hidden_features = 32 }\n'
                             'training = { max_epochs = 5 }\n', build_simulator=False)
    assert config.joint.enabled and config.joint.model == "simformer" and config.joint.options == {
        "hidden_features": 32}
    assert config.joint.training["max_epochs"] == 5
    default, _ = parse_config('simulator = "two_moons"\n', build_simulator=False)
    assert not default.joint.enabled
    for text, key in (('model = "flow"', "joint.model"), ("options = { num_heads = 3 }", "joint.options"),
                      ("embedding = 'auto'", "joint.embedding"), ("training = { max_epochs = 0 }", "joint.training")):
        with pytest.raises(ConfigError) as err:
            parse_config(f'simulator = "two_moons"\n[joint]\n{text}\n', build_simulator=False)
        assert err.value.key == key, text


def test_run_train_and_sample_a_joint_estimator(tmp_path) -> None:
    import json
    import textwrap

    from simgen.cli import main

    config = tmp_path / "gl.toml"
    config.write_text(textwrap.dedent("""
        budget = "tiny"
        [simulator]
        name = "gaussian_linear"
        options = { dim = 2 }
        [posterior]
        enabled = false
        [joint]
        options = { hidden_features = 16, num_blocks = 1, num_heads = 2, time_features = 8, steps = 4 }
        training = { max_epochs = 2 }
        [observations]
        theta = [[0.2, -0.3]]
        [evaluation]
        calibration = 0
        [output]
        dir = "results"
    """))
    assert main(["run", str(config), "--threads", "1", "--quiet"]) == 0
    out = tmp_path / "results"
    row = json.loads((out / "summary.json").read_text())["observations_results"][0]
    assert 0.0 <= row["joint_c2st"] <= 1.0  # a tiny run: only that it ran
    assert isinstance(simgen.load(out / "joint.pt"), simgen.JointEstimator)
    model = tmp_path / "joint.pt"
    assert main(["train", "--store", str(out / "store.h5"), "--out", str(model), "--direction", "joint",
                 "--max-epochs", "1", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--store", str(out / "store.h5"), "--out", str(model), "--direction", "joint",
                 "--model", "flow", "--quiet"]) == 2
    samples = tmp_path / "s.pt"
    assert main(["sample", "--model", str(model), "--x", "[[0.1, 0.2]]", "--num", "40", "--out", str(samples),
                 "--quiet"]) == 0
    assert torch.load(samples).shape == (1, 40, 2)
    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--simulator", "gaussian_linear", "--option", "dim=2",
                 "--num-observations", "1", "--num-samples", "50", "--out", str(evaluation), "--threads", "1",
                 "--quiet"]) == 0
    assert 0.0 <= json.loads((evaluation / "evaluation.json").read_text())["mean_c2st"] <= 1.0
