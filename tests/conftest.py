"""Shared test set-up: one torch thread (the CI machine has two cores), the same global random state at the start
of every test, fixtures trained once per session."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _same_global_random_state_per_module() -> None:
    """Each test file starts from the same global random state, so that its module-scoped fixtures (made at their
    first use, after the file's earlier tests) see the same numbers whatever the worker ran before the file."""
    _seed_everything()


@pytest.fixture(autouse=True)
def _same_global_random_state() -> None:
    """Every test starts from the same global random state (torch, NumPy, ``random``), whatever ran before it in
    its process: with ``-n 2`` the files a worker runs, and their order, change from run to run, and a test that
    draws from the global generator would otherwise see different numbers each time."""
    _seed_everything()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need CUDA: skipped, with the reason shown, where torch sees no GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class ConjugateGaussian:
    """θ ~ N(0, I₂), x | θ ~ N(θ, s² I₂): the posterior is N(x / (1 + s²), s² / (1 + s²) I₂) in closed form."""

    x_shape = (2,)
    x_kind = "vector"
    noise = 0.5

    def __init__(self) -> None:
        self.prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)

    def __call__(self, theta: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return theta + self.noise * torch.randn(theta.shape, generator=generator)

    def posterior_samples(self, x_obs: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
        s2 = self.noise**2
        g = torch.Generator().manual_seed(seed)
        return x_obs / (1 + s2) + (s2 / (1 + s2)) ** 0.5 * torch.randn(n, 2, generator=g)

    def log_likelihood(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.Normal(theta.double(), self.noise)
        return normal.log_prob(x.double()).sum(-1)


@pytest.fixture(scope="session")
def conjugate() -> ConjugateGaussian:
    return ConjugateGaussian()


@pytest.fixture(scope="session")
def conjugate_data(conjugate):
    import simgen

    return simgen.simulate(conjugate, conjugate.prior, 3000, seed=1, progress=False)


@pytest.fixture(scope="session")
def two_moons():
    import simulators

    return simulators.get("two_moons")


@pytest.fixture(scope="session")
def two_moons_data(two_moons):
    import simgen

    return simgen.simulate(two_moons, two_moons.prior, 2000, seed=0, progress=False)


@pytest.fixture(scope="session")
def two_moons_posterior(two_moons, two_moons_data):
    """A small NSF posterior on two moons (few epochs: for shapes, I/O and sampling, not accuracy)."""
    import simgen

    post = simgen.PosteriorEstimator(two_moons.prior, "flow")
    post.fit(*two_moons_data, seed=0, progress=False, max_epochs=15)
    return post


@pytest.fixture(scope="session")
def conjugate_emulator(conjugate, conjugate_data):
    """A small MAF likelihood emulator of the conjugate Gaussian simulator."""
    import simgen
    from simgen.models import Flow

    emu = simgen.LikelihoodEstimator(conjugate.prior, Flow(kind="maf", transforms=3, hidden_features=32))
    emu.fit(*conjugate_data, seed=0, progress=False, max_epochs=60)
    return emu
