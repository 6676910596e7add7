r"""Four-vector kinematics of the collider chain: boosts, :math:`(p_T, \eta, \phi)`, back-to-back frames.

All momenta are :math:`(E, p_x, p_y, p_z)` in GeV, float64.

Boost (everywhere): for a parent :math:`(E_P, \mathbf p_P)` of mass :math:`m_P`, :math:`\beta = \mathbf p_P/E_P`,
:math:`\gamma = E_P/m_P`, a rest-frame :math:`(E^*, \mathbf p^*)` maps to
:math:`E = \gamma (E^* + \beta\cdot\mathbf p^*)`,
:math:`\mathbf p = \mathbf p^* + [\gamma^2/(1+\gamma)\, \beta\cdot\mathbf p^* + \gamma E^*]\, \beta`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["axis", "back_to_back", "boost", "eta_phi", "kallen_sqrt", "wrap"]


def boost(rest: Tensor, parent: Tensor, mass: Tensor) -> Tensor:
    r"""Boost rest-frame 4-vectors ``rest [..., 4]`` into the frame where the parent is ``parent [..., 4]``
    with mass ``mass [...]`` (the module's convention, stable as :math:`\beta \to 0`)."""
    beta = parent[..., 1:] / parent[..., :1]
    gamma = parent[..., 0] / mass
    e_star, p_star = rest[..., 0], rest[..., 1:]
    bp = (beta * p_star).sum(-1)
    energy = gamma * (e_star + bp)
    momentum = p_star + ((gamma**2 / (1 + gamma) * bp + gamma * e_star)[..., None]) * beta
    return torch.cat((energy[..., None], momentum), -1)


def kallen_sqrt(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    r""":math:`\sqrt{\lambda_K(a, b, c)}` as :math:`\sqrt{(a - (\sqrt b + \sqrt c)^2)(a - (\sqrt b - \sqrt c)^2)}`."""
    sb, sc = b.sqrt(), c.sqrt()
    return ((a - (sb + sc) ** 2) * (a - (sb - sc) ** 2)).clamp_min(0).sqrt()


def eta_phi(p4: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(p_T, η, φ)`` of ``p4 [..., 4]``."""
    pt = torch.hypot(p4[..., 1], p4[..., 2])
    return pt, torch.asinh(p4[..., 3] / pt), torch.atan2(p4[..., 2], p4[..., 1])


def wrap(dphi: Tensor) -> Tensor:
    """Wrap an angle difference to (-π, π]."""
    return dphi - 2 * math.pi * torch.ceil((dphi - math.pi) / (2 * math.pi))


def back_to_back(e_1: Tensor, e_2: Tensor, q: Tensor, n: Tensor) -> Tensor:
    """Rest-frame 4-vectors ``[k, 2, 4]``: ``(e_1, q n)`` and ``(e_2, -q n)`` for ``[k]`` energies, ``n [k, 3]``."""
    q_n = q[:, None] * n
    return torch.stack((torch.cat((e_1[:, None], q_n), -1), torch.cat((e_2[:, None], -q_n), -1)), 1)


def axis(cos_theta: Tensor, phi: Tensor) -> Tensor:
    r"""The unit vector :math:`n(\cos\theta, \phi)` ``[..., 3]``."""
    sin_theta = (1 - cos_theta**2).clamp_min(0).sqrt()
    return torch.stack((sin_theta * torch.cos(phi), sin_theta * torch.sin(phi), cos_theta), -1)
