"""Likelihood-based posterior sampling: simgen's MCMC on its flow emulator against sbi's NLE with its default MCMC.

For each task: simulate ``--budget`` pairs once (``simgen.simulate``, fixed seed), train simgen's
``LikelihoodEstimator(model="flow")`` and sbi's ``NLE`` (its defaults) on them, then, at ``--num-obs`` fixed
observations, time the drawing of ``--num-samples`` posterior samples by each (simgen: ``emu.posterior()``,
by default MALA with 500 chains; sbi: ``build_posterior()``, i.e. ``slice_np_vectorized``, 20 chains, 200 warm-up
steps, resampling initialisation), and score both against the task's reference posterior by C2ST (sbibm's classifier).
R̂ (rank-normalised split-R̂) and bulk ESS are computed for both runs' chains, with the same functions, on
mode-invariant quantities (two_moons: |θ₁ + θ₂| and θ₂ − θ₁; SLCP: θ₁, θ₂, |θ₃|, |θ₄|, θ₅), since both
posteriors are multimodal by symmetry and chains do not cross between mirror modes.

    OMP_NUM_THREADS=1 python benchmarks/mcmc_vs_sbi.py                        # two_moons and slcp, 5 observations
    OMP_NUM_THREADS=1 python benchmarks/mcmc_vs_sbi.py --tasks two_moons --num-obs 2 --json out.json

Both run with the same number of torch threads (``--threads``, default 1), printed in the header. Sampling times
are wall-clock seconds per observation for the whole ``sample`` call (initialisation, warm-up, sampling).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from _common import mean_se, observations, train_sbi

import simgen
import simulators
from simgen.mcmc import effective_sample_size, split_rhat

#: mode-invariant quantities per task, θ [N, d] -> [N, k]
MONITORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "two_moons": lambda t: torch.stack([(t[:, 0] + t[:, 1]).abs(), t[:, 1] - t[:, 0]], dim=1),
    "slcp": lambda t: torch.cat([t[:, :2], t[:, 2:4].abs(), t[:, 4:]], dim=1),
}


def _train_sbi(prior, theta, x, seed: int):
    from sbi.inference import NLE

    torch.manual_seed(seed)
    inference = NLE(prior=prior, show_progress_bars=False)
    _, seconds, _, _ = train_sbi(inference, theta, x)
    return inference.build_posterior(), seconds


def _trained(task: str, sim: simulators.Simulator, theta: torch.Tensor, x: torch.Tensor, args: argparse.Namespace):
    """simgen's flow emulator and sbi's NLE posterior trained on (θ, x), or loaded from ``--cache``."""
    stem = Path(args.cache or ".") / f"{task}_{args.budget}_{args.seed}"
    ours_path, theirs_path = stem.with_name(stem.name + "_simgen.pt"), stem.with_name(stem.name + "_sbi.pt")
    if args.cache and ours_path.exists() and theirs_path.exists():
        print(f"{task}: trained estimators loaded from {args.cache}", flush=True)
        return simgen.load(ours_path, prior=sim.prior), torch.load(theirs_path, weights_only=False)
    emu = simgen.LikelihoodEstimator(sim.prior, "flow")
    history = emu.fit(theta, x, seed=args.seed, progress=False)
    sbi_post, sbi_train = _train_sbi(sim.prior, theta, x, args.seed)
    print(f"{task}: trained simgen {history.wall_time:.1f}s ({history.epochs} epochs), sbi {sbi_train:.1f}s",
          flush=True)
    if args.cache:
        Path(args.cache).mkdir(parents=True, exist_ok=True)
        emu.save(ours_path)
        torch.save(sbi_post, theirs_path)
    return emu, sbi_post


def _sbi_chains(posterior) -> torch.Tensor:
    """The kept draws of sbi's last MCMC run in θ, ``[C, n, d]`` (its sampler stores them in its transformed
    space, warm-up included)."""
    sampler = posterior._posterior_sampler
    chains = torch.as_tensor(sampler.get_samples(group_by_chain=True), dtype=torch.float32)
    chains = chains[:, posterior.warmup_steps :]
    c, n, d = chains.shape
    return posterior.theta_transform.inv(chains.reshape(-1, d)).reshape(c, n, d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="two_moons,slcp")
    parser.add_argument("--budget", type=int, default=10_000, help="simulations both estimators train on")
    parser.add_argument("--num-obs", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--method", default=None, choices=["mala", "hmc", "slice"],
                        help="simgen's sampler (default: MCMCPosterior's)")
    parser.add_argument("--num-chains", type=int, default=None, help="simgen's chains (default: the method's)")
    parser.add_argument("--warmup", type=int, default=None, help="simgen's warm-up (default: the method's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--cache", default=None,
                        help="folder keeping both trained estimators per (task, budget, seed), for re-runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import sbi

    options = {}
    if args.method is not None:
        options["method"] = args.method
    if args.num_chains is not None:
        options["num_chains"] = args.num_chains
    if args.warmup is not None:
        options["warmup"] = args.warmup
    print(f"simgen {simgen.__version__} vs sbi {sbi.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.budget} simulations, {args.num_obs} observations, "
          f"{args.num_samples} samples; simgen MCMC {options}; C2ST as sbibm (MLP 2x10d, 5 folds)", flush=True)
    rows = []
    for task in args.tasks.split(","):
        sim = simulators.get(task)
        monitor = MONITORS.get(task)
        theta_o, x_o = observations(sim, args.num_obs, seed=1000 + args.seed)
        reference = sim.reference_posterior_batched(
            x_o, args.num_samples, generator=torch.Generator().manual_seed(args.seed)
        )
        theta, x = simgen.simulate(sim, sim.prior, args.budget, seed=args.seed, progress=False)
        emu, sbi_post = _trained(task, sim, theta, x, args)
        post = emu.posterior(progress=False, monitor=monitor, **options)
        for i in range(args.num_obs):
            generator = torch.Generator().manual_seed(args.seed + i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the run's R̂/ESS are reported below
                start = time.perf_counter()
                ours = post.sample(args.num_samples, x_o[i], generator=generator)
                ours_s = time.perf_counter() - start
            run = post.last_run
            torch.manual_seed(args.seed + i)
            start = time.perf_counter()
            theirs = sbi_post.sample((args.num_samples,), x=x_o[i], show_progress_bars=False)
            sbi_s = time.perf_counter() - start
            chains = _sbi_chains(sbi_post)
            c, n, d = chains.shape
            q = chains if monitor is None else monitor(chains.reshape(-1, d)).reshape(c, n, -1)
            row = {
                "task": task, "obs": i,
                "simgen_s": ours_s, "sbi_s": sbi_s,
                "simgen_c2st": simgen.diagnostics.c2st(ours, reference[i]),
                "sbi_c2st": simgen.diagnostics.c2st(theirs, reference[i]),
                "simgen_rhat": float(run.r_hat.max()), "simgen_ess": float(run.ess.min()),
                "sbi_rhat": float(split_rhat(q).max()), "sbi_ess": float(effective_sample_size(q).min()),
                "simgen_acceptance": run.acceptance_rate, "simgen_evaluations": run.num_evaluations,
                "simgen_chains": run.num_chains, "sbi_chains": c,
            }
            rows.append(row)
            print(f"{task:10s} obs {i}  simgen {ours_s:6.2f}s C2ST {row['simgen_c2st']:.3f} R̂ {row['simgen_rhat']:.3f}"
                  f" ESS {row['simgen_ess']:6.0f}  |  sbi {sbi_s:6.2f}s C2ST {row['sbi_c2st']:.3f}"
                  f" R̂ {row['sbi_rhat']:.3f} ESS {row['sbi_ess']:6.0f}  |  time ratio {ours_s / sbi_s:.2f}",
                  flush=True)

    print("\n| task | simgen time (s) | sbi time (s) | ratio | simgen C2ST | sbi C2ST | simgen max R̂ | sbi max R̂ "
          "| simgen min ESS | sbi min ESS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in dict.fromkeys(r["task"] for r in rows):
        sel = [r for r in rows if r["task"] == task]
        stats = {k: mean_se([r[k] for r in sel]) for k in ("simgen_s", "sbi_s", "simgen_c2st", "sbi_c2st")}
        ratio = sum(r["simgen_s"] for r in sel) / sum(r["sbi_s"] for r in sel)
        print(f"| {task} | {stats['simgen_s'][0]:.2f} | {stats['sbi_s'][0]:.2f} | {ratio:.2f} | "
              f"{stats['simgen_c2st'][0]:.3f} ± {stats['simgen_c2st'][1]:.3f} | "
              f"{stats['sbi_c2st'][0]:.3f} ± {stats['sbi_c2st'][1]:.3f} | "
              f"{max(r['simgen_rhat'] for r in sel):.3f} | {max(r['sbi_rhat'] for r in sel):.3f} | "
              f"{min(r['simgen_ess'] for r in sel):.0f} | {min(r['sbi_ess'] for r in sel):.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
