"""One trainer for every model family.

Any module with ``loss(y, c) -> scalar`` trains here: AdamW, a seed-fixed validation split, early stopping
that restores the best state, a learning-rate schedule, gradient clipping and a tqdm progress bar showing the
validation loss. Rows come from a :class:`BatchSource`: in memory (:class:`TensorBatches`: the data live on the
device as whole tensors and batches are index gathers, no DataLoader, no per-step Python beyond the optimiser
step, which is what dominates small models' training time), or streamed from a campaign store
(:class:`~simgen.training.data.StoreBatches`) when the data do not fit in memory. The loop is the same for both.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .data import BatchSource, TensorBatches

__all__ = ["TrainingConfig", "TrainingHistory", "train"]


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
        lr_schedule: ``"plateau"`` halves the learning rate after ``patience // 3`` stale epochs,
            ``"cosine"`` anneals it to 1 % over ``max_epochs``, ``"constant"`` keeps it.
        clip_grad_norm: clip the global gradient norm to this value (``None``: no clipping).
        max_time: stop after this many seconds (the best state so far is kept).
        ema_decay: validate, keep and restore an exponential moving average of the weights,
            φ̄ ← β φ̄ + (1 − β) φ after every step (Polyak averaging, β = ``ema_decay``), which smooths the
            optimiser's noise and overfits later; ``None`` uses the raw weights.
    """

    batch_size: int | None = None
    max_batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    max_epochs: int = 500
    validation_fraction: float = 0.1
    patience: int = 10
    lr_schedule: Literal["plateau", "cosine", "constant"] = "plateau"
    clip_grad_norm: float | None = 5.0
    max_time: float | None = None
    ema_decay: float | None = 0.98

    def __post_init__(self) -> None:
        if (self.batch_size is not None and self.batch_size < 1) or min(self.max_batch_size, self.max_epochs,
                                                                        self.patience) < 1:
            raise ValueError(
                f"batch_size, max_batch_size, max_epochs and patience must be >= 1; got {self.batch_size}, "
                f"{self.max_batch_size}, {self.max_epochs}, {self.patience}"
            )
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
        best_epoch: epoch (0-based) whose state was restored.
        best_validation_loss: its validation loss.
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

    Returns:
        A :class:`TrainingHistory`; the model is left in eval mode with the best validation state loaded.
    """
    config = config or TrainingConfig()
    device = torch.device(device) if device is not None else _module_device(model)
    model.to(device)
    split_seed = int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())
    generator = torch.Generator().manual_seed(split_seed)
    if isinstance(y, Tensor):
        data: BatchSource = TensorBatches(y, c, config.validation_fraction, generator, device, weights)
    elif isinstance(y, BatchSource) and c is None and weights is None:
        data = y
    else:
        raise ValueError("train takes tensors y, c (and weights) or a BatchSource alone")
    n_train = data.num_train
    batch_size, learning_rate = config.batch_size, config.learning_rate
    if batch_size is None:
        batch_size = min(config.max_batch_size, max(64, n_train // 8))
        learning_rate *= max(1.0, batch_size / 512)

    # The fused kernel updates every parameter in one call: a small model's step is otherwise ~100 tiny ops.
    fused = device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in model.parameters())
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, weight_decay=config.weight_decay, fused=fused or None
    )
    scheduler = _scheduler(optimizer, config)
    history = TrainingHistory(num_train=n_train, num_validation=data.num_validation)
    # The averaged copy is what gets validated, kept and restored; the raw weights only take the steps.
    averaged = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        if config.ema_decay is not None
        else None
    )
    evaluated = averaged.module if averaged is not None else model
    best_state = copy.deepcopy(evaluated.state_dict())
    stale = 0
    start = time.perf_counter()
    # Randomness inside the loss (dropout, diffusion times, dequantisation) follows the seed too, without
    # touching the caller's global RNG state.
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(int(seed))
        bar = tqdm(range(config.max_epochs), desc="training", disable=not progress, leave=False, unit="epoch")
        for epoch in bar:
            if epoch_hook is not None:
                epoch_hook(epoch)
            for module in {id(model): model, id(evaluated): evaluated}.values():
                # any module with loss(y, c) trains here, so the hook is optional (ConditionalDensity declares
                # it); the averaged copy follows schedules such as a KL warm-up too
                if hasattr(module, "on_epoch"):
                    module.on_epoch(epoch)
            model.train()
            total = torch.zeros((), device=device)
            seen = 0
            for y_batch, c_batch in data.train_batches(batch_size, generator):
                y_batch = y_batch.to(device)
                loss = model.loss(y_batch, None if c_batch is None else c_batch.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm, foreach=True)
                optimizer.step()
                if averaged is not None:
                    averaged.update_parameters(model)
                total += loss.detach() * y_batch.shape[0]
                seen += y_batch.shape[0]
            val = _evaluate(evaluated, data.validation_batches(batch_size * 16), device)
            history.train_loss.append(float(total) / max(seen, 1))
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
            if config.lr_schedule == "plateau":
                scheduler.step(val)
            elif scheduler is not None:
                scheduler.step()
            out_of_time = config.max_time is not None and time.perf_counter() - start > config.max_time
            if stale >= config.patience or out_of_time:
                history.stopped_early = True
                break
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history.wall_time = time.perf_counter() - start
    return history


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
