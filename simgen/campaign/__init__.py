"""Simulation campaigns: seeded chunks of (θ, x), run here or on workers, kept in a crash-safe store.

Modules, each importing only those listed before it (and :mod:`simgen.utils`):

* :mod:`~simgen.campaign.types` — :class:`ChunkResult`, :class:`SimulationFailure`;
* :mod:`~simgen.campaign.describe` — JSON descriptions of priors, proposals and simulators;
* :mod:`~simgen.campaign.gold` — the gold protocol: joint scores and ratios from a simulator's latents;
* :mod:`~simgen.campaign.chunks` — one chunk: its seeds, θ draws and simulations;
* :mod:`~simgen.campaign.executors` — where chunks run (this process, local processes, dask);
* :mod:`~simgen.campaign.store` — the on-disk store of a campaign;
* :mod:`~simgen.campaign.simulate` — :func:`simulate`, which ties them together.
"""

from __future__ import annotations

from .chunks import chunk_seeds, simulate_chunk
from .describe import describe_distribution, describe_simulator, prior_from_json, prior_to_json
from .executors import Dask, InProcess, LocalProcesses, make_executor
from .gold import check_gold_simulator, joint_gold, supports_gold
from .simulate import simulate
from .store import Store, open_store
from .types import ChunkResult, SimulationFailure

__all__ = [
    "simulate", "Store", "open_store", "ChunkResult", "SimulationFailure", "chunk_seeds", "simulate_chunk",
    "describe_distribution", "describe_simulator", "prior_to_json", "prior_from_json", "InProcess",
    "LocalProcesses", "Dask", "make_executor", "supports_gold", "check_gold_simulator", "joint_gold",
]
