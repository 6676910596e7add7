"""Data-parallel training on ``torch.distributed``: the process group ``torchrun`` (or SLURM's ``srun`` through
it) describes, seen by the trainer as a :class:`Group`.

Each of the N ranks holds a replica of the model; every step, each rank computes the gradient of its share of the
global batch and DistributedDataParallel all-reduces (averages) the gradients, so the replicas take identical
steps (Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
arXiv:2006.15704). The backend is NCCL on GPUs and gloo on CPUs. Outside ``torchrun`` (``WORLD_SIZE`` unset or 1)
nothing here is used and training is the one-process loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Group", "setup", "current", "is_main_process"]


@dataclass(frozen=True)
class Group:
    """This process's place in an initialised process group of ``world_size`` > 1 ranks.

    Attributes:
        rank: this process's rank, 0 … world_size − 1 (rank 0 writes files and prints progress).
        world_size: number of ranks.
        device: where this rank trains (its own GPU under NCCL).
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where collective tensors must live: the GPU for NCCL, the CPU for gloo."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_reduce(self, t: Tensor) -> Tensor:
        """Σ over ranks of ``t`` (a new tensor on ``t``'s device and dtype)."""
        out = t.detach().to(self.comm_device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device)

    def broadcast(self, t: Tensor) -> Tensor:
        """Rank 0's ``t`` on every rank (a new tensor on ``t``'s device and dtype)."""
        out = t.detach().to(self.comm_device, copy=True)
        dist.broadcast(out, src=0)
        return out.to(t.device)

    def shared_seed(self, seed: int | None) -> int:
        """``seed``, or when ``None`` a random seed drawn by rank 0, the same on every rank."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        return int(self.broadcast(torch.tensor(seed, dtype=torch.int64)))

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model``'s loss as a DistributedDataParallel module: ``wrapped(y, c) == model.loss(y, c)``, with its
        gradients all-reduced (averaged over ranks) during ``backward``."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Families differ in which parameters a loss touches (a VAE's prior net, an unused head), so DDP looks
        # for unused ones instead of failing on them.
        return DistributedDataParallel(_Loss(model), device_ids=ids, find_unused_parameters=True)


class _Loss(nn.Module):
    """DDP synchronises through ``forward``; the trainer's modules expose ``loss`` instead."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: Tensor, c: Tensor | None) -> Tensor:
        return self.model.loss(y, c)


def setup(device: str | torch.device | None = None) -> Group | None:
    """Join the process group ``torchrun`` describes, if any: ``None`` when this is the only process.

    Under ``torchrun --nproc-per-node N`` (environment ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``) the group is initialised with NCCL when ``device`` is CUDA, else gloo. A process group the
    caller initialised already is used as it is. A CUDA ``device`` without an index becomes ``cuda:LOCAL_RANK``.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current(device)


def current(device: str | torch.device | None = None) -> Group | None:
    """The initialised process group of more than one rank, as a :class:`Group`; ``None`` otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Group(dist.get_rank(), dist.get_world_size(), device)


def is_main_process() -> bool:
    """``True`` unless this is a rank other than 0 of an initialised process group (the rank that should write
    files, e.g. ``estimator.save``, in a script run by ``torchrun``)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
