"""Campaign stores: (θ, x) pairs, every row's status and every failure, on disk, safe against a kill at any instant.

A store is a folder (the path the user gives, e.g. ``runs.h5``) holding

* ``chunk-000000.h5``, ``chunk-000001.h5``, ...: one HDF5 file per chunk of the campaign (see
  :mod:`simgen.campaign.chunks` for chunking and seeding), with datasets ``theta`` ``[k, d_theta]``, ``x``
  ``[k, *x_shape]`` (NaN rows where the simulation failed), ``status`` ``[k]`` (0 valid, 1 failed),
  ``proposal_log_prob`` ``[k]`` (log q(θ) of the distribution θ was drawn from) and a ``failures`` group
  (``row``, ``error``, ``message``); a campaign that mines gold (:mod:`simgen.campaign.gold`) adds a ``gold``
  group (``joint_score`` ``[k, d_theta]``, ``joint_log_ratio`` ``[k, k_ref]``; NaN rows where failed).
  Each file is written under a temporary name and atomically renamed when complete, so a killed process never
  leaves a partial chunk file; a chunk damaged by a machine crash (the data had not reached the disk) is detected
  when the campaign resumes and simulated again.
* ``index.json``: the campaign's metadata (simulator name and options, the distribution θ was drawn from,
  seed, chunk size, x shape and kind, simgen version, creation time), the number of simulations asked for so
  far, and a cache of per-chunk counts. It is also replaced atomically; the chunk files are the truth, and
  the index is reconciled with them on opening.

HDF5's SWMR mode is not used: a killed SWMR writer leaves its file flagged as open, which h5py cannot clear.
The driver process is the only writer (an advisory lock on ``.lock`` enforces it); workers return arrays.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from .._version import __version__
from .describe import jsonable
from .types import ChunkResult, SimulationFailure

__all__ = ["Store", "open_store", "STATUS_VALID", "STATUS_FAILED"]

FORMAT = "simgen-store"
FORMAT_VERSION = 1
INDEX = "index.json"
STATUS_VALID, STATUS_FAILED = 0, 1
_CHUNK_RE = re.compile(r"^chunk-(\d{6,})\.h5$")
#: metadata that must agree when a campaign is resumed or extended
_CAMPAIGN_KEYS = ("seed", "chunk_size", "simulator", "proposal", "theta_dim", "gold")


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """A campaign store (see the module docstring); open one with :func:`open_store`.

    Read as one dataset, it is the first ``num_simulations`` rows of the campaign (as many as were asked for;
    the last chunk's extra rows stay on disk until the campaign is extended):

    * ``theta`` ``[n, d_theta]``, ``x`` ``[n, *x_shape]`` (NaN where failed), ``valid`` ``[n]``,
      ``proposal_log_prob`` ``[n]``, ``failures`` (a list of :class:`~simgen.campaign.types.SimulationFailure`);
    * ``load()`` → ``(theta, x)`` of the valid rows, as ``simgen.simulate`` returns them;
    * ``metadata``: the campaign's description.
    """

    def __init__(self, path: str | os.PathLike, index: dict[str, Any]) -> None:
        self.path = Path(path)
        self._index = index
        self._last_index_write = 0.0

    # ------------------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> Store:
        path = Path(path)
        index_path = path / INDEX
        if not index_path.is_file():
            what = "does not exist" if not path.exists() else "is not a simgen store (no index.json)"
            raise FileNotFoundError(f"{path} {what}")
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{index_path} is unreadable ({e})") from e
        if index.get("format") != FORMAT:
            raise ValueError(f"{path} is not a simgen store")
        if index.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has store format version {index.get('format_version')}; this simgen reads "
                             f"version {FORMAT_VERSION}")
        store = cls(path, index)
        store._reconcile()
        return store

    @classmethod
    def create_or_resume(cls, path: str | os.PathLike, metadata: dict[str, Any]) -> Store:
        """Open the store at ``path`` for the campaign described by ``metadata`` (creating it if absent).

        Raises:
            ValueError: the store holds a different campaign (seed, chunk size, simulator, proposal).
        """
        path = Path(path)
        if (path / INDEX).is_file():
            store = cls.open(path)
            stored = store.metadata
            if stored.get("gold") is None and metadata.get("gold") is not None and store.chunk_indices():
                raise ValueError(f"the store {path} was simulated without gold: its chunks carry no joint score; "
                                 "simulate into another store with gold=True")
            for key in _CAMPAIGN_KEYS:
                if key in metadata and jsonable(metadata[key]) != stored.get(key):
                    raise ValueError(
                        f"the store {path} holds a different campaign: its {key} is {stored.get(key)!r}, this call's "
                        f"is {jsonable(metadata[key])!r}; use the same settings to resume or extend it, or another "
                        "store path"
                    )
            store.verify()
            if stored.get("x_shape") is None and metadata.get("x_shape") is not None:
                store._index["metadata"]["x_shape"] = list(metadata["x_shape"])
            return store
        leftovers = (".lock", f".{INDEX}.tmp-")  # a creation killed before its index was in place
        if path.exists() and (not path.is_dir() or any(not p.name.startswith(leftovers) for p in path.iterdir())):
            raise ValueError(f"{path} exists and is not a simgen store; choose another store path")
        path.mkdir(parents=True, exist_ok=True)
        meta = jsonable(metadata)
        meta.setdefault("simgen_version", __version__)
        meta.setdefault("created", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
        if meta.get("x_shape") is not None:
            meta["x_shape"] = list(meta["x_shape"])
        index = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": meta, "num_simulations": 0,
                 "chunks": {}}
        store = cls(path, index)
        store.write_index()
        return store

    def verify(self) -> list[int]:
        """Open every chunk file; remove (with a warning) those that are unreadable or incomplete, e.g. after a
        machine crash, so that resuming simulates them again. Returns the removed chunks."""
        removed = []
        for k in self.chunk_indices():
            path = self._chunk_path(k)
            try:
                with h5py.File(path, "r") as f:
                    n = f["status"].shape[0]
                    ok = f["theta"].shape[0] == n == f["proposal_log_prob"].shape[0] and "failures" in f
                    ok = ok and ("x" not in f or f["x"].shape[0] == n)
            except (OSError, KeyError):
                ok = False
            if not ok:
                path.unlink()
                self._index["chunks"].pop(str(k), None)
                removed.append(k)
        if removed:
            warnings.warn(f"removed {len(removed)} damaged chunk file(s) from {self.path} (chunks {removed[:10]}); "
                          "they will be simulated again", RuntimeWarning, stacklevel=3)
        return removed

    def _reconcile(self) -> None:
        """Make the index's chunk cache agree with the chunk files (the index may lag after a kill)."""
        on_disk = set(self.chunk_indices())
        cached = {int(k) for k in self._index.get("chunks", {})}
        chunks = {k: v for k, v in self._index.get("chunks", {}).items() if int(k) in on_disk}
        for k in sorted(on_disk - cached):
            with h5py.File(self._chunk_path(k), "r") as f:
                status = f["status"][()]
            chunks[str(k)] = {"rows": int(status.shape[0]), "failed": int((status != STATUS_VALID).sum())}
        self._index["chunks"] = chunks
        if self.metadata.get("x_shape") is None:
            for k in sorted(on_disk):
                with h5py.File(self._chunk_path(k), "r") as f:
                    if "x" in f:
                        self._index["metadata"]["x_shape"] = list(f["x"].shape[1:])
                        break

    # ------------------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's writer lock (advisory; released by the OS if the process dies)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another process is writing to the store {self.path}") from None
            for pattern in (".chunk-*.tmp-*", f".{INDEX}.tmp-*"):  # left by a killed writer
                for stale in self.path.glob(pattern):
                    stale.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)

    def write_index(self, force: bool = True) -> None:
        """Replace ``index.json`` atomically (at most once a second unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_index_write < 1.0:
            return
        _fsync_write(self.path / INDEX, json.dumps(self._index, indent=1).encode())
        self._last_index_write = now

    def set_num_simulations(self, n: int) -> None:
        self._index["num_simulations"] = max(int(n), int(self._index.get("num_simulations", 0)))
        self.write_index()

    def write_chunk(self, k: int, result: ChunkResult, proposal_log_prob: Tensor) -> None:
        """Write chunk ``k`` to a temporary file, flush it to disk and rename it into place."""
        final = self._chunk_path(k)
        tmp = self.path / f".{final.name}.tmp-{os.getpid()}"
        n = result.theta.shape[0]
        status = np.where(result.valid.numpy(), STATUS_VALID, STATUS_FAILED).astype(np.uint8)
        x_shape = self.metadata.get("x_shape")
        with h5py.File(tmp, "w") as f:
            f.attrs["chunk"] = k
            f.attrs["seed"] = int(self.metadata.get("seed", 0))
            f.attrs["chunk_size"] = int(self.metadata.get("chunk_size", n))
            f.create_dataset("theta", data=result.theta.numpy())
            if result.x is not None:
                f.create_dataset("x", data=result.x.numpy())
            elif x_shape is not None:
                f.create_dataset("x", data=np.full((n, *x_shape), np.nan, dtype=np.float32))
            f.create_dataset("status", data=status)
            f.create_dataset("proposal_log_prob", data=proposal_log_prob.detach().double().numpy())
            if result.gold is not None:
                gold = f.create_group("gold")
                for name, values in result.gold.items():
                    gold.create_dataset(name, data=values.detach().to(torch.float32).numpy())
            g = f.create_group("failures")
            fails = result.failures
            g.create_dataset("row", data=np.array([fl.row for fl in fails], dtype=np.int64))
            strings = h5py.string_dtype()
            g.create_dataset("error", data=np.array([fl.error for fl in fails], dtype=object), dtype=strings)
            g.create_dataset("message", data=np.array([fl.message[:4000] for fl in fails], dtype=object),
                             dtype=strings)
        # No fsync: a killed process cannot leave a partial chunk (the rename is atomic), and a chunk file
        # damaged by a machine crash is found by verify() on resuming and simulated again.
        os.replace(tmp, final)
        self._index["chunks"][str(k)] = {"rows": n, "failed": int((status != STATUS_VALID).sum())}
        if x_shape is None and result.x is not None:
            self._index["metadata"]["x_shape"] = list(result.x.shape[1:])
            self.write_index()
        else:
            self.write_index(force=False)

    # ------------------------------------------------------------------------------------------ reading
    @property
    def metadata(self) -> dict[str, Any]:
        return self._index["metadata"]

    @property
    def num_simulations(self) -> int:
        """Simulations asked for so far (the rows this store reads as)."""
        return int(self._index.get("num_simulations", 0))

    @property
    def chunk_size(self) -> int:
        return int(self.metadata["chunk_size"])

    @property
    def x_shape(self) -> tuple[int, ...] | None:
        shape = self.metadata.get("x_shape")
        return None if shape is None else tuple(shape)

    def _chunk_path(self, k: int) -> Path:
        return self.path / f"chunk-{k:06d}.h5"

    def chunk_indices(self) -> list[int]:
        """Indices of the complete chunk files, sorted."""
        return sorted(int(m.group(1)) for p in self.path.iterdir() if (m := _CHUNK_RE.match(p.name)))

    def missing_chunks(self) -> list[int]:
        """Chunks among the first ``num_simulations`` rows that are not (yet) on disk."""
        have = set(self.chunk_indices())
        return [k for k in range(math.ceil(self.num_simulations / self.chunk_size)) if k not in have]

    @property
    def complete(self) -> bool:
        return not self.missing_chunks()

    def visible_chunks(self) -> list[tuple[int, int]]:
        """(chunk, rows to keep) of the present chunks among the first ``num_simulations`` rows: what the store
        reads as."""
        n, size = self.num_simulations, self.chunk_size
        return [(k, min(size, n - k * size)) for k in self.chunk_indices() if k * size < n]

    def read_chunk(self, k: int, keep: int | None = None, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Chunk ``k``'s rows (the first ``keep``): a dict with ``theta``, ``x``, ``valid``,
        ``proposal_log_prob`` tensors and ``failures`` (or only ``fields``; ``"gold"`` gives the dict of gold
        tensors, empty for a campaign without gold)."""
        fields = fields or ("theta", "x", "valid", "proposal_log_prob", "failures")
        out: dict[str, Any] = {}
        sl = slice(0, keep)
        with h5py.File(self._chunk_path(k), "r") as f:
            if "theta" in fields:
                out["theta"] = torch.from_numpy(f["theta"][sl])
            if "x" in fields:
                if "x" in f:
                    out["x"] = torch.from_numpy(f["x"][sl])
                else:
                    rows = f["status"].shape[0] if keep is None else min(keep, f["status"].shape[0])
                    out["x"] = torch.full((rows, *(self.x_shape or (0,))), math.nan)
            if "valid" in fields:
                out["valid"] = torch.from_numpy(f["status"][sl] == STATUS_VALID)
            if "proposal_log_prob" in fields:
                out["proposal_log_prob"] = torch.from_numpy(f["proposal_log_prob"][sl])
            if "gold" in fields:
                out["gold"] = {name: torch.from_numpy(ds[sl]) for name, ds in f["gold"].items()} if "gold" in f else {}
            if "failures" in fields:
                g = f["failures"]
                rows = g["row"][()]
                errors = g["error"].asstr()[()] if rows.size else []
                messages = g["message"].asstr()[()] if rows.size else []
                theta = f["theta"][()]
                offset = k * self.chunk_size
                limit = offset + (keep if keep is not None else theta.shape[0])
                out["failures"] = [
                    SimulationFailure(int(r), theta[int(r) - offset].tolist(), str(e), str(m))
                    for r, e, m in zip(rows, errors, messages, strict=True)
                    if int(r) < limit
                ]
        return out

    def _gather(self, name: str) -> Any:
        parts = [self.read_chunk(k, keep, (name,))[name] for k, keep in self.visible_chunks()]
        if name == "failures":
            return [f for p in parts for f in p]
        if name == "gold":
            return {key: torch.cat([p[key] for p in parts]) for key in parts[0]} if parts else {}
        if not parts:
            raise ValueError(f"the store {self.path} holds no complete chunks yet")
        return torch.cat(parts)

    @property
    def theta(self) -> Tensor:
        return self._gather("theta")

    @property
    def x(self) -> Tensor:
        return self._gather("x")

    @property
    def valid(self) -> Tensor:
        return self._gather("valid")

    @property
    def proposal_log_prob(self) -> Tensor:
        return self._gather("proposal_log_prob")

    @property
    def failures(self) -> list[SimulationFailure]:
        return self._gather("failures")

    @property
    def gold(self) -> dict[str, Tensor]:
        """Every row's gold, ``{"joint_score": [n, d_theta], ...}`` (NaN where failed; empty without gold)."""
        return self._gather("gold")

    @property
    def has_gold(self) -> bool:
        """Whether the campaign mined gold (``simulate(..., gold=True)``)."""
        return bool(self.metadata.get("gold"))

    def load_gold(self) -> dict[str, Tensor]:
        """The gold of the valid rows, row for row with :meth:`load` (what ``simulate(..., gold=True)``
        returned as its third value).

        Raises:
            ValueError: the campaign was simulated without gold.
        """
        if not self.has_gold:
            raise ValueError(f"the store {self.path} holds no gold: simulate it with simgen.simulate(..., gold=True)")
        valid = self.valid
        return {name: values[valid] for name, values in self.gold.items()}

    def __len__(self) -> int:
        return sum(keep for _, keep in self.visible_chunks())

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum()) if len(self) else 0

    def load(self) -> tuple[Tensor, Tensor]:
        """``(theta, x)`` of the valid rows: what ``simgen.simulate`` returned."""
        valid = self.valid
        return self.theta[valid], self.x[valid]

    def iter_chunks(self, fields: tuple[str, ...] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(chunk, rows)`` for every present chunk among the visible rows, in order."""
        for k, keep in self.visible_chunks():
            yield k, self.read_chunk(k, keep, fields)

    def __repr__(self) -> str:
        sim = self.metadata.get("simulator", {}).get("name")
        return (f"Store({str(self.path)!r}, simulator={sim!r}, rows={len(self)}, "
                f"chunks={len(self.visible_chunks())}, missing={len(self.missing_chunks())})")


def open_store(path: str | os.PathLike) -> Store:
    """Open a campaign store written by ``simgen.simulate(..., store=path)`` for reading.

    Returns:
        A :class:`Store`: ``store.theta``, ``store.x``, ``store.valid``, ``store.failures``, ``store.metadata``,
        ``store.load()`` (the valid rows).

    Example:
        >>> import tempfile, torch, simgen
        >>> from sbi.utils import BoxUniform
        >>> def simulator(theta):  # fails (NaN) where θ_0 > 0.8
        ...     x = theta + 0.1 * torch.randn(theta.shape)
        ...     x[theta[:, 0] > 0.8] = float("nan")
        ...     return x
        >>> path = tempfile.mkdtemp() + "/runs.h5"
        >>> import warnings
        >>> with warnings.catch_warnings():  # "... of 200 simulations failed and were left out"
        ...     warnings.simplefilter("ignore")
        ...     _ = simgen.simulate(simulator, BoxUniform(torch.zeros(2), torch.ones(2)), 200, seed=0,
        ...                         store=path, chunk_size=100, progress=False, return_data=False)
        >>> store = simgen.open_store(path)
        >>> len(store), store.num_valid == int(store.valid.sum()), store.failures[0].error
        (200, True, 'NonFinite')
        >>> theta, x = store.load()  # the valid rows
        >>> bool((theta[:, 0] <= 0.8).all())
        True
    """
    return Store.open(path)
