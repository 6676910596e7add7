r"""Sequential rounds for one observation: simulate where the posterior for ``x_obs`` is, train on every round.

One budget of ``num_simulations`` is split over ``rounds``. Round 0 draws θ from the prior; each later round
draws θ from a proposal built from the estimator trained so far, simulates, and trains the estimator afresh on
all rounds' pairs. What the proposal is depends on what the estimator learns:

* **TSNPE** (a posterior estimator; Deistler, Goncalves & Macke 2022, "Truncated proposals for scalable and
  hassle-free simulation-based inference", arXiv:2210.04815): the prior truncated to the current posterior's
  highest-probability region, p̃(θ) ∝ p(θ) 1[log q(θ | x_obs) ≥ τ], with τ the ε-quantile of log q over draws
  of q(θ | x_obs) (the HPR of mass 1 − ε). Within the region every round's θ is prior-distributed up to a
  constant, so the plain NPE loss stays valid (no importance weights, no atomic loss), as long as the region
  covers the true posterior. Sampled by rejection from the prior (:class:`TruncatedPrior`).
* **SNLE / SNRE** (a likelihood or ratio estimator; Papamakarios, Sterratt & Murray 2019, arXiv:1805.07226;
  Durkan, Murray & Papamakarios 2020, arXiv:2002.03712): the current MCMC posterior (:class:`PosteriorProposal`).
  p(x | θ) does not depend on where θ came from, and a ratio classifier trained on proposal draws learns
  p(x | θ) / p̃(x), whose posterior is the same.

Rounds reuse a store: ``store="seq.h5"`` keeps round r in ``seq.h5/round-r`` (a campaign store of its own, whose
metadata records its proposal and whose rows record log q(θ) of the proposal they were drawn from, see
:mod:`simgen.campaign.store`); a round already complete there is read back instead of simulated again.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from tqdm.auto import tqdm

from ..campaign.describe import describe_distribution
from ..campaign.simulate import simulate
from ..campaign.store import open_store
from ..utils import as_tensor, check_positive_int

__all__ = ["SequentialRound", "TruncatedPrior", "PosteriorProposal", "truncated_prior", "fit_rounds",
           "round_sizes"]


@dataclasses.dataclass
class SequentialRound:
    """What one round did.

    Attributes:
        round: its index (0: the prior).
        proposal: the JSON description of the distribution θ was drawn from.
        num_simulations: simulations attempted (its share of the budget).
        num_valid: the valid ones (failed simulations are reported and left out, as ``simgen.simulate`` does).
        store: the round's campaign store, or ``None``.
        prior_mass: TSNPE: the prior mass of the truncated region (``None`` otherwise).
    """

    round: int
    proposal: dict[str, Any]
    num_simulations: int
    num_valid: int
    store: str | None = None
    prior_mass: float | None = None


class TruncatedPrior(Distribution):
    r"""p̃(θ) = p(θ) 1[log q(θ | x_obs) ≥ τ] / Z: the prior restricted to a region of the posterior q, Z its prior mass.

    ``sample`` draws from the prior in batches and keeps the draws inside the region (rejection sampling, exact);
    ``log_prob`` is log p(θ) − log Z inside and −∞ outside, with Z estimated by the acceptance rate of
    ``num_mass`` prior draws. Draws come from torch's global random stream (``simgen.simulate`` seeds it per chunk).

    Args:
        prior: p(θ).
        log_q: θ ``[n, d]`` → log q(θ | x_obs) ``[n]``.
        threshold: τ.
        num_mass: prior draws for Z.
        batch: prior draws per rejection batch.
        label: what the region is, for ``repr`` (a store's metadata records it).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(self, prior: Distribution, log_q: Callable[[Tensor], Tensor], threshold: float, *,
                 num_mass: int = 100_000, batch: int = 10_000, label: str = "") -> None:
        super().__init__(prior.batch_shape, prior.event_shape, validate_args=False)
        self.prior, self.log_q, self.threshold, self.batch, self.label = prior, log_q, float(threshold), batch, label
        accepted = sum(int(self.inside(prior.sample((min(batch, num_mass - s),))).sum())
                       for s in range(0, num_mass, batch))
        if accepted == 0:
            raise ValueError(
                f"none of {num_mass} prior draws lies in the posterior's highest-probability region: it is too "
                "small for rejection sampling from the prior. Use fewer rounds, a larger truncation, or a "
                "likelihood estimator (sequential NLE, whose proposals are MCMC draws)"
            )
        #: Z, the prior mass of the region
        self.mass = accepted / num_mass

    @property
    def support(self) -> constraints.Constraint:
        return self.prior.support

    def inside(self, theta: Tensor) -> Tensor:
        """``[n]`` booleans: θ in the region."""
        return self.log_q(theta) >= self.threshold

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        n = math.prod(sample_shape)
        kept, count = [], 0
        while count < n:
            rows = min(max(self.batch, math.ceil(1.2 * (n - count) / self.mass)), 20 * self.batch)
            theta = self.prior.sample((rows,))
            theta = theta[self.inside(theta)]
            kept.append(theta)
            count += theta.shape[0]
        return torch.cat(kept)[:n].reshape(*sample_shape, *self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        lp = self.prior.log_prob(value) - math.log(self.mass)
        flat = value.reshape(-1, *self.event_shape)
        inside = self.inside(flat).reshape(lp.shape)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def __repr__(self) -> str:
        return (f"TruncatedPrior({self.label}log q(θ | x_obs) >= {self.threshold:.6g}, prior mass {self.mass:.4g}, "
                f"prior={describe_distribution(self.prior)})")


class PosteriorProposal(Distribution):
    """Draws of an MCMC posterior for ``x_obs``, as a distribution ``simgen.simulate`` can draw θ from.

    Its ``log_prob`` is unknown (the posterior is unnormalised), so a store records NaN for it; a likelihood or
    ratio estimator needs none. Draws come from torch's global random stream through the sampler.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(self, posterior: Any, x_obs: Tensor, prior: Distribution, label: str = "") -> None:
        super().__init__(prior.batch_shape, prior.event_shape, validate_args=False)
        self.posterior, self.x_obs, self.prior, self.label = posterior, x_obs, prior, label

    @property
    def support(self) -> constraints.Constraint:
        return self.prior.support

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        n = math.prod(sample_shape)
        return self.posterior.sample(n, self.x_obs).reshape(*sample_shape, *self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError("an MCMC posterior's normalised log_prob is unknown")

    def __repr__(self) -> str:
        return f"PosteriorProposal({self.label}MCMC posterior for x_obs, prior={describe_distribution(self.prior)})"


def truncated_prior(prior: Distribution, log_q: Callable[[Tensor], Tensor], draws: Tensor, truncation: float,
                    label: str = "") -> TruncatedPrior:
    r"""The prior truncated to the HPR of mass 1 − ``truncation`` of q, τ = the ``truncation``-quantile of
    log q over ``draws`` ``[M, d]`` of q (Deistler et al. 2022 use ε = 10⁻⁴ with M = 10⁴: τ is then about the
    lowest log q of the draws)."""
    if not 0 <= truncation < 1:
        raise ValueError(f"truncation must lie in [0, 1); got {truncation}")
    log_q_draws = log_q(draws).double()
    threshold = float(torch.quantile(log_q_draws[torch.isfinite(log_q_draws)], truncation))
    return TruncatedPrior(prior, log_q, threshold, label=label)


def round_sizes(num_simulations: int, rounds: int) -> list[int]:
    """The budget split evenly over the rounds (the first rounds take the remainder)."""
    check_positive_int(num_simulations, "num_simulations")
    check_positive_int(rounds, "rounds")
    if num_simulations < rounds:
        raise ValueError(f"num_simulations ({num_simulations}) must be at least rounds ({rounds})")
    base, extra = divmod(num_simulations, rounds)
    return [base + (r < extra) for r in range(rounds)]


def _child_seed(seed: int, r: int, stream: int) -> int:
    return int(np.random.SeedSequence(int(seed), spawn_key=(r, stream)).generate_state(1, np.uint64)[0] >> 1)


def _simulate_round(simulator: Any, proposal: Distribution, n: int, seed: int, path: Path | None,
                    chunk_size: int, progress: bool, metadata: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """One round's valid (θ, x): read back from its store when complete there, else simulated (into it).

    A campaign simulates whole chunks, so the chunks are sized to the round: ceil(n / k) rows for the fewest
    chunks k of at most ``chunk_size`` rows, which simulates fewer than k rows beyond the round's share."""
    chunks = math.ceil(n / chunk_size)
    chunk_size = math.ceil(n / chunks)
    if path is not None and (path / "index.json").is_file():
        done = open_store(path)
        if done.num_simulations == n and done.complete:
            return done.load()
    return simulate(simulator, proposal, n, seed=seed, chunk_size=chunk_size, progress=progress,
                    store=path, metadata=metadata if path is not None else None)


def fit_rounds(
    estimator: Any,
    simulator: Any,
    x_obs: Any,
    *,
    num_simulations: int,
    rounds: int,
    store: str | os.PathLike | None,
    seed: int,
    progress: bool,
    chunk_size: int,
    proposal_options: dict[str, Any],
    settings: dict[str, Any],
) -> list[SequentialRound]:
    """Run the rounds (see the module docstring) on ``estimator``, which provides ``prior``, ``fit(θ, x, seed=,
    progress=, **settings)``, ``check_x`` and ``sequential_proposal(x_obs, label, **proposal_options)``; returns
    what each round did."""
    sizes = round_sizes(num_simulations, rounds)
    x_obs = as_tensor(x_obs, "x_obs")
    root = Path(store) if store is not None else None
    method = {"posterior": "tsnpe", "likelihood": "snle", "ratio": "snre"}.get(estimator.direction,
                                                                               estimator.direction)
    thetas: list[Tensor] = []
    xs: list[Tensor] = []
    done: list[SequentialRound] = []
    proposal: Distribution = estimator.prior
    bar = tqdm(total=rounds, desc=f"{method} rounds", disable=not progress, unit="round")
    with bar:
        for r, n in enumerate(sizes):
            if r > 0:
                proposal = estimator.sequential_proposal(x_obs, f"round {r}: ", **proposal_options)
            path = root / f"round-{r}" if root is not None else None
            metadata = {"sequential": {"method": method, "round": r, "rounds": rounds,
                                       "num_simulations": num_simulations, "x_obs": x_obs.tolist()}}
            theta, x = _simulate_round(simulator, proposal, n, _child_seed(seed, r, 0), path, chunk_size,
                                       progress, metadata)
            thetas.append(theta)
            xs.append(x)
            estimator.fit(torch.cat(thetas), torch.cat(xs), seed=_child_seed(seed, r, 1), progress=progress,
                          **settings)
            if r == 0:  # the observation's shape is known once fitted
                x_obs = estimator.check_x(x_obs, "x_obs")
            done.append(SequentialRound(r, describe_distribution(proposal), n, int(theta.shape[0]),
                                        None if path is None else str(path),
                                        proposal.mass if isinstance(proposal, TruncatedPrior) else None))
            bar.set_postfix(simulations=sum(sizes[: r + 1]), valid=sum(d.num_valid for d in done), refresh=False)
            bar.update(1)
    return done
