"""One chunk of a campaign: its seeds, its θ draws and its simulations, failures recorded row by row.

Seeding (DESIGN, "Seeding"): the ``num_simulations`` attempts are split into whole chunks of ``chunk_size``
rows (the last chunk is simulated whole and truncated). Chunk k's seed is the child
``numpy.random.SeedSequence(seed).spawn(K)[k]``, split again in two: one seed draws θ (under
``torch.random.fork_rng`` + ``manual_seed``), the other seeds the simulator (:func:`simgen.utils.call_simulator`),
so the simulator's noise is never the stream that drew θ. Results therefore depend only on
``(seed, chunk_size)`` — never on how chunks are scheduled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..utils import GLOBAL_RNG_LOCK, accepts_keyword, call_simulator, seeded
from .gold import joint_gold
from .types import ChunkResult, SimulationFailure

__all__ = ["chunk_seeds", "simulate_chunk"]


def chunk_seeds(seed: int, k: int) -> tuple[int, int]:
    """(θ seed, simulator seed) of chunk ``k``: the two children of ``SeedSequence(seed).spawn(K)[k]``.

    ``SeedSequence(seed, spawn_key=(k,))`` is exactly ``SeedSequence(seed).spawn(K)[k]`` for any K > k.
    """
    child = np.random.SeedSequence(seed, spawn_key=(k,))
    theta_seq, sim_seq = child.spawn(2)
    return int(theta_seq.generate_state(1, np.uint64)[0] >> 1), int(sim_seq.generate_state(1, np.uint64)[0] >> 1)


def simulate_chunk(
    simulator: Callable[..., Any],
    prior: Distribution,
    chunk_size: int,
    seed: int,
    k: int,
    x_shape: tuple[int, ...] | None = None,
    gold: bool = False,
    gold_reference: Tensor | None = None,
) -> ChunkResult:
    """Simulate chunk ``k`` (rows ``k·chunk_size`` … ) of a campaign: θ ~ prior, x ~ simulator(θ).

    A chunk whose simulator call raises is retried row by row (row i seeded with the chunk's simulator seed
    plus i), so one bad θ does not sink its neighbours. Rows that raise, contain NaN/inf or have the wrong
    shape are marked invalid and described in ``failures``.

    With ``gold``, the simulator runs with ``return_latents=True`` and each row's gold is computed from its latents
    (:func:`simgen.campaign.gold.joint_gold`, with ``gold_reference`` θ_ref ``[k, d]`` for the joint log ratio); a
    row whose gold is not finite is invalid too.
    """
    theta_seed, sim_seed = chunk_seeds(seed, k)
    theta = _draw_theta(prior, chunk_size, theta_seed)
    if gold:
        widths = {"joint_score": theta.shape[1]} | (
            {"joint_log_ratio": gold_reference.shape[0]} if gold_reference is not None else {})

        def call(th: Tensor, s: int) -> tuple[Tensor, dict[str, Tensor]]:
            return _simulate_with_gold(simulator, th, s, gold_reference)
    else:
        widths = {}

        def call(th: Tensor, s: int) -> tuple[Tensor, dict[str, Tensor]]:
            return call_simulator(simulator, th, s), {}

    failures: list[SimulationFailure] = []
    offset = k * chunk_size
    try:
        x, extra = call(theta, sim_seed)
        if x.shape[0] != chunk_size:
            raise ValueError(f"the simulator returned {x.shape[0]} rows for {chunk_size} parameter rows")
    except Exception as batch_error:  # noqa: BLE001 - reported row by row below, never swallowed
        rows: list[tuple[Tensor, dict[str, Tensor]] | None] = []
        for i in range(chunk_size):
            try:
                xi, gi = call(theta[i : i + 1], sim_seed + i + 1)
                rows.append((xi[0], {name: v[0] for name, v in gi.items()}))
            except Exception as e:  # noqa: BLE001 - recorded as this row's failure
                rows.append(None)
                failures.append(SimulationFailure(offset + i, theta[i].tolist(), type(e).__name__, str(e)))
        if len(failures) == chunk_size:
            # Every row failed on its own too: the chunk's error is the informative one.
            failures = [
                SimulationFailure(offset + i, theta[i].tolist(), type(batch_error).__name__, str(batch_error))
                for i in range(chunk_size)
            ]
    else:
        if x_shape is None or tuple(x.shape[1:]) == tuple(x_shape):
            return _checked_batch(theta, x, extra, offset)
        rows = [(x[i], {name: v[i] for name, v in extra.items()}) for i in range(chunk_size)]
    return _checked_rows(theta, rows, failures, x_shape, widths, offset)


def _gold_finite(gold: dict[str, Tensor]) -> Tensor:
    """Rows ``[k]`` whose gold is usable: a finite joint score and no NaN in the joint log ratio (which may be
    ±inf: x, z impossible under a reference θ). All true without gold."""
    ok = torch.ones(len(next(iter(gold.values()))) if gold else 0, dtype=torch.bool)
    for name, v in gold.items():
        v = v.reshape(len(v), -1)
        ok &= torch.isfinite(v).all(1) if name == "joint_score" else ~v.isnan().any(1)
    return ok


def _failure_kind(x_ok: bool) -> tuple[str, str]:
    return ("NonFinite", "x contains NaN or inf") if not x_ok else (
        "NonFiniteGold", "the joint score is NaN or inf (or the joint log ratio NaN)")


def _checked_batch(theta: Tensor, x: Tensor, gold: dict[str, Tensor], offset: int) -> ChunkResult:
    """A whole chunk that came back with the expected rows, checked in one vectorised pass."""
    n = x.shape[0]
    x_ok = torch.isfinite(x.reshape(n, -1)).all(dim=1)
    valid = x_ok & _gold_finite(gold) if gold else x_ok
    mask = valid.reshape(-1, *([1] * (x.dim() - 1)))
    x_out = torch.where(mask, x, torch.full_like(x, math.nan))
    failures = [SimulationFailure(offset + i, theta[i].tolist(), *_failure_kind(bool(x_ok[i])))
                for i in torch.nonzero(~valid).flatten().tolist()]
    kept = {name: torch.where(valid.reshape(-1, *([1] * (v.dim() - 1))), v, torch.full_like(v, math.nan))
            for name, v in gold.items()}
    return ChunkResult(theta, x_out, valid, failures, kept or None)


def _checked_rows(theta: Tensor, rows: list[tuple[Tensor, dict[str, Tensor]] | None],
                  failures: list[SimulationFailure], x_shape: tuple[int, ...] | None, widths: dict[str, int],
                  offset: int) -> ChunkResult:
    """Rows simulated (or retried) one by one: each checked for its shape (``x_shape``, else the most common
    one), finite x and usable gold; ``rows[i]`` is ``None`` where row i raised (already in ``failures``)."""
    n = theta.shape[0]
    shape = x_shape
    if shape is None:
        shapes = [tuple(r[0].shape) for r in rows if r is not None]
        shape = max(set(shapes), key=shapes.count) if shapes else None
    valid = torch.zeros(n, dtype=torch.bool)
    x_out = None if shape is None else torch.full((n, *shape), math.nan)
    gold = {name: torch.full((n, w), math.nan) for name, w in widths.items()}
    failed = {f.row for f in failures}
    for i, r in enumerate(rows):
        if r is None or offset + i in failed:
            continue
        xi, gi = r
        if tuple(xi.shape) != tuple(shape):
            failures.append(SimulationFailure(offset + i, theta[i].tolist(), "ShapeError",
                                              f"expected x of shape {tuple(shape)}, got {tuple(xi.shape)}"))
            continue
        x_ok = bool(torch.isfinite(xi).all())
        if not x_ok or (gi and not bool(_gold_finite({k: v[None] for k, v in gi.items()})[0])):
            failures.append(SimulationFailure(offset + i, theta[i].tolist(), *_failure_kind(x_ok)))
            continue
        x_out[i] = xi
        for name, v in gi.items():
            gold[name][i] = v
        valid[i] = True
    return ChunkResult(theta, x_out, valid, sorted(failures, key=lambda f: f.row), gold or None)


def _draw_theta(prior: Distribution, chunk_size: int, theta_seed: int) -> Tensor:
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(theta_seed)
        return prior.sample((chunk_size,)).reshape(chunk_size, -1).to(torch.float32)


def _simulate_with_gold(simulator: Any, theta: Tensor, seed: int, reference: Tensor | None
                        ) -> tuple[Tensor, dict[str, Tensor]]:
    """``simulator(theta, return_latents=True)`` seeded as :func:`~simgen.utils.call_simulator` seeds a plain
    call, and the rows' gold."""
    if accepts_keyword(simulator, "generator"):
        out = simulator(theta, generator=torch.Generator().manual_seed(int(seed)), return_latents=True)
    else:
        with seeded(seed):
            out = simulator(theta, return_latents=True)
    if not isinstance(out, tuple) or len(out) != 2:
        raise ValueError("simulator(theta, return_latents=True) must return a pair (x, z)")
    x, z = out
    x = torch.as_tensor(x.numpy() if isinstance(x, np.ndarray) else x).to(torch.float32)
    return x, joint_gold(simulator, theta, x, z, reference)
