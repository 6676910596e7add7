r"""Parton level :math:`z_p \sim p(z_p \mid \theta)` of the collider chain: a scalar resonance :math:`X \to q \bar q`.

Mass :math:`m` from the truncated relativistic Breit–Wigner (:mod:`simulators.collider.distributions`).
Production: :math:`y_X \sim N(0, 1)`, :math:`p_{T,X} \sim \mathrm{Exp}(\text{mean } 20)`,
:math:`\phi_X \sim U(0, 2\pi)`, :math:`p_X = (m_T \cosh y, p_T \cos\phi_X, p_T \sin\phi_X, m_T \sinh y)`;
isotropic decay axis
:math:`n(\cos\theta^*, \phi^*)`, massless partons :math:`\pm (m/2)(1, n)` boosted to the lab.
:math:`\log p(z_p \mid \theta) = \log p(m) + \log N(y; 0, 1) + \log \mathrm{Exp}(p_T) - 2 \log 2\pi - \log 2`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulators.collider.constants import F64, LOG_2PI, PT_MEAN
from simulators.collider.distributions import bw_log_density, bw_sample
from simulators.collider.kinematics import axis, boost
from simulators.collider.latents import PartonLatents

__all__ = ["parton_log_prob", "sample_parton"]


def sample_parton(theta: Tensor, generator: torch.Generator | None = None) -> PartonLatents:
    """Parton-level latents :math:`z_p \\sim p(z_p \\mid \\theta)` for a checked float64 ``theta [B, 3]``."""
    M, Gamma = theta[:, 0], theta[:, 1]
    B = len(theta)
    m = bw_sample(torch.rand(B, dtype=F64, generator=generator), M, Gamma)
    y = torch.randn(B, dtype=F64, generator=generator)
    pt = PT_MEAN * torch.empty(B, dtype=F64).exponential_(generator=generator)
    phi = 2 * math.pi * torch.rand(B, dtype=F64, generator=generator)
    cos_theta = 2 * torch.rand(B, dtype=F64, generator=generator) - 1
    phi_star = 2 * math.pi * torch.rand(B, dtype=F64, generator=generator)
    m_t = torch.sqrt(m**2 + pt**2)
    p_x = torch.stack((m_t * torch.cosh(y), pt * torch.cos(phi), pt * torch.sin(phi), m_t * torch.sinh(y)), -1)
    n = axis(cos_theta, phi_star)
    half = (m / 2)[:, None]
    rest = torch.stack((torch.cat((half, half * n), -1), torch.cat((half, -half * n), -1)), 1)
    partons = boost(rest, p_x[:, None], m[:, None])
    z_p = PartonLatents(m, y, pt, phi, cos_theta, phi_star, p_x, partons, torch.zeros(B, dtype=F64))
    z_p.log_prob = parton_log_prob(theta, z_p)
    return z_p


def parton_log_prob(theta: Tensor, z_p: PartonLatents) -> Tensor:
    r""":math:`\log p(z_p \mid \theta)` ``[B]``, differentiable in ``theta [B, 3]`` (float64)."""
    theta = torch.as_tensor(theta, dtype=F64)
    log_m = bw_log_density(z_p.m, theta[:, 0], theta[:, 1])
    log_y = -0.5 * z_p.y**2 - 0.5 * LOG_2PI
    log_pt = torch.where(z_p.pt >= 0, -math.log(PT_MEAN) - z_p.pt / PT_MEAN, -math.inf)
    return log_m + log_y + log_pt - 2 * LOG_2PI - math.log(2)
