"""Training time and accuracy of float32 against mixed-precision training (``TrainingConfig.precision``).

Each case trains the same model from the same seed for a fixed number of epochs (no early stopping) once per
precision and reports seconds per epoch and a held-out loss computed in float32: the test NLL −mean log q for
flows (lower is better), the validation loss for the diffusion emulator (its denoising loss). On a CPU, bfloat16
helps where matrix products dominate and the CPU has bf16 units (AVX512-BF16, AMX); float16 autocast is meant for
GPUs. Quote the machine and its load with the numbers.

    OMP_NUM_THREADS=1 python benchmarks/mixed_precision.py                      # every case, 32 and bf16
    OMP_NUM_THREADS=1 python benchmarks/mixed_precision.py --precisions 32 bf16 16 --cases flow --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

import simgen
import simulators


def _flow(hidden: int):
    def case(precision: str, device: str, epochs: int) -> tuple[float, float]:
        sim = simulators.get("two_moons")
        theta, x = simgen.simulate(sim, sim.prior, 10_000, seed=0, progress=False)
        theta_test, x_test = simgen.simulate(sim, sim.prior, 5_000, seed=123, progress=False)
        post = simgen.PosteriorEstimator(sim.prior, simgen.models.Flow(hidden_features=hidden), device=device)
        history = post.fit(theta, x, seed=0, progress=False, max_epochs=epochs, patience=10 * epochs,
                           precision=precision)
        nll = -post.log_prob(theta_test.to(device), x_test.to(device)).mean().item()
        return history.wall_time / history.epochs, nll
    return case


def _diffusion_maps(precision: str, device: str, epochs: int) -> tuple[float, float]:
    sim = simulators.get("cosmology_maps", n_pix=16)
    theta, x = simgen.simulate(sim, sim.prior, 2_000, seed=0, progress=False)
    emu = simgen.LikelihoodEstimator(sim.prior, "diffusion", device=device)
    history = emu.fit(theta, x, seed=0, progress=False, max_epochs=epochs, patience=10 * epochs, precision=precision)
    return history.wall_time / history.epochs, history.validation_loss[-1]


CASES = {
    "flow": ("NPE spline flow (hidden 64), two_moons, 10^4 sims", _flow(64), 10, "test NLL"),
    "flow256": ("NPE spline flow (hidden 256), two_moons, 10^4 sims", _flow(256), 5, "test NLL"),
    "diffusion": ("diffusion emulator (U-Net), 16x16 maps, 2000 sims", _diffusion_maps, 5, "val loss"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    parser.add_argument("--precisions", nargs="+", choices=("32", "bf16", "16"), default=["32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch {torch.__version__}, {args.threads} thread(s)")
    for name in args.cases:
        title, case, epochs, metric = CASES[name]
        baseline = None
        for precision in args.precisions:
            start = time.perf_counter()
            per_epoch, loss = case(precision, args.device, epochs)
            baseline = baseline or per_epoch
            print(f"{title}, {epochs} epochs, precision {precision:>4}: {per_epoch:.2f} s/epoch "
                  f"({per_epoch / baseline:.2f}x of the first), {metric} {loss:.5f} "
                  f"[{time.perf_counter() - start:.0f} s in all]", flush=True)


if __name__ == "__main__":
    main()
