"""Figures: corner plots of posterior samples (grown by later issues: calibration, ranks, maps, spectra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .estimators import as_tensor

__all__ = ["corner"]


def corner(
    samples: Any,
    reference: Any | None = None,
    truth: Any | None = None,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 40,
    limits: Sequence[tuple[float, float]] | None = None,
) -> Figure:
    """Corner plot: 1-D histograms on the diagonal, 2-D histograms below it.

    Args:
        samples: ``[n, d]`` draws (e.g. from a posterior), drawn in blue.
        reference: optional ``[m, d]`` reference draws (e.g. the exact posterior), drawn as orange contours.
        truth: optional ``[d]`` true parameter, marked by lines.
        labels: axis labels (default θ₁ … θ_d).
        bins: histogram bins per axis.
        limits: per-dimension (low, high); default: the joint range of samples and reference.

    Returns:
        The matplotlib Figure.
    """
    s = as_tensor(samples, "samples").numpy()
    if s.ndim != 2:
        raise ValueError(f"samples must be [n, d]; got shape {s.shape}")
    d = s.shape[1]
    ref = None if reference is None else as_tensor(reference, "reference").numpy()
    if ref is not None and (ref.ndim != 2 or ref.shape[1] != d):
        raise ValueError(f"reference must be [m, {d}]; got shape {ref.shape}")
    t = None if truth is None else as_tensor(truth, "truth").numpy().reshape(-1)
    if t is not None and t.shape[0] != d:
        raise ValueError(f"truth must have {d} entries; got {t.shape[0]}")
    labels = list(labels) if labels is not None else [f"$\\theta_{{{i + 1}}}$" for i in range(d)]
    if len(labels) != d:
        raise ValueError(f"labels must have {d} entries; got {len(labels)}")
    if limits is None:
        both = s if ref is None else np.concatenate([s, ref])
        lo, hi = np.quantile(both, 0.001, axis=0), np.quantile(both, 0.999, axis=0)
        pad = 0.05 * (hi - lo + 1e-12)
        limits = list(zip(lo - pad, hi + pad, strict=True))

    size = max(2.0, min(2.6, 12.0 / d))
    fig, axes = plt.subplots(d, d, figsize=(size * d, size * d), squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                edges = np.linspace(*limits[i], bins + 1)
                ax.hist(s[:, i], bins=edges, density=True, color="C0", alpha=0.6, label="samples")
                if ref is not None:
                    ax.hist(ref[:, i], bins=edges, density=True, histtype="step", color="C1", lw=1.5,
                            label="reference")
                if t is not None:
                    ax.axvline(t[i], color="k", lw=1)
                ax.set_yticks([])
            else:
                ranges = [limits[j], limits[i]]
                ax.hist2d(s[:, j], s[:, i], bins=bins, range=ranges, cmap="Blues")
                if ref is not None:
                    h, xe, ye = np.histogram2d(ref[:, j], ref[:, i], bins=bins // 2, range=ranges)
                    if h.max() > 0:
                        ax.contour((xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2, h.T,
                                   levels=np.quantile(h[h > 0], [0.5, 0.9]), colors="C1", linewidths=1)
                if t is not None:
                    ax.axvline(t[j], color="k", lw=1)
                    ax.axhline(t[i], color="k", lw=1)
                    ax.plot(t[j], t[i], "ks", ms=4)
            ax.set_xlim(limits[j])
            if i != j:
                ax.set_ylim(limits[i])
            if i == d - 1:
                ax.set_xlabel(labels[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
            elif i != j:
                ax.set_yticklabels([])
    if ref is not None:
        axes[0, 0].legend(fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    return fig
