"""Running a simulator over prior draws: chunked, seeded, failures reported and set aside.

The attempts are split into seeded chunks (:mod:`simgen.campaign.chunks`), which run in this process or on
workers (:mod:`simgen.campaign.executors`: local processes, dask.distributed) and can be kept in a store
(:mod:`simgen.campaign.store`), which makes a campaign resumable and extensible chunk by chunk. Results depend
only on ``(seed, chunk_size)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from ..utils import call_simulator, check_positive_int
from .describe import describe_distribution, describe_simulator
from .executors import ChunkTask, make_executor
from .gold import check_gold_simulator, check_reference
from .store import Store
from .types import ChunkResult, SimulationFailure

__all__ = ["simulate", "IIDSimulator"]

#: failures kept whole (row, θ, message) for the warning; all of them are counted
MAX_KEPT_FAILURES = 1000


class IIDSimulator:
    """``M`` i.i.d. draws of ``simulator`` per θ: θ ``[k, d_theta]`` → x ``[k, M, *x_shape]`` (what
    ``simulate(..., iid=M)`` runs). A θ any of whose draws fails (NaN or inf) is a failed row as a whole.

    Its randomness comes from the ``generator`` it is given (the campaign's seeded chunk generator): a simulator
    that takes ``generator=`` gets one seeded from it, any other runs with the global RNGs seeded from it.
    """

    def __init__(self, simulator: Any, iid: int) -> None:
        self.simulator, self.iid = simulator, check_positive_int(iid, "iid")
        declared = getattr(simulator, "x_shape", None)
        self.x_shape = None if declared is None else (self.iid, *tuple(declared))
        self.prior = getattr(simulator, "prior", None)
        self.name = f"{getattr(simulator, 'name', None) or type(simulator).__name__} (iid={self.iid})"
        self.options = {"iid": self.iid, **(getattr(simulator, "options", None) or {})}

    def __call__(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        seed = None if generator is None else int(torch.randint(0, 2**62, (), generator=generator))
        x = call_simulator(self.simulator, theta.repeat_interleave(self.iid, dim=0), seed)
        if x.shape[0] != theta.shape[0] * self.iid:
            raise ValueError(f"the simulator returned {x.shape[0]} rows for {theta.shape[0] * self.iid} θ rows")
        return x.reshape(theta.shape[0], self.iid, *x.shape[1:])


def simulate(
    simulator: Any,
    prior: Distribution,
    num_simulations: int,
    *,
    seed: int = 0,
    chunk_size: int = 1000,
    progress: bool = True,
    store: str | os.PathLike | None = None,
    return_data: bool = True,
    workers: int | None = None,
    executor: Any = None,
    metadata: dict[str, Any] | None = None,
    iid: int | None = None,
    gold: bool = False,
    gold_reference: Any = None,
) -> Any:
    """Draw θ ~ prior and x ~ simulator(θ) for ``num_simulations`` attempts.

    Args:
        simulator: any callable mapping θ ``[n, d_theta]`` to x ``[n, *x_shape]``; if it accepts
            ``generator=``, it receives a seeded ``torch.Generator``, else the global torch and numpy RNGs are
            seeded (and restored) around the call.
        prior: a torch ``Distribution`` over θ (the proposal the campaign draws from).
        num_simulations: attempts; failed ones are reported and left out.
        seed: the campaign's seed (see the module docstring).
        chunk_size: rows per chunk; with ``seed``, it alone fixes the results.
        progress: show a progress bar.
        store: a folder (e.g. ``"runs.h5"``) to keep every chunk in (see :mod:`simgen.campaign.store`): chunks already
            there are not simulated again, so an interrupted campaign resumes, and asking for more simulations
            than it holds extends it (whole chunks). The results equal an uninterrupted run's, row for row.
        return_data: ``False`` returns the :class:`~simgen.campaign.Store` instead of the arrays (needs ``store``),
            for campaigns larger than memory.
        workers: run chunks in this many local processes (see :mod:`simgen.campaign.executors`).
        executor: ``"dask"`` (a dask ``LocalCluster``), a scheduler address, a ``distributed.Client``, a dask
            cluster object (``dask_jobqueue.SLURMCluster(...)``: workers as batch jobs), or ``"processes"``;
            default: this process (or ``workers`` processes).
        metadata: extra JSON metadata for the store; ``{"simulator_options": {...}}`` records the options the
            simulator was built with (the CLI does).
        iid: simulate this many i.i.d. draws per θ (:class:`IIDSimulator`): x is ``[n, iid, *x_shape]``, axis 1
            the set of draws (what ``PosteriorEstimator(prior, iid=True)`` trains on); ``num_simulations``
            counts θ rows (``num_simulations · iid`` simulator calls), and a θ with any failed draw is left out
            and reported.
        gold: also mine each simulation's gold from its latents (Brehmer et al. 2020; :mod:`simgen.campaign.gold`):
            the joint score t(x, z | θ) = ∇_θ log p(x, z | θ), for simulators that follow the gold protocol
            (``simulator(theta, return_latents=True) -> (x, z)`` and ``simulator.joint_log_prob(theta, x, z)``,
            differentiable in θ); any other simulator gets a ValueError saying what it lacks. Gold is kept in the
            store beside θ and x (resuming and extending keep it; ``store.load_gold()``), and estimators built
            with ``gold="score"`` train on it (``fit(theta, x, gold=gold)``, ``fit(store)``).
        gold_reference: θ_ref ``[k, d_theta]`` (or one row): with ``gold``, also the joint log likelihood ratio
            log p(x, z | θ) − log p(x, z | θ_ref,j), ``gold["joint_log_ratio"]`` ``[n, k]`` (the store records
            θ_ref in its metadata, ``store.metadata["gold"]["reference"]``), which a
            :class:`~simgen.RatioEstimator` built with ``gold="ratio"`` or ``"ratio+score"`` trains on
            (``fit(theta, x, gold=gold, gold_reference=theta_ref)``, ``fit(store)``).

    Returns:
        ``(theta, x)``: CPU float32 tensors ``[n_valid, d_theta]`` and ``[n_valid, *x_shape]``; with ``gold``,
        ``(theta, x, gold)``, ``gold`` a dict of float32 tensors ``{"joint_score": [n_valid, d_theta]}`` (and
        ``"joint_log_ratio": [n_valid, k]``); or the store (``return_data=False``).

    Raises:
        ValueError: bad arguments, a store holding another campaign, or every simulation failed (the first
            errors are quoted).

    Example:
        >>> import tempfile, torch, simgen
        >>> from sbi.utils import BoxUniform
        >>> prior = BoxUniform(torch.zeros(2), torch.ones(2))
        >>> def simulator(theta):
        ...     return theta + 0.1 * torch.randn(theta.shape)
        >>> theta, x = simgen.simulate(simulator, prior, 100, seed=0, progress=False)
        >>> theta.shape, x.shape
        (torch.Size([100, 2]), torch.Size([100, 2]))
        >>> store = simgen.simulate(simulator, prior, 100, seed=0, progress=False,
        ...                         store=tempfile.mkdtemp() + "/runs.h5", return_data=False)
        >>> torch.equal(store.x, x)  # the seed fixes the rows, with a store or without
        True
    """
    check_positive_int(num_simulations, "num_simulations")
    check_positive_int(chunk_size, "chunk_size")
    if not isinstance(gold, bool):
        raise ValueError(f"gold must be True or False; got {gold!r}")
    if gold_reference is not None and not gold:
        raise ValueError("gold_reference= goes with gold=True (the joint log ratio is part of the gold)")
    if gold and iid is not None:
        raise ValueError("gold=True with iid= is not supported: mine gold per simulation (iid=None)")
    if gold:
        check_gold_simulator(simulator)
    if iid is not None:
        if not callable(simulator):
            raise ValueError(f"simulator must be callable; got {type(simulator).__name__}")
        simulator = IIDSimulator(simulator, iid)
        metadata = {**(metadata or {}), "iid": simulator.iid}
    if not isinstance(prior, Distribution):
        raise ValueError(f"prior must be a torch Distribution; got {type(prior).__name__}")
    if not callable(simulator):
        raise ValueError(f"simulator must be callable; got {type(simulator).__name__}")
    if not return_data and store is None:
        raise ValueError("return_data=False leaves the data on disk: it needs store=PATH")
    d_theta = int(prior.event_shape.numel()) if len(prior.event_shape) else 1
    reference = check_reference(gold_reference, d_theta)
    gold_meta = None if not gold else {
        "fields": ["joint_score"] + (["joint_log_ratio"] if reference is not None else []),
        "reference": None if reference is None else reference.tolist()}
    metadata = {**(metadata or {}), "gold": gold_meta}
    declared = getattr(simulator, "x_shape", None)
    x_shape = tuple(declared) if declared is not None else None
    num_chunks = math.ceil(num_simulations / chunk_size)
    campaign = None
    if store is not None:
        campaign = Store.create_or_resume(store, _store_metadata(simulator, prior, seed, chunk_size, x_shape,
                                                                 metadata))
        if x_shape is None and campaign.x_shape is not None:
            x_shape = campaign.x_shape
    results: dict[int, ChunkResult] = {}
    counts = {"failed": 0}
    #: every failure counted by kind; the first MAX_KEPT_FAILURES kept whole for the message
    kinds: dict[str, int] = {}
    failures: list[SimulationFailure] = []

    def keep_rows(k: int) -> int:
        return min(chunk_size, num_simulations - k * chunk_size)

    def record(k: int, result: ChunkResult) -> None:
        fails = [f for f in result.failures if f.row < num_simulations]
        counts["failed"] += len(fails)
        for f in fails:
            kinds[f.error] = kinds.get(f.error, 0) + 1
        if len(failures) < MAX_KEPT_FAILURES:
            failures.extend(fails[: MAX_KEPT_FAILURES - len(failures)])

    with contextlib.ExitStack() as stack:
        if campaign is not None:
            stack.enter_context(campaign.lock())
            done = set(campaign.chunk_indices())
            campaign.set_num_simulations(num_simulations)
        else:
            done = set()
        pending = [k for k in range(num_chunks) if k not in done]
        bar = stack.enter_context(tqdm(total=num_simulations, desc="simulating", disable=not progress, unit="sim"))
        for k in sorted(done):
            if k < num_chunks:
                bar.update(keep_rows(k))
                record(k, _stored_failures(campaign, k, keep_rows(k)))
        made = make_executor(executor, workers)
        if made is not executor:
            stack.callback(made.close)
        task = ChunkTask(simulator, prior, chunk_size, seed, x_shape, gold=gold, gold_reference=reference)
        while pending:
            # Without a known x shape, chunks run one at a time until one has set it, so that every chunk
            # is checked against the same shape whatever the executor.
            batch, pending = (pending, []) if task.x_shape is not None else (pending[:1], pending[1:])
            for k, result in made.run(task, batch):
                if task.x_shape is None and result.x is not None:
                    task.x_shape = tuple(result.x.shape[1:])
                if campaign is not None:
                    campaign.write_chunk(k, result, _log_prob(prior, result.theta))
                if return_data:
                    results[k] = result
                record(k, result)
                bar.update(keep_rows(k))
                bar.set_postfix(failed=counts["failed"], refresh=False)
        if campaign is not None:
            campaign.write_index()
    x_shape = task.x_shape
    if counts["failed"] == num_simulations and return_data:
        first = "; ".join(f"{f.error}: {f.message}" for f in failures[:3])
        raise ValueError(f"all {num_simulations} simulations failed (first: {first})")
    if counts["failed"]:
        warnings.warn(
            f"{counts['failed']} of {num_simulations} simulations failed and were left out "
            f"({', '.join(f'{n} {kind}' for kind, n in kinds.items())}; first: row {failures[0].row}, "
            f"theta={failures[0].theta}: {failures[0].message})",
            RuntimeWarning,
            stacklevel=2,
        )
    if not return_data:
        return campaign
    thetas, xs, golds = [], [], []
    for k in range(num_chunks):
        keep = keep_rows(k)
        if k in results:
            r = results.pop(k)
            theta, x, valid = r.theta[:keep], None if r.x is None else r.x[:keep], r.valid[:keep]
            chunk_gold = {name: v[:keep] for name, v in (r.gold or {}).items()}
        else:
            rows = campaign.read_chunk(k, keep, ("theta", "x", "valid", "gold"))
            theta, x, valid, chunk_gold = rows["theta"], rows["x"], rows["valid"], rows["gold"]
        thetas.append(theta[valid])
        xs.append(x[valid] if x is not None else torch.empty(0, *x_shape))
        golds.append({name: v[valid] for name, v in chunk_gold.items()})
    if not gold:
        return torch.cat(thetas), torch.cat(xs)
    return torch.cat(thetas), torch.cat(xs), {name: torch.cat([g[name] for g in golds]) for name in gold_meta["fields"]}


def _log_prob(prior: Distribution, theta: Tensor) -> Tensor:
    """log q(θ) of the distribution θ was drawn from, ``[k]`` (NaN where it cannot be evaluated)."""
    try:
        return prior.log_prob(theta).reshape(theta.shape[0]).double()
    except Exception:  # noqa: BLE001 - a proposal without log_prob still gets its draws stored
        return torch.full((theta.shape[0],), math.nan, dtype=torch.float64)


def _stored_failures(store: Any, k: int, keep: int) -> ChunkResult:
    rows = store.read_chunk(k, keep, ("failures",))
    return ChunkResult(torch.empty(0), None, torch.empty(0, dtype=torch.bool), rows["failures"])


def _store_metadata(
    simulator: Any, prior: Distribution, seed: int, chunk_size: int, x_shape: tuple[int, ...] | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    extra = dict(extra or {})
    options = extra.pop("simulator_options", None)
    return {
        "simulator": describe_simulator(simulator, options),
        "proposal": describe_distribution(prior),
        "seed": int(seed),
        "chunk_size": int(chunk_size),
        "theta_dim": int(prior.event_shape.numel()) if len(prior.event_shape) else 1,
        "x_shape": None if x_shape is None else list(x_shape),
        "x_kind": getattr(simulator, "x_kind", None),
        "x_discrete": [int(i) for i in getattr(simulator, "x_discrete", ()) or ()],
        "parameter_names": list(getattr(simulator, "parameter_names", []) or []),
        **extra,
    }
