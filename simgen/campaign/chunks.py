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
    if gold:
        return _simulate_gold_chunk(simulator, prior, chunk_size, seed, k, x_shape, gold_reference)
    theta_seed, sim_seed = chunk_seeds(seed, k)
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(theta_seed)
        theta = prior.sample((chunk_size,)).reshape(chunk_size, -1).to(torch.float32)
    failures: list[SimulationFailure] = []
    offset = k * chunk_size
    try:
        x = call_simulator(simulator, theta, sim_seed)
        if x.shape[0] != chunk_size:
            raise ValueError(f"the simulator returned {x.shape[0]} rows for {chunk_size} parameter rows")
        rows: Tensor | list[Tensor | None] = x
    except Exception as batch_error:  # noqa: BLE001 - reported row by row below, never swallowed
        rows = []
        for i in range(chunk_size):
            try:
                rows.append(call_simulator(simulator, theta[i : i + 1], sim_seed + i + 1)[0])
            except Exception as e:  # noqa: BLE001 - recorded as this row's failure
                rows.append(None)
                failures.append(SimulationFailure(offset + i, theta[i].tolist(), type(e).__name__, str(e)))
        if len(failures) == chunk_size:
            # Every row failed on its own too: the chunk's error is the informative one.
            failures = [
                SimulationFailure(offset + i, theta[i].tolist(), type(batch_error).__name__, str(batch_error))
                for i in range(chunk_size)
            ]
    if not failures and len(rows) == chunk_size and isinstance(rows, Tensor):
        # The whole batch came back with the expected rows: check it in one vectorised pass.
        if x_shape is None or tuple(rows.shape[1:]) == tuple(x_shape):
            valid = torch.isfinite(rows.reshape(chunk_size, -1)).all(dim=1)
            x_out = torch.where(valid.reshape(-1, *([1] * (rows.dim() - 1))), rows, torch.full_like(rows, math.nan))
            failures = [SimulationFailure(offset + i, theta[i].tolist(), "NonFinite", "x contains NaN or inf")
                        for i in torch.nonzero(~valid).flatten().tolist()]
            return ChunkResult(theta, x_out, valid, failures)
        rows = list(rows)
    shape = x_shape
    if shape is None:
        shapes = [tuple(r.shape) for r in rows if r is not None]
        shape = max(set(shapes), key=shapes.count) if shapes else None
    valid = torch.zeros(chunk_size, dtype=torch.bool)
    x_out = None if shape is None else torch.full((chunk_size, *shape), math.nan)
    failed_rows = {f.row for f in failures}
    for i, r in enumerate(rows):
        if r is None or offset + i in failed_rows:
            continue
        if tuple(r.shape) != tuple(shape):
            failures.append(SimulationFailure(offset + i, theta[i].tolist(), "ShapeError",
                                              f"expected x of shape {tuple(shape)}, got {tuple(r.shape)}"))
        elif not torch.isfinite(r).all():
            failures.append(SimulationFailure(offset + i, theta[i].tolist(), "NonFinite", "x contains NaN or inf"))
        else:
            x_out[i] = r
            valid[i] = True
    return ChunkResult(theta, x_out, valid, sorted(failures, key=lambda f: f.row))


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


def _simulate_gold_chunk(
    simulator: Any, prior: Distribution, chunk_size: int, seed: int, k: int, x_shape: tuple[int, ...] | None,
    reference: Tensor | None,
) -> ChunkResult:
    """:func:`simulate_chunk` with gold: the batch first, row by row when the batch raises."""
    theta_seed, sim_seed = chunk_seeds(seed, k)
    theta = _draw_theta(prior, chunk_size, theta_seed)
    offset = k * chunk_size
    failures: list[SimulationFailure] = []
    rows: list[tuple[Tensor, dict[str, Tensor]] | None]
    try:
        x, g = _simulate_with_gold(simulator, theta, sim_seed, reference)
        if x.shape[0] != chunk_size:
            raise ValueError(f"the simulator returned {x.shape[0]} rows for {chunk_size} parameter rows")
        rows = [(x[i], {name: v[i] for name, v in g.items()}) for i in range(chunk_size)]
    except Exception as batch_error:  # noqa: BLE001 - reported row by row below, never swallowed
        rows = []
        for i in range(chunk_size):
            try:
                xi, gi = _simulate_with_gold(simulator, theta[i : i + 1], sim_seed + i + 1, reference)
                rows.append((xi[0], {name: v[0] for name, v in gi.items()}))
            except Exception as e:  # noqa: BLE001 - recorded as this row's failure
                rows.append(None)
                failures.append(SimulationFailure(offset + i, theta[i].tolist(), type(e).__name__, str(e)))
        if len(failures) == chunk_size:
            failures = [SimulationFailure(offset + i, theta[i].tolist(), type(batch_error).__name__,
                                          str(batch_error)) for i in range(chunk_size)]
    present = [r for r in rows if r is not None]
    shape = x_shape
    if shape is None and present:
        shapes = [tuple(r[0].shape) for r in present]
        shape = max(set(shapes), key=shapes.count)
    d = theta.shape[1]
    widths = {"joint_score": d} | ({"joint_log_ratio": reference.shape[0]} if reference is not None else {})
    gold = {name: torch.full((chunk_size, w), math.nan) for name, w in widths.items()}
    valid = torch.zeros(chunk_size, dtype=torch.bool)
    x_out = None if shape is None else torch.full((chunk_size, *shape), math.nan)
    failed = {f.row for f in failures}
    for i, r in enumerate(rows):
        if r is None or offset + i in failed:
            continue
        xi, gi = r
        if tuple(xi.shape) != tuple(shape):
            failures.append(SimulationFailure(offset + i, theta[i].tolist(), "ShapeError",
                                              f"expected x of shape {tuple(shape)}, got {tuple(xi.shape)}"))
        elif not torch.isfinite(xi).all():
            failures.append(SimulationFailure(offset + i, theta[i].tolist(), "NonFinite", "x contains NaN or inf"))
        elif not torch.isfinite(gi["joint_score"]).all() or any(v.isnan().any() for v in gi.values()):
            # (a joint log ratio may be ±inf: x, z impossible under a reference θ)
            failures.append(SimulationFailure(offset + i, theta[i].tolist(), "NonFiniteGold",
                                              "the joint score is NaN or inf (or the joint log ratio NaN)"))
        else:
            x_out[i] = xi
            for name, v in gi.items():
                gold[name][i] = v
            valid[i] = True
    return ChunkResult(theta, x_out, valid, sorted(failures, key=lambda f: f.row), gold)
