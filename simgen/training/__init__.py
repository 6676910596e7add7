"""Training: one trainer for every model family (:mod:`~simgen.training.trainer`) and the sources of its rows
(:mod:`~simgen.training.data`: in memory, streamed from a campaign store, importance-weighted)."""

from __future__ import annotations

from .data import BatchSource, StoreBatches, TensorBatches, split_indices, weighted_draw
from .trainer import TrainingConfig, TrainingHistory, train

__all__ = [
    "TrainingConfig", "TrainingHistory", "train", "BatchSource", "TensorBatches", "StoreBatches",
    "split_indices", "weighted_draw",
]
