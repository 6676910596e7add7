"""Mixed neural likelihood estimation (MNLE): x with declared discrete columns gets a categorical network over
them and a flow over the continuous ones, an exact likelihood (simgen.models.MixedDensity)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch.distributions import Independent, Uniform

import simgen
from simgen.models import Flow, MixedDensity

PRIOR = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
SMALL_FLOW = dict(transforms=2, hidden_features=16, num_blocks=1)


def simulate(theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x = (v, k, j): k ~ Binomial(3, θ₀), j ~ Binomial(1, θ₁) given k's parity (dependent discrete columns),
    v ~ N(θ₁ + 0.2 k, 0.1²)."""
    n = theta.shape[0]
    k = torch.bernoulli(theta[:, :1].expand(n, 3), generator=generator).sum(dim=1, keepdim=True)
    j = torch.bernoulli(torch.where(k % 2 == 0, theta[:, 1:], 1 - theta[:, 1:]), generator=generator)
    v = theta[:, 1:] + 0.2 * k + 0.1 * torch.randn(n, 1, generator=generator)
    return torch.cat([v, k, j], dim=1)


@functools.cache
def data(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(n, 2, generator=g)
    return theta, simulate(theta, g)


@functools.cache
def fitted(epochs: int = 3) -> simgen.LikelihoodEstimator:
    theta, x = data()
    emu = simgen.LikelihoodEstimator(PRIOR, Flow(**SMALL_FLOW), discrete=[1, 2])
    emu.fit(theta, x, seed=0, progress=False, max_epochs=epochs)
    return emu


def test_declared_discrete_columns_get_the_mixed_family_by_default() -> None:
    emu = fitted()
    family = emu.density.density
    assert isinstance(family, MixedDensity)
    assert family.discrete == (1, 2) and family.bounds == ((0, 3), (0, 1))
    assert family.flow_config["transforms"] == 2  # the given flow's settings, for the continuous column
    assert emu.density.dequantize is None
    # the discrete columns reach the family as the integers themselves
    assert torch.equal(emu.density.y_standardize.loc[1:], torch.zeros(2))
    assert torch.equal(emu.density.y_standardize.scale[1:], torch.ones(2))


def test_log_prob_sums_to_one_over_the_discrete_values_and_integrates_to_one_over_the_continuous_part() -> None:
    emu = fitted()
    theta = torch.tensor([0.3, 0.6])
    draws = emu.sample(2000, theta, generator=torch.Generator().manual_seed(1))
    lo, hi = draws[:, 0].min() - 1.0, draws[:, 0].max() + 1.0
    k = 4000
    h = (hi - lo) / k
    v = lo + h * (torch.arange(k) + 0.5)
    total = 0.0
    for a in range(4):
        for b in range(2):
            x = torch.stack([v, torch.full_like(v, a), torch.full_like(v, b)], dim=1)
            total += float(emu.log_prob(x, theta).double().exp().sum() * h)
    assert abs(total - 1) < 5e-3, f"Σ_d ∫ p(d, v | θ) dv = {total:.5f}"
    # values outside the training range, or not integers, have no mass
    outside = torch.tensor([[0.5, 4.0, 0.0], [0.5, 1.5, 0.0], [0.5, 1.0, -1.0]])
    assert torch.isneginf(emu.log_prob(outside, theta)).all()
    # draws are integers within the ranges
    assert torch.equal(draws[:, 1:], draws[:, 1:].round())
    assert draws[:, 1].min() >= 0 and draws[:, 1].max() <= 3 and set(draws[:, 2].tolist()) <= {0.0, 1.0}


def test_the_categorical_part_learns_the_binomial() -> None:
    theta, x = data()
    emu = simgen.LikelihoodEstimator(PRIOR, Flow(**SMALL_FLOW), discrete=[1, 2])
    emu.fit(theta, x, seed=0, progress=False, max_epochs=20)
    family = emu.density.density
    t = torch.tensor([[0.3, 0.6]])
    with torch.no_grad():
        c = emu.density.context(t.expand(4, 2))
        d = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
        p_k = (family.log_prob_discrete(d, c).exp() + family.log_prob_discrete(d + torch.tensor([0.0, 1.0]), c).exp())
    exact = torch.tensor([math.comb(3, a) * 0.3**a * 0.7 ** (3 - a) for a in range(4)])
    assert torch.allclose(p_k.double(), exact.double(), atol=0.05), (p_k, exact)


def test_save_load_round_trip(tmp_path) -> None:
    emu = fitted()
    path = tmp_path / "mnle.pt"
    emu.save(path)
    loaded = simgen.load(path, prior=PRIOR)
    theta, x = data()
    assert isinstance(loaded.density.density, MixedDensity)
    assert loaded.config()["discrete_model"] == "mnle"
    torch.testing.assert_close(loaded.log_prob(x[:50], theta[:50]), emu.log_prob(x[:50], theta[:50]))


def test_dequantisation_stays_available_and_saved_choices_survive_a_refit(tmp_path) -> None:
    theta, x = data()
    emu = simgen.LikelihoodEstimator(PRIOR, Flow(**SMALL_FLOW), discrete=[1, 2], discrete_model="dequantize")
    emu.fit(theta[:200], x[:200], seed=0, progress=False, max_epochs=1)
    assert isinstance(emu.density.density, Flow) and emu.density.dequantize.indices == (1, 2)
    emu.save(tmp_path / "deq.pt")
    loaded = simgen.load(tmp_path / "deq.pt", prior=PRIOR)
    assert loaded.discrete_model == "dequantize"
    loaded.fit(theta[:200], x[:200], seed=0, progress=False, max_epochs=1)
    assert isinstance(loaded.density.density, Flow)


def test_bad_discrete_columns_are_refused() -> None:
    theta, x = data()
    with pytest.raises(ValueError, match="non-integer"):
        simgen.LikelihoodEstimator(PRIOR, Flow(**SMALL_FLOW), discrete=[0]).fit(theta[:50], x[:50], progress=False,
                                                                                 max_epochs=1)
    with pytest.raises(ValueError, match="discrete_model must be one of"):
        simgen.LikelihoodEstimator(PRIOR, discrete=[1], discrete_model="categorical")
    with pytest.raises(ValueError, match="discrete_model='mnle' models vector x with a flow"):
        simgen.LikelihoodEstimator(PRIOR, "vae", discrete=[1], discrete_model="mnle").fit(
            theta[:50], x[:50], progress=False, max_epochs=1)


@pytest.mark.filterwarnings("ignore:MCMC may not have converged")  # 20 short chains: a smoke test
def test_mcmc_posterior_on_a_mixed_task_runs() -> None:
    emu = fitted()
    g = torch.Generator().manual_seed(3)
    x_obs = simulate(torch.tensor([[0.4, 0.5]]).expand(5, 2), g)  # five i.i.d. observations
    posterior = emu.posterior(num_chains=20, warmup=20, num_init=500, progress=False)
    draws = posterior.sample(200, x_obs, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (200, 2) and torch.isfinite(draws).all()
    assert torch.isfinite(PRIOR.log_prob(draws)).all()


def test_config_reaches_the_discrete_model() -> None:
    from simgen.config import ConfigError, parse_config

    config, _ = parse_config('simulator = "two_moons"\n[likelihood]\ndiscrete_model = "dequantize"\n')
    assert config.likelihood.discrete_model == "dequantize" and config.posterior.discrete_model is None
    with pytest.raises(ConfigError, match="'mnle'"):
        parse_config('simulator = "two_moons"\n[likelihood]\ndiscrete_model = "gumbel"\n')
    with pytest.raises(ConfigError, match="only \\[likelihood\\]"):
        parse_config('simulator = "two_moons"\n[posterior]\ndiscrete_model = "mnle"\n')


class _Counts:
    """The test simulator as an object that declares its discrete columns (as the demo simulators do)."""

    x_discrete = (1, 2)

    def __call__(self, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return simulate(theta, generator if generator is not None else torch.Generator().manual_seed(0))


@pytest.mark.parametrize("max_memory_gb", [None, 1e-9])  # in memory, and streamed chunk by chunk
def test_a_stores_declared_discrete_columns_get_the_mixed_family(tmp_path, max_memory_gb) -> None:
    store = tmp_path / "runs.h5"
    simgen.simulate(_Counts(), PRIOR, 300, seed=0, chunk_size=100, store=store, progress=False)
    emu = simgen.LikelihoodEstimator(PRIOR, Flow(**SMALL_FLOW))
    emu.fit(store, seed=0, progress=False, max_epochs=1, max_memory_gb=max_memory_gb)
    assert isinstance(emu.density.density, MixedDensity)
    assert emu.density.density.discrete == (1, 2) and emu.density.density.bounds == ((0, 3), (0, 1))
