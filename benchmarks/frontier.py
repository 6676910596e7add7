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
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --tasks slcp --budgets 10000 --families nle --sbi '' \
        --mcmc '{"proposal": "posterior"}'                       # chains started from the amortised posterior
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --tasks slcp --budgets 10000 --families auto --sbi '' \
        --emulated 100000                                        # the posterior also trained on emulated pairs
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --observations sbibm --sbibm sbibm-1.1.0-py2.py3-none-any.whl
    OMP_NUM_THREADS=1 python benchmarks/frontier.py --tasks poisson_glm --families auto --sbi npe \\
        --seeds 0,1,2,3,4 --num-samples 2000                     # five campaigns, paired against sbi's NPE

``--observations sbibm --sbibm PATH`` evaluates at sbibm's reference observations 1..``--num-obs`` against sbibm's
reference posterior samples (the first ``--num-samples`` of its 10,000), read from an sbibm wheel or package
directory (``pip download sbibm --no-deps -d DIR``; sbibm need not be installed), for the tasks sbibm has; the
header then prints C2ST between simgen's exact reference sampler and sbibm's samples at observation 1, as a check
that the two agree. Otherwise the observations are simgen's own: θ_o from the prior, x_o simulated, seeded.

``auto`` is ``model="auto"``, the estimators' default (what it chose is printed; for a vector x at 10³ to 2·10⁴
simulations that includes an emulator fitted on the same pairs and 3 emulated pairs per simulation, the
emulator's training time counted; ``flow`` is the same flow on the simulations alone). ``nle`` is not a posterior family
but the other direction: ``simgen.LikelihoodEstimator(prior)`` (its ``"auto"`` family) trained on the same pairs,
its posterior sampled by MCMC (``emu.posterior()``, its defaults; ``--mcmc`` sets its options), so its "sample"
time is MCMC's and no draw is amortised (x's discrete columns are not declared to it, and ``--options`` and
``--ensemble`` do not apply to it). ``--mcmc '{"proposal": "posterior"}'`` also fits the ``auto`` posterior on
the same pairs and starts the chains from it (SIR from its defensive mixture with the prior), its training time
added to the emulator's. ``--options`` gives families
constructor arguments other than their defaults, ``--training`` training settings (:class:`simgen.TrainingConfig`
fields) for every simgen family, ``--estimator`` keyword arguments of ``simgen.PosteriorEstimator`` (such as
``'{"linear_baseline": false}'``): what a change of defaults is measured with.

``--seeds 0,1,2`` runs several *campaigns*, each with its own simulations, observations (simgen's) and training
seeds; with more than one, a last table gives every method's mean over campaigns ± the standard error over them,
and each simgen method's difference from each sbi method paired by campaign. One campaign is a single draw of
the simulations and the training: two methods can swap places from one campaign to the next, so a claim of one
method ahead of another is made over campaigns. ``--include A.json`` adds an earlier run's rows (campaigns run
side by side as separate processes, then ``--seeds '' --include A.json --include B.json`` summarises them).

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
                 options: dict | None = None, ensemble: int = 1,
                 estimator: dict | None = None, emulated: int = 0) -> tuple[Callable, float, int, int, str]:
    """A simgen posterior of ``family`` (constructor ``options``, else its defaults; ``estimator``: keyword
    arguments of ``PosteriorEstimator``, such as ``linear_baseline``): its sampler ``draw(n, x_o, seed)``,
    training seconds (the whole fit), epochs, the emulated pairs it trained on and how it samples
    (``sample_with``: ``"direct"`` or ``"importance"``). With ``ensemble`` K > 1, K posteriors trained
    with seeds ``seed``, ``seed + 1``, ... on the same pairs, sampled as their equal mixture
    (1/K) Σ_k q_k(θ | x): n/K draws of each, shuffled; the seconds and epochs are the members' sums. With
    ``emulated`` N > 0, an emulator (``model="auto"``) is fitted on the same pairs first and each posterior also
    trains on N pairs drawn from it; its seconds and epochs are added, as they are for the emulator
    ``model="auto"`` fits itself where it adds emulated pairs (``--emulated 0``, the default)."""
    posts, seconds, epochs = [], 0.0, 0
    augment = {}
    if emulated:
        emu = simgen.LikelihoodEstimator(prior)
        fitted = emu.fit(theta, x, seed=seed, progress=False, **settings)
        seconds, epochs = fitted.wall_time, fitted.epochs
        augment = {"emulator": emu, "num_emulated": emulated}
        print(f"  the emulator for {emulated} emulated pairs: {emu.choice} ({fitted.wall_time:.1f} s)", flush=True)
    for k in range(ensemble):
        post = simgen.PosteriorEstimator(prior, make_model(family, options) if options else family,
                                         **(estimator or {}))
        start = time.perf_counter()  # the whole fit: an emulator it fits itself and its held-out comparison too
        history = post.fit(theta, x, seed=seed + k, progress=False, **augment, **settings)
        posts.append(post)
        seconds, epochs = seconds + time.perf_counter() - start, epochs + history.epochs
        if post.emulator is not None and not emulated:  # fitted by the posterior itself ("auto")
            epochs += post.emulator.history.epochs
        if post.held_out is not None and k == 0:
            print(f"  sample_with={post.sample_with!r}: {post.held_out}", flush=True)
        if history.best_epoch == -1:
            print(f"  member {k}: returned its initial state (better than every epoch's)", flush=True)
        if post.choice is not None and k == 0:
            print(f"  auto chose {post.choice}", flush=True)

    def draw(n: int, x_o: torch.Tensor, s: int) -> torch.Tensor:
        sizes = [n // len(posts) + (k < n % len(posts)) for k in range(len(posts))]
        parts = [p.sample(m, x_o, generator=torch.Generator().manual_seed(s + 7919 * k))
                 for k, (p, m) in enumerate(zip(posts, sizes, strict=True)) if m]
        return torch.cat(parts)[torch.randperm(n, generator=torch.Generator().manual_seed(s))]

    return draw, seconds, epochs, posts[0].num_emulated, posts[0].sample_with


def train_nle(prior, theta, x, seed: int, settings: dict, mcmc: dict) -> tuple[Callable, float, int]:
    """simgen's emulator q(x | θ) (``model="auto"``) on the pairs and its posterior p(θ) Π q(x_o | θ) sampled by
    MCMC with options ``mcmc``: the sampler ``draw(n, x_o, seed)``, training seconds and epochs. ``mcmc``'s
    ``"proposal": "posterior"`` also fits the amortised posterior (``model="auto"``, same pairs and seed) for SIR
    to start the chains from; its seconds and epochs are added to the emulator's."""
    emu = simgen.LikelihoodEstimator(prior)
    history = emu.fit(theta, x, seed=seed, progress=False, **settings)
    seconds, epochs = history.wall_time, history.epochs
    print(f"  the emulator: {emu.choice}", flush=True)
    if mcmc.get("proposal") == "posterior":
        post = simgen.PosteriorEstimator(prior)
        # where "auto" adds emulated pairs they come from this emulator, whose time is already counted
        fitted = post.fit(theta, x, seed=seed, progress=False, emulator=emu, num_emulated=post.auto_emulated(theta, x),
                          **settings)
        seconds, epochs = seconds + fitted.wall_time, epochs + fitted.epochs
        print(f"  the proposal: {post.choice} ({fitted.wall_time:.1f} s)", flush=True)
        mcmc = {**mcmc, "proposal": post}
    posterior = emu.posterior(**{"progress": False, **mcmc})

    def draw(n: int, x_o: torch.Tensor, s: int) -> torch.Tensor:
        samples = posterior.sample(n, x_o[None], generator=torch.Generator().manual_seed(s))
        print(f"    MCMC: {posterior.last_run}", flush=True)
        return samples

    return draw, seconds, epochs


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
    parser.add_argument("--estimator", default="{}",
                        help="JSON: keyword arguments of simgen.PosteriorEstimator (e.g. linear_baseline)")
    parser.add_argument("--ensemble", type=int, default=1,
                        help="K: each simgen family as the equal mixture of K posteriors trained with seeds seed, "
                             "seed + 1, ... (default 1: one posterior)")
    parser.add_argument("--mcmc", default="{}", help="JSON: options of the nle method's MCMC (emu.posterior())")
    parser.add_argument("--emulated", type=int, default=0,
                        help="N: each simgen posterior also trains on N pairs from an emulator (model='auto') fitted "
                             "on the same simulations (fit(..., emulator=, num_emulated=N)); its time is added "
                             "(default 0: each family's own default, which for auto may add emulated pairs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default=None,
                        help="campaigns: comma-separated seeds, each its own simulations, observations and training "
                             "seeds (default: --seed); '' with --include summarises earlier runs without fitting")
    parser.add_argument("--seed", type=int, default=0, help="one campaign's seed (when --seeds is not given)")
    parser.add_argument("--include", action="append", default=[], metavar="JSON",
                        help="an earlier run's --json file: its rows join the tables and the summary over campaigns")
    parser.add_argument("--json", default=None, help="write the results to this JSON file (after every row)")
    args = parser.parse_args()
    if args.observations == "sbibm" and args.sbibm is None:
        parser.error("--observations sbibm needs --sbibm PATH (an sbibm wheel: pip download sbibm --no-deps -d DIR)")
    seeds = [int(v) for v in (str(args.seed) if args.seeds is None else args.seeds).split(",") if v.strip()]
    if not seeds and not args.include:
        parser.error("--seeds is empty: give campaigns to run, or --include files to summarise")
    earlier = included_rows(args.include, seeds)  # checked before any fit, not after them
    torch.set_num_threads(args.threads)
    import sbi

    families = [f for f in args.families.split(",") if f]
    baselines = [m for m in args.sbi.split(",") if m]
    print(f"simgen {simgen.__version__} vs sbi {sbi.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.num_obs} observations, {args.num_samples} samples, "
          "C2ST as sbibm (MLP 2x10d, 5 folds)", flush=True)
    settings = {**json.loads(args.training), **({} if args.patience is None else {"patience": args.patience})}
    options = json.loads(args.options)
    estimator = json.loads(args.estimator)
    rows = []
    start_all = time.perf_counter()
    for seed in seeds:
        for task in args.tasks.split(","):
            rows += run_task(args, task, seed, families, baselines, settings, options, estimator, rows)
    every = earlier + rows
    if rows:
        print(f"\nruntime {time.perf_counter() - start_all:.0f} s")
    if not every:
        return
    print(f"\n| task | sims | method | C2ST | train (s) | epochs | {args.num_samples} samples (s) | seed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in every:
        print(f"| {r['task']} | {r['budget']} | {label_of(r)} | {r['c2st']:.3f} ± {r['se']:.3f} | {r['train_s']:.1f} | "
              f"{r['epochs']} | {r['sample_s']:.2f} | {r['seed']} |")
    if len({r["seed"] for r in every}) > 1:
        print_campaigns(every)


def run_task(args: argparse.Namespace, task: str, seed: int, families: list[str], baselines: list[str],
             settings: dict, options: dict, estimator: dict, done: list[dict]) -> list[dict]:
    """One campaign of one task: its observations and references, then every budget and method; each row is
    written to ``--json`` (with ``done``, the rows before it) as soon as it is measured."""
    sim = simulators.get(task)
    if args.observations == "sbibm":
        x_o, reference = sbibm_observations(args.sbibm, task, args.num_obs)
        reference = reference[:, :args.num_samples]
        ours = sim.reference_posterior(x_o[0], args.num_samples, generator=torch.Generator().manual_seed(0))
        print(f"{task}: sbibm's observations; C2ST of simgen's reference against sbibm's at observation 1: "
              f"{simgen.diagnostics.c2st(ours, reference[0]):.3f}", flush=True)
    else:
        _, x_o = observations(sim, args.num_obs, seed=1000 + seed)
        reference = sim.reference_posterior_batched(x_o, args.num_samples,
                                                    generator=torch.Generator().manual_seed(seed))
    rows: list[dict] = []
    for budget in map(int, args.budgets.split(",")):
        theta, x = simgen.simulate(sim, sim.prior, budget, seed=seed, progress=False)
        methods = [(f, "simgen") for f in families] + [(m, "sbi") for m in baselines]
        for method, source in methods:
            num_emulated, sample_with = 0, None
            if method == "nle":
                draw, train_s, epochs = train_nle(sim.prior, theta, x, seed, settings, json.loads(args.mcmc))
            elif source == "simgen":
                draw, train_s, epochs, num_emulated, sample_with = train_family(
                    method, sim.prior, theta, x, seed, settings, options.get(method), args.ensemble, estimator,
                    args.emulated)
            else:
                draw, train_s, epochs = train_sbi(method, sim.prior, theta, x, seed)
            scores, times = [], []
            for i in range(args.num_obs):
                start = time.perf_counter()
                samples = draw(args.num_samples, x_o[i], seed + i)
                times.append(time.perf_counter() - start)
                scores.append(simgen.diagnostics.c2st(samples, reference[i]))
            m, se = mean_se(scores)
            row = {"task": task, "budget": budget, "observations": args.observations, "seed": seed,
                   "method": method, "source": source, "c2st": m, "se": se,
                   "scores": scores, "train_s": train_s, "epochs": epochs,
                   "sample_s": sum(times) / len(times),
                   "options": options.get(method) if source == "simgen" else None,
                   "ensemble": args.ensemble if source == "simgen" and method != "nle" else 1,
                   "emulated": num_emulated, "sample_with": sample_with,
                   "training": settings if source == "simgen" else None,
                   "estimator": estimator if source == "simgen" and method != "nle" else None,
                   "mcmc": json.loads(args.mcmc) if method == "nle" else None,
                   "num_samples": args.num_samples}
            rows.append(row)
            if args.json:  # after every row, so a run stopped early keeps what it measured
                Path(args.json).write_text(json.dumps(done + rows, indent=2))
            label = f"{method}x{row['ensemble']}" if row["ensemble"] > 1 else method
            print(f"{task:16s} {budget:>6d} {source:6s} {label:10s} C2ST {m:.3f} ± {se:.3f}  "
                  f"train {train_s:7.1f}s ({epochs} epochs)  sample {row['sample_s']:6.2f}s  seed {seed}", flush=True)
    return rows


def label_of(row: dict) -> str:
    """A row's method as the tables name it: simgen's family (with its settings when not the defaults), or
    ``sbi NPE``."""
    if row["source"] == "sbi":
        return f"sbi {row['method'].upper()}"
    changes = [f"{k} {json.dumps(row[k], sort_keys=True)}" for k in ("options", "training", "estimator", "mcmc")
               if row.get(k)]
    if row.get("ensemble", 1) > 1:
        changes.append(f"ensemble {row['ensemble']}")
    if row.get("emulated"):
        changes.append(f"{row['emulated']} emulated pairs")
    return row["method"] + (f" ({'; '.join(changes)})" if changes else "")


def included_rows(paths: list[str], seeds: list[int]) -> list[dict]:
    """The rows of earlier runs' ``--json`` files (``--include``); a file without campaign seeds (written before
    ``--seeds``) was one campaign of seed 0. A method measured again in this run for a campaign already in a file
    is refused, so that no campaign counts twice."""
    rows: list[dict] = []
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            rows.append({"seed": 0, **r})
    keys = [(r["task"], r["budget"], r["observations"], label_of(r), r["seed"]) for r in rows]
    if len(set(keys)) < len(keys):
        raise SystemExit(f"--include: some campaign appears twice in {paths}")
    clash = sorted({k[-1] for k in keys} & set(seeds))
    if clash:
        raise SystemExit(f"--include: campaigns {clash} are in an included file and in --seeds")
    return rows


def print_campaigns(rows: list[dict]) -> None:
    """Over campaigns (seeds: each its own simulations, observations and training seeds): every method's mean
    C2ST ± the standard error over the campaigns' means, and each simgen method's difference from each sbi method
    paired by campaign (the same simulations and observations), mean ± standard error over campaigns. The
    observations of one campaign share one trained model, so the campaign, not the observation, is the unit."""
    groups: dict[tuple, dict[int, float]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["budget"], r["observations"], label_of(r)), {})[r["seed"]] = r["c2st"]
    print("\nOver campaigns (C2ST: mean ± SE over the campaigns' means; differences paired by campaign):")
    print("| task | sims | method | campaigns | C2ST | minus sbi (paired) |")
    print("|---|---|---|---|---|---|")
    for (task, budget, obs, label), by_seed in groups.items():
        m, se = mean_se(list(by_seed.values()))
        paired = []
        if not label.startswith("sbi "):
            for (t2, b2, o2, other), theirs in groups.items():
                common = sorted(set(by_seed) & set(theirs))
                if (t2, b2, o2) == (task, budget, obs) and other.startswith("sbi ") and len(common) > 1:
                    d, dse = mean_se([by_seed[s] - theirs[s] for s in common])
                    paired.append(f"{other}: {d:+.3f} ± {dse:.3f} ({len(common)})")
        spread = f"{m:.3f} ± {se:.3f}" if len(by_seed) > 1 else f"{m:.3f} (one campaign)"
        print(f"| {task} | {budget} | {label} | {len(by_seed)} | {spread} | {'; '.join(paired)} |")


if __name__ == "__main__":
    main()
