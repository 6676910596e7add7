"""Running a simulator over prior draws: chunked, seeded, failures reported and set aside.

Seeding (DESIGN, "Seeding"): the ``num_simulations`` attempts are split into whole chunks of ``chunk_size``
rows (the last chunk is simulated whole and truncated). Chunk k's seed is the child
``numpy.random.SeedSequence(seed).spawn(K)[k]``, split again in two: one seed draws θ (under
``torch.random.fork_rng`` + ``manual_seed``), the other seeds the ``torch.Generator`` handed to the simulator,
so the simulator's noise is never the stream that drew θ. Results therefore depend only on
``(seed, chunk_size)`` — never on how chunks are scheduled.

Chunks run in this process or on workers (:mod:`simgen.executors`: local processes, dask.distributed) and can be
kept in a store (:mod:`simgen.store`), which makes a campaign resumable and extensible chunk by chunk.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

__all__ = ["simulate", "chunk_seeds", "simulate_chunk", "ChunkResult", "SimulationFailure"]

#: Guards the sections that seed and use torch's (and numpy's) global RNG, so that chunks run by threads
#: (a dask worker with several threads, an in-process cluster) cannot interleave their global-RNG draws.
_GLOBAL_RNG_LOCK = threading.RLock()


@dataclass
class SimulationFailure:
    """One simulation that did not give a valid output: its row, θ and what went wrong."""

    row: int
    theta: list[float]
    error: str
    message: str


@dataclass
class ChunkResult:
    """Output of one chunk: θ ``[k, d]``, x ``[k, *x_shape]`` (invalid rows are NaN), and validity ``[k]``."""

    theta: Tensor
    x: Tensor | None
    valid: Tensor
    failures: list[SimulationFailure] = field(default_factory=list)


def chunk_seeds(seed: int, k: int) -> tuple[int, int]:
    """(θ seed, simulator seed) of chunk ``k``: the two children of ``SeedSequence(seed).spawn(K)[k]``.

    ``SeedSequence(seed, spawn_key=(k,))`` is exactly ``SeedSequence(seed).spawn(K)[k]`` for any K > k.
    """
    child = np.random.SeedSequence(seed, spawn_key=(k,))
    theta_seq, sim_seq = child.spawn(2)
    return int(theta_seq.generate_state(1, np.uint64)[0] >> 1), int(sim_seq.generate_state(1, np.uint64)[0] >> 1)


def _accepts_generator(simulator: Any) -> bool:
    try:
        params = inspect.signature(simulator).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _call(simulator: Any, theta: Tensor, sim_seed: int, with_generator: bool) -> Tensor:
    """Run the simulator on θ with its own seeded randomness; returns a float32 tensor."""
    if with_generator:
        out = simulator(theta, generator=torch.Generator().manual_seed(sim_seed))
    else:  # plain callables (sbi/sbibm simulators) use the global RNG: seed it in a forked state
        with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(sim_seed)
            np_state = np.random.get_state()
            np.random.seed(sim_seed % 2**32)
            try:
                out = simulator(theta)
            finally:
                np.random.set_state(np_state)
    return torch.as_tensor(out).to(torch.float32)


def simulate_chunk(
    simulator: Any,
    prior: Distribution,
    chunk_size: int,
    seed: int,
    k: int,
    x_shape: tuple[int, ...] | None = None,
) -> ChunkResult:
    """Simulate chunk ``k`` (rows ``k·chunk_size`` … ) of a campaign: θ ~ prior, x ~ simulator(θ).

    A chunk whose simulator call raises is retried row by row (row i seeded with the chunk's simulator seed
    plus i), so one bad θ does not sink its neighbours. Rows that raise, contain NaN/inf or have the wrong
    shape are marked invalid and described in ``failures``.
    """
    theta_seed, sim_seed = chunk_seeds(seed, k)
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(theta_seed)
        theta = prior.sample((chunk_size,)).reshape(chunk_size, -1).to(torch.float32)
    with_generator = _accepts_generator(simulator)
    failures: list[SimulationFailure] = []
    offset = k * chunk_size
    try:
        x = _call(simulator, theta, sim_seed, with_generator)
        if x.shape[0] != chunk_size:
            raise ValueError(f"the simulator returned {x.shape[0]} rows for {chunk_size} parameter rows")
        rows: Tensor | list[Tensor | None] = x
    except Exception as batch_error:  # noqa: BLE001 - reported row by row below, never swallowed
        rows = []
        for i in range(chunk_size):
            try:
                rows.append(_call(simulator, theta[i : i + 1], sim_seed + i + 1, with_generator)[0])
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


def simulate(
    simulator: Any,
    prior: Distribution,
    num_simulations: int,
    *,
    seed: int = 0,
    chunk_size: int = 1000,
    progress: bool = True,
    store: str | os.PathLike | None = None,
    return_data: bool = True,
    workers: int | None = None,
    executor: Any = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Draw θ ~ prior and x ~ simulator(θ) for ``num_simulations`` attempts.

    Args:
        simulator: any callable mapping θ ``[n, d_theta]`` to x ``[n, *x_shape]``; if it accepts
            ``generator=``, it receives a seeded ``torch.Generator``, else the global torch and numpy RNGs are
            seeded (and restored) around the call.
        prior: a torch ``Distribution`` over θ (the proposal the campaign draws from).
        num_simulations: attempts; failed ones are reported and left out.
        seed: the campaign's seed (see the module docstring).
        chunk_size: rows per chunk; with ``seed``, it alone fixes the results.
        progress: show a progress bar.
        store: a folder (e.g. ``"runs.h5"``) to keep every chunk in (see :mod:`simgen.store`): chunks already
            there are not simulated again, so an interrupted campaign resumes, and asking for more simulations
            than it holds extends it (whole chunks). The results equal an uninterrupted run's, row for row.
        return_data: ``False`` returns the :class:`~simgen.store.Store` instead of the arrays (needs ``store``),
            for campaigns larger than memory.
        workers: run chunks in this many local processes (see :mod:`simgen.executors`).
        executor: ``"dask"`` (a dask ``LocalCluster``), a scheduler address, a ``distributed.Client``, or
            ``"processes"``; default: this process (or ``workers`` processes).
        metadata: extra JSON metadata for the store; ``{"simulator_options": {...}}`` records the options the
            simulator was built with (the CLI does).

    Returns:
        ``(theta, x)``: CPU float32 tensors ``[n_valid, d_theta]`` and ``[n_valid, *x_shape]``; or the store
        (``return_data=False``).

    Raises:
        ValueError: bad arguments, a store holding another campaign, or every simulation failed (the first
            errors are quoted).
    """
    from .executors import ChunkTask, make_executor

    if not isinstance(num_simulations, int) or num_simulations < 1:
        raise ValueError(f"num_simulations must be a positive int; got {num_simulations!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    if not isinstance(prior, Distribution):
        raise ValueError(f"prior must be a torch Distribution; got {type(prior).__name__}")
    if not callable(simulator):
        raise ValueError(f"simulator must be callable; got {type(simulator).__name__}")
    if not return_data and store is None:
        raise ValueError("return_data=False leaves the data on disk: it needs store=PATH")
    declared = getattr(simulator, "x_shape", None)
    x_shape = tuple(declared) if declared is not None else None
    num_chunks = math.ceil(num_simulations / chunk_size)
    campaign = None
    if store is not None:
        from .store import Store

        campaign = Store.create_or_resume(store, _store_metadata(simulator, prior, seed, chunk_size, x_shape,
                                                                 metadata))
        if x_shape is None and campaign.x_shape is not None:
            x_shape = campaign.x_shape
    results: dict[int, ChunkResult] = {}
    counts = {"failed": 0}
    failures: list[SimulationFailure] = []

    def keep_rows(k: int) -> int:
        return min(chunk_size, num_simulations - k * chunk_size)

    def record(k: int, result: ChunkResult) -> None:
        fails = [f for f in result.failures if f.row < num_simulations]
        counts["failed"] += len(fails)
        if len(failures) < 1000:
            failures.extend(fails[: 1000 - len(failures)])

    with contextlib.ExitStack() as stack:
        if campaign is not None:
            stack.enter_context(campaign.lock())
            done = set(campaign.chunk_indices())
            campaign.set_num_simulations(num_simulations)
        else:
            done = set()
        pending = [k for k in range(num_chunks) if k not in done]
        bar = stack.enter_context(tqdm(total=num_simulations, desc="simulating", disable=not progress, unit="sim"))
        for k in sorted(done):
            if k < num_chunks:
                bar.update(keep_rows(k))
                record(k, _stored_failures(campaign, k, keep_rows(k)))
        made = make_executor(executor, workers)
        if made is not executor:
            stack.callback(made.close)
        task = ChunkTask(simulator, prior, chunk_size, seed, x_shape)
        while pending:
            # Without a known x shape, chunks run one at a time until one has set it, so that every chunk
            # is checked against the same shape whatever the executor.
            batch, pending = (pending, []) if task.x_shape is not None else (pending[:1], pending[1:])
            for k, result in made.run(task, batch):
                if task.x_shape is None and result.x is not None:
                    task.x_shape = tuple(result.x.shape[1:])
                if campaign is not None:
                    campaign.write_chunk(k, result, _log_prob(prior, result.theta))
                if return_data:
                    results[k] = result
                record(k, result)
                bar.update(keep_rows(k))
                bar.set_postfix(failed=counts["failed"], refresh=False)
        if campaign is not None:
            campaign.write_index()
    x_shape = task.x_shape
    if counts["failed"] == num_simulations and return_data:
        first = "; ".join(f"{f.error}: {f.message}" for f in failures[:3])
        raise ValueError(f"all {num_simulations} simulations failed (first: {first})")
    if counts["failed"]:
        kinds: dict[str, int] = {}
        for f in failures:
            kinds[f.error] = kinds.get(f.error, 0) + 1
        warnings.warn(
            f"{counts['failed']} of {num_simulations} simulations failed and were left out "
            f"({', '.join(f'{n} {kind}' for kind, n in kinds.items())}; first: row {failures[0].row}, "
            f"theta={failures[0].theta}: {failures[0].message})",
            RuntimeWarning,
            stacklevel=2,
        )
    if not return_data:
        return campaign
    thetas, xs, valids = [], [], []
    for k in range(num_chunks):
        keep = keep_rows(k)
        if k in results:
            r = results.pop(k)
            theta, x, valid = r.theta[:keep], None if r.x is None else r.x[:keep], r.valid[:keep]
        else:
            rows = campaign.read_chunk(k, keep, ("theta", "x", "valid"))
            theta, x, valid = rows["theta"], rows["x"], rows["valid"]
        thetas.append(theta[valid])
        xs.append(x[valid] if x is not None else torch.empty(0, *x_shape))
        valids.append(valid)
    return torch.cat(thetas), torch.cat(xs)


def _log_prob(prior: Distribution, theta: Tensor) -> Tensor:
    """log q(θ) of the distribution θ was drawn from, ``[k]`` (NaN where it cannot be evaluated)."""
    try:
        return prior.log_prob(theta).reshape(theta.shape[0]).double()
    except Exception:  # noqa: BLE001 - a proposal without log_prob still gets its draws stored
        return torch.full((theta.shape[0],), math.nan, dtype=torch.float64)


def _stored_failures(store: Any, k: int, keep: int) -> ChunkResult:
    rows = store.read_chunk(k, keep, ("failures",))
    return ChunkResult(torch.empty(0), None, torch.empty(0, dtype=torch.bool), rows["failures"])


def _store_metadata(
    simulator: Any, prior: Distribution, seed: int, chunk_size: int, x_shape: tuple[int, ...] | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    from .store import describe_distribution, describe_simulator

    extra = dict(extra or {})
    options = extra.pop("simulator_options", None)
    return {
        "simulator": describe_simulator(simulator, options),
        "proposal": describe_distribution(prior),
        "seed": int(seed),
        "chunk_size": int(chunk_size),
        "theta_dim": int(prior.event_shape.numel()) if len(prior.event_shape) else 1,
        "x_shape": None if x_shape is None else list(x_shape),
        "x_kind": getattr(simulator, "x_kind", None),
        "x_discrete": [int(i) for i in getattr(simulator, "x_discrete", ()) or ()],
        "parameter_names": list(getattr(simulator, "parameter_names", []) or []),
        **extra,
    }
