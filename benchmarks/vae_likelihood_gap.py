"""Held-out log-likelihood gap of the VAE emulator against the exact likelihood, next to the flow emulator's.

On ``gaussian_linear`` (x | θ ~ N(θ, 0.1 I₁₀), exact likelihood known): simulate ``--budget`` pairs (fixed seed),
fit ``LikelihoodEstimator(model="vae")`` and ``LikelihoodEstimator(model="flow")`` on them, then score
``--num-test`` fresh pairs (another seed):

    gap = mean_i [log p(x_i | θ_i) − log q(x_i | θ_i)]  (nats),

with the VAE's log q the IWAE estimate at K = ``--iwae-samples`` (a lower-biased estimate, so its gap includes
the IWAE bias). The gap is KL(p ‖ q) averaged over θ, plus Monte Carlo error (the standard error is printed).
Target for the VAE: ≤ 0.2 nats at 10⁴ simulations.

    OMP_NUM_THREADS=1 python benchmarks/vae_likelihood_gap.py
    OMP_NUM_THREADS=1 python benchmarks/vae_likelihood_gap.py --models vae --budget 10000 --iwae-samples 256
"""

from __future__ import annotations

import argparse
import time

import torch

import simgen
import simulators
from simgen.models import VAE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="gaussian_linear")
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--num-test", type=int, default=5_000)
    parser.add_argument("--iwae-samples", type=int, default=256)
    parser.add_argument("--models", default="vae,flow")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"simgen {simgen.__version__}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"task {args.task}, {args.budget} simulations, {args.num_test} held-out pairs, IWAE K = {args.iwae_samples}",
          flush=True)

    sim = simulators.get(args.task)
    theta, x = simgen.simulate(sim, sim.prior, args.budget, seed=args.seed, progress=False)
    theta_t, x_t = simgen.simulate(sim, sim.prior, args.num_test, seed=args.seed + 123, progress=False)
    exact = sim.log_likelihood(theta_t, x_t)
    for name in args.models.split(","):
        model = VAE(iwae_samples=args.iwae_samples) if name == "vae" else name
        emu = simgen.LikelihoodEstimator(sim.prior, model)
        start = time.perf_counter()
        history = emu.fit(theta, x, seed=args.seed, progress=False)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        gap, se = _gap(emu, exact, x_t, theta_t, args.seed)
        eval_seconds = time.perf_counter() - start
        print(f"{name:>5}: held-out gap E[log p - log q] = {gap:.4f} ± {se:.4f} nats  "
              f"(train {seconds:.0f} s, {history.epochs} epochs, best {history.best_epoch}; "
              f"log_prob {eval_seconds:.1f} s)", flush=True)
        if name == "vae":  # how much of the gap is the IWAE estimator's bias: the gap at smaller K
            vae = emu.density.density
            for k in (1, 16):
                vae.iwae_samples = k
                print(f"       at K = {k:>3}: {_gap(emu, exact, x_t, theta_t, args.seed)[0]:.4f} nats", flush=True)
            vae.iwae_samples = args.iwae_samples


def _gap(emu, exact: torch.Tensor, x_t: torch.Tensor, theta_t: torch.Tensor, seed: int) -> tuple[float, float]:
    """Mean of log p − log q over the held-out pairs and its standard error. Each pair gets its own draws (a
    stochastic log_prob given one ``generator`` shares its draws among all rows, so their error would not
    average out over the pairs); the global RNG is seeded for reproducibility."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        log_q = emu.log_prob(x_t, theta_t)
    diff = exact - log_q.double()
    return diff.mean().item(), (diff.std() / diff.numel() ** 0.5).item()


if __name__ == "__main__":
    main()
