"""Continuous-time map emulators with and without spectral whitening, against the exact likelihood.

On 16 × 16 ``cosmology_maps`` (Gaussian with shape noise by default; ``--field lognormal`` for the noiseless
lognormal field), simulate ``--num-maps`` training pairs, fit ``LikelihoodEstimator(prior, model=family)`` for each
family in ``--families`` with ``whiten`` in ``--whiten`` (``on``, ``off`` or both) for ``--max-epochs`` epochs,
and report

* gap = E[log p(x | θ) − log q(x | θ)] per pixel ± SE over ``--num-test`` held-out pairs (log q by RK4 on
  ``--log-prob-steps`` steps with the default coloured trace probes; a normalised q cannot make it negative
  beyond noise), and the same gap for the whitening's Gaussian alone (``whiten=on``);
* C_ℓ ratios (emulated over simulated mean binned power spectrum) at ``--num-theta`` prior draws of θ with
  ``--num-samples`` maps each, the worst ratio and the worst |z| of that comparison;
* typicality z: the simulator's exact log-likelihood of emulated against simulated maps (two-sample z);
* training time and epochs, sampling time and network evaluations per map;
* with ``--reference-maps N``: the C_ℓ ratios against the mean spectrum of N simulated maps per θ (close to the
  exact mean, so that only the emulated maps' noise remains), for the emulator and for draws of the whitening's
  Gaussian alone (``whiten=on``): which of the two a departure comes from.

``--options`` passes constructor arguments to the family (e.g. ``'{"schedule": "edm"}'``), ``--sample-steps`` the
sampler's steps.

A JSON file (``--out``) is rewritten after every row.

    OMP_NUM_THREADS=1 python benchmarks/whitened_maps.py --families diffusion,cnf --whiten on,off
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

import simgen
import simulators
from simgen.diagnostics.maps import binned_power_spectrum
from simgen.models import make_model


def pairs(sim: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    theta = sim.prior.sample((n,))
    return theta, sim(theta, generator=torch.Generator().manual_seed(seed))


def whitening_log_prob(emu: Any, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """log q of the whitening's Gaussian alone, in x's units: log N(w; 0, I) + log |det ∂w/∂x|."""
    density = emu.density
    with torch.no_grad():
        u, e, log_det, _ = density._latent_rows(x, theta)
        w, log_det_w = density.density.whitening(u, e)
    d = w[0].numel()
    return -0.5 * w.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi) + log_det_w + log_det


def whitening_power(emu: Any, theta: torch.Tensor, n: int) -> torch.Tensor:
    """Mean binned power spectrum ``[m, bins]`` of n draws per θ of the whitening's Gaussian alone: white noise
    mapped back through W_θ⁻¹ and the estimator's pre-processing."""
    density = emu.density
    with torch.no_grad():
        c_std = density.standardized_context(theta.to(torch.float32))
        context = density.embed(c_std).repeat_interleave(n, 0)
        white = torch.randn(len(context), *density.density.y_shape, generator=torch.Generator().manual_seed(5))
        latent = density.density.whitening.inverse(white, context)
        maps = density.from_latent(latent.reshape(len(theta), n, *latent.shape[1:]), c_std)
    return binned_power_spectrum(maps).double().mean(1)


def run(args: argparse.Namespace, family: str, whiten: bool, sim: Any, data: dict[str, Any]) -> dict[str, Any]:
    theta, x = data["train"]
    emu = simgen.LikelihoodEstimator(sim.prior, model=make_model(family, {"whiten": whiten, **args.options}))
    start = time.perf_counter()
    history = emu.fit(theta, x, seed=args.seed, progress=False, max_epochs=args.max_epochs)
    row: dict[str, Any] = dict(family=family, whiten=whiten, epochs=history.epochs,
                               train_s=time.perf_counter() - start)
    theta_t, x_t = data["test"]
    exact = sim.log_likelihood(theta_t, x_t)
    pixels = x_t[0].numel()
    if whiten:
        diff = (exact - whitening_log_prob(emu, x_t, theta_t).double()) / pixels
        row["whitening_gap"], row["whitening_gap_se"] = diff.mean().item(), (diff.std() / len(diff) ** 0.5).item()
    start = time.perf_counter()
    log_q = torch.cat([emu.log_prob(x_t[i:i + 50], theta_t[i:i + 50], method="rk4", steps=args.log_prob_steps)
                       for i in range(0, len(x_t), 50)]).double()
    diff = (exact - log_q) / pixels
    row.update(gap=diff.mean().item(), gap_se=(diff.std() / len(diff) ** 0.5).item(),
               log_prob_s=time.perf_counter() - start)
    theta_c, simulated = data["compare"]
    n = args.num_samples
    start = time.perf_counter()
    steps = {} if args.sample_steps is None else {"steps": args.sample_steps}
    emulated = emu.sample_batched(n, theta_c, generator=torch.Generator().manual_seed(4), **steps)
    row.update(sample_s=time.perf_counter() - start, nfe=emu.density.density.last_nfe)
    ps_sim, ps_emu = binned_power_spectrum(simulated).double(), binned_power_spectrum(emulated).double()
    ratio = ps_emu.mean(1) / ps_sim.mean(1)
    se = ratio * ((ps_sim.var(1) / ps_sim.mean(1) ** 2 + ps_emu.var(1) / ps_emu.mean(1) ** 2) / n).sqrt()
    worst = (ratio - 1).abs().argmax()
    row.update(c_ell_ratio=ratio.tolist(), worst_c_ell_ratio=ratio.flatten()[worst].item(),
               worst_c_ell_z=((ratio - 1).abs() / se).max().item())
    if "reference" in data:
        reference = data["reference"]
        row["c_ell_vs_reference"] = (ps_emu.mean(1) / reference).tolist()
        if whiten:
            row["whitening_c_ell_vs_reference"] = (whitening_power(emu, theta_c, n) / reference).tolist()
    rows = theta_c.repeat_interleave(n, 0)
    ll_emu = sim.log_likelihood(rows, emulated.reshape(-1, *x.shape[1:]))
    ll_sim = sim.log_likelihood(rows, simulated.reshape(-1, *x.shape[1:]))
    row["typicality_z"] = ((ll_emu.mean() - ll_sim.mean()) / ((ll_emu.var() + ll_sim.var()) / len(rows)).sqrt()).item()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="diffusion,cnf")
    parser.add_argument("--whiten", default="on,off")
    parser.add_argument("--field", default="gaussian", choices=["gaussian", "lognormal"])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--num-maps", type=int, default=4_000)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--log-prob-steps", type=int, default=10)
    parser.add_argument("--num-theta", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", type=json.loads, default={}, help="the family's arguments as JSON")
    parser.add_argument("--sample-steps", type=int, default=None, help="sampler steps (default: the family's)")
    parser.add_argument("--reference-maps", type=int, default=0,
                        help="also compare C_ℓ with the mean of this many simulated maps per θ (0: no)")
    parser.add_argument("--out", default="whitened_maps.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"simgen {simgen.__version__}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"cosmology {args.field}, {args.size}x{args.size}; {args.num_maps} training maps, {args.max_epochs} epochs",
          flush=True)
    sim = simulators.get("cosmology_maps", n_pix=args.size, field=args.field,
                         n_gal=10.0 if args.field == "gaussian" else None)
    theta_c, _ = pairs(sim, args.num_theta, args.seed + 2)
    n = args.num_samples
    simulated = sim(theta_c.repeat_interleave(n, 0), generator=torch.Generator().manual_seed(args.seed + 3))
    data = dict(train=pairs(sim, args.num_maps, args.seed), test=pairs(sim, args.num_test, args.seed + 1),
                compare=(theta_c, simulated.reshape(args.num_theta, n, *simulated.shape[1:])))
    if args.reference_maps:
        many = sim(theta_c.repeat_interleave(args.reference_maps, 0),
                   generator=torch.Generator().manual_seed(args.seed + 9))
        data["reference"] = binned_power_spectrum(
            many.reshape(args.num_theta, args.reference_maps, *many.shape[1:])).double().mean(1)
    rows = []
    for family in args.families.split(","):
        for whiten in args.whiten.split(","):
            row = run(args, family, whiten == "on", sim, data)
            rows.append(row)
            extra = (f"whitening alone {row['whitening_gap']:.4f} ± {row['whitening_gap_se']:.4f}; "
                     if "whitening_gap" in row else "")
            print(f"{family:9s} whiten={whiten:3s}  gap {row['gap']:.4f} ± {row['gap_se']:.4f} nats/pixel; {extra}"
                  f"worst C_ℓ ratio {row['worst_c_ell_ratio']:.3f} (|z| ≤ {row['worst_c_ell_z']:.1f}); typicality "
                  f"z {row['typicality_z']:+.2f}; {row['epochs']} epochs in {row['train_s']:.0f} s; "
                  f"{n * args.num_theta} maps in {row['sample_s']:.0f} s ({row['nfe']} evaluations each)", flush=True)
            for key in ("c_ell_vs_reference", "whitening_c_ell_vs_reference"):
                if key in row:
                    lowest = ", ".join(f"{r[0]:.3f}/{r[1]:.3f}" for r in row[key])
                    print(f"    {key}: lowest two ℓ bins per θ {lowest}", flush=True)
            with open(args.out, "w") as f:
                json.dump(dict(args=vars(args), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
