"""The map VAE's decoder noise: diagonal (white) against Fourier (stationary, learned power spectrum).

On ``cosmology_maps`` (``--size`` × ``--size``, Gaussian field with shape noise, exact likelihood), simulate
``--num-maps`` training pairs (θ from the prior, fixed seed) and ``--num-test`` held-out pairs, fit
``LikelihoodEstimator(prior, VAE(decoder_noise=...))`` for each decoder under the same training time cap
(``--max-time`` seconds), and report

* gap = E[log p(x | θ) − log p̂_K(x | θ)] per pixel over the held-out pairs ± its standard error (nats/pixel),
  p̂_K the IWAE estimate at K = ``--iwae-samples`` (biased low: the gap includes the IWAE bias);
* the emulated over the simulated mean binned power spectrum (:func:`simgen.diagnostics.maps.binned_power_spectrum`)
  per ℓ bin at ``--num-theta`` prior draws of θ, ``--num-samples`` maps each, with the |z| of each bin;
* the mean KL(q(z | x, θ) ‖ p(z | θ)) over the held-out pairs (nats/map: how much the code z is used);
* training time and epochs.

A JSON file (``--out``) is rewritten after every decoder.

    OMP_NUM_THREADS=1 python benchmarks/vae_map_decoder.py --size 16 --num-maps 10000 --max-time 240
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from _common import map_sets

import simgen
import simulators
from simgen.diagnostics.maps import binned_power_spectrum, power_spectrum_bins
from simgen.models import VAE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoders", default="diagonal,fourier")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--num-maps", type=int, default=10_000)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--iwae-samples", type=int, default=64)
    parser.add_argument("--num-theta", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--max-time", type=float, default=240.0, help="training time cap per decoder (s)")
    parser.add_argument("--kl-warmup-epochs", type=int, default=None, help="VAE kl_warmup_epochs (default: its own)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="vae_map_decoder.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulators.get("cosmology_maps", n_pix=args.size)
    print(f"simgen {simgen.__version__}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"cosmology_maps {args.size}x{args.size} Gaussian with noise; {args.num_maps} training maps, "
          f"{args.num_test} held-out, K = {args.iwae_samples}, cap {args.max_time:.0f} s", flush=True)
    data = map_sets(sim, args.num_maps, args.num_test, args.num_theta, args.num_samples, args.seed)
    theta, x, theta_t, x_t, exact = data.theta, data.x, data.theta_test, data.x_test, data.exact
    pixels, theta_c, sim_maps = data.pixels, data.theta_check, data.sim_maps
    ps_sim = binned_power_spectrum(sim_maps).double()
    ell, _ = power_spectrum_bins(args.size)
    rows: list[dict[str, Any]] = []
    for decoder in args.decoders.split(","):
        options = {} if args.kl_warmup_epochs is None else {"kl_warmup_epochs": args.kl_warmup_epochs}
        emu = simgen.LikelihoodEstimator(sim.prior, VAE(decoder_noise=decoder, iwae_samples=args.iwae_samples,
                                                        **options))
        start = time.perf_counter()
        history = emu.fit(theta, x, seed=args.seed, progress=False, max_time=args.max_time)
        train_s = time.perf_counter() - start
        with torch.no_grad():
            log_q = emu.log_prob(x_t, theta_t, generator=torch.Generator().manual_seed(args.seed + 4)).double()
            emu_maps = emu.sample_batched(args.num_samples, theta_c, generator=torch.Generator().manual_seed(5))
            density = emu.density  # the VAE sees standardised maps and embedded, standardised θ
            c_std = density.standardized_context(theta_t)
            u, _ = density.to_latent(x_t, c_std)
            c_emb = density.embed(c_std)
            vae = density.density
            kl = torch.distributions.kl_divergence(vae.encode(u, c_emb), vae.prior_distribution(c_emb)).mean().item()
        diff = (exact - log_q) / pixels
        gap, se = diff.mean().item(), (diff.std() / len(diff) ** 0.5).item()
        ps_emu = binned_power_spectrum(emu_maps.float()).double()
        ratio = ps_emu.mean(1) / ps_sim.mean(1)  # [θ, bins]
        z = (ps_emu.mean(1) - ps_sim.mean(1)) / (ps_emu.var(1) / ps_emu.shape[1]
                                                 + ps_sim.var(1) / ps_sim.shape[1]).sqrt()
        row = dict(decoder=decoder, **options, size=args.size, num_maps=args.num_maps, num_test=args.num_test,
                   iwae_samples=args.iwae_samples, gap_per_pixel=gap, gap_se=se, gap_per_map=gap * pixels,
                   ell=ell.tolist(), cl_ratio=ratio.tolist(), cl_z=z.tolist(),
                   worst_cl_ratio=ratio.reshape(-1)[(ratio - 1).abs().argmax()].item(), kl_per_map=kl,
                   train_seconds=train_s, epochs=history.epochs, threads=args.threads)
        rows.append(row)
        print(f"{decoder:>9}: gap {gap:.4f} ± {se:.4f} nats/pixel ({gap * pixels:.1f} nats/map); KL(q‖p) "
              f"{kl:.2f} nats/map; train {train_s:.0f} s ({history.epochs} epochs); worst C_l ratio "
              f"{row['worst_cl_ratio']:.3f}", flush=True)
        print("           C_l ratio per bin (rows: theta): ell = " + " ".join(f"{v:.0f}" for v in ell), flush=True)
        for r, zz in zip(ratio, z, strict=True):
            print("           " + " ".join(f"{v:.3f}" for v in r) + "   |z| max " + f"{zz.abs().max():.1f}",
                  flush=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
