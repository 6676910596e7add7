r"""Summary statistics of maps: binned power spectrum, peak counts, one-point moments, pixel histogram.

Fixed functions of the data, never of :math:`\theta` (research/simulators.md §1.9), for comparing emulated
maps with simulated ones (:func:`~simgen.diagnostics.compare_likelihood`) and an observed map with its posterior
predictive (:func:`~simgen.diagnostics.posterior_predictive`); :func:`map_statistics` bundles them. Every
function takes maps ``[..., N, N]`` (numpy or torch, any leading batch dimensions, typically ``[n, N, N]``),
computes in float64 and returns a CPU ``torch.float32`` tensor ``[..., k]``.

- :func:`binned_power_spectrum`: :math:`\hat C_b = \frac{\Delta^2}{n_b N^2} \sum_{m \in b} |K[m]|^2` with
  :math:`K = \mathrm{fft2}(\kappa)`, bins :math:`|m| \in [b - \tfrac12, b + \tfrac12)`, :math:`b = 1, \dots, N/2`,
  :math:`n_b` the number of modes of :math:`\mathbb{Z}_N^2` in bin :math:`b` (:func:`power_spectrum_bins`),
  optionally minus the white-noise level :math:`\sigma_n^2 \Delta^2`. For a Gaussian random field whose pixel
  power :math:`p` is constant over a bin, :math:`\hat C_b \sim \mathrm{Gamma}(n_b/2,\ \text{scale } 2 p \Delta^2 / n_b)`
  exactly (the full :math:`\mathbb{Z}_N^2` sum counts :math:`n_b` real degrees of freedom).
- :func:`peak_counts`: smooth with a periodic Gaussian kernel of ``smoothing`` pixels, keep the pixels strictly
  greater than their 8 periodic neighbours, histogram their heights :math:`\nu = \kappa_s / \sigma_{ref}` (fixed
  :math:`\sigma_{ref}`) on ``edges`` (default ``linspace(-1, 5, 13)``); the top bin also takes the overflow,
  peaks below the first edge are not counted (Kratochvil, Haiman & May 2010; Dietrich & Hartlap 2010).
- :func:`moments`: variance, skewness and excess kurtosis of the pixels of each map (population moments about
  the map's own mean). Skewness separates the lognormal field from the Gaussian one.
- :func:`pixel_histogram`: counts of :math:`\kappa / \sigma_{ref}` on ``bins`` equal bins over ``range``
  (default 20 on :math:`[-4, 6]`), like ``numpy.histogram``: the last bin is closed, values outside are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils import as_tensor

__all__ = [
    "binned_power_spectrum",
    "moments",
    "peak_counts",
    "pixel_histogram",
    "power_spectrum_bins",
    "map_statistics",
    "is_map",
]

F64 = torch.float64
DEFAULT_SIDE = math.radians(5.0)  # the patch side of the cosmology_maps demo, whose maps these were made for
DEFAULT_SIGMA_REF = 0.01


def _as_maps(maps: Any) -> Tensor:
    """Array-like ``[..., N, N]`` → float64 CPU tensor (validated)."""
    if isinstance(maps, np.ndarray) and not np.issubdtype(maps.dtype, np.number):
        raise ValueError(f"maps must be numeric, got dtype {maps.dtype}")
    maps = torch.as_tensor(maps).detach().to(device="cpu", dtype=F64)
    if maps.ndim < 2 or maps.shape[-1] != maps.shape[-2] or maps.shape[-1] < 2:
        raise ValueError(f"expected square maps of shape [..., N, N] with N >= 2, got {list(maps.shape)}")
    return maps


def _mode_radius(n: int) -> Tensor:
    """``|m| [N, N]`` on the ``fft2`` grid."""
    m = torch.from_numpy(np.fft.fftfreq(n, 1.0 / n)).to(F64)
    return torch.hypot(m[:, None], m[None, :])


def power_spectrum_bins(n_pix: int, side: float = DEFAULT_SIDE) -> tuple[Tensor, Tensor]:
    r"""Bin centres :math:`\ell_b = 2\pi b / L` and mode counts :math:`n_b` of :func:`binned_power_spectrum`.

    Args:
        n_pix: map side :math:`N` in pixels.
        side: field side :math:`L` in radians (5° by default).

    Returns:
        ``(ell [N // 2], counts [N // 2])``, float64.
    """
    bins = torch.floor(_mode_radius(n_pix) + 0.5).long().reshape(-1)  # |m| ∈ [b - ½, b + ½) ⇔ b
    counts = torch.bincount(bins, minlength=n_pix // 2 + 1)[1 : n_pix // 2 + 1].to(F64)
    ell = 2 * math.pi * torch.arange(1, n_pix // 2 + 1, dtype=F64) / side
    return ell, counts


def binned_power_spectrum(maps: Any, *, side: float = DEFAULT_SIDE, noise_std: float = 0.0) -> Tensor:
    r"""Azimuthally averaged power spectrum :math:`\hat C_b` (see the module docstring).

    Args:
        maps: ``[..., N, N]``.
        side: field side :math:`L` in radians; the pixel is :math:`\Delta = L / N`.
        noise_std: white-noise standard deviation per pixel :math:`\sigma_n`; :math:`\sigma_n^2 \Delta^2` is
            subtracted from every bin (0: no debiasing).

    Returns:
        ``[..., N // 2]`` float32, bins :math:`b = 1, \dots, N/2` (:func:`power_spectrum_bins` gives
        :math:`\ell_b`, :math:`n_b`).
    """
    maps = _as_maps(maps)
    n = maps.shape[-1]
    pixel = side / n
    _, counts = power_spectrum_bins(n, side)
    bins = torch.floor(_mode_radius(n) + 0.5).long().reshape(-1)
    inside = (bins >= 1) & (bins <= n // 2)
    onehot = torch.zeros(n * n, n // 2, dtype=F64)
    onehot[inside.nonzero()[:, 0], bins[inside] - 1] = 1.0
    k = torch.fft.fft2(maps)
    power = (k.real**2 + k.imag**2).flatten(-2) @ (onehot * pixel**2 / (counts * n**2))
    return (power - noise_std**2 * pixel**2).to(torch.float32)


def _smooth(maps: Tensor, smoothing: float) -> Tensor:
    """Periodic convolution with a Gaussian kernel of ``smoothing`` pixels (sampled, unit sum)."""
    if smoothing == 0:
        return maps
    n = maps.shape[-1]
    d = torch.from_numpy(np.fft.fftfreq(n, 1.0 / n)).to(F64)  # minimal-image pixel offsets
    kernel = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * smoothing**2))
    kernel = kernel / kernel.sum()
    return torch.fft.irfft2(torch.fft.rfft2(maps) * torch.fft.rfft2(kernel), s=(n, n))


def peak_counts(
    maps: Any, *, sigma_ref: float = DEFAULT_SIGMA_REF, smoothing: float = 1.0, edges: Any = None
) -> Tensor:
    r"""Histogram of peak heights :math:`\nu = \kappa_s / \sigma_{ref}` (see the module docstring).

    Args:
        maps: ``[..., N, N]``.
        sigma_ref: fixed height unit :math:`\sigma_{ref}` (not the map's own rms, so counts stay a fixed
            function of the data).
        smoothing: Gaussian kernel standard deviation in pixels (periodic FFT convolution); 0: no smoothing.
        edges: increasing bin edges of :math:`\nu`, default ``linspace(-1, 5, 13)``.

    Returns:
        ``[..., len(edges) - 1]`` float32 counts; the last bin includes :math:`\nu \ge` ``edges[-1]``.
    """
    maps = _as_maps(maps)
    if smoothing < 0 or sigma_ref <= 0:
        raise ValueError(f"need smoothing >= 0 and sigma_ref > 0, got {smoothing} and {sigma_ref}")
    edges = torch.linspace(-1.0, 5.0, 13, dtype=F64) if edges is None else torch.as_tensor(edges, dtype=F64)
    if edges.ndim != 1 or len(edges) < 2 or not (edges[1:] > edges[:-1]).all():
        raise ValueError(f"edges must be an increasing 1-d sequence of at least 2 values, got {edges.tolist()}")
    smooth = _smooth(maps, smoothing)
    peak = torch.ones_like(smooth, dtype=torch.bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx or dy:
                peak &= smooth > torch.roll(smooth, (dx, dy), dims=(-2, -1))
    nu = smooth / sigma_ref
    index = torch.bucketize(nu, edges, right=True) - 1  # ν ∈ [e_i, e_{i+1}) → i
    index = index.clamp(max=len(edges) - 2)  # overflow into the top bin
    return _count(index.flatten(-2), peak.flatten(-2) & (index.flatten(-2) >= 0), len(edges) - 1)


def moments(maps: Any) -> Tensor:
    r"""Variance, skewness and excess kurtosis of the pixels of each map.

    With :math:`\mu_k = \overline{(\kappa - \bar\kappa)^k}` over the :math:`N^2` pixels: variance :math:`\mu_2`,
    skewness :math:`\mu_3 / \mu_2^{3/2}`, excess kurtosis :math:`\mu_4 / \mu_2^2 - 3` (``scipy.stats`` with
    ``bias=True``).

    Args:
        maps: ``[..., N, N]``.

    Returns:
        ``[..., 3]`` float32; skewness and kurtosis are NaN for a constant map.
    """
    maps = _as_maps(maps).flatten(-2)
    d = maps - maps.mean(-1, keepdim=True)
    m2, m3, m4 = (d**2).mean(-1), (d**3).mean(-1), (d**4).mean(-1)
    return torch.stack((m2, m3 / m2**1.5, m4 / m2**2 - 3), -1).to(torch.float32)


def pixel_histogram(
    maps: Any, *, sigma_ref: float = DEFAULT_SIGMA_REF, bins: int = 20, range: tuple[float, float] = (-4.0, 6.0)
) -> Tensor:
    r"""Counts of :math:`\kappa / \sigma_{ref}` per map on ``bins`` equal bins over ``range``.

    Args:
        maps: ``[..., N, N]``.
        sigma_ref: fixed unit :math:`\sigma_{ref}`.
        bins: number of bins.
        range: ``(low, high)``; as in ``numpy.histogram`` the last bin is closed and values outside are dropped.

    Returns:
        ``[..., bins]`` float32 counts.
    """
    maps = _as_maps(maps)
    low, high = float(range[0]), float(range[1])
    if int(bins) != bins or bins < 1 or not high > low or sigma_ref <= 0:
        raise ValueError(f"need bins >= 1, range[1] > range[0] and sigma_ref > 0, got {bins}, {range}, {sigma_ref}")
    nu = maps.flatten(-2) / sigma_ref
    edges = torch.from_numpy(np.linspace(low, high, int(bins) + 1))
    index = torch.bucketize(nu, edges, right=True) - 1  # ν ∈ [e_i, e_{i+1}) → i
    index = torch.where(nu == high, int(bins) - 1, index)  # the last bin is closed
    return _count(index, (index >= 0) & (index < bins), int(bins))


def is_map(x_shape: Sequence[int], kind: str | None) -> bool:
    """Whether rows of shape ``x_shape`` are maps: as ``kind`` says (``"map"`` or not) when given, else when they
    have at least two dimensions."""
    if kind is not None:
        return kind == "map"
    return len(x_shape) >= 2


def map_statistics(maps: Any, *, loc: float = 0.0, scale: float = 1.0, side: float | None = None) -> dict[str, Tensor]:
    r"""Summary statistics of square maps ``[n, *lead, N, N]`` for comparisons.

    The maps are first standardised as κ̃ = (κ − ``loc``)/``scale`` (pass the *reference* set's pixel mean and
    standard deviation so that the same fixed function is applied to both sets), then:

    - ``power_spectrum``: :func:`binned_power_spectrum` of κ (unstandardised), bins
      b = 1 … N/2 (field side ``side`` radians, default 5°);
    - ``peak_counts``: :func:`peak_counts` of κ̃ (heights in units of ``scale``, edges −1…5);
    - ``pixel_histogram``: :func:`pixel_histogram` of κ̃ on 20 bins over [−4, 6];
    - ``moments``: variance, skewness, excess kurtosis of κ.

    Leading channel/patch dimensions are flattened into the statistic's dimension.

    Returns:
        name → ``[n, k]`` float32.
    """
    m = as_tensor(maps, "maps")
    if m.dim() < 3 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"maps must be [n, ..., N, N] (square); got {list(m.shape)}")
    n = m.shape[0]
    z = (m - loc) / scale
    ps_kwargs = {} if side is None else {"side": side}
    out = {
        "power_spectrum": binned_power_spectrum(m, **ps_kwargs),
        "peak_counts": peak_counts(z, sigma_ref=1.0),
        "pixel_histogram": pixel_histogram(z, sigma_ref=1.0),
        "moments": moments(m),
    }
    return {k: v.reshape(n, -1) for k, v in out.items()}


def _count(index: Tensor, keep: Tensor, bins: int) -> Tensor:
    """Per-row counts: ``index, keep [..., P]`` → ``[..., bins]`` float32 (entries with ``keep`` false dropped)."""
    batch = index.shape[:-1]
    rows = torch.arange(math.prod(batch)).reshape(*batch, 1).expand(index.shape)
    flat = (rows * bins + index.clamp(0, bins - 1))[keep]
    counts = torch.bincount(flat, minlength=math.prod(batch) * bins)
    return counts.reshape(*batch, bins).to(torch.float32)
