r"""Spectral whitening: a learned conditional stationary Gaussian as the reference of a map model.

For maps y ``[C, H, W]`` on a periodic H × W grid, a stationary Gaussian field N(a(c), Σ(c)) with a constant
mean a per channel and Σ(c) = F* diag(P(|k| | c)) F per channel (an isotropic power spectrum, one value per
radius |k|; :mod:`~simgen.models.fourier`) defines the bijection

    w = W_c(y) = F* diag(P(|k| | c)^{−½}) F (y − a(c)),   log |det ∂w/∂y| = −½ Σ_k log P(|k| | c),

the sum running over the full frequency grid. The mean is learned as b(c) = a(c) P(0 | c)^{−½}, in units of the
mean mode's own spread (w = F* diag(P^{−½}) F y − b): a network's error in it is then relative to that spread at
every c, where in the map's units the same error is a large one where the field is faint (models saved before
this form hold a and load as such). w is white, N(0, I), exactly when y is that Gaussian field, and
log N(y; a, Σ) = log N(w; 0, I) + log |det ∂w/∂y|. A density of w then gives one of y by the change of variables,
p(y | c) = p_w(W_c(y) | c) |det ∂w/∂y|.

This is preconditioning in the sense of Karras et al. (2022, "Elucidating the design space of diffusion-based
generative models", arXiv:2206.00364), who scale the network's input and output to unit variance, taken one
step further for stationary fields: each Fourier mode is scaled by its own standard deviation, so a model of w
whose network outputs zero is already the best stationary Gaussian fit, exact for a Gaussian field, and the
network learns only the departure from it (non-Gaussianity, anisotropy, cross-channel structure). Whitening a
field by its power spectrum is the usual first step of field-level analyses in cosmology; the filter is the
isotropic circulant of Dai & Seljak (2022, arXiv:2202.05282).

The reference is fitted by maximum likelihood of the Gaussian alone (:meth:`SpectralWhitening.nll`), started
from the first training batch's moments (as Glow's ActNorm; Kingma & Dhariwal 2018, arXiv:1807.03039).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..nets.mlp import Conditioner
from .fourier import RadialModes, radial_modes, radial_power
from .mapflow import MapFlow

__all__ = ["FlowWhitening", "SpectralWhitening"]

LOG_2PI = math.log(2 * math.pi)


class SpectralWhitening(nn.Module):
    r"""w = W_c(y) for maps ``[n, H, W]`` / ``[n, C, H, W]``: subtract a(c), divide each Fourier mode by
    P(|k| | c)^{½} (see the module docstring). a and log P^{½} are the outputs of a small network of the context
    (:class:`~simgen.nets.mlp.Conditioner`; learned constants when unconditional).

    Args:
        y_shape: the map's shape, ``(H, W)`` or ``(C, H, W)``.
        context_features: the width of the context, or ``None`` for an unconditional model.
        hidden_features: the conditioner's width.
    """

    def __init__(self, y_shape: tuple[int, ...], context_features: int | None, hidden_features: int = 64) -> None:
        super().__init__()
        if len(y_shape) not in (2, 3):
            raise ValueError(f"SpectralWhitening whitens maps [H, W] or [C, H, W]; got y_shape {list(y_shape)}")
        self.y_shape = tuple(y_shape)
        self._chw = (1, *y_shape) if len(y_shape) == 2 else tuple(y_shape)
        modes = radial_modes(*self._chw[1:])
        # derived from the shape alone: not saved, so the state dict holds only what was learned
        self.register_buffer("_group", modes.group, persistent=False)
        self.register_buffer("_weight", modes.weight, persistent=False)
        self.register_buffer("_counts", modes.counts, persistent=False)
        self.num_radii = modes.num_radii
        channels = self._chw[0]
        self.params = Conditioner(context_features, channels * (1 + self.num_radii), hidden_features)
        #: whether the spectrum has had its data-dependent start (saved: a loaded model keeps its weights)
        self.register_buffer("initialized", torch.tensor(False))
        #: whether the mean is b, in units of the mean mode's spread (the module docstring), rather than a, in the
        #: map's units, as saved before that form (the state dict then lacks the flag; see _earlier_form)
        self.register_buffer("shift_in_scale_units", torch.tensor(True))
        self._scaled_shift = True  # the flag as a Python bool, read on every pass without a device sync
        self._register_load_state_dict_pre_hook(_earlier_form, with_module=True)

    @property
    def modes(self) -> RadialModes:
        return RadialModes(self._group, self._weight, self._counts, self._chw[1:])

    def _shift_log_scale(self, c: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        """b(c) (a(c) in a model saved before b) ``[n, C, 1, 1]`` and log P(|k| | c)^{½} ``[n, C, R]``."""
        raw = self.params(c, n).reshape(n, self._chw[0], 1 + self.num_radii)
        return raw[..., :1, None], raw[..., 1:]

    def gaussian(self, c: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        """The stationary Gaussian's mean a(c) in the map's units ``[n, C, 1, 1]`` and log P(|k| | c)^{½}
        ``[n, C, R]``."""
        shift, log_scale = self._shift_log_scale(c, n)
        if self._scaled_shift:
            shift = shift * torch.exp(log_scale[..., :1, None])  # a = b P(0)^{½}
        return shift, log_scale

    def _filter(self, u: Tensor, log_gain: Tensor) -> Tensor:
        """F* diag(e^{log_gain(|k|)}) F u for u ``[n, C, H, W]``: real and symmetric, since the gain is a
        function of |k| and so equal at k and −k."""
        gain = torch.exp(log_gain)[:, :, self._group]
        return torch.fft.irfft2(torch.fft.rfft2(u, norm="ortho") * gain, s=u.shape[-2:], norm="ortho")

    def forward(self, y: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """(w ``[n, *y_shape]``, log |det ∂w/∂y| ``[n]``) for maps y ``[n, *y_shape]`` and contexts c ``[n, f]``."""
        n = y.shape[0]
        shift, log_scale = self._shift_log_scale(c, n)
        if self._scaled_shift:
            w = self._filter(y.reshape(n, *self._chw), -log_scale) - shift
        else:
            w = self._filter(y.reshape(n, *self._chw) - shift, -log_scale)
        log_det = -(log_scale * self._counts.to(log_scale)).sum((1, 2))
        return w.reshape(y.shape), log_det

    def inverse(self, w: Tensor, c: Tensor | None) -> Tensor:
        """y = W_c⁻¹(w) for w ``[n, *y_shape]``: the map whose whitened version is w."""
        n = w.shape[0]
        shift, log_scale = self._shift_log_scale(c, n)
        if self._scaled_shift:
            return self._filter(w.reshape(n, *self._chw) + shift, log_scale).reshape(w.shape)
        return (self._filter(w.reshape(n, *self._chw), log_scale) + shift).reshape(w.shape)

    @staticmethod
    def nll(w: Tensor, log_det: Tensor) -> Tensor:
        r"""−log N(y; a, Σ) / D averaged over the rows, from :meth:`forward`'s (w, log |det|): the reference's
        own training loss, ½|w|²/D − log |det|/D + ½ log 2π."""
        d = math.prod(w.shape[1:])
        return (0.5 * w.reshape(w.shape[0], -1).pow(2).sum(-1) - log_det).mean() / d + 0.5 * LOG_2PI

    @torch.no_grad()
    def initialize(self, y: Tensor) -> None:
        """Start the mean and P at the moments of the batch ``y`` ``[n, *y_shape]`` (once; later calls do nothing):
        a the mean of each channel (b = a P(0)^{−½}), P(|k|) the batch's radial power spectrum about it, for
        every context (the conditioner's last-layer weights are still zero, so its bias is every context's
        parameters)."""
        if bool(self.initialized) or y.shape[0] < 2:
            return
        self.initialized.fill_(True)
        n = y.shape[0]
        r = y.reshape(n, *self._chw)
        shift = r.mean((0, 2, 3))
        power = radial_power(r - shift[:, None, None], self.modes) * n / (n - 1)
        # a radius without power (a constant channel) would make the filter singular
        floor = 1e-6 * power.mean(1, keepdim=True).clamp_min(1e-12)
        log_scale = 0.5 * torch.log(power.clamp_min(floor))
        if self._scaled_shift:  # a constant map a, filtered: the constant a P(0)^{−½} (radius 0 is the mean mode)
            shift = shift * torch.exp(-log_scale[:, 0])
        start = torch.cat([shift[:, None], log_scale], dim=1)
        self.params.bias_view(*start.shape).copy_(start)

    @torch.enable_grad()
    def fit(self, y: Tensor, c: Tensor | None, *, steps: int = 500, batch_size: int = 256,
            learning_rate: float = 5e-3, seed: int = 0) -> None:
        """Maximum likelihood of the stationary Gaussian alone on rows y ``[n, *y_shape]``, c ``[n, f]``: the
        moment start (:meth:`initialize`), then ``steps`` Adam steps on :meth:`nll` over random batches with a
        cosine-decaying learning rate (batches drawn from a generator seeded with ``seed``, so the fit is
        reproducible). Cheap next to any network: FFTs of the maps and the conditioner's small MLP."""
        self.initialize(y)
        _fit_by_likelihood(self, y, c, steps, batch_size, learning_rate, seed)

    def extra_repr(self) -> str:
        return f"y_shape={list(self.y_shape)}, radii={self.num_radii}"


def _earlier_form(module: SpectralWhitening, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A state dict written before the mean was in units of the mean mode's spread lacks its flag: the module
    loads it with the mean in the map's units."""
    module._scaled_shift = bool(state_dict.setdefault(f"{prefix}shift_in_scale_units", torch.tensor(False)))


class FlowWhitening(nn.Module):
    r"""w = T_c(y): maps ``[n, H, W]`` / ``[n, C, H, W]`` whitened by a conditional map flow
    (:class:`~simgen.models.MapFlow`), the bijection to its N(0, I) latent, with log p(y | c) =
    log N(w; 0, I) + log |det ∂w/∂y|.

    :class:`SpectralWhitening` is the one-block, spline-free case of this flow: a stationary Gaussian. The flow's
    pixel-wise splines Gaussianise the one-point distribution as well, so a field whose pixels are not Gaussian
    (a lognormal field, y = e^G − κ₀ with G Gaussian, is a log, which the splines approximate, then a filter)
    reaches the model of w nearly white; the network of a diffusion or CNF then learns only what the flow misses:
    a diffusion in the latent space of a normalizing flow, trained with it by likelihood (Kim et al. 2022,
    "Maximum likelihood training of implicit nonlinear diffusion models", arXiv:2205.13699). Fitted by its own
    exact likelihood (:meth:`nll`), before and during the network's training, like :class:`SpectralWhitening`.

    Args:
        y_shape: the map's shape, ``(H, W)`` or ``(C, H, W)``.
        context_features: the width of the context, or ``None`` for an unconditional model.
        blocks: the flow's (spline, filter) blocks.
        hidden_features: the width of its conditioners.
    """

    def __init__(self, y_shape: tuple[int, ...], context_features: int | None, blocks: int = 2,
                 hidden_features: int = 64) -> None:
        super().__init__()
        if len(y_shape) not in (2, 3):
            raise ValueError(f"FlowWhitening whitens maps [H, W] or [C, H, W]; got y_shape {list(y_shape)}")
        self.y_shape = tuple(y_shape)
        self.flow = MapFlow(blocks=blocks, hidden_features=hidden_features).build(self.y_shape, context_features)

    def forward(self, y: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """(w ``[n, *y_shape]``, log |det ∂w/∂y| ``[n]``) for maps y ``[n, *y_shape]`` and contexts c ``[n, f]``."""
        return self.flow.to_latent(y, c)

    def inverse(self, w: Tensor, c: Tensor | None) -> Tensor:
        """y = T_c⁻¹(w) for w ``[n, *y_shape]``."""
        return self.flow.from_latent(w, c)

    nll = staticmethod(SpectralWhitening.nll)

    def initialize(self, y: Tensor) -> None:
        """Nothing to start from the data: a fresh flow is N(0, I) on the standardised pixels it is given."""

    @torch.enable_grad()
    def fit(self, y: Tensor, c: Tensor | None, *, steps: int = 500, batch_size: int = 256,
            learning_rate: float = 5e-3, seed: int = 0) -> None:
        """Maximum likelihood of the flow alone on rows y ``[n, *y_shape]``, c ``[n, f]``, as
        :meth:`SpectralWhitening.fit`."""
        _fit_by_likelihood(self, y, c, steps, batch_size, learning_rate, seed)


def _fit_by_likelihood(module: SpectralWhitening | FlowWhitening, y: Tensor, c: Tensor | None, steps: int,
                       batch_size: int, learning_rate: float, seed: int) -> None:
    """``steps`` Adam steps on ``module.nll`` over random batches of (y, c) with a cosine-decaying learning rate
    (batches drawn from a generator seeded with ``seed``, so the fit is reproducible)."""
    n = y.shape[0]
    if n < 2 or steps < 1:
        return
    params = list(module.parameters())
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=generator).to(y.device)
        loss = module.nll(*module(y[idx], None if c is None else c[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    for p in params:
        p.grad = None
