"""Invertible pre-processing of the modelled variable y and the context c.

An estimator models p(y | c) through a chain of fixed bijections u = T(y) so that the family only ever sees
standardised, unconstrained inputs. The change of variables gives

    log p(y | c) = log p_u(T(y) | c) + log |det ∂T/∂y|,

so every transform here reports ``log_abs_det_jacobian(y)`` = log |det ∂T/∂y| per row (shape ``[n]``).

* :class:`SupportBijection` maps a bounded prior's support onto R^d (``biject_to(prior.support)`` inverted, or
  the Gaussian quantile map :class:`ProbitBox` for a box), computed in float64 and kept strictly inside the
  support (a float32 sigmoid that rounds to a `Uniform`'s upper bound would give a log-probability of −inf).
* :class:`Standardize` z-scores: one location/scale per dimension for vectors, one per channel for maps.
* :class:`LinearResidual` subtracts y's least-squares linear regression on the context and rescales by the
  residual spread, so that the family starts from the best linear-Gaussian model and learns what is left.
* :class:`Dequantize` turns integer-valued dimensions into continuous ones by uniform noise while training.
* :class:`LogPositive` takes the log of a likelihood's positive parameters (:func:`positive_dims`) before they are
  standardised: a fixed map of the context, which needs no Jacobian.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Transform, biject_to, constraints

from .utils import rand

__all__ = ["Standardize", "SupportBijection", "ProbitBox", "SUPPORT_MAPS", "LinearResidual", "Dequantize",
           "LogPositive", "positive_dims", "support_bounds"]

#: how :class:`SupportBijection` maps a box: ``"logit"`` (torch's ``biject_to``) or ``"probit"`` (:class:`ProbitBox`)
SUPPORT_MAPS = ("logit", "probit")


def _sum_event(t: Tensor) -> Tensor:
    """Sum all but the batch dimension: ``[n, ...] -> [n]``."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


class Standardize(nn.Module):
    r"""Affine z-scoring u = (y − μ) / σ, with log |det ∂u/∂y| = −Σ log σ over all elements of one row.

    Statistics are per dimension for vectors ``[n, d]``; for maps ``[n, H, W]`` or ``[n, C, H, W]`` they are one
    scalar per channel (``per_channel=True``), so that the model sees stationary fields as stationary. They are
    buffers and are saved with the model.

    Args:
        event_shape: shape of one row, e.g. ``(d,)`` or ``(C, H, W)``.
        per_channel: one statistic per leading channel (maps) instead of per element.
        enabled: ``False`` gives the identity (binary data are not standardised).
        fixed: indices of vector dimensions left as they are (μ = 0, σ = 1): discrete columns, whose
            probability mass a mixed family models on the integers themselves (:class:`~simgen.models.MixedDensity`).
    """

    def __init__(self, event_shape: tuple[int, ...], per_channel: bool = False, enabled: bool = True,
                 fixed: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.per_channel = per_channel
        self.enabled = enabled
        self.fixed = tuple(int(i) for i in fixed)
        if self.fixed and (per_channel or len(self.event_shape) != 1):
            raise ValueError("fixed dimensions are for vectors standardised per dimension")
        stat_shape = self._stat_shape()
        self.register_buffer("loc", torch.zeros(stat_shape))
        self.register_buffer("scale", torch.ones(stat_shape))

    def _stat_shape(self) -> tuple[int, ...]:
        if not self.per_channel:
            return self.event_shape
        if len(self.event_shape) == 2:  # [H, W]: one channel
            return (1, 1)
        return (self.event_shape[0],) + (1,) * (len(self.event_shape) - 1)

    @torch.no_grad()
    def fit(self, y: Tensor) -> Standardize:
        """Set μ and σ from data ``y`` ``[n, *event_shape]``; σ is floored so constant dimensions stay finite."""
        if not self.enabled:
            return self
        y = y.to(self.loc.dtype)
        if self.per_channel and len(self.event_shape) == 2:
            loc, scale = y.mean().reshape(1, 1), y.std().reshape(1, 1)
        elif self.per_channel:
            dims = [0] + list(range(2, y.dim()))
            loc = y.mean(dim=dims).reshape(self.loc.shape)
            scale = y.std(dim=dims).reshape(self.loc.shape)
        else:
            loc, scale = y.mean(dim=0), y.std(dim=0)
        self.loc.copy_(loc)
        self.scale.copy_(torch.clamp(torch.nan_to_num(scale, nan=1.0), min=1e-6))
        self.keep_fixed()
        return self

    def keep_fixed(self) -> None:
        """Reset the :attr:`fixed` dimensions to μ = 0, σ = 1 (after statistics were set from data)."""
        if self.fixed:
            self.loc[list(self.fixed)] = 0.0
            self.scale[list(self.fixed)] = 1.0

    def forward(self, y: Tensor) -> Tensor:
        if not self.enabled:
            return y
        return (y - self.loc) / self.scale

    def inverse(self, u: Tensor) -> Tensor:
        if not self.enabled:
            return u
        return u * self.scale + self.loc

    def log_abs_det_jacobian(self, y: Tensor) -> Tensor:
        """log |det ∂u/∂y| = −Σ log σ, broadcast over the ``[n]`` rows of ``y``."""
        if not self.enabled:
            return y.new_zeros(y.shape[0])
        per_element = torch.log(self.scale).expand(self.event_shape)
        return (-per_element.sum()).expand(y.shape[0]).to(y.dtype)


def support_bounds(support: constraints.Constraint) -> tuple[Tensor | None, Tensor | None]:
    """(lower, upper) bounds of an interval-like support, ``None`` where unbounded."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    lower = getattr(support, "lower_bound", None)
    upper = getattr(support, "upper_bound", None)
    as_tensor = lambda b: None if b is None else torch.as_tensor(b, dtype=torch.float64)  # noqa: E731
    return as_tensor(lower), as_tensor(upper)


class ProbitBox(Transform):
    r"""θ = a + (b − a)·Φ(u): R onto the interval (a, b) through the standard normal CDF Φ (elementwise).

    u = Φ⁻¹((θ − a)/(b − a)) and log |∂θ/∂u| = log(b − a) + log φ(u) = log(b − a) − u²/2 − ½ log 2π.
    Unlike the logistic map, a uniform θ becomes exactly N(0, 1), and posterior mass that reaches a bound of
    the box, where its density is p(θ_bound) > 0, becomes a Gaussian tail ∝ φ(u) rather than the logistic map's
    exponential one ∝ e^{−|u|}: the tail a model started from a Gaussian (diffusion, flow matching) reproduces.
    Evaluate in float64: Φ(u) for u > 8 is 1 in float32.
    """

    domain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, lower: Tensor, upper: Tensor, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        self.lower, self.upper = lower, upper

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def codomain(self) -> constraints.Constraint:
        return constraints.interval(self.lower, self.upper)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ProbitBox) and torch.equal(self.lower, other.lower)
                and torch.equal(self.upper, other.upper))

    def _call(self, u: Tensor) -> Tensor:
        lower, upper = self.lower.to(u), self.upper.to(u)
        # Φ(u) = 1 − Φ(−u): measure from the nearer bound, so that neither end loses its digits
        return torch.where(u <= 0, lower + (upper - lower) * torch.special.ndtr(u),
                           upper - (upper - lower) * torch.special.ndtr(-u))

    def _inverse(self, theta: Tensor) -> Tensor:
        lower, upper = self.lower.to(theta), self.upper.to(theta)
        width = upper - lower
        low_half = theta - lower <= upper - theta
        return torch.where(low_half, torch.special.ndtri((theta - lower) / width),
                           -torch.special.ndtri((upper - theta) / width))

    def log_abs_det_jacobian(self, u: Tensor, theta: Tensor) -> Tensor:
        width = (self.upper - self.lower).to(u)
        return torch.log(width) - 0.5 * u**2 - 0.5 * math.log(2 * math.pi)


class SupportBijection(nn.Module):
    r"""The prior's support onto R^d: :meth:`forward` θ ↦ u = B⁻¹(θ), :meth:`inverse` u ↦ θ = B(u).

    B: R^d → support is the bijection torch names ``biject_to(support)`` (it maps *onto* the support, so this
    module's forward direction is B's inverse). ``map="logit"`` takes B = ``biject_to(prior.support)``: for a box
    [a, b], B(u) = a + (b − a)·sigmoid(u), so u = logit((θ − a)/(b − a)). ``map="probit"`` takes B =
    :class:`ProbitBox` on a box (both bounds finite in every dimension; other supports fall back to ``biject_to``),
    u = Φ⁻¹((θ − a)/(b − a)). Either way log |det ∂u/∂θ| = −Σ_j log |∂B_j/∂u_j|. All of it runs in float64; θ is
    clamped to lie strictly inside the support before the inverse, and samples B(u) are nudged inside the support
    *after* the cast to float32 (``nextafter`` towards the interior), so that ``prior.log_prob`` of a sample is
    never −inf.

    ``contains(θ)`` tells which rows lie in the support, so that callers can return −inf for the others.
    """

    def __init__(self, prior: Distribution, map: str = "logit") -> None:
        super().__init__()
        if map not in SUPPORT_MAPS:
            raise ValueError(f"map must be one of {SUPPORT_MAPS}; got {map!r}")
        self.support = prior.support
        lower, upper = support_bounds(prior.support)
        event_shape = prior.event_shape
        self.register_buffer("lower", None if lower is None else lower.expand(event_shape).clone())
        self.register_buffer("upper", None if upper is None else upper.expand(event_shape).clone())
        box = (lower is not None and upper is not None
               and bool(torch.isfinite(lower).all()) and bool(torch.isfinite(upper).all()))
        self.map = map
        # the transform keeps its own float64 bounds (moved to its input's device per call): buffers are
        # replaced by .to(), a reference to them would go stale
        self.bijection = (ProbitBox(self.lower.clone(), self.upper.clone()) if map == "probit" and box
                          else biject_to(prior.support))
        self.identity = lower is None and upper is None

    def _clamp64(self, theta: Tensor) -> Tensor:
        if self.lower is not None:
            width = 1.0 if self.upper is None else (self.upper - self.lower)
            theta = torch.maximum(theta, self.lower + 1e-12 * width)
        if self.upper is not None:
            width = 1.0 if self.lower is None else (self.upper - self.lower)
            theta = torch.minimum(theta, self.upper - 1e-12 * width)
        return theta

    def contains(self, theta: Tensor) -> Tensor:
        """``[n]`` booleans: θ strictly inside the (open) support and finite."""
        ok = torch.isfinite(theta).reshape(theta.shape[0], -1).all(dim=1)
        if self.lower is not None:
            ok &= (theta.double() > self.lower).reshape(theta.shape[0], -1).all(dim=1)
        if self.upper is not None:
            ok &= (theta.double() < self.upper).reshape(theta.shape[0], -1).all(dim=1)
        return ok

    def forward(self, theta: Tensor) -> Tensor:
        """θ ``[n, d]`` (inside the support) → u ``[n, d]`` in R^d, float32."""
        if self.identity:
            return theta
        theta64 = self._clamp64(theta.double())
        return self.bijection.inv(theta64).to(theta.dtype)

    def inverse(self, u: Tensor) -> Tensor:
        """u ``[n, d]`` → θ ``[n, d]``, strictly inside the support after the cast to ``u.dtype``."""
        if self.identity:
            return u
        theta = self.bijection(u.double()).to(u.dtype)
        inf = torch.tensor(float("inf"), dtype=theta.dtype, device=theta.device)
        if self.lower is not None:
            lower = self.lower.to(theta.dtype)
            theta = torch.where(theta <= lower, torch.nextafter(lower, inf).expand_as(theta), theta)
        if self.upper is not None:
            upper = self.upper.to(theta.dtype)
            theta = torch.where(theta >= upper, torch.nextafter(upper, -inf).expand_as(theta), theta)
        return theta

    def log_abs_det_jacobian(self, theta: Tensor) -> Tensor:
        """log |det ∂u/∂θ| ``[n]`` (float32), i.e. minus the log-Jacobian of B at u = B⁻¹(θ)."""
        if self.identity:
            return theta.new_zeros(theta.shape[0])
        theta64 = self._clamp64(theta.double())
        u = self.bijection.inv(theta64)
        ladj = self.bijection.log_abs_det_jacobian(u, theta64)
        if ladj.dim() > 1:
            ladj = _sum_event(ladj)
        return (-ladj).to(theta.dtype)


class LinearResidual(nn.Module):
    r"""A context-dependent affine map r = (v − W c − b) / s: y's residual from its linear regression on c.

    ``v`` ``[n, d_y]`` and ``c`` ``[n, d_c]`` are the standardised y and context. (W, b) is the least-squares
    fit of v on c (a small ridge keeps it defined for collinear contexts) and s the residuals' standard
    deviation per dimension, so that a family that is the identity at initialisation starts as the linear-Gaussian
    model v | c ~ N(W c + b, diag s²) and only has to learn the non-linear, non-Gaussian rest. For each fixed c
    the map is a bijection of v with log |det ∂r/∂v| = −Σ log s, so densities stay exact.

    It matters most where the truth is close to linear-Gaussian (e.g. an emulator of x = θ + noise), where a
    flow otherwise spends its capacity, and its variance, on re-learning a linear trend.

    Args:
        y_features: width of the flattened y.
        c_features: width of the flattened context.
        ridge: Tikhonov regularisation λ·n added to the normal equations' slope block (standardised units).
        fixed: y dimensions left as they are (no regression, s = 1), as :class:`Standardize`'s ``fixed``.
    """

    def __init__(self, y_features: int, c_features: int, ridge: float = 1e-3, fixed: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.ridge = ridge
        self.fixed = tuple(int(i) for i in fixed)
        self.register_buffer("weight", torch.zeros(c_features, y_features))
        self.register_buffer("bias", torch.zeros(y_features))
        self.register_buffer("scale", torch.ones(y_features))

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[Tensor, Tensor]],
            reduce: Callable[[Tensor], Tensor] | None = None) -> LinearResidual:
        """Least squares from the sufficient statistics of ``(v [n, d_y], c [n, d_c])`` batches (one pass).

        With the design row a = (c, 1), the normal equations (Σ a aᵀ + λn·I_c) β = Σ a vᵀ give β = (W; b), and
        the residual variance per dimension is (Σ v² − 2 Σ β ⊙ Σ a vᵀ + Σ β ⊙ (Σ a aᵀ) β) / n. ``reduce`` sums
        the statistics over the ranks of a data-parallel run (each having passed over its own shard).
        """
        gram = cross = square = None
        n = 0
        for v, c in batches:
            v, c = v.reshape(v.shape[0], -1).double(), c.reshape(c.shape[0], -1).double()
            a = torch.cat([c, torch.ones_like(c[:, :1])], dim=1)
            g, x, q = a.T @ a, a.T @ v, (v * v).sum(dim=0)
            gram, cross, square = (g, x, q) if gram is None else (gram + g, cross + x, square + q)
            n += v.shape[0]
        if reduce is not None:
            if gram is None:  # an empty shard joins the sums with zeros
                d_c, d_y = self.weight.shape
                gram, cross, square = (torch.zeros(d_c + 1, d_c + 1, dtype=torch.float64),
                                       torch.zeros(d_c + 1, d_y, dtype=torch.float64),
                                       torch.zeros(d_y, dtype=torch.float64))
            gram, cross, square = reduce(gram), reduce(cross), reduce(square)
            n = int(reduce(torch.tensor(float(n), dtype=torch.float64)))
        if n == 0:
            raise ValueError("LinearResidual.fit needs at least one row")
        penalty = torch.full((gram.shape[0],), self.ridge * n, dtype=gram.dtype, device=gram.device)
        penalty[-1] = 0.0  # the intercept is not shrunk
        beta = torch.linalg.solve(gram + torch.diag(penalty), cross)
        residual_ss = square - 2 * (beta * cross).sum(dim=0) + (beta * (gram @ beta)).sum(dim=0)
        scale = torch.sqrt(torch.clamp(residual_ss / max(n - 1, 1), min=0.0))
        self.weight.copy_(beta[:-1].to(self.weight.dtype))
        self.bias.copy_(beta[-1].to(self.bias.dtype))
        self.scale.copy_(torch.clamp(torch.nan_to_num(scale, nan=1.0), min=1e-6).to(self.scale.dtype))
        if self.fixed:
            idx = list(self.fixed)
            self.weight[:, idx], self.bias[idx], self.scale[idx] = 0.0, 0.0, 1.0
        return self

    def _mean(self, c: Tensor) -> Tensor:
        return c.reshape(c.shape[0], -1) @ self.weight + self.bias

    def forward(self, v: Tensor, c: Tensor) -> Tensor:
        """r = (v − W c − b) / s for rows ``v`` ``[n, d_y]`` with contexts ``c`` ``[n, d_c]``."""
        return (v - self._mean(c)) / self.scale

    def inverse(self, r: Tensor, c: Tensor) -> Tensor:
        """v = W c + b + s r; ``r`` ``[m, k, d_y]`` takes one context row ``c`` ``[m, d_c]`` per leading row."""
        mean = self._mean(c)
        if r.dim() == 3:
            mean = mean[:, None]
        return mean + self.scale * r

    def log_abs_det_jacobian(self, v: Tensor) -> Tensor:
        """log |det ∂r/∂v| = −Σ log s, broadcast over the ``[n]`` rows of ``v``."""
        return (-torch.log(self.scale).sum()).expand(v.shape[0]).to(v.dtype)


class Dequantize(nn.Module):
    r"""Uniform dequantisation of integer-valued dimensions.

    A count k becomes k + v with v ~ U(0, 1) while training, so that the continuous density p̃ fitted to
    k + v satisfies P(k) = ∫₀¹ p̃(k + v) dv ≥ exp E_v log p̃(k + v) (Jensen): maximising the dequantised
    likelihood maximises a lower bound on the discrete one. ``log_prob`` evaluates p̃ at the cell's midpoint
    k + ½ (a one-point estimate of P(k)); samples are floored back to integers.

    Args:
        indices: flat indices of the integer-valued dimensions of one row.
    """

    def __init__(self, indices: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        self.indices = tuple(int(i) for i in indices)

    def noise(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Add U(0, 1) noise to the discrete dimensions of ``y`` ``[n, d]``."""
        if not self.indices:
            return y
        y = y.clone()
        idx = list(self.indices)
        y[:, idx] = y[:, idx] + rand(y.shape[0], len(idx), generator=generator, device=y.device)
        return y

    def midpoint(self, y: Tensor) -> Tensor:
        if not self.indices:
            return y
        y = y.clone()
        idx = list(self.indices)
        y[:, idx] = torch.floor(y[:, idx]) + 0.5
        return y

    def round(self, y: Tensor) -> Tensor:
        if not self.indices:
            return y
        y = y.clone()
        idx = list(self.indices)
        y[:, idx] = torch.floor(y[:, idx])
        return y


def positive_dims(prior: Distribution) -> tuple[int, ...]:
    """The dimensions of θ ``[d]`` on which ``prior``'s support is positive: an interval whose lower bound is
    above 0, or the open half-line (0, ∞) (a log-normal prior; not [0, ∞), a gamma's or half-normal's
    support in torch). ``()`` for a support it cannot read."""
    support = prior.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    (d,) = prior.event_shape
    if isinstance(support, type(constraints.positive)) and float(support.lower_bound) >= 0:
        return tuple(range(d))
    lower, _ = support_bounds(support)
    if lower is None:
        return ()
    lower = lower.expand(d)
    return tuple(i for i in range(d) if lower[i] > 0)


class LogPositive(nn.Module):
    r"""c ↦ (log c_i for i in ``dims``, c_i elsewhere), rows ``[n, d]``: a likelihood's context before it is
    standardised.

    A parameter that scales the data (an amplitude such as σ_8, a rate, a mass) usually acts on log x through
    log θ: a log-normal field's or a Gaussian field's log power is linear in log σ_8. Fed as log θ, such a
    dependence is one linear direction for the network, and it stays right at the edges of the prior, where a
    network of θ itself, fitted to fewer simulations there, bends towards the interior. The map is fixed and
    applies to the conditioning variable only, so no Jacobian enters log q(x | θ). Values ≤ 0 (outside the
    support: MCMC proposals the prior rejects anyway) are clamped to the smallest positive float first, so that
    the output and its gradient stay finite.

    Args:
        features: d.
        dims: the dimensions to take the log of (:func:`positive_dims` of the prior).
    """

    def __init__(self, features: int, dims: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        dims = tuple(int(i) for i in dims)
        if any(not 0 <= i < features for i in dims):
            raise ValueError(f"log dimensions must lie in [0, {features}); got {list(dims)}")
        mask = torch.zeros(features, dtype=torch.bool)
        mask[list(dims)] = True
        self.dims = dims
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, c: Tensor) -> Tensor:
        """``[n, d]`` → ``[n, d]``."""
        # the log of the clamped rows everywhere, then selected: torch.where would pass a NaN gradient from log
        # of a negative entry in an unselected branch
        log_c = torch.log(c.clamp_min(torch.finfo(c.dtype).tiny))
        return torch.where(self.mask, log_c, c)
