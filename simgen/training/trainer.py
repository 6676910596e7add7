"""One trainer for every model family.

Any module with ``loss(y, c) -> scalar`` trains here: AdamW, a seed-fixed validation split, early stopping
that restores the best state, a learning-rate schedule, gradient clipping and a tqdm progress bar showing the
validation loss. Rows come from a :class:`BatchSource`: in memory (:class:`TensorBatches`: the data live on the
device as whole tensors and batches are index gathers, no DataLoader, no per-step Python beyond the optimiser
step, which is what dominates small models' training time), or streamed from a campaign store
(:class:`~simgen.training.data.StoreBatches`) when the data do not fit in memory. The loop is the same for both.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import checkpoint_seed, load_checkpoint, save_checkpoint
from .data import BatchSource, TensorBatches

__all__ = ["TrainingConfig", "TrainingHistory", "train", "PRECISIONS"]

#: ``TrainingConfig.precision`` → the autocast dtype of the training steps (``None``: float32, no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class TrainingConfig:
    """Settings of :func:`train`.

    Attributes:
        batch_size: rows per optimiser step; ``None`` picks n_train // 8 clamped to [64, ``max_batch_size``], so
            that small data sets still get enough steps per epoch and large ones amortise the per-step overhead.
        max_batch_size: the upper clamp of the automatic batch size. Above 512 rows the learning rate is scaled
            up in proportion (the linear scaling rule of Goyal et al. 2017, arXiv:1706.02677), so that an epoch
            of fewer, larger steps moves the weights as far.
        learning_rate: AdamW's initial learning rate (for batches of up to 512 rows).
        weight_decay: AdamW's decoupled weight decay.
        max_epochs: hard cap on passes over the training rows.
        validation_fraction: share of rows held out (seed-fixed) for early stopping.
        patience: stop after this many epochs without a lower validation loss.
        start_patience: the patience while the run is still on its start (the larger of it and ``patience``;
            ``None``: ``patience``), and the plateau schedule's wait there is a third of it. Leaving a poor start
            (such as the least-squares linear-Gaussian fit a flow begins from), a run's validation loss can rise
            or stay level for many epochs before it drops below the first epoch's; a longer start patience lets
            it get there without making every later plateau as long.
        start_margin: a run is on its start until its validation loss falls below the first epoch's by more
            than this (in the loss's units: nats per row for a density's negative log-likelihood), so that
            level wandering on the start, within the validation estimate's noise, does not end it.
        lr_schedule: ``"plateau"`` halves the learning rate after ``patience // 3`` stale epochs (on the start,
            a third of the start patience),
            ``"cosine"`` anneals it to 1 % over ``max_epochs``, ``"constant"`` keeps it.
        clip_grad_norm: clip the global gradient norm to this value (``None``: no clipping).
        restart_on_decay: with the ``"plateau"`` schedule, each time it lowers the learning rate, restart from
            the best state so far (the raw weights and their average) with AdamW's moment estimates cleared, so
            that a run thrown off course by a few large steps goes on from where it was best, with smaller
            steps, instead of spending its patience climbing back (or stopping on a poor state). A run still on
            its start (``start_margin``) is not restarted: it has learnt nothing to go back to, and its
            validation loss may rise for a while as it leaves a poor start (such as the linear-Gaussian fit a
            flow begins from) before it falls below the first epoch's; a restart would send it down the same
            path again.
        max_time: stop after this many seconds (the best state so far is kept).
        validate_initial: validate the model as built, before its first step, and return that state when it is
            better than every epoch's (:attr:`TrainingHistory.best_epoch` ``-1``). Training, early stopping and
            restarts go on exactly as without it, judged by the epochs alone (a run can get worse for a while
            before it leaves a poor start); only the final choice sees the initial state too. So a fit never
            returns a model worse on the held-out rows than the one it began from: where the family starts from
            an exact or nearly exact model (a flow at the identity on the least-squares linear-Gaussian fit of a
            linear-Gaussian problem), steps of a learning rate chosen for harder problems can only add noise.
        ema_decay: validate, keep and restore an exponential moving average of the weights,
            φ̄ ← β φ̄ + (1 − β) φ after every step (Polyak averaging, β = ``ema_decay``), which smooths the
            optimiser's noise and overfits later; ``None`` uses the raw weights.
        precision: arithmetic of the training steps' forward passes: ``"32"`` (float32 throughout), ``"bf16"``
            or ``"16"`` (mixed precision, Micikevicius et al. 2018, arXiv:1710.03740: ``torch.autocast`` runs
            matrix products and convolutions in bfloat16 or float16, everything else, the weights and the
            optimiser in float32; float16 gradients are loss-scaled by a ``GradScaler`` against underflow).
            Only the training steps change: validation, early stopping, ``log_prob`` and ``sample`` stay in
            float32. bfloat16 needs a CPU or a GPU with bf16 units (Ampere and later); float16 is for GPUs.
    """

    batch_size: int | None = None
    max_batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    max_epochs: int = 500
    validation_fraction: float = 0.1
    patience: int = 10
    start_patience: int | None = None
    start_margin: float = 0.0
    lr_schedule: Literal["plateau", "cosine", "constant"] = "plateau"
    clip_grad_norm: float | None = 5.0
    restart_on_decay: bool = False
    max_time: float | None = None
    validate_initial: bool = True
    ema_decay: float | None = 0.98
    precision: Literal["32", "bf16", "16"] = "32"

    def __post_init__(self) -> None:
        # TOML and the command line may give the number (32, 16)
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}; got {self.precision!r}")
        if (self.batch_size is not None and self.batch_size < 1) or min(self.max_batch_size, self.max_epochs,
                                                                        self.patience) < 1:
            raise ValueError(
                f"batch_size, max_batch_size, max_epochs and patience must be >= 1; got {self.batch_size}, "
                f"{self.max_batch_size}, {self.max_epochs}, {self.patience}"
            )
        if self.start_patience is not None and self.start_patience < 1:
            raise ValueError(f"start_patience must be >= 1 or None; got {self.start_patience}")
        if not (math.isfinite(self.start_margin) and self.start_margin >= 0):
            raise ValueError(f"start_margin must be a finite number >= 0; got {self.start_margin}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1); got {self.validation_fraction}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None; got {self.ema_decay}")
        if self.lr_schedule not in ("plateau", "cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'plateau', 'cosine' or 'constant'; got {self.lr_schedule!r}")


@dataclass
class TrainingHistory:
    """What happened during :func:`train`.

    Attributes:
        train_loss: mean training loss per epoch.
        validation_loss: validation loss per epoch.
        learning_rate: learning rate used in each epoch.
        best_epoch: epoch (0-based) whose state was restored; ``-1``: the initial state, better than every
            epoch's (:attr:`TrainingConfig.validate_initial`).
        best_validation_loss: its validation loss.
        initial_validation_loss: the validation loss of the model as built, before its first step (``None``
            when not validated).
        epochs: epochs run.
        stopped_early: ``True`` when patience (or ``max_time``) ended training before ``max_epochs``.
        wall_time: seconds spent training.
        num_train, num_validation: rows in each split.
    """

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_validation_loss: float = math.inf
    initial_validation_loss: float | None = None
    epochs: int = 0
    stopped_early: bool = False
    wall_time: float = 0.0
    num_train: int = 0
    num_validation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(
    model: nn.Module,
    y: Tensor | BatchSource,
    c: Tensor | None = None,
    config: TrainingConfig | None = None,
    *,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    epoch_hook: Callable[[int], None] | None = None,
    weights: Tensor | None = None,
    checkpoint: str | os.PathLike | None = None,
    validation_index: Tensor | None = None,
) -> TrainingHistory:
    """Fit ``model`` by minimising ``model.loss(y_batch, c_batch)`` with AdamW and early stopping.

    Args:
        model: module with ``loss(y, c) -> Tensor`` (scalar); all its parameters are optimised.
        y: modelled rows ``[n, *y_shape]``, or a :class:`BatchSource` serving ``(y, c)`` batches (then ``c``
            and ``weights`` are ``None``; its split is its own).
        c: context rows ``[n, *c_shape]`` or ``None``.
        config: :class:`TrainingConfig` (defaults when ``None``).
        seed: fixes the validation split, the batch order and any randomness inside ``loss``.
        device: where to train (default: the model's device).
        progress: show a tqdm bar with the validation loss.
        epoch_hook: called as ``epoch_hook(epoch)`` before each epoch (e.g. a KL warm-up); a model's own
            ``on_epoch(epoch)`` (every :class:`~simgen.models.ConditionalDensity` has one) is called too.
        weights: importance weights ``[n]`` of the rows (see :class:`TensorBatches`).
        checkpoint: a file to save the training state to after every epoch (atomically; see
            :mod:`~simgen.training.checkpoint`) and to resume from when it exists: a run killed and started again
            with the same arguments ends as the uninterrupted run would (same weights, same history; with
            ``max_time`` the elapsed time carries over but the cut-off epoch may differ). A finished run's
            checkpoint returns its result at once. A checkpoint of another run (other data sizes, settings,
            seed, model or number of ranks) is an error. Without ``seed`` the checkpoint's is used.
        validation_index: the rows ``[v]`` of tensors y, c to hold out for early stopping, instead of a
            seed-fixed ``validation_fraction`` of them: rows that another model must not have learned from either
            (:meth:`simgen.PosteriorEstimator.fit` holds out the same simulations from its emulator and itself).

    Under ``torchrun`` (an initialised process group of N > 1 ranks, see :mod:`~simgen.training.distributed`)
    training is data-parallel: the model is wrapped in DistributedDataParallel, each step's global batch of
    ``batch_size`` rows is split over the ranks (a sharded source such as ``StoreBatches(shard=...)`` serves each
    rank its own rows; otherwise every rank takes its slice of the same batch), each rank's loss is weighted by
    its share of the rows so that the averaged gradient is the global batch's, the losses are all-reduced, and
    rank 0 decides early stopping (broadcast), writes the checkpoint and shows progress.

    Returns:
        A :class:`TrainingHistory`; the model is left in eval mode with the best validation state loaded.
    """
    config = config or TrainingConfig()
    device = torch.device(device) if device is not None else _module_device(model)
    group = distributed.setup(device)
    if group is not None:
        device = group.device
    model.to(device)
    if checkpoint is not None:
        seed = checkpoint_seed(checkpoint, seed)
    if group is not None:  # every rank must draw the same split and batch order
        seed = group.shared_seed(seed)
    split_seed = int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())
    generator = torch.Generator().manual_seed(split_seed)
    if isinstance(y, Tensor):
        data: BatchSource = TensorBatches(y, c, config.validation_fraction, generator, device, weights,
                                          validation_index)
    elif isinstance(y, BatchSource) and c is None and weights is None and validation_index is None:
        data = y
    else:
        raise ValueError("train takes tensors y, c (and weights, validation_index) or a BatchSource alone")
    n_train, n_validation = data.num_train, data.num_validation
    sharded = group is not None and bool(getattr(data, "sharded", False))
    if sharded:  # each rank's source holds its own rows: the split's sizes are the sums
        counts = group.all_gather_object((n_train, n_validation))
        n_train, n_validation = sum(n for n, _ in counts), sum(v for _, v in counts)
    batch_size, learning_rate = config.batch_size, config.learning_rate
    if batch_size is None:
        batch_size = min(config.max_batch_size, max(64, n_train // 8))
        learning_rate *= max(1.0, batch_size / 512)
    if group is not None and batch_size < group.world_size:
        raise ValueError(f"batch_size ({batch_size}) must be at least the number of ranks ({group.world_size})")

    # The fused kernel updates every parameter in one call: a small model's step is otherwise ~100 tiny ops.
    fused = device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in model.parameters())
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, weight_decay=config.weight_decay, fused=fused or None
    )
    scheduler = _scheduler(optimizer, config)
    history = TrainingHistory(num_train=n_train, num_validation=n_validation)
    # DDP broadcasts rank 0's weights and buffers as it wraps the model: before the averaged copy is made, so that
    # every rank validates (and may return) the same initial state
    ddp = group.wrap(model) if group is not None else None
    # The averaged copy is what gets validated, kept and restored; the raw weights only take the steps.
    averaged = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        if config.ema_decay is not None
        else None
    )
    evaluated = averaged.module if averaged is not None else model
    best_state = copy.deepcopy(evaluated.state_dict())
    initial_state: dict[str, Tensor] | None = None
    stale = 0
    first_epoch, done, elapsed = 0, False, 0.0
    fingerprint, saved = None, None
    if checkpoint is not None:
        fingerprint = {
            "config": _fingerprint_config(config), "batch_size": batch_size, "learning_rate": learning_rate,
            "seed": seed,
            "num_train": n_train, "num_validation": n_validation,
            **({"validation_index": _index_digest(validation_index)} if validation_index is not None else {}),
            "world_size": group.world_size if group is not None else 1,
            "parameters": [[name, list(p.shape)] for name, p in model.named_parameters()],
        }
        saved = load_checkpoint(checkpoint)
        if saved is not None:
            if saved["fingerprint"] != fingerprint:
                raise ValueError(f"the checkpoint {checkpoint} belongs to another training run (other data, "
                                 "settings, seed, model or number of ranks); remove it or pass another path")
            model.load_state_dict(saved["model"])
            if averaged is not None:
                averaged.load_state_dict(saved["averaged"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            generator.set_state(saved["generator"])
            best_state, stale = saved["best_state"], int(saved["stale"])
            initial_state = saved.get("initial_state")  # (absent from checkpoints written before it existed)
            history = TrainingHistory(**saved["history"])
            first_epoch, done, elapsed = int(saved["epoch"]), bool(saved["done"]), float(saved["elapsed"])
    autocast, scaler = _mixed_precision(config.precision, device)
    if saved is not None and saved.get("scaler") is not None:
        scaler.load_state_dict(saved["scaler"])
    start = time.perf_counter() - elapsed
    # Randomness inside the loss (dropout, diffusion times, dequantisation) follows the seed too, without
    # touching the caller's global RNG state.
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            # each rank draws its own noise for its own rows
            torch.manual_seed(int(seed) + (group.rank if group is not None else 0))
        if saved is not None:
            rank = group.rank if group is not None else 0
            torch.set_rng_state(saved["rng"][rank])
            if devices and saved["cuda_rng"][rank].numel():  # (none when the checkpoint was written on a CPU)
                torch.cuda.set_rng_state(saved["cuda_rng"][rank], devices[0])
        main = group is None or group.is_main
        epochs = range(first_epoch, first_epoch if done else config.max_epochs)
        bar = tqdm(epochs, desc="training", disable=not (progress and main), leave=False, unit="epoch")
        for epoch in bar:
            if epoch_hook is not None:
                epoch_hook(epoch)
            for module in {id(model): model, id(evaluated): evaluated}.values():
                # any module with loss(y, c) trains here, so the hook is optional (ConditionalDensity declares
                # it); the averaged copy follows schedules such as a KL warm-up too
                if hasattr(module, "on_epoch"):
                    module.on_epoch(epoch)
            if epoch == 0 and config.validate_initial:
                # the draws of a stochastic loss leave the run's random stream as it would be without this pass,
                # so that the run takes the same steps either way
                with torch.random.fork_rng(devices=devices):
                    if group is None:
                        initial = _evaluate(evaluated, data.validation_batches(batch_size * 16), device)
                    else:
                        initial, _ = _evaluate_ranks(evaluated, data, batch_size * 16, device, group, sharded,
                                                     torch.zeros(()), 0)
                history.initial_validation_loss = initial
                initial_state = copy.deepcopy(evaluated.state_dict())
            model.train()
            total = torch.zeros((), device=device)
            seen = 0
            if group is None:
                for y_batch, c_batch in data.train_batches(batch_size, generator):
                    y_batch = y_batch.to(device)
                    with autocast():
                        loss = model.loss(y_batch, None if c_batch is None else c_batch.to(device)).float()
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    _step(model, optimizer, scaler, config.clip_grad_norm)
                    if averaged is not None:
                        averaged.update_parameters(model)
                    total += loss.detach() * y_batch.shape[0]
                    seen += y_batch.shape[0]
            else:
                for y_batch, c_batch, rows in _rank_batches(data, batch_size, generator, group, sharded):
                    y_batch = y_batch.to(device)
                    with autocast():
                        loss = ddp(y_batch, None if c_batch is None else c_batch.to(device)).float()
                    # DDP averages the ranks' gradients; weighting each rank's mean loss by its share of the
                    # step's rows makes that average the gradient of the global batch's mean loss
                    step_rows = float(group.all_reduce(torch.tensor(float(rows), dtype=torch.float64)))
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss * (group.world_size * rows / step_rows)).backward()
                    _step(model, optimizer, scaler, config.clip_grad_norm)
                    if averaged is not None:
                        averaged.update_parameters(model)
                    total += loss.detach() * rows
                    seen += rows
            if group is None:
                val = _evaluate(evaluated, data.validation_batches(batch_size * 16), device)
                train_loss = float(total) / max(seen, 1)
            else:
                val, train_loss = _evaluate_ranks(evaluated, data, batch_size * 16, device, group, sharded,
                                                  total, seen)
            history.train_loss.append(train_loss)
            history.validation_loss.append(val)
            history.learning_rate.append(optimizer.param_groups[0]["lr"])
            history.epochs = epoch + 1
            if not math.isfinite(val) and not math.isfinite(history.best_validation_loss):
                raise FloatingPointError(
                    f"validation loss is {val} at epoch {epoch}: the model diverged from the start; "
                    "lower the learning rate or check the training data"
                )
            if val < history.best_validation_loss:
                history.best_validation_loss, history.best_epoch, stale = val, epoch, 0
                best_state = copy.deepcopy(evaluated.state_dict())
            else:
                stale += 1
            bar.set_postfix(val=f"{val:.4g}", best=f"{history.best_validation_loss:.4g}", refresh=False)
            on_start = history.best_validation_loss >= history.validation_loss[0] - config.start_margin
            patience = _patience(config, on_start)
            if config.lr_schedule == "plateau":
                lr_before = optimizer.param_groups[0]["lr"]
                scheduler.patience = max(1, patience // 3)
                scheduler.step(val)
                # a run still on its start has learnt nothing to go back to: its validation loss can rise for a
                # while as it leaves a poor start, and a restart would send it down the same path
                if (config.restart_on_decay and optimizer.param_groups[0]["lr"] < lr_before and stale > 0
                        and not on_start):
                    _restart(model, averaged, optimizer, best_state)
            elif scheduler is not None:
                scheduler.step()
            out_of_time = config.max_time is not None and time.perf_counter() - start > config.max_time
            if group is not None:  # clocks differ between ranks: rank 0's decides
                out_of_time = bool(group.broadcast(torch.tensor(out_of_time)))
            stop = stale >= patience or out_of_time
            if stop:
                history.stopped_early = True
            if checkpoint is not None:
                _save(checkpoint, group, fingerprint, seed, epoch + 1, stop or epoch + 1 == config.max_epochs,
                      time.perf_counter() - start, model, averaged, optimizer, scheduler, generator, best_state,
                      initial_state, stale, history, devices, scaler)
            if stop:
                break
        bar.close()
    initial = history.initial_validation_loss
    if initial_state is not None and initial is not None and initial < history.best_validation_loss:
        # better than every epoch (a non-finite loss never is)
        best_state, history.best_epoch, history.best_validation_loss = initial_state, -1, initial
    model.load_state_dict(best_state)
    model.eval()
    history.wall_time = time.perf_counter() - start
    return history


def _rank_batches(
    data: BatchSource, batch_size: int, generator: torch.Generator, group: distributed.Group, sharded: bool
) -> Iterator[tuple[Tensor, Tensor | None, int]]:
    """This rank's part of each step's global batch of ``batch_size`` rows, with its number of rows.

    A sharded source serves this rank's rows only, ``batch_size`` split as evenly as the ranks allow, for as
    many steps as the smallest shard fills (every rank must take the same number of steps). Otherwise every rank
    draws the same global batches and takes its slice; a rank whose slice is empty computes the loss of one row
    with weight 0, so that it still joins the step's all-reduce.
    """
    share = batch_size // group.world_size + (group.rank < batch_size % group.world_size)
    if sharded:
        counts = group.all_gather_object((data.num_train, share))
        steps = min(-(-n // b) for n, b in counts)
        for y_batch, c_batch in itertools.islice(data.train_batches(share, generator), steps):
            yield y_batch, c_batch, y_batch.shape[0]
        return
    for y_all, c_all in data.train_batches(batch_size, generator):
        y_batch = torch.tensor_split(y_all, group.world_size)[group.rank]
        c_batch = None if c_all is None else torch.tensor_split(c_all, group.world_size)[group.rank]
        if y_batch.shape[0] == 0:
            yield y_all[:1], None if c_all is None else c_all[:1], 0
        else:
            yield y_batch, c_batch, y_batch.shape[0]


@torch.no_grad()
def _evaluate_ranks(
    model: nn.Module, data: BatchSource, batch_size: int, device: torch.device, group: distributed.Group,
    sharded: bool, total: Tensor, seen: int,
) -> tuple[float, float]:
    """(validation loss, training loss) of the epoch over every rank's rows: each rank sums its own (a sharded
    source's validation rows, else its slice of each batch), the sums are all-reduced, and rank 0's result is
    broadcast so that every rank takes the same early-stopping decision."""
    model.eval()
    val_total, val_rows = 0.0, 0
    for y_batch, c_batch in data.validation_batches(batch_size):
        if not sharded:
            y_batch = torch.tensor_split(y_batch, group.world_size)[group.rank]
            c_batch = None if c_batch is None else torch.tensor_split(c_batch, group.world_size)[group.rank]
            if y_batch.shape[0] == 0:
                continue
        c_batch = None if c_batch is None else c_batch.to(device)
        val_total += float(model.loss(y_batch.to(device), c_batch)) * y_batch.shape[0]
        val_rows += y_batch.shape[0]
    sums = torch.tensor([val_total, val_rows, float(total), seen], dtype=torch.float64)
    sums = group.broadcast(group.all_reduce(sums))
    return float(sums[0] / sums[1]), float(sums[2] / max(float(sums[3]), 1.0))


def _save(
    path: str | os.PathLike, group: distributed.Group | None, fingerprint: dict[str, Any], seed: int | None,
    epochs: int, done: bool, elapsed: float, model: nn.Module, averaged: nn.Module | None,
    optimizer: torch.optim.Optimizer, scheduler: Any, generator: torch.Generator, best_state: dict[str, Tensor],
    initial_state: dict[str, Tensor] | None, stale: int, history: TrainingHistory, devices: list[int],
    scaler: torch.amp.GradScaler,
) -> None:
    """Rank 0 writes the checkpoint; every rank's torch random state goes in it (each draws its own noise)."""
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(devices[0]) if devices else torch.empty(0, dtype=torch.uint8)
    if group is not None:
        states = group.all_gather_object((rng, cuda_rng))
        rng, cuda_rng = [s[0] for s in states], [s[1] for s in states]
        if not group.is_main:
            return
    else:
        rng, cuda_rng = [rng], [cuda_rng]
    save_checkpoint({
        "fingerprint": fingerprint, "seed": seed, "epoch": epochs, "done": done, "elapsed": elapsed,
        "model": model.state_dict(), "averaged": averaged.state_dict() if averaged is not None else None,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state(), "rng": rng, "cuda_rng": cuda_rng, "best_state": best_state,
        "initial_state": initial_state, "stale": stale, "history": history.to_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
    }, path)


def _patience(config: TrainingConfig, on_start: bool) -> int:
    """The early-stopping patience in force: ``TrainingConfig.start_patience`` while the run is on its start
    (``start_margin``), ``patience`` after."""
    if on_start and config.start_patience is not None:
        return max(config.start_patience, config.patience)
    return config.patience


def _index_digest(index: Tensor) -> str:
    """A short digest of the held-out rows, so that a checkpoint of another split is refused."""
    return hashlib.sha256(torch.as_tensor(index).long().cpu().numpy().tobytes()).hexdigest()[:16]


def _fingerprint_config(config: TrainingConfig) -> dict[str, Any]:
    """The settings a checkpoint must match; float32 precision, ``restart_on_decay=False``,
    ``start_patience=None``, ``start_margin=0`` and ``validate_initial=True`` are left out, so that checkpoints
    written before those settings existed still resume (the initial validation is the first epoch's business, done
    before any checkpoint is written)."""
    settings = asdict(config)
    if settings["precision"] == "32":
        del settings["precision"]
    if not settings["restart_on_decay"]:
        del settings["restart_on_decay"]
    if settings["start_patience"] is None:
        del settings["start_patience"]
    if settings["start_margin"] == 0:
        del settings["start_margin"]
    if settings["validate_initial"]:
        del settings["validate_initial"]
    return settings


def _restart(model: nn.Module, averaged: AveragedModel | None, optimizer: torch.optim.Optimizer,
             best_state: dict[str, Tensor]) -> None:
    """Load the best state into the raw weights (and their average) and clear AdamW's moments, keeping its
    learning rate: ``TrainingConfig.restart_on_decay``."""
    model.load_state_dict(best_state)
    if averaged is not None:
        averaged.module.load_state_dict(best_state)
    optimizer.state.clear()


def _mixed_precision(precision: str, device: torch.device) -> tuple[Callable[[], Any], torch.amp.GradScaler]:
    """(a context manager factory for the training forward pass, the gradient scaler) of a precision setting.

    float16's narrow exponent range underflows small gradients, so its loss is scaled up before the backward
    pass and the gradients unscaled before clipping and the step (dynamic loss scaling); bfloat16 has float32's
    range and needs no scaling. The scaler is disabled (a pass-through) otherwise.
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext, torch.amp.GradScaler(device.type, enabled=False)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision={precision!r} needs a CPU or CUDA device; got {device}")
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16' needs a GPU with bfloat16 support (Ampere or later); use '16'")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    return (lambda: torch.autocast(device_type=device.type, dtype=dtype)), scaler


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
          clip_grad_norm: float | None) -> None:
    """One optimiser step from the (possibly loss-scaled) gradients: unscale, clip, step (skipped by the scaler
    when a float16 gradient overflowed), update the scale."""
    if clip_grad_norm is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm, foreach=True)
    scaler.step(optimizer)
    scaler.update()


@torch.no_grad()
def _evaluate(model: nn.Module, batches: Iterator[tuple[Tensor, Tensor | None]], device: torch.device) -> float:
    """Mean loss over the validation batches (weighted by batch size), in eval mode."""
    model.eval()
    total, n = 0.0, 0
    for yc, cc in batches:
        total += float(model.loss(yc.to(device), None if cc is None else cc.to(device))) * yc.shape[0]
        n += yc.shape[0]
    return total / n


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> Any:
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(1, config.patience // 3), min_lr=config.learning_rate * 1e-2
        )
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.max_epochs, eta_min=config.learning_rate * 1e-2
        )
    return None


def _module_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
