"""Mining gold on the parton-smeared collider: estimators with and without the joint score (issue 19).

``collider(level="parton_smeared")`` has an exact likelihood and a grid reference posterior, and its latent
(the Breit–Wigner mass cell) gives each simulation its joint score (``simgen.simulate(..., gold=True)``). For each
campaign in ``--seeds`` (its own simulations, held-out pairs and observations, and its training seed), each
budget in ``--sizes`` (the first n simulations of the campaign), each method in ``--methods`` and
each score weight α in ``--weights`` (α = 0: the plain method, no gold), it trains

* ``nle``: ``LikelihoodEstimator(prior, "flow", gold="score", gold_weight=α)`` (SCANDAL), scored by the held-out
  gap E[log p(x | θ) − log q(x | θ)] over ``--num-test`` fresh pairs from the prior (≥ 0 in expectation for any
  normalised q; 0 only for the exact likelihood);
* ``npe``: ``PosteriorEstimator(prior, "flow", gold="score", gold_weight=α)`` (SCANDAL for the posterior), scored
  by C2ST against the reference posterior at ``--num-obs`` fixed observations (one event each);
* ``nre``: ``RatioEstimator(prior, V, gold=mode, gold_weight=α)``, V the ``--ratio-model`` (default ``"nre"``,
  the recommended variant), for each mode in ``--nre-gold``
  (``score``: the RASCAL/ALICES score term; ``ratio``: the ratio term, on the joint log ratio at
  ``--num-references`` θ_ref drawn from the prior; ``ratio+score``: both), scored by the held-out log-ratio error:
  the RMSE of [f(θ', x) − f(θ, x)] − log p(x | θ')/p(x | θ) over the ``--num-test`` fresh pairs (θ, x), θ' the
  next pair's θ (c(x) cancels, so every variant is scored alike; 0 only for the exact ratio), and, unless
  ``--no-c2st``, by C2ST of its MCMC posterior (slow).

``--simulator latent_shift`` runs the NLE comparison on a toy whose gold is informative (the latents explain
little of the joint score's spread): x = sin(2θ) + θ + z + ε per dimension, θ ∈ [−2, 2]², z ~ N(0, 0.3²),
ε ~ N(0, 1), exact likelihood N(x; sin(2θ) + θ, 0.3² + 1) (no reference posterior: ``nle``, or ``nre`` with
``--no-c2st``).

``--control`` adds, for each method, fits with ``gold="score", gold_weight=0``: the gold runs' training settings
(their smaller default learning rate) without the score term, to tell the term's effect from the settings'.

It prints one row per fit (with ``--history``, also the fit's losses per epoch and its best epoch) and writes
every row to ``--json`` as it goes, then a summary: for each method and α > 0,
the budget at which the gold-trained method reaches the plain method's score at the largest budget (log-linear
interpolation between the measured budgets; "<= smallest" when it already does at the smallest budget), per
campaign and, with several campaigns, between the curves averaged over them (one training run's score moves
by about as much as gold's effect near the largest budget, so single campaigns say little), with a 90 % interval
of the mean curves' ratio from ``--bootstrap`` resamples of the campaigns. ``--include`` adds an earlier run's rows
(other campaigns, the same settings) to the summary, so that campaigns can be run in parts
(``--seeds "" --include A.json --include B.json`` summarises them without fitting anything).

    OMP_NUM_THREADS=1 python benchmarks/gold.py --sizes 1000,2000,3000,5000,10000 --methods nle --weights 0,0.2 \\
        --seeds 0,1,2 --json gold.json
    OMP_NUM_THREADS=1 python benchmarks/gold.py --sizes 1000,3000,10000 --methods nle,npe --weights 0,0.2
    OMP_NUM_THREADS=1 python benchmarks/gold.py --sizes 1000,3000 --methods nre --weights 0,0.2,1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from _common import mean_se, observations

import simgen
import simulators


class LatentShift:
    """x = sin(2θ) + θ + z + ε (per dimension), z ~ N(0, σ_z²), ε ~ N(0, σ_n²): the gold protocol with an exact
    likelihood."""

    SIGMA_Z, SIGMA_N = 0.3, 1.0
    name = "latent_shift"
    x_shape = (2,)

    def __init__(self) -> None:
        low, high = torch.full((2,), -2.0), torch.full((2,), 2.0)
        self.prior = torch.distributions.Independent(torch.distributions.Uniform(low, high), 1)

    @staticmethod
    def mean(theta: torch.Tensor) -> torch.Tensor:
        return torch.sin(2 * theta) + theta

    def __call__(self, theta: torch.Tensor, generator: Any = None, return_latents: bool = False) -> Any:
        theta = torch.as_tensor(theta, dtype=torch.float32)
        z = self.SIGMA_Z * torch.randn(theta.shape, generator=generator)
        x = self.mean(theta) + z + self.SIGMA_N * torch.randn(theta.shape, generator=generator)
        return (x, z) if return_latents else x

    def joint_log_prob(self, theta: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.Normal
        z, x = z.double(), x.double()
        return (normal(0.0, self.SIGMA_Z).log_prob(z) + normal(self.mean(theta) + z, self.SIGMA_N).log_prob(x)).sum(-1)

    def log_likelihood(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sd = math.sqrt(self.SIGMA_Z**2 + self.SIGMA_N**2)
        return torch.distributions.Normal(self.mean(theta.double()), sd).log_prob(x.double()).sum(-1)


def held_out_gap(emu: Any, sim: Any, theta: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """Mean and standard error of log p(x | θ) − log q(x | θ) over held-out pairs, its median, and the share of
    the summed gap that the 1 % of pairs with the largest gaps carry (near 1 when a few far-tail rows dominate)."""
    exact = sim.log_likelihood(theta, x).double()
    gap = exact - emu.log_prob(x, theta).double()
    top = gap.sort(descending=True).values[: max(1, len(gap) // 100)]
    return {"gap": float(gap.mean()), "gap_se": float(gap.std() / math.sqrt(len(gap))),
            "gap_median": float(gap.median()), "gap_top1_share": float(top.sum() / gap.sum())}


def log_ratio_error(est: Any, sim: Any, theta: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    """RMSE (and its standard error, by the delta method) of the estimated log p(x | θ')/p(x | θ) over held-out
    pairs (θ, x), θ' the next pair's θ: the ratio estimator's f(θ', x) − f(θ, x), in which c(x) cancels."""
    other = theta.roll(1, dims=0)
    exact = sim.log_likelihood(other, x).double() - sim.log_likelihood(theta, x).double()
    estimate = est.log_ratio(other, x).double() - est.log_ratio(theta, x).double()
    ok = torch.isfinite(exact)
    sq = (estimate - exact)[ok].square()
    mse, se = float(sq.mean()), float(sq.std() / math.sqrt(len(sq)))
    return math.sqrt(mse), se / (2 * math.sqrt(mse))


def posterior_c2st(post: Any, sim: Any, x_obs: torch.Tensor, num_samples: int, seed: int) -> tuple[float, float]:
    """Mean and standard error over observations of C2ST(posterior draws, reference draws)."""
    scores = []
    for i, x in enumerate(x_obs):
        g = torch.Generator().manual_seed(seed + i)
        reference = sim.reference_posterior(x[None], num_samples, generator=g)
        samples = post.sample(num_samples, x[None], generator=torch.Generator().manual_seed(40_000 + seed + i))
        scores.append(float(simgen.diagnostics.c2st(samples, reference, seed=seed + i)))
    return mean_se(scores)


def crossing(sizes: list[int], scores: list[float], target: float) -> str:
    """The budget at which ``scores`` (decreasing with the budget, ideally) first reach ``target``, by
    log-linear interpolation; "< smallest" / "> largest" outside the measured range."""
    if scores[0] <= target:
        return f"<= {sizes[0]}"
    for (n0, s0), (n1, s1) in zip(zip(sizes, scores, strict=True), zip(sizes[1:], scores[1:], strict=True),
                                  strict=False):
        if s1 <= target:
            w = (s0 - target) / (s0 - s1)
            return f"{math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0))):.0f}"
    return f"> {sizes[-1]}"


def fewer_simulations(sizes: list[int], need: str) -> float:
    """The largest budget over the crossing of :func:`crossing`: at least largest / smallest where the gold curve
    is already below the target at the smallest budget, and at most 1 where it never reaches it."""
    if need.startswith("<="):
        return sizes[-1] / sizes[0]
    if need.startswith(">"):
        return 1.0
    return sizes[-1] / float(need)


def compare(sizes: list[int], plain: list[float], gold: list[float]) -> dict[str, Any]:
    """The budget at which the ``gold`` curve reaches the ``plain`` curve's score at the largest budget."""
    need = crossing(sizes, gold, plain[-1])
    return {"plain_score_at_largest": plain[-1], "simulations_needed_with_gold": need,
            "fewer_simulations": round(fewer_simulations(sizes, need), 2)}


def campaign_curves(rows: list[dict[str, Any]], method: str, weight: float, gold: str | None,
                    sizes: list[int]) -> dict[int, list[float]]:
    """Each campaign's scores at ``sizes`` for one series (method, α, gold mode), for campaigns that have all."""
    curves = {}
    for seed in {r["seed"] for r in rows}:
        score = {r["num_simulations"]: r["score"] for r in rows if r["seed"] == seed and r["method"] == method
                 and r["gold_weight"] == weight and r["gold"] == gold}
        if all(n in score for n in sizes):
            curves[seed] = [score[n] for n in sizes]
    return curves


def mean_curve(curves: dict[int, list[float]], seeds: list[int]) -> list[float]:
    """The mean of the campaigns' curves over ``seeds`` (repeats count as often as they appear)."""
    return [statistics.mean(curves[seed][i] for seed in seeds) for i in range(len(curves[seeds[0]]))]


#: the flags that change what a fit or its score is: an included run must have used the same
SETTINGS = ("simulator", "num_test", "num_obs", "num_samples", "max_epochs", "max_time", "log_theta",
            "flow_options", "gold_training", "ratio_model", "num_references")


def included_rows(args: argparse.Namespace, seeds: list[int]) -> list[dict[str, Any]]:
    """The rows of the ``--include`` files, checked against this run's settings and seeds."""
    rows: list[dict[str, Any]] = []
    for path in args.include:
        earlier = json.loads(Path(path).read_text())
        if any("seed" not in r for r in earlier["rows"]):
            raise SystemExit(f"--include {path}: rows without a campaign seed (written before --seeds existed)")
        differ = [k for k in SETTINGS if earlier["command"].get(k) != getattr(args, k)]
        if differ:
            raise SystemExit(f"--include {path}: its settings differ from this run's in {differ}")
        clash = sorted({r["seed"] for r in earlier["rows"]} & ({r["seed"] for r in rows} | set(seeds)))
        if clash:
            raise SystemExit(f"--include {path}: campaigns {clash} are already in this run or another file")
        rows += earlier["rows"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulator", choices=("collider", "latent_shift"), default="collider")
    parser.add_argument("--sizes", default="1000,3000,10000", help="training budgets (first n simulations)")
    parser.add_argument("--methods", default="nle,npe", help="nle, npe, nre (comma-separated)")
    parser.add_argument("--weights", default="0,0.2", help="score weights α (0: plain, no gold)")
    parser.add_argument("--nre-gold", default="score,ratio,ratio+score",
                        help="nre: the gold modes to compare (score, ratio, ratio+score)")
    parser.add_argument("--num-references", type=int, default=4,
                        help="nre ratio modes: θ_ref rows drawn from the prior for the joint log ratio")
    parser.add_argument("--no-c2st", action="store_true", help="nre: the log-ratio error only, no MCMC C2ST")
    parser.add_argument("--ratio-model", default="nre",
                        help="nre: the ratio estimator's variant (nre, nre_b, nre_c, bnre)")
    parser.add_argument("--control", action="store_true",
                        help="also fit gold='score', gold_weight=0 (the gold runs' training settings, no term)")
    parser.add_argument("--num-test", type=int, default=5000, help="held-out pairs of the emulator gap")
    parser.add_argument("--num-obs", type=int, default=5, help="observations of the posterior C2ST")
    parser.add_argument("--num-samples", type=int, default=2000, help="posterior and reference draws per obs")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--max-time", type=float, default=None, help="seconds per fit (default: no limit)")
    parser.add_argument("--log-theta", choices=("true", "false"), default="true",
                        help="nle: LikelihoodEstimator(log_theta=...) (default true: log θ for positive θ)")
    parser.add_argument("--flow-options", default=None,
                        help="JSON keyword arguments of simgen.models.Flow (e.g. '{\"heavy_tails\": false}')")
    parser.add_argument("--gold-training", default=None, metavar="JSON",
                        help="TrainingConfig settings for the gold-trained fits only (on top of the gold defaults), "
                             "e.g. '{\"restart_on_decay\": false}' or '{\"patience\": 20}'")
    parser.add_argument("--history", action="store_true",
                        help="rows also carry each fit's best epoch and its training and validation loss per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default="0",
                        help="campaigns (comma-separated seeds): each simulates its own rows, test pairs and "
                             "observations and trains with its seed; the summary compares the mean curves "
                             "(empty, with --include: summarise earlier runs without fitting)")
    parser.add_argument("--json", default=None, help="write the rows here as they come")
    parser.add_argument("--include", action="append", default=[], metavar="JSON",
                        help="an earlier run's --json file (repeatable): its rows join the summary (campaigns whose "
                             "seed this run also has are refused; the settings must match: the command's other "
                             "flags are compared)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="resamples of the campaigns for the interval of the mean curves' crossing (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    methods = [m.strip() for m in args.methods.split(",")]
    weights = [float(w) for w in args.weights.split(",")]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds and not args.include:
        parser.error("--seeds is empty: give campaigns to fit, or --include files to summarise")
    unknown = set(methods) - {"nle", "npe", "nre"}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")
    if args.simulator == "latent_shift" and not (set(methods) <= {"nle", "nre"} and ("nre" not in methods
                                                                                  or args.no_c2st)):
        parser.error("latent_shift has no reference posterior: --methods nle, or nre with --no-c2st")
    sim = simulators.get("collider", level="parton_smeared") if args.simulator == "collider" else LatentShift()
    print(f"simgen {simgen.__version__}; {args.simulator}; sizes {sizes}, methods {methods}, α {weights}, "
          f"seeds {seeds}; {torch.get_num_threads()} thread(s); timings are wall seconds on a shared machine "
          "(noisy)", flush=True)
    start = time.perf_counter()
    out: dict[str, Any] = {"command": vars(args), "simgen": simgen.__version__, "rows": [], "summary": []}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))

    nre_modes = [m.strip() for m in args.nre_gold.split(",")]
    earlier = included_rows(args, seeds)  # checked before the fits, not after them
    for seed in seeds:
        for row in campaign(sim, args, seed, sizes, methods, weights, nre_modes):
            out["rows"].append(row)
            save()
            print(json.dumps(row), flush=True)
    rows = out["rows"] + earlier
    all_seeds = sorted({r["seed"] for r in rows})
    generator = random.Random(0)
    for method in methods:
        modes = nre_modes if method == "nre" else ["score"]
        for weight, gold in ((w, mode) for w in weights if w > 0 for mode in modes):
            summary: dict[str, Any] = {"method": method, "gold": gold, "gold_weight": weight}
            curves = {kind: campaign_curves(rows, method, w, g, sizes)
                      for kind, (w, g) in {"plain": (0.0, None), "gold": (weight, gold)}.items()}
            campaigns = [seed for seed in all_seeds if seed in curves["plain"] and seed in curves["gold"]]
            if not campaigns:
                continue
            for seed in campaigns:
                summary[f"seed {seed}"] = compare(sizes, curves["plain"][seed], curves["gold"][seed])
            if len(campaigns) > 1:
                summary["mean_curves"] = compare(sizes, mean_curve(curves["plain"], campaigns),
                                                 mean_curve(curves["gold"], campaigns))
                summary["mean_curves"]["campaigns"] = campaigns
                if args.bootstrap:
                    ratios = []
                    for _ in range(args.bootstrap):
                        pick = generator.choices(campaigns, k=len(campaigns))
                        plain, gilded = mean_curve(curves["plain"], pick), mean_curve(curves["gold"], pick)
                        ratios.append(fewer_simulations(sizes, crossing(sizes, gilded, plain[-1])))
                    ratios.sort()
                    summary["mean_curves"]["fewer_simulations_90pct"] = [
                        round(ratios[int(0.05 * len(ratios))], 2), round(ratios[int(0.95 * len(ratios)) - 1], 2)]
            out["summary"].append(summary)
            save()
            print("summary", json.dumps(summary), flush=True)
    print(f"total {time.perf_counter() - start:.0f}s", flush=True)


def campaign(sim: Any, args: argparse.Namespace, seed: int, sizes: list[int], methods: list[str],
             weights: list[float], nre_modes: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of one campaign (seed ``seed``): every method, weight and budget, as ``main`` describes."""
    with torch.random.fork_rng():
        torch.manual_seed(30_000 + seed)
        reference = sim.prior.sample((args.num_references,))
    theta_all, x_all, gold_all = simgen.simulate(sim, sim.prior, sizes[-1], seed=seed, progress=False, gold=True,
                                                 gold_reference=reference if "nre" in methods else None)
    theta_test, x_test = observations(sim, args.num_test, seed=10_000 + seed)
    _, x_obs = observations(sim, args.num_obs, seed=20_000 + seed)
    settings = {"max_epochs": args.max_epochs, "progress": False, "seed": seed}
    if args.max_time is not None:
        settings["max_time"] = args.max_time
    for method in methods:
        modes = nre_modes if method == "nre" else ["score"]
        series = [(w, mode) for w in weights for mode in (modes if w > 0 else [None])]
        series += [(0.0, mode) for mode in modes] if args.control else []
        for weight, gold in series:
            for n in sizes:
                theta, x = theta_all[:n], x_all[:n]
                fit_gold = {name: v[:n] for name, v in gold_all.items()} if gold else None
                row: dict[str, Any] = {"method": method, "gold": gold, "gold_weight": weight, "num_simulations": n,
                                       "seed": seed, "control": gold is not None and weight == 0,
                                       "log_theta": args.log_theta, "flow_options": args.flow_options,
                                       "gold_training": args.gold_training if gold else None}
                flow = simgen.models.Flow(**json.loads(args.flow_options)) if args.flow_options else "flow"
                if method == "nle":
                    est = simgen.LikelihoodEstimator(sim.prior, flow, gold=gold, gold_weight=weight,
                                                     log_theta=args.log_theta == "true")
                elif method == "npe":
                    est = simgen.PosteriorEstimator(sim.prior, flow, gold=gold, gold_weight=weight)
                else:
                    est = simgen.RatioEstimator(sim.prior, args.ratio_model, gold=gold, gold_weight=weight)
                extra = {"gold_reference": reference} if gold and "ratio" in gold else {}
                if gold and args.gold_training:
                    extra.update(json.loads(args.gold_training))
                history = est.fit(theta, x, gold=fit_gold, **extra, **settings)
                row.update(train_seconds=round(history.wall_time, 1), epochs=history.epochs)
                if args.history:
                    row.update(best_epoch=history.best_epoch,
                               train_loss=[round(v, 4) for v in history.train_loss],
                               validation_loss=[round(v, 4) for v in history.validation_loss])
                if method == "nle":
                    row.update(held_out_gap(est, sim, theta_test, x_test))
                    row["score"] = row["gap"]
                elif method == "npe":
                    row["c2st"], row["c2st_se"] = posterior_c2st(est, sim, x_obs, args.num_samples, seed)
                    row["score"] = row["c2st"]
                else:
                    row["ratio_rmse"], row["ratio_rmse_se"] = log_ratio_error(est, sim, theta_test, x_test)
                    row["score"] = row["ratio_rmse"]
                    if not args.no_c2st:
                        row["c2st"], row["c2st_se"] = posterior_c2st(est.posterior(progress=False), sim, x_obs,
                                                                     args.num_samples, seed)
                yield row


if __name__ == "__main__":
    main()
