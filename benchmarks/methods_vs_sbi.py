"""simgen's neural ratio estimators and MNLE against sbi's, on the same simulations, in the same run (issue 18).

For each task and simulation budget: simulate once (``simgen.simulate``, fixed seed), train each method on those
pairs, draw ``--num-samples`` posterior samples at ``--num-obs`` fixed observations (simgen: ``est.posterior()``,
MALA with its defaults; sbi: ``build_posterior()``, its default slice-sampling MCMC) and score them against the
task's reference posterior by C2ST (sbibm's classifier). Prints C2ST mean ± standard error over observations,
training and sampling wall time; with ``--json`` the rows are written after each one, so a run stopped early keeps
what it measured.

Methods (``--methods``): ``simgen:<variant>`` for ``simgen.RatioEstimator(prior, <variant>)`` (``nre``, ``nre_a``,
``nre_b``, ``nre_c``, ``bnre``), ``sbi:<class>`` for sbi's ``NRE`` (its NRE-B), ``NRE_A``, ``NRE_C`` or ``BNRE``
with their defaults; ``simgen:mnle`` for ``simgen.LikelihoodEstimator(prior, discrete=[...])`` and ``sbi:MNLE``
for sbi's MNLE, with their defaults (``--methods mnle`` names the pair). sbi's MNLE takes the discrete columns
last, so it is given the same simulations with those columns moved to the end.

The MNLE methods run on the task ``choices`` (the default task when only they are asked for): the README's mixed
toy, per trial k ~ Binomial(5, θ₀) (discrete) and t ~ LogNormal(θ₁ − 0.1 k, 0.2), with an exact likelihood. Each
observation is 20 i.i.d. trials, its reference posterior MCMC on the exact likelihood, and each method is also
scored by the held-out gap E[log p(x | θ) − log q(x | θ)] over 2,000 fresh pairs (nats per trial, mean ± SE; 0 for
the exact likelihood).

    OMP_NUM_THREADS=1 python benchmarks/methods_vs_sbi.py                  # NRE/BNRE, 3 tasks x {1e3, 1e4}
    OMP_NUM_THREADS=1 python benchmarks/methods_vs_sbi.py --tasks two_moons --budgets 10000 --num-obs 3 \\
        --methods simgen:nre_a,simgen:nre_b,simgen:nre_c,simgen:bnre --json variants.json
    OMP_NUM_THREADS=1 python benchmarks/methods_vs_sbi.py --methods mnle --num-obs 5 --num-samples 2000

``--simgen-options``, ``--fit-options`` and ``--mcmc`` (JSON objects) pass keywords to the simgen methods'
constructor, ``fit`` and ``posterior`` (a sweep over one setting on the same simulations and observations); the
rows record them.

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
from _common import CHOICES_PRIOR, choices, choices_check, choices_log_prob, mean_se, observations

import simgen
import simulators

DEFAULT_METHODS = "simgen:nre,sbi:NRE,simgen:bnre,sbi:BNRE"
DEFAULT_TASKS = "two_moons,slcp,gaussian_linear"
#: Method groups ``--methods`` also takes.
GROUPS = {"mnle": "simgen:mnle,sbi:MNLE"}
MNLE_METHODS = {"simgen:mnle", "sbi:MNLE"}
#: The mixed task of the MNLE methods and its discrete columns of x.
MIXED_TASK, MIXED_DISCRETE = "choices", [0]


def _fit(method: str, prior, theta: torch.Tensor, x: torch.Tensor, seed: int, discrete: list[int] | None = None,
         options: dict | None = None, fit_options: dict | None = None, mcmc: dict | None = None):
    """A trained method: (sampler of n draws at one x, log q(x | θ) of paired rows or None for ratio estimators,
    training seconds, epochs). ``discrete``: x's discrete columns, for the MNLE methods. ``options``,
    ``fit_options`` and ``mcmc``: a simgen method's constructor, ``fit`` and ``posterior`` keywords."""
    lib, name = method.split(":", 1)
    options, fit_options, mcmc = options or {}, fit_options or {}, mcmc or {}
    if method == "simgen:mnle":
        est = simgen.LikelihoodEstimator(prior, discrete=discrete, **options)
        history = est.fit(theta, x, seed=seed, progress=False, **fit_options)
        post = est.posterior(progress=False, **mcmc)

        def sample(n: int, x_o: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return post.sample(n, x_o, generator=generator)

        return sample, est.log_prob, history.wall_time, history.epochs
    if lib == "simgen":
        est = simgen.RatioEstimator(prior, name, **options)
        history = est.fit(theta, x, seed=seed, progress=False, **fit_options)
        post = est.posterior(progress=False, **mcmc)

        def sample(n: int, x_o: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return post.sample(n, x_o, generator=generator)

        return sample, None, history.wall_time, history.epochs
    if lib == "sbi":
        import sbi.inference

        # sbi's MNLE reads the last columns as the discrete ones
        order = list(range(x.shape[-1]))
        if method == "sbi:MNLE":
            order = [j for j in order if j not in discrete] + list(discrete)
        torch.manual_seed(seed)
        inference = getattr(sbi.inference, name)(prior=prior, show_progress_bars=False)
        start = time.perf_counter()
        # sbi's "converged after N epochs" line, and MNLE's warnings that it takes the last columns as the
        # discrete ones (they are) and infers each one's categories from the data (all are in every budget here)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(last k columns|num_categories)")
            estimator = inference.append_simulations(theta, x[..., order]).train(show_train_summary=False)
        seconds = time.perf_counter() - start
        posterior = inference.build_posterior()

        def sample(n: int, x_o: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            torch.manual_seed(int(torch.randint(0, 2**31, (), generator=generator)))
            return posterior.sample((n,), x=x_o[..., order], show_progress_bars=False)

        def log_prob(x_: torch.Tensor, theta_: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # sbi's estimators take x as [sample, batch, d_x] and θ as [batch, d_θ]
                return estimator.log_prob(x_[..., order].unsqueeze(0), theta_).squeeze(0)

        return sample, log_prob if method in MNLE_METHODS else None, seconds, inference._summary["epochs_trained"][-1]
    raise ValueError(f"a method is simgen:<variant> or sbi:<class>; got {method!r}")


def _task(task: str, num_obs: int, num_samples: int, seed: int):
    """A task's (prior, simulator, observations, reference draws per observation, held-out (θ, x, exact log p) or
    None, discrete columns of x or None)."""
    if task == MIXED_TASK:
        check = choices_check(num_obs, num_samples, seed)
        held_out = (check.theta_test, check.x_test, choices_log_prob(check.x_test, check.theta_test))
        return CHOICES_PRIOR, choices, check.x_o, check.reference, held_out, MIXED_DISCRETE
    sim = simulators.get(task)
    _, x_o = observations(sim, num_obs, seed=1000 + seed)
    reference = sim.reference_posterior_batched(x_o, num_samples, generator=torch.Generator().manual_seed(seed))
    return sim.prior, sim, x_o, reference, None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=None,
                        help=f"default {DEFAULT_TASKS}; {MIXED_TASK} when only MNLE methods are asked for")
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="comma-separated simgen:<variant>, sbi:<class>, or the group 'mnle'")
    parser.add_argument("--num-obs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--simgen-options", type=json.loads, default={}, metavar="JSON",
                        help="keywords of the simgen methods' constructors, e.g. '{\"hidden_features\": 128}'")
    parser.add_argument("--fit-options", type=json.loads, default={}, metavar="JSON",
                        help="keywords of the simgen methods' fit, e.g. '{\"patience\": 50}'")
    parser.add_argument("--mcmc", type=json.loads, default={}, metavar="JSON",
                        help="keywords of the simgen methods' MCMC posterior, e.g. '{\"thin\": 20}'")
    args = parser.parse_args()
    methods = ",".join(GROUPS.get(m, m) for m in args.methods.split(",")).split(",")
    tasks = args.tasks or (MIXED_TASK if set(methods) <= MNLE_METHODS else DEFAULT_TASKS)
    for task in tasks.split(","):
        mismatched = [m for m in methods if (m in MNLE_METHODS) != (task == MIXED_TASK)]
        if mismatched:
            raise SystemExit(f"methods {mismatched} do not run on task {task!r}: the MNLE methods run on "
                             f"{MIXED_TASK!r} only, the ratio estimators on the simulators' tasks only")
    torch.set_num_threads(args.threads)
    import sbi

    print(f"simgen {simgen.__version__} vs sbi {sbi.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.num_obs} observations, {args.num_samples} samples, "
          "C2ST as sbibm (MLP 2x10d, 5 folds)", flush=True)
    settings = {"options": args.simgen_options, "fit_options": args.fit_options, "mcmc": args.mcmc}
    if any(settings.values()):
        print(f"simgen methods with {settings}", flush=True)
    rows = []
    for task in tasks.split(","):
        prior, sim, x_o, reference, held_out, discrete = _task(task, args.num_obs, args.num_samples, args.seed)
        for budget in map(int, args.budgets.split(",")):
            theta, x = simgen.simulate(sim, prior, budget, seed=args.seed, progress=False)
            for method in methods:
                simgen_settings = settings if method.startswith("simgen:") else {}
                sample, log_prob, train_s, epochs = _fit(method, prior, theta, x, args.seed, discrete,
                                                         **simgen_settings)
                gap = gap_se = None
                if held_out is not None and log_prob is not None:
                    theta_test, x_test, exact = held_out
                    gap, gap_se = mean_se((exact - log_prob(x_test, theta_test)).tolist())
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
                       "gap_nats": gap, "gap_se": gap_se, "train_s": train_s, "epochs": epochs,
                       "sample_s_per_obs": sample_s / args.num_obs, "scores": scores, **simgen_settings}
                rows.append(row)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=2))
                gap_text = "" if gap is None else f"gap {gap:.3f} ± {gap_se:.3f} nats  "
                print(f"{task:16s} {budget:>6d}  {method:14s} {gap_text}C2ST {mean:.3f} ± {se:.3f}  "
                      f"train {train_s:6.1f}s ({epochs} epochs)  sampling {sample_s / args.num_obs:5.1f}s/obs",
                      flush=True)

    if not rows:
        return
    print("\n| task | sims | method | log p − log q (nats) | C2ST | train (s) | sampling (s/obs) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        gap_text = "–" if r["gap_nats"] is None else f"{r['gap_nats']:.3f} ± {r['gap_se']:.3f}"
        print(f"| {r['task']} | {r['budget']} | {r['method']} | {gap_text} | {r['c2st']:.3f} ± {r['se']:.3f} | "
              f"{r['train_s']:.1f} | {r['sample_s_per_obs']:.1f} |")


if __name__ == "__main__":
    main()
