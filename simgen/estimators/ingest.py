"""Training data from a campaign store: opening it for training, importance weights, streaming statistics and
the memory budget that decides between loading the rows and streaming them.

A posterior needs θ drawn from its prior. A store drawn from a proposal q is usable with importance weights
w(θ) = p(θ) / q(θ): minimising E_q[w(θ) (−log q_φ(θ | x))] is minimising E_p[−log q_φ(θ | x)] (the rows are
drawn with probability ∝ w, see :mod:`simgen.training.data`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..campaign.describe import describe_distribution
from ..campaign.store import Store, open_store
from ..transforms import Standardize, SupportBijection

__all__ = [
    "open_training_store", "importance_weights", "store_weights", "fit_streaming", "default_memory_gb",
    "rows_fit_in_memory",
]

WeightFn = Callable[[Tensor], Tensor]


def open_training_store(path: Any) -> Store:
    """The store at ``path`` (or ``path`` itself when it is a :class:`~simgen.campaign.Store`), with a warning
    when chunks of its campaign are missing, and an error when it holds no valid simulation."""
    if not isinstance(path, str | os.PathLike | Store):
        raise ValueError(f"fit takes (theta, x) or a store path; got {type(path).__name__} without x")
    store = path if isinstance(path, Store) else open_store(path)
    missing = store.missing_chunks()
    if missing:
        warnings.warn(
            f"the store {store.path} misses {len(missing)} chunk(s) of its campaign (first: {missing[0]}); "
            "training on the chunks present. Run simgen.simulate(..., store=) again to complete it",
            RuntimeWarning, stacklevel=4,
        )
    if store.x_shape is None:
        raise ValueError(f"the store {store.path} holds no valid simulation")
    return store


def importance_weights(prior: Distribution, proposal: Distribution) -> WeightFn:
    """θ ``[n, d]`` ↦ p(θ) / q(θ) ``[n]`` (0 outside the prior's support), float64."""
    support = SupportBijection(prior)

    def weight_fn(theta: Tensor) -> Tensor:
        w = torch.zeros(theta.shape[0], dtype=torch.float64)
        inside = support.contains(theta)
        if inside.any():
            t = theta[inside]
            log_w = prior.log_prob(t).double() - proposal.log_prob(t).double()
            w[inside] = torch.nan_to_num(torch.exp(log_w), nan=0.0, posinf=0.0)
        return w

    return weight_fn


def store_weights(store: Store, prior: Distribution, proposal: Distribution | None) -> WeightFn | None:
    """Importance weights for a store: ``None`` when it was drawn from the prior; refused when it was not,
    unless ``proposal`` (the distribution it was drawn from) is given."""
    described = store.metadata.get("proposal", {})
    k, keep = store.visible_chunks()[0]
    rows = store.read_chunk(k, min(keep, 256), ("theta", "proposal_log_prob"))

    def drew_from(dist: Distribution) -> bool:
        mine = describe_distribution(dist)
        if "custom" not in (mine.get("type"), described.get("type")) and mine != described:
            return False
        if not torch.isfinite(rows["proposal_log_prob"]).all():
            return mine == described
        try:
            log_q = dist.log_prob(rows["theta"]).double()
        except (ValueError, RuntimeError):
            return False
        return bool(torch.allclose(log_q, rows["proposal_log_prob"], rtol=1e-5, atol=1e-5))

    if proposal is None:
        if drew_from(prior):
            return None
        raise ValueError(
            f"the store {store.path} was drawn from {_short(described)}, not from this estimator's prior "
            f"{_short(describe_distribution(prior))}: a posterior trained on those draws would be wrong. "
            "Pass proposal=q (the distribution the store was drawn from) to importance-weight the loss by "
            "p(θ)/q(θ), or simulate from the prior"
        )
    if not drew_from(proposal):
        raise ValueError(f"proposal= is not the distribution the store {store.path} was drawn from "
                         f"({_short(described)})")
    return None if drew_from(prior) else importance_weights(prior, proposal)


def rows_fit_in_memory(store: Store, d_theta: int, max_memory_gb: float | None) -> tuple[bool, int]:
    """Whether the store's valid rows fit in ``max_memory_gb`` (default :func:`default_memory_gb`) as the rows,
    their train/validation copies and a standardised batch; else how many chunks a streaming buffer holds."""
    row_bytes = 4 * (d_theta + math.prod(store.x_shape))
    budget = (max_memory_gb if max_memory_gb is not None else default_memory_gb()) * 1e9
    n_valid = int(store.valid.sum())
    return 3 * n_valid * row_bytes <= budget, int(budget // (3 * store.chunk_size * row_bytes))


def fit_streaming(
    y_std: Standardize, c_std: Standardize, batches: Iterable[tuple[Tensor, Tensor]],
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> None:
    """Set both standardisations' statistics (as :meth:`Standardize.fit` would) from one pass over batches.

    Sums and sums of squares are accumulated in float64; the variance is (Σt² − n·mean²) / (n − 1).
    ``reduce`` sums the accumulated sums over the ranks of a data-parallel run (each having passed over its own
    shard), so that every rank sets the statistics of all the rows.
    """
    sums: list[list[Any]] = [[0.0, 0.0, 0], [0.0, 0.0, 0]]
    stds = (y_std, c_std)
    for batch in batches:
        for acc, std, t in zip(sums, stds, batch, strict=True):
            if not isinstance(std, Standardize):  # its own streaming statistics (SetStandardize)
                std.update(t)
                continue
            if not std.enabled:
                continue
            dims = [0] + [i + 1 for i, (a, e) in enumerate(zip(std.loc.shape, std.event_shape, strict=True))
                          if a == 1 and e != 1]
            t = t.double()
            total = t.sum(dim=dims)
            acc[0] = acc[0] + total
            acc[1] = acc[1] + (t * t).sum(dim=dims)
            acc[2] += t.numel() // total.numel()
    for (s1, s2, n), std in zip(sums, stds, strict=True):
        if not isinstance(std, Standardize):
            std.finish(reduce) if reduce is not None else std.finish()
            continue
        if not std.enabled:
            continue
        if reduce is not None:  # flat, so that a rank with an empty shard joins the sums with zeros
            empty = torch.zeros(std.loc.numel(), dtype=torch.float64)
            s1 = reduce(s1.reshape(-1) if n else empty)
            s2 = reduce(s2.reshape(-1) if n else empty)
            n = int(reduce(torch.tensor(float(n), dtype=torch.float64)))
        if n == 0:
            continue
        mean = s1 / n
        var = (s2 - n * mean * mean) / max(n - 1, 1)
        std.loc.copy_(mean.reshape(std.loc.shape).to(std.loc.dtype))
        scale = torch.sqrt(torch.clamp(var, min=0.0)).reshape(std.scale.shape).to(std.scale.dtype)
        std.scale.copy_(torch.clamp(torch.nan_to_num(scale, nan=1.0), min=1e-6))
        std.keep_fixed()


def default_memory_gb() -> float:
    """A quarter of this machine's physical memory (4 GB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4e9
    except (ValueError, OSError, AttributeError):
        return 4.0


def _short(description: dict[str, Any]) -> str:
    text = str(description)
    return text if len(text) <= 200 else text[:197] + "..."
