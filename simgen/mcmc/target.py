r"""What every sampler here takes: an unnormalised log-density evaluated on a batch of points at once.

``log_fn(θ)`` maps ``[B, d]`` to ``[B]``; a point outside the support has log-density −inf. NaN and +inf (a
failed evaluation) are read as −inf too, so that a sampler rejects such a point instead of propagating it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["LogDensity", "finite_or_minus_inf"]

LogDensity = Callable[[Tensor], Tensor]


def finite_or_minus_inf(logp: Tensor) -> Tensor:
    """``logp`` with NaN and +inf replaced by −inf (a point the sampler must never move to)."""
    return torch.nan_to_num(logp, nan=-math.inf, posinf=-math.inf)
