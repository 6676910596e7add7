"""Where the emulator's posterior on slcp goes wrong: the shares of its four mirror modes.

slcp's likelihood is unchanged by the signs of θ₃ and θ₄, so its posterior has four mirror modes of exactly equal
mass. This script fits, on the same 10⁴ simulations, the amortised flow (``PosteriorEstimator(prior, "flow")``, on
the simulations alone) and ``--emulators`` emulators (``LikelihoodEstimator(prior)``, seeds 0, 1, ...), and at
each observation prints the share of the draws in each mode (quadrant of (θ₃, θ₄)) and C2ST against the exact
reference posterior, for:

- the amortised posterior;
- each emulator's posterior by MCMC, chains started by SIR from the prior and from the amortised posterior
  (``proposal=``, :mod:`simgen.mcmc.proposal`);
- with more than one emulator, their mixture of likelihoods (1/K) Σ_k q_k(x | θ), chains started from the
  amortised posterior;
- with ``--emulated N``, the amortised posterior trained on N pairs from emulator 0 beside the simulations
  (``fit(..., emulator=, num_emulated=N)``, :mod:`simgen.estimators.augment`).

If the sampler were at fault the shares would move with the start; if one training run were, they would differ
between the emulators and average out in the mixture.

    OMP_NUM_THREADS=1 python benchmarks/mode_shares.py                    # the slow test's data: 3 observations
    OMP_NUM_THREADS=1 python benchmarks/mode_shares.py --emulators 3 --num-obs 2
    OMP_NUM_THREADS=1 python benchmarks/mode_shares.py --emulated 100000

Defaults: 10⁴ simulations (seed 0), the observations of ``tests/simgen/test_estimators_slow.py``'s slcp test
(seed 4), 10⁴ draws per C2ST. One thread (``--threads``).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
from _common import mean_se, observations

import simgen
import simulators
from simgen.mcmc import MCMCPosterior


class MixtureLikelihood:
    """(1/K) Σ_k q_k(x | θ) of K fitted emulators, with the interface :class:`MCMCPosterior` takes (one
    observation row: the mixture is over the product of the rows' likelihoods)."""

    def __init__(self, emulators: list[simgen.LikelihoodEstimator]) -> None:
        self.emulators = emulators
        self.device = emulators[0].device
        self.check_theta, self.check_x = emulators[0].check_theta, emulators[0].check_x

    def log_likelihood(self, theta: torch.Tensor, x_obs: torch.Tensor, generator: torch.Generator | None = None,
                       grad: bool = False) -> torch.Tensor:
        logs = torch.stack([e.log_likelihood(theta, x_obs, generator=generator, grad=grad) for e in self.emulators])
        return torch.logsumexp(logs, dim=0) - math.log(len(self.emulators))


def shares(draws: torch.Tensor) -> list[float]:
    """Share of ``draws`` ``[n, 5]`` in each quadrant of (θ₃, θ₄): (−, −), (−, +), (+, −), (+, +)."""
    quadrant = (draws[:, 2] > 0).long() * 2 + (draws[:, 3] > 0).long()
    return (torch.bincount(quadrant, minlength=4).float() / draws.shape[0]).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-simulations", type=int, default=10_000)
    parser.add_argument("--emulators", type=int, default=1, help="emulators trained with seeds 0, 1, ...")
    parser.add_argument("--emulated", type=int, default=0,
                        help="N: also the amortised posterior trained on N pairs from emulator 0")
    parser.add_argument("--num-obs", type=int, default=3)
    parser.add_argument("--obs-seed", type=int, default=4, help="seed of the observations (the slow test's: 4)")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", "MCMC may not have converged")  # mirror modes: R̂ over chains is ≫ 1
    sim = simulators.get("slcp")
    print(f"simgen {simgen.__version__}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); slcp, "
          f"{args.num_simulations} simulations, {args.num_obs} observations (seed {args.obs_seed}), "
          f"{args.num_samples} draws per C2ST", flush=True)
    theta, x = simgen.simulate(sim, sim.prior, args.num_simulations, seed=0, progress=False)
    post = simgen.PosteriorEstimator(sim.prior, "flow")
    history = post.fit(theta, x, seed=0, progress=False)
    print(f"amortised posterior: {history.wall_time:.0f} s", flush=True)
    emulators = []
    for k in range(args.emulators):
        emu = simgen.LikelihoodEstimator(sim.prior)
        history = emu.fit(theta, x, seed=k, progress=False)
        emulators.append(emu)
        print(f"emulator {k}: {history.wall_time:.0f} s, best validation loss {min(history.validation_loss):.4f}",
              flush=True)
    _, x_o = observations(sim, args.num_obs, seed=args.obs_seed)
    methods = [("amortised posterior", post)]
    if args.emulated:
        augmented = simgen.PosteriorEstimator(sim.prior, "flow")
        history = augmented.fit(theta, x, seed=0, progress=False, emulator=emulators[0], num_emulated=args.emulated)
        print(f"amortised posterior with {args.emulated} emulated pairs: {history.wall_time:.0f} s", flush=True)
        methods.append((f"amortised, {args.emulated} emulated pairs", augmented))
    for k, emu in enumerate(emulators):
        methods.append((f"emulator {k}, SIR from the prior", emu.posterior(progress=False)))
        methods.append((f"emulator {k}, SIR from the posterior", emu.posterior(proposal=post, progress=False)))
    if len(emulators) > 1:
        methods.append((f"mixture of {len(emulators)}, SIR from the posterior",
                        MCMCPosterior(MixtureLikelihood(emulators), sim.prior, proposal=post, progress=False)))
    scores: dict[str, list[float]] = {name: [] for name, _ in methods}
    for i in range(args.num_obs):
        reference = sim.reference_posterior(x_o[i], args.num_samples, generator=torch.Generator().manual_seed(0))
        print(f"observation {i}: reference shares {' '.join(f'{s:.3f}' for s in shares(reference))}", flush=True)
        for name, method in methods:
            start = time.perf_counter()
            draws = method.sample(args.num_samples, x_o[i], generator=torch.Generator().manual_seed(i))
            seconds = time.perf_counter() - start
            score = simgen.diagnostics.c2st(draws, reference)
            scores[name].append(score)
            run = method.last_run if isinstance(method, MCMCPosterior) else None
            sir = f"; SIR {run.init_draws} draws, ESS {run.init_ess:.0f}" if run is not None else ""
            print(f"  {name:40s} shares {' '.join(f'{s:.3f}' for s in shares(draws))}  C2ST {score:.3f}  "
                  f"({seconds:.1f} s{sir})", flush=True)
    print("mean C2ST ± SE over the observations:")
    for name, values in scores.items():
        m, se = mean_se(values)
        print(f"  {name:40s} {m:.3f} ± {se:.3f}")


if __name__ == "__main__":
    main()
