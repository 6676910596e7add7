"""Why a map emulator misses the one-point PDF: its maps' mean and variance against the simulator's at each θ.

For an emulator saved by ``map_emulators.py --save-dir`` and the same field and ``--seed``, at the benchmark's
check θ (``map_sets``: 1,000 simulated maps each) it draws 1,000 fresh emulated maps and prints, per θ, the
ratio of the pixel variances, the difference of the means in units of the simulated pixel standard deviation,
and the largest |z| of the pixel histogram (as ``map_emulators.py`` computes it) for the maps as drawn, with
their mean shifted to the simulator's, and with their spread scaled to the simulator's. The PDF miss that
disappears under one of the two corrections is that moment's.

    OMP_NUM_THREADS=1 python benchmarks/map_pdf_diagnosis.py DIR/mapflow.pt --noiseless --seed 1
    OMP_NUM_THREADS=1 python benchmarks/map_pdf_diagnosis.py DIR/cnf.pt --noiseless --seed 1 \
        --sample-options '{"steps": 100}' --neighbours 0.1

``--sample-options`` (JSON) go to the emulator's ``sample`` (an ODE family's ``method``/``steps``: is the miss
the sampler's discretisation?); ``--draw`` picks another fresh emulated draw. ``--neighbours R`` asks whether a
mean that is off follows the training set: for the training θ within R of each check θ (distance in units of
the prior draws' range per dimension) it prints the mean of their maps' means, each as a z-score against fresh
simulations at its own θ (mean z ± 1/√n: 0 if the training maps near θ are typical), beside the emulated maps'
mean offset in units of the map mean's spread at the check θ.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

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
    parser.add_argument("--sample-options", default="{}",
                        help='JSON for the emulator\'s sample, e.g. \'{"steps": 100}\'')
    parser.add_argument("--draw", type=int, default=0, help="which fresh emulated draw (its generator's offset)")
    parser.add_argument("--num-maps", type=int, default=10_000, help="the training maps of the emulator's run")
    parser.add_argument("--neighbours", type=float, default=0.0, metavar="R",
                        help="also compare with the training maps near each θ (above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulators.get("cosmology_maps", n_pix=args.size, field=args.field, n_gal=None if args.noiseless else 10.0)
    data = map_sets(sim, args.num_maps if args.neighbours > 0 else 10, 10, 3, args.num_samples, args.seed)
    emu = simgen.load(args.emulator)
    with torch.no_grad():
        emulated = emu.sample_batched(args.num_samples, data.theta_check,
                                      generator=torch.Generator().manual_seed(args.seed + 4 + 1000 * args.draw),
                                      **json.loads(args.sample_options))
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
    if args.neighbours > 0:
        for theta, s, e in zip(data.theta_check, simulated.double(), emulated.double(), strict=True):
            print(training_near(sim, data, theta, args.neighbours, s, e), flush=True)


def training_near(sim: simulators.Simulator, data: Any, theta: torch.Tensor, radius: float, simulated: torch.Tensor,
                  emulated: torch.Tensor, reference: int = 200) -> str:
    """The training maps' mean near ``theta`` ``[d_theta]`` as a z-score (see the module docstring), beside the
    emulated maps' mean offset in units of the simulated map mean's spread at ``theta``."""
    span = (data.theta.amax(0) - data.theta.amin(0)).clamp_min(1e-12)
    near = (((data.theta - theta) / span).norm(dim=1) < radius).nonzero()[:, 0]
    spread = simulated.mean((-2, -1)).std()
    offset = float((emulated.mean() - simulated.mean()) / spread)
    if len(near) == 0:
        return f"  no training θ within {radius}; emulated mean off by {offset:+.3f} map-mean sd"
    generator = torch.Generator().manual_seed(12345)
    z = []
    for i in near.tolist():
        means = sim(data.theta[i].expand(reference, -1), generator=generator).double().mean((-2, -1))
        z.append(float((data.x[i].double().mean() - means.mean()) / means.std()))
    z = torch.tensor(z)
    return (f"  {len(near)} training θ within {radius}: their maps' mean z {float(z.mean()):+.3f} ± "
            f"{1 / len(z) ** 0.5:.3f}; emulated mean off by {offset:+.3f} map-mean sd")


if __name__ == "__main__":
    main()
