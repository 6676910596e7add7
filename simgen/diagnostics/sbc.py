r"""Simulation-based calibration: ranks of the true parameter among posterior draws (Talts et al. 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..utils import as_tensor
from .draws import check_pairs, draw
from .uniformity import chi2_uniform_pvalue, ks_uniform

__all__ = ["SBCResult", "sbc", "sbc_from_draws"]


@dataclass
class SBCResult:
    r"""Simulation-based calibration (Talts et al. 2018, arXiv:1804.06788).

    For each test pair (θ*_i, x_i) with θ*_i ~ p(θ), x_i ~ p(x | θ*_i) and L posterior draws θ_{i,l} ~ q(θ | x_i),
    the rank of coordinate j is r_ij = #{l : θ_{i,l,j} < θ*_ij} ∈ {0, …, L} (sbi's convention). If q is the
    true posterior, r_ij is uniform on {0, …, L}. A ∪-shaped histogram means an over-confident (too narrow)
    posterior, a ∩ shape an under-confident one, a slope a bias.

    Attributes:
        ranks: ``[n, d_theta]`` integer-valued ranks (float32).
        pvalues: ``[d_theta]`` χ² uniformity test: ranks grouped into ``bins`` groups of consecutive values, each
            with its exact expected count n · |group| / (L + 1), statistic against χ²(bins − 1).
        num_samples: L.
        bins: groups of the χ² test.
        alpha: family-wise level of :attr:`flagged` (Bonferroni over the d_theta tests).
    """

    ranks: Tensor
    pvalues: Tensor
    num_samples: int
    bins: int
    alpha: float = 0.01

    @property
    def max_ecdf_deviation(self) -> Tensor:
        """``[d_theta]``: max_u |ECDF(u) − u| of the normalised mid-ranks u = (r + ½)/(L + 1)."""
        u = (self.ranks + 0.5) / (self.num_samples + 1)
        return torch.tensor([ks_uniform(u[:, j])[0] for j in range(u.shape[1])])

    @property
    def flagged(self) -> bool:
        """Some parameter's ranks reject uniformity at level ``alpha`` / d_theta."""
        return bool((self.pvalues < self.alpha / self.pvalues.numel()).any())

    def summary(self) -> str:
        worst = int(self.pvalues.argmin())
        verdict = "NOT uniform (miscalibrated)" if self.flagged else "consistent with uniform"
        dev = self.max_ecdf_deviation
        return (f"SBC on {self.ranks.shape[0]} test pairs, {self.num_samples} draws each: ranks {verdict}; "
                f"smallest p-value {float(self.pvalues[worst]):.3g} (parameter {worst + 1}); "
                f"max ECDF deviation {float(dev.max()):.3f}")


def sbc(
    posterior: Any,
    theta: Any,
    x: Any,
    *,
    num_samples: int = 100,
    bins: int | None = None,
    alpha: float = 0.01,
    seed: int | None = None,
    batch_size: int = 100,
) -> SBCResult:
    r"""Simulation-based calibration ranks with a uniformity test per parameter (see :class:`SBCResult`).

    Args:
        posterior: an object with ``sample_batched(n, xs)`` → ``[m, n, d_theta]`` (or ``sample(n, x)``).
        theta: ``[n, d_theta]`` test parameters drawn from the prior.
        x: ``[n, *x_shape]`` one simulation of each.
        num_samples: posterior draws L per test pair.
        bins: groups of the χ² test; default min(20, n // 5, L + 1), at least 2.
        alpha: family-wise level of ``flagged``.
        seed: makes the draws reproducible (see :mod:`simgen.diagnostics.draws`).
        batch_size: observations per ``sample_batched`` call.

    Returns:
        :class:`SBCResult` with ``.ranks`` ``[n, d_theta]`` and ``.pvalues`` ``[d_theta]``.
    """
    theta, x = check_pairs(theta, x)
    draws = draw(posterior, num_samples, x, seed, batch_size, "posterior")
    if draws.dim() != 3 or draws.shape[2] != theta.shape[1]:
        raise ValueError(f"posterior draws must be [m, n, {theta.shape[1]}]; got {list(draws.shape)}")
    return sbc_from_draws(draws, theta, bins=bins, alpha=alpha)


def sbc_from_draws(draws: Any, theta: Any, *, bins: int | None = None, alpha: float = 0.01) -> SBCResult:
    """:func:`sbc` on given draws ``[n, L, d_theta]`` (one set per test parameter ``theta`` ``[n, d_theta]``)."""
    draws, theta = as_tensor(draws, "draws"), as_tensor(theta, "theta")
    if draws.dim() != 3 or theta.dim() != 2 or draws.shape[0] != theta.shape[0] or draws.shape[2] != theta.shape[1]:
        raise ValueError(f"draws must be [n, L, d_theta] for theta [n, d_theta]; got {list(draws.shape)} and "
                         f"{list(theta.shape)}")
    n, num_samples = theta.shape[0], draws.shape[1]
    ranks = (draws < theta[:, None, :]).sum(dim=1).to(torch.float32)
    bins = bins if bins is not None else max(2, min(20, n // 5, num_samples + 1))
    if not 2 <= bins <= num_samples + 1:
        raise ValueError(f"bins must be in [2, L + 1 = {num_samples + 1}]; got {bins}")
    pvalues = torch.tensor([chi2_uniform_pvalue(ranks[:, j], num_samples, bins) for j in range(theta.shape[1])])
    return SBCResult(ranks=ranks, pvalues=pvalues, num_samples=num_samples, bins=bins, alpha=alpha)
