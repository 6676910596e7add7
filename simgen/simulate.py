"""Former home of :func:`simulate`; kept so that ``from simgen.simulate import ...`` keeps working.

The code lives in :mod:`simgen.campaign` (``simulate``, ``chunks``, ``types``).
"""

from __future__ import annotations

from .campaign.chunks import chunk_seeds, simulate_chunk
from .campaign.simulate import simulate
from .campaign.types import ChunkResult, SimulationFailure

__all__ = ["simulate", "chunk_seeds", "simulate_chunk", "ChunkResult", "SimulationFailure"]
