"""Running a simulator over prior draws: chunked, seeded, failures reported and set aside.

Seeding (DESIGN, "Seeding"): the ``num_simulations`` attempts are split into whole chunks of ``chunk_size``
rows (the last chunk is simulated whole and truncated). Chunk k's seed is the child
``numpy.random.SeedSequence(seed).spawn(K)[k]``, split again in two: one seed draws θ (under
``torch.random.fork_rng`` + ``manual_seed``), the other seeds the ``torch.Generator`` handed to the simulator,
so the simulator's noise is never the stream that drew θ. Results therefore depend only on
``(seed, chunk_size)`` — never on how chunks are scheduled.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

__all__ = ["simulate", "chunk_seeds", "simulate_chunk", "ChunkResult", "SimulationFailure"]


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
        with torch.random.fork_rng(devices=[]):
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(theta_seed)
        theta = prior.sample((chunk_size,)).reshape(chunk_size, -1).to(torch.float32)
    with_generator = _accepts_generator(simulator)
    failures: list[SimulationFailure] = []
    offset = k * chunk_size
    try:
        x = _call(simulator, theta, sim_seed, with_generator)
        if x.shape[0] != chunk_size:
            raise ValueError(f"the simulator returned {x.shape[0]} rows for {chunk_size} parameter rows")
        rows: list[Tensor | None] = list(x)
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
) -> tuple[Tensor, Tensor]:
    """Draw θ ~ prior and x ~ simulator(θ) for ``num_simulations`` attempts.

    Args:
        simulator: any callable mapping θ ``[n, d_theta]`` to x ``[n, *x_shape]``; if it accepts
            ``generator=``, it receives a seeded ``torch.Generator``, else the global torch and numpy RNGs are
            seeded (and restored) around the call.
        prior: a torch ``Distribution`` over θ.
        num_simulations: attempts; failed ones are reported and left out.
        seed: the campaign's seed (see the module docstring).
        chunk_size: rows per chunk; with ``seed``, it alone fixes the results.
        progress: show a progress bar.

    Returns:
        ``(theta, x)``: CPU float32 tensors ``[n_valid, d_theta]`` and ``[n_valid, *x_shape]``.

    Raises:
        ValueError: bad arguments, or every simulation failed (the first errors are quoted).
    """
    if not isinstance(num_simulations, int) or num_simulations < 1:
        raise ValueError(f"num_simulations must be a positive int; got {num_simulations!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    if not isinstance(prior, Distribution):
        raise ValueError(f"prior must be a torch Distribution; got {type(prior).__name__}")
    if not callable(simulator):
        raise ValueError(f"simulator must be callable; got {type(simulator).__name__}")
    declared = getattr(simulator, "x_shape", None)
    x_shape = tuple(declared) if declared is not None else None
    num_chunks = math.ceil(num_simulations / chunk_size)
    thetas, xs, valids, failures = [], [], [], []
    with tqdm(total=num_simulations, desc="simulating", disable=not progress, unit="sim") as bar:
        for k in range(num_chunks):
            result = simulate_chunk(simulator, prior, chunk_size, seed, k, x_shape)
            if x_shape is None and result.x is not None:
                x_shape = tuple(result.x.shape[1:])
            keep = min(chunk_size, num_simulations - k * chunk_size)
            thetas.append(result.theta[:keep])
            xs.append(result.x[:keep] if result.x is not None else None)
            valids.append(result.valid[:keep])
            failures += [f for f in result.failures if f.row < num_simulations]
            bar.update(keep)
            bar.set_postfix(failed=len(failures), refresh=False)
    valid = torch.cat(valids)
    if not valid.any():
        first = "; ".join(f"{f.error}: {f.message}" for f in failures[:3])
        raise ValueError(f"all {num_simulations} simulations failed (first: {first})")
    x = torch.cat(
        [t if t is not None else torch.full((v.shape[0], *x_shape), math.nan) for t, v in zip(xs, valids, strict=True)]
    )
    if failures:
        kinds: dict[str, int] = {}
        for f in failures:
            kinds[f.error] = kinds.get(f.error, 0) + 1
        warnings.warn(
            f"{len(failures)} of {num_simulations} simulations failed and were left out "
            f"({', '.join(f'{n} {kind}' for kind, n in kinds.items())}; first: row {failures[0].row}, "
            f"theta={failures[0].theta}: {failures[0].message})",
            RuntimeWarning,
            stacklevel=2,
        )
    return torch.cat(thetas)[valid], x[valid]
