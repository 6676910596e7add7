"""Former home of the executors; kept so that ``from simgen.executors import ...`` keeps working.

The code lives in :mod:`simgen.campaign.executors`.
"""

from __future__ import annotations

from .campaign.executors import ChunkTask, Dask, InProcess, LocalProcesses, make_executor, run_chunk

__all__ = ["ChunkTask", "run_chunk", "InProcess", "LocalProcesses", "Dask", "make_executor"]
