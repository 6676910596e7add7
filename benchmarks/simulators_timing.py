"""Time every registered simulator with default options: simulating 10⁴ samples, and the reference posterior.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/simulators_timing.py [--num 10000] [--samples 1000] [--observations 3]

For each name in ``simulators.available()`` (none skipped): θ ~ prior, then one timed call ``sim(theta)`` on
``--num`` rows, after a 10-row warm-up on other parameters (imports and lazily built tables; no cached result
can be reused). Where a reference posterior exists, ``--samples`` samples for ``--observations`` simulated
observations, one at a time: the first call includes one-time set-up (e.g. a cached grid), the mean of the
others is the cost per observation. Everything runs on one CPU thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import simulators


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench(name: str, num: int, samples: int, observations: int) -> dict[str, str]:
    sim = simulators.get(name)
    row = {"name": name, "x_shape": "x".join(map(str, getattr(sim, "x_shape", ()))) or "-"}
    torch.manual_seed(0)
    theta = sim.prior.sample((num + 10 + observations,))
    generator = torch.Generator().manual_seed(1)
    sim(theta[num : num + 10], generator=generator)  # warm-up
    seconds, x = _time(lambda: sim(theta[:num], generator=generator))
    row["simulate"] = f"{seconds:.2f}"
    x_obs = sim(theta[num + 10 :], generator=generator)
    try:
        first, _ = _time(lambda: sim.reference_posterior(x_obs[0], samples, generator=generator))
    except NotImplementedError as error:
        row["posterior_first"] = row["posterior_each"] = "-"
        row["note"] = f"no reference posterior: {error}"[:80]
        return row
    except Exception as error:  # report, never skip
        row["posterior_first"] = row["posterior_each"] = "error"
        row["note"] = f"{type(error).__name__}: {error}"[:80]
        return row
    each = [
        _time(lambda i=i: sim.reference_posterior(x_obs[i], samples, generator=generator))[0]
        for i in range(1, observations)
    ]
    row["posterior_first"] = f"{first:.3f}"
    row["posterior_each"] = f"{sum(each) / len(each):.3f}" if each else "-"
    row["note"] = ""
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10_000, help="simulations per timed call")
    parser.add_argument("--samples", type=int, default=1000, help="reference posterior samples per observation")
    parser.add_argument("--observations", type=int, default=3, help="observations for the posterior timing (>= 2)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__} on {platform.processor() or platform.machine()}, "
        f"torch.set_num_threads(1): every timing on ONE CPU thread"
    )
    print(
        f"simulate: one call on {args.num} prior draws [s]; posterior: {args.samples} reference samples for one "
        "observation [s], first call (with one-time set-up) and mean of the next ones\n"
    )
    header = ("simulator", "x_shape", f"simulate {args.num}", "posterior 1st", "posterior each", "note")
    rows = [bench(name, args.num, args.samples, max(args.observations, 2)) for name in simulators.available()]
    table = [header] + [
        (r["name"], r["x_shape"], r["simulate"], r["posterior_first"], r["posterior_each"], r["note"]) for r in rows
    ]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for k, line in enumerate(table):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
