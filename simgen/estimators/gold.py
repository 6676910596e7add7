r"""Training on gold: the score term that SCANDAL adds to a density estimator's loss and RASCAL/ALICES to a ratio
estimator's (Brehmer, Louppe, Pavez & Cranmer 2020, PNAS 117, 5242, arXiv:1805.12244; gold from
:mod:`simgen.campaign.gold`).

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

Only families whose ``log_prob`` is exact and differentiable (``log_prob_kind == "exact"``: flows, MNLE, map
flows) train on gold: a CNF's or diffusion's log-density is an ODE solve and a VAE's an importance estimate, too
costly or too noisy to differentiate at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "GOLD_MODES", "DEFAULT_GOLD_WEIGHT", "GOLD_LEARNING_RATE", "GOLD_MAX_BATCH_SIZE", "gold_training_defaults",
    "check_gold_options", "check_gold_rows", "score_term", "GoldObjective", "score_scale", "elementwise_jacobian",
]

#: what an estimator's ``gold=`` may be: ``"score"`` (SCANDAL / the score term of RASCAL and ALICES)
GOLD_MODES = ("score",)

#: the score term's default weight α: the README's "Mining gold" section has the measurements behind it
DEFAULT_GOLD_WEIGHT = 0.1

#: the largest default learning rate and batch of a gold-trained estimator: the score term is a second-order
#: objective (its gradient goes through ∇_θ of the model), which the flows' larger default steps (and their scaling
#: up with large batches) can throw off course; settings given explicitly are used as they are
GOLD_LEARNING_RATE, GOLD_MAX_BATCH_SIZE = 2e-3, 512


def gold_training_defaults(defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` (a family's training settings) with the learning rate capped at :data:`GOLD_LEARNING_RATE`
    and the automatic batch at :data:`GOLD_MAX_BATCH_SIZE` (so that the learning rate is not scaled up)."""
    return {**defaults, "learning_rate": min(float(defaults.get("learning_rate", 2e-3)), GOLD_LEARNING_RATE),
            "max_batch_size": min(int(defaults.get("max_batch_size", 512)), GOLD_MAX_BATCH_SIZE)}


def check_gold_options(gold: Any, gold_weight: Any) -> tuple[str | None, float]:
    """``(gold, gold_weight)`` checked: ``gold`` ``None`` or one of :data:`GOLD_MODES`, the weight a finite
    number ≥ 0."""
    if gold is not None and gold not in GOLD_MODES:
        raise ValueError(f"gold must be None or one of {GOLD_MODES}; got {gold!r}")
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


def score_scale(score: Tensor) -> Tensor:
    """1 / the joint score's standard deviation per component ``[d]`` (1 where it is 0 or undefined): the units of
    the score term."""
    sd = score.double().std(dim=0) if score.shape[0] > 1 else torch.ones(score.shape[1], dtype=torch.float64)
    return torch.where(torch.isfinite(sd) & (sd > 0), 1.0 / sd, 1.0).float()


def score_term(grad: Tensor, target: Tensor, scale: Tensor) -> Tensor:
    r"""Mean over rows of ‖scale ⊙ (grad − target)‖², grad and target ``[n, d]``: the score regression term
    (zero where the model's θ-gradient equals the target)."""
    return ((grad - target) * scale).square().sum(dim=-1).mean()


class GoldObjective(nn.Module):
    r"""A model's loss plus ``weight`` × :func:`score_term`, for :func:`simgen.training.train`.

    The trainer serves ``(y, c)`` batches whose θ part (y for a posterior or a ratio, c for a likelihood) carries
    the joint score as ``d_theta`` extra columns: ``[n, 2 d_theta]``. This module splits them off, computes the
    model's own loss on the plain rows and the score term from ``log_density(θ, y, c)`` (differentiable in θ).

    Args:
        model: the density or classifier being trained (its parameters are this module's).
        theta_in_y: whether θ is y (posterior, ratio) or c (likelihood).
        d_theta: θ's dimension.
        weight: α ≥ 0.
        scale: 1 / the joint score's standard deviation ``[d_theta]`` (:func:`score_scale`).
        log_density: ``(model, y, c) -> [n]``, the log-density (or logit) whose θ-gradient is compared.
        prior_log_prob: for a posterior, θ ↦ log p(θ) ``[n]``, whose gradient is added to the target.
        latent_jacobian: for a posterior, θ ↦ ∂u/∂θ ``[n, d_theta]`` of its elementwise support bijection: the
            error is divided by it (compared in u-space; ``scale`` is then the u-space score's).
    """

    def __init__(self, model: nn.Module, *, theta_in_y: bool, d_theta: int, weight: float, scale: Tensor,
                 log_density: Callable[[nn.Module, Tensor, Tensor], Tensor],
                 prior_log_prob: Callable[[Tensor], Tensor] | None = None,
                 latent_jacobian: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.theta_in_y, self.d_theta, self.weight = theta_in_y, int(d_theta), float(weight)
        self.register_buffer("scale", scale.reshape(-1).float())
        self.log_density, self.prior_log_prob = log_density, prior_log_prob
        self.latent_jacobian = latent_jacobian

    def on_epoch(self, epoch: int) -> None:
        if hasattr(self.model, "on_epoch"):
            self.model.on_epoch(epoch)

    def split(self, y: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y, c, t)``: the plain rows and the joint score ``[n, d_theta]``."""
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

    def loss(self, y: Tensor, c: Tensor) -> Tensor:
        """In training, the model's loss plus ``weight`` × the score term; in evaluation (the validation loss that
        early stopping and the kept state go by) the model's loss alone: the score term is an auxiliary
        objective, and its irreducible part (the latents' noise in t) would otherwise drown the comparison."""
        y, c, t = self.split(y, c)
        base = self.model.loss(y, c)
        if self.weight == 0 or not self.training:
            return base
        return base + self.weight * self.score_loss(y, c, t)


def elementwise_jacobian(transform: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """θ ↦ ∂u/∂θ ``[n, d]`` of an elementwise bijection u = ``transform``(θ) (a box's logit or probit map), by
    autograd."""

    def jacobian(theta: Tensor) -> Tensor:
        with torch.enable_grad():
            theta = theta.detach().requires_grad_(True)
            (jac,) = torch.autograd.grad(transform(theta).sum(), theta)
        return jac.detach().clamp_min(1e-12)

    return jacobian
