"""Conditional normalizing flows built from nflows transforms."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
from nflows import transforms as T
from nflows.distributions import StandardNormal
from nflows.flows import Flow as _NFlow
from nflows.nn.nets import ResidualNet
from nflows.transforms.splines.rational_quadratic import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
)
from nflows.utils import create_alternating_binary_mask
from torch import Tensor
from torch.nn import functional as F

from ..utils import randn
from .base import ConditionalDensity
from .tails import PowerTails

__all__ = ["Flow"]

# nflows' LU layer calls torch.triangular_solve, which warns on every call in recent torch; the result is right.
warnings.filterwarnings("ignore", message="torch.triangular_solve is deprecated", category=UserWarning)

FlowKind = Literal["nsf", "maf", "realnvp"]


class Flow(ConditionalDensity):
    r"""Conditional normalizing flow: y = f(z; c), z ~ N(0, I).

    The latent is z = f⁻¹(y; c), and the change of variables gives the exact density

        log p(y | c) = log N(f⁻¹(y; c); 0, I) + log |det ∂f⁻¹(y; c)/∂y|,

    trained by maximum likelihood (``loss`` = −mean log p). ``f⁻¹`` is a composition of ``transforms``
    invertible layers, each followed by a learned linear mixing (LU-parametrised, identity at start):

    * ``"nsf"`` — rational-quadratic spline coupling (Durkan et al. 2019, "Neural Spline Flows",
      arXiv:1906.04032), linear tails outside ``[-tail_bound, tail_bound]``;
    * ``"maf"`` — masked affine autoregressive (Papamakarios et al. 2017, "Masked Autoregressive Flow",
      arXiv:1705.07057);
    * ``"realnvp"`` — affine coupling (Dinh et al. 2017, "Density estimation using Real NVP",
      arXiv:1605.08803).

    For one-dimensional y the coupling kinds fall back to their autoregressive counterpart (a coupling layer
    has nothing to condition on). Multi-dimensional y (maps) is flattened.

    Args:
        kind: ``"nsf"`` (default), ``"maf"`` or ``"realnvp"``.
        transforms: number of flow layers.
        hidden_features: width of the conditioner networks.
        num_blocks: residual blocks per conditioner.
        num_bins: spline bins (``"nsf"``).
        tail_bound: spline interval half-width in standardised units (``"nsf"``).
        dropout: dropout in the conditioners.
        affine_first: put a conditional masked affine autoregressive layer first (``"nsf"``/``"realnvp"``).
            Off by default: spline layers start at the identity (see ``_identity_at_start``), so with the
            estimator's linear baseline the initial model is the least-squares linear-Gaussian fit, while a
            randomly initialised affine layer would start elsewhere and overfit early (README, "Tests and benchmarks").
        heavy_tails: put :class:`~simgen.models.tails.PowerTails` before the layers (on the data side): an
            element-wise map fitted to each dimension's tails in :meth:`initialize` (an estimator calls it on the
            pre-processed training rows), so that power-law tails, which a flow with a Gaussian base and Lipschitz
            layers cannot reach, become Gaussian-like for the layers. It stays the identity for dimensions whose
            tails a Gaussian fits (the fit's test is in :func:`~simgen.models.tails.fit_power_tails`) and until
            :meth:`initialize` is called. Models saved before the option load without it.

    Example:
        A fresh flow is the identity map, so its density is the standard normal's (estimators build and train
        families; here one is used directly):

        >>> import math, torch
        >>> from simgen.models import Flow
        >>> flow = Flow(transforms=2).build(y_shape=(2,), context_features=3)
        >>> log_p = flow.log_prob(torch.zeros(1, 2), torch.randn(1, 3))  # [1]: log N(0; 0, I_2) = -log 2π
        >>> round(log_p.item(), 4), round(-math.log(2 * math.pi), 4)
        (-1.8379, -1.8379)
        >>> flow.sample(5, torch.randn(4, 3)).shape  # 5 draws for each of 4 contexts
        torch.Size([4, 5, 2])
    """

    family = "flow"
    # a small spline flow's step is mostly fixed overhead, so larger steps at a higher learning rate reach an
    # equal test likelihood in fewer epochs (benchmarks/npe_training_config.py; figures in the README)
    training_defaults = {"max_batch_size": 1024, "learning_rate": 4e-3}

    def __init__(
        self,
        kind: FlowKind = "nsf",
        transforms: int = 5,
        hidden_features: int = 64,
        num_blocks: int = 2,
        num_bins: int = 4,
        tail_bound: float = 3.0,
        dropout: float = 0.0,
        affine_first: bool = False,
        heavy_tails: bool = True,
    ) -> None:
        super().__init__()
        if kind not in ("nsf", "maf", "realnvp"):
            raise ValueError(f"Flow kind must be one of 'nsf', 'maf', 'realnvp'; got {kind!r}")
        if transforms < 1 or hidden_features < 1:
            raise ValueError(f"transforms and hidden_features must be >= 1; got {transforms}, {hidden_features}")
        self.kind = kind
        self.transforms = transforms
        self.hidden_features = hidden_features
        self.num_blocks = num_blocks
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.dropout = dropout
        self.affine_first = affine_first
        self.heavy_tails = bool(heavy_tails)
        self.flow: _ConditionalFlow | None = None
        self.tails: PowerTails | None = None

    def config(self) -> dict[str, Any]:
        return dict(
            kind=self.kind,
            transforms=self.transforms,
            hidden_features=self.hidden_features,
            num_blocks=self.num_blocks,
            num_bins=self.num_bins,
            tail_bound=self.tail_bound,
            dropout=self.dropout,
            affine_first=self.affine_first,
            heavy_tails=self.heavy_tails,
        )

    def _build(self) -> None:
        d = math.prod(self.y_shape)
        layers: list[T.Transform] = []
        if self.affine_first and self.kind != "maf":
            layers.append(T.MaskedAffineAutoregressiveTransform(
                features=d, hidden_features=self.hidden_features, context_features=self.context_features,
                num_blocks=self.num_blocks, dropout_probability=self.dropout,
            ))
        for i in range(self.transforms):
            layers.append(self._layer(d, i))
            if d > 1:
                layers.append(T.LULinear(d, identity_init=True))
        self.flow = _ConditionalFlow(T.CompositeTransform(layers), StandardNormal([d]))
        if self.heavy_tails:
            self.tails = PowerTails(d)
            self._register_load_state_dict_pre_hook(_tails_from_state, with_module=True)

    def _conditioner(self, in_features: int, out_features: int) -> ResidualNet:
        return ResidualNet(
            in_features,
            out_features,
            hidden_features=self.hidden_features,
            context_features=self.context_features,
            num_blocks=self.num_blocks,
            activation=F.relu,
            dropout_probability=self.dropout,
        )

    def _layer(self, d: int, i: int) -> T.Transform:
        autoregressive = dict(
            features=d,
            hidden_features=self.hidden_features,
            context_features=self.context_features,
            num_blocks=self.num_blocks,
            dropout_probability=self.dropout,
        )
        if self.kind == "maf" or (d == 1 and self.kind == "realnvp"):
            return T.MaskedAffineAutoregressiveTransform(**autoregressive)
        if d == 1:  # nsf on a scalar
            return T.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                **autoregressive, num_bins=self.num_bins, tails="linear", tail_bound=self.tail_bound
            )
        mask = create_alternating_binary_mask(d, even=(i % 2 == 0))
        if self.kind == "realnvp":
            return T.AffineCouplingTransform(mask, self._conditioner)
        return _identity_at_start(_SplineCoupling(
            mask, self._conditioner, num_bins=self.num_bins, tails="linear", tail_bound=self.tail_bound
        ))

    def _flat(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)

    def initialize(self, y: Tensor, c: Tensor | None) -> None:
        """Fits the tails' map (``heavy_tails``) to the training rows y ``[n, *y_shape]``."""
        if self.tails is not None:
            self.tails.fit(self._flat(y))

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        return -self.log_prob(y, c).mean()

    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        self._check_built()
        y = self._flat(y)
        if self.tails is None:
            return self.flow.log_prob(y, context=c)
        v, log_det = self.tails(y)
        return self.flow.log_prob(v, context=c) + log_det

    def _sample(self, rows: int, context: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        """y = f(z; c) for z ~ N(0, I) drawn from ``generator``: ``[rows, *y_shape]``."""
        z = randn(rows, math.prod(self.y_shape), generator=generator, device=self.device)
        y = self.flow.transform_noise(z, context)
        if self.tails is not None:
            y = self.tails.inverse(y)
        return y.reshape(rows, *self.y_shape)


class _ConditionalFlow(_NFlow):
    """nflows' flow, with sampling from given noise (nflows draws its own, which no ``generator`` can seed)."""

    def transform_noise(self, z: Tensor, context: Tensor | None) -> Tensor:
        """y = f(z; c) for noise ``z`` ``[n, d]`` and context ``[n, f]`` (or ``None``)."""
        y, _ = self._transform.inverse(z, context=context)
        return y


def _tails_from_state(module: Flow, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A state dict written before ``heavy_tails`` has no tails' map: the flow then loads without it."""
    if module.tails is not None and not any(k.startswith(prefix + "tails.") for k in state_dict):
        module.tails = None
        module.heavy_tails = False


def _identity_at_start(layer: T.PiecewiseRationalQuadraticCouplingTransform) -> T.Transform:
    r"""Start a spline coupling layer at the identity, whatever its input and context.

    The conditioner's last layer is zeroed, so every bin gets the same width and height, and its bias on the
    knot derivatives is set to softplus⁻¹(1 − δ) (δ nflows' minimum derivative), so every derivative is 1: the
    rational-quadratic spline with equal bins and unit derivatives is y = x. A fresh flow is then the identity
    (up to its LU mixing, itself identity-initialised), so an estimator's initial model is its pre-processing's
    linear-Gaussian fit (see :class:`~simgen.transforms.LinearResidual`), and training only adds what the data
    support, instead of first undoing a random initial warp.
    """
    final = layer.transform_net.final_layer
    bins = layer.num_bins
    with torch.no_grad():
        final.weight.zero_()
        final.bias.zero_()
        # per transformed feature: [widths (K), heights (K), inner derivatives (K - 1)]
        final.bias.view(-1, 3 * bins - 1)[:, 2 * bins:] = math.log(math.expm1(1.0 - DEFAULT_MIN_DERIVATIVE))
    return layer


class _SplineCoupling(T.PiecewiseRationalQuadraticCouplingTransform):
    """nflows' rational-quadratic spline coupling, evaluated by :func:`rational_quadratic_spline`.

    Same parameters, same state-dict keys and the same function as nflows' layer; only the evaluation differs
    (no boolean-mask gathers and scatters for the linear tails), which makes a small flow's training step
    faster on a CPU.
    """

    def _piecewise_cdf(self, inputs: Tensor, transform_params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        k = self.num_bins
        # nflows scales the bin logits by 1/√hidden (its initialisation relies on it); keep that
        scale = 1.0 / math.sqrt(self.transform_net.hidden_features)
        return rational_quadratic_spline(
            inputs,
            transform_params[..., :k] * scale,
            transform_params[..., k : 2 * k] * scale,
            transform_params[..., 2 * k :],
            inverse=inverse,
            tail_bound=self.tail_bound,
        )


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    r"""Monotone rational-quadratic spline on [−B, B] with identity (linear) tails, and its log-derivative.

    With K bins of widths w_k and heights h_k (softmax of the logits, floored at the minimum, summing to 2B),
    knots (x_k, y_k), slopes s_k = h_k / w_k and knot derivatives d_k (softplus, d_0 = d_K = 1 so the spline
    joins the identity tails smoothly), an input x in bin k with ξ = (x − x_k)/w_k maps to (Durkan et al. 2019,
    eq. 4)

        g(x) = y_k + h_k [s_k ξ² + d_k ξ(1 − ξ)] / [s_k + (d_{k+1} + d_k − 2 s_k) ξ(1 − ξ)],

    with g′(x) = s_k² [d_{k+1} ξ² + 2 s_k ξ(1 − ξ) + d_k (1 − ξ)²] / [s_k + (d_{k+1} + d_k − 2 s_k) ξ(1 − ξ)]²;
    outside [−B, B], g(x) = x. ``inverse=True`` solves the quadratic for ξ instead and returns −log g′.

    Args:
        inputs: ``[..., ]`` points.
        unnormalized_widths, unnormalized_heights: ``[..., K]`` bin logits.
        unnormalized_derivatives: ``[..., K − 1]`` logits of the inner knot derivatives.

    Returns:
        ``(outputs, log|det|)``, both shaped like ``inputs``.

    The spline is evaluated at the clamped inputs for every element and the tails are selected with
    ``torch.where``; unlike nflows' function it gathers no rows by a boolean mask, which is most of a small
    flow's per-step cost.
    """
    outputs, log_derivative = spline_points(inputs.unsqueeze(-1), unnormalized_widths, unnormalized_heights,
                                            unnormalized_derivatives, inverse=inverse, tail_bound=tail_bound,
                                            min_bin_width=min_bin_width, min_bin_height=min_bin_height,
                                            min_derivative=min_derivative)
    return outputs.squeeze(-1), log_derivative.squeeze(-1)


def spline_points(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    r"""The spline of :func:`rational_quadratic_spline`, one per row, applied to P points of that row.

    Args:
        inputs: ``[..., P]`` points; row ``[...]`` goes through its own spline.
        unnormalized_widths, unnormalized_heights: ``[..., K]`` bin logits of each row's spline.
        unnormalized_derivatives: ``[..., K − 1]``.

    Returns:
        ``(outputs, log|g′|)`` ``[..., P]`` (``−log g′`` at the input for ``inverse=True``). The knots are computed
        once per row, so the per-point work is one bin search and the rational-quadratic formula (P = 1 is the
        element-wise spline of a flow; a map flow shares one spline among a channel's pixels).
    """
    bound = float(tail_bound)
    inside = (inputs >= -bound) & (inputs <= bound)
    x = inputs.clamp(-bound, bound)
    num_bins = unnormalized_widths.shape[-1]
    tail = math.log(math.expm1(1.0 - min_derivative))

    # widths and heights in one pass: [..., 2, K] bin sizes summing to 2B, floored at the minimum
    logits = torch.stack([unnormalized_widths, unnormalized_heights], dim=-2)
    floor = torch.tensor([min_bin_width, min_bin_height], dtype=logits.dtype, device=logits.device)[:, None]
    sizes = floor + (1.0 - floor * num_bins) * torch.softmax(logits, dim=-1)
    # exact end knots, so that the spline meets the tails at ±B without rounding gaps
    knots = torch.cat([torch.full_like(sizes[..., :1], -bound), torch.cumsum(sizes, dim=-1) * (2 * bound) - bound], -1)
    knots[..., -1] = bound
    sizes = knots[..., 1:] - knots[..., :-1]
    cumwidths, cumheights = knots.unbind(-2)
    widths, heights = sizes.unbind(-2)
    derivatives = min_derivative + F.softplus(F.pad(unnormalized_derivatives, (1, 1), value=tail))

    # bin k holds the points with knot_k <= x < knot_{k+1}: count the inner knots at or below x
    inner = (cumheights if inverse else cumwidths)[..., 1:-1].contiguous()
    idx = torch.searchsorted(inner, x.contiguous(), right=True)  # [..., P]

    def at(t: Tensor) -> Tensor:
        return t.gather(-1, idx)

    x_k, w_k, y_k, h_k = at(cumwidths), at(widths), at(cumheights), at(heights)
    d_k, d_k1 = at(derivatives[..., :-1]), at(derivatives[..., 1:])
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2 * s_k
    if inverse:
        dy = x - y_k
        a = dy * curvature + h_k * (s_k - d_k)
        b = h_k * d_k - dy * curvature
        c = -s_k * dy
        # the discriminant is ≥ 0 in exact arithmetic; rounding must not turn it into a NaN
        xi = (2 * c) / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0.0)))
        out = xi * w_k + x_k
    else:
        xi = (x - x_k) / w_k
    xi_1mxi = xi * (1 - xi)
    denominator = s_k + curvature * xi_1mxi
    if not inverse:
        out = y_k + h_k * (s_k * xi * xi + d_k * xi_1mxi) / denominator
    log_derivative = (
        torch.log(s_k * s_k * (d_k1 * xi * xi + 2 * s_k * xi_1mxi + d_k * (1 - xi) ** 2))
        - 2 * torch.log(denominator)
    )
    if inverse:
        log_derivative = -log_derivative
    return torch.where(inside, out, inputs), torch.where(inside, log_derivative, torch.zeros_like(log_derivative))
