r"""Starting points by sampling-importance-resampling (SIR) of prior draws (Rubin 1988).

Prior draws reweighted by the likelihood land close to the posterior's typical set, and in each of its modes in
proportion to its mass, so that many short chains started there need little warm-up.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..utils import multinomial, randint
from .target import LogDensity, finite_or_minus_inf

__all__ = ["sir_init"]


def sir_init(
    log_fn: LogDensity,
    prior: Distribution,
    num_chains: int,
    num_init: int,
    generator: torch.Generator,
    batch_size: int = 10_000,
) -> Tensor:
    r"""Sampling-importance-resampling: draw θ_k ~ p(θ), k ≤ ``num_init``, and keep ``num_chains`` of them with
    probability ∝ exp(log_fn(θ_k) − log p(θ_k)) (with replacement). Returns ``[num_chains, d]``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(randint(0, 2**62, (), generator=generator)))
        proposals = prior.sample((num_init,)).reshape(num_init, -1)
    weights = torch.cat([
        finite_or_minus_inf(log_fn(part).cpu()) - prior.log_prob(part)
        for part in (proposals[s : s + batch_size] for s in range(0, num_init, batch_size))
    ])
    weights = finite_or_minus_inf(weights)
    if not torch.isfinite(weights).any():
        raise RuntimeError(
            f"all {num_init} prior draws have zero likelihood: the observation may lie outside the range "
            "the emulator was trained on"
        )
    probs = torch.softmax(weights.double(), dim=0)
    idx = multinomial(probs, num_chains, replacement=True, generator=generator)
    return proposals[idx]
