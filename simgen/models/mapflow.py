"""A normalizing flow for maps on a torus: isotropic Fourier filters alternating with pixel-wise splines."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from nflows.transforms.splines.rational_quadratic import (
    DEFAULT_MIN_DERIVATIVE,
)
from torch import Tensor, nn

from ..nets.mlp import Conditioner
from ..utils import randn
from .base import ConditionalDensity
from .flow import spline_points
from .fourier import radial_modes

__all__ = ["MapFlow", "RadialGain"]

FilterNetwork = Literal["radial", "per_radius"]


class MapFlow(ConditionalDensity):
    r"""Conditional flow for periodic maps y ``[C, H, W]`` (or ``[H, W]``): exact log p, one-pass sampling.

    The latent z ~ N(0, I) (one standard normal per pixel) is reached from a map y by

        u₀ = y ⊙ e^{−s(c)} − a(c),   u_{l} = F_l(g_l(u_{l−1}; c); c),  l = 1 … L,   z = u_L,

    with a log-scale s and a shift a per channel (per pixel with ``stationary=False``), g_l a monotone
    rational-quadratic spline applied to every pixel of a channel alike (Durkan et al. 2019, "Neural Spline
    Flows", arXiv:1906.04032; identity tails outside ``[-tail_bound, tail_bound]``), and F_l an isotropic
    circulant filter,

        F(u) = ifft2(γ(|k|; c) ⊙ fft2(u)),   γ > 0,

    a real symmetric convolution on the torus whose eigenvalues are γ at every mode k of the N_H × N_W
    frequency grid (|k|² = (k_y/H)² + (k_x/W)², modes of equal |k| share one γ). All parameters are small
    networks of the context c, evaluated once per context row. The change of variables is exact:

        log p(y | c) = log N(z; 0, I) − Σ_pixels s + Σ_l [Σ_pixels log g_l′ + Σ_ch Σ_k log γ_l(|k|)].

    With ``stationary=True`` (default) every layer commutes with translations on the torus (g acts
    pixel-wise, F is a convolution, a and s are constants per channel) and N(0, I) is invariant under them, so
    log p(shift(y) | c) = log p(y | c) for any shift; F also commutes with the lattice's reflections and
    quarter turns. This is the translation- and rotation-equivariant flow of Dai & Seljak (2022, "Translation
    and rotation equivariant normalizing flow (TRENF) for optimal cosmological analysis", arXiv:2202.05282),
    with the spectra and splines conditioned on c. One block (L = 1, g = identity) is exactly a stationary
    Gaussian field with conditional power spectrum P(|k| | c) = e^{2s} / γ(|k|)²; the splines add one-point
    non-Gaussianity such as a lognormal field's (y = e^{G} − κ₀ with G Gaussian is exactly g = log, then F),
    and further blocks mix the two. Channels are filtered separately (no cross-spectra).

    The filters' log-gains share their dependence on the context across radii (``filter_network="radial"``,
    :class:`RadialGain`): log γ(|k|; c) = Σ_j a_j(c) B_j(|k|) + b_|k| with learned radial functions B_j, so that
    how the spectrum moves with c is learned jointly across radii (each radius of a small map has only 4–8 modes
    per training map, too few to learn its own dependence on c), while the free offsets b_|k| keep any radial
    shape. ``"per_radius"`` gives every radius its own output of an MLP of c (the former architecture: noisier
    conditional spectra, most at the prior's edges).

    The shift a is in units of the scale e^{s(c)}, the field's mean being a(c) e^{s(c)}: a network's error in
    it is then an error relative to the field's own spread at every c. In the map's units (u₀ = (y − a) e^{−s},
    as in models saved before this form, which load as such) the same absolute error is a large relative one
    where the field is faint, at the low-amplitude edge of a prior: there the pixels' one-point distribution
    came out shifted.

    Every conditioner's last layer starts at zero and the splines at the identity (equal bins, unit knot
    derivatives), so a fresh model is N(0, I) on the standardised pixels.

    Args:
        blocks: number L of (spline, filter) blocks.
        hidden_features: width of the conditioner networks (two hidden layers).
        num_bins: spline bins.
        tail_bound: spline interval half-width, in the units of the standardised, rescaled map u.
        stationary: ``False`` gives a and s one value per pixel (a non-stationary mean and variance map, for
            fields that are not statistically homogeneous); the model is then no longer translation-invariant.
        filter_network: ``"radial"`` (default) or ``"per_radius"``, the filters' conditioner (above). Models
            saved before the option load as ``"per_radius"``.
    """

    family = "mapflow"
    data_kinds = frozenset({"map"})
    # the validation loss of a conditional spectrum flattens long before its values at the prior's edges settle
    training_defaults = {"max_batch_size": 512, "learning_rate": 2e-3, "patience": 30}
    filter_networks = ("radial", "per_radius")

    def __init__(
        self,
        blocks: int = 2,
        hidden_features: int = 64,
        num_bins: int = 8,
        tail_bound: float = 5.0,
        stationary: bool = True,
        filter_network: FilterNetwork = "radial",
    ) -> None:
        super().__init__()
        if blocks < 1 or hidden_features < 1 or num_bins < 1:
            raise ValueError(f"blocks, hidden_features and num_bins must be >= 1; got {blocks}, {hidden_features}, "
                             f"{num_bins}")
        if not tail_bound > 0:
            raise ValueError(f"tail_bound must be > 0; got {tail_bound}")
        if filter_network not in self.filter_networks:
            raise ValueError(f"filter_network must be one of {self.filter_networks}; got {filter_network!r}")
        self.blocks = int(blocks)
        self.hidden_features = int(hidden_features)
        self.num_bins = int(num_bins)
        self.tail_bound = float(tail_bound)
        self.stationary = bool(stationary)
        self.filter_network = filter_network
        #: whether the shift is in units of the scale (u₀ = y e^{−s} − a); models saved before hold it in the
        #: map's units (u₀ = (y − a) e^{−s}) and load as such (a saved flag: see _earlier_forms)
        self.register_buffer("shift_in_scale_units", torch.tensor(True))
        self._scaled_shift = True  # the flag as a Python bool, read on every pass without a device sync
        self._register_load_state_dict_pre_hook(_earlier_forms, with_module=True)

    def config(self) -> dict[str, Any]:
        return dict(blocks=self.blocks, hidden_features=self.hidden_features, num_bins=self.num_bins,
                    tail_bound=self.tail_bound, stationary=self.stationary, filter_network=self.filter_network)

    # ------------------------------------------------------------------------------------------- building
    def _build(self) -> None:
        if len(self.y_shape) not in (2, 3):
            raise ValueError(f"MapFlow models maps [H, W] or [C, H, W]; got y_shape {list(self.y_shape)}")
        c, h, w = (1, *self.y_shape) if len(self.y_shape) == 2 else self.y_shape
        self._chw = (c, h, w)
        modes = radial_modes(h, w)
        self.register_buffer("_group", modes.group)  # [H, W//2+1] radius index of each rfft2 mode
        # eigenvalue multiplicity of each radius on the full frequency grid (the log-determinant's weights)
        self.register_buffer("_counts", modes.counts.float())  # [R]
        self.num_radii = int(modes.counts.shape[0])
        self._radius = modes.radius.float()  # [R] |k| in cycles per pixel, for the radial filter networks
        f = self.context_features
        k = self.num_bins
        # one shift and log-scale per channel, or per pixel for a non-stationary field
        self._affine_shape = (c, 1, 1) if self.stationary else (c, h, w)
        self.shift_scale = Conditioner(f, 2 * math.prod(self._affine_shape), self.hidden_features)
        self.splines = nn.ModuleList()
        self.filters = nn.ModuleList()
        for _ in range(self.blocks):
            spline = Conditioner(f, c * (3 * k - 1), self.hidden_features)
            with torch.no_grad():  # unit inner knot derivatives: the spline starts as the identity
                spline.bias_view(c, 3 * k - 1)[:, 2 * k:] = math.log(math.expm1(1.0 - DEFAULT_MIN_DERIVATIVE))
            self.splines.append(spline)
            self.filters.append(self._filter_conditioner())

    def _filter_conditioner(self) -> nn.Module:
        """One block's log-gain network: ``(c [n, f] or None, n)`` → ``[n, C · R]``."""
        channels = self._chw[0]
        if self.filter_network == "per_radius":
            return Conditioner(self.context_features, channels * self.num_radii, self.hidden_features)
        return RadialGain(self.context_features, channels, self._radius, self.hidden_features)

    # ------------------------------------------------------------------------------------------ transform
    def _layer_params(self, c: Tensor | None, n: int) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """Every layer's parameters for ``n`` rows: shift, log-scale ``[n, C, 1, 1]`` (``[n, C, H, W]`` when
        not stationary); per block the spline's ``[n, C, 3K − 1]`` and the filter's log γ ``[n, C, R]``."""
        ch = self._chw[0]
        shift, log_scale = self.shift_scale(c, n).reshape(n, 2, *self._affine_shape).unbind(1)
        splines = [s(c, n).reshape(n, ch, 3 * self.num_bins - 1) for s in self.splines]
        filters = [f(c, n).reshape(n, ch, self.num_radii) for f in self.filters]
        return shift, log_scale, splines, filters

    def _spline(self, u: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        n, ch, h, w = u.shape
        out, log_det = shared_spline(u.reshape(n, ch, h * w), params, self.num_bins, self.tail_bound, inverse)
        return out.reshape(n, ch, h, w), log_det.sum((1, 2))

    def _filter(self, u: Tensor, log_gain: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        """u ↦ ifft2(γ^sign ⊙ fft2(u)) and its log|det| = sign Σ_ch Σ_k log γ(|k|)."""
        gain = torch.exp(sign * log_gain)[:, :, self._group]  # [n, C, H, W//2+1]
        out = torch.fft.irfft2(torch.fft.rfft2(u) * gain, s=u.shape[-2:])
        return out, sign * (log_gain @ self._counts).sum(1)

    def to_latent(self, y: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """(z ``[n, *y_shape]``, log |det ∂z/∂y| ``[n]``) for maps y ``[n, *y_shape]`` and contexts c ``[n, f]``:
        the flow's bijection to its N(0, I) latent (the class docstring's u_L)."""
        self._check_built()
        z, log_det = self._to_latent(y, c)
        return z.reshape(y.shape), log_det

    def from_latent(self, z: Tensor, c: Tensor | None) -> Tensor:
        """y = T_c⁻¹(z) for latents z ``[n, *y_shape]`` and contexts c ``[n, f]`` (or ``None``): the inverse of
        :meth:`to_latent`."""
        self._check_built()
        n = z.shape[0]
        return self._from_latent(z.reshape(n, *self._chw), self._layer_params(c, n))

    def _to_latent(self, y: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        n = y.shape[0]
        shift, log_scale, splines, filters = self._layer_params(c, n)
        if self._scaled_shift:
            u = y.reshape(n, *self._chw) * torch.exp(-log_scale) - shift
        else:
            u = (y.reshape(n, *self._chw) - shift) * torch.exp(-log_scale)
        log_det = -log_scale.sum((1, 2, 3)) * (math.prod(self._chw) // math.prod(self._affine_shape))
        for spline, log_gain in zip(splines, filters, strict=True):
            u, ld_spline = self._spline(u, spline, inverse=False)
            u, ld_filter = self._filter(u, log_gain, 1.0)
            log_det = log_det + ld_spline + ld_filter
        return u, log_det

    # -------------------------------------------------------------------------------------------- interface
    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        self._check_built()
        if tuple(y.shape[1:]) != self.y_shape:
            raise ValueError(f"y must have shape [n, {', '.join(map(str, self.y_shape))}]; got {list(y.shape)}")
        z, log_det = self._to_latent(y, c)
        d = z[0].numel()
        return -0.5 * (z * z).sum((1, 2, 3)) - 0.5 * d * math.log(2 * math.pi) + log_det

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        return -self.log_prob(y, c).mean()

    def _sample(self, rows: int, context: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        weight = self.shift_scale.final.weight
        u = randn(rows, *self._chw, generator=generator, device=weight.device, dtype=weight.dtype)
        # the conditioners run once per distinct context row (ConditionalDensity.sample repeats each row for
        # its draws), then their outputs are gathered for every draw
        if context is None:
            index, params = torch.zeros(rows, dtype=torch.long, device=u.device), self._layer_params(None, 1)
        else:
            distinct, index = torch.unique_consecutive(context, dim=0, return_inverse=True)
            params = self._layer_params(distinct, distinct.shape[0])
        return self._from_latent(u, [_gather(t, index) for t in params])

    def _from_latent(self, u: Tensor, params: Any) -> Tensor:
        """Maps ``[n, *y_shape]`` from latents u ``[n, C, H, W]`` and :meth:`_layer_params` for their rows."""
        shift, log_scale, splines, filters = params
        for spline, log_gain in zip(reversed(splines), reversed(filters), strict=True):
            u, _ = self._filter(u, log_gain, -1.0)
            u, _ = self._spline(u, spline, inverse=True)
        y = (u + shift) * torch.exp(log_scale) if self._scaled_shift else u * torch.exp(log_scale) + shift
        return y.reshape(u.shape[0], *self.y_shape)


class RadialGain(nn.Module):
    r"""An isotropic filter's log-gains at every radius, with their dependence on the context shared across radii:

        log γ_ch(r; c) = Σ_j a_{ch, j}(c) B_j(ρ_r) + b_{ch, r},

    a low-rank expansion on J learned radial functions B_j (a two-layer network of the radius features ρ_r:
    log(|k_r| / k_min) / log(k_max / k_min), 1{k_r = 0}, and ``RADIAL_CENTRES`` Gaussian bumps of width one
    spacing at log-spaced centres from k_min to k_max), whose coefficients a(c) are a two-layer network
    of the context with its last layer starting at zero, plus free offsets b ``[C, R]`` (zero at start: a fresh
    filter is the identity). The per-radius conditioner is the special case B = I (J = R); smooth shared B_j pool
    the training maps' evidence on how the spectrum moves with c over many radii instead of the 4–8 modes of
    one, while b still gives every radius its own level. Without a context (``features`` ``None``) the gains
    are the offsets alone.

    Args:
        features: context features f, or ``None``.
        channels: C.
        radius: ``[R]`` |k| of each radius, cycles per pixel (0 for the mean mode).
        hidden: width of the hidden layers and number J of radial functions.
    """

    RADIAL_CENTRES: ClassVar[int] = 16

    def __init__(self, features: int | None, channels: int, radius: Tensor, hidden: int) -> None:
        super().__init__()
        positive = radius[radius > 0]
        k_min, k_max = (float(positive.min()), float(positive.max())) if positive.numel() else (1.0, 1.0)
        log_k = torch.log(radius.clamp_min(k_min / 2) / k_min)
        # bumps of width one spacing at RADIAL_CENTRES log-spaced centres: the sparse low-|k| radii get inputs of
        # their own, so that the shared functions are not forced smooth where the radii are far apart
        centres = torch.linspace(0.0, math.log(k_max / k_min), self.RADIAL_CENTRES, dtype=log_k.dtype)
        width = float(centres[1] - centres[0]) if len(centres) > 1 and k_max > k_min else 1.0
        bumps = torch.exp(-0.5 * ((log_k[:, None] - centres) / width) ** 2) * (radius > 0).to(log_k)[:, None]
        scaled = log_k / max(math.log(k_max / k_min), 1.0)
        self.register_buffer("rho", torch.cat([scaled[:, None], (radius == 0).to(log_k)[:, None], bumps], dim=1))
        self.offset = nn.Parameter(torch.zeros(channels, radius.shape[0]))
        self.channels = channels
        self.coefficients = self.basis = None
        if features:
            self.coefficients = Conditioner(features, channels * hidden, hidden)  # a(c), zero at start
            self.basis = nn.Sequential(nn.Linear(self.rho.shape[1], hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                       nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, c: Tensor | None, n: int) -> Tensor:
        """``[n, C · R]`` log-gains (channel-major) for the context rows ``c`` ``[n, f]`` (``None``: unconditional)."""
        if self.coefficients is None:
            return self.offset.reshape(1, -1).expand(n, -1)
        a = self.coefficients(c, n).reshape(n, self.channels, -1)  # [n, C, J]
        return (a @ self.basis(self.rho).T + self.offset).reshape(n, -1)  # [n, C, R]


def _earlier_forms(module: MapFlow, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A state dict written before the shift was in units of the scale lacks its flag: the model loads it with
    the shift in the map's units. One written before ``filter_network`` existed holds per-radius conditioners:
    the model rebuilds its filters that way before loading it."""
    module._scaled_shift = bool(state_dict.setdefault(f"{prefix}shift_in_scale_units", torch.tensor(False)))
    if (module.built and module.filter_network == "radial" and f"{prefix}filters.0.final.weight" in state_dict
            and f"{prefix}filters.0.offset" not in state_dict):
        module.filter_network = "per_radius"
        device = module.shift_scale.final.weight.device
        module.filters = nn.ModuleList([module._filter_conditioner().to(device) for _ in range(module.blocks)])


def shared_spline(
    inputs: Tensor, params: Tensor, num_bins: int, tail_bound: float, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    r"""One monotone rational-quadratic spline per row and channel (:func:`~simgen.models.flow.spline_points`),
    applied to all of that channel's pixels.

    Args:
        inputs: ``[n, C, P]`` pixels.
        params: ``[n, C, 3K − 1]``: K width logits, K height logits, K − 1 inner-derivative logits.

    Returns:
        ``(outputs [n, C, P], log|g′| [n, C, P])`` (``−log g′`` at the input for ``inverse=True``).
    """
    k = num_bins
    return spline_points(inputs, params[..., :k], params[..., k : 2 * k], params[..., 2 * k :], inverse=inverse,
                         tail_bound=tail_bound)


def _gather(t: Tensor | list[Tensor], index: Tensor) -> Tensor | list[Tensor]:
    """Rows ``index`` of ``t`` (of each tensor of a list)."""
    if isinstance(t, list):
        return [x[index] for x in t]
    return t[index]
