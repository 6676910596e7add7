"""A saved map emulator against ``cosmology_maps`` with many maps per θ: the check ``simgen run`` makes at 512.

Loads ``EMULATOR`` (e.g. ``simgen-out/emulator.pt`` of a default run), draws 3 θ from the prior (seed 123) and
runs :func:`simgen.diagnostics.compare_likelihood` with ``--num-samples`` emulated and simulated 32 × 32 maps at
each, so that the noise of the log C_ℓ correlations and of the statistics' means shrinks as 1/√n.

    OMP_NUM_THREADS=1 python benchmarks/emulator_check.py simgen-out/emulator.pt --num-samples 4096
"""

from __future__ import annotations

import argparse
import time

import torch

import simgen
import simulators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("emulator")
    parser.add_argument("--num-samples", type=int, default=4096)
    parser.add_argument("--n-pix", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emu = simgen.load(args.emulator)
    sim = simulators.get("cosmology_maps", n_pix=args.n_pix)
    torch.manual_seed(123)
    theta = sim.prior.sample((3,)).float()
    start = time.perf_counter()
    c = simgen.diagnostics.compare_likelihood(emu, sim, theta, num_samples=args.num_samples, seed=args.seed)
    print(f"{args.num_samples} maps per θ, {time.perf_counter() - start:.0f} s, {torch.get_num_threads()} thread(s)")
    print(c.summary())
    s = c.spectrum
    print("max |Δρ(log C_ℓ)| per θ", [round(float(e.abs().max()), 3) for e in s.correlation_error],
          "largest SE", round(float(s.correlation_se.max()), 3), "worst C_ℓ ratio", round(s.worst_ratio, 3))


if __name__ == "__main__":
    main()
