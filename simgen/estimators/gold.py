r"""Training on gold: the score term that SCANDAL adds to a density estimator's loss and RASCAL/ALICES to a ratio
estimator's, and the ratio term of RASCAL/ALICES (Brehmer, Louppe, Pavez & Cranmer 2020, PNAS 117, 5242,
arXiv:1805.12244; gold from :mod:`simgen.campaign.gold`).

The joint score t(x, z | θ) = ∇_θ log p(x, z | θ) of a simulation is an unbiased, noisy observation of the
intractable score: E[t | x, θ] = ∇_θ log p(x | θ). So, among functions of (θ, x), the squared error
E‖g(θ, x) − t‖² is smallest at g = ∇_θ log p(x | θ), and adding

.. math:: \alpha\, E \sum_j \Big(\frac{\partial_{\theta_j} \log \hat p(\cdot) - t_{target,j}}{\sigma_j}\Big)^2

to the estimator's loss pulls its θ-gradient towards the true score without moving its optimum (the exact model
makes the term's expectation minimal, and zero without latents). The target is t itself for a likelihood
q(x | θ) and for a ratio's logit f(θ, x) = log p(x | θ) − log p(x) (+ c(x) for NRE-B: its θ-gradient is still the
score); for a posterior q(θ | x) it is t + ∇_θ log p(θ), since ∇_θ log p(θ | x) = ∇_θ log p(x | θ) + ∇_θ log
p(θ). σ_j is the standard deviation of the joint score's component j over the training rows: each component
counts alike whatever θ's units (a noisy component would otherwise drown an informative one), the term's
irreducible part (the latents' noise) is at most 1 per component, and ``gold_weight`` α is comparable across
problems. ∇_θ is taken by autograd (a second backward pass in training).

Each standardised error r_j = (∂_θj log p̂ − t_target,j)/σ_j counts as r_j² up to |r_j| = δ
(:data:`SCORE_HUBER_DELTA` = 5) and as 2δ|r_j| − δ² beyond: Huber's loss (Huber 1964), whose gradient in the
model's score is bounded. Where the joint score's noise about the true score stays within δ standard deviations
the minimiser is unchanged; where the model's θ-gradient is far off on a few rows — early in training, or far in
x's tails, where a flow's θ-dependence is least constrained — the squared error's gradient grows with the error,
and those rows would take nearly all of each clipped step and throw the density off course.

Only families whose ``log_prob`` is exact and differentiable (``log_prob_kind == "exact"``: flows, MNLE, map
flows) train on gold: a CNF's or diffusion's log-density is an ODE solve and a VAE's an importance estimate, too
costly or too noisy to differentiate at every step.

**The ratio term** (RASCAL's and ALICES's ratio regression, for :class:`~simgen.RatioEstimator` only). A ratio
estimator's logit f(θ, x) estimates log p(x | θ) − c(x) for every variant (c(x) = log p(x) for NRE-A/C and BNRE,
an unknown x-dependent constant for NRE-B), so the difference g(θ, x) = f(θ_ref, x) − f(θ, x) estimates
log p(x | θ_ref)/p(x | θ) with c(x) cancelled. Each simulation x, z ~ p(· | θ) carries the joint log ratio
L = log p(x, z | θ) − log p(x, z | θ_ref) (:func:`simgen.campaign.joint_gold`), and s = e^{−L} =
p(x, z | θ_ref)/p(x, z | θ) is an unbiased observation of the intractable ratio:

.. math:: E[s \mid x, \theta] = \int \frac{p(x, z \mid \theta_{ref})}{p(x, z \mid \theta)}\,
    p(z \mid x, \theta)\, dz = \frac{p(x \mid \theta_{ref})}{p(x \mid \theta)} =: R(x).

(Its inverse e^{L} is *not* unbiased for 1/R with x drawn at θ — that needs x drawn at θ_ref, which a campaign
drawn from the prior does not have — so RASCAL's inverse-ratio regression and ALICE's soft-label cross-entropy,
which mix data drawn at both hypotheses, do not apply here.) The term is the cross-entropy of telling θ's data
(label 0) from θ_ref's (label 1) with the classifier σ(g), θ_ref's data reached by importance weighting θ's with s
(E_{x∼θ_ref}[h(x)] = E_{x,z∼θ}[s h(x)], exactly):

.. math:: \ell(g, s) = \mathrm{softplus}(g) + s\, \mathrm{softplus}(-g) - \big[\mathrm{softplus}(\log s)
    + s\, \mathrm{softplus}(-\log s)\big],

the bracket (free of the model) making ℓ ≥ 0, zero at g = log s: ℓ is the Bregman divergence of the convex
φ(u) = u log u − (1 + u) log(1 + u) between s and e^g. Given (θ, x), the model's part of E[ℓ | θ, x] depends
on z only through E[s | x, θ] = R (it is affine in s; the bracket does not involve the model), and its
derivative in g, σ(g) − R σ(−g), vanishes only at g = log R, where it is minimal (strictly convex in g). So the
population minimiser is the true log ratio, the term does not move the classifier's optimum, and its expectation
at the exact model is the latents' irreducible spread alone (zero without latents). Why this form and not the
squared error (e^g − s)² of ROLR/RASCAL, whose minimiser is also R: s is heavy-tailed (a row more probable under
θ_ref than under θ has s ≫ R), and the squared error's gradient in g, 2 (e^g − s) e^g, grows with both s and the
model's ratio; this one's, σ(g) − s σ(−g), lies between −s and 1 whatever the model, and at the solution it is
(R − s)/(1 + R), of size about min(s, s/R) for large s, so neither tail of R dominates a batch. Mean over rows
and the k references; log s is clamped to ±80 only to stay finite in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..training import TrainingConfig

__all__ = [
    "GOLD_MODES", "DENSITY_GOLD_MODES", "DEFAULT_GOLD_WEIGHT", "GOLD_LEARNING_RATE", "GOLD_MAX_BATCH_SIZE",
    "GOLD_START_MARGIN", "GOLD_START_PATIENCE", "gold_training_defaults", "gold_terms", "check_gold_options",
    "check_gold_rows",
    "check_log_ratio_rows", "score_term", "SCORE_HUBER_DELTA", "ratio_term", "GoldObjective", "score_scale",
    "elementwise_jacobian",
]

#: what an estimator's ``gold=`` may be: ``"score"`` (SCANDAL / the score term of RASCAL and ALICES), ``"ratio"``
#: (the ratio term, RatioEstimator only) or ``"ratio+score"`` (both: RASCAL / ALICES)
GOLD_MODES = ("score", "ratio", "ratio+score")
#: the modes of a density estimator (likelihood, posterior): the ratio term compares a ratio estimator's logits
DENSITY_GOLD_MODES = ("score",)

#: log s = −(joint log ratio) is clamped to ±this in the ratio term, only to keep e^{log s} finite in float32
_LOG_RATIO_CLAMP = 80.0

#: the score term's default weight α: the README's "Mining gold" section has the measurements behind it
DEFAULT_GOLD_WEIGHT = 0.2

#: the score term's errors count quadratically up to this many standard deviations of the joint score and
#: linearly beyond (Huber's loss, :func:`score_term`): the joint score's own noise about the true score rarely
#: reaches it, while a model whose θ-gradient is far off on a few rows (early in training, far in x's tails) would
#: otherwise put nearly all of a step's clipped gradient into those rows
SCORE_HUBER_DELTA = 5.0

#: the largest default learning rate and batch of a gold-trained estimator: the score term is a second-order
#: objective (its gradient goes through ∇_θ of the model), which the flows' larger default steps (and their scaling
#: up with large batches) can throw off course; settings given explicitly are used as they are
GOLD_LEARNING_RATE, GOLD_MAX_BATCH_SIZE = 2e-3, 512

#: the smallest default start patience of a gold-trained estimator, and its start margin in nats per row
#: (``TrainingConfig.start_patience``, ``start_margin``: the early-stopping patience while the validation loss has
#: not yet fallen below the first epoch's by more than the margin). A fit leaving its start (the least-squares
#: linear-Gaussian fit a flow begins from) can see its validation loss rise or stay level for many epochs before it
#: drops; a short patience stops it there, and restarts send it back, while a long patience after the start costs
#: the fits that left it at once. The margin is about the noise of a mean log-likelihood over a few hundred
#: validation rows, so that level wandering on the start does not count as leaving it. The README's "Mining gold"
#: section has the measurements behind both
GOLD_START_PATIENCE, GOLD_START_MARGIN = 30, 0.05


def gold_training_defaults(defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` (a family's training settings) with the learning rate capped at :data:`GOLD_LEARNING_RATE`,
    the automatic batch at :data:`GOLD_MAX_BATCH_SIZE` (so that the learning rate is not scaled up), the
    start patience raised to at least :data:`GOLD_START_PATIENCE` with a start margin of at least
    :data:`GOLD_START_MARGIN`, and ``restart_on_decay``
    (:class:`~simgen.training.TrainingConfig`): a step that throws the density off course (the score term's
    gradient goes through ∇_θ of the model) is undone when the schedule next lowers the rate, instead of early
    stopping keeping the state before it."""
    base = TrainingConfig()   # the trainer's own defaults, for settings the family leaves out
    return {**defaults,
            "learning_rate": min(float(defaults.get("learning_rate", base.learning_rate)), GOLD_LEARNING_RATE),
            "max_batch_size": min(int(defaults.get("max_batch_size", base.max_batch_size)), GOLD_MAX_BATCH_SIZE),
            "start_patience": max(int(defaults.get("start_patience") or defaults.get("patience", base.patience)),
                                  GOLD_START_PATIENCE),
            "start_margin": max(float(defaults.get("start_margin", base.start_margin)), GOLD_START_MARGIN),
            "restart_on_decay": True}


def gold_terms(gold: str | None) -> tuple[bool, bool]:
    """``(score, ratio)``: whether the ``gold=`` mode trains the score term and the ratio term."""
    return gold in ("score", "ratio+score"), gold in ("ratio", "ratio+score")


def check_gold_options(gold: Any, gold_weight: Any, modes: tuple[str, ...] = GOLD_MODES
                       ) -> tuple[str | None, float]:
    """``(gold, gold_weight)`` checked: ``gold`` ``None`` or one of ``modes`` (a ratio mode where only
    :data:`DENSITY_GOLD_MODES` are allowed is refused with the reason), the weight a finite number ≥ 0."""
    if gold is not None and gold in GOLD_MODES and gold not in modes:
        raise ValueError(f"gold={gold!r}: the ratio term regresses a ratio estimator's logit differences "
                         "f(θ_ref, x) − f(θ, x) on the joint log ratio (RASCAL/ALICES); it is implemented for "
                         f"simgen.RatioEstimator. This estimator takes gold in {modes} (SCANDAL) or None")
    if gold is not None and gold not in modes:
        raise ValueError(f"gold must be None or one of {modes}; got {gold!r}")
    if isinstance(gold_weight, bool) or not isinstance(gold_weight, int | float) or not math.isfinite(gold_weight) \
            or gold_weight < 0:
        raise ValueError(f"gold_weight must be a finite number >= 0; got {gold_weight!r}")
    return gold, float(gold_weight)


def check_gold_rows(gold: Any, n: int, d_theta: int) -> Tensor:
    """The joint score ``[n, d_theta]`` (float32) from ``gold`` (the dict ``simulate(..., gold=True)`` returns,
    or the score tensor itself), checked for shape and finiteness."""
    if isinstance(gold, dict):
        if "joint_score" not in gold:
            raise ValueError(f"gold must hold 'joint_score' (simulate(..., gold=True)); got keys {sorted(gold)}")
        gold = gold["joint_score"]
    t = torch.as_tensor(gold, dtype=torch.float32)
    if t.shape != (n, d_theta):
        raise ValueError(f"the joint score must have shape [n, d_theta] = [{n}, {d_theta}] (one row per (θ, x) "
                         f"pair); got {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("the joint score holds NaN or inf rows; remove them (simulate(..., gold=True) drops them)")
    return t


def check_log_ratio_rows(gold: Any, reference: Any, n: int, d_theta: int) -> tuple[Tensor, Tensor]:
    """The joint log ratio ``[n, k]`` (float32) from ``gold`` (the dict ``simulate(..., gold=True,
    gold_reference=...)`` returned) and the references θ_ref ``[k, d_theta]`` (float32) it was mined at, checked:
    shapes, no NaN, and no −inf (a row impossible at the θ it was drawn at); +inf (impossible under θ_ref) is
    allowed."""
    if not isinstance(gold, dict) or "joint_log_ratio" not in gold:
        keys = sorted(gold) if isinstance(gold, dict) else type(gold).__name__
        raise ValueError("the ratio term trains on the joint log ratio: gold must hold 'joint_log_ratio' "
                         f"(simulate(..., gold=True, gold_reference=theta_ref)); got {keys}")
    if reference is None:
        raise ValueError("the ratio term needs the references θ_ref the joint log ratio was mined at: pass "
                         "fit(..., gold_reference=theta_ref), the gold_reference= given to simulate (a store "
                         "records its own)")
    ref = torch.as_tensor(reference, dtype=torch.float32)
    ref = ref[None] if ref.dim() == 1 else ref
    log_ratio = torch.as_tensor(gold["joint_log_ratio"], dtype=torch.float32)
    if ref.dim() != 2 or ref.shape[1] != d_theta or not torch.isfinite(ref).all():
        raise ValueError(f"gold_reference must be finite θ rows [k, {d_theta}]; got shape {list(ref.shape)}")
    if log_ratio.shape != (n, ref.shape[0]):
        raise ValueError(f"the joint log ratio must have shape [n, k] = [{n}, {ref.shape[0]}] (one column per "
                         f"reference row); got {list(log_ratio.shape)}")
    if torch.isnan(log_ratio).any() or (log_ratio == -math.inf).any():
        raise ValueError("the joint log ratio holds NaN or −inf rows; remove them (simulate(..., gold=True) drops "
                         "them)")
    return log_ratio, ref


def ratio_term(g: Tensor, log_ratio: Tensor) -> Tensor:
    r"""Mean over rows and references of the Bregman cross-entropy ℓ(g, s) of the module docstring: g ``[n, k]``
    the model's f(θ_ref, x) − f(θ, x), ``log_ratio`` ``[n, k]`` the joint log ratio L (s = e^{−L}). Zero where
    g = −L; its population minimiser is g = log p(x | θ_ref)/p(x | θ)."""
    log_s = (-log_ratio).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP).to(g.dtype)
    s = log_s.exp()
    term = (F.softplus(g) - F.softplus(log_s)) + s * (F.softplus(-g) - F.softplus(-log_s))
    return term.mean()


def score_scale(score: Tensor) -> Tensor:
    """1 / the joint score's standard deviation per component ``[d]`` (1 where it is 0 or undefined): the units of
    the score term."""
    sd = score.double().std(dim=0) if score.shape[0] > 1 else torch.ones(score.shape[1], dtype=torch.float64)
    return torch.where(torch.isfinite(sd) & (sd > 0), 1.0 / sd, 1.0).float()


def score_term(grad: Tensor, target: Tensor, scale: Tensor, delta: float = SCORE_HUBER_DELTA) -> Tensor:
    r"""Mean over rows of Σ_j ρ_δ(scale_j (grad_j − target_j)), grad and target ``[n, d]``: the score regression
    term (zero where the model's θ-gradient equals the target), ρ_δ Huber's loss (Huber 1964, Ann. Math. Statist.
    35, 73): r² for |r| ≤ δ, 2δ|r| − δ² beyond (``delta=math.inf``: the squared error throughout)."""
    r = ((grad - target) * scale).abs()
    return torch.where(r <= delta, r.square(), 2.0 * delta * r - delta * delta).sum(dim=-1).mean()


class GoldObjective(nn.Module):
    r"""A model's loss plus ``weight`` × (:func:`score_term` and/or :func:`ratio_term`), for
    :func:`simgen.training.train`.

    The trainer serves ``(y, c)`` batches whose θ part (y for a posterior or a ratio, c for a likelihood) carries
    the gold as extra columns: ``[n, d_theta + w]``, the joint score's ``d_theta`` columns first (score term),
    then the joint log ratio's ``k`` (ratio term). This module splits them off, computes the model's own loss on
    the plain rows, the score term from ``log_density(θ, y, c)`` (differentiable in θ) and the ratio term from
    ``log_ratio(model, θ, x, reference)``.

    Args:
        model: the density or classifier being trained (its parameters are this module's).
        theta_in_y: whether θ is y (posterior, ratio) or c (likelihood).
        d_theta: θ's dimension.
        weight: α ≥ 0.
        scale: 1 / the joint score's standard deviation ``[d_theta]`` (:func:`score_scale`); ``None``: no score
            term (and no score columns).
        log_density: ``(model, y, c) -> [n]``, the log-density (or logit) whose θ-gradient is compared.
        prior_log_prob: for a posterior, θ ↦ log p(θ) ``[n]``, whose gradient is added to the target.
        latent_jacobian: for a posterior, θ ↦ ∂u/∂θ ``[n, d_theta]`` of its elementwise support bijection: the
            error is divided by it (compared in u-space; ``scale`` is then the u-space score's).
        reference: θ_ref ``[k, d_theta]`` of the ratio term (``None``: no ratio term).
        log_ratio: ``(model, θ [n, d], x, reference [k, d]) -> [n, k]``, the model's log p(x | θ_ref)/p(x | θ).
    """

    def __init__(self, model: nn.Module, *, theta_in_y: bool, d_theta: int, weight: float, scale: Tensor | None,
                 log_density: Callable[[nn.Module, Tensor, Tensor], Tensor],
                 prior_log_prob: Callable[[Tensor], Tensor] | None = None,
                 latent_jacobian: Callable[[Tensor], Tensor] | None = None,
                 reference: Tensor | None = None,
                 log_ratio: Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.theta_in_y, self.d_theta, self.weight = theta_in_y, int(d_theta), float(weight)
        self.use_score = scale is not None
        self.register_buffer("scale", scale.reshape(-1).float() if scale is not None else torch.ones(d_theta))
        if reference is not None and log_ratio is None:
            raise ValueError("the ratio term needs log_ratio(model, theta, x, reference)")
        self.register_buffer("reference", reference.reshape(-1, d_theta).float() if reference is not None else None)
        self.log_density, self.prior_log_prob = log_density, prior_log_prob
        self.latent_jacobian, self.log_ratio = latent_jacobian, log_ratio

    def on_epoch(self, epoch: int) -> None:
        if hasattr(self.model, "on_epoch"):
            self.model.on_epoch(epoch)

    def split(self, y: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y, c, gold)``: the plain rows and the gold columns ``[n, w]``."""
        d = self.d_theta
        if self.theta_in_y:
            return y[:, :d], c, y[:, d:]
        return y, c[:, :d], c[:, d:]

    def score_loss(self, y: Tensor, c: Tensor, t: Tensor) -> Tensor:
        """The score term alone, on plain rows ``(y, c)`` and their joint score ``t``."""
        with torch.enable_grad():  # also in validation, which runs under no_grad
            theta = (y if self.theta_in_y else c).detach().requires_grad_(True)
            y_in, c_in = (theta, c) if self.theta_in_y else (y, theta)
            log_p = self.log_density(self.model, y_in, c_in)
            (grad,) = torch.autograd.grad(log_p.sum(), theta, create_graph=self.training)
            target = t
            if self.prior_log_prob is not None:
                prior_theta = theta.detach().requires_grad_(True)
                log_prior = self.prior_log_prob(prior_theta)
                if log_prior.requires_grad:  # a box prior's log-density is flat inside: no gradient
                    target = t + torch.autograd.grad(log_prior.sum(), prior_theta)[0]
            if self.latent_jacobian is not None:
                jac = self.latent_jacobian(theta.detach())
                grad, target = grad / jac, target / jac
            term = score_term(grad, target, self.scale)
        return term if self.training else term.detach()

    def ratio_loss(self, y: Tensor, c: Tensor, log_ratio: Tensor) -> Tensor:
        """The ratio term alone, on plain rows ``(y, c)`` (θ is y) and their joint log ratio ``[n, k]``."""
        theta, x = (y, c) if self.theta_in_y else (c, y)
        return ratio_term(self.log_ratio(self.model, theta, x, self.reference), log_ratio)

    def loss(self, y: Tensor, c: Tensor) -> Tensor:
        """In training, the model's loss plus ``weight`` × the gold terms; in evaluation (the validation loss that
        early stopping and the kept state go by) the model's loss alone: the gold terms are auxiliary
        objectives, and their irreducible part (the latents' noise) would otherwise drown the comparison."""
        y, c, gold = self.split(y, c)
        base = self.model.loss(y, c)
        if self.weight == 0 or not self.training:
            return base
        extra = 0.0
        d_score = self.d_theta if self.use_score else 0
        if self.use_score:
            extra = extra + self.score_loss(y, c, gold[:, :d_score])
        if self.reference is not None:
            extra = extra + self.ratio_loss(y, c, gold[:, d_score:])
        return base + self.weight * extra


def elementwise_jacobian(transform: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """θ ↦ ∂u/∂θ ``[n, d]`` of an elementwise bijection u = ``transform``(θ) (a box's logit or probit map), by
    autograd."""

    def jacobian(theta: Tensor) -> Tensor:
        with torch.enable_grad():
            theta = theta.detach().requires_grad_(True)
            (jac,) = torch.autograd.grad(transform(theta).sum(), theta)
        return jac.detach().clamp_min(1e-12)

    return jacobian
