r"""The collider chain's one-dimensional distributions: the truncated relativistic Breit–Wigner, the truncated
exponential of the shower, and :class:`LogUniformBox` (the prior of ``collider_detector``).

Breit–Wigner in :math:`s = m^2` on the fixed window :math:`m \in [150, 1200]`: with
:math:`a_{lo,hi} = \arctan((m_{lo,hi}^2 - M^2)/(M\Gamma))`,
:math:`s = M^2 + M\Gamma \tan(a_{lo} + u (a_{hi} - a_{lo}))`, :math:`u \sim U(0, 1)`, and

.. math:: p(m \mid M, \Gamma) = \frac{2 m\, M \Gamma}{(a_{hi} - a_{lo})\, ((m^2 - M^2)^2 + M^2 \Gamma^2)}.

Truncated exponential :math:`f_\lambda(t; s) = \lambda e^{-\lambda t/s} / (s (1 - e^{-\lambda(1-\epsilon)}))` on
:math:`0 \le t < (1-\epsilon) s`, drawn by inverse CDF as :math:`t = s r`,
:math:`r = -\ln(1 - u (1 - e^{-\lambda(1-\epsilon)}))/\lambda`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from simulators.collider.constants import EPS, M_HI, M_LO

__all__ = ["LogUniformBox", "bw_cdf", "bw_log_density", "bw_sample", "trunc_exp_log_density", "trunc_exp_sample"]


# --------------------------------------------------------------------------------------- Breit–Wigner


def _bw_angles(M: Tensor, Gamma: Tensor) -> tuple[Tensor, Tensor]:
    scale = M * Gamma
    return torch.atan((M_LO**2 - M**2) / scale), torch.atan((M_HI**2 - M**2) / scale)


def bw_log_density(m: Tensor, M: Tensor, Gamma: Tensor) -> Tensor:
    r""":math:`\log p(m \mid M, \Gamma)` of the truncated relativistic Breit–Wigner (``-inf`` off the window)."""
    a_lo, a_hi = _bw_angles(M, Gamma)
    log_p = torch.log(2 * m * M * Gamma) - torch.log(a_hi - a_lo) - torch.log((m**2 - M**2) ** 2 + (M * Gamma) ** 2)
    return torch.where((m >= M_LO) & (m <= M_HI), log_p, -math.inf)


def bw_cdf(m: Tensor, M: Tensor, Gamma: Tensor) -> Tensor:
    r""":math:`F(m) = (\arctan((m^2 - M^2)/(M\Gamma)) - a_{lo})/(a_{hi} - a_{lo})`, clamped to [0, 1]."""
    a_lo, a_hi = _bw_angles(M, Gamma)
    m = m.clamp(M_LO, M_HI)
    return (torch.atan((m**2 - M**2) / (M * Gamma)) - a_lo) / (a_hi - a_lo)


def bw_sample(u: Tensor, M: Tensor, Gamma: Tensor) -> Tensor:
    """Inverse CDF of the truncated Breit–Wigner at ``u`` in [0, 1]."""
    a_lo, a_hi = _bw_angles(M, Gamma)
    s = M**2 + M * Gamma * torch.tan(a_lo + u * (a_hi - a_lo))
    return s.sqrt().clamp(M_LO, M_HI)


# ------------------------------------------------------------------------------------- truncated exp


def trunc_exp_sample(u: Tensor, lam: float) -> Tensor:
    r"""Inverse CDF of the truncated exponential in :math:`r = t/s` at ``u`` in [0, 1]."""
    return -torch.log1p(-u * (-math.expm1(-lam * (1 - EPS)))) / lam


def trunc_exp_log_density(t: Tensor, s: Tensor, lam: float) -> Tensor:
    r""":math:`\log f_\lambda(t; s)`, ``-inf`` outside :math:`0 \le t < (1 - \epsilon) s`."""
    log_f = math.log(lam) - lam * t / s - torch.log(s) - math.log(-math.expm1(-lam * (1 - EPS)))
    return torch.where((t >= 0) & (t < (1 - EPS) * s), log_f, -math.inf)


# ------------------------------------------------------------------------------------ log-uniform box


class LogUniformBox(Distribution):
    r"""Independent coordinates on a box, each uniform or log-uniform: the prior of ``collider_detector``.

    ``log_scale[i]`` makes coordinate ``i`` log-uniform on ``[low_i, high_i]`` (density
    :math:`1/(x \log(high/low))`); the others are uniform. ``support`` is the box, so
    ``torch.distributions.biject_to(prior.support)`` works as for ``BoxUniform``.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, low: Any, high: Any, log_scale: Any, validate_args: bool | None = None) -> None:
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        self.log_scale = torch.as_tensor(log_scale, dtype=torch.bool)
        super().__init__(torch.Size(), self.low.shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        u = torch.rand(*sample_shape, *self.event_shape)
        log_lo, log_hi = self.low.log(), self.high.log()
        log_x = torch.exp(log_lo + u * (log_hi - log_lo))
        lin = self.low + u * (self.high - self.low)
        return torch.where(self.log_scale, log_x, lin).clamp(self.low, self.high)

    def log_prob(self, value: Tensor) -> Tensor:
        value = torch.as_tensor(value, dtype=self.low.dtype)
        width = torch.where(self.log_scale, (self.high / self.low).log() * value, self.high - self.low)
        inside = ((value >= self.low) & (value <= self.high)).all(-1)
        return torch.where(inside, -width.log().sum(-1), -math.inf)
