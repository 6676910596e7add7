r"""Mining gold: the joint score and joint likelihood ratio of each simulation, from the simulator's latents.

A simulator samples latents z and x given θ; p(x | θ) = ∫ p(x, z | θ) dz is intractable, but a simulator that
knows its own joint density p(x, z | θ) gives, for every simulated (θ, x, z), the **joint score** and the
**joint log likelihood ratio**

.. math::
    t(x, z \mid \theta) = \nabla_\theta \log p(x, z \mid \theta), \qquad
    \log r(x, z \mid \theta, \theta_{ref}) = \log p(x, z \mid \theta) - \log p(x, z \mid \theta_{ref}),

whose conditional expectations given x are the intractable ones: :math:`E[t \mid x, \theta] = \nabla_\theta \log
p(x \mid \theta)` and :math:`E[r \mid x, \theta_{ref}] = p(x \mid \theta) / p(x \mid \theta_{ref})` (Brehmer,
Louppe, Pavez & Cranmer 2020, "Mining gold from implicit models to improve likelihood-free inference", PNAS 117,
5242; arXiv:1805.12244). Regressing on them (SCANDAL, RASCAL, SALLY) trains the estimators with fewer simulations.

**The gold protocol.** A simulator supports gold when it has

* ``simulator(theta, generator=..., return_latents=True) -> (x, z)``: the simulation and its latents (any
  object; this module never looks inside it), drawn as ``simulator(theta, generator=...)`` draws x;
* ``simulator.joint_log_prob(theta, x, z) -> [n]``: :math:`\log p(x, z \mid \theta)` for θ ``[n, d_theta]``
  (float64), x as returned and z as returned, differentiable in θ by torch autograd (rows independent).

:func:`supports_gold` checks for both; :func:`check_gold_simulator` raises a clear error when one is missing.
Gold is computed batched: one backward pass of ``joint_log_prob(θ, x, z).sum()`` gives every row's score.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..utils import accepts_keyword

__all__ = ["GOLD_FIELDS", "supports_gold", "check_gold_simulator", "joint_gold", "check_reference"]

#: the gold a campaign can record, ``[n, d_theta]`` and ``[n, k]``
GOLD_FIELDS = ("joint_score", "joint_log_ratio")


def supports_gold(simulator: Any) -> bool:
    """Whether ``simulator`` follows the gold protocol (module docstring): a callable ``joint_log_prob`` and a
    call that accepts ``return_latents=``."""
    return callable(getattr(simulator, "joint_log_prob", None)) and accepts_keyword(simulator, "return_latents")


def check_gold_simulator(simulator: Any) -> None:
    """Raise a ValueError naming what is missing when ``simulator`` does not follow the gold protocol."""
    if supports_gold(simulator):
        return
    name = getattr(simulator, "name", None) or type(simulator).__name__
    missing = [what for what, ok in (
        ("a method joint_log_prob(theta, x, z) -> [n], log p(x, z | θ) differentiable in θ",
         callable(getattr(simulator, "joint_log_prob", None))),
        ("a call simulator(theta, return_latents=True) -> (x, z)", accepts_keyword(simulator, "return_latents")),
    ) if not ok]
    raise ValueError(f"simulate(..., gold=True) needs a simulator that knows its joint density over its latents; "
                     f"{name!r} lacks {' and '.join(missing)} (see simgen.campaign.gold)")


def check_reference(reference: Any, d_theta: int) -> Tensor | None:
    """``gold_reference`` as a float64 ``[k, d_theta]`` tensor (a single ``[d_theta]`` row gets its batch
    dimension); ``None`` stays ``None``."""
    if reference is None:
        return None
    ref = torch.as_tensor(reference, dtype=torch.float64)
    if ref.dim() == 1:
        ref = ref[None]
    if ref.dim() != 2 or ref.shape[1] != d_theta or ref.shape[0] < 1 or not torch.isfinite(ref).all():
        raise ValueError(f"gold_reference must be finite θ rows [k, {d_theta}] (or one row [{d_theta}]); got "
                         f"shape {list(ref.shape)}")
    return ref


def joint_gold(simulator: Any, theta: Tensor, x: Tensor, z: Any, reference: Tensor | None = None) -> dict[str, Tensor]:
    r"""The gold of simulated rows: ``{"joint_score": [n, d_theta]}`` and, with ``reference`` θ_ref ``[k,
    d_theta]``, ``"joint_log_ratio": [n, k]`` = log p(x_i, z_i | θ_i) − log p(x_i, z_i | θ_ref,j) (float32).

    Args:
        simulator: follows the gold protocol (module docstring).
        theta: ``[n, d_theta]``, the parameters x and z were simulated at.
        x: the data ``simulator(theta, return_latents=True)`` returned first, ``[n, *x_shape]``.
        z: the latents it returned second (any structure ``joint_log_prob`` accepts).
        reference: θ_ref rows for the joint log ratio, or ``None``.

    Rows whose joint log-density or score is not finite come back non-finite (the campaign marks them failed).
    """
    theta64 = theta.detach().to(torch.float64).requires_grad_(True)
    with torch.enable_grad():
        log_p = simulator.joint_log_prob(theta64, x, z)
        if not isinstance(log_p, Tensor) or log_p.shape != (theta.shape[0],):
            raise ValueError(f"joint_log_prob must return a tensor [n] = [{theta.shape[0]}]; got "
                             f"{getattr(log_p, 'shape', type(log_p).__name__)}")
        if not log_p.requires_grad:
            raise ValueError("joint_log_prob's output does not depend on θ through torch autograd: the joint "
                             "score needs a log-density differentiable in θ")
        (score,) = torch.autograd.grad(log_p.sum(), theta64, allow_unused=False)
    out = {"joint_score": score.detach().to(torch.float32)}
    if reference is not None:
        n = theta.shape[0]
        with torch.no_grad():
            ratios = [log_p.detach() - simulator.joint_log_prob(ref.expand(n, -1).clone(), x, z).detach()
                      for ref in reference]
        out["joint_log_ratio"] = torch.stack(ratios, dim=1).to(torch.float32)
    return out

