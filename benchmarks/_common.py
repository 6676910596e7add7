"""What the benchmarks share: the fixed observations and the mean ± standard error of per-observation scores.

The benchmarks run as scripts (``python benchmarks/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

import simulators


def observations(sim: simulators.Simulator, num_obs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_obs`` fixed (θ_o, x_o) pairs: θ_o from the prior, x_o simulated, both seeded."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theta = sim.prior.sample((num_obs,)).reshape(num_obs, -1)
    return theta, sim(theta, generator=g)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / √n)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    return mean, math.sqrt(var / n)


def train_sbi(inference: Any, theta: torch.Tensor, x: torch.Tensor) -> tuple[Any, float, float, int]:
    """Train an ``sbi`` inference object on (θ, x): its estimator, wall seconds, CPU seconds, epochs trained.

    sbi prints "converged after N epochs" behind a carriage return and without a newline, which glued it onto the
    benchmark's next printed row; its stdout is captured while it trains and the epoch count returned instead.
    """
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        estimator = inference.append_simulations(theta, x).train(show_train_summary=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return estimator, seconds, cpu, inference._summary["epochs_trained"][-1]


def sbi_posterior(kind: str, prior: Any, theta: torch.Tensor, x: torch.Tensor, seed: int) -> tuple[Any, float, int]:
    """An ``sbi`` posterior of ``kind`` (``"npe"``, ``"fmpe"`` or ``"npse"``, sbi's defaults) trained on (θ, x)
    with torch seeded by ``seed``: the posterior, training wall seconds and epochs trained (:func:`train_sbi`)."""
    from sbi.inference import FMPE, NPE, NPSE

    methods = {"npe": NPE, "fmpe": FMPE, "npse": NPSE}
    if kind not in methods:
        raise ValueError(f"sbi method must be one of {sorted(methods)}; got {kind!r}")
    torch.manual_seed(seed)
    inference = methods[kind](prior=prior, show_progress_bars=False)
    estimator, seconds, _, epochs = train_sbi(inference, theta, x)
    return inference.build_posterior(estimator), seconds, epochs


@dataclass
class MapSets:
    """The map benchmarks' data: training pairs, held-out pairs with their exact log-likelihood, and simulated maps
    at a few θ for the summary statistics."""

    theta: torch.Tensor  #: [num_maps, d_theta]
    x: torch.Tensor  #: [num_maps, *x_shape]
    theta_test: torch.Tensor  #: [num_test, d_theta]
    x_test: torch.Tensor  #: [num_test, *x_shape]
    exact: torch.Tensor  #: [num_test] float64, the simulator's log p(x_test | theta_test)
    theta_check: torch.Tensor  #: [num_theta, d_theta]
    sim_maps: torch.Tensor  #: [num_theta, num_samples, *x_shape]

    @property
    def pixels(self) -> int:
        return math.prod(self.x.shape[1:])


def map_sets(sim: Any, num_maps: int, num_test: int, num_theta: int, num_samples: int, seed: int) -> MapSets:
    """Training pairs (seed), held-out pairs (seed + 1), check θ (seed + 2) and their simulated maps (seed + 3)."""
    theta, x = observations(sim, num_maps, seed)
    theta_test, x_test = observations(sim, num_test, seed + 1)
    theta_check, _ = observations(sim, num_theta, seed + 2)
    g = torch.Generator().manual_seed(seed + 3)
    sim_maps = torch.stack([sim(t.expand(num_samples, -1), generator=g) for t in theta_check])
    return MapSets(theta, x, theta_test, x_test, sim.log_likelihood(theta_test, x_test).double(), theta_check,
                   sim_maps)
