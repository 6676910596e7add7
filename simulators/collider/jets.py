"""The observed summary of the collider chain: a 2-seed jet algorithm over the detected particles."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulators.collider.constants import DR_SEED, F64
from simulators.collider.kinematics import wrap

__all__ = ["jet_summary"]


def jet_summary(pt: Tensor, eta: Tensor, phi: Tensor, mask: Tensor) -> Tensor:
    r"""The 10-d summary of a 2-seed jet algorithm, ``[B, K]`` particle arrays (massless) → ``[B, 10]``.

    Seed 1 is the leading-:math:`p_T` particle; seed 2 the highest-:math:`p_T` particle with :math:`\Delta R > 1`
    from seed 1 (:math:`\Delta R^2 = \Delta\eta^2 + \Delta\phi^2`, :math:`\Delta\phi` wrapped to :math:`(-\pi, \pi]`).
    Every particle joins the nearer seed (ties: seed 1); the jets' 4-vectors are sums, ordered by :math:`p_T`.
    Returns
    :math:`[m_{jj}, p_{T,j1}, p_{T,j2}, \eta_{j1}, \eta_{j2}, |\Delta\phi_{jj}|, m_{j1}, m_{j2}, n_{j1}, n_{j2}]`;
    without a second seed jet 2 is all zeros and :math:`m_{jj} = m_{j1}`; with no particle at all, zeros.
    Invariant under permutations of the particles (it sorts by :math:`p_T` first).
    """
    mask = mask.bool()
    key = torch.where(mask, pt, -math.inf)
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    pt, eta, phi, mask = (v.gather(1, order) for v in (pt, eta, phi, mask))
    pt = torch.where(mask, pt, 0.0)
    eta, phi = torch.where(mask, eta, 0.0), torch.where(mask, phi, 0.0)

    def delta_r(i: Tensor) -> Tensor:
        d_eta = eta - eta.gather(1, i[:, None])
        d_phi = wrap(phi - phi.gather(1, i[:, None]))
        return torch.sqrt(d_eta**2 + d_phi**2)

    zero = torch.zeros(len(pt), dtype=torch.long)
    dr1 = delta_r(zero)
    candidate = mask & (dr1 > DR_SEED)
    has_two = candidate.any(1)
    seed2 = candidate.to(torch.int8).argmax(1)
    dr2 = delta_r(seed2)
    in1 = mask & (~has_two[:, None] | (dr1 <= dr2))
    in2 = mask & ~in1
    p4 = torch.stack((pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)), -1)
    j1 = (p4 * in1[..., None]).sum(1)
    j2 = (p4 * in2[..., None]).sum(1)
    n1, n2 = in1.sum(1).to(F64), in2.sum(1).to(F64)
    swap = torch.hypot(j2[:, 1], j2[:, 2]) > torch.hypot(j1[:, 1], j1[:, 2])
    j1, j2 = torch.where(swap[:, None], j2, j1), torch.where(swap[:, None], j1, j2)
    n1, n2 = torch.where(swap, n2, n1), torch.where(swap, n1, n2)

    def kinematics(p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ptj = torch.hypot(p[:, 1], p[:, 2])
        safe = ptj > 0
        etaj = torch.where(safe, torch.asinh(p[:, 3] / torch.where(safe, ptj, 1.0)), 0.0)
        phij = torch.atan2(p[:, 2], p[:, 1])
        mass = (p[:, 0] ** 2 - (p[:, 1:] ** 2).sum(-1)).clamp_min(0).sqrt()
        return ptj, etaj, phij, mass

    pt1, eta1, phi1, m1 = kinematics(j1)
    pt2, eta2, phi2, m2 = kinematics(j2)
    m_jj = kinematics(j1 + j2)[3]
    dphi = torch.where(pt2 > 0, wrap(phi1 - phi2).abs(), 0.0)
    return torch.stack((m_jj, pt1, pt2, eta1, eta2, dphi, m1, m2, n1, n2), -1)

