"""The latents :math:`z = (z_p, z_s, z_d)` of the collider chain, one dataclass per stage, each carrying its stage
log-density as ``log_prob``."""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import Tensor

__all__ = ["ColliderLatents", "DetectorLatents", "PartonLatents", "ShowerLatents"]


class _Latents:
    """Shared helpers of the latent dataclasses."""

    def to_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass
class PartonLatents(_Latents):
    """Parton level, one row per event: ``m, y, pt, phi, cos_theta, phi_star`` ``[B]``, the resonance
    ``p_x [B, 4]``, the massless ``partons [B, 2, 4]`` and ``log_prob`` :math:`\\log p(z_p \\mid \\theta)` ``[B]``."""

    m: Tensor
    y: Tensor
    pt: Tensor
    phi: Tensor
    cos_theta: Tensor
    phi_star: Tensor
    p_x: Tensor
    partons: Tensor
    log_prob: Tensor


@dataclass
class ShowerLatents(_Latents):
    """The shower's flat node table, ``N`` nodes sorted by event (then generation), and per-event ``offsets``
    ``[B + 1]`` (event ``b`` owns rows ``offsets[b]:offsets[b+1]``).

    Per node: ``event``, ``jet`` (0 or 1), ``parent`` (-1 for jet roots), ``children [N, 2]`` (left, right;
    -1 for leaves), ``depth``, ``t`` (mass²), ``r`` (the truncated-exponential draw, ``t / scale``), ``scale``
    (the :math:`s` it was drawn against: :math:`s_0` for roots, :math:`t_P` for the first-drawn child,
    :math:`(\\sqrt{t_P} - \\sqrt{t_a})^2` for the second), ``first`` (drawn first among its siblings; roots:
    True), ``flip`` (split nodes: the first-drawn child is the right one), ``direction [N, 3]`` (split nodes:
    the left child's direction in the parent rest frame), ``p4 [N, 4]``, ``is_leaf``, ``forced_leaf``
    (depth cap reached with :math:`t > t_{cut}`); ``log_prob`` :math:`\\log p(z_s \\mid z_p)` ``[B]``."""

    event: Tensor
    jet: Tensor
    parent: Tensor
    children: Tensor
    depth: Tensor
    t: Tensor
    r: Tensor
    scale: Tensor
    first: Tensor
    flip: Tensor
    direction: Tensor
    p4: Tensor
    is_leaf: Tensor
    forced_leaf: Tensor
    offsets: Tensor
    log_prob: Tensor


@dataclass
class DetectorLatents(_Latents):
    """One row per leaf of the shower (in node-table order): ``event``, ``energy`` (true), ``eta``, ``phi``,
    ``in_acc``, ``detected``, ``e_reco`` (0 unless detected); ``log_prob`` :math:`\\log p(z_d \\mid z_s, \\theta)`
    ``[B]``."""

    event: Tensor
    energy: Tensor
    eta: Tensor
    phi: Tensor
    in_acc: Tensor
    detected: Tensor
    e_reco: Tensor
    log_prob: Tensor


@dataclass
class ColliderLatents:
    """The three stages' latents ``z = (z_p, z_s, z_d)``, each carrying its stage log-density."""

    parton: PartonLatents
    shower: ShowerLatents
    detector: DetectorLatents

