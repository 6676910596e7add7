"""Campaign overhead and parallel speed-up of ``simgen.simulate``.

1. Overhead per chunk: a CPU-bound simulator costing 0.1 ms per simulation, called directly chunk by chunk
   (θ drawn beforehand) against ``simulate`` without and with a store (target: < 5 %).
2. Speed-up on a single-threaded, CPU-bound simulator costing 1 ms per simulation, one torch thread per worker,
   chunks of 0.5 s: 2 local processes (target ≥ 1.7×) and a 2-worker dask ``LocalCluster`` (target ≥ 1.5×),
   each against the in-process run. Pools are started (and warmed up) before timing; their start-up time is
   reported separately.

Run on an idle machine with at least 2 cores:

    OMP_NUM_THREADS=1 python benchmarks/campaign_overhead.py            # full size (about 2 min)
    OMP_NUM_THREADS=1 python benchmarks/campaign_overhead.py --quick    # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
import warnings

import torch

import simgen
from simgen.executors import Dask, LocalProcesses

PRIOR = torch.distributions.Independent(torch.distributions.Uniform(-torch.ones(3), torch.ones(3)), 1)


class BusySimulator:
    """x = θ + noise, after spinning the CPU for ``cost`` seconds per simulation (single-threaded)."""

    x_shape = (3,)

    def __init__(self, cost: float) -> None:
        self.cost = cost

    def __call__(self, theta: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        end = time.perf_counter() + self.cost * theta.shape[0]
        while time.perf_counter() < end:
            pass
        return theta + 0.1 * torch.randn(theta.shape, generator=generator)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def overhead(num: int, chunk: int, repeats: int) -> dict[str, float]:
    sim = BusySimulator(1e-4)
    thetas = [PRIOR.sample((chunk,)) for _ in range(math.ceil(num / chunk))]

    def direct() -> None:
        g = torch.Generator().manual_seed(0)
        for theta in thetas:
            sim(theta, generator=g)

    def plain() -> None:
        simgen.simulate(sim, PRIOR, num, seed=0, chunk_size=chunk, progress=False)

    def stored() -> None:
        folder = tempfile.mkdtemp(prefix="simgen-bench-")
        try:
            simgen.simulate(sim, PRIOR, num, seed=0, chunk_size=chunk, progress=False, store=f"{folder}/runs.h5")
        finally:
            shutil.rmtree(folder)

    t_direct, t_plain, t_store = (_best(f, repeats) for f in (direct, plain, stored))
    return {
        "simulations": num,
        "chunk_size": chunk,
        "direct_s": round(t_direct, 3),
        "simulate_s": round(t_plain, 3),
        "simulate_store_s": round(t_store, 3),
        "overhead_pct": round(100 * (t_plain / t_direct - 1), 2),
        "overhead_store_pct": round(100 * (t_store / t_direct - 1), 2),
        "store_ms_per_chunk": round(1000 * (t_store - t_plain) / math.ceil(num / chunk), 2),
    }


def speedup(num: int, chunk: int, dask: bool) -> dict[str, float]:
    sim = BusySimulator(1e-3)
    run = lambda **kw: simgen.simulate(sim, PRIOR, num, seed=1, chunk_size=chunk, progress=False, **kw)  # noqa: E731
    start = time.perf_counter()
    reference = run()
    t_serial = time.perf_counter() - start
    out: dict[str, float] = {"simulations": num, "chunk_size": chunk, "serial_s": round(t_serial, 2)}
    executors = {"processes_2": lambda: LocalProcesses(2)}
    if dask:
        executors["dask_localcluster_2"] = lambda: Dask(workers=2)
    for name, make in executors.items():
        start = time.perf_counter()
        executor = make()
        simgen.simulate(sim, PRIOR, 2 * chunk, seed=2, chunk_size=chunk, progress=False, executor=executor)  # warm-up
        startup = time.perf_counter() - start
        try:
            start = time.perf_counter()
            result = run(executor=executor)
            elapsed = time.perf_counter() - start
        finally:
            executor.close()
        assert torch.equal(result[1], reference[1]), f"{name}: results differ from the in-process run"
        out[f"{name}_s"] = round(elapsed, 2)
        out[f"{name}_speedup"] = round(t_serial / elapsed, 2)
        out[f"{name}_startup_s"] = round(startup, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script, not the targets")
    parser.add_argument("--no-dask", action="store_true", help="skip the dask LocalCluster")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning, module="distributed")
    if args.quick:
        results = {"overhead": overhead(4000, 1000, 1), "speedup": speedup(2000, 250, not args.no_dask)}
    else:
        results = {"overhead": overhead(50_000, 1000, 3), "speedup": speedup(20_000, 500, not args.no_dask)}
    results["cpu_count"] = os.cpu_count()
    results["load_average"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
