"""The ``simgen`` command.

``simgen simulate`` runs a simulation campaign into a store (resumable: run the same command again after an
interruption, or with a larger ``--num`` to extend it).

``simgen run`` runs the embedded default pipeline: simulate the two-moons benchmark, fit a flow posterior,
compare it with the exact posterior at a reference observation (C2ST), and write a corner plot, the model
and a summary to ``simgen-out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

#: sbibm's first two-moons reference observation and its true parameter
TWO_MOONS_X_OBS = (-0.6397, 0.1623)
TWO_MOONS_THETA = (-0.8177, -0.5757)


def _run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    import simgen
    import simulators

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))  # noqa: E731
    minutes = max(1, round(args.num_simulations / 10_000 * 2.5))
    say(f"simgen run: two_moons, {args.num_simulations} simulations, flow posterior "
        f"(expect about {minutes} min on one CPU thread)")

    sim = simulators.get("two_moons")
    start = time.perf_counter()
    theta, x = simgen.simulate(sim, sim.prior, args.num_simulations, seed=args.seed, progress=not args.quiet)
    post = simgen.PosteriorEstimator(sim.prior, "flow", simulator=sim, device=args.device)
    settings = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    history = post.fit(theta, x, seed=args.seed, progress=not args.quiet, **settings)
    say(f"trained in {history.wall_time:.1f} s ({history.epochs} epochs, best validation loss "
        f"{history.best_validation_loss:.3f} at epoch {history.best_epoch})")

    x_obs = torch.tensor(TWO_MOONS_X_OBS)
    generator = torch.Generator().manual_seed(args.seed)
    samples = post.sample(args.num_samples, x_obs, generator=generator)
    reference = sim.reference_posterior(x_obs, args.num_samples, generator=generator)
    score = simgen.diagnostics.c2st(samples, reference)
    summary = {
        "simulator": "two_moons",
        "num_simulations": int(theta.shape[0]),
        "train_seconds": round(history.wall_time, 2),
        "epochs": history.epochs,
        "x_obs": list(TWO_MOONS_X_OBS),
        "c2st_vs_exact_posterior": round(score, 4),
        "posterior_mean": samples.mean(0).tolist(),
        "reference_mean": reference.mean(0).tolist(),
        "posterior_std": samples.std(0).tolist(),
        "reference_std": reference.std(0).tolist(),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    fig = simgen.plots.corner(samples, reference=reference, truth=torch.tensor(TWO_MOONS_THETA),
                              labels=sim.parameter_names)
    fig.savefig(out / "corner.png", dpi=120)
    post.save(out / "posterior.pt")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"C2ST against the exact posterior: {score:.3f} (0.5 = indistinguishable)")
    say(f"posterior mean {[round(v, 3) for v in summary['posterior_mean']]}, "
        f"exact {[round(v, 3) for v in summary['reference_mean']]}")
    say(f"wrote {out / 'corner.png'}, {out / 'posterior.pt'}, {out / 'summary.json'} "
        f"({summary['total_seconds']} s in all)")
    return 0


def _option(text: str) -> tuple[str, object]:
    """``k=v`` with v read as JSON when it parses (numbers, lists, true/false), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _simulate(args: argparse.Namespace) -> int:
    import warnings

    import torch

    import simgen
    import simulators

    torch.set_num_threads(args.threads)
    options = dict(args.option or [])
    sim = simulators.get(args.simulator, **options)
    executor = None
    if args.dask is not None:
        executor = "dask" if args.dask == "local" else args.dask
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))  # noqa: E731
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # summarised below
        store = simgen.simulate(sim, sim.prior, args.num, seed=args.seed, chunk_size=args.chunk_size,
                                progress=not args.quiet, store=args.store, return_data=False,
                                workers=args.workers, executor=executor,
                                metadata={"simulator_options": {"name": args.simulator, **options}})
    valid = store.valid
    n, n_valid = valid.shape[0], int(valid.sum())
    say(f"store {args.store}: {n} simulations, {n_valid} valid, {n - n_valid} failed "
        f"({time.perf_counter() - start:.1f} s)")
    if n_valid < n:
        failures = store.failures
        kinds: dict[str, int] = {}
        for f in failures:
            kinds[f.error] = kinds.get(f.error, 0) + 1
        say("failures: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1])))
        for f in failures[:3]:
            say(f"  row {f.row}, theta={[round(v, 4) for v in f.theta]}: {f.error}: {f.message[:200]}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simgen", description="Simulation-based inference with deep generative models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the embedded default pipeline (two moons, flow posterior)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--num-simulations", type=int, default=10_000, help="simulation budget (default 10000)")
    run.add_argument("--num-samples", type=int, default=10_000, help="posterior samples to draw (default 10000)")
    run.add_argument("--max-epochs", type=int, default=None, help="cap on training epochs")
    run.add_argument("--seed", type=int, default=0, help="seed of simulation, training and sampling")
    run.add_argument("--out", default="simgen-out", help="output folder (default simgen-out)")
    run.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    run.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                     help="torch CPU threads (default: half the cores)")
    run.add_argument("--quiet", action="store_true", help="print nothing")
    run.set_defaults(func=_run)

    sim = sub.add_parser("simulate", help="run a simulation campaign into a resumable store",
                         description="Simulate --num parameter draws from the simulator's prior into --store "
                                     "(resumable: run again after an interruption, or with a larger --num).")
    sim.add_argument("--simulator", required=True, help="registered simulator name (e.g. two_moons)")
    sim.add_argument("--option", action="append", type=_option, metavar="KEY=VALUE",
                     help="simulator option (repeatable; VALUE read as JSON when it parses)")
    sim.add_argument("--num", type=int, required=True, help="number of simulations")
    sim.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    sim.add_argument("--store", required=True, help="store folder, e.g. runs.h5")
    sim.add_argument("--chunk-size", type=int, default=1000, help="simulations per chunk (default 1000)")
    where = sim.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="local worker processes")
    where.add_argument("--dask", default=None, metavar="ADDRESS",
                       help="dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster")
    sim.add_argument("--threads", type=int, default=1, help="torch CPU threads in this process (default 1)")
    sim.add_argument("--quiet", action="store_true", help="print nothing")
    sim.set_defaults(func=_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simgen`` console script; returns the exit code (0 ok, 1 failure, 2 usage)."""
    args = _parser().parse_args(argv)
    if getattr(args, "num", 1) < 1 or (getattr(args, "workers", None) or 1) < 1:
        print("simgen: --num and --workers must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "num_simulations", 10) < 10 or getattr(args, "num_samples", 10) < 10:
        print("simgen: --num-simulations and --num-samples must be at least 10", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"simgen: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
