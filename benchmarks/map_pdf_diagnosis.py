"""Why a map emulator misses the one-point PDF: its maps' mean and variance against the simulator's at each θ.

For an emulator saved by ``map_emulators.py --save-dir`` and the same field and ``--seed``, at the benchmark's
check θ (``map_sets``: 1,000 simulated maps each) it draws 1,000 fresh emulated maps and prints, per θ, the
ratio of the pixel variances, the difference of the means in units of the simulated pixel standard deviation,
and the largest |z| of the pixel histogram (as ``map_emulators.py`` computes it) for the maps as drawn, with
their mean shifted to the simulator's, and with their spread scaled to the simulator's. The PDF miss that
disappears under one of the two corrections is that moment's.

    OMP_NUM_THREADS=1 python benchmarks/map_pdf_diagnosis.py DIR/mapflow.pt --noiseless --seed 1
"""

from __future__ import annotations

import argparse

import torch
from _common import map_sets

import simgen
import simulators
from simgen.diagnostics.maps import pixel_histogram


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("emulator")
    parser.add_argument("--field", default="gaussian", choices=["gaussian", "lognormal"])
    parser.add_argument("--noiseless", action="store_true")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--num-samples", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulators.get("cosmology_maps", n_pix=args.size, field=args.field, n_gal=None if args.noiseless else 10.0)
    data = map_sets(sim, 10, 10, 3, args.num_samples, args.seed)
    emu = simgen.load(args.emulator)
    with torch.no_grad():
        emulated = emu.sample_batched(args.num_samples, data.theta_check,
                                      generator=torch.Generator().manual_seed(args.seed + 4))
    simulated = data.sim_maps
    loc, scale = simulated.mean(), simulated.std()  # one reference for every θ, as map_emulators.py's PDF

    def pdf_z(sim_maps: torch.Tensor, emu_maps: torch.Tensor) -> float:
        a, b = (pixel_histogram(((m - loc) / scale)[None].float(), sigma_ref=1.0).double()[0]
                for m in (sim_maps, emu_maps))
        var = a.var(0) / a.shape[0] + b.var(0) / b.shape[0]
        return float(((b.mean(0) - a.mean(0)) / var.clamp_min(1e-30).sqrt()).abs().max())

    for theta, s, e in zip(data.theta_check, simulated.double(), emulated.double(), strict=True):
        mean_matched = e - e.mean() + s.mean()
        spread_matched = (e - e.mean()) * (s.std() / e.std()) + e.mean()
        print(f"θ {[round(v, 3) for v in theta.tolist()]}: variance ratio {float(e.var() / s.var()):.4f}, mean "
              f"off by {float((e.mean() - s.mean()) / s.std()):+.4f} pixel sd; PDF |z| as drawn {pdf_z(s, e):.2f}, "
              f"mean matched {pdf_z(s, mean_matched):.2f}, variance matched {pdf_z(s, spread_matched):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
