r"""Tests that calibration statistics are uniform: SBC ranks on {0, …, L} and coverage credibilities on (0, 1)."""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = ["chi2_uniform_pvalue", "ks_uniform"]


def chi2_uniform_pvalue(ranks: Tensor, num_samples: int, bins: int) -> float:
    r"""p-value of Pearson's χ² test that integer ranks ``[n]`` are uniform on {0, …, L}, L = ``num_samples``.

    The L + 1 rank values are grouped into ``bins`` groups of consecutive values, each with its exact expected
    count n · |group| / (L + 1); the statistic Σ (O − E)²/E is referred to χ²(bins − 1).
    """
    from scipy.stats import chi2

    edges = np.floor(np.arange(num_samples + 1) * bins / (num_samples + 1)).astype(int)  # group of each rank value
    expected = np.bincount(edges, minlength=bins) / (num_samples + 1) * ranks.shape[0]
    observed = np.bincount(edges[ranks.numpy().astype(int)], minlength=bins)
    stat = float(((observed - expected) ** 2 / expected).sum())
    return float(chi2.sf(stat, bins - 1))


def ks_uniform(u: Tensor) -> tuple[float, float]:
    """Kolmogorov–Smirnov statistic max |ECDF(u) − u| and its p-value for ``u`` ``[n]`` against U(0, 1)."""
    from scipy.stats import kstest

    res = kstest(u.double().numpy(), "uniform")
    return float(res.statistic), float(res.pvalue)
