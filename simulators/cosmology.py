r"""Weak-lensing-like convergence maps ``"cosmology_maps"``, :math:`\kappa \sim p(\kappa \mid \Omega_m, \sigma_8, w_0)`.

A toy version of map-level wCDM inference (CosmoGridV1, Kacprzak et al. 2022): a convergence map on an
:math:`N \times N` periodic flat patch of side :math:`L = 5°`, from *linear* theory (no halofit, no baryons,
no neutrinos: it is a toy) and the Limber approximation, for one source plane at :math:`z_s = 1`. Flat wCDM
with :math:`h = 0.7`, :math:`n_s = 0.96` fixed; :math:`\theta = (\Omega_m, \sigma_8, w_0)` with the uniform
prior :math:`[0.1, 0.5] \times [0.4, 1.2] \times [-2, -1/3]`.

**Background** (no radiation), on the grid :math:`z_j = j z_s / 64`, :math:`j = 0, \dots, 64`:

.. math::
    E(z) = \sqrt{\Omega_m (1+z)^3 + (1 - \Omega_m)(1+z)^{3(1+w_0)}}, \qquad
    \chi(z) = \frac{c}{H_0} \int_0^z \frac{dz'}{E(z')} \quad (\text{cumulative trapezoid, Mpc}/h).

**Growth** (Linder 2005): :math:`f(z) = \Omega_m(z)^\gamma`, :math:`\Omega_m(z) = \Omega_m (1+z)^3 / E^2`,
:math:`\gamma = 0.55 + 0.05 (1 + w_0)` for :math:`w_0 \ge -1`, else :math:`0.55 + 0.02 (1 + w_0)`;
:math:`\ln D(z) = -\int_0^z f(z')\, dz' / (1 + z')`, :math:`D(0) = 1`.

**Linear power** :math:`P(k, z) = D(z)^2 A k^{n_s} T(k / \Gamma)^2`, :math:`\Gamma = \Omega_m h`, with the
BBKS transfer function (Bardeen et al. 1986)

.. math::
    T(q) = \frac{\ln(1 + 2.34 q)}{2.34 q} \big[1 + 3.89 q + (16.1 q)^2 + (5.46 q)^3 + (6.71 q)^4\big]^{-1/4},

normalised by :math:`A = \sigma_8^2 / \sigma_u^2(8\,\mathrm{Mpc}/h)`,
:math:`\sigma_u^2(R) = \frac{1}{2\pi^2} \int k^3 k^{n_s} T^2 W^2(kR)\, d\ln k`,
:math:`W(x) = 3 (\sin x - x \cos x) / x^3` (512 log-spaced :math:`k \in [10^{-4}, 10^2]\,h`/Mpc, trapezoid in
:math:`\ln k`).

**Limber projection** (with :math:`\ell + \tfrac12`, LoVerde & Afshordi 2008), lensing kernel
:math:`W(\chi) = \tfrac32 \Omega_m (H_0/c)^2 (1 + z)\, \chi (\chi_s - \chi) / \chi_s`:

.. math:: C(\ell) = \int_0^{\chi_s} d\chi\, \frac{W(\chi)^2}{\chi^2}\, P\Big(\frac{\ell + 1/2}{\chi}, z(\chi)\Big),

a trapezoid on the :math:`z` grid with :math:`d\chi = (c/H_0)\, dz / E` (the integrand vanishes at both ends).
It is evaluated on 64 log-spaced :math:`\ell \in [0.9 \ell_f, 1.1 \sqrt2 \ell_{Nyq}]`
(:math:`\ell_f = 2\pi/L`, :math:`\ell_{Nyq} = \pi N / L`) and interpolated linearly in
:math:`(\ln \ell, \ln C)`. These quadratures are part of the model's *definition*, so the likelihoods below
are exact for the simulator as implemented.

**Pixel power.** Modes :math:`m \in \mathbb{Z}_N^2` (``np.fft.fftfreq(N, 1/N)``), :math:`\ell_m = 2\pi |m| / L`,
pixel :math:`\Delta = L / N`: :math:`p[m] = C(\ell_m) / \Delta^2`, the eigenvalues of the circulant pixel
covariance (:math:`\langle |K[m]|^2 \rangle = N^2 p[m]` for :math:`K = \mathrm{fft2}(\kappa)`; no pixel
window, no aliasing: the field is *defined* by :math:`p`). ``k0="fundamental"`` (default) sets
:math:`p[0] = C(\ell_f) / \Delta^2` (full rank); ``k0="zero"`` sets :math:`p[0] = 0` (zero-mean maps, as for
shear-reconstructed :math:`\kappa`; Gaussian field only, whose density then lives on the zero-mean subspace).
:math:`p[m]` only depends on the orbit of :math:`m` under the symmetries of the square lattice
(:math:`m_x \to -m_x`, :math:`m_x \leftrightarrow m_y`), and so does the lognormal :math:`p_g` below: the
code stores both per orbit (153 orbits for :math:`N = 32`) and every likelihood is a sum over orbits of
:math:`S_r = \sum_{m \in r} |K[m]|^2 / N^2`.

**Gaussian field** (``field="gaussian"``, default):
:math:`\kappa = \mathrm{irfft2}(\sqrt{p_r} \odot \mathrm{rfft2}(w))`, :math:`w \sim N(0, I)` white noise on the
grid (exactly :math:`\mathrm{Cov} = \mathrm{circulant}(\mathrm{ifft2}(p))`). **Shape noise** (on by default):
:math:`\kappa_{obs} = \kappa + \sigma_n \epsilon`, :math:`\sigma_n = \sigma_e / \sqrt{n_{gal} A_{pix}}`,
:math:`\sigma_e = 0.26`, ``n_gal`` galaxies per arcmin² (10 by default; ``n_gal=None`` turns noise off),
:math:`A_{pix} = \Delta^2` in arcmin². Then :math:`p_{tot} = p + \sigma_n^2` and

.. math:: \log p(\kappa \mid \theta) = -\frac12 \sum_{m \in \mathbb{Z}_N^2}
    \Big[\frac{|K[m]|^2}{N^2 p_{tot}[m]} + \ln(2\pi p_{tot}[m])\Big]

(computed from ``rfft2`` with column weights 1 for :math:`j \in \{0, N/2\}`, 2 otherwise). For
``k0="zero"`` without noise the :math:`m = 0` term is dropped and the result is :math:`-\infty` unless
:math:`|K[0]| \le 10^{-8} N^2 \max|\kappa|` (float round-off).

**Shifted-lognormal field** (``field="lognormal"``; Coles & Jones 1991, Hilbert et al. 2011):
:math:`\kappa = e^g - \kappa_0`, :math:`\kappa_0` the empty-beam convergence (``shift="empty_beam"``,
Taruya et al. 2002) :math:`\kappa_0 = \tfrac32 \Omega_m (H_0/c)^2 \int_0^{\chi_s} (1 + z)\chi(\chi_s - \chi)/\chi_s\,
d\chi` or a fixed float ``shift``. With :math:`\xi_\kappa = \mathrm{ifft2}(p)` (which must exceed
:math:`-\kappa_0^2`), :math:`\xi_g = \ln(1 + \xi_\kappa / \kappa_0^2)`,
:math:`p_g = \max(\mathrm{Re\,fft2}(\xi_g), 10^{-12} \max p_g)` (the floored :math:`p_g` defines the model),
:math:`\sigma_g^2 = \mathrm{mean}(p_g)`, :math:`\mu_g = \ln \kappa_0 - \sigma_g^2 / 2`, the Gaussian field
:math:`g` has mean :math:`\mu_g` and pixel power :math:`p_g`, so :math:`E[\kappa] = 0` and
:math:`\mathrm{Cov}(\kappa) = \mathrm{circulant}(\xi_\kappa)` when nothing is floored. Noiseless likelihood
(exact; the Jacobian of the pointwise map is diagonal): with :math:`g = \ln(\kappa + \kappa_0)`,
:math:`\log p(\kappa \mid \theta) = \log N_{GRF}(g - \mu_g; p_g) - \sum_n g_n`, and :math:`-\infty` if any
:math:`\kappa_n \le -\kappa_0`. With shape noise the likelihood is an :math:`N^2`-dimensional integral:
intractable (``tractable=False``), and there is no reference posterior.

**Observations.** ``n_maps > 1`` makes one simulation ``n_maps`` i.i.d. patches, ``x_shape = (n_maps, N, N)``
(log-likelihoods add); ``n_maps = 1`` gives ``x_shape = (N, N)``.

**Reference posterior** (Gaussian ± noise, noiseless lognormal): a fixed grid of cells in the rotated
coordinates :math:`u = (\ln \Sigma_8 + \beta (w_0 + 1), \ln \Omega_m, w_0)`,
:math:`\Sigma_8 = \sigma_8 (\Omega_m / 0.3)^\alpha`, :math:`(\alpha, \beta) = (0.8, -0.25)`: the leading
eigenvector of the Fisher matrix in :math:`(\ln\sigma_8, \ln\Omega_m, w_0)` at the fiducial point (N = 32,
noisy) is :math:`(1, 0.81, -0.24)`, so the thin lensing ridge is (nearly) axis-aligned. Cells that meet the
prior box are kept; the spectra of their centres are computed once per configuration and cached
(module-level, not observation-dependent), so an observation only costs its FFT and the orbit sums. The
density of :math:`u` is :math:`p(\theta(u) \mid x)\, \Omega_m \sigma_8` (the Jacobian of
:math:`u \mapsto \theta`); samples pick a cell in proportion to its centre's density, jitter uniformly
within the cell, map back to :math:`\theta` and reject points outside the prior box (which truncates exactly
at the slanted :math:`\sigma_8` edges). The default grid is sized from the Fisher matrix over the prior: the
smallest conditional posterior widths along :math:`u` (N = 32, one map) are about (0.037, 0.25, 0.26) with
shape noise and (0.022, 0.088, 0.077) without, against cells of (0.011, 0.067, 0.069) for ``(256, 24, 24)``
and (0.0088, 0.040, 0.035) for ``(320, 40, 48)``. A warning is raised when the log density changes by more
than 0.6 on average between neighbouring cells along an axis (then pass a finer ``grid``: many ``n_maps``
or i.i.d. observations narrow the posterior).

Deviations from ``research/simulators.md`` §1: none in the model. The ``transfer="eh_zero_baryon"`` option
(optional in the spec) is not implemented. The :math:`\sigma_8^2` factor of :math:`C(\ell)` is applied after
the quadrature over :math:`(\Omega_m, w_0)`, which is algebraically identical and lets a batch share its
distinct :math:`(\Omega_m, w_0)` pairs (the reference grid has few). The grid's first axis adds the tilt
:math:`\beta (w_0 + 1)` to the spec's :math:`\ln\Sigma_8`: the ridge also runs along :math:`w_0`, and the
tilt halves the cells needed along :math:`w_0` (a change of coordinates only; the Jacobian is unchanged).
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from simulators.base import Simulator, box_uniform, register

__all__ = [
    "Background",
    "CosmologyMaps",
    "background",
    "bbks_transfer",
    "convergence_power",
    "empty_beam_convergence",
    "shape_noise_std",
]

F64 = torch.float64
C_OVER_H0 = 2997.92458  # c / H_0 in Mpc/h
HUBBLE = 0.7  # h
N_S = 0.96
Z_SOURCE = 1.0
N_Z = 64  # z grid intervals
SIDE_DEG = 5.0  # field side L, for every N
SIGMA_E = 0.26  # intrinsic ellipticity dispersion per component
N_ELL = 64  # ℓ table for the interpolation of C(ℓ)
PRIOR_LOW = (0.1, 0.4, -2.0)
PRIOR_HIGH = (0.5, 1.2, -1.0 / 3.0)
_BBKS = (3.89, 16.1**2, 5.46**3, 6.71**4)  # polynomial coefficients of q, q², q³, q⁴
_CHUNK = 1024  # θ rows per block in the quadratures (bounds memory at [chunk, 63, 64])


# ------------------------------------------------------------------------------------------- physics


class Background(NamedTuple):
    """Flat wCDM background on the fixed grid ``z [Z]`` (``Z = 65``), per parameter row."""

    z: Tensor  #: redshifts ``[Z]``
    hubble: Tensor  #: :math:`E(z)` ``[B, Z]``
    chi: Tensor  #: comoving distance :math:`\chi(z)` in Mpc/h ``[B, Z]``
    growth: Tensor  #: linear growth :math:`D(z)`, :math:`D(0) = 1` ``[B, Z]``


def _as_theta64(theta: Any) -> Tensor:
    theta = torch.as_tensor(theta, dtype=F64)
    if theta.ndim != 2 or theta.shape[1] != 3:
        raise ValueError(f"expected theta of shape [n, 3] (Omega_m, sigma_8, w_0), got {list(theta.shape)}")
    return theta


def _check_physical(theta: Tensor) -> None:
    """Raise for rows outside the model's domain (0 < Ω_m ≤ 1, σ_8 > 0, finite w_0)."""
    om, s8, w0 = theta.detach().unbind(-1)
    bad = ~(torch.isfinite(theta.detach()).all(-1) & (om > 0) & (om <= 1) & (s8 > 0))
    if bad.any():
        row = theta[bad.nonzero()[0, 0]].tolist()
        raise ValueError(
            f"cosmology_maps: theta {row} is outside the model's domain (need 0 < Omega_m <= 1, sigma_8 > 0, "
            "finite w_0)"
        )


def _cumtrapz(y: Tensor, dx: float) -> Tensor:
    """Cumulative trapezoid along the last axis, starting at 0: ``[..., Z]`` → ``[..., Z]``."""
    steps = 0.5 * dx * (y[..., 1:] + y[..., :-1])
    return torch.cat((torch.zeros_like(y[..., :1]), torch.cumsum(steps, -1)), -1)


def background(theta: Any) -> Background:
    r"""Expansion rate, comoving distance and growth on :math:`z_j = j z_s / 64`.

    Args:
        theta: ``[B, 3]`` rows :math:`(\Omega_m, \sigma_8, w_0)` (:math:`\sigma_8` is not used).

    Returns:
        :class:`Background` with ``z [65]`` and ``hubble, chi, growth [B, 65]`` (float64).
    """
    theta = _as_theta64(theta)
    om, w0 = theta[:, 0:1], theta[:, 2:3]
    z = torch.linspace(0.0, Z_SOURCE, N_Z + 1, dtype=F64)
    dz = Z_SOURCE / N_Z
    a3 = (1 + z) ** 3
    e2 = om * a3 + (1 - om) * (1 + z) ** (3 * (1 + w0))
    hubble = e2.sqrt()
    chi = C_OVER_H0 * _cumtrapz(1 / hubble, dz)
    gamma = torch.where(w0 >= -1, 0.55 + 0.05 * (1 + w0), 0.55 + 0.02 * (1 + w0))
    f = (om * a3 / e2) ** gamma
    growth = torch.exp(-_cumtrapz(f / (1 + z), dz))
    return Background(z, hubble, chi, growth)


def _bbks_numerator(q: Tensor) -> Tensor:
    r""":math:`(2.34 q)^2 T(q)^2 = \ln^2(1 + 2.34 q)\, [1 + 3.89 q + \dots]^{-1/2}`.

    Works in place on ``q`` (pass a temporary) unless ``q`` requires a gradient.
    """
    c1, c2, c3, c4 = _BBKS
    if q.requires_grad:
        return torch.log1p(2.34 * q) ** 2 * torch.rsqrt(1 + q * (c1 + q * (c2 + q * (c3 + q * c4))))
    poly = q * c4  # the same Horner scheme, in place: this block is the bulk of the simulator's cost
    poly += c3
    poly *= q
    poly += c2
    poly *= q
    poly += c1
    poly *= q
    poly += 1
    poly.rsqrt_()
    q *= 2.34
    q.log1p_()
    q.square_()
    q *= poly
    return q


def bbks_transfer(q: Any) -> Tensor:
    r"""BBKS transfer function :math:`T(q)` (Bardeen, Bond, Kaiser & Szalay 1986), :math:`q = k / (\Omega_m h)`."""
    q = torch.as_tensor(q, dtype=F64)
    return _bbks_numerator(q.clone()).sqrt() / (2.34 * q)


_K = torch.logspace(-4, 2, 512, dtype=F64)  # k grid of σ_u²(8 Mpc/h), h/Mpc


def _sigma8_weights() -> Tensor:
    r"""``v [512]``: :math:`\sigma_u^2(8) = \Gamma^2 \sum_i v_i\, (2.34 q_i)^2 T^2(q_i)`, :math:`q_i = k_i / \Gamma`."""
    x = 8.0 * _K
    window = 3 * (torch.sin(x) - x * torch.cos(x)) / x**3
    dlnk = math.log(_K[1].item() / _K[0].item())
    trap = torch.full_like(_K, dlnk)
    trap[[0, -1]] = 0.5 * dlnk
    # k³ k^n_s T² W² / 2π², with T² = numerator · Γ² / (2.34 k)²
    return trap * _K ** (1 + N_S) * window**2 / (2 * math.pi**2 * 2.34**2)


_SIGMA8_WEIGHTS = _sigma8_weights()


def _unit_convergence_power(pairs: Tensor, ell: Tensor) -> Tensor:
    r""":math:`C(\ell) / \sigma_8^2` for rows ``pairs [B, 2]`` :math:`= (\Omega_m, w_0)`, ``ell [L]`` → ``[B, L]``.

    With :math:`k = (\ell + \frac12)/\chi` and :math:`q = k/\Gamma`, :math:`k^{n_s} T^2(q)` factorises into
    :math:`(\ell + \frac12)^{n_s - 2}\, \chi^{2 - n_s}\, \Gamma^2 / 2.34^2` times the BBKS numerator of
    :math:`q`, so the only work on the ``[B, 63, L]`` block is that numerator and one batched product.
    """
    om, w0 = pairs[:, 0], pairs[:, 1]
    bg = background(torch.stack((om, torch.ones_like(om), w0), -1))
    gam = om * HUBBLE
    sigma_u2 = gam**2 * (_bbks_numerator(_K / gam[:, None]) @ _SIGMA8_WEIGHTS)
    chi = bg.chi[:, 1:-1]  # interior points: the integrand vanishes at χ = 0 and χ = χ_s
    chi_s = bg.chi[:, -1:]
    z = bg.z[1:-1]
    kernel2 = (1.5 * om[:, None] / C_OVER_H0**2) ** 2 * (1 + z) ** 2 * (chi_s - chi) ** 2 / chi_s**2  # W²/χ²
    weight = (Z_SOURCE / N_Z) * C_OVER_H0 / bg.hubble[:, 1:-1] * kernel2 * bg.growth[:, 1:-1] ** 2
    weight = weight * chi ** (2 - N_S) * (gam**2 / (2.34**2 * sigma_u2))[:, None]
    lp = ell + 0.5
    q = (1 / (chi * gam[:, None]))[..., None] * lp  # [B, 63, L]
    return torch.bmm(weight[:, None, :], _bbks_numerator(q))[:, 0] * lp ** (N_S - 2)


def convergence_power(theta: Any, ell: Any) -> Tensor:
    r"""Limber convergence power :math:`C(\ell)` by the quadrature of the module docstring.

    Args:
        theta: ``[B, 3]`` rows :math:`(\Omega_m, \sigma_8, w_0)`.
        ell: multipoles ``[L]``.

    Returns:
        ``[B, L]`` float64 (differentiable in ``theta``). Distinct :math:`(\Omega_m, w_0)` pairs are computed
        once when ``theta`` does not require a gradient.
    """
    theta = _as_theta64(theta)
    _check_physical(theta)
    ell = torch.as_tensor(ell, dtype=F64).reshape(-1)
    pairs = theta[:, [0, 2]]
    scale = theta[:, 1:2] ** 2
    if len(theta) == 0:
        return torch.zeros(0, len(ell), dtype=F64)
    if theta.requires_grad:
        return scale * torch.cat([_unit_convergence_power(c, ell) for c in pairs.split(_CHUNK)])
    unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    unit = torch.cat([_unit_convergence_power(c, ell) for c in unique.split(_CHUNK)])
    return scale * unit[inverse]


def empty_beam_convergence(theta: Any) -> Tensor:
    r"""Empty-beam convergence, ``theta [B, 3]`` → ``[B]``:

    .. math:: \kappa_0 = \tfrac32 \Omega_m (H_0/c)^2 \int_0^{\chi_s} (1+z)\, \chi (\chi_s - \chi) / \chi_s\, d\chi,

    a trapezoid on the :math:`z` grid with :math:`d\chi = (c/H_0)\, dz / E`.
    """
    theta = _as_theta64(theta)
    bg = background(theta)
    chi, chi_s = bg.chi, bg.chi[:, -1:]
    integrand = (1 + bg.z) * chi * (chi_s - chi) / chi_s * C_OVER_H0 / bg.hubble
    integral = torch.trapezoid(integrand, dx=Z_SOURCE / N_Z, dim=-1)
    return 1.5 * theta[:, 0] / C_OVER_H0**2 * integral


def shape_noise_std(n_pix: int, n_gal: float | None) -> float:
    r"""Shape noise per pixel :math:`\sigma_n = \sigma_e / \sqrt{n_{gal} A_{pix}}` (arcmin²); 0 without noise."""
    if n_gal is None:
        return 0.0
    pixel_arcmin = SIDE_DEG * 60.0 / n_pix
    return SIGMA_E / math.sqrt(n_gal * pixel_arcmin**2)


# -------------------------------------------------------------------------------------- mode orbits


class _Orbits:
    """Orbits of the modes of ``Z_N²`` under the square lattice's symmetries, and the ℓ interpolation.

    Orbit ``(a, b)``, ``0 ≤ a ≤ b ≤ N/2``, holds the modes with ``{|m_x|, |m_y|} = {a, b}``; its id is
    ``b (b + 1) / 2 + a``.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        half = n // 2
        m = np.abs(np.fft.fftfreq(n, 1.0 / n).round().astype(np.int64))
        lo = np.minimum(m[:, None], m[None, :])
        hi = np.maximum(m[:, None], m[None, :])
        full = hi * (hi + 1) // 2 + lo  # [N, N]
        self.num = (half + 1) * (half + 2) // 2
        self.full = torch.from_numpy(full)
        self.half = torch.from_numpy(np.ascontiguousarray(full[:, : half + 1]))  # the rfft2 half-plane
        self.counts = torch.bincount(self.full.reshape(-1), minlength=self.num).to(F64)  # n_r, sum N²
        # S_r = Σ_{half-plane e in r} w_e |K_e|² / N², w = 1 on columns 0 and N/2, else 2
        col_w = torch.full((half + 1,), 2.0, dtype=F64)
        col_w[[0, half]] = 1.0
        onehot = torch.zeros(n * (half + 1), self.num, dtype=F64)
        onehot[torch.arange(n * (half + 1)), self.half.reshape(-1)] = 1.0
        self.sum_half = onehot * (col_w.repeat(n) / n**2)[:, None]  # [N (N/2+1), n_orb]
        self.mean_half = onehot * (col_w.repeat(n) / self.counts[self.half.reshape(-1)])[:, None]
        a = torch.tensor([i for j in range(half + 1) for i in range(j + 1)], dtype=F64)
        b = torch.tensor([j for j in range(half + 1) for _ in range(j + 1)], dtype=F64)
        self.radius = torch.hypot(a, b)  # |m| of each orbit


def _interpolation_matrix(ell_table: Tensor, ell: Tensor) -> Tensor:
    """``M [len(table), len(ell)]``: ``ln C(ell) = ln C(table) @ M``, linear in ``ln ℓ``."""
    x, xp = torch.log(ell), torch.log(ell_table)
    i = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    t = (x - xp[i - 1]) / (xp[i] - xp[i - 1])
    m = torch.zeros(len(xp), len(x), dtype=F64)
    cols = torch.arange(len(x))
    m[i - 1, cols] = 1 - t
    m[i, cols] += t
    return m


class _Spectra(NamedTuple):
    """Per-θ quantities shared by the sampler and every likelihood (all per orbit, float64)."""

    signal: Tensor  # [B, n_orb] pixel power p of κ (p_0 = 0 for k0="zero")
    field: Tensor  # [B, n_orb] power of the Gaussian density: p + σ_n² (Gaussian) or p_g (lognormal); 1 if unused
    log_norm: Tensor  # [B] Σ_r n_r ln(2π field_r) over the orbits in the density
    mu: Tensor  # [B] mean μ_g of g (0 for the Gaussian field)
    kappa0: Tensor  # [B] shift κ_0 (0 for the Gaussian field)


class _Stats(NamedTuple):
    """Sufficient statistics of a set of maps for the orbit likelihood."""

    power: Tensor  # [..., n_orb] Σ_maps S_r, with S_0 = (Σ_n y_n)² / N² about zero
    total: Tensor  # [...] Σ_maps Σ_n y_n
    log_jacobian: Tensor  # [...] -Σ_maps Σ_n g_n (lognormal), else 0
    valid: Tensor  # [...] bool: inside the support


# --------------------------------------------------------------------------------------- simulator


_GRID_CACHE: OrderedDict[tuple, _Grid] = OrderedDict()
_GRID_CACHE_SIZE = 2


@register("cosmology_maps")
class CosmologyMaps(Simulator):
    r"""Convergence maps :math:`\kappa \sim p(\kappa \mid \Omega_m, \sigma_8, w_0)` (see the module docstring).

    Args:
        n_pix: map side :math:`N` in pixels, even (the field is always :math:`5° \times 5°`).
        field: ``"gaussian"`` or ``"lognormal"`` (shifted lognormal).
        n_gal: galaxies per arcmin² for the shape noise (10: Stage-III-like), or ``None`` for noiseless maps.
        n_maps: i.i.d. patches per simulation; ``x_shape = (n_maps, N, N)`` if ``n_maps > 1``.
        k0: ``"fundamental"`` (:math:`p[0] = C(\ell_f)/\Delta^2`) or ``"zero"`` (Gaussian field only).
        shift: ``"empty_beam"`` (:math:`\kappa_0(\Omega_m, w_0)`) or a fixed positive float (lognormal only).
        grid: cells of the reference-posterior grid along :math:`(\ln\Sigma_8 + \beta (w_0 + 1), \ln\Omega_m, w_0)`;
            by default ``(256, 24, 24)``, or ``(320, 40, 48)`` for noiseless maps with ``N > 16``.

    Shapes: ``theta [n, 3]`` → ``x [n, N, N]`` or ``[n, n_maps, N, N]`` (float32); ``log_likelihood`` float64.
    Cost (one core, N = 32): :math:`10^4` maps in 1–2 s. The reference grid is built once per
    configuration: about 2 s (Gaussian with noise; 62k cells), 2–10 s and ~0.3–0.6 GB without noise (252k cells,
    lognormal the slowest); then an observation costs about 20 ms with noise and 0.2–0.3 s without.
    """

    name = "cosmology_maps"
    parameter_names = ["Omega_m", "sigma_8", "w_0"]
    x_kind = "map"
    grid_tilt = (0.8, -0.25)  # (α, β): the grid's first axis is ln σ_8 + α ln(Ω_m / 0.3) + β (w_0 + 1)
    side = math.radians(SIDE_DEG)  # L in radians

    def __init__(
        self,
        n_pix: int = 32,
        *,
        field: str = "gaussian",
        n_gal: float | None = 10.0,
        n_maps: int = 1,
        k0: str = "fundamental",
        shift: str | float = "empty_beam",
        grid: tuple[int, int, int] | None = None,
    ) -> None:
        if isinstance(n_pix, bool) or int(n_pix) != n_pix or n_pix < 2 or n_pix % 2:
            raise ValueError(f"cosmology_maps: n_pix must be an even integer >= 2, got {n_pix!r}")
        if field not in ("gaussian", "lognormal"):
            raise ValueError(f"cosmology_maps: field must be 'gaussian' or 'lognormal', got {field!r}")
        if n_gal is not None and not (isinstance(n_gal, int | float) and n_gal > 0 and math.isfinite(n_gal)):
            raise ValueError(f"cosmology_maps: n_gal must be a positive number or None, got {n_gal!r}")
        if isinstance(n_maps, bool) or int(n_maps) != n_maps or n_maps < 1:
            raise ValueError(f"cosmology_maps: n_maps must be a positive integer, got {n_maps!r}")
        if k0 not in ("fundamental", "zero"):
            raise ValueError(f"cosmology_maps: k0 must be 'fundamental' or 'zero', got {k0!r}")
        if k0 == "zero" and field == "lognormal":
            raise ValueError(
                "cosmology_maps: k0='zero' is only allowed for the Gaussian field (the lognormal field needs a "
                "full-rank covariance)"
            )
        if shift != "empty_beam" and not (isinstance(shift, int | float) and shift > 0 and math.isfinite(shift)):
            raise ValueError(f"cosmology_maps: shift must be 'empty_beam' or a positive float, got {shift!r}")
        if grid is None:  # sized from the Fisher matrix over the prior (see the class docstring)
            grid = (320, 40, 48) if n_gal is None and n_pix > 16 else (256, 24, 24)
        if len(grid) != 3 or any(int(g) != g or g < 2 for g in grid):
            raise ValueError(f"cosmology_maps: grid must be three integers >= 2, got {grid!r}")
        self.n_pix, self.field, self.n_gal, self.n_maps = int(n_pix), field, n_gal, int(n_maps)
        self.k0, self.shift, self.grid = k0, shift, tuple(int(g) for g in grid)
        self.x_shape = (self.n_pix, self.n_pix) if self.n_maps == 1 else (self.n_maps, self.n_pix, self.n_pix)
        self.tractable = not (field == "lognormal" and n_gal is not None)
        self.prior = box_uniform(torch.tensor(PRIOR_LOW), torch.tensor(PRIOR_HIGH))
        self.noise_std = shape_noise_std(self.n_pix, n_gal)  # σ_n per pixel
        self.pixel = self.side / self.n_pix  # Δ in radians
        self.ell_fundamental = 2 * math.pi / self.side
        ell_nyquist = math.pi * self.n_pix / self.side
        self.ell_table = torch.logspace(
            math.log10(0.9 * self.ell_fundamental), math.log10(1.1 * math.sqrt(2) * ell_nyquist), N_ELL, dtype=F64
        )
        self._orbits = _Orbits(self.n_pix)
        ell_orbit = self.ell_fundamental * self._orbits.radius
        ell_orbit[0] = self.ell_fundamental  # k0="fundamental": p[0] = C(ℓ_f) / Δ²
        self._interp = _interpolation_matrix(self.ell_table, ell_orbit)
        # orbits in the density: all, except m = 0 for a noiseless k0="zero" field
        self._zero_mode_dropped = k0 == "zero" and n_gal is None
        self._density_counts = self._orbits.counts.clone()
        if self._zero_mode_dropped:
            self._density_counts[0] = 0.0
        self._cache: OrderedDict[bytes, _Spectra] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"CosmologyMaps(n_pix={self.n_pix}, field={self.field!r}, n_gal={self.n_gal!r}, n_maps={self.n_maps}, "
            f"k0={self.k0!r}, shift={self.shift!r})"
        )

    # ------------------------------------------------------------------------------ derived quantities

    def _spectra(self, theta: Tensor) -> _Spectra:
        """The one function behind the sampler and the likelihoods: ``theta [B, 3]`` float64 → :class:`_Spectra`.

        Without gradients, distinct rows are computed once, and the last few batches of up to ``2**22 / n_orb``
        rows (``sim(theta)`` then ``sim.log_likelihood(theta, x)``) are cached.
        """
        _check_physical(theta)
        if theta.requires_grad:
            return self._compute_spectra(theta)
        cacheable = len(theta) * self._orbits.num <= 2**22
        key = theta.shape[0].to_bytes(8, "little") + theta.detach().contiguous().numpy().tobytes()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        unique, inverse = torch.unique(theta, dim=0, return_inverse=True)
        if len(unique) < len(theta):
            spectra = _Spectra(*(t[inverse] for t in self._compute_spectra(unique)))
        else:
            spectra = self._compute_spectra(theta)
        if cacheable:
            self._cache[key] = spectra
        if len(self._cache) > 4:
            self._cache.popitem(last=False)
        return spectra

    def _compute_spectra(self, theta: Tensor, *, keep_signal: bool = True) -> _Spectra:
        """:class:`_Spectra` of every row (``signal`` is None unless ``keep_signal``), in blocks of rows."""
        log_c = torch.log(convergence_power(theta, self.ell_table))  # [B, 64]: shared (Ω_m, w_0) pairs once
        if theta.requires_grad or len(theta) <= _CHUNK:
            return self._spectra_from_power(theta, log_c, keep_signal)
        out = None
        for start in range(0, len(theta), _CHUNK):  # written into preallocated arrays: the grid's are large
            rows = slice(start, start + _CHUNK)
            block = self._spectra_from_power(theta[rows], log_c[rows], keep_signal)
            if out is None:
                out = _Spectra(*(None if t is None else t.new_empty(len(theta), *t.shape[1:]) for t in block))
            for full, part in zip(out, block, strict=True):
                if full is not None:
                    full[rows] = part
        return out

    def _spectra_from_power(self, theta: Tensor, log_c_table: Tensor, keep_signal: bool) -> _Spectra:
        signal = torch.exp(log_c_table @ self._interp) / self.pixel**2  # [B, n_orb], linear in (ln ℓ, ln C)
        if self.k0 == "zero":
            signal = torch.cat((torch.zeros_like(signal[:, :1]), signal[:, 1:]), -1)
        zeros = torch.zeros_like(signal[:, 0])
        if self.field == "gaussian":
            field = signal + self.noise_std**2
            if self._zero_mode_dropped:
                field = torch.cat((torch.ones_like(field[:, :1]), field[:, 1:]), -1)
            mu, kappa0 = zeros, zeros
        else:
            field, mu, kappa0 = self._lognormal(theta, signal)
        log_norm = torch.log(2 * math.pi * field) @ self._density_counts
        return _Spectra(signal if keep_signal else None, field, log_norm, mu, kappa0)

    def _lognormal(self, theta: Tensor, signal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(p_g [B, n_orb], μ_g [B], κ_0 [B])`` from the pixel power of κ."""
        n, orbits = self.n_pix, self._orbits
        if self.shift == "empty_beam":
            kappa0 = empty_beam_convergence(theta)
        else:
            kappa0 = torch.full_like(signal[:, 0], float(self.shift))
        xi = torch.fft.irfft2(signal[:, orbits.half], s=(n, n))  # ifft2 of the real, even p
        floor = -(kappa0**2)
        if (xi.detach().amin((-2, -1)) <= floor.detach()).any():
            row = (xi.detach().amin((-2, -1)) <= floor.detach()).nonzero()[0, 0]
            raise ValueError(
                f"cosmology_maps: lognormal field undefined at theta {theta[row].tolist()}: the pixel correlation "
                f"reaches {xi[row].min().item():.3g} <= -kappa_0^2 = {floor[row].item():.3g}"
            )
        xi_g = torch.log1p(xi / kappa0[:, None, None] ** 2)
        p_g = torch.fft.rfft2(xi_g).real.reshape(len(theta), -1) @ orbits.mean_half  # orbit means
        p_g = torch.maximum(p_g, 1e-12 * p_g.amax(-1, keepdim=True))
        var_g = (p_g @ orbits.counts) / n**2
        mu = torch.log(kappa0) - 0.5 * var_g
        return p_g, mu, kappa0

    def pixel_power(self, theta: Any) -> Tensor:
        r"""Pixel power :math:`p[m] = C(\ell_m)/\Delta^2` of the signal :math:`\kappa` (no noise).

        Args:
            theta: ``[B, 3]``.

        Returns:
            ``[B, N, N]`` float64 on the ``fft2`` grid (numpy frequency order); :math:`p[0] = 0` for ``k0="zero"``.
        """
        theta = self._as_theta(theta, F64)
        return self._spectra(theta).signal[:, self._orbits.full]

    def lognormal_parameters(self, theta: Any) -> tuple[Tensor, Tensor, Tensor]:
        r"""The Gaussian field :math:`g` behind the lognormal map: ``(p_g [B, N, N], μ_g [B], κ_0 [B])``."""
        if self.field != "lognormal":
            raise ValueError("cosmology_maps: lognormal_parameters needs field='lognormal'")
        theta = self._as_theta(theta, F64)
        s = self._spectra(theta)
        return s.field[:, self._orbits.full], s.mu, s.kappa0

    def fisher_information(self, theta: Any) -> Tensor:
        r"""Fisher matrix of one observation (``n_maps`` patches), Gaussian field:
        :math:`F_{ij} = \frac{n_{maps}}{2} \sum_m \partial_i \ln p_{tot}[m]\, \partial_j \ln p_{tot}[m]`.

        Args:
            theta: ``[B, 3]``.

        Returns:
            ``[B, 3, 3]`` float64.
        """
        if self.field != "gaussian":
            raise NotImplementedError("cosmology_maps: fisher_information is only available for field='gaussian'")
        theta = self._as_theta(theta, F64)
        out = []
        for row in theta:
            jac = torch.autograd.functional.jacobian(
                lambda t: torch.log(self._compute_spectra(t[None]).field[0]), row.clone()
            )  # [n_orb, 3]
            out.append(0.5 * self.n_maps * jac.T @ (self._density_counts[:, None] * jac))
        return torch.stack(out) if out else torch.zeros(0, 3, 3, dtype=F64)

    # ---------------------------------------------------------------------------------------- sampler

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        theta = theta.to(F64)
        n = self.n_pix
        if len(theta) == 0:
            return torch.zeros(0, *self.x_shape)
        spectra = self._spectra(theta)
        blocks = []
        for rows in torch.arange(len(theta)).split(_CHUNK):
            s = _Spectra(*(t[rows] for t in spectra))
            amplitude = (s.signal if self.field == "gaussian" else s.field)[:, self._orbits.half].sqrt()
            white = torch.randn(len(rows), self.n_maps, n, n, dtype=F64, generator=generator)
            g = torch.fft.irfft2(amplitude[:, None] * torch.fft.rfft2(white), s=(n, n))
            if self.field == "lognormal":
                g = torch.exp(g + s.mu[:, None, None, None]) - s.kappa0[:, None, None, None]
            if self.noise_std > 0:
                g = g + self.noise_std * torch.randn(g.shape, dtype=F64, generator=generator)
            blocks.append(g.to(torch.float32))
        return torch.cat(blocks).reshape(len(theta), *self.x_shape)

    # ------------------------------------------------------------------------------------- likelihood

    def log_likelihood(self, theta: Any, x: Any) -> Tensor:
        if self.field == "lognormal" and self.n_gal is not None:
            raise NotImplementedError(
                "cosmology_maps: the lognormal field with shape noise has an intractable likelihood (an N²-"
                "dimensional integral over the latent field); use n_gal=None for the exact noiseless lognormal "
                "likelihood, or field='gaussian'"
            )
        return super().log_likelihood(theta, x)

    def _maps(self, x: Tensor) -> Tensor:
        """``x [..., *x_shape]`` → ``[..., n_maps, N, N]``."""
        return x.reshape(*x.shape[: x.ndim - len(self.x_shape)], self.n_maps, self.n_pix, self.n_pix)

    def _stats(self, maps: Tensor, kappa0: Tensor | None) -> _Stats:
        """Orbit statistics of ``maps [..., M, N, N]`` (lognormal: ``kappa0 [...]``, maps of g = ln(κ + κ_0))."""
        n = self.n_pix
        if kappa0 is not None:
            shifted = maps + kappa0[..., None, None, None]
            valid = (shifted > 0).flatten(-3).all(-1)
            y = torch.log(torch.where(shifted > 0, shifted, torch.ones_like(shifted)))
            log_jacobian = -y.sum((-3, -2, -1))
        else:
            y = maps
            log_jacobian = torch.zeros(maps.shape[:-3], dtype=F64)
            if self._zero_mode_dropped:  # the zero-mean subspace, up to float round-off
                tol = 1e-8 * n**2 * maps.abs().amax((-2, -1))
                valid = (maps.sum((-2, -1)).abs() <= tol).all(-1)
            else:
                valid = torch.ones(maps.shape[:-3], dtype=torch.bool)
        k = torch.fft.rfft2(y)
        power = (k.real**2 + k.imag**2).flatten(-2) @ self._orbits.sum_half  # [..., M, n_orb]
        return _Stats(power.sum(-2), y.sum((-3, -2, -1)), log_jacobian, valid)

    def _log_density(self, stats: _Stats, spectra: _Spectra, num_maps: int) -> Tensor:
        r"""Σ over ``num_maps`` maps of the orbit log-density; ``stats`` and ``spectra`` broadcast."""
        n2 = self.n_pix**2
        power = stats.power
        if self._zero_mode_dropped:
            power = torch.cat((torch.zeros_like(power[..., :1]), power[..., 1:]), -1)
        quad = (power / spectra.field).sum(-1)
        if self.field == "lognormal":  # S_0 about μ_g: Σ_i (s_i - N² μ)² / N² = S_0 - 2 μ Σ s_i + M N² μ²
            mu = spectra.mu
            quad = quad + (-2 * mu * stats.total + num_maps * n2 * mu**2) / spectra.field[..., 0]
        log_p = -0.5 * (quad + num_maps * spectra.log_norm) + stats.log_jacobian
        return torch.where(stats.valid, log_p, torch.full_like(log_p, -math.inf))

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        spectra = self._spectra(theta)
        kappa0 = spectra.kappa0 if self.field == "lognormal" else None
        return self._log_density(self._stats(self._maps(x), kappa0), spectra, self.n_maps)

    # ------------------------------------------------------------------------------ reference posterior

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        if not self.tractable:
            raise NotImplementedError(
                "cosmology_maps: no reference posterior for the lognormal field with shape noise (intractable "
                "likelihood); use n_gal=None or field='gaussian'"
            )
        grid = self._reference_grid()
        return torch.stack([grid.sample(self._grid_log_posterior(grid, xi), num_samples, generator) for xi in x])

    def _grid_key(self) -> tuple:
        return (self.n_pix, self.field, self.n_gal, self.k0, self.shift, self.grid, self.grid_tilt)

    def _reference_grid(self) -> _Grid:
        key = self._grid_key()
        if key not in _GRID_CACHE:
            _GRID_CACHE[key] = _Grid(self)
            while len(_GRID_CACHE) > _GRID_CACHE_SIZE:
                _GRID_CACHE.popitem(last=False)
        _GRID_CACHE.move_to_end(key)
        return _GRID_CACHE[key]

    def _grid_log_posterior(self, grid: _Grid, x: Tensor) -> Tensor:
        """Log density of the cells' centres in ``u`` (up to a constant) given ``x [m, *x_shape]``: ``[n_cells]``."""
        maps = self._maps(x).reshape(-1, self.n_pix, self.n_pix)  # every patch of every observation
        if self.field == "gaussian":
            stats = _Stats(*(t[0] for t in self._stats(maps[None], None)))
            if not stats.valid:
                raise ValueError("cosmology_maps: x_obs has a non-zero mean, impossible under k0='zero' without noise")

            def stats_rows(rows: Tensor) -> _Stats:
                return stats

        else:  # g = ln(κ + κ_0) depends on θ through κ_0: one FFT of the observation per distinct κ_0
            per_shift = self._stats(maps[None].expand(len(grid.kappa0_values), *maps.shape), grid.kappa0_values)

            def stats_rows(rows: Tensor) -> _Stats:
                return _Stats(*(t[grid.kappa0_index[rows]] for t in per_shift))

        blocks = torch.arange(grid.size).split(8192)
        log_l = torch.cat([self._log_density(stats_rows(r), grid.spectra_rows(r), len(maps)) for r in blocks])
        return log_l + grid.log_jacobian


class _Lookup:
    """Position of a kept cell from its integer index ``(i_1, i_2, i_3)``; -1 for cells not kept."""

    def __init__(self, index: Tensor, shape: tuple[int, int, int]) -> None:
        self.shape = torch.tensor(shape)
        self.table = torch.full(shape, -1, dtype=torch.long)
        self.table[tuple(index.T)] = torch.arange(len(index))

    def get(self, index: Tensor) -> Tensor:
        inside = ((index >= 0) & (index < self.shape)).all(-1)
        found = self.table[tuple(index.clamp(min=0).minimum(self.shape - 1).T)]
        return torch.where(inside, found, -1)


class _Grid:
    r"""Cells of the reference grid in :math:`u = (\ln\Sigma_8 + \beta (w_0 + 1), \ln\Omega_m, w_0)` that meet
    the prior box, with the spectra of their centres (computed once)."""

    def __init__(self, sim: CosmologyMaps) -> None:
        self.alpha, self.beta = sim.grid_tilt
        shape = torch.tensor(sim.grid)
        corners = torch.cartesian_prod(*torch.tensor([PRIOR_LOW, PRIOR_HIGH], dtype=F64).T)  # the box's 8 corners
        u_corners = self.to_u(corners)
        self.low, self.high = u_corners.amin(0), u_corners.amax(0)
        self.width = (self.high - self.low) / shape
        idx = torch.cartesian_prod(*(torch.arange(n) for n in sim.grid))
        centre = self.low + (idx + 0.5) * self.width
        # ln σ_8 = u_1 - α (u_2 - ln 0.3) - β (u_3 + 1) is linear: over a cell it spans its centre value ± `reach`
        reach = 0.5 * (self.width[0] + abs(self.alpha) * self.width[1] + abs(self.beta) * self.width[2])
        log_s8 = torch.log(self.to_theta(centre)[:, 1])
        keep = (log_s8 + reach >= math.log(PRIOR_LOW[1])) & (log_s8 - reach <= math.log(PRIOR_HIGH[1]))
        self.index, self.centre = idx[keep], centre[keep]
        self.size = len(self.centre)
        self._position = _Lookup(self.index, sim.grid)
        self.theta = self.to_theta(self.centre)
        self.log_jacobian = torch.log(self.theta[:, 0] * self.theta[:, 1])  # |∂θ/∂u| = Ω_m σ_8
        self.box_low = torch.tensor(PRIOR_LOW, dtype=F64)
        self.box_high = torch.tensor(PRIOR_HIGH, dtype=F64)
        _check_physical(self.theta)
        self.spectra = sim._compute_spectra(self.theta, keep_signal=False)  # the density needs the field only
        if sim.field == "lognormal":
            self.kappa0_values, self.kappa0_index = torch.unique(self.spectra.kappa0, return_inverse=True)

    def to_u(self, theta: Tensor) -> Tensor:
        om, s8, w0 = theta.unbind(-1)
        u1 = torch.log(s8) + self.alpha * (torch.log(om) - math.log(0.3)) + self.beta * (w0 + 1)
        return torch.stack((u1, torch.log(om), w0), -1)

    def to_theta(self, u: Tensor) -> Tensor:
        s8 = torch.exp(u[:, 0] - self.alpha * (u[:, 1] - math.log(0.3)) - self.beta * (u[:, 2] + 1))
        return torch.stack((torch.exp(u[:, 1]), s8, u[:, 2]), -1)

    def spectra_rows(self, rows: Tensor) -> _Spectra:
        return _Spectra(*(None if t is None else t[rows] for t in self.spectra))

    def sample(self, log_density: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """Cells ∝ density, uniform jitter within the cell, rejection outside the prior box: ``[num_samples, 3]``."""
        probs = torch.softmax(log_density, 0)
        self._check_resolution(log_density, probs)
        kept, num_kept = [], 0
        while num_kept < num_samples:
            n = int(1.2 * (num_samples - num_kept)) + 16
            cells = torch.multinomial(probs, n, replacement=True, generator=generator)
            jitter = torch.rand(n, 3, dtype=F64, generator=generator) - 0.5
            theta = self.to_theta(self.centre[cells] + jitter * self.width)
            inside = ((theta >= self.box_low) & (theta <= self.box_high)).all(-1)
            kept.append(theta[inside])
            num_kept += len(kept[-1])
        return torch.cat(kept)[:num_samples]

    def _check_resolution(self, log_density: Tensor, probs: Tensor) -> None:
        """Warn when the log density changes by more than 0.6 on average between neighbouring cells along an axis
        (about 1.3 cells per posterior standard deviation: the sampled variance is then ~5 % too large)."""
        names = ("ln Sigma_8 + beta (w_0 + 1)", "ln Omega_m", "w_0")
        for axis in range(3):
            step = torch.zeros(3, dtype=torch.long)
            step[axis] = 1
            neighbour = self._position.get(self.index + step)
            ok = neighbour >= 0
            ok[ok.clone()] = torch.isfinite(log_density[ok]) & torch.isfinite(log_density[neighbour[ok]])
            jump = (log_density[neighbour[ok]] - log_density[ok]).abs()
            weight = probs[ok] + probs[neighbour[ok]]
            mean_jump = ((weight * jump).sum() / weight.sum()).item()
            if mean_jump > 0.6:
                warnings.warn(
                    f"cosmology_maps reference posterior: the log density changes by {mean_jump:.2f} on average "
                    f"between neighbouring grid cells along {names[axis]}: the grid is too coarse for this "
                    "posterior. Pass a finer grid=(cells along ln Sigma_8 + beta (w_0 + 1), ln Omega_m, w_0)",
                    stacklevel=4,
                )
