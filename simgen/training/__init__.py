"""Training: one trainer for every model family (:mod:`~simgen.training.trainer`), the sources of its rows
(:mod:`~simgen.training.data`: in memory, streamed from a campaign store, importance-weighted), checkpoints of
training itself (:mod:`~simgen.training.checkpoint`) and data-parallel training under ``torchrun``
(:mod:`~simgen.training.distributed`)."""

from __future__ import annotations

from . import checkpoint, distributed
from .data import BatchSource, StoreBatches, TensorBatches, check_validation_index, split_indices, weighted_draw
from .distributed import is_main_process
from .trainer import TrainingConfig, TrainingHistory, train

__all__ = [
    "TrainingConfig", "TrainingHistory", "train", "BatchSource", "TensorBatches", "StoreBatches",
    "check_validation_index", "split_indices", "weighted_draw", "is_main_process", "checkpoint", "distributed",
]
