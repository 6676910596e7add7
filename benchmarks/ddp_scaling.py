"""Training throughput of data-parallel training (torchrun, DistributedDataParallel) at 1 and more processes.

Simulates a store of ``--num`` rows of ``--task`` (seed 0, chunks of ``--chunk-size``), then fits
``PosteriorEstimator(prior)`` (a flow) on it streamed from the store, for ``--epochs`` epochs (no early
stopping) with a global batch of ``--batch-size`` rows, once per process count in ``--nproc``: 1 is the plain
one-process trainer, N > 1 is ``torchrun --standalone --nproc-per-node N`` (gloo on CPU, NCCL with
``--device cuda``), each rank streaming its shard of the chunks. Each process uses ``--threads`` torch threads
(printed). Throughput is training rows per second of the training loop (``history.wall_time``, after the
standardisation pass), epochs × training rows / seconds; the JSON goes to ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/ddp_scaling.py --nproc 1 2 --threads 1 --out ddp_scaling.json
    python benchmarks/ddp_scaling.py --nproc 1 --device cuda --out ddp_scaling_gpu.json   # 1 GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import simgen
import simulators


def worker(args: argparse.Namespace) -> None:
    """One process (or one rank under torchrun): fit on the store and report the loop's throughput."""
    torch.set_num_threads(args.threads)
    sim = simulators.get(args.task)
    post = simgen.PosteriorEstimator(sim.prior, device=args.device)
    # a tiny memory budget: one process streams the store as the ranks do, instead of loading it
    history = post.fit(args.store, seed=0, progress=False, max_memory_gb=1e-6, max_epochs=args.epochs,
                       patience=args.epochs, batch_size=args.batch_size)
    if simgen.training.is_main_process():
        rows = history.epochs * history.num_train
        result = {
            "nproc": int(os.environ.get("WORLD_SIZE", "1")), "threads_per_process": torch.get_num_threads(),
            "device": str(post.device), "backend": torch.distributed.get_backend()
            if torch.distributed.is_initialized() else None,
            "epochs": history.epochs, "num_train": history.num_train, "batch_size": args.batch_size,
            "train_seconds": history.wall_time, "rows_per_second": rows / history.wall_time,
            "best_validation_loss": history.best_validation_loss,
        }
        Path(args.result).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="two_moons")
    parser.add_argument("--num", type=int, default=40_000, help="simulations in the store")
    parser.add_argument("--chunk-size", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512, help="global batch (split over the processes)")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="ddp_scaling.json")
    # set by main() for the processes it starts
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs.h5"
        sim = simulators.get(args.task)
        simgen.simulate(sim, sim.prior, args.num, seed=0, chunk_size=args.chunk_size, progress=False, store=store,
                        return_data=False)
        for n in args.nproc:
            result = Path(tmp) / f"result{n}.json"
            common = [str(Path(__file__).resolve()), "--worker", "--store", str(store), "--result", str(result),
                      "--task", args.task, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                      "--threads", str(args.threads), "--device", args.device]
            launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                        "--standalone", f"--nproc-per-node={n}"]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            subprocess.run(launcher + common, check=True, env=env)
            results.append(json.loads(result.read_text()))
            print(json.dumps(results[-1]), flush=True)
    summary = {"task": args.task, "num_simulations": args.num, "chunk_size": args.chunk_size,
               "cpu_count": os.cpu_count(), "torch": torch.__version__, "runs": results}
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
