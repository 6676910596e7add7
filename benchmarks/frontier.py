"""Every posterior family of simgen against sbi's NPE and FMPE, on sbibm's tasks at several simulation budgets.

For each task and budget: simulate once (``simgen.simulate``, fixed seed), train a
``simgen.PosteriorEstimator(prior, model=family)`` for each of ``--families`` (their defaults) and sbi's
posteriors of ``--sbi`` (sbi's defaults) on those pairs, and compare each with the task's reference posterior
at ``--num-obs`` fixed observations by C2ST (sbibm's classifier, ``--num-samples`` samples each). Reported per
method: C2ST mean ± standard error over observations, training wall time and epochs, and the mean time to draw
``--num-samples`` samples for one observation. Results are appended to ``--json`` after every row.

    OMP_NUM_THREADS=1 python benchmarks/frontier.py              # 4 tasks x {1e3, 1e4} x 6 families + NPE, FMPE
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --tasks two_moons --budgets 1000 --num-obs 3 \\
        --families simformer,flow --sbi npe --json frontier.json
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --tasks two_moons --budgets 1000 --families simformer --sbi '' \\
        --options '{"simformer": {"mask_weights": [0.1, 0.6, 0.1, 0.2]}}' --training '{"batch_size": 32}'
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --tasks slcp --budgets 10000 --families flow --sbi '' \\
        --ensemble 3                                             # a mixture of 3 independently trained flows
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --tasks slcp --budgets 10000 --families nle --sbi '' \\
        --mcmc '{"num_init": 1000000, "warmup": 2000, "thin": 20}'  # the emulator's posterior by MCMC
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --observations sbibm --sbibm sbibm-1.1.0-py2.py3-none-any.whl

``--observations sbibm --sbibm PATH`` evaluates at sbibm's reference observations 1..``--num-obs`` against sbibm's
reference posterior samples (the first ``--num-samples`` of its 10,000), read from an sbibm wheel or package
directory (``pip download sbibm --no-deps -d DIR``; sbibm need not be installed), for the tasks sbibm has; the
header then prints C2ST between simgen's exact reference sampler and sbibm's samples at observation 1, as a check
that the two agree. Otherwise the observations are simgen's own: θ_o from the prior, x_o simulated, seeded.

``auto`` is ``model="auto"``, the estimators' default (what it chose is printed). ``nle`` is not a posterior family
but the other direction: ``simgen.LikelihoodEstimator(prior)`` (its ``"auto"`` family) trained on the same pairs,
its posterior sampled by MCMC (``emu.posterior()``, its defaults; ``--mcmc`` sets its options), so its "sample"
time is MCMC's and no draw is amortised (x's discrete columns are not declared to it, and ``--options`` and
``--ensemble`` do not apply to it). ``--options`` gives families
constructor arguments other than their defaults, ``--training`` training settings (:class:`simgen.TrainingConfig`
fields) for every simgen family: what a change of defaults is measured with.

All methods run with the same number of torch threads (``--threads``, default 1), printed in the header.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import mean_se, observations, sbi_posterior, sbibm_observations

import simgen
import simulators
from simgen.models import make_model

TASKS = "two_moons,slcp,gaussian_linear,gaussian_mixture"
FAMILIES = "auto,flow,cnf,diffusion,vae,simformer"


def train_family(family: str, prior, theta, x, seed: int, settings: dict,
                 options: dict | None = None, ensemble: int = 1) -> tuple[Callable, float, int]:
    """A simgen posterior of ``family`` (constructor ``options``, else its defaults): its sampler
    ``draw(n, x_o, seed)``, training seconds and epochs. With ``ensemble`` K > 1, K posteriors trained with seeds
    ``seed``, ``seed + 1``, ... on the same pairs, sampled as their equal mixture (1/K) Σ_k q_k(θ | x): n/K draws
    of each, shuffled; the seconds and epochs are the members' sums."""
    posts, seconds, epochs = [], 0.0, 0
    for k in range(ensemble):
        post = simgen.PosteriorEstimator(prior, make_model(family, options) if options else family)
        history = post.fit(theta, x, seed=seed + k, progress=False, **settings)
        posts.append(post)
        seconds, epochs = seconds + history.wall_time, epochs + history.epochs
        if post.choice is not None and k == 0:
            print(f"  auto chose {post.choice}", flush=True)

    def draw(n: int, x_o: torch.Tensor, s: int) -> torch.Tensor:
        sizes = [n // len(posts) + (k < n % len(posts)) for k in range(len(posts))]
        parts = [p.sample(m, x_o, generator=torch.Generator().manual_seed(s + 7919 * k))
                 for k, (p, m) in enumerate(zip(posts, sizes, strict=True)) if m]
        return torch.cat(parts)[torch.randperm(n, generator=torch.Generator().manual_seed(s))]

    return draw, seconds, epochs


def train_nle(prior, theta, x, seed: int, settings: dict, mcmc: dict) -> tuple[Callable, float, int]:
    """simgen's emulator q(x | θ) (``model="auto"``) on the pairs and its posterior p(θ) Π q(x_o | θ) sampled by
    MCMC with options ``mcmc``: the sampler ``draw(n, x_o, seed)``, training seconds and epochs."""
    emu = simgen.LikelihoodEstimator(prior)
    history = emu.fit(theta, x, seed=seed, progress=False, **settings)
    print(f"  the emulator: {emu.choice}", flush=True)
    posterior = emu.posterior(**{"progress": False, **mcmc})

    def draw(n: int, x_o: torch.Tensor, s: int) -> torch.Tensor:
        samples = posterior.sample(n, x_o[None], generator=torch.Generator().manual_seed(s))
        print(f"    MCMC: {posterior.last_run}", flush=True)
        return samples

    return draw, history.wall_time, history.epochs


def train_sbi(kind: str, prior, theta, x, seed: int) -> tuple[Callable, float, int]:
    """An sbi posterior of ``kind``: its sampler, training seconds and epochs."""
    posterior, seconds, epochs = sbi_posterior(kind, prior, theta, x, seed)

    def draw(n: int, x_o: torch.Tensor, s: int) -> torch.Tensor:
        torch.manual_seed(s)
        return posterior.sample((n,), x=x_o, show_progress_bars=False)

    return draw, seconds, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--families", default=FAMILIES, help="simgen families ('' for none)")
    parser.add_argument("--sbi", default="npe,fmpe", help="sbi methods: npe, fmpe, npse ('' for none)")
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--num-obs", type=int, default=10)
    parser.add_argument("--observations", choices=("simgen", "sbibm"), default="simgen",
                        help="simgen's own seeded observations, or sbibm's reference observations (needs --sbibm)")
    parser.add_argument("--sbibm", default=None, help="an sbibm wheel or the directory holding its package")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--patience", type=int, default=None,
                        help="early-stopping patience of simgen's trainer (default: each family's)")
    parser.add_argument("--options", default="{}", help="JSON: family -> constructor arguments")
    parser.add_argument("--training", default="{}", help="JSON: training settings of every simgen family")
    parser.add_argument("--ensemble", type=int, default=1,
                        help="K: each simgen family as the equal mixture of K posteriors trained with seeds seed, "
                             "seed + 1, ... (default 1: one posterior)")
    parser.add_argument("--mcmc", default="{}", help="JSON: options of the nle method's MCMC (emu.posterior())")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this JSON file (after every row)")
    args = parser.parse_args()
    if args.observations == "sbibm" and args.sbibm is None:
        parser.error("--observations sbibm needs --sbibm PATH (an sbibm wheel: pip download sbibm --no-deps -d DIR)")
    torch.set_num_threads(args.threads)
    import sbi

    families = [f for f in args.families.split(",") if f]
    baselines = [m for m in args.sbi.split(",") if m]
    print(f"simgen {simgen.__version__} vs sbi {sbi.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.num_obs} observations, {args.num_samples} samples, "
          "C2ST as sbibm (MLP 2x10d, 5 folds)", flush=True)
    settings = {**json.loads(args.training), **({} if args.patience is None else {"patience": args.patience})}
    options = json.loads(args.options)
    rows = []
    start_all = time.perf_counter()
    for task in args.tasks.split(","):
        sim = simulators.get(task)
        if args.observations == "sbibm":
            x_o, reference = sbibm_observations(args.sbibm, task, args.num_obs)
            reference = reference[:, :args.num_samples]
            ours = sim.reference_posterior(x_o[0], args.num_samples, generator=torch.Generator().manual_seed(0))
            print(f"{task}: sbibm's observations; C2ST of simgen's reference against sbibm's at observation 1: "
                  f"{simgen.diagnostics.c2st(ours, reference[0]):.3f}", flush=True)
        else:
            _, x_o = observations(sim, args.num_obs, seed=1000 + args.seed)
            reference = sim.reference_posterior_batched(x_o, args.num_samples,
                                                        generator=torch.Generator().manual_seed(args.seed))
        for budget in map(int, args.budgets.split(",")):
            theta, x = simgen.simulate(sim, sim.prior, budget, seed=args.seed, progress=False)
            methods = [(f, "simgen") for f in families] + [(m, "sbi") for m in baselines]
            for method, source in methods:
                if method == "nle":
                    draw, train_s, epochs = train_nle(sim.prior, theta, x, args.seed, settings, json.loads(args.mcmc))
                elif source == "simgen":
                    draw, train_s, epochs = train_family(method, sim.prior, theta, x, args.seed, settings,
                                                         options.get(method), args.ensemble)
                else:
                    draw, train_s, epochs = train_sbi(method, sim.prior, theta, x, args.seed)
                scores, times = [], []
                for i in range(args.num_obs):
                    start = time.perf_counter()
                    samples = draw(args.num_samples, x_o[i], args.seed + i)
                    times.append(time.perf_counter() - start)
                    scores.append(simgen.diagnostics.c2st(samples, reference[i]))
                m, se = mean_se(scores)
                row = {"task": task, "budget": budget, "observations": args.observations,
                       "method": method, "source": source, "c2st": m, "se": se,
                       "scores": scores, "train_s": train_s, "epochs": epochs,
                       "sample_s": sum(times) / len(times),
                       "options": options.get(method) if source == "simgen" else None,
                       "ensemble": args.ensemble if source == "simgen" and method != "nle" else 1,
                       "training": settings if source == "simgen" else None,
                       "mcmc": json.loads(args.mcmc) if method == "nle" else None}
                rows.append(row)
                if args.json:  # after every row, so a run stopped early keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=2))
                label = f"{method}x{row['ensemble']}" if row["ensemble"] > 1 else method
                print(f"{task:16s} {budget:>6d} {source:6s} {label:10s} C2ST {m:.3f} ± {se:.3f}  "
                      f"train {train_s:7.1f}s ({epochs} epochs)  sample {row['sample_s']:6.2f}s", flush=True)

    if not rows:
        return
    print(f"\nruntime {time.perf_counter() - start_all:.0f} s")
    print(f"\n| task | sims | method | C2ST | train (s) | epochs | {args.num_samples} samples (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        name = r["method"] if r["source"] == "simgen" else f"sbi {r['method'].upper()}"
        print(f"| {r['task']} | {r['budget']} | {name} | {r['c2st']:.3f} ± {r['se']:.3f} | {r['train_s']:.1f} | "
              f"{r['epochs']} | {r['sample_s']:.2f} |")


if __name__ == "__main__":
    main()
