r"""Coordinate-wise slice sampling with stepping out (Neal 2003, "Slice sampling", Ann. Statist. 31(3)), for
targets without gradients; many chains advance together so that every evaluation is one batched call."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..utils import rand as uniform
from .target import LogDensity, finite_or_minus_inf

__all__ = ["slice_sample"]


def slice_sample(
    log_fn: LogDensity,
    init: Tensor,
    num_sweeps: int,
    *,
    widths: Tensor,
    generator: torch.Generator,
    max_step_out: int = 10,
    max_shrink: int = 50,
    progress: bool = False,
) -> Tensor:
    r"""Coordinate-wise slice sampling of ``C`` chains at once.

    For each coordinate j of every chain: draw a level log y = log π(θ) − E, E ~ Exp(1); place an interval of
    width w_j at random around θ_j and step it out (at most ``max_step_out`` times) while its ends lie above the
    level; then draw θ'_j uniformly in it, shrinking the interval towards θ_j until log π(θ') > log y. This
    leaves π invariant for any w_j (Neal 2003). Each step evaluates ``log_fn`` once, batched over the chains
    that still need it.

    Args:
        log_fn: unnormalised log-density, θ ``[B, d]`` → ``[B]`` (−inf outside the support).
        init: starting points ``[C, d]`` with finite log-density.
        num_sweeps: sweeps over all coordinates.
        widths: initial interval widths ``[d]``.
        generator: source of all randomness.

    Returns:
        The chains after each sweep, ``[C, num_sweeps, d]``.
    """
    theta = init.clone()
    chains, d = theta.shape
    logp = finite_or_minus_inf(log_fn(theta))
    if not torch.isfinite(logp).all():
        raise ValueError("slice_sample needs starting points with finite log-density")
    out = torch.empty(chains, num_sweeps, d, dtype=theta.dtype)
    rand = lambda *shape: uniform(*shape, generator=generator, device=theta.device, dtype=theta.dtype)  # noqa: E731
    for sweep in tqdm(range(num_sweeps), desc="MCMC", disable=not progress, leave=False, unit="sweep"):
        for j in range(d):
            level = logp + torch.log(rand(chains))
            w = widths[j]
            lower = theta[:, j] - w * rand(chains)
            upper = lower + w
            # Stepping out with Neal's budget split between the two ends.
            budget_left = torch.floor(max_step_out * rand(chains))
            budget_right = max_step_out - 1 - budget_left
            for bound, budget, sign in ((lower, budget_left, -1.0), (upper, budget_right, 1.0)):
                active = torch.ones(chains, dtype=torch.bool)
                for _ in range(max_step_out):
                    active &= budget > 0
                    if not active.any():
                        break
                    probe = theta[active].clone()
                    probe[:, j] = bound[active]
                    above = finite_or_minus_inf(log_fn(probe).cpu()) > level[active]
                    idx = torch.nonzero(active).flatten()
                    bound[idx[above]] += sign * w
                    budget[idx] -= 1
                    active[idx[~above]] = False
            # Shrinkage.
            pending = torch.ones(chains, dtype=torch.bool)
            for _ in range(max_shrink):
                idx = torch.nonzero(pending).flatten()
                if idx.numel() == 0:
                    break
                proposal = theta[idx].clone()
                proposal[:, j] = lower[idx] + (upper[idx] - lower[idx]) * rand(idx.numel())
                lp = finite_or_minus_inf(log_fn(proposal).cpu())
                accept = lp > level[idx]
                acc = idx[accept]
                theta[acc] = proposal[accept]
                logp[acc] = lp[accept]
                pending[acc] = False
                rej = idx[~accept]
                left = proposal[~accept, j] < theta[rej, j]
                lower[rej[left]] = proposal[~accept][left, j]
                upper[rej[~left]] = proposal[~accept][~left, j]
            # A chain whose bracket collapsed without acceptance keeps its state (still a valid MCMC move).
        out[:, sweep] = theta
    return out
