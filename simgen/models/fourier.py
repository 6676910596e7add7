r"""Stationary Gaussian fields on a torus: covariances diagonal in the orthonormal 2-D Fourier basis.

A real map r ``[C, H, W]`` on the periodic H × W grid has the unitary discrete Fourier transform
r̂ = F r (``torch.fft.fft2(r, norm="ortho")``). A covariance that commutes with every translation of the torus is
circulant, Σ = F* diag(λ) F, with one real eigenvalue λ_k > 0 per mode k; it is also invariant under the lattice's
reflections and quarter turns when λ depends on |k| only (an isotropic power spectrum). Then, exactly,

    log N(r; 0, Σ) = −½ Σ_k |r̂_k|² / λ_k − ½ Σ_k log λ_k − ½ HW log 2π   (sum over the full N_H × N_W grid),

and r = F* diag(√λ) F w with w ~ N(0, I) pixel-wise is a draw. With the half-spectrum ``rfft2`` the sum over the
full grid is a weighted sum over the stored modes: a mode whose conjugate −k is stored as well (the columns
k_x = 0 and, for even W, k_x = W/2) counts once, every other stored mode stands for itself and its conjugate and
counts twice. :func:`radial_modes` gives these weights and the grouping of modes by |k|.

Reference: e.g. Dai & Seljak (2022, arXiv:2202.05282) for isotropic Fourier filters on a torus; Gray (2006),
"Toeplitz and circulant matrices: a review", for the diagonalisation of circulant matrices.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from ..utils import randn

__all__ = ["RadialModes", "radial_modes", "radial_power", "StationaryNormal"]


class RadialModes(NamedTuple):
    """The ``rfft2`` modes of an H × W grid grouped by radius |k| (see :func:`radial_modes`)."""

    #: ``[H, W//2+1]`` long: the radius index (0 … R − 1, increasing |k|) of each stored mode
    group: Tensor
    #: ``[H, W//2+1]`` float: how many modes of the full grid each stored mode stands for (1 or 2)
    weight: Tensor
    #: ``[R]`` float: the number of modes of the full grid at each radius (they sum to H · W)
    counts: Tensor
    #: (H, W), the grid
    shape: tuple[int, int]
    #: ``[R]`` float64: each radius |k| in cycles per pixel (0 for the mean mode); ``None`` where the modes were
    #: rebuilt from a model's buffers that do not keep it
    radius: Tensor | None = None

    @property
    def num_radii(self) -> int:
        return int(self.counts.shape[0])


def radial_modes(height: int, width: int) -> RadialModes:
    r"""Group the ``rfft2`` modes of an ``height`` × ``width`` torus by |k|, with their full-grid weights.

    |k|² = (k_y / H)² + (k_x / W)² in cycles per pixel; it is compared as the integer (k_y W)² + (k_x H)², so
    modes of equal radius group exactly. Modes k and −k always share a radius, so a spectrum indexed by
    ``group`` is a real symmetric (and, on a square grid, rotation-invariant) filter.
    """
    if height < 1 or width < 1:
        raise ValueError(f"radial_modes needs a grid of at least 1 x 1; got {height} x {width}")
    ky = torch.fft.fftfreq(height, 1.0 / height).double()
    kx = torch.fft.rfftfreq(width, 1.0 / width).double()
    radius2 = ((ky[:, None] * width) ** 2 + (kx[None, :] * height) ** 2).round().long()
    _, group = torch.unique(radius2, return_inverse=True)
    # stored columns whose conjugates are stored too: k_x = 0 and, for even W, the Nyquist column k_x = W/2
    weight = torch.full(radius2.shape, 2.0)
    weight[:, 0] = 1.0
    if width % 2 == 0:
        weight[:, -1] = 1.0
    counts = torch.zeros(int(group.max()) + 1, dtype=weight.dtype).index_add_(0, group.reshape(-1),
                                                                              weight.reshape(-1))
    radius = torch.zeros(counts.shape[0], dtype=torch.float64).scatter_(
        0, group.reshape(-1), radius2.reshape(-1).double().sqrt() / (height * width))
    return RadialModes(group, weight, counts, (int(height), int(width)), radius)


def radial_power(r: Tensor, modes: RadialModes) -> Tensor:
    r"""The isotropic power spectrum of zero-mean maps, P(|k|) = E|r̂_k|² averaged over the rows and the modes of
    each radius: ``[C, R]`` from ``r`` ``[n, C, H, W]`` (the unitary transform: white noise of unit variance has
    P = 1 at every radius). The moment estimate a stationary Gaussian's spectrum starts from."""
    r_hat = torch.fft.rfft2(r, norm="ortho")
    power = (r_hat.real**2 + r_hat.imag**2).mean(0)  # [C, H, W//2+1]
    group = modes.group.reshape(-1)
    per_radius = torch.zeros(power.shape[0], modes.num_radii, dtype=power.dtype, device=power.device)
    per_radius.index_add_(1, group, power.reshape(power.shape[0], -1))
    return per_radius / torch.bincount(group, minlength=modes.num_radii).to(power)


class StationaryNormal(Distribution):
    r"""N(loc, Σ) on maps ``[*batch, C, H, W]`` (or ``[*batch, H, W]``) with Σ = F* diag(σ_k²) F per channel.

    The standard deviation σ_k of mode k is ``scale[..., ch, group[k]]``: one value per channel and radius |k|,
    so each channel is an isotropic stationary field (no cross-spectra between channels); see the module
    docstring for the log-density. σ_k² is the power spectrum in the units of the orthonormal transform: white
    noise of unit variance has σ_k = 1.

    Args:
        loc: ``[*batch, C, H, W]`` means (``[*batch, H, W]`` with ``channels=False``).
        scale: ``[*batch, C, R]`` positive standard deviations per radius (``[*batch, R]`` with
            ``channels=False``), broadcast against ``loc``'s batch.
        modes: :func:`radial_modes` ``(H, W)``, on the device of ``loc``.
        channels: whether the event has a channel axis (``[C, H, W]``) or is a single map (``[H, W]``).
    """

    arg_constraints = {}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, modes: RadialModes, *, channels: bool = True,
                 validate_args: bool | None = False) -> None:
        event_dim = 3 if channels else 2
        if (loc.dim() < event_dim or scale.dim() < event_dim - 1 or scale.shape[-1] != modes.num_radii
                or tuple(loc.shape[-2:]) != modes.shape
                or (channels and scale.shape[-2] not in (1, loc.shape[-3]))):
            lead = "[*, C, " if channels else "[*, "
            raise ValueError(f"StationaryNormal needs loc {lead}H, W] and scale {lead}{modes.num_radii}] for the "
                             f"{modes.shape[0]} x {modes.shape[1]} grid of `modes`; got {list(loc.shape)} and "
                             f"{list(scale.shape)}")
        self.loc, self.scale, self.modes, self.channels = loc, scale, modes, channels
        batch = torch.broadcast_shapes(loc.shape[:-event_dim], scale.shape[: -(event_dim - 1)])
        super().__init__(batch, loc.shape[-event_dim:], validate_args=validate_args)

    @property
    def mean(self) -> Tensor:
        return self.loc.expand(*self.batch_shape, *self.event_shape)

    @property
    def variance(self) -> Tensor:
        """Per-pixel variance, the same at every pixel of a channel: Σ_k σ_k² / (H W)."""
        h, w = self.modes.shape
        per_channel = (self.scale**2 * self.modes.counts.to(self.scale)).sum(-1) / (h * w)
        return per_channel[..., None, None].expand(*self.batch_shape, *self.event_shape)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = (),
                generator: torch.Generator | None = None) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        white = randn(shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + self.colour(white)

    def colour(self, white: Tensor) -> Tensor:
        """F* diag(σ) F w: white noise ``[..., *event]`` of unit variance → a zero-mean draw of this field."""
        return torch.fft.irfft2(torch.fft.rfft2(white, norm="ortho") * self.scale[..., self.modes.group],
                                s=self.modes.shape, norm="ortho")

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact log N(value; loc, Σ): ``[*batch]`` (one number per map, channels summed)."""
        r_hat = torch.fft.rfft2(value - self.loc, norm="ortho")
        power = (r_hat.real**2 + r_hat.imag**2) * self.modes.weight.to(r_hat.real)
        event = (-3, -2, -1) if self.channels else (-2, -1)
        quad = (power / self.scale[..., self.modes.group] ** 2).sum(event)
        # ½ log|Σ| = Σ over the full grid of log σ_k, a radius counted once per mode
        log_det = (self.scale.log() * self.modes.counts.to(self.scale)).sum(event[1:])
        return -0.5 * quad - log_det - 0.5 * math.prod(self.event_shape) * math.log(2 * math.pi)
