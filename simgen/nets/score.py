r"""SALLY: a network regressing the joint score gives locally sufficient summary statistics (Brehmer, Louppe, Pavez &
Cranmer 2020, PNAS 117, 5242, arXiv:1805.12244).

Among functions of x, the squared error :math:`E\,\lVert g(x) - t(x, z \mid \theta_{ref}) \rVert^2` over
simulations at :math:`\theta_{ref}` is smallest at the score :math:`g(x) = \nabla_\theta \log p(x \mid
\theta)|_{\theta_{ref}}` (the joint score's conditional expectation). The score is sufficient for θ in the local
(exponential-family) approximation :math:`p(x \mid \theta) \approx p(x \mid \theta_{ref}) \exp((\theta -
\theta_{ref})^\top g(x))` near :math:`\theta_{ref}`, so ``d_theta`` numbers summarise x however large it is; used as
an estimator's ``embedding=``, it compresses x before the density (frozen by default: see :class:`ScoreSummary`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..training import TrainingConfig, train
from .mlp import ResidualMLP

__all__ = ["ScoreSummary"]


class ScoreSummary(nn.Module):
    r"""ĝ(x) ≈ ∇_θ log p(x | θ_ref): SALLY's summary of x, ``[n, *x_shape]`` → ``[n, d_theta]``.

    Fit it with :meth:`fit` on simulations at (or near) θ_ref and their joint score there
    (``simgen.simulate(simulator, prior_at_theta_ref, n, gold=True)``, or ``simgen.campaign.joint_gold`` on the
    simulator's latents); then pass it as any estimator's ``embedding=``. Estimators train their embedding with the
    density unless it is frozen: ``fit`` freezes it (``requires_grad=False``), so that it stays the score
    regression; :meth:`unfreeze` lets an estimator fine-tune it. It is a built-in network: saved estimators
    rebuild it (weights included) without running code.

    x is flattened and standardised, the score regressed in units of its own standard deviation; the output is
    the score in θ's units (the regression's prediction, not standardised).

    Args:
        x_shape: one x row's shape.
        d_theta: θ's dimension (the summary's width).
        hidden_features: the residual MLP's width.
        num_blocks: its residual blocks.
        activation: its activation.
    """

    name = "score_summary"

    def __init__(self, x_shape: tuple[int, ...] | list[int], d_theta: int, *, hidden_features: int = 64,
                 num_blocks: int = 2, activation: str = "silu") -> None:
        super().__init__()
        self.x_shape = tuple(int(s) for s in x_shape)
        if int(d_theta) < 1 or not self.x_shape:
            raise ValueError(f"ScoreSummary needs x_shape with at least one axis and d_theta >= 1; got "
                             f"{list(self.x_shape)}, {d_theta!r}")
        self.d_theta = self.out_features = int(d_theta)
        self.settings = {"hidden_features": int(hidden_features), "num_blocks": int(num_blocks),
                         "activation": activation}
        d_x = math.prod(self.x_shape)
        self.net = ResidualMLP(d_x, self.d_theta, **self.settings)
        self.register_buffer("x_loc", torch.zeros(d_x))
        self.register_buffer("x_scale", torch.ones(d_x))
        self.register_buffer("t_scale", torch.ones(self.d_theta))

    def config(self) -> dict[str, Any]:
        return {"x_shape": list(self.x_shape), "d_theta": self.d_theta, **self.settings}

    def standardized(self, x: Tensor) -> Tensor:
        """The network's output: the score divided by its standard deviation, ``[n, d_theta]``."""
        return self.net((x.reshape(x.shape[0], -1) - self.x_loc) / self.x_scale)

    def forward(self, x: Tensor) -> Tensor:
        """ĝ(x) ``[n, d_theta]``, in θ's units."""
        return self.standardized(x) * self.t_scale

    def loss(self, y: Tensor, c: Tensor) -> Tensor:
        """Mean squared error of the standardised score: ``y`` the joint score ``[n, d_theta]``, ``c`` x."""
        return (self.standardized(c) - y / self.t_scale).square().sum(dim=-1).mean()

    def freeze(self) -> ScoreSummary:
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def unfreeze(self) -> ScoreSummary:
        for p in self.parameters():
            p.requires_grad_(True)
        return self

    def fit(self, x: Any, joint_score: Any, *, seed: int | None = None, progress: bool = True,
            freeze: bool = True, **settings: Any) -> Any:
        """Regress the joint score ``[n, d_theta]`` (or the dict of ``simulate(..., gold=True)``) on x ``[n,
        *x_shape]`` with :func:`simgen.training.train` (early stopping on a held-out share); ``settings`` are
        :class:`~simgen.training.TrainingConfig` fields. Returns the training history; the network is frozen
        afterwards unless ``freeze=False``."""
        if isinstance(joint_score, dict):
            joint_score = joint_score["joint_score"]
        x = torch.as_tensor(x, dtype=torch.float32)
        t = torch.as_tensor(joint_score, dtype=torch.float32)
        if tuple(x.shape[1:]) != self.x_shape or t.shape != (x.shape[0], self.d_theta):
            raise ValueError(f"ScoreSummary.fit takes x [n, {', '.join(map(str, self.x_shape))}] and the joint score "
                             f"[n, {self.d_theta}]; got {list(x.shape)} and {list(t.shape)}")
        if not (torch.isfinite(x).all() and torch.isfinite(t).all()):
            raise ValueError("x and the joint score must be finite")
        flat = x.reshape(x.shape[0], -1)
        with torch.no_grad():
            self.x_loc.copy_(flat.mean(0))
            self.x_scale.copy_(flat.std(0).nan_to_num(1.0).clamp_min(1e-6))
            self.t_scale.copy_(t.std(0).nan_to_num(1.0).clamp_min(1e-12))
        self.unfreeze()
        history = train(self, t, x, TrainingConfig(**settings), seed=seed, progress=progress)
        if freeze:
            self.freeze()
        return history
