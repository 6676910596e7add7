"""Where the trainer's rows come from: a fixed train/validation split served as ``(y, c)`` batches.

:class:`TensorBatches` holds the rows in memory on the training device; :class:`StoreBatches` streams a campaign
store's valid rows chunk by chunk. Both can draw rows by importance weights (:func:`weighted_draw`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = ["BatchSource", "TensorBatches", "StoreBatches", "check_validation_index", "split_indices", "weighted_draw"]


def split_indices(n: int, validation_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Seed-fixed split of ``range(n)`` into (train, validation) index tensors, both non-empty."""
    if n < 2:
        raise ValueError(f"training needs at least 2 rows (one for validation); got {n}")
    n_val = min(max(1, round(n * validation_fraction)), n - 1)
    perm = torch.randperm(n, generator=generator)
    return perm[n_val:], perm[:n_val]


def check_validation_index(index: Any, n: int) -> Tensor:
    """``index`` as the validation rows of ``n``: distinct integers in [0, n), at least one row and at most n − 1.

    Raises:
        ValueError: a list or tensor that is not of that kind, saying what was given.
    """
    index = torch.as_tensor(index)
    if index.dim() != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"validation_index must be a 1-D tensor of row indices; got {index.dim()}-D "
                         f"{index.dtype}")
    index = index.long()
    if not 1 <= index.numel() <= n - 1:
        raise ValueError(f"validation_index must hold between 1 and {n - 1} of the {n} rows; got {index.numel()}")
    if index.min() < 0 or index.max() >= n:
        raise ValueError(f"validation_index must lie in [0, {n}); got rows {int(index.min())} to {int(index.max())}")
    if index.unique().numel() != index.numel():
        raise ValueError("validation_index has repeated rows")
    return index


def weighted_draw(weights: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` row indices drawn with replacement with probability ∝ ``weights`` (inverse CDF, no size limit)."""
    cdf = torch.cumsum(weights.double(), 0)
    u = torch.rand(n, generator=generator, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=weights.shape[0] - 1)


@runtime_checkable
class BatchSource(Protocol):
    """Where :func:`train` gets its rows: a fixed train/validation split served as ``(y, c)`` batches.

    :class:`TensorBatches` serves tensors in memory; :class:`StoreBatches` streams a store's chunks. A source
    whose ``sharded`` attribute is ``True`` holds one rank's rows of a data-parallel run (its sizes are its own;
    see :func:`~simgen.training.train`).
    """

    num_train: int
    num_validation: int

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor | None]]:
        """One epoch of shuffled training batches."""
        ...

    def validation_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The validation rows, in a fixed order."""
        ...


class TensorBatches:
    """Rows in memory on the training device: a seed-fixed split (or the given ``validation_index`` rows held
    out), batches by index gathers.

    With ``weights`` (importance weights w ≥ 0 per row), each epoch's training rows are drawn with replacement
    with probability ∝ w, and the validation rows are such a draw made once: the expected loss is then the
    w-weighted loss, for any family's loss (which need not decompose into per-row terms).
    """

    def __init__(
        self,
        y: Tensor,
        c: Tensor | None,
        validation_fraction: float,
        generator: torch.Generator,
        device: torch.device,
        weights: Tensor | None = None,
        validation_index: Tensor | None = None,
    ) -> None:
        if c is not None and c.shape[0] != y.shape[0]:
            raise ValueError(f"y and c must have the same number of rows; got {y.shape[0]} and {c.shape[0]}")
        if weights is not None and weights.shape != (y.shape[0],):
            raise ValueError(f"weights must have shape [{y.shape[0]}]; got {tuple(weights.shape)}")
        if validation_index is None:
            train_idx, val_idx = split_indices(y.shape[0], validation_fraction, generator)
        else:
            val_idx = check_validation_index(validation_index, y.shape[0])
            held = torch.zeros(y.shape[0], dtype=torch.bool)
            held[val_idx] = True
            train_idx = (~held).nonzero().squeeze(1)
        self.w_train = None
        if weights is not None:
            self.w_train = weights[train_idx].double()
            val_idx = val_idx[weighted_draw(weights[val_idx], val_idx.shape[0], generator)]
        y = y.to(device)
        c = c.to(device) if c is not None else None
        self.y_val, self.c_val = y[val_idx.to(device)], None if c is None else c[val_idx.to(device)]
        self.y_tr, self.c_tr = y[train_idx.to(device)], None if c is None else c[train_idx.to(device)]
        self.device = device
        self.num_train, self.num_validation = self.y_tr.shape[0], self.y_val.shape[0]

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor | None]]:
        n = self.num_train
        if self.w_train is None:
            perm = torch.randperm(n, generator=generator)
        else:
            perm = weighted_draw(self.w_train, n, generator)
        perm = perm.to(self.device)
        for start_row in range(0, n, batch_size):
            idx = perm[start_row : start_row + batch_size]
            yield self.y_tr[idx], None if self.c_tr is None else self.c_tr[idx]

    def validation_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
        for s in range(0, self.num_validation, batch_size):
            yield self.y_val[s : s + batch_size], None if self.c_val is None else self.c_val[s : s + batch_size]


class StoreBatches:
    """A :class:`~simgen.training.BatchSource` that streams a store's valid rows chunk by chunk.

    Every epoch visits the chunks in a shuffled order, a buffer of ``chunks_per_buffer`` chunks at a time, and
    shuffles the rows within each buffer. Chunk k's validation rows are a fixed draw seeded by ``(seed, k)``, so
    the split does not depend on the buffer size or the visiting order. Only one buffer is in memory at a time.

    Args:
        store: a :class:`~simgen.campaign.Store` (anything with ``visible_chunks()`` and ``read_chunk``).
        posterior: ``True`` serves ``(y, c) = (θ, x)``, ``False`` serves ``(x, θ)``.
        validation_fraction: share of each chunk's rows held out.
        seed: fixes the split (and the importance draws of the validation rows).
        chunks_per_buffer: chunks loaded and shuffled together.
        weight_fn: importance weights of rows from their θ (``[k, d] -> [k]``, ≥ 0; rows of weight 0 are left
            out); rows are then drawn with probability ∝ weight, as :class:`~simgen.training.TensorBatches` does.
        shard: ``(rank, world_size)`` of a data-parallel run: this source then holds the chunks
            ``rank, rank + world_size, …`` of the store's visible chunks and reads no other; its sizes are its
            shard's. Each epoch it draws one number from the trainer's generator (the same on every rank) and
            orders its chunks and rows by a generator seeded from that number and its rank.
        gold: serve each row's gold (the store's, :mod:`simgen.campaign.gold`) as extra columns of θ in the
            training and validation batches (what a gold-trained estimator's objective splits off): the fields
            named, in that order (``"joint_score"``, ``[n, d_theta]``; ``"joint_log_ratio"``, ``[n, k]``), or
            ``True`` for the joint score alone; :meth:`iter_rows`, which feeds the statistics, serves the plain
            rows.
    """

    def __init__(
        self,
        store: Any,
        posterior: bool,
        validation_fraction: float,
        seed: int,
        chunks_per_buffer: int = 1,
        weight_fn: Any = None,
        shard: tuple[int, int] | None = None,
        gold: bool | Sequence[str] = False,
    ) -> None:
        self.store, self.posterior, self.fraction = store, posterior, validation_fraction
        self.gold_fields = ("joint_score",) if gold is True else tuple(gold or ())
        self.gold = bool(self.gold_fields)
        self.fields = ("theta", "x", "gold") if self.gold else ("theta", "x")
        self.seed, self.chunks_per_buffer, self.weight_fn = int(seed), max(1, int(chunks_per_buffer)), weight_fn
        self.chunks = [(k, keep) for k, keep in store.visible_chunks()]
        self.shard = shard
        if shard is not None:
            rank, world = shard
            if not 0 <= rank < world or world > len(self.chunks):
                raise ValueError(f"shard (rank, world_size) must have 0 <= rank < world_size <= the store's "
                                 f"{len(self.chunks)} chunks; got {shard}")
            self.chunks = self.chunks[rank::world]
        self.num_train = self.num_validation = 0
        for k, keep in self.chunks:  # one pass over θ and status only: the split's sizes
            _, rows, _ = self._rows(k, keep, ("theta", "valid"))
            n_val = self._num_val(k, rows)
            self.num_train += rows - n_val
            self.num_validation += n_val
        if self.num_train < 1 or self.num_validation < 1:
            raise ValueError(f"the store {store.path} has too few valid rows to train on "
                             f"({self.num_train + self.num_validation})")

    def _rows(self, k: int, keep: int, fields: tuple[str, ...]) -> tuple[dict[str, Any], int, Tensor | None]:
        """Chunk ``k``'s usable rows (valid, non-zero weight): the fields, their count and their weights."""
        data = self.read(k, keep, tuple(set(fields) | {"theta", "valid"}))
        mask = data["valid"]
        weights = None
        if self.weight_fn is not None:
            weights = torch.as_tensor(self.weight_fn(data["theta"]), dtype=torch.float64)
            mask = mask & (weights > 0)
            weights = weights[mask]
        out = {name: data[name][mask] for name in fields if name != "valid"}
        return out, int(mask.sum()), weights

    @property
    def sharded(self) -> bool:
        """Whether this source serves one rank's shard of the rows (see ``shard``)."""
        return self.shard is not None

    def read(self, k: int, keep: int, fields: tuple[str, ...]) -> dict[str, Any]:
        data = self.store.read_chunk(k, keep, fields)
        if "gold" in data:  # the gold terms train on these columns
            missing = [name for name in self.gold_fields if name not in data["gold"]]
            if missing:
                raise ValueError(f"chunk {k} of the store {self.store.path} holds no {' and no '.join(missing)}")
            data["gold"] = torch.cat([data["gold"][name].reshape(len(data["gold"][name]), -1)
                                      for name in self.gold_fields], dim=1)
        return data

    def _split_generator(self, k: int, stream: int = 0) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, k, stream]).generate_state(1, np.uint64)[0] >> 1
        return torch.Generator().manual_seed(int(state))

    def _num_val(self, k: int, rows: int) -> int:
        # Stochastic rounding, so that small chunks still contribute their share on average.
        u = float(torch.rand((), generator=self._split_generator(k, 1)))
        return min(rows, math.floor(rows * self.fraction + u))

    def _split(self, k: int, rows: int) -> tuple[Tensor, Tensor]:
        perm = torch.randperm(rows, generator=self._split_generator(k))
        n_val = self._num_val(k, rows)
        return perm[n_val:], perm[:n_val]

    def _pairs(self, data: dict[str, Any], idx: Tensor) -> tuple[Tensor, Tensor]:
        theta, x = data["theta"][idx], data["x"][idx]
        if "gold" in data:
            theta = torch.cat([theta, data["gold"][idx].to(theta)], dim=1)
        return (theta, x) if self.posterior else (x, theta)

    def iter_rows(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Every usable row (train and validation), chunk by chunk, as ``(y, c)``: for statistics."""
        for k, keep in self.chunks:
            data, rows, _ = self._rows(k, keep, ("theta", "x"))
            if rows:
                yield self._pairs(data, torch.arange(rows))

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        if self.shard is not None:
            yield from self._shard_batches(batch_size, generator)
            return
        for y, c, perm in self._buffers(generator):
            for s in range(0, y.shape[0], batch_size):
                idx = perm[s : s + batch_size]
                yield y[idx], c[idx]

    def _shard_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """A rank's batches: rows left over at the end of a buffer open the next one's first batch, so that every
        batch but the epoch's last is full (the ranks' batches make up each step's global batch together)."""
        draw = int(torch.randint(0, 2**62, (), generator=generator))
        state = np.random.SeedSequence([draw, self.shard[0]]).generate_state(1, np.uint64)[0] >> 1
        carry: tuple[Tensor, Tensor] | None = None
        for y, c, perm in self._buffers(torch.Generator().manual_seed(int(state))):
            y, c = y[perm], c[perm]
            if carry is not None:
                y, c = torch.cat([carry[0], y]), torch.cat([carry[1], c])
            full = y.shape[0] // batch_size * batch_size
            for s in range(0, full, batch_size):
                yield y[s : s + batch_size], c[s : s + batch_size]
            carry = y[full:], c[full:]
        if carry is not None and carry[0].shape[0]:
            yield carry

    def _buffers(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """One epoch's buffers in a shuffled chunk order: their training rows ``(y, c)`` and the shuffled (or
        importance-drawn) row order."""
        order = torch.randperm(len(self.chunks), generator=generator).tolist()
        for start in range(0, len(order), self.chunks_per_buffer):
            ys, cs, ws = [], [], []
            for i in order[start : start + self.chunks_per_buffer]:
                k, keep = self.chunks[i]
                data, rows, weights = self._rows(k, keep, self.fields)
                train_idx, _ = self._split(k, rows)
                y, c = self._pairs(data, train_idx)
                ys.append(y)
                cs.append(c)
                if weights is not None:
                    ws.append(weights[train_idx])
            y, c = torch.cat(ys), torch.cat(cs)
            n = y.shape[0]
            if n == 0:
                continue
            yield y, c, weighted_draw(torch.cat(ws), n, generator) if ws else torch.randperm(n, generator=generator)

    def validation_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for k, keep in self.chunks:
            data, rows, weights = self._rows(k, keep, self.fields)
            _, val_idx = self._split(k, rows)
            if val_idx.numel() == 0:
                continue
            if weights is not None:
                val_idx = val_idx[weighted_draw(weights[val_idx], val_idx.shape[0], self._split_generator(k, 2))]
            y, c = self._pairs(data, val_idx)
            for s in range(0, y.shape[0], batch_size):
                yield y[s : s + batch_size], c[s : s + batch_size]
