"""Checkpoints of training itself, so that a pre-empted job continues where it stopped.

A checkpoint holds everything the next epoch depends on: the weights and their moving average, the optimiser's
moments, the learning-rate schedule, the random states (the data-order generator and every rank's torch
generator), the epoch count, the history and the early-stopping state (best loss, best weights, patience
counter). It is written atomically (a temporary file in the same folder, flushed, then ``os.replace``), so a
kill at any moment leaves either the previous checkpoint or the new one. Loading uses
``torch.load(weights_only=True)``: tensors and plain containers only, no code runs from the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_seed", "FORMAT"]

#: version of the checkpoint layout, checked on loading
FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` (tensors and plain containers) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The state saved at ``path`` (``None`` when there is no file), read without running code from it."""
    path = Path(path)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a simgen training checkpoint (format {FORMAT}); remove it or pass "
                         "another checkpoint path")
    return state


def checkpoint_seed(path: str | os.PathLike | None, seed: int | None) -> int | None:
    """The seed a run with checkpoint ``path`` uses: ``seed`` when given, else the one its checkpoint recorded,
    else a fresh random one (recorded by the first checkpoint, so that a resumed run draws the same split)."""
    if seed is not None or path is None:
        return seed
    state = load_checkpoint(path)
    if state is not None:
        return int(state["seed"])
    return int(torch.randint(0, 2**62, ()).item())
