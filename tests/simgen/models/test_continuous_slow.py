"""Accuracy of the continuous-time families at the issue's budget (``python -m pytest -m slow``; long on a CPU:
the C2ST classifier on 2 × 10⁴ samples dominates)."""

import sys
from pathlib import Path

import pytest

import simgen
import simulators

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/simgen: the shared slow-test helpers
from test_estimators_slow import _c2st_per_observation, _observations  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gaussian_linear():
    sim = simulators.get("gaussian_linear")
    return sim, simgen.simulate(sim, sim.prior, 10_000, seed=0, progress=False)


@pytest.mark.parametrize("family", ["diffusion", "cnf"])
def test_gaussian_linear_posterior_c2st(gaussian_linear, family):
    """Default family, default training, default sampler (Heun, 25 steps = 50 network evaluations)."""
    sim, (theta, x) = gaussian_linear
    post = simgen.PosteriorEstimator(sim.prior, family)
    post.fit(theta, x, seed=0, progress=False)
    _, x_o = _observations(sim, 3, seed=1)
    scores = _c2st_per_observation(post, sim, x_o)
    print(f"gaussian_linear {family} C2ST per observation:", [round(s, 3) for s in scores])
    assert sum(scores) / 3 <= 0.60
