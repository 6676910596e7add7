r"""Continuous normalizing flows: a density defined by a velocity field, and its flow-matching family.

:class:`ContinuousFlow` is what the continuous-time families share: a velocity field v(y, τ, c) on the
*linear (optimal-transport) path* between data and noise,

    y_τ = (1 − τ) y₀ + τ ε,   ε ~ N(0, I),   τ ∈ [τ₀, τ₁] ⊆ [0, 1],

whose marginals p_τ are transported by the ODE dy/dτ = v(y, τ, c) with v(y, τ, c) = E[ε − y₀ | y_τ = y, c].
Sampling integrates it from y_{τ₁} ~ N(0, τ₁² I) down to τ₀; ``log_prob`` integrates it up from the data with
the instantaneous change of variables (Chen et al. 2018, "Neural ODEs", arXiv:1806.07366)

    log p_{τ₀}(y_{τ₀}) = log p_{τ₁}(y_{τ₁}) + ∫_{τ₀}^{τ₁} ∇_y · v(y_τ, τ, c) dτ,

both through :mod:`simgen.models.ode` (one integrator, one divergence, counted network evaluations).
A family only says what v is:

* :class:`CNF` regresses v directly (conditional flow matching);
* :class:`~simgen.models.Diffusion` learns a noise prediction ε̂(x_t, t) on a variance-preserving path
  x_t = α_t y₀ + σ_t ε, and its probability-flow ODE *is* this ODE after the change of variables
  y = x_t / (α_t + σ_t), τ = σ_t / (α_t + σ_t) — any Gaussian path is a time-and-scale change of the linear one.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..nets.time import FiLMResidualMLP, TimeEmbedding
from ..utils import rand, randn, randperm
from .base import ConditionalDensity
from .ode import Method, check_method, coloured_probes, divergence, divergence_draws, hutchinson_probes, integrate
from .whitening import FlowWhitening, SpectralWhitening

__all__ = ["ContinuousFlow", "CNF"]

LOG_2PI = math.log(2 * math.pi)
TraceProbes = Literal["rademacher", "coloured"]
PaddingMode = Literal["circular", "zeros"]
Whiten = Literal["spectral", "mapflow"] | bool
WHITENINGS = (None, True, False, "spectral", "mapflow")


class MapField(nn.Module):
    """F(y, t, c) for maps ``[n, H, W]`` / ``[n, C, H, W]``: a conditional U-Net whose FiLM condition is
    [τ(t), c] (τ a :class:`~simgen.nets.TimeEmbedding`; c omitted when unconditional)."""

    def __init__(
        self,
        y_shape: tuple[int, ...],
        context_features: int | None,
        time_features: int,
        channels: Sequence[int],
        blocks_per_level: int,
        attention: bool,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        from ..nets.conv import UNet, map_channels

        self.y_shape = tuple(y_shape)
        self.channels_in = map_channels(y_shape)
        self.time = TimeEmbedding(time_features)
        self.unet = UNet(self.channels_in[0], time_features + (context_features or 0), channels=tuple(channels),
                         blocks_per_level=blocks_per_level, attention=attention, padding_mode=padding_mode)

    def forward(self, y: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        n = y.shape[0]
        cond = self.time(t)
        if c is not None:
            cond = torch.cat([cond, c], dim=-1)
        return self.unet(y.reshape(n, *self.channels_in), cond).reshape(n, *self.y_shape)


class ContinuousFlow(ConditionalDensity):
    r"""A conditional density given by the ODE dy/dτ = v(y, τ, c) on the linear path (see the module docstring).

    The model's endpoints are y_{τ₁} ~ N(0, τ₁² I) (noise) and y = y_{τ₀} / (1 − τ₀) (data); for the CNF
    τ₀ = 0, τ₁ = 1 exactly, for a diffusion they are the images of its [t_min, 1].

    **Sampling** (``sample``): y_{τ₁} = τ₁ z, z ~ N(0, I), integrated from τ₁ to τ₀ with ``method`` on ``steps``
    uniform steps (``"heun"``: 2 network evaluations per step), or adaptively (``"dopri5"``). ``last_nfe``
    then holds the network evaluations per sample.

    **Density** (``log_prob``): the ODE is integrated from y_{τ₀} = (1 − τ₀) y up to τ₁ with the augmented
    state (y_τ, ℓ_τ), dℓ/dτ = ∇·v, by ``log_prob_method`` (default ``"dopri5"``, tolerances ``rtol``/``atol``):

        log p(y | c) = log N(y_{τ₁}; 0, τ₁² I) + ℓ_{τ₁} + D log(1 − τ₀).

    The divergence is exact (D backward passes per evaluation) when D = prod(y_shape) ≤ ``exact_trace_max_dim``,
    else a stochastic estimate from G = ``hutchinson_probes`` (or ``num_probes=``) independent probe groups,
    drawn once per call and kept for every ODE step: for vectors one Rademacher probe per group (Hutchinson),
    for maps by default one *coloured* set of Q = C·s² probes per group (:func:`~simgen.models.ode.coloured_probes`,
    s = ``colouring_period``), whose error comes only from Jacobian entries between pixels at least s apart —
    small for a convolutional field, so a map's log p̂ costs Q backward passes per evaluation at a variance far
    below Rademacher's (README). Each group's ℓ is integrated as its own column, so ``log_prob_with_se`` returns
    the standard error over groups with the mean. The estimate of ℓ is unbiased for the trajectory the solver
    follows (the trajectory does not depend on the probes; with ``dopri5`` the step sizes do, slightly, through
    the error norm), so log p̂ is unbiased for the solver's log p; p̂ = exp(log p̂) is biased upwards by Jensen's
    inequality. Without ``generator`` every row gets its own probes, so errors are independent and a mean over
    rows (a likelihood gap, a KL estimate) converges. With ``generator`` the probes are drawn from it once and
    *shared by all rows*, so that log p̂ is a deterministic function of (y, c, seed) whatever else is in the
    batch: an MCMC chain re-seeding one frozen generator sees a fixed, smooth target whose error is that one
    draw's, not a noisy one; but then the rows' errors are correlated (nearly equal for similar rows), and a mean
    over rows keeps that one error — never pass a generator to average log p̂ over many rows.
    Cost per evaluation: one forward pass and D (exact) or G·Q (stochastic) backward passes; each ODE solve makes
    ``last_nfe`` evaluations. An MCMC chain (``LikelihoodEstimator.posterior()``) pays a whole solve per target
    evaluation: a fixed-step ``log_prob_method`` (``"rk4"``, 10 steps = 40 evaluations) bounds that cost, at a
    discretisation bias (O(h⁴)) that is deterministic, hence the same target throughout the chain.
    ``log_prob`` does not propagate gradients to its inputs or the parameters.

    Bounded posteriors: the estimator maps a box prior through the Gaussian quantile (``support_map =
    "probit"``, :class:`~simgen.transforms.ProbitBox`), not the logistic one: a uniform θ becomes exactly
    N(0, I), the family's own noise, and posterior mass at a bound a Gaussian tail rather than an exponential
    one (the README compares the two on two_moons).

    **Whitened maps** (``whiten``, the default for maps): the flow models w = W_c(y), the map whitened by a
    learned conditional stationary Gaussian N(a(c), Σ(c)) with an isotropic power spectrum
    (:class:`~simgen.models.whitening.SpectralWhitening`), and

        log p(y | c) = log p_w(W_c(y) | c) + log |det ∂w/∂y|,   y = W_c⁻¹(w) for a draw w.

    The Gaussian is fitted by its own maximum likelihood, a second term of the training loss whose gradient
    reaches only a and Σ (the flow's loss sees w as data); together with the skip below, a fresh network is then
    the best stationary Gaussian fit, exact for a Gaussian field, and the network learns the departure from it.
    The estimators fit the Gaussian first (:meth:`initialize`). ``velocity`` (and a diffusion's ``score`` and
    ``denoise``) are then fields of w, not of y. ``whiten="mapflow"`` whitens by a map flow instead
    (:class:`~simgen.models.whitening.FlowWhitening`: pixel-wise splines and filters, fitted the same way), which
    Gaussianises the pixels' one-point distribution too, for fields that are not Gaussian.

    Networks: vectors use a :class:`~simgen.nets.FiLMResidualMLP` F(y, t, c); maps a conditional U-Net
    (:class:`~simgen.nets.conv.UNet`) fed [time embedding, c] by FiLM. Families add F to the prediction that is
    optimal for standard-normal data (the estimator standardises y), so a fresh model is already the exact
    flow of N(0, I) and the network learns the correction (a skip connection in the spirit of EDM's
    preconditioning, Karras et al. 2022).

    Args:
        hidden_features: width of the vector network.
        num_blocks: depth (residual blocks) of the vector network.
        time_features: width of the time embedding.
        channels: U-Net channels per level (maps).
        blocks_per_level: U-Net residual blocks per level (maps).
        attention: self-attention at the U-Net's lowest resolution (maps).
        method: default ``sample`` solver: ``"heun"`` (default), ``"euler"``, ``"rk4"`` or ``"dopri5"``.
        steps: fixed steps of ``sample`` (Heun: NFE = 2·steps).
        log_prob_method: ``log_prob`` solver (default ``"dopri5"``).
        log_prob_steps: fixed steps of ``log_prob`` for the fixed-step methods.
        rtol: relative tolerance of ``"dopri5"``.
        atol: absolute tolerance of ``"dopri5"``.
        exact_trace_max_dim: largest D with an exact divergence.
        hutchinson_probes: G, independent probe groups of the trace estimator above it (the default of
            ``log_prob``'s ``num_probes``).
        trace_probes: probes for maps: ``"coloured"`` (default; :func:`~simgen.models.ode.coloured_probes`,
            Q = C·s² backward passes per group) or ``"rademacher"`` (one per group). Vectors always use Rademacher.
        colouring_period: s, the period of the colouring.
        padding_mode: the map U-Net's padding, ``"circular"`` (default: periodic fields, see
            :class:`~simgen.nets.conv.UNet`) or ``"zeros"``. Models saved before the option load with zeros.
        whiten: model maps whitened (above): ``"spectral"`` (or ``True``) by a learned stationary Gaussian,
            ``"mapflow"`` by a map flow, ``False`` not. ``None`` (default): ``"spectral"`` on maps. Whitening
            vectors is an error. Models saved before the option load without it.
    """

    support_map = "probit"
    log_prob_kind = "ode"

    @classmethod
    def training_defaults_for(cls, kind: str) -> dict[str, Any]:
        """Maps train on batches of at most 64: a U-Net step costs in proportion to its batch, and the automatic
        batch size (n_train // 8) would leave a few thousand maps only a handful of steps per epoch."""
        if kind == "map":
            return dict(cls.training_defaults, max_batch_size=64)
        return dict(cls.training_defaults)

    def __init__(
        self,
        hidden_features: int = 128,
        num_blocks: int = 3,
        time_features: int = 64,
        channels: Sequence[int] = (16, 32),
        blocks_per_level: int = 1,
        attention: bool = False,
        method: Method = "heun",
        steps: int = 25,
        log_prob_method: Method = "dopri5",
        log_prob_steps: int = 100,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        exact_trace_max_dim: int = 16,
        hutchinson_probes: int = 1,
        trace_probes: TraceProbes = "coloured",
        colouring_period: int = 4,
        padding_mode: PaddingMode = "circular",
        whiten: Whiten | None = None,
    ) -> None:
        super().__init__()
        if whiten not in WHITENINGS:
            raise ValueError(f"whiten must be None, 'spectral', 'mapflow', True or False; got {whiten!r}")
        self.whiten = whiten
        self.whitening: SpectralWhitening | FlowWhitening | None = None
        if padding_mode not in ("circular", "zeros"):
            raise ValueError(f"padding_mode must be 'circular' or 'zeros'; got {padding_mode!r}")
        self._padding_mode = padding_mode
        if trace_probes not in ("rademacher", "coloured"):
            raise ValueError(f"trace_probes must be 'rademacher' or 'coloured'; got {trace_probes!r}")
        if not isinstance(colouring_period, int) or colouring_period < 1:
            raise ValueError(f"colouring_period must be a positive int; got {colouring_period!r}")
        self.trace_probes, self.colouring_period = trace_probes, colouring_period
        check_method(method, steps)
        check_method(log_prob_method, log_prob_steps)
        if min(hidden_features, num_blocks, time_features, blocks_per_level) < 1 or not channels \
                or min(channels) < 1:
            raise ValueError("hidden_features, num_blocks, time_features, blocks_per_level and channels must be "
                             f">= 1; got {hidden_features}, {num_blocks}, {time_features}, {blocks_per_level}, "
                             f"{list(channels)}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0; got {rtol}, {atol}")
        if exact_trace_max_dim < 0 or hutchinson_probes < 1:
            raise ValueError(f"exact_trace_max_dim must be >= 0 and hutchinson_probes >= 1; got "
                             f"{exact_trace_max_dim}, {hutchinson_probes}")
        self.hidden_features, self.num_blocks, self.time_features = hidden_features, num_blocks, time_features
        self.channels, self.blocks_per_level, self.attention = tuple(int(c) for c in channels), blocks_per_level, \
            bool(attention)
        self.method, self.steps = method, steps
        self.log_prob_method, self.log_prob_steps = log_prob_method, log_prob_steps
        self.rtol, self.atol = float(rtol), float(atol)
        self.exact_trace_max_dim, self.hutchinson_probes = exact_trace_max_dim, hutchinson_probes
        self.net: nn.Module | None = None
        #: network evaluations made by the last ``sample`` or ``log_prob`` call (per sample: each is batched)
        self.last_nfe: int = 0

    def _flow_config(self) -> dict[str, Any]:
        return dict(
            hidden_features=self.hidden_features, num_blocks=self.num_blocks, time_features=self.time_features,
            channels=list(self.channels), blocks_per_level=self.blocks_per_level, attention=self.attention,
            method=self.method, steps=self.steps, log_prob_method=self.log_prob_method,
            log_prob_steps=self.log_prob_steps, rtol=self.rtol, atol=self.atol,
            exact_trace_max_dim=self.exact_trace_max_dim, hutchinson_probes=self.hutchinson_probes,
            trace_probes=self.trace_probes, colouring_period=self.colouring_period, padding_mode=self.padding_mode,
            whiten=self.whiten,
        )

    @property
    def padding_mode(self) -> str:
        """The U-Net's padding: the built network's (a state dict saved before the option loads as ``"zeros"``)."""
        if isinstance(self.net, MapField):
            return self.net.unet.padding_mode
        return self._padding_mode

    # ----------------------------------------------------------------- what a family defines
    @property
    @abc.abstractmethod
    def tau_range(self) -> tuple[float, float]:
        """(τ₀, τ₁): the data and noise ends of the linear path."""

    @abc.abstractmethod
    def velocity(self, y: Tensor, tau: Tensor, c: Tensor | None) -> Tensor:
        """v(y, τ, c) for y ``[n, *y_shape]``, τ ``[n]``, c ``[n, f]`` or ``None``: ``[n, *y_shape]``."""

    # ----------------------------------------------------------------- networks
    @property
    def is_map(self) -> bool:
        return self.y_shape is not None and len(self.y_shape) in (2, 3)

    def _build(self) -> None:
        if len(self.y_shape) not in (1, 2, 3):
            raise ValueError(f"{type(self).__name__} models vectors [n, d] and maps [n, H, W] / [n, C, H, W]; "
                             f"got y_shape {self.y_shape}")
        if self.whiten and not self.is_map:
            raise ValueError(f"whiten={self.whiten!r} whitens maps [n, H, W] / [n, C, H, W]; got y_shape "
                             f"{self.y_shape}")
        if self.is_map:
            self.net = MapField(self.y_shape, self.context_features, self.time_features, self.channels,
                                self.blocks_per_level, self.attention, self._padding_mode)
            if self.whiten is None:
                self.whiten = True
            if self.whiten == "mapflow":
                self.whitening = FlowWhitening(self.y_shape, self.context_features)
            elif self.whiten:
                self.whitening = SpectralWhitening(self.y_shape, self.context_features)
                self._register_load_state_dict_pre_hook(_whitening_from_state, with_module=True)
        else:
            self.net = FiLMResidualMLP(self.y_shape[0], self.context_features, self.hidden_features,
                                       self.num_blocks, self.time_features)

    @property
    def dim(self) -> int:
        """D = prod(y_shape)."""
        return math.prod(self.y_shape)

    # ----------------------------------------------------------------- input checks
    def _check_rows(self, y: Tensor, c: Tensor | None) -> None:
        if y.dim() < 1 or tuple(y.shape[1:]) != self.y_shape:
            raise ValueError(f"y must have shape [n, {', '.join(map(str, self.y_shape))}]; got {list(y.shape)}")
        self.check_context(c, y.shape[0])

    def _probes(self, groups: int, rows: int, generator: torch.Generator | None) -> Tensor:
        """``groups`` probe groups ``[G, Q, D]`` shared by the rows when drawn from ``generator`` (a frozen
        target), else independent ones ``[G, Q, rows, D]`` (see the class docstring)."""
        per_row = None if generator is not None else rows
        if self.is_map and self.trace_probes == "coloured":
            return coloured_probes(groups, self.y_shape, self.colouring_period, rows=per_row, generator=generator,
                                   device=self.device)
        return hutchinson_probes(groups, self.dim, rows=per_row, generator=generator, device=self.device)[:, None]

    # ----------------------------------------------------------------- the shared ODE paths
    def time_grid(self, steps: int) -> Tensor:
        """``steps + 1`` times from τ₁ (noise) to τ₀ (data), uniform in τ."""
        tau0, tau1 = self.tau_range
        return torch.linspace(tau1, tau0, steps + 1)

    def _noise(self, rows: int, generator: torch.Generator | None) -> Tensor:
        """z ~ N(0, I) ``[rows, *y_shape]``, drawn on ``generator``'s device (so that a seed gives the same draws
        whatever device the model is on) and moved to the model's."""
        device = self.device
        gen_device = generator.device if generator is not None else device
        return torch.randn(rows, *self.y_shape, generator=generator, device=gen_device).to(device)

    def _sample(self, rows: int, context: Tensor | None, *, generator: torch.Generator | None = None,
                **options: Any) -> Tensor:
        """One draw per context row: the family's draw of the modelled variable (:meth:`_sample_modelled`),
        mapped back from whitened units when the model whitens maps."""
        w = self._sample_modelled(rows, context, generator=generator, **options)
        if self.whitening is None:
            return w
        with torch.no_grad():
            return self.whitening.inverse(w, context)

    def _sample_modelled(
        self,
        rows: int,
        context: Tensor | None,
        *,
        generator: torch.Generator | None = None,
        method: Method | None = None,
        steps: int | None = None,
    ) -> Tensor:
        """One draw per context row of what the ODE models (y, or w when whitened) by integrating it from noise
        to data; ``method``/``steps`` (``sample``'s options) override the family's defaults for this call."""
        method, steps = method or self.method, steps or self.steps
        check_method(method, steps)
        tau0, tau1 = self.tau_range
        z = self._noise(rows, generator)

        def field(t: Tensor, y: Tensor) -> Tensor:
            return self.velocity(y, t.expand(rows), context)

        with torch.no_grad():
            sol = integrate(field, tau1 * z, self.time_grid(steps), method=method, rtol=self.rtol, atol=self.atol)
        self.last_nfe = sol.nfe
        return sol.y / (1 - tau0)

    def log_prob(
        self,
        y: Tensor,
        c: Tensor | None,
        *,
        generator: torch.Generator | None = None,
        method: Method | None = None,
        steps: int | None = None,
        exact: bool | None = None,
        num_probes: int | None = None,
    ) -> Tensor:
        """log p(y[i] | c[i]) ``[n]`` by the instantaneous change of variables (see the class docstring).

        ``method``/``steps`` override the family's ``log_prob_method``/``log_prob_steps``; ``exact`` forces the
        exact divergence (``True``) or the stochastic estimate (``False``) whatever the dimension; ``num_probes``
        (G) overrides ``hutchinson_probes``: the result is the mean of G independent unbiased estimates (one ODE
        solve; :meth:`log_prob_with_se` also returns their standard error)."""
        return self._log_prob_draws(y, c, generator=generator, method=method, steps=steps, exact=exact,
                                    num_probes=num_probes).mean(0)

    def log_prob_with_se(
        self,
        y: Tensor,
        c: Tensor | None,
        *,
        generator: torch.Generator | None = None,
        num_probes: int | None = None,
        **options: Any,
    ) -> tuple[Tensor, Tensor]:
        r"""(log p̂, its standard error), both ``[n]``, from G = ``num_probes`` probe groups (default
        max(2, ``hutchinson_probes``)); ``options`` (``method``, ``steps``, ``exact``) as :meth:`log_prob`.

        The G trace estimates ℓ̂_g share one ODE trajectory, so log p̂_g − log p̂_h = ℓ̂_g − ℓ̂_h: their mean is
        ``log_prob``'s value and SE = sd_g(log p̂_g)/√G measures the trace estimator's error (not the solver's).
        With the exact trace the standard error is 0. With ``generator`` the probes are shared by the rows (see
        the class docstring), so the standard errors of different rows are not independent."""
        draws = self._log_prob_draws(y, c, generator=generator, **options,
                                     num_probes=max(2, self.hutchinson_probes) if num_probes is None else num_probes)
        if draws.shape[0] == 1:  # exact trace
            return draws[0], torch.zeros_like(draws[0])
        return draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])

    def _log_prob_draws(
        self,
        y: Tensor,
        c: Tensor | None,
        *,
        generator: torch.Generator | None,
        method: Method | None = None,
        steps: int | None = None,
        exact: bool | None = None,
        num_probes: int | None = None,
    ) -> Tensor:
        """``[G, n]``: G unbiased estimates of log p(y | c) on one trajectory (``[1, n]`` with the exact trace)."""
        self._check_built()
        self._check_rows(y, c)
        method = method or self.log_prob_method
        steps = steps or self.log_prob_steps
        check_method(method, steps)
        groups = self.hutchinson_probes if num_probes is None else num_probes
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"num_probes must be a positive int; got {num_probes!r}")
        n, d = y.shape[0], self.dim
        tau0, tau1 = self.tau_range
        log_det = 0.0
        if self.whitening is not None:
            with torch.no_grad():
                y, log_det = self.whitening(y, c)
        if exact is None:
            exact = d <= self.exact_trace_max_dim
        probes = None if exact else self._probes(groups, n, generator)
        width = 1 if exact else groups

        def field(t: Tensor, state: Tensor) -> Tensor:
            with torch.enable_grad():
                yt = state[:, :d].detach().reshape(n, *self.y_shape).requires_grad_(True)
                v = self.velocity(yt, t.expand(n), c)
                div = divergence(v, yt)[None] if probes is None else divergence_draws(v, yt, probes)
            return torch.cat([v.detach().reshape(n, d), div.T.to(state.dtype)], dim=1)

        start = torch.cat([(1 - tau0) * y.detach().reshape(n, d), y.new_zeros(n, width)], dim=1)
        grid = torch.linspace(tau0, tau1, steps + 1)
        # the error control weighs the log-density columns like all D sample columns together
        sol = integrate(field, start, grid, method=method, rtol=self.rtol, atol=self.atol, split=d)
        self.last_nfe = sol.nfe
        end, trace = sol.y[:, :d], sol.y[:, d:].T  # [n, D], [G, n]
        base = -0.5 * (end / tau1).pow(2).sum(-1) - d * math.log(tau1) - 0.5 * d * LOG_2PI
        return base + trace + d * math.log(1 - tau0) + log_det

    # ----------------------------------------------------------------- training
    def initialize(self, y: Tensor, c: Tensor | None) -> None:
        """Fit the whitening of maps to the rows y ``[n, *y_shape]``, c ``[n, f]`` by maximum likelihood before
        the network trains (:meth:`SpectralWhitening.fit`, :meth:`FlowWhitening.fit`), so that the network
        starts on white data."""
        if self.whitening is not None:
            self._check_rows(y, c)
            self.whitening.fit(y, c)

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        """The family's :meth:`flow_loss` of y, or, when whitening maps, of w = W_c(y) (as data: no gradient to
        the whitening) plus the whitening's own −log p(y | c)/D (a stationary Gaussian's started from the first
        training batch's moments, or a map flow's)."""
        self._check_built()
        self._check_rows(y, c)
        if self.whitening is None:
            return self.flow_loss(y, c)
        if self.training:
            self.whitening.initialize(y)
        w, log_det = self.whitening(y, c)
        return self.flow_loss(w.detach(), c) + self.whitening.nll(w, log_det)

    @abc.abstractmethod
    def flow_loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        """The family's training loss (a scalar) on modelled rows y ``[n, *y_shape]``, contexts c ``[n, f]``."""


class CNF(ContinuousFlow):
    r"""Conditional continuous normalizing flow trained by conditional flow matching on linear paths.

    Flow matching (Lipman et al. 2023, "Flow Matching for Generative Modeling", arXiv:2210.02747; with linear
    interpolants also Liu et al. 2023, "rectified flow", arXiv:2209.03003) regresses a network on the velocity
    of the conditional path y_τ = (1 − τ) y₀ + τ ε between a data point y₀ and noise ε ~ N(0, I):

        L(φ) = E_{τ ~ U[0, 1], (y₀, c), ε} ‖v_φ(y_τ, τ, c) − (ε − y₀)‖² / D,

    whose minimiser is v(y, τ, c) = E[ε − y₀ | y_τ = y, c], the velocity that transports p(y₀ | c) to N(0, I)
    along τ (the conditional-OT path of Lipman et al. with σ_min = 0, time reversed so that τ = 0 is data as in
    a diffusion). τ is stratified over each batch (one draw per 1/n interval) to lower the loss's variance. In
    eval mode (the trainer's validation) τ and ε come from a fixed seed, ``VALIDATION_DRAWS`` = 8 of them per
    vector row, so validation losses are comparable across epochs and less noisy (early stopping).
    Sampling and ``log_prob`` integrate this ODE (:class:`ContinuousFlow`) on τ ∈ [0, 1].

    The network predicts the correction to the velocity of standard-normal data,
    v(y, τ, c) = (2τ − 1) y / ((1 − τ)² + τ²) + F_φ(y, τ, c).

    Args: those of :class:`ContinuousFlow`.
    """

    family = "cnf"

    def config(self) -> dict[str, Any]:
        return self._flow_config()

    @property
    def tau_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def velocity(self, y: Tensor, tau: Tensor, c: Tensor | None) -> Tensor:
        shape = (-1,) + (1,) * (y.dim() - 1)
        t = tau.to(y.dtype).reshape(shape)
        gaussian = (2 * t - 1) / ((1 - t) ** 2 + t**2) * y
        return gaussian + self.net(y, tau.to(y.dtype), c)

    def flow_loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        generator = validation_generator(self, y.device)
        y, c = validation_copies(self, y, c)
        n = y.shape[0]
        tau = stratified_uniform(n, y.device, y.dtype, generator=generator)
        eps = randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        t = tau.reshape((-1,) + (1,) * (y.dim() - 1))
        y_tau = (1 - t) * y + t * eps
        return (self.velocity(y_tau, tau, c) - (eps - y)).pow(2).mean()


def stratified_uniform(n: int, device: torch.device, dtype: torch.dtype, low: float = 0.0, high: float = 1.0, *,
                       generator: torch.Generator | None = None) -> Tensor:
    """n draws of U[low, high], one in each of n equal strata, in random order."""
    u = (rand((), generator=generator, device=device, dtype=dtype)
         + torch.arange(n, device=device, dtype=dtype)) / n
    u = u[randperm(n, generator=generator, device=device)]
    return low + (high - low) * u


#: noise draws per row of a vector validation loss (eval mode): the loss's variance over (τ, ε) dominates the
#: differences between epochs that early stopping has to see
VALIDATION_DRAWS = 8


def validation_copies(module: ContinuousFlow, y: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """In eval mode, ``VALIDATION_DRAWS`` copies of each vector row (maps: one), so that the validation loss
    averages several noise draws per row; in training mode ``y``, ``c`` unchanged."""
    if module.training or module.is_map:
        return y, c
    k = VALIDATION_DRAWS
    return y.repeat(k, *([1] * (y.dim() - 1))), None if c is None else c.repeat(k, 1)


def validation_generator(module: nn.Module, device: torch.device) -> torch.Generator | None:
    """``None`` (torch's global RNG) while training; in eval mode a generator with a fixed seed, so that the
    noise of a stochastic loss (times, ε) is the same at every evaluation and validation losses of different
    epochs compare the parameters, not the draws (common random numbers for early stopping)."""
    if module.training:
        return None
    return torch.Generator(device=device).manual_seed(0)


def _whitening_from_state(module: ContinuousFlow, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A state dict written before maps were whitened has no whitening: the model then loads without it."""
    if module.whitening is not None and not any(k.startswith(prefix + "whitening.") for k in state_dict):
        module.whitening = None
        module.whiten = False
