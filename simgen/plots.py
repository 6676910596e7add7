r"""Figures: corner plots, calibration (coverage, SBC ranks), training curves, map galleries, power spectra,
histograms, VAE latent spaces.

Every function returns its matplotlib ``Figure`` and never calls ``plt.show()`` (save it with
``fig.savefig(...)``, or embed it in a :class:`simgen.report.Report`; close it with ``plt.close(fig)`` when drawing
many). Inputs are array-likes (torch or numpy), batch first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .diagnostics.maps import binned_power_spectrum, power_spectrum_bins
from .utils import as_tensor

__all__ = ["corner", "coverage", "sbc_ranks", "loss_curves", "maps", "power_spectra", "histograms", "latent_space"]


def _sample_sets(samples: Any, what: str = "samples") -> dict[str, np.ndarray]:
    """One array, a sequence of arrays or a mapping name → array → ordered name → ``[n, ...]`` numpy arrays."""
    if isinstance(samples, Mapping):
        items = list(samples.items())
    elif isinstance(samples, list | tuple) and samples and all(
        isinstance(s, torch.Tensor | np.ndarray) for s in samples
    ):
        items = [(f"set {k + 1}", s) for k, s in enumerate(samples)]
    else:
        items = [(what, samples)]
    if not items:
        raise ValueError(f"{what} must hold at least one sample set")
    return {str(name): as_tensor(s, f"{what} {name!r}").numpy() for name, s in items}


def _hpd_thresholds(h: np.ndarray, masses: Sequence[float], total: float) -> list[float]:
    """Density thresholds t_p such that the cells with h ≥ t_p hold mass p (h: counts, ``total`` all counts)."""
    flat = np.sort(h.reshape(-1))[::-1]
    cum = np.cumsum(flat) / max(total, 1e-300)
    out = []
    for p in masses:
        k = int(np.searchsorted(cum, p))
        out.append(float(flat[min(k, flat.size - 1)]))
    return out


def _limits(sets: Sequence[np.ndarray], truth: np.ndarray | None, d: int) -> list[tuple[float, float]]:
    """Per dimension: the union over sets of their central 99 % ranges (and the truth), padded by 8 %."""
    lo = np.min([np.nanquantile(s, 0.005, axis=0) for s in sets], axis=0)
    hi = np.max([np.nanquantile(s, 0.995, axis=0) for s in sets], axis=0)
    if truth is not None:
        lo, hi = np.minimum(lo, truth), np.maximum(hi, truth)
    span = hi - lo
    pad = 0.08 * np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))
    return [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad, strict=True)]


def corner(
    samples: Any,
    reference: Any | None = None,
    truth: Any | None = None,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 40,
    limits: Sequence[tuple[float, float]] | None = None,
    levels: Sequence[float] = (0.68, 0.95),
    smooth: float = 1.0,
) -> Figure:
    r"""Corner plot: 1-D marginal histograms on the diagonal, 2-D marginals below it, several sample sets overlaid.

    Each set gets a colour (C0, C1, …): step histograms on the diagonal, and below it the contours of its
    highest-density credible regions at ``levels`` (by default 68 % and 95 %): on a 2-D histogram (``bins`` cells
    per axis, at most √n for n draws and at least 12) smoothed by a Gaussian of ``smooth`` cells, the region
    {h ≥ t_p} with t_p chosen so that it holds a share p of the set's draws. The first set is also shaded (its
    2-D histogram, or filled regions when sets are overlaid). Default ranges are the union over the sets of their
    central 99 % intervals, so every mode of a multimodal posterior is in view and stray draws do not stretch
    the axes.

    Args:
        samples: ``[n, d]`` draws; or several sets, as a sequence of arrays or a mapping name → ``[n_k, d]``
            (overlaid, with a legend).
        reference: optional ``[m, d]`` reference draws (e.g. the exact posterior), overlaid as a set named
            "reference".
        truth: optional ``[d]`` true parameter, marked by black lines and a square.
        labels: axis labels (default θ₁ … θ_d).
        bins: histogram bins per axis.
        limits: per-dimension (low, high); default as above.
        levels: credible masses of the 2-D contours.
        smooth: Gaussian smoothing of the 2-D histograms, in bins (0: none).

    Returns:
        The matplotlib Figure: a d × d grid of axes (row-major), the ones above the diagonal hidden.
    """
    from scipy.ndimage import gaussian_filter

    if isinstance(samples, Mapping) or (isinstance(samples, list | tuple) and samples and all(
            isinstance(s, torch.Tensor | np.ndarray) for s in samples)):
        sets = _sample_sets(samples)
    else:
        s = as_tensor(samples, "samples").numpy()
        if s.ndim != 2:
            raise ValueError(f"samples must be [n, d]; got shape {s.shape}")
        sets = {"samples": s}
    d = next(iter(sets.values())).shape[1] if next(iter(sets.values())).ndim == 2 else -1
    for name, s in sets.items():
        if s.ndim != 2 or s.shape[1] != d:
            raise ValueError(f"samples must be [n, d] with one d for every set; set {name!r} has shape {s.shape}")
    if reference is not None:
        ref = as_tensor(reference, "reference").numpy()
        if ref.ndim != 2 or ref.shape[1] != d:
            raise ValueError(f"reference must be [m, {d}]; got shape {ref.shape}")
        sets["reference"] = ref
    t = None if truth is None else as_tensor(truth, "truth").numpy().reshape(-1)
    if t is not None and t.shape[0] != d:
        raise ValueError(f"truth must have {d} entries; got {t.shape[0]}")
    labels = list(labels) if labels is not None else [f"$\\theta_{{{i + 1}}}$" for i in range(d)]
    if len(labels) != d:
        raise ValueError(f"labels must have {d} entries; got {len(labels)}")
    if limits is None:
        limits = _limits(list(sets.values()), t, d)
    elif len(limits) != d:
        raise ValueError(f"limits must have {d} (low, high) pairs; got {len(limits)}")
    masses = sorted(float(p) for p in levels)
    if not masses or not all(0 < p < 1 for p in masses):
        raise ValueError(f"levels must be credible masses in (0, 1); got {list(levels)}")

    size = max(2.0, min(2.6, 12.0 / d))
    fig, axes = plt.subplots(d, d, figsize=(size * d, size * d), squeeze=False)
    colors = [f"C{k}" for k in range(len(sets))]
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            for k, (name, s) in enumerate(sets.items()):
                if i == j:
                    edges = np.linspace(*limits[i], bins + 1)
                    if k == 0:
                        ax.hist(s[:, i], bins=edges, density=True, color=colors[k], alpha=0.25)
                    ax.hist(s[:, i], bins=edges, density=True, histtype="step", color=colors[k], lw=1.4,
                            label=name)
                    continue
                ranges = [limits[j], limits[i]]
                bins_2d = min(bins, max(12, int(math.sqrt(s.shape[0]))))  # fewer cells for few draws
                h, xe, ye = np.histogram2d(s[:, j], s[:, i], bins=bins_2d, range=ranges)
                if k == 0 and len(sets) == 1:
                    ax.imshow(h.T, origin="lower", extent=(*limits[j], *limits[i]), aspect="auto", cmap="Blues")
                hs = gaussian_filter(h, smooth) if smooth > 0 else h
                if hs.max() <= 0:
                    continue
                thresholds = sorted(set(_hpd_thresholds(hs, masses, float(s.shape[0]))))
                thresholds = [v for v in thresholds if v > 0]
                centers = ((xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2)
                if k == 0 and len(sets) > 1 and thresholds:
                    ax.contourf(*centers, hs.T, levels=[*thresholds, hs.max() * 1.0001], cmap="Blues",
                                alpha=0.5)
                if thresholds:
                    ax.contour(*centers, hs.T, levels=thresholds, colors=colors[k], linewidths=1.1)
            if t is not None:
                ax.axvline(t[j], color="k", lw=1)
                if i != j:
                    ax.axhline(t[i], color="k", lw=1)
                    ax.plot(t[j], t[i], "ks", ms=4)
            if i == j:
                ax.set_yticks([])
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
    if len(sets) > 1 or t is not None:
        handles = [Line2D([], [], color=c, lw=1.5) for c in colors]
        names = list(sets)
        if t is not None:
            handles.append(Line2D([], [], color="k", marker="s", ms=4, lw=1))
            names.append("truth")
        if d > 1:
            fig.legend(handles, names, loc="upper right", frameon=False, fontsize=9)
        else:
            axes[0, 0].legend(handles, names, fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ calibration


def coverage(result: Any, *, confidence: float = 0.95) -> Figure:
    r"""Expected coverage C(α) against credibility α: the diagonal (calibration), a band of half-width
    ε = √(ln(2/(1 − c))/(2n)) around it (Dvoretzky–Kiefer–Wolfowitz: with probability ≥ ``confidence`` the
    whole curve of a calibrated posterior lies inside), HPD curves solid and TARP curves dashed. Below the
    diagonal: over-confident; above: under-confident.

    Args:
        result: a :class:`simgen.diagnostics.CoverageResult`, or a mapping name → result (overlaid).
        confidence: of the band.

    Returns:
        The Figure, one axes.
    """
    results = dict(result) if isinstance(result, Mapping) else {"": result}
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    grid = np.linspace(0, 1, 101)
    n = min(r.tarp_credibility.shape[0] for r in results.values())
    eps = math.sqrt(math.log(2 / (1 - confidence)) / (2 * n))
    ax.fill_between(grid, np.clip(grid - eps, 0, 1), np.clip(grid + eps, 0, 1), color="0.85",
                    label=f"{confidence:.0%} band (n = {n})")
    ax.plot([0, 1], [0, 1], color="k", lw=1, ls=":")
    notes = []
    for k, (name, r) in enumerate(results.items()):
        prefix = f"{name}: " if name else ""
        levels = as_tensor(r.levels, "levels").numpy()
        if r.hpd is not None:
            ax.plot(levels, as_tensor(r.hpd, "hpd").numpy(), color=f"C{k}", lw=1.8, label=f"{prefix}HPD")
        ax.plot(levels, as_tensor(r.tarp, "tarp").numpy(), color=f"C{k}", lw=1.5, ls="--", label=f"{prefix}TARP")
        if r.note:
            notes.append(r.note)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level α")
    ax.set_ylabel("expected coverage")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    if notes:
        ax.set_title("HPD skipped: log_prob is an ODE solve" if any("ODE" in s for s in notes) else notes[0],
                     fontsize=8)
    fig.tight_layout()
    return fig


def _grid(count: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, list[Any]]:
    """``count`` axes in a grid of at most ``ncols`` columns; extra cells hidden."""
    cols = max(1, min(ncols, count))
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    flat = list(axes.reshape(-1))
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def sbc_ranks(
    result: Any,
    *,
    kind: str = "hist",
    labels: Sequence[str] | None = None,
    bins: int | None = None,
    confidence: float = 0.99,
) -> Figure:
    r"""SBC rank statistics, one panel per parameter.

    ``kind="hist"``: histogram of the ranks in ``bins`` groups with the band holding each group's count with
    probability ``confidence`` under uniformity (binomial quantiles; Talts et al. 2018). ``kind="ecdf"``: the
    ECDF difference F̂(u) − u of the normalised ranks u = (r + ½)/(L + 1), with the simultaneous
    Dvoretzky–Kiefer–Wolfowitz band ±√(ln(2/(1 − c))/(2n)). A ∪ shape (hist) or an S-shaped dip-then-rise (ECDF)
    means over-confidence; ∩ / the opposite S under-confidence; a slope or a one-sided ECDF bias.

    Args:
        result: a :class:`simgen.diagnostics.SBCResult` (``.ranks`` ``[n, d]``, ``.num_samples`` L).
        kind: ``"hist"`` or ``"ecdf"``.
        labels: parameter names (default θ₁ … θ_d).
        bins: groups of the histogram (default: ``result.bins``).
        confidence: of the bands.

    Returns:
        The Figure, one visible axes per parameter (at most 4 per row).
    """
    from scipy.stats import binom

    if kind not in ("hist", "ecdf"):
        raise ValueError(f"kind must be 'hist' or 'ecdf'; got {kind!r}")
    ranks = as_tensor(result.ranks, "ranks").numpy()
    n, d = ranks.shape
    num = int(result.num_samples)
    labels = list(labels) if labels is not None else [f"$\\theta_{{{i + 1}}}$" for i in range(d)]
    if len(labels) != d:
        raise ValueError(f"labels must have {d} entries; got {len(labels)}")
    fig, axes = _grid(d, 4, (3.0, 2.6))
    if kind == "hist":
        bins = int(bins or getattr(result, "bins", 20))
        group = np.floor(np.arange(num + 1) * bins / (num + 1)).astype(int)
        p = np.bincount(group, minlength=bins) / (num + 1)
        lo, hi = binom.ppf((1 - confidence) / 2, n, p), binom.ppf((1 + confidence) / 2, n, p)
        x = np.arange(bins)
        for j, ax in enumerate(axes):
            counts = np.bincount(group[ranks[:, j].astype(int)], minlength=bins)
            ax.fill_between(np.append(x, bins), np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post",
                            color="0.85", label=f"{confidence:.0%} band")
            ax.step(np.append(x, bins), np.append(counts, counts[-1]), where="post", color="C0", lw=1.5)
            ax.axhline(n * p.mean(), color="k", lw=0.8, ls=":")
            ax.set_xlim(0, bins)
            ax.set_xticks([0, bins], ["0", str(num)])
            ax.set_xlabel(f"rank of {labels[j]}")
            ax.set_ylabel("count" if j % 4 == 0 else "")
    else:
        eps = math.sqrt(math.log(2 / (1 - confidence)) / (2 * n))
        grid = np.linspace(0, 1, 201)
        for j, ax in enumerate(axes):
            u = np.sort((ranks[:, j] + 0.5) / (num + 1))
            ecdf = np.searchsorted(u, grid, side="right") / n
            ax.fill_between(grid, -eps, eps, color="0.85", label=f"{confidence:.0%} band")
            ax.plot(grid, ecdf - grid, color="C0", lw=1.5)
            ax.axhline(0, color="k", lw=0.8, ls=":")
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"normalised rank of {labels[j]}")
            ax.set_ylabel("ECDF − uniform" if j % 4 == 0 else "")
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ training


def _history_fields(h: Any) -> dict[str, Any]:
    if isinstance(h, Mapping):
        return dict(h)
    if hasattr(h, "train_loss"):
        return {k: getattr(h, k, None) for k in ("train_loss", "validation_loss", "learning_rate", "best_epoch",
                                                "initial_validation_loss")}
    raise ValueError(f"a training history must be a TrainingHistory or its to_dict(); got {type(h).__name__}")


def loss_curves(history: Any) -> Figure:
    """Training and validation losses per epoch (left; the restored best epoch marked) and the learning rate
    (right, log scale).

    Args:
        history: a :class:`simgen.TrainingHistory` (or its ``to_dict()``), or a mapping name → history
            (overlaid, one colour each).

    Returns:
        The Figure, two axes: losses, learning rate.
    """
    if isinstance(history, Mapping) and "train_loss" not in history:
        runs = {str(k): _history_fields(v) for k, v in history.items()}
    else:
        runs = {"": _history_fields(history)}
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
    for k, (name, h) in enumerate(runs.items()):
        train, val = list(h.get("train_loss") or []), list(h.get("validation_loss") or [])
        if not train and not val:
            raise ValueError(f"history {name!r} has no losses")
        prefix = f"{name}: " if name else ""
        color = f"C{k}"
        ax.plot(np.arange(len(train)), train, color=color, ls="--", lw=1.2, label=f"{prefix}train")
        ax.plot(np.arange(len(val)), val, color=color, lw=1.6, label=f"{prefix}validation")
        best = h.get("best_epoch")
        if best is not None and 0 <= best < len(val):
            ax.plot(best, val[best], "o", color=color, ms=6, mfc="none")
        elif best == -1 and h.get("initial_validation_loss") is not None:  # the initial state, returned
            ax.plot(-1, h["initial_validation_loss"], "o", color=color, ms=6, mfc="none")
        lr = list(h.get("learning_rate") or [])
        if lr:
            ax_lr.plot(np.arange(len(lr)), lr, color=color, lw=1.4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("losses (○: restored best epoch; at −1, the initial state)", fontsize=9)
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ maps


def _map_sets(simulated: Any, emulated: Any | None, what: str) -> dict[str, np.ndarray]:
    """Named ``[n, H, W]`` arrays (first channel of ``[n, C, H, W]``)."""
    if isinstance(simulated, Mapping):
        sets = _sample_sets(simulated, what)
    else:
        sets = {"simulated": as_tensor(simulated, "simulated").numpy()}
        if emulated is not None:
            sets["emulated"] = as_tensor(emulated, "emulated").numpy()
    out = {}
    for name, m in sets.items():
        if m.ndim == 4:
            m = m[:, 0]
        if m.ndim != 3:
            raise ValueError(f"{what} {name!r} must be maps [n, H, W] or [n, C, H, W]; got shape {m.shape}")
        out[name] = m
    return out


def maps(
    simulated: Any,
    emulated: Any | None = None,
    *,
    num: int = 4,
    cmap: str = "magma",
) -> Figure:
    """Galleries of maps, one row per set (e.g. simulated above emulated), on one colour scale.

    Args:
        simulated: maps ``[n, H, W]`` (or ``[n, C, H, W]``: the first channel is shown), or a mapping
            name → maps (one row each).
        emulated: maps of the same shape, shown in the second row.
        num: maps per row (the first ``num`` of each set).
        cmap: matplotlib colour map.

    Returns:
        The Figure: rows × ``num`` image axes (row-major), then the colour bar's axes.
    """
    sets = _map_sets(simulated, emulated, "maps")
    if num < 1:
        raise ValueError(f"num must be >= 1; got {num}")
    num = min(num, min(m.shape[0] for m in sets.values()))
    pooled = np.concatenate([m[:num].reshape(-1) for m in sets.values()])
    vmin, vmax = np.quantile(pooled, [0.005, 0.995])
    rows = len(sets)
    fig, axes = plt.subplots(rows, num, figsize=(1.9 * num + 0.8, 1.9 * rows + 0.3), squeeze=False)
    image = None
    for r, (name, m) in enumerate(sets.items()):
        for c in range(num):
            ax = axes[r, c]
            image = ax.imshow(m[c], cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
    return fig


def power_spectra(
    simulated: Any,
    emulated: Any | None = None,
    *,
    side: float | None = None,
) -> Figure:
    r"""Binned power spectra C_b of map sets (:func:`simgen.diagnostics.maps.binned_power_spectrum`): mean over maps
    with a ±1 standard-deviation band, log–log; with two or more sets, a second panel shows each set's mean
    divided by the first's.

    Args:
        simulated: maps ``[n, N, N]`` (or ``[n, C, N, N]``: first channel), or a mapping name → maps.
        emulated: maps of the same shape.
        side: field side in radians (default that of :mod:`simgen.diagnostics.maps`, 5°), which sets ℓ_b = 2πb/L.

    Returns:
        The Figure: one axes (spectra), two with a ratio panel.
    """
    sets = _map_sets(simulated, emulated, "maps")
    n_pix = next(iter(sets.values())).shape[-1]
    kwargs = {} if side is None else {"side": side}
    ell = power_spectrum_bins(n_pix, **kwargs)[0].numpy()
    spectra = {name: binned_power_spectrum(m, **kwargs).double().numpy() for name, m in sets.items()}
    two = len(sets) > 1
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(5.2, 5.2 if two else 3.6), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1]} if two else None)
    ax = axes[0, 0]
    first = None
    for k, (name, c) in enumerate(spectra.items()):
        mean, std = c.mean(0), c.std(0)
        ax.plot(ell, mean, color=f"C{k}", lw=1.6, label=f"{name} ({c.shape[0]} maps)")
        ax.fill_between(ell, np.clip(mean - std, mean * 1e-3, None), mean + std, color=f"C{k}", alpha=0.2)
        if first is None:
            first = mean
        elif two:
            axes[1, 0].plot(ell, mean / first, color=f"C{k}", lw=1.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("$C_\\ell$")
    ax.legend(fontsize=8, frameon=False)
    if two:
        axes[1, 0].axhline(1, color="k", lw=0.8, ls=":")
        axes[1, 0].set_ylabel(f"ratio to {next(iter(spectra))}")
    axes[-1, 0].set_xlabel("$\\ell$")
    fig.tight_layout()
    return fig


def histograms(
    samples: Any,
    other: Any | None = None,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 30,
    max_panels: int = 16,
) -> Figure:
    """One histogram per observable, several sets overlaid (e.g. simulated vs emulated vectors).

    Rows ``[n, d]`` give one panel per dimension (the first ``max_panels``); rows of maps or any other
    ``[n, *shape]`` with more than one axis give a single panel of all values pooled (the pixel histogram).

    Args:
        samples: ``[n, *shape]``, or a mapping name → ``[n_k, *shape]`` (overlaid with a legend).
        other: a second set (named "emulated", the first then "simulated").
        labels: one name per observable (default x₁ … x_d).
        bins: bins per panel, shared by the sets (over their pooled central 99.8 %).
        max_panels: most panels drawn.

    Returns:
        The Figure, one visible axes per observable drawn (at most 4 per row).
    """
    if isinstance(samples, Mapping):
        sets = _sample_sets(samples)
    else:
        sets = {"simulated" if other is not None else "samples": as_tensor(samples, "samples").numpy()}
        if other is not None:
            sets["emulated"] = as_tensor(other, "other").numpy()
    shapes = {s.shape[1:] for s in sets.values()}
    if len(shapes) != 1:
        raise ValueError(f"every set must have rows of one shape; got {sorted(map(list, shapes))}")
    shape = shapes.pop()
    if len(shape) == 1:
        flat = {k: v for k, v in sets.items()}
        d = min(shape[0], max_panels)
        default = [f"$x_{{{i + 1}}}$" for i in range(d)]
    else:
        flat = {k: v.reshape(-1, 1) for k, v in sets.items()}
        d = 1
        default = ["pixel value"]
    labels = list(labels)[:d] if labels is not None else default
    if len(labels) != d:
        raise ValueError(f"labels must have at least {d} entries; got {len(labels)}")
    fig, axes = _grid(d, 4, (3.0, 2.5))
    for j, ax in enumerate(axes):
        pooled = np.concatenate([v[:, j] for v in flat.values()])
        pooled = pooled[np.isfinite(pooled)]
        lo, hi = np.quantile(pooled, [0.001, 0.999]) if pooled.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for k, (name, v) in enumerate(flat.items()):
            ax.hist(v[:, j], bins=edges, density=True, histtype="step", lw=1.4, color=f"C{k}", label=name)
        ax.set_xlabel(labels[j])
        ax.set_yticks([])
    if len(flat) > 1:
        axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ latent spaces


def latent_space(
    vae: Any,
    y: Any,
    c: Any | None = None,
    *,
    color: Any | None = None,
    color_label: str = "",
    context: Any | None = None,
    grid: int = 8,
) -> Figure:
    r"""A VAE's latent space: the codes of ``y`` coloured by a label or parameter, and decoded means over the
    latent plane.

    Left: the encoder means E_q[z | y_i, c_i], projected on their two principal directions when L > 2 (the
    axes are then "PC 1", "PC 2"), coloured by ``color`` — integer labels get one colour each, real values a
    colour bar (default: the first column of ``c``). Right: the decoder means E[y | z, c*] on a
    ``grid`` × ``grid`` lattice of that plane spanning ±2.5 standard deviations of the codes around their mean,
    at one context c* (``context``, default the first row of ``c``): an image per cell for maps, a curve per
    cell for vectors. A semantically organised latent space shows smooth variation across the lattice.

    Args:
        vae: a fitted estimator whose model is a :class:`~simgen.models.VAE` (``y`` and ``c`` then in data
            units, decoded means mapped back to them), a :class:`~simgen.models.TransformedDensity` around one,
            or a built :class:`~simgen.models.VAE` itself (``y``, ``c`` as it sees them).
        y: modelled rows ``[n, *y_shape]`` — for an emulator y = x, for a posterior estimator y = θ.
        c: their contexts ``[n, *c_shape]`` (``None`` for an unconditional model).
        color: ``[n]`` values or labels to colour the codes with.
        color_label: colour-bar title.
        context: the context row c* used to decode the lattice.
        grid: lattice points per axis.

    Returns:
        The matplotlib Figure.
    """
    from .models import VAE, TransformedDensity

    density = getattr(vae, "density", vae)
    wrapper = density if isinstance(density, TransformedDensity) else None
    family = wrapper.density if wrapper is not None else density
    if not isinstance(family, VAE):
        raise ValueError(f"latent_space needs a VAE (or an estimator fitted with model='vae'); got "
                         f"{type(family).__name__}")
    if family.latent < 2:
        raise ValueError("latent_space needs a latent space of at least 2 dimensions")
    if grid < 2:
        raise ValueError(f"grid must be >= 2; got {grid}")
    device = next(family.parameters()).device
    y = as_tensor(y, "y")
    if tuple(y.shape[1:]) != family.y_shape:
        raise ValueError(f"y must have shape [n, {', '.join(map(str, family.y_shape))}]; got {list(y.shape)}")
    c = None if c is None else as_tensor(c, "c")
    if c is not None and c.shape[0] != y.shape[0]:
        raise ValueError(f"y and c must have the same number of rows; got {y.shape[0]} and {c.shape[0]}")
    if (c is None) != (family.context_features is None):
        raise ValueError("c must be given for a conditional VAE and None for an unconditional one")
    with torch.no_grad():
        # the wrapper's pre-processing: standardised context s(c), latent-space y, embedded context e(s(c))
        standardized = wrapper.standardized_context if wrapper is not None else (lambda t: t)
        embed = wrapper.embed if wrapper is not None else (lambda t: t)
        c_std = None if c is None else standardized(c.to(device))
        u = wrapper.to_latent(y.to(device), c_std)[0] if wrapper is not None else y.to(device)
        ctx = None if c is None else embed(c_std)
        codes = family.encode(u, ctx).mean.cpu().double()
        center = codes.mean(0)
        if family.latent == 2:
            axes2, names = torch.eye(2, dtype=torch.float64), ("$z_1$", "$z_2$")
        else:
            axes2, names = torch.linalg.svd(codes - center, full_matrices=False)[2][:2].T, ("PC 1", "PC 2")
        proj = (codes - center) @ axes2
        spread = 2.5 * proj.std(0).clamp_min(1e-6)
        a, b = (torch.linspace(-1, 1, grid, dtype=torch.float64)[:, None] * spread).T
        aa, bb = torch.meshgrid(a, b, indexing="ij")  # row i: first axis, column j: second axis
        z = center + torch.stack([aa.flatten(), bb.flatten()], 1) @ axes2.T
        if context is not None:
            c_star = as_tensor(context, "context").reshape(1, *c.shape[1:]) if c is not None else None
        else:
            c_star = None if c is None else c[:1]
        c_star = None if c_star is None else standardized(c_star.to(device)).expand(z.shape[0], *c.shape[1:])
        dec = family.decode(z.to(device=device, dtype=torch.float32), None if c_star is None else embed(c_star)).mean
        dec = (wrapper.from_latent(dec, c_star) if wrapper is not None else dec).cpu().numpy()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
    p = proj.numpy()
    values = None if color is None else as_tensor(color, "color").numpy().reshape(-1)
    if values is None and c is not None:
        values = c.reshape(c.shape[0], -1)[:, 0].numpy()
        color_label = color_label or "c[0]"
    if values is not None and values.shape[0] != p.shape[0]:
        raise ValueError(f"color must have {p.shape[0]} entries; got {values.shape[0]}")
    if values is None:
        left.scatter(p[:, 0], p[:, 1], s=6, alpha=0.7)
    elif np.allclose(values, np.round(values)) and len(np.unique(values)) <= 10:
        for k, v in enumerate(np.unique(values)):
            sel = values == v
            left.scatter(p[sel, 0], p[sel, 1], s=6, alpha=0.7, color=f"C{k}", label=f"{v:g}")
        left.legend(title=color_label or None, fontsize=7, markerscale=2, frameon=False)
    else:
        points = left.scatter(p[:, 0], p[:, 1], c=values, s=6, alpha=0.8, cmap="viridis")
        fig.colorbar(points, ax=left, label=color_label)
    left.set_xlabel(names[0])
    left.set_ylabel(names[1])
    left.set_title("latent codes E[z | y, c]")

    if family.is_map:
        tiles = dec.reshape(grid, grid, *dec.shape[1:])
        tiles = tiles[:, :, 0] if tiles.ndim == 5 else tiles  # first channel of [C, H, W] maps
        h, w = tiles.shape[-2:]
        # lattice column j (second axis) runs left to right, row i (first axis) bottom to top
        mosaic = tiles[::-1].transpose(0, 2, 1, 3).reshape(grid * h, grid * w)
        right.imshow(mosaic, cmap="magma", extent=(0, grid, 0, grid))
        for k in range(1, grid):
            right.axhline(k, color="w", lw=0.6)
            right.axvline(k, color="w", lw=0.6)
        right.set_xticks([])
        right.set_yticks([])
    else:
        curves = dec.reshape(grid, grid, -1)
        lo, hi = curves.min(), curves.max()
        t = np.linspace(0.1, 0.9, curves.shape[-1])
        for i in range(grid):
            for j in range(grid):
                right.plot(j + t, i + 0.1 + 0.8 * (curves[i, j] - lo) / (hi - lo + 1e-12), color="C0", lw=1)
        right.set_xlim(0, grid)
        right.set_ylim(0, grid)
        right.set_xticks(np.arange(grid) + 0.5, [f"{v:.2g}" for v in b.numpy()], fontsize=6)
        right.set_yticks(np.arange(grid) + 0.5, [f"{v:.2g}" for v in a.numpy()], fontsize=6)
    right.set_xlabel(names[1])
    right.set_ylabel(names[0])
    right.set_title("decoded means E[y | z, c*]")
    fig.tight_layout()
    return fig
