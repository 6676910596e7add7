"""simgen's flow NPE against sbi's NPE (its defaults), on the same simulations, in the same run.

For each task and simulation budget: simulate once (``simgen.simulate``, fixed seed), train both estimators on
those pairs, and compare their posteriors with the task's reference posterior (``simulators``' exact samplers /
analytic / MCMC) at ``--num-obs`` fixed observations by C2ST (sbibm's classifier, 10,000 samples each).
Prints C2ST mean ± standard error over observations and training wall time for both, and their ratios.

    OMP_NUM_THREADS=1 python benchmarks/npe_vs_sbi.py                      # 3 tasks x {1e3, 1e4}
    OMP_NUM_THREADS=1 python benchmarks/npe_vs_sbi.py --tasks two_moons --budgets 1000 --num-obs 3

Both run with the same number of torch threads (``--threads``, default 1), printed in the header.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from _common import mean_se, observations, train_sbi

import simgen
import simulators


def _train_sbi(prior, theta, x, seed: int):
    from sbi.inference import NPE

    torch.manual_seed(seed)
    inference = NPE(prior=prior, show_progress_bars=False)
    _, seconds, cpu, epochs = train_sbi(inference, theta, x)
    return inference.build_posterior(), seconds, cpu, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="two_moons,slcp,gaussian_linear")
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--num-obs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--train-only", action="store_true", help="time the training only (no sampling, no C2ST)")
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
            post = simgen.PosteriorEstimator(sim.prior, "flow")
            cpu = time.process_time()
            history = post.fit(theta, x, seed=args.seed, progress=False)
            cpu = time.process_time() - cpu
            sbi_post, sbi_seconds, sbi_cpu, sbi_epochs = _train_sbi(sim.prior, theta, x, args.seed)
            # CPU seconds of this process: the fairer ratio on a machine shared with other work
            timing = (f"train simgen {history.wall_time:6.1f}s ({history.epochs} epochs, {cpu:.1f} CPU s)"
                      f"  sbi {sbi_seconds:6.1f}s ({sbi_epochs} epochs, {sbi_cpu:.1f} CPU s)"
                      f"  ratio {history.wall_time / sbi_seconds:.2f} (CPU {cpu / sbi_cpu:.2f})")
            if args.train_only:
                print(f"{task:16s} {budget:>6d}  {timing}", flush=True)
                continue
            ours = post.sample_batched(args.num_samples, x_o, generator=torch.Generator().manual_seed(args.seed))
            scores = {"simgen": [], "sbi": []}
            for i in range(args.num_obs):
                theirs = sbi_post.sample((args.num_samples,), x=x_o[i], show_progress_bars=False)
                scores["simgen"].append(simgen.diagnostics.c2st(ours[i], reference[i]))
                scores["sbi"].append(simgen.diagnostics.c2st(theirs, reference[i]))
            (m_ours, se_ours), (m_sbi, se_sbi) = mean_se(scores["simgen"]), mean_se(scores["sbi"])
            row = {
                "task": task, "budget": budget,
                "simgen_c2st": m_ours, "simgen_se": se_ours, "sbi_c2st": m_sbi, "sbi_se": se_sbi,
                "simgen_train_s": history.wall_time, "sbi_train_s": sbi_seconds,
                "simgen_train_cpu_s": cpu, "sbi_train_cpu_s": sbi_cpu,
                "simgen_epochs": history.epochs, "sbi_epochs": sbi_epochs, "scores": scores,
            }
            rows.append(row)
            if args.json:  # after every row, so a run stopped early keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=2))
            print(f"{task:16s} {budget:>6d}  C2ST simgen {m_ours:.3f} ± {se_ours:.3f}  sbi {m_sbi:.3f} ± {se_sbi:.3f}"
                  f"  (diff {m_ours - m_sbi:+.3f}, {abs(m_ours - m_sbi) / math.hypot(se_ours, se_sbi):.1f} SE)"
                  f"  {timing}", flush=True)

    if not rows:
        return
    print("\n| task | sims | simgen C2ST | sbi C2ST | simgen train (s) | sbi train (s) | time ratio | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['budget']} | {r['simgen_c2st']:.3f} ± {r['simgen_se']:.3f} | "
              f"{r['sbi_c2st']:.3f} ± {r['sbi_se']:.3f} | {r['simgen_train_s']:.1f} | {r['sbi_train_s']:.1f} | "
              f"{r['simgen_train_s'] / r['sbi_train_s']:.2f} | "
              f"{r['simgen_train_cpu_s'] / r['sbi_train_cpu_s']:.2f} |")
    for budget in sorted({r["budget"] for r in rows}):
        sel = [r for r in rows if r["budget"] == budget]
        ours = sum(r["simgen_c2st"] for r in sel) / len(sel)
        theirs = sum(r["sbi_c2st"] for r in sel) / len(sel)
        ratio = sum(r["simgen_train_s"] for r in sel) / sum(r["sbi_train_s"] for r in sel)
        print(f"budget {budget}: mean C2ST simgen {ours:.3f} vs sbi {theirs:.3f}; "
              f"total training time ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
