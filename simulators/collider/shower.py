r"""The shower :math:`z_s \sim p(z_s \mid z_p)` of the collider chain, its exact log-density and Ginkgo's tree
likelihood.

Ginkgo's invariant-mass shower (Cranmer, Macaluso & Pappadopulo) adapted as in the project spec. Jet virtualities
:math:`t_i = s_0 r_i`, :math:`s_0 = (\rho m / 2)^2`,
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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulators.collider.constants import EPS, F64, LAMBDA, LAMBDA_ROOT, MAX_DEPTH, RHO, T_CUT
from simulators.collider.distributions import trunc_exp_log_density, trunc_exp_sample
from simulators.collider.kinematics import axis, back_to_back, boost, kallen_sqrt
from simulators.collider.latents import PartonLatents, ShowerLatents

__all__ = ["ginkgo_tree_log_likelihood", "sample_shower", "shower_log_prob"]


def sample_shower(z_p: PartonLatents, generator: torch.Generator | None = None) -> ShowerLatents:
    """Shower both partons of every event with a level-synchronous frontier (see :mod:`simulators.collider.shower`)."""
    B = len(z_p.m)
    m = z_p.m
    s0 = (RHO * m / 2) ** 2
    r_root = trunc_exp_sample(torch.rand(B, 2, dtype=F64, generator=generator), LAMBDA_ROOT)
    t_root = s0[:, None] * r_root
    n = axis(z_p.cos_theta, z_p.phi_star)
    t1, t2 = t_root[:, 0], t_root[:, 1]
    q = kallen_sqrt(m**2, t1, t2) / (2 * m)
    e1, e2 = (m**2 + t1 - t2) / (2 * m), (m**2 + t2 - t1) / (2 * m)
    jets = boost(back_to_back(e1, e2, q, n), z_p.p_x[:, None], m[:, None])

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
        r_a, r_b = trunc_exp_sample(u[:, 0], LAMBDA), trunc_exp_sample(u[:, 1], LAMBDA)
        t_a = t_p * r_a
        s_b = (t_p.sqrt() - t_a.sqrt()) ** 2
        t_b = s_b * r_b
        flip = torch.rand(k, dtype=F64, generator=generator) < 0.5  # True: the first-drawn child is right
        direction = torch.randn(k, 3, dtype=F64, generator=generator)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        t_l, t_r = torch.where(flip, t_b, t_a), torch.where(flip, t_a, t_b)
        m_p = t_p.sqrt()
        e_l, e_r = (t_p + t_l - t_r) / (2 * m_p), (t_p + t_r - t_l) / (2 * m_p)
        q = kallen_sqrt(t_p, t_l, t_r) / (2 * m_p)
        children = boost(
            back_to_back(e_l, e_r, q, direction), p_p[:, None], m_p[:, None]
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
    z_s.log_prob = shower_log_prob(z_p, z_s)
    return z_s


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
        trunc_exp_log_density(z_s.t, scale, LAMBDA_ROOT),
        trunc_exp_log_density(z_s.t, scale, LAMBDA),
    )
    split = ~z_s.is_leaf
    per_node = log_f - split.to(F64) * math.log(8 * math.pi)  # direction 1/(4π), flip 1/2
    # a split node needs t_P > t_cut, a leaf t <= t_cut (unless forced by the depth cap)
    valid = torch.where(split, z_s.t > T_CUT, (z_s.t <= T_CUT) | z_s.forced_leaf)
    per_node = torch.where(valid, per_node, -math.inf)
    return torch.zeros(B, dtype=F64).index_add(0, z_s.event, per_node)


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

