r"""Affine-invariant ensemble MCMC with the stretch move (Goodman & Weare 2010; emcee), vectorised.

The ensemble of :math:`W` walkers is split into two halves. Each walker :math:`x_k` of one half, in turn,
draws a partner :math:`x_j` from the other half and proposes

.. math:: y = x_j + z (x_k - x_j), \qquad g(z) \propto z^{-1/2} \text{ on } [1/a, a],

accepted with probability :math:`\min\{1, z^{d-1} \pi(y) / \pi(x_k)\}`. This leaves the product density
:math:`\prod_k \pi(x_k)` invariant, so once the ensemble has forgotten its start (burn-in), the walkers at
one step are draws of :math:`\pi`. Successive snapshots of a walker are correlated (integrated
autocorrelation of a few tens of steps in 5-D), hence the thinning.

Any number of independent ensembles run together: walkers have shape ``[..., W, d]`` and the target maps
``[..., K, d]`` to ``[..., K]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

LogProb = Callable[[Tensor], Tensor]


def stretch_move_sample(
    log_prob: LogProb,
    walkers: Tensor,
    num_samples: int,
    *,
    burn_in: int = 1000,
    thin: int = 10,
    a: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Sample :math:`\pi \propto \exp(\text{log\_prob})` with an ensemble of stretch-move walkers.

    Args:
        log_prob: log target up to a constant, ``[..., K, d]`` → ``[..., K]`` (``-inf`` outside the support).
        walkers: starting ensemble ``[..., W, d]``, ``W`` even and ``≥ 2 d``, every walker with finite
            ``log_prob``, not all on one hyperplane.
        num_samples: samples returned per ensemble.
        burn_in: steps discarded before the first snapshot (one step updates every walker once).
        thin: steps between snapshots; each snapshot contributes all ``W`` walkers.
        a: stretch scale, ``a > 1``.
        generator: source of randomness.

    Returns:
        ``[..., num_samples, d]``: the snapshots after ``burn_in`` steps, every ``thin`` steps, concatenated
        over walkers and truncated to ``num_samples``.
    """
    *batch, num_walkers, dim = walkers.shape
    if num_walkers % 2 or num_walkers < 2 * dim:
        raise ValueError(f"need an even number of walkers >= 2 * dim = {2 * dim}, got {num_walkers}")
    half = num_walkers // 2
    halves = [walkers[..., :half, :], walkers[..., half:, :]]
    log_probs = [log_prob(h) for h in halves]
    if not all(torch.isfinite(lp).all() for lp in log_probs):
        raise ValueError("every starting walker must have a finite log_prob")

    num_snapshots = math.ceil(num_samples / num_walkers)
    snapshots = []
    for step in range(burn_in + (num_snapshots - 1) * thin + 1):
        for k in (0, 1):
            halves[k], log_probs[k] = _stretch(log_prob, halves[k], log_probs[k], halves[1 - k], a, generator)
        if step >= burn_in and (step - burn_in) % thin == 0:
            snapshots.append(torch.cat(halves, dim=-2))
    return torch.cat(snapshots, dim=-2)[..., :num_samples, :]


def _stretch(
    log_prob: LogProb, x: Tensor, lp: Tensor, others: Tensor, a: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One stretch move of every walker in ``x [..., K, d]`` against the complementary half ``others``."""
    *batch, k, dim = x.shape
    options = dict(dtype=x.dtype, generator=generator)
    partner = torch.randint(0, others.shape[-2], (*batch, k), generator=generator)
    partner = torch.gather(others, -2, partner[..., None].expand(*batch, k, dim))
    z = ((a - 1.0) * torch.rand(*batch, k, **options) + 1.0) ** 2 / a  # density ∝ z^{-1/2} on [1/a, a]
    y = partner + z[..., None] * (x - partner)
    lp_y = log_prob(y)
    log_ratio = (dim - 1) * torch.log(z) + lp_y - lp
    accept = torch.log(torch.rand(*batch, k, **options)) < log_ratio  # NaN/-inf never accepted
    return torch.where(accept[..., None], y, x), torch.where(accept, lp_y, lp)
