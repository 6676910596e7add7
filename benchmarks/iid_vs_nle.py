"""One amortised posterior over i.i.d. sets against the likelihood route, on gaussian_linear (issue 18, part 3).

Simulate ``--budget`` θ with ``--max-set`` i.i.d. draws each (``simgen.simulate(..., iid=M)``), then

* i.i.d. NPE: ``PosteriorEstimator(prior, "flow", iid=True)`` on the sets; p(θ | x_1..m) by one network pass;
* NLE: ``LikelihoodEstimator(prior, "flow")`` on the first ``--nle-draws`` draws of each θ (single (θ, x) pairs);
  p(θ | x_1..m) ∝ p(θ) Π_j q(x_j | θ) by its MCMC (``emu.posterior()``, MALA defaults),

and score both against the analytic posterior N(Σ x_j / (m + 1), 0.1 / (m + 1) I) by C2ST at ``--num-obs``
fixed θ for each m in ``--sizes``. Prints C2ST mean ± SE, training and sampling seconds; ``--json`` writes the rows
as they come.

    OMP_NUM_THREADS=1 python benchmarks/iid_vs_nle.py --budget 10000 --max-set 20 --sizes 1,5,20 --num-obs 3
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=10_000, help="θ rows (each with --max-set draws)")
    parser.add_argument("--max-set", type=int, default=20)
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--nle-draws", type=int, default=1, help="draws per θ the emulator trains on")
    parser.add_argument("--num-obs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulators.get("gaussian_linear")
    print(f"simgen {simgen.__version__}; gaussian_linear, {args.budget} θ x {args.max_set} draws; "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    theta, x = simgen.simulate(sim, sim.prior, args.budget, iid=args.max_set, seed=args.seed, progress=False)
    npe = simgen.PosteriorEstimator(sim.prior, "flow", iid=True)
    npe_history = npe.fit(theta, x, seed=args.seed, progress=False)
    nle = simgen.LikelihoodEstimator(sim.prior, "flow")
    d = args.nle_draws
    nle_history = nle.fit(theta.repeat_interleave(d, 0), x[:, :d].reshape(-1, x.shape[-1]), seed=args.seed,
                          progress=False)
    print(f"trained: iid NPE {npe_history.wall_time:.1f}s ({npe_history.epochs} epochs), NLE "
          f"{nle_history.wall_time:.1f}s ({nle_history.epochs} epochs, {theta.shape[0] * d} pairs)", flush=True)
    theta_o, _ = observations(sim, args.num_obs, seed=1000 + args.seed)
    g = torch.Generator().manual_seed(2000 + args.seed)
    x_o = torch.stack([sim(t.expand(args.max_set, -1), generator=g) for t in theta_o])  # [k, M, d]
    rows = []
    for m in map(int, args.sizes.split(",")):
        scores: dict[str, list[float]] = {"iid_npe": [], "nle_mcmc": []}
        seconds = {"iid_npe": 0.0, "nle_mcmc": 0.0}
        for i in range(args.num_obs):
            reference = sim.reference_posterior(x_o[i, :m], args.num_samples,
                                                generator=torch.Generator().manual_seed(i))
            for name, draw in (("iid_npe", lambda xs: npe.sample(args.num_samples, xs, generator=g)),
                               ("nle_mcmc", lambda xs: nle.posterior(progress=False).sample(
                                   args.num_samples, xs, generator=g))):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    draws = draw(x_o[i, :m])
                seconds[name] += time.perf_counter() - start
                scores[name].append(simgen.diagnostics.c2st(draws, reference))
        row = {"m": m}
        for name in scores:
            mean, se = mean_se(scores[name])
            row[name] = {"c2st": mean, "se": se, "sample_s_per_obs": seconds[name] / args.num_obs,
                         "scores": scores[name]}
        row["train_s"] = {"iid_npe": npe_history.wall_time, "nle": nle_history.wall_time}
        rows.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        print(f"m = {m:3d}  iid NPE C2ST {row['iid_npe']['c2st']:.3f} ± {row['iid_npe']['se']:.3f} "
              f"({row['iid_npe']['sample_s_per_obs']:.2f} s/obs)   NLE + MCMC {row['nle_mcmc']['c2st']:.3f} ± "
              f"{row['nle_mcmc']['se']:.3f} ({row['nle_mcmc']['sample_s_per_obs']:.2f} s/obs)", flush=True)


if __name__ == "__main__":
    main()
