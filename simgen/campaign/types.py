"""What one chunk of a campaign produces: its rows and the simulations that failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["ChunkResult", "SimulationFailure"]


@dataclass
class SimulationFailure:
    """One simulation that did not give a valid output: its row, θ and what went wrong."""

    row: int
    theta: list[float]
    error: str
    message: str


@dataclass
class ChunkResult:
    """Output of one chunk: θ ``[k, d]``, x ``[k, *x_shape]`` (invalid rows are NaN), validity ``[k]`` and, for a
    campaign that mines gold (:mod:`simgen.campaign.gold`), ``gold``: ``{"joint_score": [k, d], ...}`` (NaN rows
    where invalid)."""

    theta: Tensor
    x: Tensor | None
    valid: Tensor
    failures: list[SimulationFailure] = field(default_factory=list)
    gold: dict[str, Any] | None = None
