r"""SIR from an amortised posterior instead of the prior: the defensive mixture (Hesterberg 1995).

Where the posterior is thin next to the prior, SIR's prior draws rest on a handful of effective draws even after
10⁶ of them (:mod:`~simgen.mcmc.sir`), and chains that never cross between modes keep the shares those few draws
gave each mode. An amortised posterior q(θ | x) (a :class:`~simgen.PosteriorEstimator`) already puts its draws
near every mode of p(θ | x_obs), roughly in proportion; importance weights then correct its shares:

    q_w(θ) = (1 − w) q(θ | x_obs) + w p(θ),   weight(θ) = π(θ) / q_w(θ),

with π the unnormalised posterior the chains target. The prior's share w keeps the weights bounded,
weight ≤ π(θ) / (w p(θ)), wherever q is too narrow or misses a mode (defensive importance sampling, Hesterberg
1995, Technometrics 37(2)); the draws are resampled and the chains start there, so a wrong q changes where they
start and how many draws SIR needs, never what they target. This is the importance-sampled amortised posterior
of Dax et al. (2023, PRL 130, 171403), with a learned likelihood in π and MCMC moves after the resampling.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..utils import randint

__all__ = ["ConditionalProposal", "DefensiveMixture", "DEFAULT_PRIOR_WEIGHT"]

#: the prior's share w of the defensive mixture
DEFAULT_PRIOR_WEIGHT = 0.1


@runtime_checkable
class ConditionalProposal(Protocol):
    """What SIR can draw from: an amortised posterior q(θ | x) (:class:`~simgen.PosteriorEstimator`)."""

    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``[n, d_theta]`` of q(θ | x_obs)."""
        ...

    def log_prob(self, theta: Any, x: Any) -> Tensor:
        """log q(θ[i] | x) ``[n]`` for θ ``[n, d_theta]``, one observation x broadcast over θ."""
        ...


class DefensiveMixture:
    r"""q_w(θ) = (1 − w) q(θ | x_obs) + w p(θ) (module docstring), with ``sample((n,))`` and ``log_prob(θ)`` like
    a :class:`torch.distributions.Distribution`, so that :func:`~simgen.mcmc.sir.sir_start` draws from it as from
    a prior.

    Draws come from the global random stream (``sir_start`` seeds it per round): the number taken from the prior
    is Binomial(n, w), and q's draws use a generator seeded from that stream.

    Args:
        proposal: q(θ | x), fitted.
        x_obs: the observation(s) q is conditioned on, as the proposal's ``sample`` takes them.
        prior: p(θ).
        prior_weight: w in [0, 1).
    """

    def __init__(self, proposal: ConditionalProposal, x_obs: Tensor, prior: Distribution,
                 prior_weight: float = DEFAULT_PRIOR_WEIGHT) -> None:
        if not 0 <= prior_weight < 1:
            raise ValueError(f"prior_weight must lie in [0, 1); got {prior_weight}")
        self.proposal, self.x_obs, self.prior, self.prior_weight = proposal, x_obs, prior, float(prior_weight)

    def sample(self, shape: tuple[int, ...]) -> Tensor:
        """``shape[0]`` draws ``[n, d_theta]``, in random order."""
        n = int(shape[0])
        k = int(torch.distributions.Binomial(n, torch.tensor(self.prior_weight)).sample()) if self.prior_weight else 0
        generator = torch.Generator().manual_seed(int(randint(0, 2**62, ())))
        d = int(torch.Size(self.prior.event_shape).numel())
        parts = [torch.empty(0, d)]
        if n > k:  # (every draw may come from the prior when n is tiny)
            parts[0] = torch.as_tensor(self.proposal.sample(n - k, self.x_obs, generator=generator)).float().cpu()
        if parts[0].shape != (n - k, d):
            raise ValueError(f"the proposal's draws must be [n, d_theta] = [{n - k}, {d}] (the prior's d_theta); "
                             f"got {list(parts[0].shape)}")
        if k:
            parts.append(self.prior.sample((k,)).reshape(k, -1).float())
        return torch.cat(parts)[torch.randperm(n)]

    def log_prob(self, theta: Tensor) -> Tensor:
        """log q_w(θ) ``[n]`` for θ ``[n, d_theta]`` (−inf where both q and p vanish)."""
        log_q = torch.as_tensor(self.proposal.log_prob(theta, self.x_obs)).float().cpu()
        if not self.prior_weight:
            return log_q
        log_p = self.prior.log_prob(theta).reshape(theta.shape[0], -1).sum(dim=1).float()
        return torch.logsumexp(torch.stack([log_q + math.log1p(-self.prior_weight),
                                            log_p + math.log(self.prior_weight)]), dim=0)
