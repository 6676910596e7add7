r"""Posterior predictive check: simulate from posterior draws and place the observation among the simulations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..utils import as_tensor, call_simulator
from .draws import child_seeds, draw
from .maps import is_map, map_statistics

__all__ = ["PosteriorPredictiveResult", "posterior_predictive"]


@dataclass
class PosteriorPredictiveResult:
    r"""Posterior predictive check: x̃_k ~ p(x | θ_k), θ_k ~ q(θ | x_obs), compared with x_obs.

    For each compared quantity (every dimension of a vector x, every bin of each map statistic), the predictive
    quantile u = (#{x̃ < x_obs} + ½ #{x̃ = x_obs}) / K and the two-sided tail probability p = 2 min(u, 1 − u). A
    well-specified model and a good posterior give x_obs inside the predictive cloud (p not small).

    Attributes:
        theta: ``[K, d_theta]`` posterior draws.
        x: ``[K, *x_shape]`` their simulations (failed ones, non-finite, dropped).
        x_obs: ``[*x_shape]``.
        quantiles: name → ``[k]`` predictive quantiles u of x_obs (``"x"`` for vectors, one entry per map
            statistic for maps).
        num_failed: simulations dropped as non-finite.
        alpha: family-wise level of :attr:`flagged` (Bonferroni over every compared quantity).
    """

    theta: Tensor
    x: Tensor
    x_obs: Tensor
    quantiles: dict[str, Tensor]
    num_failed: int = 0
    alpha: float = 0.01

    @property
    def pvalues(self) -> dict[str, Tensor]:
        return {k: 2 * torch.minimum(u, 1 - u) for k, u in self.quantiles.items()}

    @property
    def flagged(self) -> bool:
        """Some compared quantity of x_obs lies in a predictive tail at level ``alpha`` / (number of quantities)."""
        p = self.pvalues
        total = sum(v.numel() for v in p.values())
        return any(bool((v < self.alpha / total).any()) for v in p.values())

    def summary(self) -> str:
        parts = []
        for k, v in self.pvalues.items():
            j = int(v.argmin())
            parts.append(f"{k}: smallest tail probability {float(v[j]):.3g} (entry {j})")
        verdict = "x_obs in a predictive tail" if self.flagged else "x_obs consistent with the predictive"
        failed = f"; {self.num_failed} failed simulations dropped" if self.num_failed else ""
        return f"posterior predictive ({self.x.shape[0]} simulations): {verdict}; " + "; ".join(parts) + failed


def posterior_predictive(
    posterior: Any,
    simulator: Any,
    x_obs: Any,
    *,
    num_samples: int = 1000,
    alpha: float = 0.01,
    seed: int | None = None,
) -> PosteriorPredictiveResult:
    r"""Simulate from posterior draws and compare with the observation (see :class:`PosteriorPredictiveResult`).

    Args:
        posterior: ``sample(n, x_obs)`` → ``[n, d_theta]`` (or ``sample_batched``).
        simulator: ``simulator(theta)`` → ``[n, *x_shape]`` (a ``generator=`` is passed when it takes one); its
            ``x_kind`` (when present) says whether x is a map, else ``[N, N]`` rows are taken as maps.
        x_obs: one observation ``[*x_shape]`` or ``[1, *x_shape]``.
        num_samples: posterior draws K.
        alpha: level of ``flagged``.
        seed: makes the draws and simulations reproducible.

    Returns:
        :class:`PosteriorPredictiveResult`.
    """
    x_obs = as_tensor(x_obs, "x_obs")
    x_shape = getattr(simulator, "x_shape", None)
    if x_shape is not None and tuple(x_obs.shape) == tuple(x_shape):
        x_obs = x_obs[None]
    elif x_shape is None and x_obs.dim() == 1:
        x_obs = x_obs[None]
    if x_obs.shape[0] != 1:
        raise ValueError(f"x_obs must be one observation [*x_shape] or [1, *x_shape]; got {list(x_obs.shape)}")
    seed_post, seed_sim = (None, None) if seed is None else child_seeds(seed, 2)
    theta = draw(posterior, num_samples, x_obs, seed_post, 1, "posterior")[0]
    x = as_tensor(call_simulator(simulator, theta, seed_sim), "simulations")
    if x.shape[0] != theta.shape[0] or x.shape[1:] != x_obs.shape[1:]:
        raise ValueError(f"simulator returned {list(x.shape)}; expected [{theta.shape[0]}, "
                         f"{', '.join(map(str, x_obs.shape[1:]))}] (x_obs's row shape)")
    ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if not ok.any():
        raise ValueError("every posterior-predictive simulation failed (non-finite)")
    theta, x = theta[ok], x[ok]

    def quantile(pred: Tensor, obs: Tensor) -> Tensor:
        return ((pred < obs).float().mean(0) + 0.5 * (pred == obs).float().mean(0)).reshape(-1)

    if is_map(tuple(x.shape[1:]), getattr(simulator, "x_kind", None)) and x.shape[-1] == x.shape[-2]:
        loc, scale = float(x.mean()), float(x.std().clamp_min(1e-12))
        side = getattr(simulator, "side", None)
        pred = map_statistics(x, loc=loc, scale=scale, side=side)
        obs = map_statistics(x_obs, loc=loc, scale=scale, side=side)
        quantiles = {k: quantile(pred[k], obs[k]) for k in pred}
    else:
        quantiles = {"x": quantile(x.reshape(x.shape[0], -1), x_obs.reshape(1, -1))}
    return PosteriorPredictiveResult(theta=theta, x=x, x_obs=x_obs[0], quantiles=quantiles,
                                     num_failed=int((~ok).sum()), alpha=alpha)
