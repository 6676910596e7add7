"""Where the chunks of a campaign run: in this process, in local processes, or on a dask.distributed cluster.

Every executor runs :func:`run_chunk` (that is, :func:`simgen.campaign.chunks.simulate_chunk`) for a set of chunk
indices and yields ``(k, ChunkResult)`` as chunks complete, in any order. A chunk's result depends only on
``(seed, chunk_size, k)``, so the campaign's arrays are the same whichever executor ran it. Workers only return
arrays: the driver (the process that called ``simulate``) is the only writer of a store.

* :class:`InProcess` — the default: chunks run one after the other in this process.
* :class:`LocalProcesses` — ``workers=N``: a pool of N spawned processes (spawn is safe with torch and on every
  platform), one torch thread each. The simulator and prior are pickled to the workers.
* :class:`Dask` — ``executor="dask"`` (a ``LocalCluster`` with one single-threaded worker per core, or
  ``workers``), ``executor="tcp://host:8786"`` (a running scheduler) or ``executor=client`` (a
  ``distributed.Client``, e.g. on a SLURM/PBS cluster from dask-jobqueue). Objects travel with cloudpickle.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Distribution

from ..utils import check_positive_int
from .chunks import simulate_chunk
from .types import ChunkResult

__all__ = ["ChunkTask", "run_chunk", "submit_windowed", "InProcess", "LocalProcesses", "Dask", "make_executor"]


@dataclass
class ChunkTask:
    """Everything a worker needs to simulate any chunk of one campaign."""

    simulator: Any
    prior: Distribution
    chunk_size: int
    seed: int
    x_shape: tuple[int, ...] | None
    threads: int | None = None  # torch threads to use in the worker (None: leave as is)
    gold: bool = False  # mine the joint score (and ratio) from the latents (simgen.campaign.gold)
    gold_reference: Any = None  # θ_ref [k, d] float64 of the joint log ratio, or None


def run_chunk(task: ChunkTask, k: int) -> tuple[int, ChunkResult]:
    """Simulate chunk ``k`` of ``task`` (the function workers run)."""
    if task.threads is not None and torch.get_num_threads() != task.threads:
        torch.set_num_threads(task.threads)
    return k, simulate_chunk(task.simulator, task.prior, task.chunk_size, task.seed, k, task.x_shape,
                             task.gold, task.gold_reference)


def submit_windowed(
    chunks: Iterable[int],
    window: int,
    submit: Callable[[int], Any],
    as_completed: Callable[[list[Any]], Any],
    result: Callable[[Any], tuple[int, ChunkResult]],
) -> Iterator[tuple[int, ChunkResult]]:
    """The submission loop of every pool: ``window`` chunks in flight, one more submitted as each completes.

    About two chunks per worker keep every worker busy while bounding the results held in memory. ``submit(k)``
    returns a future; ``as_completed(futures)`` iterates over futures as they complete and takes more with
    ``add`` (``distributed.as_completed``, :class:`_FuturesCompleted`); ``result(future)`` unwraps one.
    """
    pending = iter(chunks)
    queue = as_completed([submit(k) for k in itertools.islice(pending, window)])
    for future in queue:
        yield result(future)
        nxt = next(pending, None)
        if nxt is not None:
            queue.add(submit(nxt))


class _FuturesCompleted:
    """``distributed.as_completed`` for ``concurrent.futures``: iterate over futures as they complete, and
    ``add`` more while iterating."""

    def __init__(self, futures: Iterable[Any]) -> None:
        self._waiting = set(futures)

    def add(self, future: Any) -> None:
        self._waiting.add(future)

    def __iter__(self) -> Iterator[Any]:
        import concurrent.futures as cf

        while self._waiting:
            done, self._waiting = cf.wait(self._waiting, return_when=cf.FIRST_COMPLETED)
            yield from done


class InProcess:
    """Run chunks one after the other in this process."""

    workers = 1

    def run(self, task: ChunkTask, chunks: Iterable[int]) -> Iterator[tuple[int, ChunkResult]]:
        for k in chunks:
            yield run_chunk(task, k)

    def close(self) -> None:
        pass


def _check_picklable(task: ChunkTask, how: str) -> None:
    for name, obj in (("simulator", task.simulator), ("prior", task.prior)):
        try:
            pickle.dumps(obj)
        except Exception as e:  # noqa: BLE001 - pickling can raise almost anything
            raise ValueError(
                f"the {name} ({type(obj).__name__}) cannot be sent to {how} because it cannot be pickled "
                f"({type(e).__name__}: {e}). Define it at the top level of an importable module (not as a lambda, "
                "a nested function or an object holding open files, locks or sockets), or run in this process "
                "(workers=None), or use executor='dask', which pickles closures and lambdas with cloudpickle"
            ) from None


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class LocalProcesses:
    """A pool of ``workers`` spawned processes, one torch thread each (``threads``)."""

    def __init__(self, workers: int, threads: int = 1) -> None:
        check_positive_int(workers, "workers")
        self.workers, self.threads = workers, threads
        self._pool = None

    def run(self, task: ChunkTask, chunks: Iterable[int]) -> Iterator[tuple[int, ChunkResult]]:
        import concurrent.futures as cf
        import multiprocessing as mp

        _check_picklable(task, f"worker processes (workers={self.workers})")
        task = dataclasses.replace(task, threads=self.threads)
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(self.threads,)
            )
        yield from submit_windowed(chunks, 2 * self.workers, lambda k: self._pool.submit(run_chunk, task, k),
                                   _FuturesCompleted, lambda future: future.result())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class Dask:
    """Chunks as dask.distributed tasks.

    Args:
        client: a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``), or ``None`` for a
            ``LocalCluster`` of ``workers`` single-threaded worker processes (default: one per core), closed
            when the campaign ends.
        workers: workers of the default ``LocalCluster``.
    """

    def __init__(self, client: Any = None, workers: int | None = None) -> None:
        try:
            import distributed
        except ImportError:
            raise ImportError(
                "executor='dask' needs dask.distributed: pip install 'simgen[cluster]' (or 'dask[distributed]')"
            ) from None
        self._owned: list[Any] = []
        if client is None:
            n = workers or os.cpu_count() or 1
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=":0")
            client = distributed.Client(cluster)
            self._owned += [client, cluster]
            self.threads: int | None = 1
        elif isinstance(client, str):
            client = distributed.Client(client)
            self._owned.append(client)
            self.threads = None
        else:
            self.threads = None
        self.client = client
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))

    def run(self, task: ChunkTask, chunks: Iterable[int]) -> Iterator[tuple[int, ChunkResult]]:
        import distributed

        task = dataclasses.replace(task, threads=self.threads)
        [task_future] = self.client.scatter([task], broadcast=True, hash=False)
        window = 2 * max(self.workers, len(self.client.scheduler_info().get("workers", {})))

        def result(future: Any) -> tuple[int, ChunkResult]:
            out = future.result()
            future.release()
            return out

        try:
            yield from submit_windowed(chunks, window,
                                       lambda k: self.client.submit(run_chunk, task_future, k, pure=False),
                                       distributed.as_completed, result)
        finally:
            task_future.release()

    def close(self) -> None:
        for obj in self._owned:
            obj.close()
        self._owned = []


def make_executor(executor: Any = None, workers: int | None = None) -> Any:
    """The executor for ``simulate(..., executor=, workers=)``.

    ``executor=None``: in this process, or ``workers`` local processes when ``workers > 1``;
    ``"processes"``: local processes; ``"dask"``: a dask ``LocalCluster``; a string with ``://``: the dask
    scheduler at that address; a ``distributed.Client``: that client; a dask cluster object (``LocalCluster``,
    dask-jobqueue's ``SLURMCluster``, ...): a client to its scheduler; any object with ``run(task, chunks)`` and
    ``close()``: itself.
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None; got {workers!r}")
    if executor is None or executor == "inprocess":
        return LocalProcesses(workers) if workers and workers > 1 else InProcess()
    if executor == "processes":
        return LocalProcesses(workers or os.cpu_count() or 1)
    if executor == "dask":
        return Dask(None, workers)
    if isinstance(executor, str) and "://" in executor:
        return Dask(executor)
    if type(executor).__name__ == "Client" and type(executor).__module__.startswith("distributed"):
        return Dask(executor)
    if hasattr(executor, "scheduler_address") and hasattr(executor, "scale"):
        # a dask cluster object (LocalCluster, dask-jobqueue's SLURMCluster/PBSCluster, ...): a client of our own
        # to its scheduler, closed when the campaign ends; the cluster itself stays the caller's
        return Dask(executor.scheduler_address)
    if hasattr(executor, "run") and hasattr(executor, "close"):
        return executor
    raise ValueError(
        f"executor must be None, 'processes', 'dask', a dask scheduler address ('tcp://host:8786'), a "
        f"distributed.Client, a dask cluster (e.g. dask_jobqueue.SLURMCluster) or an executor object; "
        f"got {executor!r}"
    )
