"""simgen's neural ratio estimators against sbi's, on the same simulations, in the same run (issue 18).

For each task and simulation budget: simulate once (``simgen.simulate``, fixed seed), train each method on those
pairs, draw ``--num-samples`` posterior samples at ``--num-obs`` fixed observations (simgen: ``est.posterior()``,
MALA with its defaults; sbi: ``build_posterior()``, its default slice-sampling MCMC) and score them against the
task's reference posterior by C2ST (sbibm's classifier). Prints C2ST mean ± standard error over observations,
training and sampling wall time; with ``--json`` the rows are written after each one, so a run stopped early keeps
what it measured.

Methods (``--methods``): ``simgen:<variant>`` for ``simgen.RatioEstimator(prior, <variant>)`` (``nre``, ``nre_a``,
``nre_b``, ``nre_c``, ``bnre``), ``sbi:<class>`` for sbi's ``NRE`` (its NRE-B), ``NRE_A``, ``NRE_C`` or ``BNRE``
with their defaults.

    OMP_NUM_THREADS=1 python benchmarks/methods_vs_sbi.py                  # NRE/BNRE, 3 tasks x {1e3, 1e4}
    OMP_NUM_THREADS=1 python benchmarks/methods_vs_sbi.py --tasks two_moons --budgets 10000 --num-obs 3 \\
        --methods simgen:nre_a,simgen:nre_b,simgen:nre_c,simgen:bnre --json variants.json

Both run with the same number of torch threads (``--threads``, default 1), printed in the header.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import warnings
from pathlib import Path

import torch
from _common import mean_se, observations

import simgen
import simulators

DEFAULT_METHODS = "simgen:nre,sbi:NRE,simgen:bnre,sbi:BNRE"


def _fit(method: str, prior, theta: torch.Tensor, x: torch.Tensor, seed: int):
    """A trained method: (sampler of n draws at one x, training seconds, epochs)."""
    lib, name = method.split(":", 1)
    if lib == "simgen":
        est = simgen.RatioEstimator(prior, name)
        history = est.fit(theta, x, seed=seed, progress=False)
        post = est.posterior(progress=False)

        def sample(n: int, x_o: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return post.sample(n, x_o, generator=generator)

        return sample, history.wall_time, history.epochs
    if lib == "sbi":
        import sbi.inference

        torch.manual_seed(seed)
        inference = getattr(sbi.inference, name)(prior=prior, show_progress_bars=False)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # sbi's "converged after N epochs" line
            inference.append_simulations(theta, x).train(show_train_summary=False)
        seconds = time.perf_counter() - start
        posterior = inference.build_posterior()

        def sample(n: int, x_o: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            torch.manual_seed(int(torch.randint(0, 2**31, (), generator=generator)))
            return posterior.sample((n,), x=x_o, show_progress_bars=False)

        return sample, seconds, inference._summary["epochs_trained"][-1]
    raise ValueError(f"a method is simgen:<variant> or sbi:<class>; got {method!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="two_moons,slcp,gaussian_linear")
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--num-obs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import sbi

    print(f"simgen {simgen.__version__} vs sbi {sbi.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.num_obs} observations, {args.num_samples} samples, "
          "C2ST as sbibm (MLP 2x10d, 5 folds)", flush=True)
    rows = []
    for task in args.tasks.split(","):
        sim = simulators.get(task)
        theta_o, x_o = observations(sim, args.num_obs, seed=1000 + args.seed)
        reference = sim.reference_posterior_batched(
            x_o, args.num_samples, generator=torch.Generator().manual_seed(args.seed)
        )
        for budget in map(int, args.budgets.split(",")):
            theta, x = simgen.simulate(sim, sim.prior, budget, seed=args.seed, progress=False)
            for method in args.methods.split(","):
                sample, train_s, epochs = _fit(method, sim.prior, theta, x, args.seed)
                generator = torch.Generator().manual_seed(args.seed)
                scores, sample_s = [], 0.0
                for i in range(args.num_obs):
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # R-hat of multimodal posteriors
                        draws = sample(args.num_samples, x_o[i], generator)
                    sample_s += time.perf_counter() - start
                    scores.append(simgen.diagnostics.c2st(draws, reference[i]))
                mean, se = mean_se(scores)
                row = {"task": task, "budget": budget, "method": method, "c2st": mean, "se": se,
                       "train_s": train_s, "epochs": epochs, "sample_s_per_obs": sample_s / args.num_obs,
                       "scores": scores}
                rows.append(row)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=2))
                print(f"{task:16s} {budget:>6d}  {method:14s} C2ST {mean:.3f} ± {se:.3f}  train {train_s:6.1f}s "
                      f"({epochs} epochs)  sampling {sample_s / args.num_obs:5.1f}s/obs", flush=True)

    if not rows:
        return
    print("\n| task | sims | method | C2ST | train (s) | sampling (s/obs) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['budget']} | {r['method']} | {r['c2st']:.3f} ± {r['se']:.3f} | "
              f"{r['train_s']:.1f} | {r['sample_s_per_obs']:.1f} |")


if __name__ == "__main__":
    main()
