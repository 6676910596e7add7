"""How the trace estimator of a continuous-time map emulator's ``log_prob`` moves its likelihood gap.

Fits (or loads) a ``LikelihoodEstimator`` of ``--family`` (``diffusion``, ``edm``: the diffusion with
``schedule="edm"``, or ``cnf``) on ``--num-train`` ``cosmology_maps`` (``--size`` × ``--size``, Gaussian field
with noise, exact likelihood), then scores ``--num-test`` held-out pairs (another seed) with

    gap = mean_i [log p(x_i | θ_i) − log p̂(x_i | θ_i)]  (nats per map and per pixel, ± standard error),

under each trace estimator: one Rademacher probe with independent probes per row and with one frozen generator
(probes shared by all rows, as an MCMC chain uses them), coloured probes (``colouring_period`` 4, two groups,
``log_prob_with_se``) both ways, and the exact trace on the first ``--num-exact`` maps. A normalised model has
gap ≥ 0 in expectation; a shared-probe gap carries one draw's error for every row. The ODE solver is
``--method``/``--steps`` (default RK4 on 16 steps, 64 network evaluations) to bound the cost.

    OMP_NUM_THREADS=1 python benchmarks/map_log_prob_estimators.py --max-time 420 --save diff16.pt
    OMP_NUM_THREADS=1 python benchmarks/map_log_prob_estimators.py --load diff16.pt --num-test 40
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch

import simgen
import simulators
from simgen.models import CNF, Diffusion


def fit_emulator(sim: Any, family: str, num_train: int, max_time: float,
                 padding_mode: str = "circular", seed: int = 0) -> tuple[simgen.LikelihoodEstimator, int]:
    """The benchmark's small U-Net emulator of ``family`` fitted (training seed ``seed``) on ``num_train`` maps
    (simulated with seed 0) for at most ``max_time`` seconds; returns it and the epochs trained."""
    theta, x = simgen.simulate(sim, sim.prior, num_train, seed=0, progress=False)
    small = dict(channels=(16, 32), blocks_per_level=1, attention=False, padding_mode=padding_mode)
    model = {"diffusion": lambda: Diffusion(**small), "edm": lambda: Diffusion(schedule="edm", **small),
             "cnf": lambda: CNF(padding_mode=padding_mode)}[family]()
    emu = simgen.LikelihoodEstimator(sim.prior, model)
    start = time.perf_counter()
    history = emu.fit(theta, x, seed=seed, progress=False, max_time=max_time)
    print(f"trained {time.perf_counter() - start:.0f} s, {history.epochs} epochs", flush=True)
    return emu, history.epochs


def held_out(sim: Any, emu: Any, num_test: int) -> tuple[torch.Tensor, ...]:
    """``num_test`` held-out pairs (seed 123) in the family's own coordinates: θ, x, the exact log p(x | θ)
    (float64), the standardised θ, the latent rows u with the pre-processing's log-Jacobian, and the embedded
    context — so that the family's ``log_prob`` can be called with options the estimator does not expose."""
    theta, x = simgen.simulate(sim, sim.prior, num_test, seed=123, progress=False)
    c_std = emu.density.standardized_context(theta)
    u, logdet = emu.density.to_latent(x, c_std)
    return theta, x, sim.log_likelihood(theta, x).double(), c_std, u, logdet, emu.density.embed(c_std)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="diffusion", choices=["diffusion", "edm", "cnf"])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-test", type=int, default=40)
    parser.add_argument("--num-exact", type=int, default=3)
    parser.add_argument("--max-time", type=float, default=420.0)
    parser.add_argument("--method", default="rk4")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--load", default=None)
    parser.add_argument("--save", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--padding-mode", default="circular", choices=["circular", "zeros"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulators.get("cosmology_maps", n_pix=args.size)
    if args.load:
        emu = simgen.load(args.load)
    else:
        emu, _ = fit_emulator(sim, args.family, args.num_train, args.max_time, args.padding_mode)
        if args.save:
            emu.save(args.save)
    family = emu.density.density
    family.log_prob_method, family.log_prob_steps = args.method, args.steps
    theta, x, exact, c_std, u, logdet, context = held_out(sim, emu, args.num_test)
    d = math.prod(sim.x_shape)

    def report(name: str, logp: torch.Tensor, seconds: float, se: torch.Tensor | None = None) -> None:
        gap = exact - logp.double()
        err = gap.std().item() / math.sqrt(gap.numel())
        extra = "" if se is None else f"; mean per-map SE {se.mean():.3f}"
        print(f"{name:40s} gap {gap.mean():8.3f} ± {err:.3f} nats/map = {gap.mean() / d:.4f} ± {err / d:.4f} "
              f"nats/pixel{extra}; {family.last_nfe} evaluations; {seconds:.0f} s", flush=True)

    with torch.no_grad():
        for probes in ("rademacher", "coloured"):
            family.trace_probes = probes
            for shared in (False, True):
                generator = torch.Generator().manual_seed(0) if shared else None
                start = time.perf_counter()
                logp, se = family.log_prob_with_se(u, context, generator=generator, num_probes=2)
                report(f"{probes}, 2 groups, {'shared' if shared else 'independent'}", logp + logdet,
                       time.perf_counter() - start, se)
        k = args.num_exact
        if k:
            start = time.perf_counter()
            logp = family.log_prob(u[:k], context[:k], exact=True) + logdet[:k]
            gaps = (exact[:k] - logp.double()).tolist()
            print(f"exact trace, first {k} maps: gap per map {[round(g, 3) for g in gaps]}; "
                  f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
