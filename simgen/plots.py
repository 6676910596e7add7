"""Figures: corner plots of posterior samples, VAE latent spaces (grown by later issues: calibration, ranks, maps,
spectra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .estimators import as_tensor

__all__ = ["corner", "latent_space"]


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
        u = wrapper.to_latent(y.to(device))[0] if wrapper is not None else y.to(device)
        embed = wrapper.context if wrapper is not None else (lambda t: t)
        ctx = None if c is None else embed(c.to(device))
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
        c_star = None if c_star is None else embed(c_star.to(device)).expand(z.shape[0], -1)
        dec = family.decode(z.to(device=device, dtype=torch.float32), c_star).mean
        dec = (wrapper.from_latent(dec) if wrapper is not None else dec).cpu().numpy()

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
