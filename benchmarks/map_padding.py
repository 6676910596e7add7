"""How the U-Net's padding (``padding_mode="circular"`` or ``"zeros"``) changes a trained diffusion map emulator.

Fits the small U-Net emulator of ``map_log_prob_estimators.py`` (:func:`fit_emulator`: ``--num-train``
``cosmology_maps``, seed 0, at most ``--max-time`` s) with ``--padding-mode`` (or ``--load``s one), then reports

* gap = mean_i [log p(x_i | θ_i) − log p̂(x_i | θ_i)] per pixel ± standard error on ``--num-test`` held-out
  pairs (seed 123), coloured probes (two groups, independent per row), RK4 on ``--steps`` steps;
* the emulated over simulated mean binned power spectrum per bin at ``--num-theta`` prior draws of θ,
  ``--num-samples`` maps each (the family's deterministic Heun sampler, 25 steps = 49 evaluations);
* shift invariance: |log p̂(x | θ) − log p̂(roll(x, s) | θ)| for each of ``--shifts`` s (pixels) on the first
  ``--num-shift`` held-out maps, exact trace (no probe noise), RK4 on ``--shift-steps`` steps. The simulated
  field is periodic and stationary, so the exact log p is shift-invariant; a circular-padding U-Net commutes
  with shifts by multiples of its down-sampling stride (2 per level), not exactly with a one-pixel shift.

The JSON (``--out``) is rewritten after each part. Train the two paddings as two processes in parallel:

    OMP_NUM_THREADS=1 python benchmarks/map_padding.py --padding-mode circular --out padding_circular.json
    OMP_NUM_THREADS=1 python benchmarks/map_padding.py --padding-mode zeros --out padding_zeros.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch
from map_log_prob_estimators import fit_emulator, held_out

import simgen
import simulators
from simgen.diagnostics.maps import binned_power_spectrum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--padding-mode", default="circular", choices=["circular", "zeros"])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0, help="training seed (the maps are the same for every seed)")
    parser.add_argument("--max-time", type=float, default=600.0)
    parser.add_argument("--num-test", type=int, default=30)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--num-theta", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--num-shift", type=int, default=3)
    parser.add_argument("--shifts", default="1,2", help="pixel shifts along the last axis, comma-separated")
    parser.add_argument("--shift-steps", type=int, default=8)
    parser.add_argument("--load", default=None)
    parser.add_argument("--save", default=None)
    parser.add_argument("--out", default="map_padding.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sim = simulators.get("cosmology_maps", n_pix=args.size)
    result: dict[str, Any] = dict(padding_mode=args.padding_mode, size=args.size, num_train=args.num_train,
                                  seed=args.seed)

    def dump(part: str, seconds: float, **values: Any) -> None:
        result.update(values)
        result[f"{part}_seconds"] = seconds
        print(json.dumps({k: v for k, v in values.items()}), f"({part}: {seconds:.0f} s)", flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    start = time.perf_counter()
    if args.load:
        emu, epochs = simgen.load(args.load), None
    else:
        emu, epochs = fit_emulator(sim, "diffusion", args.num_train, args.max_time, args.padding_mode,
                                   args.seed)
        if args.save:
            emu.save(args.save)
    family = emu.density.density
    assert family.padding_mode == args.padding_mode, (family.padding_mode, args.padding_mode)
    dump("train", time.perf_counter() - start, epochs=epochs, max_time=args.max_time)

    theta, x, exact, c_std, u, logdet, context = held_out(sim, emu, args.num_test)
    d = math.prod(sim.x_shape)
    family.trace_probes = "coloured"
    start = time.perf_counter()
    with torch.no_grad():
        logp, _ = family.log_prob_with_se(u, context, num_probes=2, method="rk4", steps=args.steps)
    gap = (exact - (logp + logdet).double()) / d
    dump("gap", time.perf_counter() - start, gap_per_pixel=gap.mean().item(),
         gap_se=(gap.std() / math.sqrt(len(gap))).item(), num_test=args.num_test, log_prob_nfe=family.last_nfe)

    start = time.perf_counter()
    theta_c, _ = simgen.simulate(sim, sim.prior, args.num_theta, seed=7, progress=False)
    g = torch.Generator().manual_seed(8)
    sim_maps = torch.stack([sim(t.expand(args.num_samples, -1), generator=g) for t in theta_c])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        emu_maps = emu.sample_batched(args.num_samples, theta_c).float()
    ps_sim, ps_emu = binned_power_spectrum(sim_maps).double(), binned_power_spectrum(emu_maps).double()
    ratio = ps_emu.mean(1) / ps_sim.mean(1)  # [num_theta, bins]
    z = (ps_emu.mean(1) - ps_sim.mean(1)) / (ps_sim.var(1) / args.num_samples
                                              + ps_emu.var(1) / args.num_samples).sqrt()
    worst = (ratio - 1).abs().argmax()
    dump("spectrum", time.perf_counter() - start, theta_spectrum=theta_c.tolist(), cl_ratio=ratio.tolist(),
         cl_z=z.tolist(), worst_cl_ratio=ratio.reshape(-1)[worst].item(), worst_cl_z=z.reshape(-1)[worst].item(),
         num_samples=args.num_samples, sample_nfe=family.last_nfe)

    start = time.perf_counter()
    k, shifts = args.num_shift, [int(s) for s in args.shifts.split(",")]
    maps = torch.cat([x[:k]] + [x[:k].roll(s, dims=-1) for s in shifts])
    u_shift, logdet_shift = emu.density.to_latent(maps, c_std[:k].repeat(1 + len(shifts), 1))
    logp = family.log_prob(u_shift, context[:k].repeat(1 + len(shifts), 1), exact=True, method="rk4",
                           steps=args.shift_steps)
    logp = (logp + logdet_shift).double().reshape(1 + len(shifts), k)
    exact_shift = sim.log_likelihood(theta[:k].repeat(1 + len(shifts), 1), maps).double().reshape(1 + len(shifts), k)
    shift = (logp[1:] - logp[:1]).abs()  # [shifts, k]
    dump("shift", time.perf_counter() - start, shifts=shifts, shift_abs_dlogp=shift.tolist(),
         shift_mean=shift.mean(1).tolist(), shift_exact_abs_dlogp=(exact_shift[1:] - exact_shift[:1]).abs().tolist(),
         shift_gap_per_map=(exact_shift[0] - logp[0]).tolist(), shift_steps=args.shift_steps)

if __name__ == "__main__":
    main()
