"""simgen's diffusion and flow-matching (CNF) posteriors against sbi's NPSE and FMPE, on the same simulations.

For each task: simulate ``--budget`` pairs once (``simgen.simulate``, fixed seed), train four posterior
estimators on them — simgen ``model="diffusion"`` and ``model="cnf"`` (their default sampler, the probability-flow
ODE by Heun's method), sbi's ``NPSE`` and ``FMPE`` (sbi's defaults: NPSE's VE-SDE score network sampled by its
reverse SDE, FMPE's flow matching sampled by its ODE) — and compare each with the task's reference posterior at
``--num-obs`` fixed observations by C2ST (sbibm's classifier, ``--num-samples`` samples each). Reported per
method: C2ST mean ± standard error over observations, training wall time, the time to draw ``--num-samples``
samples (mean over observations), and network evaluations per sample (rows pushed through the network divided by
the samples drawn; counted by a forward hook, so it is the same measure for all four).

simgen's extra samplers (``--extra-samplers``) are also scored on the same trained models: the diffusion's
reverse SDE (Euler–Maruyama, 500 steps) and both families' adaptive dopri5 ODE, which show what the few-step
Heun default gives up.

    OMP_NUM_THREADS=1 python benchmarks/continuous_vs_sbi.py                       # 3 tasks x 10 observations
    OMP_NUM_THREADS=1 python benchmarks/continuous_vs_sbi.py --tasks gaussian_linear --num-obs 3 --json out.json

All methods run with the same number of torch threads (``--threads``, default 1), printed in the header.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import mean_se, observations, train_sbi

import simgen
import simulators
from simgen.models import make_model


class RowCounter:
    """Counts the rows pushed through a module's forward (network evaluations × batch rows)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        first = args[0] if args else output
        self.rows += int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 0

    def take(self) -> int:
        rows, self.rows = self.rows, 0
        return rows


def _train_simgen(family: str, prior, theta, x, seed: int, settings: dict, extra: bool):
    post = simgen.PosteriorEstimator(prior, make_model(family))
    history = post.fit(theta, x, seed=seed, progress=False, **settings)
    density = post.density
    counter = RowCounter(density.density.net)

    def sampler(method: str | None) -> Callable[[int, torch.Tensor, int], torch.Tensor]:
        def draw(n: int, x_o: torch.Tensor, s: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(s)
            if method is None:  # the estimator's own path, with the family's default sampler
                return post.sample(n, x_o, generator=g)
            with torch.no_grad():
                c_std = density.standardized_context(x_o[None].to(post.device))
                u = density.density.sample(n, density.embed(c_std), generator=g, method=method)
                return density.from_latent(u, c_std)[0].cpu()  # c_std: undo the linear baseline too

        return draw

    samplers = {"heun": sampler(None)}
    if extra:
        samplers["dopri5"] = sampler("dopri5")
        if family == "diffusion":
            samplers["sde"] = sampler("sde")
    return history.wall_time, samplers, counter, history.epochs


def _train_sbi(kind: str, prior, theta, x, seed: int):
    from sbi.inference import FMPE, NPSE

    torch.manual_seed(seed)
    inference = (NPSE if kind == "npse" else FMPE)(prior=prior, show_progress_bars=False)
    estimator, seconds, _, epochs = train_sbi(inference, theta, x)
    posterior = inference.build_posterior(estimator)
    # build_posterior deep-copies the estimator: count the rows through the posterior's copy of the network
    sampled = getattr(posterior, "vector_field_estimator", estimator)
    counter = RowCounter(getattr(sampled, "net", sampled))

    def draw(n: int, x_o: torch.Tensor, s: int) -> torch.Tensor:
        torch.manual_seed(s)
        return posterior.sample((n,), x=x_o, show_progress_bars=False)

    return seconds, {"default": draw}, counter, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="two_moons,slcp,gaussian_linear")
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--num-obs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--methods", default="diffusion,cnf,npse,fmpe")
    parser.add_argument("--extra-samplers", action="store_true",
                        help="also score simgen's dopri5 ODE and the diffusion's reverse SDE")
    parser.add_argument("--patience", type=int, default=None,
                        help="early-stopping patience of simgen's trainer (default: TrainingConfig's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import sbi

    print(f"simgen {simgen.__version__} vs sbi {sbi.__version__}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.budget} simulations, {args.num_obs} observations, "
          f"{args.num_samples} samples, C2ST as sbibm (MLP 2x10d, 5 folds)", flush=True)
    settings = {} if args.patience is None else {"patience": args.patience}
    rows = []
    for task in args.tasks.split(","):
        sim = simulators.get(task)
        _, x_o = observations(sim, args.num_obs, seed=1000 + args.seed)
        reference = sim.reference_posterior_batched(
            x_o, args.num_samples, generator=torch.Generator().manual_seed(args.seed)
        )
        theta, x = simgen.simulate(sim, sim.prior, args.budget, seed=args.seed, progress=False)
        for method in args.methods.split(","):
            if method in ("diffusion", "cnf"):
                train_s, samplers, counter, epochs = _train_simgen(method, sim.prior, theta, x, args.seed, settings,
                                                                   args.extra_samplers)
            else:
                train_s, samplers, counter, epochs = _train_sbi(method, sim.prior, theta, x, args.seed)
            for name, draw in samplers.items():
                scores, times, nfe = [], [], []
                for i in range(args.num_obs):
                    counter.take()
                    start = time.perf_counter()
                    samples = draw(args.num_samples, x_o[i], args.seed + i)
                    times.append(time.perf_counter() - start)
                    nfe.append(counter.take() / args.num_samples)
                    scores.append(simgen.diagnostics.c2st(samples, reference[i]))
                m, se = mean_se(scores)
                row = {"task": task, "method": method, "sampler": name, "c2st": m, "se": se, "scores": scores,
                       "train_s": train_s, "epochs": epochs, "sample_s": sum(times) / len(times),
                       "nfe_per_sample": sum(nfe) / len(nfe)}
                rows.append(row)
                if args.json:  # after every row, so a run stopped early keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=2))
                print(f"{task:16s} {method:9s} {name:8s} C2ST {m:.3f} ± {se:.3f}  train {train_s:7.1f}s "
                      f"({epochs} epochs)  sample {row['sample_s']:6.2f}s  NFE/sample {row['nfe_per_sample']:.0f}",
                      flush=True)
            counter.handle.remove()

    if not rows:
        return
    print(f"\n| task | method | sampler | C2ST | train (s) | {args.num_samples} samples (s) | NFE / sample |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['method']} | {r['sampler']} | {r['c2st']:.3f} ± {r['se']:.3f} | "
              f"{r['train_s']:.1f} | {r['sample_s']:.2f} | {r['nfe_per_sample']:.0f} |")


if __name__ == "__main__":
    main()
