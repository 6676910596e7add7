r"""Starting points by sampling-importance-resampling (SIR) of prior draws (Rubin 1988).

Prior draws reweighted by the likelihood land close to the posterior's typical set, and in each of its modes in
proportion to its mass, so that many short chains started there need little warm-up. Any other proposal with
``sample`` and ``log_prob`` serves as well, weighted by π/q: an amortised posterior's defensive mixture
(:mod:`~simgen.mcmc.proposal`) needs far fewer draws where the posterior is thin. Chains that never cross
between modes keep the share SIR gives each mode, so that share must be estimated from enough draws: the
importance weights' effective sample size (Kish 1965),

    ESS = (Σ_k w_k)² / Σ_k w_k²,   w_k = exp(log π(θ_k) − log q(θ_k)),

(q the proposal, the prior p by default) counts how many draws the resampling really rests on. Where the
posterior is narrow next to the proposal, a few draws carry all the weight; :func:`sir_start` then keeps drawing
(doubling the draws each round) until the ESS reaches ``min_ess`` or ``max_init`` draws.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..utils import multinomial, randint
from .proposal import DefensiveMixture
from .target import LogDensity, finite_or_minus_inf

__all__ = ["SIRStart", "sir_init", "sir_start"]


@dataclasses.dataclass(frozen=True)
class SIRStart:
    """Starting points ``theta`` ``[num_chains, d]``, the number of proposal draws they were resampled from and the
    importance weights' effective sample size."""

    theta: Tensor
    num_draws: int
    ess: float


def sir_start(
    log_fn: LogDensity,
    proposal: Distribution | DefensiveMixture,
    num_chains: int,
    num_init: int,
    generator: torch.Generator,
    *,
    min_ess: float = 0.0,
    max_init: int | None = None,
    batch_size: int = 10_000,
) -> SIRStart:
    r"""Sampling-importance-resampling: draw θ_k ~ q(θ) (``proposal``: the prior, or
    :class:`~simgen.mcmc.proposal.DefensiveMixture`), weight each by exp(log_fn(θ_k) − log q(θ_k)), and keep
    ``num_chains`` of them with probability ∝ weight (with replacement).

    ``num_init`` draws first; while the weights' ESS (module docstring) is below ``min_ess`` and fewer than
    ``max_init`` (default ``num_init``) have been drawn, as many again (capped at ``max_init``), so that the
    number of draws doubles each round. Each round's draws come from their own seed taken from ``generator``.
    """
    max_init = num_init if max_init is None else max(max_init, num_init)
    proposals: list[Tensor] = []
    weights: list[Tensor] = []
    drawn, ess = 0, 0.0
    while True:
        size = min(max(num_init, drawn), max_init - drawn)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(randint(0, 2**62, (), generator=generator)))
            new = proposal.sample((size,)).reshape(size, -1)
        proposals.append(new)
        weights.append(torch.cat([
            finite_or_minus_inf(finite_or_minus_inf(log_fn(part).cpu()) - proposal.log_prob(part))
            for part in (new[s : s + batch_size] for s in range(0, size, batch_size))
        ]))
        drawn += size
        log_w = torch.cat(weights)
        if torch.isfinite(log_w).any():
            ess = float(1.0 / torch.softmax(log_w.double(), dim=0).pow(2).sum())
        if ess >= min_ess or drawn >= max_init:
            break
    if not torch.isfinite(log_w).any():
        raise RuntimeError(
            f"all {drawn} draws of the {'proposal' if isinstance(proposal, DefensiveMixture) else 'prior'} have "
            "zero likelihood: the observation may lie outside the range "
            "the emulator was trained on"
        )
    probs = torch.softmax(log_w.double(), dim=0)
    idx = multinomial(probs, num_chains, replacement=True, generator=generator)
    return SIRStart(torch.cat(proposals)[idx], drawn, ess)


def sir_init(
    log_fn: LogDensity,
    prior: Distribution,
    num_chains: int,
    num_init: int,
    generator: torch.Generator,
    batch_size: int = 10_000,
) -> Tensor:
    r"""``num_chains`` starting points ``[num_chains, d]`` resampled from ``num_init`` prior draws
    (:func:`sir_start` with a single round)."""
    return sir_start(log_fn, prior, num_chains, num_init, generator, batch_size=batch_size).theta
