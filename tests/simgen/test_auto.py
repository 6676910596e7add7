"""``model="auto"``: the estimators' default chooses the family from the data, says what it chose, and keeps it."""

from __future__ import annotations

import textwrap

import pytest
import torch
from sbi.utils import BoxUniform

import simgen
from simgen.config import ConfigError, parse_config
from simgen.estimators.auto import AUTO, Choice, choose
from simgen.models import Flow, MapFlow, MixedDensity

PRIOR = BoxUniform(torch.full((2,), 0.5), torch.full((2,), 1.5))


def pairs(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = 0.5 + torch.rand(n, 2, generator=g)  # PRIOR's box
    return theta, theta + 0.1 * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize(
    "direction, y_kind, x_kind, discrete, family, words",
    [
        ("likelihood", "map", "map", False, "mapflow", ["map flow"]),
        ("likelihood", "vector", "vector", False, "flow", ["spline flow", "MCMC"]),
        ("likelihood", "vector", "vector", True, "flow", ["MNLE"]),
        ("likelihood", "set", "set", False, "flow", ["a set"]),
        ("posterior", "vector", "map", False, "flow", ["a map x"]),
        ("posterior", "vector", "vector", False, "flow", ["posterior"]),
    ],
)
def test_choose_follows_the_kind_of_data(direction, y_kind, x_kind, discrete, family, words):
    choice = choose(direction, y_kind=y_kind, x_kind=x_kind, num_rows=5000, discrete=discrete)
    assert choice.model == family and choice.model in simgen.models.MODELS
    for w in words:
        assert w in choice.reason
    assert "5000 training pairs" in str(choice)
    assert Choice.from_dict(choice.to_dict()) == choice


def test_choose_refuses_what_it_cannot_choose_for():
    with pytest.raises(ValueError, match="'posterior' or a 'likelihood'.*'ratio'"):
        choose("ratio", y_kind="vector", x_kind="vector", num_rows=10)
    with pytest.raises(ValueError, match="at least one training row; got 0"):
        choose("posterior", y_kind="vector", x_kind="vector", num_rows=0)


def test_estimators_default_to_auto_and_record_the_choice(tmp_path):
    theta, x = pairs()
    post = simgen.PosteriorEstimator(PRIOR)
    emu = simgen.LikelihoodEstimator(PRIOR)
    assert post.requested_model == emu.requested_model == AUTO and post.choice is None
    for est, rows in ((post, (theta[:5], x[:5])), (emu, (x[:5], theta[:5]))):  # log_prob(y, context)
        est.fit(theta, x, seed=0, progress=False, max_epochs=2)
        assert est.choice is not None and est.choice.model == "flow"
        assert isinstance(est.density.density, Flow)
        est.save(tmp_path / "m.pt")
        loaded = simgen.load(tmp_path / "m.pt")
        assert loaded.choice == est.choice
        torch.testing.assert_close(loaded.log_prob(*rows), est.log_prob(*rows))
    # a named family builds exactly that family, and records no choice
    named = simgen.PosteriorEstimator(PRIOR, Flow(transforms=2, hidden_features=16))
    named.fit(theta, x, seed=0, progress=False, max_epochs=1)
    assert named.choice is None and named.density.density.transforms == 2


def test_auto_emulates_maps_with_the_map_flow_and_discrete_columns_with_mnle():
    theta, _ = pairs(64)
    maps = theta[:, :1, None] * torch.randn(64, 8, 8, generator=torch.Generator().manual_seed(1))
    emu = simgen.LikelihoodEstimator(PRIOR)
    emu.fit(theta, maps, seed=0, progress=False, max_epochs=1)
    assert emu.choice.model == "mapflow" and isinstance(emu.density.density, MapFlow)
    assert emu.training_defaults()["patience"] == MapFlow.training_defaults["patience"]

    theta, x = pairs(128)
    x = torch.cat([x, torch.bernoulli(theta[:, :1] - 0.5, generator=torch.Generator().manual_seed(2))], dim=1)
    mixed = simgen.LikelihoodEstimator(PRIOR, discrete=[2])
    mixed.fit(theta, x, seed=0, progress=False, max_epochs=1)
    assert isinstance(mixed.density.density, MixedDensity) and "MNLE" in mixed.choice.reason


def test_auto_choice_is_made_again_for_each_fit():
    theta, x = pairs(300)
    post = simgen.PosteriorEstimator(PRIOR)
    post.fit(theta[:100], x[:100], seed=0, progress=False, max_epochs=1)
    assert "100 training pairs" in post.choice.reason
    post.fit(theta, x, seed=0, progress=False, max_epochs=1)
    assert "300 training pairs" in post.choice.reason


def test_config_and_command_line_default_to_auto(tmp_path):
    config, _ = parse_config('simulator = "two_moons"\n')
    assert config.posterior.model == AUTO and config.likelihood.model == AUTO
    config, _ = parse_config(textwrap.dedent("""
        simulator = "two_moons"
        [posterior]
        model = "flow"
        options = { transforms = 3 }
        """))
    assert config.posterior.model == "flow" and config.posterior.options == {"transforms": 3}
    with pytest.raises(ConfigError, match="name a family") as e:
        parse_config('simulator = "two_moons"\n[likelihood]\noptions = { transforms = 3 }\n')
    assert e.value.key == "likelihood.options"
