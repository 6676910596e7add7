"""Power-spectrum embedding of square maps: the summary that is sufficient for stationary isotropic Gaussian
fields."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .mlp import MLP

__all__ = ["PowerSpectrumEmbedding"]


class PowerSpectrumEmbedding(nn.Module):
    r"""Log power spectrum of square maps in shells of |m|, standardised, then an MLP: ``[n, N, N]`` → ``[n, out]``.

    With :math:`K = \mathrm{fft2}(\kappa)` over the modes :math:`m \in \mathbb{Z}_N^2` (``fftfreq`` order) and
    shells :math:`S_b` of modes,

    .. math:: s_b = \log \Big(\frac{1}{|S_b|} \sum_{m \in S_b} \frac{|K[m]|^2}{N^2} + \epsilon\Big), \qquad
        f = \mathrm{MLP}\big((s - \mu) / \sigma\big),

    :math:`\mu, \sigma` per shell set by :meth:`calibrate` on training maps (buffers, saved with the model).
    ``shells="exact"`` (default) groups the modes of equal :math:`|m|^2` (134 shells for N = 32, 456 for
    N = 64): for a stationary isotropic Gaussian field, whose pixel power depends on :math:`|m|` alone, these
    sums are sufficient statistics, so the posterior given the embedding can be the exact one.
    ``shells="radial"`` uses bins :math:`b = \lfloor |m| + \tfrac12 \rfloor` (as
    :func:`simgen.diagnostics.maps.binned_power_spectrum`, plus the corners: 23 bins for N = 32), fewer and
    less noisy features that lose some information. :math:`m = 0` is left out. Maps with channels
    ``[n, C, N, N]`` are averaged over channels shell by shell (i.i.d. patches).

    Args:
        x_shape: ``(N, N)`` or ``(C, N, N)``.
        hidden_features: MLP width.
        out_features: embedding size.
        num_layers: hidden layers of the MLP.
        shells: ``"exact"`` or ``"radial"``.
    """

    name = "power_spectrum"

    def __init__(self, x_shape: tuple[int, ...] | list[int], hidden_features: int = 64, out_features: int = 32,
                 num_layers: int = 2, shells: str = "exact") -> None:
        super().__init__()
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) not in (2, 3) or x_shape[-1] != x_shape[-2] or x_shape[-1] < 2:
            raise ValueError(f"PowerSpectrumEmbedding needs square maps (N, N) or (C, N, N); got x_shape {x_shape}")
        if shells not in ("exact", "radial"):
            raise ValueError(f"shells must be 'exact' or 'radial'; got {shells!r}")
        self.x_shape, self.hidden_features, self.num_layers = x_shape, hidden_features, num_layers
        self.out_features, self.shells = out_features, shells
        n = x_shape[-1]
        freq = torch.from_numpy(np.fft.fftfreq(n, 1.0 / n)).double()
        r2 = (freq[:, None] ** 2 + freq[None, :] ** 2).reshape(-1)
        key = r2 if shells == "exact" else torch.floor(r2.sqrt() + 0.5)
        _, index = torch.unique(key, return_inverse=True)  # shell 0 is m = 0 (the smallest key)
        num_shells = int(index.max())
        onehot = torch.zeros(n * n, num_shells + 1)
        onehot[torch.arange(n * n), index] = 1.0
        onehot = onehot[:, 1:]
        self.register_buffer("average", onehot / onehot.sum(0) / n**2)  # [N², B]: mean of |K|²/N² per shell
        self.register_buffer("loc", torch.zeros(num_shells))
        self.register_buffer("scale", torch.ones(num_shells))
        self.net = MLP(num_shells, out_features, hidden_features, num_layers)

    def config(self) -> dict[str, Any]:
        return {"x_shape": list(self.x_shape), "hidden_features": self.hidden_features,
                "out_features": self.out_features, "num_layers": self.num_layers, "shells": self.shells}

    def spectrum(self, x: Tensor) -> Tensor:
        """Log shell-averaged power :math:`s` ``[n, B]`` of maps ``[n, *x_shape]`` (before standardisation)."""
        k = torch.fft.fft2(x.float())
        power = (k.real**2 + k.imag**2).flatten(-2) @ self.average
        if power.dim() == 3:
            power = power.mean(1)
        return torch.log(power + 1e-12)

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> PowerSpectrumEmbedding:
        """Set the per-bin mean and standard deviation of :meth:`spectrum` from maps ``x`` — the maps as the
        estimator passes them (after its standardisation)."""
        s = torch.cat([self.spectrum(b.to(self.loc.device)) for b in x.split(4096)])
        self.loc.copy_(s.mean(0))
        self.scale.copy_(s.std(0).clamp_min(1e-6))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.net((self.spectrum(x) - self.loc) / self.scale)
