"""What the benchmarks share: the fixed observations and the mean ± standard error of per-observation scores.

The benchmarks run as scripts (``python benchmarks/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
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
