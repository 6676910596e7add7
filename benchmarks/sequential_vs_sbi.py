"""simgen's truncated sequential NPE (TSNPE) against sbi's, per observation, at equal total budgets (issue 18).

For each task, total budget and observation: ``simgen.PosteriorEstimator(prior).fit_sequential(sim, x_o,
num_simulations=budget, rounds=R)`` against sbi's TSNPE recipe (``NPE`` trained on all rounds with
``force_first_round_loss=True``, proposals ``RestrictedPrior(prior, get_density_thresholder(posterior,
quantile=1e-4), sample_with="rejection")``, as sbi's tutorial), and the one-round baselines (``--methods``:
``simgen:npe``, ``sbi:npe``: all the budget from the prior); ``simgen:snle`` and ``simgen:snre`` are sequential NLE
and NRE (``LikelihoodEstimator`` / ``RatioEstimator``'s ``fit_sequential``: later rounds from the MCMC posterior,
which also gives the draws scored), ``simgen:nle`` / ``simgen:nre`` their one-round versions.
Each method's posterior at x_o is scored against
the task's reference posterior by C2ST (sbibm's classifier). Prints C2ST mean ± standard error over observations
and the wall time per observation (all rounds: simulation, training, truncation); ``--json`` writes the rows after
each one, so a run stopped early keeps what it measured.

    OMP_NUM_THREADS=1 python benchmarks/sequential_vs_sbi.py --tasks two_moons,slcp --budgets 1000 --num-obs 3

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

DEFAULT_METHODS = "simgen:tsnpe,sbi:tsnpe"


def _simgen(sim, x_o: torch.Tensor, budget: int, rounds: int, seed: int, name: str = "tsnpe"):
    """simgen: a sampler of the posterior at x_o after fit_sequential (rounds=1: plain NPE, NLE or NRE)."""
    if name in ("tsnpe", "npe"):
        est = simgen.PosteriorEstimator(sim.prior)
        est.fit_sequential(sim, x_o[None], num_simulations=budget, rounds=rounds, seed=seed, progress=False)
        return lambda n, g: est.sample(n, x_o, generator=g)
    cls = simgen.LikelihoodEstimator if name in ("snle", "nle") else simgen.RatioEstimator
    posterior = cls(sim.prior).fit_sequential(sim, x_o[None], num_simulations=budget, rounds=rounds, seed=seed,
                                              progress=False, mcmc={"progress": False})
    return lambda n, g: posterior.sample(n, x_o[None], generator=g)


def _sbi(sim, x_o: torch.Tensor, budget: int, rounds: int, seed: int):
    """sbi's TSNPE recipe (rounds=1: plain NPE), simulations by simgen.simulate from each round's proposal."""
    from sbi.inference import NPE
    from sbi.utils import RestrictedPrior, get_density_thresholder

    torch.manual_seed(seed)
    inference = NPE(prior=sim.prior, show_progress_bars=False)
    proposal = sim.prior
    posterior = None
    sizes = simgen.estimators.sequential.round_sizes(budget, rounds)
    for r, n in enumerate(sizes):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1000 * r)
            theta = proposal.sample((n,)).reshape(n, -1)
        x = sim(theta, generator=torch.Generator().manual_seed(seed + 1000 * r + 1))
        ok = torch.isfinite(x.reshape(n, -1)).all(dim=1)
        with contextlib.redirect_stdout(io.StringIO()):
            inference.append_simulations(theta[ok], x[ok]).train(force_first_round_loss=True,
                                                                 show_train_summary=False)
        posterior = inference.build_posterior().set_default_x(x_o)
        if r + 1 < rounds:
            accept = get_density_thresholder(posterior, quantile=1e-4)
            proposal = RestrictedPrior(sim.prior, accept, sample_with="rejection")

    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        torch.manual_seed(int(torch.randint(0, 2**31, (), generator=g)))
        return posterior.sample((n,), show_progress_bars=False)

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="two_moons,slcp")
    parser.add_argument("--budgets", default="1000,10000", help="total simulations over all rounds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="simgen:tsnpe, sbi:tsnpe, simgen:snle, simgen:snre (R rounds), simgen:npe, sbi:npe, "
                             "simgen:nle, simgen:nre (one round)")
    parser.add_argument("--num-obs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import sbi

    print(f"simgen {simgen.__version__} vs sbi {sbi.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.rounds} rounds, {args.num_obs} observations, "
          f"{args.num_samples} samples, C2ST as sbibm (MLP 2x10d, 5 folds)", flush=True)
    rows = []
    for task in args.tasks.split(","):
        sim = simulators.get(task)
        _, x_obs = observations(sim, args.num_obs, seed=1000 + args.seed)
        reference = sim.reference_posterior_batched(
            x_obs, args.num_samples, generator=torch.Generator().manual_seed(args.seed)
        )
        for budget in map(int, args.budgets.split(",")):
            for method in args.methods.split(","):
                lib, name = method.split(":", 1)
                rounds = 1 if name in ("npe", "nle", "nre") else args.rounds
                build = {"simgen": lambda *a, name=name: _simgen(*a, name=name), "sbi": _sbi}[lib]
                scores, seconds = [], []
                for i in range(args.num_obs):
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # failed-simulation reports
                        sample = build(sim, x_obs[i], budget, rounds, args.seed)
                        draws = sample(args.num_samples, torch.Generator().manual_seed(args.seed))
                    seconds.append(time.perf_counter() - start)
                    scores.append(simgen.diagnostics.c2st(draws, reference[i]))
                mean, se = mean_se(scores)
                row = {"task": task, "budget": budget, "method": method, "rounds": rounds, "c2st": mean, "se": se,
                       "seconds_per_obs": sum(seconds) / len(seconds), "scores": scores}
                rows.append(row)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=2))
                print(f"{task:10s} {budget:>6d}  {method:13s} ({rounds} rounds) C2ST {mean:.3f} ± {se:.3f}  "
                      f"{row['seconds_per_obs']:6.1f} s/obs", flush=True)

    if not rows:
        return
    print("\n| task | total sims | method | rounds | C2ST | time (s/obs) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['budget']} | {r['method']} | {r['rounds']} | {r['c2st']:.3f} ± {r['se']:.3f} | "
              f"{r['seconds_per_obs']:.0f} |")


if __name__ == "__main__":
    main()
