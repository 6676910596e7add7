r"""The detector :math:`z_d \sim p(z_d \mid z_s, \theta)` of the collider chain and its per-particle response.

Per leaf with true :math:`(E, \eta, \phi)`: acceptance
:math:`|\eta| < 2.5`, efficiency :math:`\varepsilon = 0.95`, :math:`E_{reco} = \mathrm{JES}\, E\, (1 + \sigma(E) \xi)`,
:math:`\sigma(E) = \sqrt{a^2/E + b^2}`, :math:`a = 0.5\,\mathrm{GeV}^{1/2}`, :math:`b = 0.03`; detected iff accepted,
efficient and :math:`E_{reco} > 1` GeV; reconstructed massless with :math:`p_T = E_{reco}/\cosh\eta` and the true
direction. Per accepted leaf, :func:`detector_response_log_prob`:
detected, :math:`\log \varepsilon + \log N(E_{reco}; \mathrm{JES} E, (\mathrm{JES} E \sigma)^2)`; not detected,
:math:`\log(1 - \varepsilon \Phi((\mathrm{JES} E - E_{thr})/(\mathrm{JES} E \sigma)))`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulators.collider.constants import A_STOCH, B_CONST, E_THR, EFFICIENCY, ETA_MAX, F64, LOG_2PI
from simulators.collider.kinematics import eta_phi
from simulators.collider.latents import DetectorLatents, ShowerLatents

__all__ = ["detector_log_prob", "detector_response_log_prob", "padded_particles", "sample_detector", "sigma_rel"]


def sigma_rel(E: Tensor) -> Tensor:
    r"""The relative energy resolution :math:`\sigma(E) = \sqrt{a^2/E + b^2}`."""
    return torch.sqrt(A_STOCH**2 / E + B_CONST**2)


def detector_response_log_prob(E: Tensor, eta: Tensor, jes: Tensor, detected: Tensor, e_reco: Tensor) -> Tensor:
    r"""Per-particle detector log-density :math:`\log p(\text{detected}, E_{reco} \mid E, \eta, \mathrm{JES})`.

    Outside the acceptance the particle is never seen: 0 if not detected, ``-inf`` if detected. Inside,
    detected with :math:`E_{reco} > E_{thr}`: :math:`\log\varepsilon + \log N(E_{reco}; \mathrm{JES} E,
    (\mathrm{JES} E \sigma(E))^2)` (a density in :math:`E_{reco}`); not detected:
    :math:`\log(1 - \varepsilon\Phi((\mathrm{JES}E - E_{thr})/(\mathrm{JES}E\sigma(E))))` (a probability).
    Broadcasts; differentiable in ``E`` and ``jes``. ``detected`` is boolean.
    """
    mean = jes * E
    std = mean * sigma_rel(E)
    in_acc = eta.abs() < ETA_MAX
    z = (e_reco - mean) / std
    log_det = math.log(EFFICIENCY) - 0.5 * z**2 - torch.log(std) - 0.5 * LOG_2PI
    log_det = torch.where(e_reco > E_THR, log_det, -math.inf)
    p_seen = EFFICIENCY * torch.special.ndtr((mean - E_THR) / std)
    log_miss = torch.log1p(-p_seen)
    inside = torch.where(detected, log_det, log_miss)
    outside = torch.where(detected, torch.full_like(inside, -math.inf), torch.zeros_like(inside))
    return torch.where(in_acc, inside, outside)



def sample_detector(z_s: ShowerLatents, theta: Tensor, generator: torch.Generator | None = None) -> DetectorLatents:
    """Detector response to every leaf of ``z_s`` for a checked float64 ``theta [B, 3]`` (only JES enters)."""
    leaves = torch.nonzero(z_s.is_leaf).squeeze(1)
    event = z_s.event[leaves]
    p4 = z_s.p4[leaves]
    energy = p4[:, 0]
    _, eta, phi = eta_phi(p4)
    in_acc = eta.abs() < ETA_MAX
    efficient = torch.rand(len(leaves), dtype=F64, generator=generator) < EFFICIENCY
    xi = torch.randn(len(leaves), dtype=F64, generator=generator)
    e_reco = theta[event, 2] * energy * (1 + sigma_rel(energy) * xi)
    detected = in_acc & efficient & (e_reco > E_THR)
    e_reco = torch.where(detected, e_reco, 0.0)
    z_d = DetectorLatents(event, energy, eta, phi, in_acc, detected, e_reco, torch.zeros(len(theta), dtype=F64))
    z_d.log_prob = detector_log_prob(theta, z_s, z_d)
    return z_d


def detector_log_prob(theta: Tensor, z_s: ShowerLatents, z_d: DetectorLatents) -> Tensor:
    r""":math:`\log p(z_d \mid z_s, \theta)` ``[B]``, differentiable in ``theta [B, 3]``; the per-leaf terms
    are :func:`detector_response_log_prob` (the leaves' true energies are read from ``z_s``)."""
    theta = torch.as_tensor(theta, dtype=F64)
    energy = z_s.p4[z_s.is_leaf, 0]
    per_leaf = detector_response_log_prob(energy, z_d.eta, theta[z_d.event, 2], z_d.detected, z_d.e_reco)
    return torch.zeros(len(theta), dtype=per_leaf.dtype).index_add(0, z_d.event, per_leaf)


def padded_particles(z_d: DetectorLatents, n_events: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Detected particles per event, sorted by p_T (descending) and zero-padded: four ``[B, K]`` arrays."""
    det = torch.nonzero(z_d.detected).squeeze(1)
    event, eta, phi = z_d.event[det], z_d.eta[det], z_d.phi[det]
    pt = z_d.e_reco[det] / torch.cosh(eta)
    order = torch.argsort(-pt, stable=True)
    order = order[torch.argsort(event[order], stable=True)]
    event, pt, eta, phi = event[order], pt[order], eta[order], phi[order]
    counts = torch.bincount(event, minlength=n_events)
    K = max(int(counts.max()) if len(counts) else 0, 1)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(event)) - starts[event]
    out = [torch.zeros(n_events, K, dtype=F64) for _ in range(3)]
    for arr, values in zip(out, (pt, eta, phi), strict=True):
        arr[event, slot] = values
    mask = torch.zeros(n_events, K, dtype=torch.bool)
    mask[event, slot] = True
    return out[0], out[1], out[2], mask

