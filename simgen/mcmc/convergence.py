r"""Convergence diagnostics of several chains: rank-normalised split-R̂ and bulk effective sample size.

Both follow Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-normalization, folding, and localization:
an improved R̂ for assessing convergence of MCMC", Bayesian Analysis 16(2), with the definitions of ArviZ
(``arviz.rhat(method="rank")``, ``arviz.ess(method="bulk")``) and Stan, which the test suite checks them against.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["split_rhat", "effective_sample_size"]


def _as_chains(chains: Any) -> np.ndarray:
    """``[C, n]`` or ``[C, n, k]`` array-like → float64 ``[C, n, k]``."""
    a = np.asarray(chains.detach().cpu() if isinstance(chains, Tensor) else chains, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"chains must have shape [C, n] or [C, n, k]; got {list(a.shape)}")
    return a


def _split(a: np.ndarray) -> np.ndarray:
    """Each chain cut into its first and second half (the middle draw of an odd length dropped): ``[2C, n//2, k]``."""
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half :]], axis=0)


def _rank_normalise(a: np.ndarray) -> np.ndarray:
    r"""z = Φ⁻¹((r − 3/8) / (S + 1/4)), r the rank of each draw among all S = C·n draws (ties averaged)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    chains, n, k = a.shape
    ranks = rankdata(a.reshape(chains * n, k), axis=0)
    return ndtri((ranks - 0.375) / (chains * n + 0.25)).reshape(chains, n, k)


def _rhat_classic(a: np.ndarray) -> np.ndarray:
    r"""R̂ = √(V̂ / W) with W the mean within-chain variance, B/n the variance of the chain means and
    V̂ = (n − 1)/n W + B/n (Gelman & Rubin 1992). ``[C, n, k]`` → ``[k]``."""
    n = a.shape[1]
    w = a.var(axis=1, ddof=1).mean(axis=0)
    b_over_n = a.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(((n - 1) / n * w + b_over_n) / w)


def split_rhat(chains: Any) -> Tensor:
    r"""Rank-normalised split-R̂ per quantity (Vehtari et al. 2021): the larger of the split-R̂ of the
    rank-normalised draws (bulk) and of the rank-normalised folded draws |θ − median θ| (tails).

    Each chain is split in halves, so a drift within a chain shows up as disagreeing halves. R̂ ≈ 1 when the
    chains agree; chains stuck in different modes give R̂ ≫ 1. Values above 1.01–1.05 call for longer runs
    (or, for a posterior multimodal by symmetry, a mode-invariant quantity).

    Args:
        chains: draws ``[C, n]`` or ``[C, n, k]`` (C chains of n draws of k quantities), n ≥ 4.

    Returns:
        ``[k]`` float64 (NaN where a quantity is constant).
    """
    a = _as_chains(chains)
    if a.shape[1] < 4:
        raise ValueError(f"split-R̂ needs at least 4 draws per chain; got {a.shape[1]}")
    s = _split(a)
    bulk = _rhat_classic(_rank_normalise(s))
    folded = _rhat_classic(_rank_normalise(np.abs(s - np.median(s.reshape(-1, s.shape[2]), axis=0))))
    return torch.from_numpy(np.fmax(bulk, folded))


def _autocovariance(a: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each chain at every lag by FFT: ``[C, n]`` → ``[C, n]``."""
    n = a.shape[1]
    centred = a - a.mean(axis=1, keepdims=True)
    size = 2 ** math.ceil(math.log2(2 * n))
    f = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(f * np.conjugate(f), n=size, axis=1)[:, :n] / n


def _ess_1d(a: np.ndarray) -> float:
    r"""Multi-chain ESS of one quantity ``[C, n]`` (Stan's estimator): ρ̂_t = 1 − (W − mean_c γ̂_{c,t}) / V̂,
    summed as Geyer's initial positive and monotone sequence, ESS = C·n / τ̂, τ̂ = −1 + 2 Σ ρ̂_t."""
    chains, n = a.shape
    acov = _autocovariance(a)
    w = acov[:, 0].mean() * n / (n - 1)
    var_plus = w * (n - 1) / n + (a.mean(axis=1).var(ddof=1) if chains > 1 else 0.0)
    if not var_plus > 0:
        return float("nan")
    rho = np.zeros(n)
    rho[0] = 1.0
    mean_acov = acov.mean(axis=0)
    rho_even, rho_odd = 1.0, 1.0 - (w - mean_acov[1]) / var_plus
    rho[1] = rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0:
        rho_even = 1.0 - (w - mean_acov[t + 1]) / var_plus
        rho_odd = 1.0 - (w - mean_acov[t + 2]) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1], rho[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1  # initial monotone sequence
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2
        t += 2
    total = chains * n
    tau = -1.0 + 2.0 * rho[: max_t + 1].sum() + rho[max_t + 1]
    return float(total / max(tau, 1.0 / math.log10(total)))


def effective_sample_size(chains: Any) -> Tensor:
    r"""Bulk effective sample size per quantity (Vehtari et al. 2021): the multi-chain ESS, C·n / τ̂ with
    τ̂ = 1 + 2 Σ_{t≥1} ρ̂_t the integrated autocorrelation time (Geyer's initial monotone sequence), of the
    rank-normalised split chains. About C·n for independent draws, less for correlated ones.

    Args:
        chains: draws ``[C, n]`` or ``[C, n, k]``, n ≥ 10 (split halves of at least 5).

    Returns:
        ``[k]`` float64.
    """
    a = _as_chains(chains)
    if a.shape[1] < 10:
        raise ValueError(f"the effective sample size needs at least 10 draws per chain; got {a.shape[1]}")
    z = _rank_normalise(_split(a))
    return torch.tensor([_ess_1d(z[:, :, j]) for j in range(z.shape[2])], dtype=torch.float64)
