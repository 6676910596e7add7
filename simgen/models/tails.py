r"""Power-law tails for flows with a Gaussian base: an element-wise bijection fitted to the data's tails.

A flow y = f(z), z ~ N(0, I), whose layers are Lipschitz (affine layers, splines with linear tails) has tails no
heavier than a Gaussian's (Jaini, Kobyzev, Yu & Brubaker 2020, "Tails of Lipschitz triangular flows", ICML;
arXiv:1907.04481): an observation far in a power-law tail (a Breit–Wigner resonance, a ratio of noisy numbers)
gets a log-density off by tens of nats, and a handful of such rows then dominate the expected log-likelihood.
Tail-adaptive flows answer with a Student-t base (Jaini et al.; Laszkiewicz, Lederer & Fischer 2022, "Marginal
tail-adaptive normalizing flows", arXiv:2206.10311); the transformation of the tails is the other answer
(Hickling & Prangle 2024, "Flexible tails for normalizing flows", arXiv:2406.16971). This module takes the second
route, with a map that is exactly the identity when the data have no heavy tails, whose inverse is closed-form
(sampling stays one pass from seeded Gaussian noise) and that is fitted to each dimension before training.

Per dimension, with a scale s > 0, w = u/s, a = λw²/2 (λ ≥ 0),

.. math:: v = g_\lambda(w), \qquad g_\lambda(w) = \operatorname{sign}(w)\sqrt{\tfrac{2}{\lambda}
    \log(1 + \lambda w^2 / 2)} = w \sqrt{h(a)}, \quad h(a) = \frac{\log(1 + a)}{a},

so that N(0, 1) on v is the density ∝ (1 + λw²/2)^{−1/λ} · g′_λ(w) / s on u: about N(0, s²) in the core and tails
falling as |u|^{−2/λ − 1} (up to a slowly varying factor), Cauchy-like at λ = 2, whatever s; g_0 is the identity.
With g′_λ(w) = 1 / (√h(a) (1 + a)):

.. math:: \log \Big|\frac{\partial v}{\partial u}\Big| = -\tfrac12 \log h(a) - \log(1 + a) - \log s,

and the inverse, with b = λv²/2 (so that a = e^b − 1), is u = s v √k(b), k(b) = (e^b − 1)/b. The map goes
between the estimator's pre-processing (standardisation, linear residual) and the flow's layers: the flow models
v, whose tails are then Gaussian-like where u's were power laws.

:func:`fit_power_tails` chooses λ and s per dimension by maximum likelihood of "v ~ N(0, 1)" on a grid, keeping
λ = 0 (the identity, s = 1) unless the gain in log-likelihood over the best Gaussian N(0, s²) exceeds log n nats
(twice the BIC penalty of the extra parameter), so light-tailed data keep the flow exactly as it was. λ and s
then stay fixed: like the estimators' linear residual, the map is a pre-processing fitted once to the training
rows, and the flow's layers learn the rest.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PowerTails", "fit_power_tails"]

#: the range of λ that :func:`fit_power_tails` searches: tail indices 2/λ + 1 from about 400 (close to Gaussian)
#: down to 1.5 (heavier than Cauchy's 2); and of s, in units of a column's robust scale
LAMBDA_RANGE, SCALE_RANGE = (0.005, 4.0), (0.05, 4.0)

#: rows :func:`fit_power_tails` uses at most per column
FIT_ROWS = 4_000

#: below this, h(a) and k(b) are evaluated by their series (the closed forms are 0/0 at 0)
_SERIES = 1e-4

#: b is clamped here in the inverse: e^b must stay finite in float32 (a draw this far out is ~e^40 scales away)
_MAX_B = 80.0


def _log_h(a: Tensor) -> Tensor:
    """log h(a) = log(log(1 + a) / a), a ≥ 0, with the series 1 − a/2 + a²/3 near 0 (gradients stay finite)."""
    small = a < _SERIES
    safe = torch.where(small, torch.ones_like(a), a)
    return torch.where(small, torch.log1p(-a / 2 + a * a / 3), torch.log(torch.log1p(safe) / safe))


def _log_k(b: Tensor) -> Tensor:
    """log k(b) = log((e^b − 1) / b), b ≥ 0, with the series 1 + b/2 + b²/6 near 0."""
    small = b < _SERIES
    safe = torch.where(small, torch.ones_like(b), b)
    return torch.where(small, torch.log1p(b / 2 + b * b / 6), torch.log(torch.expm1(safe) / safe))


def _forward(u: Tensor, lam: Tensor, log_s: Tensor) -> tuple[Tensor, Tensor]:
    """(v, log|∂v/∂u|) element-wise for ``u`` ``[..., d]`` and per-dimension ``lam``, ``log_s`` (broadcast)."""
    w = u * torch.exp(-log_s)
    a = lam * w * w / 2
    log_h = _log_h(a)
    return w * torch.exp(log_h / 2), -log_h / 2 - torch.log1p(a) - log_s


class PowerTails(nn.Module):
    r"""The element-wise bijection v = g_λ(u/s) of the module docstring, one (λ, s) per dimension.

    ``forward(u)`` returns ``(v, log|det ∂v/∂u|)`` (summed over the ``[n, d]`` rows' dimensions) and
    ``inverse(v)`` returns u ``[..., d]``. λ and s are the buffers ``tail_weight`` and ``scale`` ``[d]`` (fitted
    by :meth:`fit`, saved, not trained); a dimension with λ = 0 and s = 1 (unfitted, or light-tailed) passes
    through exactly unchanged.

    Args:
        features: d.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("tail_weight", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))

    @torch.no_grad()
    def fit(self, u: Tensor) -> PowerTails:
        """λ and s of each dimension from rows ``u`` ``[n, d]`` (:func:`fit_power_tails`)."""
        lam, scale = fit_power_tails(u)
        self.tail_weight.copy_(lam.to(self.tail_weight))
        self.scale.copy_(scale.to(self.scale))
        return self

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        v, log_det = _forward(u, self.tail_weight, self.scale.log())
        return v, log_det.sum(dim=-1)

    def inverse(self, v: Tensor) -> Tensor:
        b = (self.tail_weight * v * v / 2).clamp(max=_MAX_B)
        return v * torch.exp(_log_k(b) / 2) * self.scale


def _log_likelihood(col: Tensor, lam: Tensor, s: Tensor) -> Tensor:
    """Σᵢ log N(g_λ(uᵢ/s); 0, 1) + log|∂v/∂u| up to −(n/2) log 2π: ``[L, S]`` for a column ``col`` ``[n]`` and the
    grids ``lam`` ``[L]``, ``s`` ``[S]``."""
    v, log_det = _forward(col, lam[:, None, None], s.log()[None, :, None])
    return (log_det - v * v / 2).sum(dim=-1)


def _log_grid(lo: float, hi: float, k: int) -> Tensor:
    return torch.logspace(math.log10(lo), math.log10(hi), k, dtype=torch.float64)


def _fit_column(col: Tensor, points: int) -> tuple[float, float]:
    """(λ, s) of one finite column ``[n]`` (float64), or (0, 1): see :func:`fit_power_tails`."""
    n = col.shape[0]
    robust = 1.4826 * float((col - col.median()).abs().median())
    if n < 10 or not robust > 0:
        return 0.0, 1.0
    lam, s = _log_grid(*LAMBDA_RANGE, points), _log_grid(SCALE_RANGE[0] * robust, SCALE_RANGE[1] * robust, points)
    for _ in range(2):  # the grid, then the same grid between the best point's neighbours
        ll = _log_likelihood(col, lam, s)
        i, k = divmod(int(ll.argmax()), points)
        best = (float(ll[i, k]), float(lam[i]), float(s[k]))
        lam = _log_grid(float(lam[max(i - 1, 0)]), float(lam[min(i + 1, points - 1)]), points)
        s = _log_grid(float(s[max(k - 1, 0)]), float(s[min(k + 1, points - 1)]), points)
    gaussian = -n / 2 * (math.log(float((col * col).mean())) + 1)
    return (best[1], best[2]) if best[0] - gaussian > math.log(n) else (0.0, 1.0)


@torch.no_grad()
def fit_power_tails(u: Tensor, points: int = 10) -> tuple[Tensor, Tensor]:
    r"""(λ, s) per dimension ``[d]`` of rows ``u`` ``[n, d]``: the maximum-likelihood fit of "g_λ(u/s) ~ N(0, 1)"
    — a ``points`` × ``points`` log-spaced grid over :data:`LAMBDA_RANGE` and :data:`SCALE_RANGE` (s in units of
    the column's robust scale, 1.4826 × its median absolute deviation), then the same grid again between the best
    point's neighbours — or (0, 1), the identity, where the best log-likelihood beats that of the best Gaussian
    N(0, s²) (s² the mean square) by no more than log n nats.

    The log-likelihood of (λ, s) is Σᵢ [log g′_λ(uᵢ/s) − log s − g_λ(uᵢ/s)²/2] − (n/2) log 2π. Each column uses
    its first :data:`FIT_ROWS` finite entries (NaN and infinite ones are left out).
    """
    u = u.detach().reshape(u.shape[0], -1).double().cpu()
    fits = [_fit_column(col[torch.isfinite(col)][:FIT_ROWS], points) for col in u.T]
    lam, scale = zip(*fits, strict=True) if fits else ((), ())
    return torch.tensor(lam, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)
