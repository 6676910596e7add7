"""What the benchmarks share: the fixed observations, the mean ± standard error of per-observation scores, sbi's
training, and the mixed discrete/continuous toy of the README's MNLE section with its exact likelihood.

The benchmarks run as scripts (``python benchmarks/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import io
import math
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Binomial, Independent, Normal, Uniform

import simulators
from simgen.mcmc import MCMCPosterior


def observations(sim: simulators.Simulator, num_obs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_obs`` fixed (θ_o, x_o) pairs: θ_o from the prior, x_o simulated, both seeded."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theta = sim.prior.sample((num_obs,)).reshape(num_obs, -1)
    return theta, sim(theta, generator=g)


SBIBM_TASKS = ("two_moons", "slcp", "gaussian_linear", "gaussian_mixture", "gaussian_linear_uniform")


def sbibm_observations(source: str, task: str, num_obs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sbibm's reference observations 1..``num_obs`` of ``task`` and its reference posterior samples, read from the
    files of an sbibm release without importing it: ``source`` is the sbibm wheel (``pip download sbibm
    --no-deps``) or the directory holding its ``sbibm`` package. Returns ``x_o [num_obs, d_x]`` and
    ``reference [num_obs, 10000, d_theta]`` (float32)."""
    if task not in SBIBM_TASKS:
        raise ValueError(f"sbibm has no task {task!r} among simgen's; its tasks here: {', '.join(SBIBM_TASKS)}")
    if not 1 <= num_obs <= 10:
        raise ValueError(f"sbibm has reference observations 1 to 10; asked for {num_obs}")
    path = Path(source)
    if path.suffix == ".whl":
        root: Path | zipfile.Path = zipfile.Path(path)  # the wheel's files, read in place
    elif (path / "sbibm").is_dir():
        root = path
    else:
        raise FileNotFoundError(f"{source}: expected an sbibm wheel (.whl) or a directory holding the sbibm package")

    def read(name: str) -> bytes:
        return root.joinpath(name).read_bytes()

    def rows(data: bytes) -> torch.Tensor:
        lines = list(csv.reader(data.decode().splitlines()))
        return torch.tensor([[float(v) for v in line] for line in lines[1:]], dtype=torch.float32)

    xs, refs = [], []
    for i in range(1, num_obs + 1):
        folder = f"sbibm/tasks/{task}/files/num_observation_{i}"
        xs.append(rows(read(f"{folder}/observation.csv"))[0])
        refs.append(rows(bz2.decompress(read(f"{folder}/reference_posterior_samples.csv.bz2"))))
    return torch.stack(xs), torch.stack(refs)


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


#: The prior of the mixed toy :func:`choices`: θ ~ U(0, 1)².
CHOICES_PRIOR = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)


def choices(theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The README's mixed toy, one trial per θ row: k ~ Binomial(5, θ₀) successes (discrete, column 0) and a time
    t ~ LogNormal(θ₁ − 0.1 k, 0.2) (continuous, column 1). θ [n, 2] → x [n, 2]."""
    k = torch.bernoulli(theta[:, :1].expand(-1, 5), generator=generator).sum(dim=1, keepdim=True)
    t = torch.exp(theta[:, 1:] - 0.1 * k + 0.2 * torch.randn(theta.shape[0], 1, generator=generator))
    return torch.cat([k, t], dim=1)


def choices_log_prob(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Exact log p(k, t | θ) = log Binomial(k; 5, θ₀) + log N(log t; θ₁ − 0.1 k, 0.2²) − log t of :func:`choices`;
    x [n, 2], θ [n, 2] → [n]."""
    k, t = x[:, 0], x[:, 1]
    lk = Binomial(5, probs=theta[:, 0]).log_prob(k)
    return lk + Normal(theta[:, 1] - 0.1 * k, 0.2).log_prob(torch.log(t)) - torch.log(t)


class ChoicesLikelihood:
    """The exact likelihood of :func:`choices` in the interface ``MCMCPosterior`` takes (the sum over i.i.d. trials)."""

    device = torch.device("cpu")

    def log_likelihood(self, theta, x_obs, *, generator=None, grad=False):
        with torch.set_grad_enabled(grad):
            b, m = theta.shape[0], x_obs.shape[0]
            lp = choices_log_prob(x_obs.repeat(b, 1), theta.repeat_interleave(m, dim=0))
            return lp.reshape(b, m).sum(dim=1)

    def check_theta(self, theta, name="theta"):
        return torch.as_tensor(theta, dtype=torch.float32).reshape(-1, 2)

    def check_x(self, x, name="x"):
        return torch.as_tensor(x, dtype=torch.float32).reshape(-1, 2)


@dataclass
class ChoicesCheck:
    """What the mixed toy is scored on: held-out pairs for the likelihood gap, observations of i.i.d. trials and
    the reference posterior at each (MCMC on the exact likelihood)."""

    theta_test: torch.Tensor  #: [num_test, 2]
    x_test: torch.Tensor  #: [num_test, 2]
    theta_o: torch.Tensor  #: [num_obs, 2]
    x_o: list[torch.Tensor]  #: num_obs tensors [num_trials, 2]
    reference: list[torch.Tensor]  #: num_obs tensors [num_samples, 2]


def choices_check(num_obs: int, num_samples: int, seed: int, num_test: int = 2000,
                  num_trials: int = 20) -> ChoicesCheck:
    """Held-out pairs, observations of ``num_trials`` i.i.d. trials at θ_o from the prior (one generator seeded
    1000 + seed) and ``num_samples`` reference draws at each by simgen's MCMC (its defaults) on the exact
    likelihood (generator seeded 7)."""
    g = torch.Generator().manual_seed(1000 + seed)
    theta_test = torch.rand(num_test, 2, generator=g)
    x_test = choices(theta_test, g)
    theta_o = torch.rand(num_obs, 2, generator=g)
    x_o = [choices(t.expand(num_trials, 2), g) for t in theta_o]
    exact_post = MCMCPosterior(ChoicesLikelihood(), CHOICES_PRIOR, progress=False)
    with warnings.catch_warnings():
        # MCMC's convergence warnings (R-hat, ESS): the benchmarks judge the draws by C2ST
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = [exact_post.sample(num_samples, x, generator=torch.Generator().manual_seed(7)) for x in x_o]
    return ChoicesCheck(theta_test, x_test, theta_o, x_o, reference)
