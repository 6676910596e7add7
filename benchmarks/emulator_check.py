"""A saved map emulator against ``cosmology_maps`` with many maps per θ: the check ``simgen run`` makes at 512.

Loads ``EMULATOR`` (e.g. ``simgen-out/emulator.pt`` of a default run), draws 3 θ from the prior (seed 123) and
runs :func:`simgen.diagnostics.compare_likelihood` with ``--num-samples`` emulated and simulated 32 × 32 maps at
each, so that the noise of the log C_ℓ correlations and of the statistics' means shrinks as 1/√n.

    OMP_NUM_THREADS=1 python benchmarks/emulator_check.py simgen-out/emulator.pt --num-samples 4096

With ``--null-pairs K`` it first compares K pairs of independent *simulated* sets of ``--num-samples`` maps at
the same θ (the simulator against itself) and prints the median and 95th percentile of the largest log C_ℓ
correlation error: what an exact emulator would score (the emulator argument may then be left out).

    OMP_NUM_THREADS=1 python benchmarks/emulator_check.py --null-pairs 40 --num-samples 512
"""

from __future__ import annotations

import argparse
import time

import torch

import simgen
import simulators
from simgen.diagnostics.maps import binned_power_spectrum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("emulator", nargs="?", default=None)
    parser.add_argument("--null-pairs", type=int, default=0, help="pairs of simulated sets compared first")
    parser.add_argument("--num-samples", type=int, default=4096)
    parser.add_argument("--n-pix", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulators.get("cosmology_maps", n_pix=args.n_pix)
    torch.manual_seed(123)
    theta = sim.prior.sample((3,)).float()
    if args.null_pairs:
        null(sim, theta, args.num_samples, args.null_pairs, args.seed)
    if args.emulator is None:
        return
    emu = simgen.load(args.emulator)
    start = time.perf_counter()
    c = simgen.diagnostics.compare_likelihood(emu, sim, theta, num_samples=args.num_samples, seed=args.seed)
    print(f"{args.num_samples} maps per θ, {time.perf_counter() - start:.0f} s, {torch.get_num_threads()} thread(s)")
    print(c.summary())
    s = c.spectrum
    print("max |Δρ(log C_ℓ)| per θ", [round(float(e.abs().max()), 3) for e in s.correlation_error],
          "largest SE", round(float(s.correlation_se.max()), 3), "worst C_ℓ ratio", round(s.worst_ratio, 3))
    z = (s.ratio - 1) / s.ratio_se
    for i, (r, zi) in enumerate(zip(s.ratio, z, strict=True)):
        k = int(zi.abs().argmax())
        print(f"θ {[round(v, 3) for v in theta[i].tolist()]}: C_ℓ bin {k} of {len(r)} the most off, ratio "
              f"{float(r[k]):.3f} at {float(zi[k]):+.1f} SE; largest |ratio − 1| {float((r - 1).abs().max()):.3f}")


def null(sim: simulators.Simulator, theta: torch.Tensor, n: int, pairs: int, seed: int) -> None:
    """The largest log C_ℓ correlation error between ``pairs`` pairs of independent simulated sets of ``n`` maps
    at each θ row: its median and 95th percentile."""
    g = torch.Generator().manual_seed(seed + 1000)
    errors = []
    for _ in range(pairs):
        spectra = [binned_power_spectrum(
            sim(theta.repeat_interleave(n, dim=0), generator=g), side=sim.side).reshape(len(theta), n, -1)
            for _ in range(2)]
        errors.append(simgen.diagnostics.SpectrumComparison.from_spectra(*spectra).max_correlation_error)
    e = torch.tensor(errors)
    print(f"simulator against itself, {n} maps per θ, {pairs} pairs: largest |Δρ(log C_ℓ)| median "
          f"{e.median():.3f}, 95th percentile {e.quantile(0.95):.3f}, above 0.15 in {(e > 0.15).float().mean():.0%}")


if __name__ == "__main__":
    main()
