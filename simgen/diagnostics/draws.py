r"""Reproducible draws from any object with the sampling interface, shared by every check of the package.

An object is drawn from through ``sample_batched(n, contexts)`` → ``[m, n, *shape]`` when it has one, else
through ``sample(n, context)`` once per context row. With a ``seed``, a ``torch.Generator`` seeded with it is
passed as ``generator=`` where the method takes one (on the object's ``device`` when it has one), and torch's and
numpy's global RNGs are seeded inside a fork (:func:`simgen.utils.seeded`), so objects without a ``generator``
argument are reproducible too and the caller's RNG state is left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils import accepts_keyword, as_tensor, check_positive_int, seeded

__all__ = ["draw", "child_seeds", "check_pairs"]


def _generator(obj: Any, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    device = getattr(obj, "device", None)
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))


def _draw_batched(obj: Any, n: int, contexts: Tensor, generator: torch.Generator | None, what: str) -> Tensor:
    """``n`` draws per context row from ``obj``: ``[m, n, *shape]`` on the CPU, float32."""
    kwargs: dict[str, Any] = {}
    if hasattr(obj, "sample_batched"):
        if generator is not None and accepts_keyword(obj.sample_batched, "generator"):
            kwargs["generator"] = generator
        out = obj.sample_batched(n, contexts, **kwargs)
    elif hasattr(obj, "sample"):
        if generator is not None and accepts_keyword(obj.sample, "generator"):
            kwargs["generator"] = generator
        out = torch.stack([as_tensor(obj.sample(n, contexts[i : i + 1], **kwargs), what)
                           for i in range(contexts.shape[0])])
    else:
        raise ValueError(f"{what} must have sample_batched(n, contexts) or sample(n, context); got "
                         f"{type(obj).__name__}")
    out = as_tensor(out, f"{what} draws")
    if out.dim() < 2 or out.shape[:2] != (contexts.shape[0], n):
        raise ValueError(f"{what}.sample_batched({n}, [{contexts.shape[0]}, ...]) must return "
                         f"[{contexts.shape[0]}, {n}, ...]; got {list(out.shape)}")
    return out


def draw(obj: Any, n: int, contexts: Tensor, seed: int | None, batch_size: int, what: str) -> Tensor:
    """``n`` draws of ``obj`` for each row of ``contexts`` ``[m, *c_shape]``: ``[m, n, *shape]`` float32 on the CPU.

    ``batch_size`` context rows go to each call and one generator serves all calls in turn (so the draws depend
    on ``batch_size`` as well as on ``seed``). ``what`` names the object in errors.
    """
    check_positive_int(n, "num_samples")
    generator = _generator(obj, seed)
    with seeded(seed):
        parts = [_draw_batched(obj, n, contexts[s : s + batch_size], generator, what)
                 for s in range(0, contexts.shape[0], batch_size)]
    return torch.cat(parts)


def child_seeds(seed: int, k: int) -> list[int]:
    """``k`` independent seeds derived from ``seed`` (``numpy.random.SeedSequence``)."""
    return [int(v) for v in np.random.SeedSequence(int(seed)).generate_state(k, dtype=np.uint64) % 2**62]


def check_pairs(theta: Any, x: Any) -> tuple[Tensor, Tensor]:
    """Test pairs as tensors: θ ``[n, d_theta]`` (a ``[n]`` vector taken as one parameter) and x ``[n, *x_shape]``."""
    theta, x = as_tensor(theta, "theta"), as_tensor(x, "x")
    if theta.dim() == 1:
        theta = theta[:, None]
    if theta.dim() != 2:
        raise ValueError(f"theta must be [n, d_theta]; got {list(theta.shape)}")
    if x.dim() < 2 or x.shape[0] != theta.shape[0]:
        raise ValueError(f"x must be [n, *x_shape] with theta's n = {theta.shape[0]} rows; got {list(x.shape)}")
    return theta, x
