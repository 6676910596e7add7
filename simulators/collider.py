r"""A collider-like chain, parton → shower → detector → jets — ``collider`` and ``collider_detector``.

:math:`p(x \mid \theta) = \int p(z_p \mid \theta)\, p(z_s \mid z_p)\, p(z_d \mid z_s, \theta)\, p(x \mid z_d)\, dz`
for a scalar dijet resonance :math:`X \to q \bar q` with :math:`\theta = (M, \Gamma, \mathrm{JES})
\sim U[400, 600]\,\mathrm{GeV} \times U[5, 50]\,\mathrm{GeV} \times U[0.95, 1.05]`. All momenta are
:math:`(E, p_x, p_y, p_z)` in GeV, float64.

**Parton level** :math:`z_p` (:meth:`Collider.parton`). Truncated relativistic Breit–Wigner in :math:`s = m^2` on
the fixed window :math:`m \in [150, 1200]`: with :math:`a_{lo,hi} = \arctan((m_{lo,hi}^2 - M^2)/(M\Gamma))`,
:math:`s = M^2 + M\Gamma \tan(a_{lo} + u (a_{hi} - a_{lo}))`, :math:`u \sim U(0, 1)`, and

.. math:: p(m \mid M, \Gamma) = \frac{2 m\, M \Gamma}{(a_{hi} - a_{lo})\, ((m^2 - M^2)^2 + M^2 \Gamma^2)}.

Production: :math:`y_X \sim N(0, 1)`, :math:`p_{T,X} \sim \mathrm{Exp}(\text{mean } 20)`,
:math:`\phi_X \sim U(0, 2\pi)`, :math:`p_X = (m_T \cosh y, p_T \cos\phi_X, p_T \sin\phi_X, m_T \sinh y)`;
isotropic decay axis
:math:`n(\cos\theta^*, \phi^*)`, massless partons :math:`\pm (m/2)(1, n)` boosted to the lab.
:math:`\log p(z_p \mid \theta) = \log p(m) + \log N(y; 0, 1) + \log \mathrm{Exp}(p_T) - 2 \log 2\pi - \log 2`.

Boost (everywhere): for a parent :math:`(E_P, \mathbf p_P)` of mass :math:`m_P`, :math:`\beta = \mathbf p_P/E_P`,
:math:`\gamma = E_P/m_P`, a rest-frame :math:`(E^*, \mathbf p^*)` maps to
:math:`E = \gamma (E^* + \beta\cdot\mathbf p^*)`,
:math:`\mathbf p = \mathbf p^* + [\gamma^2/(1+\gamma)\, \beta\cdot\mathbf p^* + \gamma E^*]\, \beta`.

**Shower** :math:`z_s` (:meth:`Collider.shower`), Ginkgo's invariant-mass shower (Cranmer, Macaluso &
Pappadopulo) adapted as in the project spec. Jet virtualities :math:`t_i = s_0 r_i`, :math:`s_0 = (\rho m / 2)^2`,
:math:`\rho = 0.5`, :math:`r_i \sim \mathrm{TruncExp}(\lambda_{root} = 10)` on :math:`[0, 1 - \epsilon)`,
:math:`\epsilon = 10^{-3}`; the partons are made massive by the two-body reshuffle along :math:`n` in the X rest
frame (:math:`E^*_i = (m^2 + t_i - t_j)/(2m)`, :math:`|p^*| = \sqrt{\lambda_K(m^2, t_1, t_2)}/(2m)`). Every node
with :math:`t_P > t_{cut} = 4\,\mathrm{GeV}^2` splits: :math:`t_a = t_P r_a`, :math:`t_b = (\sqrt{t_P} - \sqrt{t_a})^2
r_b` with :math:`r \sim \mathrm{TruncExp}(\lambda = 1.5)` drawn by inverse CDF,
:math:`r = -\ln(1 - u (1 - e^{-\lambda(1-\epsilon)}))/\lambda`; a fair coin (``flip``) says whether :math:`a` is the
left child; the children decay back to back along a uniform direction of :math:`S^2` in the parent rest frame,
:math:`E^*_L = (t_P + t_L - t_R)/(2\sqrt{t_P})`, :math:`|p^*| = \sqrt{\lambda_K(t_P, t_L, t_R)}/(2\sqrt{t_P})`.
Nodes with :math:`t \le t_{cut}` are leaves (massive constituents). 4-momentum is conserved exactly. The whole
batch is showered together, one generation at a time (a level-synchronous frontier), capped at depth 64
(``forced_leaf`` flags a capped node; none occur at the defaults). The exact latent density is

.. math::
    \log p(z_s \mid z_p) = \sum_{jets} \log f_{\lambda_{root}}(t_i; s_0) + \sum_{splits} \big[\log f_\lambda(t_a; t_P)
    + \log f_\lambda(t_b; (\sqrt{t_P} - \sqrt{t_a})^2) - \log 4\pi - \log 2\big],

:math:`f_\lambda(t; s) = \lambda e^{-\lambda t/s} / (s (1 - e^{-\lambda(1-\epsilon)}))` on
:math:`0 \le t < (1-\epsilon) s`.
It is :math:`\theta`-independent (:math:`\lambda` is fixed).

**Detector** :math:`z_d` (:meth:`Collider.detector`), per leaf with true :math:`(E, \eta, \phi)`: acceptance
:math:`|\eta| < 2.5`, efficiency :math:`\varepsilon = 0.95`, :math:`E_{reco} = \mathrm{JES}\, E\, (1 + \sigma(E) \xi)`,
:math:`\sigma(E) = \sqrt{a^2/E + b^2}`, :math:`a = 0.5\,\mathrm{GeV}^{1/2}`, :math:`b = 0.03`; detected iff accepted,
efficient and :math:`E_{reco} > 1` GeV; reconstructed massless with :math:`p_T = E_{reco}/\cosh\eta` and the true
direction. Per accepted leaf, :func:`detector_response_log_prob`:
detected, :math:`\log \varepsilon + \log N(E_{reco}; \mathrm{JES} E, (\mathrm{JES} E \sigma)^2)`; not detected,
:math:`\log(1 - \varepsilon \Phi((\mathrm{JES} E - E_{thr})/(\mathrm{JES} E \sigma)))`.

**Observation** :math:`x` (deterministic in :math:`z_d`): ``output="summary"`` (default) gives the 10-d
:func:`jet_summary` of a 2-seed jet algorithm, :math:`[m_{jj}, p_{T,j1}, p_{T,j2}, \eta_{j1}, \eta_{j2},
|\Delta\phi_{jj}|, m_{j1}, m_{j2}, n_{j1}, n_{j2}]` (the counts, dimensions 8 and 9, are ``x_discrete``);
``output="set"`` gives the detected particles :math:`(p_T, \eta, \phi, \text{mask})` sorted by :math:`p_T`,
zero-padded (or truncated, rarely: about 80 at most at the defaults) to 128 rows, ``x_kind="set"``
(``x_discrete`` is empty: the 0/1 mask is structure, not data to dequantise).

Not implemented (optional in the spec): the angular smearing option of the detector and ``free_shower``.

**Tractability.** :math:`p(x \mid \theta)` is intractable (``tractable=False``), but the joint
:math:`\log p(x, z \mid \theta)` is exact (:meth:`Collider.joint_log_prob`, differentiable in :math:`\theta` by
torch autograd, for the joint score and ratio of "mining gold", Brehmer et al. 2020). ``level="parton_smeared"``
is the exact variant: :math:`x = m_{obs} = \mathrm{JES}\, m\, (1 + 0.05 \xi)`, one event per simulation, likelihood
by quadrature over 4000 mass cells, a 3-D grid reference posterior for ``n_evt`` i.i.d. events
(:class:`Collider`). ``collider_detector`` (:class:`ColliderDetector`) is the detector's per-particle response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from simulators.base import Simulator, box_uniform, register

__all__ = [
    "Collider",
    "ColliderDetector",
    "ColliderLatents",
    "DetectorLatents",
    "LogUniformBox",
    "PartonLatents",
    "ShowerLatents",
    "boost",
    "bw_cdf",
    "bw_log_density",
    "bw_sample",
    "detector_response_log_prob",
    "ginkgo_tree_log_likelihood",
    "jet_summary",
    "smeared_cell_masses",
]

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)

# parton level
M_LO, M_HI = 150.0, 1200.0
PT_MEAN = 20.0
# shower
RHO, LAMBDA_ROOT, LAMBDA, T_CUT, EPS, MAX_DEPTH = 0.5, 10.0, 1.5, 4.0, 1e-3, 64
# detector
ETA_MAX, EFFICIENCY, A_STOCH, B_CONST, E_THR = 2.5, 0.95, 0.5, 0.03, 1.0
# observation
N_MAX, DR_SEED = 128, 1.0
# parton-smeared variant
R_M, N_CELLS = 0.05, 4000
PRIOR_LOW, PRIOR_HIGH = (400.0, 5.0, 0.95), (600.0, 50.0, 1.05)


# ------------------------------------------------------------------------------------------ kinematics


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


def _kallen_sqrt(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    r""":math:`\sqrt{\lambda_K(a, b, c)}` as :math:`\sqrt{(a - (\sqrt b + \sqrt c)^2)(a - (\sqrt b - \sqrt c)^2)}`."""
    sb, sc = b.sqrt(), c.sqrt()
    return ((a - (sb + sc) ** 2) * (a - (sb - sc) ** 2)).clamp_min(0).sqrt()


def _eta_phi(p4: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(p_T, η, φ)`` of ``p4 [..., 4]``."""
    pt = torch.hypot(p4[..., 1], p4[..., 2])
    return pt, torch.asinh(p4[..., 3] / pt), torch.atan2(p4[..., 2], p4[..., 1])


def _wrap(dphi: Tensor) -> Tensor:
    """Wrap an angle difference to (-π, π]."""
    return dphi - 2 * math.pi * torch.ceil((dphi - math.pi) / (2 * math.pi))


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


def _trunc_exp_sample(u: Tensor, lam: float) -> Tensor:
    return -torch.log1p(-u * (-math.expm1(-lam * (1 - EPS)))) / lam


def _trunc_exp_log_density(t: Tensor, s: Tensor, lam: float) -> Tensor:
    r""":math:`\log f_\lambda(t; s)`, ``-inf`` outside :math:`0 \le t < (1 - \epsilon) s`."""
    log_f = math.log(lam) - lam * t / s - torch.log(s) - math.log(-math.expm1(-lam * (1 - EPS)))
    return torch.where((t >= 0) & (t < (1 - EPS) * s), log_f, -math.inf)


# ------------------------------------------------------------------------------------------ detector


def _sigma_rel(E: Tensor) -> Tensor:
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
    std = mean * _sigma_rel(E)
    in_acc = eta.abs() < ETA_MAX
    z = (e_reco - mean) / std
    log_det = math.log(EFFICIENCY) - 0.5 * z**2 - torch.log(std) - 0.5 * LOG_2PI
    log_det = torch.where(e_reco > E_THR, log_det, -math.inf)
    p_seen = EFFICIENCY * torch.special.ndtr((mean - E_THR) / std)
    log_miss = torch.log1p(-p_seen)
    inside = torch.where(detected, log_det, log_miss)
    outside = torch.where(detected, torch.full_like(inside, -math.inf), torch.zeros_like(inside))
    return torch.where(in_acc, inside, outside)


# ------------------------------------------------------------------------------------------ jets


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
        d_phi = _wrap(phi - phi.gather(1, i[:, None]))
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
    dphi = torch.where(pt2 > 0, _wrap(phi1 - phi2).abs(), 0.0)
    return torch.stack((m_jj, pt1, pt2, eta1, eta2, dphi, m1, m2, n1, n2), -1)


# ------------------------------------------------------------------------------------------- latents


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


# ---------------------------------------------------------------------------------------- simulator


@register("collider")
class Collider(Simulator):
    r"""The parton → shower → detector → jets chain (see the module docstring), :math:`\theta = (M, \Gamma,
    \mathrm{JES})`.

    Args:
        output: ``"summary"`` (default, ``x [n, 10]``) or ``"set"`` (``x [n, 128, 4]``: :math:`p_T, \eta, \phi`,
            mask); full chain only.
        level: ``"full"`` (default; intractable) or ``"parton_smeared"`` (``x [n, 1]`` = :math:`m_{obs}`, one
            event per simulation, exact likelihood, grid reference posterior).
        grid_size: cells per axis of the parton-smeared reference grid (default 64, i.e. 64³).

    ``level="parton_smeared"``: :math:`m_{obs} = \mathrm{JES}\, \bar m\, (1 + r_m \xi)`, :math:`r_m = 0.05`, where
    :math:`\bar m` is the Breit–Wigner mass rounded to the centre of its cell among 4000 equal cells of the
    window (0.26 GeV wide, far below the 5 % resolution). Deviation from the spec, which smears :math:`m` itself:
    with the rounding the quadrature

    .. math::
        p(m_{obs} \mid \theta) = \sum_k P_k(M, \Gamma)\,
        N(m_{obs}; \mathrm{JES}\, \bar m_k, (\mathrm{JES}\, \bar m_k r_m)^2),

    with the exact cell probabilities :math:`P_k = F(m_{k+1}) - F(m_k)` (:func:`smeared_cell_masses`), is the
    exact likelihood of the simulator as implemented, sums to one exactly and is smooth in :math:`\theta`. An
    observation is ``n_evt`` i.i.d. events given as rows ``[n_evt, 1]``; the reference posterior evaluates
    :math:`\sum_j \log p(m_{obs,j} \mid \theta)` at the ``grid_size³`` cell centres of the prior box (one matrix
    product per observation: about 3 s for 64³ and 50 events on one core) and samples a cell plus a uniform
    jitter. An :math:`m_{obs}` so far from every :math:`\mathrm{JES}\, \bar m_k` that all Gaussian terms
    underflow (beyond ~38 standard deviations) gets log-likelihood ``-inf``. The likelihood depends (up to the
    window) on :math:`(\mathrm{JES} M, \mathrm{JES} \Gamma)` only: the JES–M ridge.
    """

    name = "collider"
    parameter_names = ["M", "Gamma", "JES"]
    OUTPUTS = ("summary", "set")
    LEVELS = ("full", "parton_smeared")

    def __init__(self, output: str = "summary", *, level: str = "full", grid_size: int = 64) -> None:
        if output not in self.OUTPUTS:
            raise ValueError(f"collider: output must be one of {self.OUTPUTS}, got {output!r}")
        if level not in self.LEVELS:
            raise ValueError(f"collider: level must be one of {self.LEVELS}, got {level!r}")
        if int(grid_size) != grid_size or grid_size < 2:
            raise ValueError(f"collider: grid_size must be an integer >= 2, got {grid_size!r}")
        if level == "parton_smeared" and output != "summary":
            raise ValueError("collider: level='parton_smeared' observes m_obs only; output applies to level='full'")
        self.output, self.level, self.grid_size = output, level, int(grid_size)
        self.prior = box_uniform(torch.tensor(PRIOR_LOW), torch.tensor(PRIOR_HIGH))
        if level == "parton_smeared":
            self.x_shape, self.x_kind, self.tractable, self.x_discrete = (1,), "vector", True, ()
        elif output == "summary":
            self.x_shape, self.x_kind, self.tractable, self.x_discrete = (10,), "vector", False, (8, 9)
        else:
            self.x_shape, self.x_kind, self.tractable, self.x_discrete = (N_MAX, 4), "set", False, ()

    def __repr__(self) -> str:
        return f"Collider(output={self.output!r}, level={self.level!r}, x_shape={self.x_shape})"

    # ------------------------------------------------------------------------------------ public API

    def __call__(
        self, theta: Any, *, generator: torch.Generator | None = None, return_latents: bool = False
    ) -> Tensor | tuple[Tensor, ColliderLatents]:
        r"""Simulate ``x [n, *x_shape]`` (float32); with ``return_latents=True`` (full chain) also the latents
        :class:`ColliderLatents` (float64), whose stages carry :math:`\log p(z_p|\theta)`, :math:`\log p(z_s|z_p)`
        and :math:`\log p(z_d|z_s,\theta)` as ``log_prob``."""
        theta = self._as_theta(theta, torch.float32)
        if not return_latents:
            return self._simulate(theta, generator).to(torch.float32)
        if self.level != "full":
            raise ValueError("collider: return_latents=True needs level='full'")
        x, z = self._chain(theta.to(F64), generator)
        return x.to(torch.float32), z

    def parton(self, theta: Any, *, generator: torch.Generator | None = None) -> PartonLatents:
        """Parton-level latents :math:`z_p \\sim p(z_p \\mid \\theta)` for ``theta [B, 3]``."""
        theta = self._as_theta(theta, F64)
        self._check_theta(theta)
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
        n = _axis(cos_theta, phi_star)
        half = (m / 2)[:, None]
        rest = torch.stack((torch.cat((half, half * n), -1), torch.cat((half, -half * n), -1)), 1)
        partons = boost(rest, p_x[:, None], m[:, None])
        z_p = PartonLatents(m, y, pt, phi, cos_theta, phi_star, p_x, partons, torch.zeros(B, dtype=F64))
        z_p.log_prob = self.parton_log_prob(theta, z_p)
        return z_p

    @staticmethod
    def parton_log_prob(theta: Tensor, z_p: PartonLatents) -> Tensor:
        r""":math:`\log p(z_p \mid \theta)` ``[B]``, differentiable in ``theta [B, 3]`` (float64)."""
        theta = torch.as_tensor(theta, dtype=F64)
        log_m = bw_log_density(z_p.m, theta[:, 0], theta[:, 1])
        log_y = -0.5 * z_p.y**2 - 0.5 * LOG_2PI
        log_pt = torch.where(z_p.pt >= 0, -math.log(PT_MEAN) - z_p.pt / PT_MEAN, -math.inf)
        return log_m + log_y + log_pt - 2 * LOG_2PI - math.log(2)

    def shower(self, z_p: PartonLatents, *, generator: torch.Generator | None = None) -> ShowerLatents:
        """Shower both partons of every event with a level-synchronous frontier (see the module docstring)."""
        B = len(z_p.m)
        m = z_p.m
        s0 = (RHO * m / 2) ** 2
        r_root = _trunc_exp_sample(torch.rand(B, 2, dtype=F64, generator=generator), LAMBDA_ROOT)
        t_root = s0[:, None] * r_root
        n = _axis(z_p.cos_theta, z_p.phi_star)
        t1, t2 = t_root[:, 0], t_root[:, 1]
        q = _kallen_sqrt(m**2, t1, t2) / (2 * m)
        e1, e2 = (m**2 + t1 - t2) / (2 * m), (m**2 + t2 - t1) / (2 * m)
        jets = boost(_back_to_back(e1, e2, q, n), z_p.p_x[:, None], m[:, None])

        # generation 0: the jet roots, interleaved per event
        gens = {
            "event": [torch.arange(B).repeat_interleave(2)],
            "jet": [torch.tensor([0, 1]).repeat(B)],
            "parent": [torch.full((2 * B,), -1, dtype=torch.long)],
            "t": [t_root.reshape(-1)],
            "r": [r_root.reshape(-1)],
            "scale": [s0.repeat_interleave(2)],
            "first": [torch.ones(2 * B, dtype=torch.bool)],
            "p4": [jets.reshape(-1, 4)],
            "depth": [torch.zeros(2 * B, dtype=torch.long)],
        }
        split_idx, split_children, split_flip, split_dir = [], [], [], []
        start, size, depth = 0, 2 * B, 0
        forced = torch.zeros(0, dtype=torch.long)
        while True:
            t_gen = gens["t"][-1]
            frontier = torch.nonzero(t_gen > T_CUT).squeeze(1)
            if len(frontier) == 0:
                break
            if depth == MAX_DEPTH:
                forced = start + frontier
                break
            parents = start + frontier
            t_p, p_p = t_gen[frontier], gens["p4"][-1][frontier]
            k = len(frontier)
            u = torch.rand(k, 2, dtype=F64, generator=generator)
            r_a, r_b = _trunc_exp_sample(u[:, 0], LAMBDA), _trunc_exp_sample(u[:, 1], LAMBDA)
            t_a = t_p * r_a
            s_b = (t_p.sqrt() - t_a.sqrt()) ** 2
            t_b = s_b * r_b
            flip = torch.rand(k, dtype=F64, generator=generator) < 0.5  # True: the first-drawn child is right
            direction = torch.randn(k, 3, dtype=F64, generator=generator)
            direction = direction / direction.norm(dim=-1, keepdim=True)
            t_l, t_r = torch.where(flip, t_b, t_a), torch.where(flip, t_a, t_b)
            m_p = t_p.sqrt()
            e_l, e_r = (t_p + t_l - t_r) / (2 * m_p), (t_p + t_r - t_l) / (2 * m_p)
            q = _kallen_sqrt(t_p, t_l, t_r) / (2 * m_p)
            children = boost(
                _back_to_back(e_l, e_r, q, direction), p_p[:, None], m_p[:, None]
            )  # [k, 2, 4]: left, right
            new_start = start + size
            split_idx.append(parents)
            split_children.append(new_start + 2 * torch.arange(k)[:, None] + torch.tensor([0, 1]))
            split_flip.append(flip)
            split_dir.append(direction)
            gens["event"].append(gens["event"][-1][frontier].repeat_interleave(2))
            gens["jet"].append(gens["jet"][-1][frontier].repeat_interleave(2))
            gens["parent"].append(parents.repeat_interleave(2))
            gens["t"].append(torch.stack((t_l, t_r), 1).reshape(-1))
            gens["r"].append(torch.stack((torch.where(flip, r_b, r_a), torch.where(flip, r_a, r_b)), 1).reshape(-1))
            gens["scale"].append(torch.stack((torch.where(flip, s_b, t_p), torch.where(flip, t_p, s_b)), 1).reshape(-1))
            gens["first"].append(torch.stack((~flip, flip), 1).reshape(-1))
            gens["p4"].append(children.reshape(-1, 4))
            gens["depth"].append(torch.full((2 * k,), depth + 1, dtype=torch.long))
            start, size, depth = new_start, 2 * k, depth + 1

        table = {key: torch.cat(value) for key, value in gens.items()}
        N = len(table["t"])
        children = torch.full((N, 2), -1, dtype=torch.long)
        flips = torch.zeros(N, dtype=torch.bool)
        directions = torch.zeros(N, 3, dtype=F64)
        if split_idx:
            idx = torch.cat(split_idx)
            children[idx] = torch.cat(split_children)
            flips[idx] = torch.cat(split_flip)
            directions[idx] = torch.cat(split_dir)
        is_leaf = children[:, 0] < 0
        forced_leaf = torch.zeros(N, dtype=torch.bool)
        forced_leaf[forced] = True

        # sort by event (stable: generation order within an event) and remap the links
        perm = torch.argsort(table["event"], stable=True)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(N)

        def remap(index: Tensor) -> Tensor:
            return torch.where(index >= 0, inverse[index.clamp_min(0)], index)

        counts = torch.bincount(table["event"], minlength=B)
        offsets = torch.cat((torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)))
        z_s = ShowerLatents(
            event=table["event"][perm],
            jet=table["jet"][perm],
            parent=remap(table["parent"][perm]),
            children=remap(children[perm]),
            depth=table["depth"][perm],
            t=table["t"][perm],
            r=table["r"][perm],
            scale=table["scale"][perm],
            first=table["first"][perm],
            flip=flips[perm],
            direction=directions[perm],
            p4=table["p4"][perm],
            is_leaf=is_leaf[perm],
            forced_leaf=forced_leaf[perm],
            offsets=offsets,
            log_prob=torch.zeros(B, dtype=F64),
        )
        z_s.log_prob = self.shower_log_prob(z_p, z_s)
        return z_s

    @staticmethod
    def shower_log_prob(z_p: PartonLatents, z_s: ShowerLatents) -> Tensor:
        r""":math:`\log p(z_s \mid z_p)` ``[B]`` from the node masses alone (the scales are recomputed from the
        parents and siblings, not read from ``z_s.scale``)."""
        B = len(z_p.m)
        root = z_s.parent < 0
        s0 = (RHO * z_p.m / 2) ** 2
        scale = torch.empty_like(z_s.t)
        scale[root] = s0[z_s.event[root]]
        child = ~root
        par = z_s.parent[child]
        t_p = z_s.t[par]
        sibling = torch.where(
            z_s.children[par, 0] == torch.nonzero(child).squeeze(1), z_s.children[par, 1], z_s.children[par, 0]
        )
        t_first_sibling = z_s.t[sibling]
        first = z_s.first[child]
        scale[child] = torch.where(first, t_p, (t_p.sqrt() - t_first_sibling.sqrt()) ** 2)
        log_f = torch.where(
            root,
            _trunc_exp_log_density(z_s.t, scale, LAMBDA_ROOT),
            _trunc_exp_log_density(z_s.t, scale, LAMBDA),
        )
        split = ~z_s.is_leaf
        per_node = log_f - split.to(F64) * math.log(8 * math.pi)  # direction 1/(4π), flip 1/2
        # a split node needs t_P > t_cut, a leaf t <= t_cut (unless forced by the depth cap)
        valid = torch.where(split, z_s.t > T_CUT, (z_s.t <= T_CUT) | z_s.forced_leaf)
        per_node = torch.where(valid, per_node, -math.inf)
        return torch.zeros(B, dtype=F64).index_add(0, z_s.event, per_node)

    def detector(self, z_s: ShowerLatents, theta: Any, *, generator: torch.Generator | None = None) -> DetectorLatents:
        """Detector response to every leaf of ``z_s`` for ``theta [B, 3]`` (only JES enters)."""
        theta = self._as_theta(theta, F64)
        self._check_theta(theta)
        leaves = torch.nonzero(z_s.is_leaf).squeeze(1)
        event = z_s.event[leaves]
        p4 = z_s.p4[leaves]
        energy = p4[:, 0]
        _, eta, phi = _eta_phi(p4)
        in_acc = eta.abs() < ETA_MAX
        efficient = torch.rand(len(leaves), dtype=F64, generator=generator) < EFFICIENCY
        xi = torch.randn(len(leaves), dtype=F64, generator=generator)
        e_reco = theta[event, 2] * energy * (1 + _sigma_rel(energy) * xi)
        detected = in_acc & efficient & (e_reco > E_THR)
        e_reco = torch.where(detected, e_reco, 0.0)
        z_d = DetectorLatents(event, energy, eta, phi, in_acc, detected, e_reco, torch.zeros(len(theta), dtype=F64))
        z_d.log_prob = self.detector_log_prob(theta, z_s, z_d)
        return z_d

    @staticmethod
    def detector_log_prob(theta: Tensor, z_s: ShowerLatents, z_d: DetectorLatents) -> Tensor:
        r""":math:`\log p(z_d \mid z_s, \theta)` ``[B]``, differentiable in ``theta [B, 3]``; the per-leaf terms
        are :func:`detector_response_log_prob` (the leaves' true energies are read from ``z_s``)."""
        theta = torch.as_tensor(theta, dtype=F64)
        energy = z_s.p4[z_s.is_leaf, 0]
        per_leaf = detector_response_log_prob(energy, z_d.eta, theta[z_d.event, 2], z_d.detected, z_d.e_reco)
        return torch.zeros(len(theta), dtype=per_leaf.dtype).index_add(0, z_d.event, per_leaf)

    def observe(self, z_d: DetectorLatents, n_events: int) -> Tensor:
        """``x`` from the detector latents (deterministic): ``[B, 10]`` summary or ``[B, 128, 4]`` set."""
        pt, eta, phi, mask = _padded_particles(z_d, n_events)
        if self.output == "summary":
            return jet_summary(pt, eta, phi, mask)
        x = torch.stack((pt, eta, phi, mask.to(F64)), -1)[:, :N_MAX]
        if x.shape[1] < N_MAX:
            x = torch.cat((x, x.new_zeros(len(x), N_MAX - x.shape[1], 4)), 1)
        return x

    def joint_log_prob(self, theta: Any, x: Any, z: ColliderLatents) -> Tensor:
        r""":math:`\log p(x, z \mid \theta) = \log p(z_p|\theta) + \log p(z_s|z_p) + \log p(z_d|z_s,\theta)` ``[B]``
        (float64), differentiable in ``theta`` (pass a tensor with ``requires_grad``).

        ``x`` is a deterministic function of :math:`z_d` (:math:`p(x|z_d)` is a delta): rows where ``x``
        differs from ``observe(z_d)`` (beyond float32 rounding) get ``-inf``.
        """
        if self.level != "full":
            raise ValueError("collider: joint_log_prob needs level='full'")
        theta = torch.as_tensor(theta)
        theta = theta.to(F64) if theta.dtype != F64 else theta
        if theta.ndim != 2 or theta.shape[1] != 3:
            raise ValueError(f"collider: expected theta of shape [n, 3], got {list(theta.shape)}")
        x = self._as_x(x)
        B = len(z.parton.m)
        if len(theta) != B or len(x) != B:
            raise ValueError(f"collider: theta ({len(theta)} rows), x ({len(x)}) and z ({B} events) must agree")
        expected = self.observe(z.detector, B).to(torch.float32).to(F64)
        consistent = torch.isclose(x, expected, rtol=1e-6, atol=1e-5).flatten(1).all(1)
        log_p = (
            self.parton_log_prob(theta, z.parton)
            + self.shower_log_prob(z.parton, z.shower)
            + self.detector_log_prob(theta, z.shower, z.detector)
        )
        return torch.where(consistent, log_p, -math.inf)

    # ------------------------------------------------------------------------------------- internals

    @staticmethod
    def _check_theta(theta: Tensor) -> None:
        if not (torch.isfinite(theta).all() and (theta[:, 0] > 0).all() and (theta[:, 1] > 0).all()):
            raise ValueError("collider: theta must be finite with M > 0 and Gamma > 0")
        if not (theta[:, 2] > 0).all():
            raise ValueError("collider: theta must have JES > 0")

    def _chain(self, theta: Tensor, generator: torch.Generator | None) -> tuple[Tensor, ColliderLatents]:
        z_p = self.parton(theta, generator=generator)
        z_s = self.shower(z_p, generator=generator)
        z_d = self.detector(z_s, theta, generator=generator)
        return self.observe(z_d, len(theta)), ColliderLatents(z_p, z_s, z_d)

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        theta = theta.to(F64)
        if self.level == "full":
            return self._chain(theta, generator)[0]
        self._check_theta(theta)
        M, Gamma, jes = theta[:, 0], theta[:, 1], theta[:, 2]
        m = bw_sample(torch.rand(len(theta), dtype=F64, generator=generator), M, Gamma)
        m_bar = _cell_centres()[_cell_index(m)]
        xi = torch.randn(len(theta), dtype=F64, generator=generator)
        return (jes * m_bar * (1 + R_M * xi))[:, None]

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        self._check_theta(theta)
        parts = []
        for i in range(0, len(theta), 1024):  # [rows, N_CELLS] work arrays
            P = smeared_cell_masses(theta[i : i + 1024, 0], theta[i : i + 1024, 1])
            K = _smearing_kernel(x[i : i + 1024, 0], theta[i : i + 1024, 2])
            parts.append(torch.log((P * K).sum(-1)))
        return torch.cat(parts) if parts else theta.new_zeros(0)

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        if self.level != "parton_smeared":
            raise NotImplementedError(
                "collider: no exact reference posterior for the full chain (p(x|θ) is intractable); "
                "use level='parton_smeared'"
            )
        G = self.grid_size
        axes = _grid_axes(G)
        P = _grid_cell_masses(G)  # [G², N_CELLS] over (M, Gamma)
        out = []
        for obs in x:  # obs [m, 1]
            m_obs = obs[:, 0]
            # kernel columns (event j, JES c): N(m_obs_j; c m̄_k, (c m̄_k r)²)
            K = _smearing_kernel(m_obs[:, None].expand(-1, G).reshape(-1), axes[2].repeat(len(m_obs)))
            log_l = torch.log(P @ K.T)  # [G², m * G]
            log_l = log_l.reshape(G, G, len(m_obs), G).sum(2)  # [M, Gamma, JES]
            flat = log_l.reshape(-1)
            if not torch.isfinite(flat.amax()):
                raise ValueError("collider: the observation has zero likelihood on the whole grid")
            cells = torch.multinomial(torch.softmax(flat, 0), num_samples, replacement=True, generator=generator)
            index = torch.stack((cells // (G * G), (cells // G) % G, cells % G), -1).to(F64)
            low = torch.tensor(PRIOR_LOW, dtype=F64)
            width = (torch.tensor(PRIOR_HIGH, dtype=F64) - low) / G
            out.append(low + width * (index + torch.rand(num_samples, 3, dtype=F64, generator=generator)))
        return torch.stack(out)


def _back_to_back(e_1: Tensor, e_2: Tensor, q: Tensor, n: Tensor) -> Tensor:
    """Rest-frame 4-vectors ``[k, 2, 4]``: ``(e_1, q n)`` and ``(e_2, -q n)`` for ``[k]`` energies, ``n [k, 3]``."""
    q_n = q[:, None] * n
    return torch.stack((torch.cat((e_1[:, None], q_n), -1), torch.cat((e_2[:, None], -q_n), -1)), 1)


def _axis(cos_theta: Tensor, phi: Tensor) -> Tensor:
    sin_theta = (1 - cos_theta**2).clamp_min(0).sqrt()
    return torch.stack((sin_theta * torch.cos(phi), sin_theta * torch.sin(phi), cos_theta), -1)


def _padded_particles(z_d: DetectorLatents, n_events: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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


def ginkgo_tree_log_likelihood(z_s: ShowerLatents, lam: float = LAMBDA, t_cut: float = T_CUT) -> Tensor:
    r"""Ginkgo's ordering-marginalised tree likelihood (``split_logLH_with_stop_nonstop_prob`` of
    ``SebastianMacaluso/ginkgo``, ``likelihood_invM.py``), summed over the jets of each event, ``[B]``.

    For compatibility with Ginkgo-based tools; it is not :math:`\log p(z_s \mid z_p)` (it integrates out the
    leaf masses and the draw order, and ignores the jet-mass stage). With :math:`t` from the node 4-momenta,
    every internal node contributes

    .. math::
        \log \tfrac{1}{4\pi} + \log \tfrac12 \big[p(t_L|t_P)\, p(t_R|(\sqrt{t_P} - \sqrt{t_L})^2)
        + p(t_R|t_P)\, p(t_L|(\sqrt{t_P} - \sqrt{t_R})^2)\big],

    :math:`p(t|s) = \lambda e^{-\lambda t/s} / (s (1 - e^{-\lambda(1-\epsilon)}))` for an internal child, and for
    a leaf child its stop probability :math:`(1 - e^{-\lambda \min(s, t_{cut})/s}) / (1 - e^{-\lambda(1-\epsilon)})`.
    A factor is :math:`-\infty` if :math:`t_P \le t_{cut}`, a child has :math:`t \ge (1-\epsilon) t_P` or
    :math:`\sqrt{t_L} + \sqrt{t_R} > \sqrt{t_P}`.
    """
    p4 = z_s.p4
    t = (p4[:, 0] ** 2 - (p4[:, 1:] ** 2).sum(-1)).clamp_min(0)
    split = torch.nonzero(~z_s.is_leaf).squeeze(1)
    left, right = z_s.children[split, 0], z_s.children[split, 1]
    t_p, t_l, t_r = t[split], t[left], t[right]
    leaf_l, leaf_r = z_s.is_leaf[left], z_s.is_leaf[right]
    norm = -math.log(-math.expm1(-lam * (1 - EPS)))

    def log_child(t_c: Tensor, s: Tensor, leaf: Tensor) -> Tensor:
        log_inner = math.log(lam) - lam * t_c / s - torch.log(s) + norm
        log_stop = torch.log(-torch.expm1(-lam * torch.minimum(s, torch.full_like(s, t_cut)) / s)) + norm
        return torch.where(leaf, log_stop, log_inner)

    s_r = (t_p.sqrt() - t_l.sqrt()) ** 2
    s_l = (t_p.sqrt() - t_r.sqrt()) ** 2
    order_lr = log_child(t_l, t_p, leaf_l) + log_child(t_r, s_r, leaf_r)
    order_rl = log_child(t_r, t_p, leaf_r) + log_child(t_l, s_l, leaf_l)
    factor = torch.logaddexp(order_lr, order_rl) - math.log(2) - math.log(4 * math.pi)
    bad = (t_p <= t_cut) | (torch.maximum(t_l, t_r) >= (1 - EPS) * t_p) | (t_l.sqrt() + t_r.sqrt() > t_p.sqrt())
    factor = torch.where(bad, -math.inf, factor)
    n_events = len(z_s.offsets) - 1
    return torch.zeros(n_events, dtype=F64).index_add(0, z_s.event[split], factor)


# ----------------------------------------------------------------------------- parton-smeared pieces


def _cell_edges() -> Tensor:
    return torch.linspace(M_LO, M_HI, N_CELLS + 1, dtype=F64)


def _cell_centres() -> Tensor:
    edges = _cell_edges()
    return 0.5 * (edges[1:] + edges[:-1])


def _cell_index(m: Tensor) -> Tensor:
    return ((m - M_LO) / ((M_HI - M_LO) / N_CELLS)).floor().long().clamp(0, N_CELLS - 1)


def smeared_cell_masses(M: Tensor, Gamma: Tensor) -> Tensor:
    r"""Exact Breit–Wigner probabilities of the 4000 mass cells, :math:`P_k = F(m_{k+1}) - F(m_k)`,
    ``[B, 4000]`` for ``M, Gamma [B]`` (differentiable; rows sum to 1)."""
    return torch.diff(bw_cdf(_cell_edges(), M[:, None], Gamma[:, None]), dim=-1)


def _smearing_kernel(m_obs: Tensor, jes: Tensor) -> Tensor:
    r""":math:`N(m_{obs}; \mathrm{JES}\,\bar m_k, (\mathrm{JES}\,\bar m_k r_m)^2)`, ``[B, 4000]`` for ``[B]`` inputs."""
    mean = jes[:, None] * _cell_centres()
    std = R_M * mean
    return torch.exp(-0.5 * ((m_obs[:, None] - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _grid_axes(G: int) -> list[Tensor]:
    centres = torch.arange(G, dtype=F64) + 0.5
    return [lo + (hi - lo) / G * centres for lo, hi in zip(PRIOR_LOW, PRIOR_HIGH, strict=True)]


@lru_cache(maxsize=2)
def _grid_cell_masses(G: int) -> Tensor:
    """:func:`smeared_cell_masses` at the ``G²`` (M, Gamma) grid centres, ``[G², 4000]`` (M-major)."""
    M, Gamma = torch.meshgrid(_grid_axes(G)[0], _grid_axes(G)[1], indexing="ij")
    return smeared_cell_masses(M.reshape(-1), Gamma.reshape(-1))


# -------------------------------------------------------------------------------------- detector alone


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


@register("collider_detector")
class ColliderDetector(Simulator):
    r"""The collider chain's detector response to one particle, :math:`\theta = (E, \eta, \mathrm{JES})`.

    Prior (:class:`LogUniformBox`): :math:`E` log-uniform on [1, 500] GeV, :math:`\eta \sim U[-3, 3]` (so part of
    the prior lies outside the acceptance :math:`|\eta| < 2.5`), :math:`\mathrm{JES} \sim U[0.95, 1.05]` (the
    chain's prior). Output :math:`x = (d, E_{reco} \cdot d)` with :math:`d \in \{0, 1\}` (dimension 0 is
    ``x_discrete``): :math:`d = 1` iff the particle is in the acceptance, passes the efficiency and
    :math:`E_{reco} = \mathrm{JES} E (1 + \sigma(E) \xi) > 1` GeV. Exact likelihood
    (:func:`detector_response_log_prob`, the function the chain uses): a probability for :math:`d = 0`
    (requires :math:`x_1 = 0`) and a density in :math:`x_1` for :math:`d = 1`. No reference posterior.
    """

    name = "collider_detector"
    parameter_names = ["E", "eta", "JES"]
    x_shape = (2,)
    x_kind = "vector"
    tractable = True
    x_discrete = (0,)

    def __init__(self) -> None:
        self.prior = LogUniformBox([1.0, -3.0, 0.95], [500.0, 3.0, 1.05], [True, False, False])

    @staticmethod
    def _check(theta: Tensor) -> None:
        if not (torch.isfinite(theta).all() and (theta[:, 0] > 0).all() and (theta[:, 2] > 0).all()):
            raise ValueError("collider_detector: theta must be finite with E > 0 and JES > 0")

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        theta = theta.to(F64)
        self._check(theta)
        E, eta, jes = theta.unbind(-1)
        efficient = torch.rand(len(theta), dtype=F64, generator=generator) < EFFICIENCY
        xi = torch.randn(len(theta), dtype=F64, generator=generator)
        e_reco = jes * E * (1 + _sigma_rel(E) * xi)
        detected = (eta.abs() < ETA_MAX) & efficient & (e_reco > E_THR)
        return torch.stack((detected.to(F64), torch.where(detected, e_reco, 0.0)), -1)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        self._check(theta)
        d = x[:, 0]
        valid = ((d == 0) & (x[:, 1] == 0)) | (d == 1)
        log_p = detector_response_log_prob(theta[:, 0], theta[:, 1], theta[:, 2], d == 1, x[:, 1])
        return torch.where(valid, log_p, -math.inf)
