"""The contract every registered model family keeps, in both directions and for every kind of data.

One case is a family (from the registry, so a new family joins by being registered) × a direction
(``PosteriorEstimator`` models y = θ given c = x; ``LikelihoodEstimator`` models y = x given c = θ) × a data kind
(x a vector, a map ``[1, 8, 8]`` or ``[8, 8]``, or a masked set ``[6, 3]``). Each case is fitted once per module
for two epochs of a tiny network: the contract is about the interface, not about accuracy, and holds for any
weights. A family declares the kinds of y it models (``ConditionalDensity.data_kinds``; MapFlow models maps
only): for a case outside them, ``fit`` must refuse the data with a ``ValueError``, and the other checks skip.
Per case:

- shapes: ``log_prob`` ``[n]`` (a single row of either argument broadcast), ``sample`` ``[n, *y_shape]``,
  ``sample_batched`` ``[m, n, *y_shape]``, all finite; posterior draws inside the prior's support;
- determinism under ``generator=``: the same seed gives the same draws and the same (possibly stochastic)
  ``log_prob``, and a row's ``log_prob`` does not depend on the other rows of its batch (what a frozen MCMC
  target needs);
- a save/load round trip through ``simgen.load`` gives the same ``log_prob`` and draws;
- bad input (wrong shapes, NaN, mismatched or empty rows, a bad sample count) raises ``ValueError`` naming the
  argument;
- for vector data (two pixels for a family of maps), ∫ exp(log_prob) = 1 over a 2-D grid (midpoint rule).
  Without a generator, every grid point of a stochastic ``log_prob`` gets its own draws; an importance-weighted
  estimate p̂ (a VAE's IWAE) is unbiased for p, so the quadrature sum averages its noise out, whereas one
  generator shared by all points would put the same draws' error into every point.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.distributions import Independent, Uniform

import simgen
import simgen.models
from simgen import LikelihoodEstimator, PosteriorEstimator

REGISTRY = getattr(simgen.models, "MODELS", None) or simgen.models.FAMILIES

#: constructor settings that make a family tiny and its sampler/ODE cheap; a family not listed runs with its
#: defaults (slower, but it must keep the contract all the same)
SMALL: dict[str, dict[str, Any]] = {
    "flow": dict(transforms=2, hidden_features=16, num_blocks=1),
    "vae": dict(hidden_features=16, num_blocks=1, channels=(4, 8), iwae_samples=32),
    "cnf": dict(hidden_features=16, num_blocks=1, time_features=8, channels=(4, 8), blocks_per_level=1,
                attention=False, steps=4, log_prob_method="rk4", log_prob_steps=2, colouring_period=2),
    "diffusion": dict(hidden_features=16, num_blocks=1, time_features=8, channels=(4, 8), blocks_per_level=1,
                      attention=False, steps=4, log_prob_method="rk4", log_prob_steps=2, colouring_period=2),
    "simformer": dict(hidden_features=16, num_blocks=1, num_heads=2, time_features=8, steps=4, log_prob_method="rk4",
                      log_prob_steps=2),
    "mapflow": dict(blocks=1, hidden_features=16, num_bins=4),
    "mnle": dict(flow=dict(transforms=2, hidden_features=16, num_blocks=1), hidden_features=16, num_blocks=1),
}

DIRECTIONS: dict[str, type] = {"posterior": PosteriorEstimator, "likelihood": LikelihoodEstimator}

#: data kind -> (x_kind, shape of one x row)
KINDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "vector": ("vector", (2,)),
    "map-chw": ("map", (1, 8, 8)),
    "map-hw": ("map", (8, 8)),
    "set": ("set", (6, 3)),
}
#: the normalisation test's y: a 2-vector, or for a family that models maps only, a map of two pixels
TWO_D = {"vector": ("vector", (2,)), "pixels-hw": ("map", (1, 2)), "pixels-chw": ("map", (1, 1, 2))}

NUM_ROWS = 128
D_THETA = 2
PRIOR = Independent(Uniform(-torch.ones(D_THETA), torch.ones(D_THETA)), 1)


def make_family(name: str) -> Any:
    return REGISTRY[name](**SMALL.get(name, {}))


def refusal(family: str, direction: str, kind: str) -> str | None:
    """``None`` when the family models this case's y, else why not: a family declares the kinds of data it
    models in ``ConditionalDensity.data_kinds`` (θ is a vector; x is of its data kind)."""
    y_kind = "vector" if direction == "posterior" else {**KINDS, **TWO_D}[kind][0]
    kinds = REGISTRY[family].data_kinds
    return None if y_kind in kinds else f"models y of kind {sorted(kinds)}"


def simulate(kind: str, theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A small simulator of each kind whose x depends on both parameters."""
    n = theta.shape[0]
    if kind in TWO_D:
        x = theta @ torch.tensor([[1.0, 0.5], [0.0, 1.0]]) + 0.3 * torch.randn(n, 2, generator=generator)
        return x.reshape(n, *TWO_D[kind][1])
    if kind in ("map-chw", "map-hw"):
        u = torch.linspace(0, math.pi, 8)
        pattern = theta[:, 0, None, None] * torch.cos(u)[:, None] + theta[:, 1, None, None] * torch.sin(u)[None, :]
        x = pattern + 0.3 * torch.randn(n, 8, 8, generator=generator)
        return x[:, None] if kind == "map-chw" else x
    if kind == "set":  # up to six points around θ, zero-padded, the last channel the 0/1 mask
        points = theta[:, None, :] + 0.3 * torch.randn(n, 6, 2, generator=generator)
        mask = (torch.arange(6)[None, :] < torch.randint(1, 7, (n, 1), generator=generator)).float()[..., None]
        return torch.cat([points * mask, mask], dim=-1)
    raise AssertionError(kind)


class Case:
    """A fitted estimator with its rows split into what it models (y) and what it conditions on (c); not
    fitted when the family refuses y's shape (``refused`` then holds its reason)."""

    def __init__(self, family: str, direction: str, kind: str) -> None:
        self.family, self.direction, self.kind = family, direction, kind
        g = torch.Generator().manual_seed(0)
        self.theta = 2 * torch.rand(NUM_ROWS, D_THETA, generator=g) - 1
        self.x = simulate(kind, self.theta, g)
        self.x_kind = {**KINDS, **TWO_D}[kind][0]
        posterior = direction == "posterior"
        # both directions' log_prob takes (y, c): log_prob(theta, x) and log_prob(x, theta)
        self.y, self.c = (self.theta, self.x) if posterior else (self.x, self.theta)
        self.y_name, self.c_name = ("theta", "x") if posterior else ("x", "theta")
        self.y_shape = tuple(self.y.shape[1:])
        self.refused = refusal(family, direction, kind)
        self.est = self.new_estimator()
        if self.refused is None:
            self.est.fit(self.theta, self.x, max_epochs=2, seed=0, progress=False)

    def new_estimator(self) -> Any:
        return DIRECTIONS[self.direction](PRIOR, make_family(self.family), x_kind=self.x_kind)

    def require_support(self) -> None:
        if self.refused is not None:
            pytest.skip(f"{self.family} does not model y of shape {list(self.y_shape)}: {self.refused}")


@functools.cache
def fitted(family: str, direction: str, kind: str) -> Case:
    """Each case is fitted once per test session, whichever test asks first."""
    return Case(family, direction, kind)


CASES = [
    pytest.param((family, direction, kind), id=f"{family}-{direction}-{kind}")
    for family in REGISTRY
    for direction in DIRECTIONS
    for kind in KINDS
]


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> Case:
    return fitted(*request.param)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------- shapes
def test_shapes(case: Case) -> None:
    case.require_support()
    est, y, c = case.est, case.y, case.c
    for lp in (est.log_prob(y[:5], c[:5]), est.log_prob(y[:5], c[0]), est.log_prob(y[0], c[:5]),
               est.log_prob(y[:5], c[:1])):
        assert lp.shape == (5,) and lp.dtype == torch.float32 and torch.isfinite(lp).all()
    assert est.log_prob(y[0], c[0]).shape == (1,)
    for one in (c[0], c[:1]):
        draws = est.sample(7, one, generator=gen())
        assert draws.shape == (7, *case.y_shape) and torch.isfinite(draws).all()
    batched = est.sample_batched(7, c[:3], generator=gen())
    assert batched.shape == (3, 7, *case.y_shape) and torch.isfinite(batched).all()
    assert est.sample_batched(7, c[:1]).shape == (1, 7, *case.y_shape)
    if case.direction == "posterior":  # draws never leave a bounded prior's support
        assert torch.isfinite(PRIOR.log_prob(batched.reshape(-1, D_THETA))).all()


# --------------------------------------------------------------------------------------------------- determinism
def test_same_generator_seed_gives_the_same_draws_and_log_prob(case: Case) -> None:
    case.require_support()
    est, y, c = case.est, case.y[:6], case.c[:6]
    assert torch.equal(est.sample(20, c[0], generator=gen(3)), est.sample(20, c[0], generator=gen(3)))
    assert torch.equal(est.sample_batched(5, c[:3], generator=gen(3)), est.sample_batched(5, c[:3], generator=gen(3)))
    assert not torch.equal(est.sample(20, c[0], generator=gen(3)), est.sample(20, c[0], generator=gen(4)))
    assert torch.equal(est.log_prob(y, c, generator=gen(3)), est.log_prob(y, c, generator=gen(3)))


def test_a_rows_log_prob_does_not_depend_on_the_rest_of_its_batch(case: Case) -> None:
    # Exact for closed-form and fixed-step log_probs. An adaptive ODE solver (dopri5, the CNF/diffusion default)
    # takes one step sequence for the whole batch, so a row moves within the solver's tolerance: 1e-3 nats
    # allows that, while row-dependent draws (a stochastic estimate not shared across rows) move it by far more.
    case.require_support()
    est, y, c = case.est, case.y[:6], case.c[:6]
    whole = est.log_prob(y, c, generator=gen(5))
    for rows in (slice(0, 2), slice(3, 4)):
        part = est.log_prob(y[rows], c[rows], generator=gen(5))
        torch.testing.assert_close(part, whole[rows], rtol=0.0, atol=1e-3)


# --------------------------------------------------------------------------------------------------- save/load
def test_save_load_round_trip(case: Case, tmp_path: Any) -> None:
    case.require_support()
    est, y, c = case.est, case.y[:6], case.c[:6]
    path = tmp_path / "model.pt"
    est.save(str(path))
    loaded = simgen.load(str(path))
    assert type(loaded) is type(est) and loaded.x_kind == est.x_kind
    assert type(loaded.density.density) is type(est.density.density)
    torch.testing.assert_close(loaded.log_prob(y, c, generator=gen(2)), est.log_prob(y, c, generator=gen(2)),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loaded.sample_batched(4, c[:2], generator=gen(2)),
                               est.sample_batched(4, c[:2], generator=gen(2)), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------- bad input
def raises(match: str, fn: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=match):
        fn()


def with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(t.shape[0], -1)[-1, 0] = float("nan")
    return t


def test_bad_input_raises_a_value_error_that_names_the_argument(case: Case) -> None:
    if case.refused is not None:  # data a family does not model are refused when fitting, before any training
        fit = case.new_estimator().fit
        raises(re.escape(case.refused), lambda: fit(case.theta, case.x, max_epochs=1, progress=False))
        return
    est, y, c, yn, cn = case.est, case.y[:4], case.c[:4], case.y_name, case.c_name
    # shapes: a trailing dimension too many or a column too few, for either argument
    raises(f"{yn} must have shape", lambda: est.log_prob(y[..., None], c))
    raises(f"{yn} must have shape", lambda: est.log_prob(y[..., :-1], c))
    raises(f"{cn} must have shape", lambda: est.log_prob(y, c[..., :-1]))
    raises("same number of rows", lambda: est.log_prob(y[:3], c[:2]))
    raises("must have shape", lambda: est.sample(3, c[0, ..., :-1]))
    raises("must have shape", lambda: est.sample_batched(3, c[..., None]))
    raises("sample_batched", lambda: est.sample(3, c[:2]))  # several contexts go to sample_batched
    # no rows at all
    raises(f"{yn}.*at least one row", lambda: est.log_prob(y[:0], c[:0]))
    raises("at least one row", lambda: est.sample_batched(3, c[:0]))
    # NaN
    raises(f"{yn} contains NaN", lambda: est.log_prob(with_nan(y), c))
    raises(f"{cn} contains NaN", lambda: est.log_prob(y, with_nan(c)))
    raises("contains NaN", lambda: est.sample(3, with_nan(c[:1])))
    raises("contains NaN", lambda: est.sample_batched(3, with_nan(c)))
    # the number of draws
    for n in (0, -1, 2.5, True, "3"):
        raises("positive int", lambda n=n: est.sample(n, c[0]))
        raises("positive int", lambda n=n: est.sample_batched(n, c))
    # training data: NaN rows and mismatched rows are refused before any training
    fresh = case.new_estimator()
    raises("x contains NaN", lambda: fresh.fit(case.theta[:8], with_nan(case.x[:8]), max_epochs=1, progress=False))
    raises("theta contains NaN", lambda: fresh.fit(with_nan(case.theta[:8]), case.x[:8], max_epochs=1,
                                                   progress=False))
    raises("same number of rows", lambda: fresh.fit(case.theta[:8], case.x[:7], max_epochs=1, progress=False))


# --------------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("family", list(REGISTRY))
def test_density_integrates_to_one(family: str, direction: str) -> None:
    # y a 2-vector, or two pixels for a family of maps
    case = next((c for c in (fitted(family, direction, kind) for kind in TWO_D) if c.refused is None), None)
    if case is None:
        fitted(family, direction, "vector").require_support()
    k = 80
    if direction == "posterior":  # the prior's box [-1, 1]²: the support bijection's Jacobian is in log_prob
        lo, hi = -torch.ones(2), torch.ones(2)
    else:  # a box around the emulated draws, half their range wider on every side
        draws = case.est.sample(4000, case.theta[0], generator=gen(1)).reshape(-1, 2)
        span = draws.max(0).values - draws.min(0).values
        lo, hi = draws.min(0).values - span / 2, draws.max(0).values + span / 2
    h = (hi - lo) / k
    axes = [lo[i] + h[i] * (torch.arange(k) + 0.5) for i in range(2)]
    grid = torch.cartesian_prod(*axes).reshape(k * k, *case.y_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # independent draws per grid point (see the module docstring), fixed
        log_p = case.est.log_prob(grid, case.c[0])
    mass = (log_p.double().exp().sum() * h.prod()).item()
    assert abs(mass - 1) < 0.02, f"∫ p = {mass:.4f}"
