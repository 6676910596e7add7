"""The MCMC posterior's own error: ``MCMCPosterior`` on the simulator's exact likelihood (no emulator error).

An emulator's or a ratio estimator's posterior is sampled by ``MCMCPosterior``, which runs many short chains
started by SIR that never cross between modes, so each mode keeps the share of chains its starting points gave
it. This benchmark measures that sampler alone: it samples each task's posterior on the simulator's *exact*
likelihood at ``--num-obs`` fixed observations, for each (warm-up, thin) in ``--settings``, and scores the draws
against the task's reference posterior by C2ST (sbibm's classifier): with the exact likelihood, a C2ST above 0.5
is the sampler's alone. Also reported: wall seconds per observation (the whole ``sample`` call) and, on SLCP, the
shares of draws with θ₃ > 0 and θ₄ > 0 (its mirror modes hold half the mass on each side).

    OMP_NUM_THREADS=1 python benchmarks/mcmc_exact.py                       # slcp, 5 observations
    OMP_NUM_THREADS=1 python benchmarks/mcmc_exact.py --settings 200:1:10000:0,default --tasks slcp,gaussian_linear

A setting is ``warmup:thin[:num_init[:init_ess]]`` or ``default`` (``MCMCPosterior``'s defaults). SIR draws
``num_init`` prior draws, then more until its weights' effective sample size reaches ``init_ess`` (0: one round,
the former default); the draws each run took are averaged in the output.

Runs with ``--threads`` torch threads (default 1), printed in the header.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from _common import mean_se, observations

import simgen
import simulators
from simgen.mcmc import MCMCPosterior


class ExactLikelihood:
    """The simulator's exact log-likelihood with the interface ``MCMCPosterior`` takes from an emulator."""

    device = torch.device("cpu")

    def __init__(self, sim: simulators.Simulator) -> None:
        self.sim = sim

    def check_x(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32).reshape(-1, *self.sim.x_shape)

    def log_likelihood(self, theta: torch.Tensor, x_obs: torch.Tensor, generator=None, grad=False) -> torch.Tensor:
        shape = (theta.shape[0], *self.sim.x_shape)
        return sum(self.sim.log_likelihood(theta, x_obs[j].expand(shape)).to(theta.dtype) for j in range(len(x_obs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="slcp")
    parser.add_argument("--settings", default="200:1:10000:0,default",
                        help="warm-up:thin[:num_init[:init_ess]] of the MALA chains, or default (see above)")
    parser.add_argument("--num-obs", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"simgen {simgen.__version__}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{args.num_obs} observations, {args.num_samples} draws, MALA on the exact likelihood", flush=True)
    rows = []
    for task in args.tasks.split(","):
        sim = simulators.get(task)
        _, x_o = observations(sim, args.num_obs, seed=1000 + args.seed)
        reference = sim.reference_posterior_batched(x_o, args.num_samples,
                                                    generator=torch.Generator().manual_seed(args.seed))
        for setting in args.settings.split(","):
            options = {}
            if setting != "default":
                values = setting.split(":")
                keys = ("warmup", "thin", "num_init", "init_ess")[: len(values)]
                options = {k: (float(v) if k == "init_ess" else int(v)) for k, v in zip(keys, values, strict=True)}
            post = MCMCPosterior(ExactLikelihood(sim), sim.prior, progress=False, **options)
            warmup, thin = post.warmup, post.thin
            generator = torch.Generator().manual_seed(args.seed)
            scores, shares, seconds, draws_sir = [], [], 0.0, []
            for i in range(args.num_obs):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # R-hat over mirror modes
                    draws = post.sample(args.num_samples, x_o[i : i + 1], generator=generator)
                seconds += time.perf_counter() - start
                draws_sir.append(post.last_run.init_draws)
                scores.append(simgen.diagnostics.c2st(draws, reference[i]))
                if task == "slcp":
                    shares.append([(draws[:, k] > 0).float().mean().item() for k in (2, 3)])
            mean, se = mean_se(scores)
            num_init = sum(draws_sir) / len(draws_sir)
            row = {"task": task, "setting": setting, "warmup": warmup, "thin": thin, "num_init": num_init,
                   "init_ess": post.init_ess, "c2st": mean, "se": se,
                   "scores": scores, "seconds_per_obs": seconds / args.num_obs, "mode_shares": shares}
            rows.append(row)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=2))
            worst = max(abs(s - 0.5) for pair in shares for s in pair) if shares else float("nan")
            print(f"{task:10s} warm-up {warmup:4d} thin {thin:2d} SIR draws {num_init:9.0f} (ESS target "
                  f"{post.init_ess:g})  C2ST {mean:.3f} ± {se:.3f} "
                  f"{[round(s, 3) for s in scores]}  worst |share − 0.5| {worst:.3f}  "
                  f"{seconds / args.num_obs:5.1f} s/obs", flush=True)

    print("\n| task | warm-up | thin | SIR draws (mean) | SIR ESS target | C2ST | s/obs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['warmup']} | {r['thin']} | {r['num_init']:.0f} | {r['init_ess']:g} | "
              f"{r['c2st']:.3f} ± {r['se']:.3f} | "
              f"{r['seconds_per_obs']:.1f} |")


if __name__ == "__main__":
    main()
