"""Map emulators against the exact likelihood: held-out gap, power spectrum, peak counts and cost per family.

On ``cosmology_maps`` (``--size`` × ``--size``; Gaussian with shape noise by default, ``--noiseless``,
``--field lognormal`` for the noiseless shifted-lognormal field) or on ``--sim powerlaw`` (a stationary Gaussian
field with P(k) = A (k / k₁)^(−n), θ = (ln A, n) ~ U[−1, 1] × U[2, 4], exact likelihood: steep red spectra such
as k⁻³), simulate ``--num-maps`` training pairs (θ from the prior, fixed seed) and ``--num-test`` held-out pairs,
fit each family as ``LikelihoodEstimator(prior, model=family)`` with no other settings (unless
``--max-time`` or ``--fit-settings`` change its training), and report

* gap = E[log p(x | θ) − log q(x | θ)] per pixel over the held-out pairs ± its standard error (nats/pixel; the
  exact log p is the simulator's; a normalised q cannot make it negative beyond noise); for a family whose log q
  is an ODE solve with probed traces (diffusion, CNF) over the first ``--num-test-ode`` of them, since each
  solve costs hundreds of network passes and their gradients;
* worst C_ℓ ratio: the emulated over the simulated mean binned power spectrum at ``--num-theta`` prior draws of
  θ, ``--num-samples`` maps each, the bin furthest from 1 and its two-sample |z|, and the number of (θ, bin)
  pairs off by more than 5 % *and* 3 standard errors of the ratio (``SpectrumComparison.bad_bins``, the check
  ``simgen run`` makes; per-bin ratios and z-scores go to the JSON);
* peak-count |z|: the largest two-sample z-score of the mean peak counts per height bin over those θ;
* one-point PDF |z|: the same for the pixel histogram (20 bins of κ / σ over [−4, 6], σ the simulated maps'
  pixel standard deviation), and for the skewness and excess kurtosis of the pixels;
* training time, epochs, time to sample 1,000 maps at one θ, and network evaluations per map when sampling;
* with ``--spectrum-grid N``, the conditional spectrum where it is hardest to learn: at the 8 corners of the
  prior's box (2 % of each range inside) and at 12 prior draws (the interior), N emulated and N simulated maps
  each, the mean |ratio − 1| of the pixel variance (what the one-point PDF feels) and the RMS over radii |k| of
  log(P_emulated / P_simulated) (``radial_power``), beside the same between two simulated sets (their noise);
* with ``--null-pairs N``, first the 95th percentiles of these statistics over N pairs of independent simulated
  sets (the simulator against itself): the values beyond which an emulator's differ from the simulator's;
* for a diffusion or CNF on whitened maps, the same statistics of its whitening alone (``whitening_*`` in the
  JSON): what a network that adds nothing would emulate.

Families: ``mapflow`` (:class:`~simgen.models.MapFlow`, what ``model="flow"`` builds for maps), ``flow`` (the
spline flow :class:`~simgen.models.Flow` on flattened pixels), ``maf`` (the package's MAF on flattened pixels),
any other registered model string (resolved for maps as the estimator does; ``--model-options`` gives it
constructor arguments), and ``sbi`` (sbi's NLE with
its MAF on flattened pixels; sbi standardises x itself). A JSON file (``--out``) is rewritten after every row;
``--save-dir`` keeps the trained emulators and ``--load-dir`` evaluates kept ones again.

    OMP_NUM_THREADS=1 python benchmarks/map_emulators.py --families mapflow,flow --size 16 --num-maps 10000
    OMP_NUM_THREADS=1 python benchmarks/map_emulators.py --families mapflow --field lognormal --noiseless
    OMP_NUM_THREADS=1 python benchmarks/map_emulators.py --families mapflow --sim powerlaw
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import torch
from _common import map_sets
from tqdm.auto import tqdm

import simgen
import simulators
from simgen.diagnostics import SpectrumComparison
from simgen.diagnostics.maps import binned_power_spectrum, moments, peak_counts, pixel_histogram
from simgen.models import VAE, ContinuousFlow, Flow, MapFlow, make_model
from simgen.models.fourier import radial_modes, radial_power
from simgen.transforms import support_bounds


class PowerLawField:
    r"""A stationary Gaussian field on an N × N torus with P(k) = e^{θ₀} (|k| / 1)^{−θ₁} per pixel (the DC mode
    at |k| = ½), θ ~ U[−1, 1] × U[2, 4]; log p(x | θ) = −½ Σ_k [|X_k|² / (N² P_k) + ln(2π P_k)], X = fft2(x)."""

    x_kind = "map"
    tractable = True

    def __init__(self, n_pix: int) -> None:
        self.n_pix = n_pix
        self.prior = torch.distributions.Independent(
            torch.distributions.Uniform(torch.tensor([-1.0, 2.0]), torch.tensor([1.0, 4.0])), 1)
        k = torch.fft.fftfreq(n_pix, 1.0 / n_pix).double()
        radius = torch.hypot(k[:, None], k[None, :])
        radius[0, 0] = 0.5
        self.log_radius = radius.log()

    def _log_power(self, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.double()
        return theta[:, :1, None] - theta[:, 1:, None] * self.log_radius

    def __call__(self, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        white = torch.randn(len(theta), self.n_pix, self.n_pix, generator=generator, dtype=torch.float64)
        amplitude = (0.5 * self._log_power(theta)).exp()
        return torch.fft.ifft2(amplitude * torch.fft.fft2(white)).real.float()

    def log_likelihood(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_power = self._log_power(theta)
        power = torch.fft.fft2(x.double()).abs() ** 2 / self.n_pix**2
        return -0.5 * (power / log_power.exp() + log_power + math.log(2 * math.pi)).sum((-2, -1))


def make_simulator(args: argparse.Namespace) -> Any:
    if args.sim == "powerlaw":
        return PowerLawField(args.size)
    return simulators.get("cosmology_maps", n_pix=args.size, field=args.field,
                          n_gal=None if args.noiseless else 10.0)


class SbiEmulator:
    """sbi's NLE (MAF on flattened pixels) behind the two methods the benchmark calls."""

    log_prob_kind = "exact"

    def __init__(self, prior: Any, x_shape: tuple[int, ...]) -> None:
        from sbi.inference import NLE

        self.inference = NLE(prior, density_estimator="maf", show_progress_bars=False)
        self.x_shape = x_shape
        self.estimator = None
        self.epochs = 0

    def fit(self, theta: torch.Tensor, x: torch.Tensor) -> None:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            self.estimator = self.inference.append_simulations(theta, x.reshape(len(x), -1)).train(
                show_train_summary=False)
        self.epochs = self.inference._summary["epochs_trained"][-1]

    def log_prob(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.estimator.log_prob(xb.reshape(1, len(xb), -1), condition=tb)[0]
                              for xb, tb in zip(x.split(1000), theta.split(1000), strict=True)])

    def sample_batched(self, n: int, thetas: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = self.estimator.sample((n,), condition=thetas)  # [n, m, d]
        return y.transpose(0, 1).reshape(len(thetas), n, *self.x_shape)


def family_model(name: str, mapflow_config: dict[str, Any], options: dict[str, Any] | None = None) -> Any:
    """What ``model=`` gets for family ``name``; ``options`` (constructor arguments) build a registered family
    other than the three named here."""
    # a Flow object, not the string: model="flow" on maps resolves to the map flow
    named = {"mapflow": MapFlow(**mapflow_config), "flow": Flow(), "maf": Flow(kind="maf")}
    if name in named:
        return named[name]
    return make_model(name, options) if options else name


def null_row(sim: Any, thetas: torch.Tensor, n: int, pairs: int, seed: int) -> dict[str, Any]:
    """The statistics of :func:`_spectrum_and_peaks` for ``pairs`` pairs of independent simulated sets (``n`` maps
    at each θ of ``thetas``), summarised by their 95th percentiles (``<stat>_q95``): how large each largest |z| and
    the count of C_ℓ bins off get when the emulator is the simulator itself, the threshold against which an
    emulator's values read."""
    g = torch.Generator().manual_seed(seed + 1000)
    keys = ("cl_max_z", "peak_count_max_z", "pixel_pdf_max_z", "skew_kurtosis_max_z", "cl_bins_off")
    values: dict[str, list[float]] = {k: [] for k in keys}
    for _ in tqdm(range(pairs), desc="simulator against itself", leave=False):
        a, b = (torch.stack([sim(t.expand(n, -1), generator=g) for t in thetas]) for _ in range(2))
        stats = _spectrum_and_peaks(a, b)
        # the largest |z| of any C_ℓ bin (an emulator's row gives the |z| of its worst-ratio bin)
        stats["cl_max_z"] = max(abs(z) for row in stats["cl_z"] for z in row)
        for k in keys:
            values[k].append(float(stats[k]))
    return dict(family="simulator against itself", null_pairs=pairs, num_samples=n,
                **{f"{k}_q95": torch.tensor(v, dtype=torch.float64).quantile(0.95).item() for k, v in values.items()})


def whitening_maps(emu: Any, thetas: torch.Tensor, n: int) -> torch.Tensor | None:
    """``n`` maps per θ ``[m, n, *map]`` from a whitened ODE family's whitening alone (w ~ N(0, I) mapped back
    through W_θ⁻¹ and the estimator's standardisation: what a network predicting white noise would emulate), or
    ``None`` for other emulators."""
    if not isinstance(emu, simgen.LikelihoodEstimator):
        return None
    family = emu.density.density
    if not isinstance(family, ContinuousFlow) or family.whitening is None:
        return None
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        maps = []
        for theta in thetas:
            e = emu.density.context(theta[None]).expand(n, -1)
            w = torch.randn(n, *family.y_shape, generator=g)
            maps.append(emu.density.from_latent(family.whitening.inverse(w, e)))
    return torch.stack(maps).float()


def evaluations_per_map(name: str, emu: Any, d: int) -> str:
    """Network evaluations per sampled map, read after a ``sample`` call (a conditioner evaluated once per θ
    counts once; an ODE family's solver counts its own)."""
    if name == "mapflow":
        return "1 (conditioners once per θ; FFTs and splines per map)"
    if name in ("maf", "sbi"):
        return f"{d} (autoregressive inverse)"
    family = emu.density.density
    if isinstance(family, ContinuousFlow):
        return f"{family.last_nfe} (ODE solver)"
    if isinstance(family, VAE):
        return "1 (prior and decoder)"
    return "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="mapflow,flow")
    parser.add_argument("--sim", default="cosmology", choices=["cosmology", "powerlaw"])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--field", default="gaussian", choices=["gaussian", "lognormal"])
    parser.add_argument("--noiseless", action="store_true")
    parser.add_argument("--num-maps", type=int, default=10_000)
    parser.add_argument("--num-test", type=int, default=2_000)
    parser.add_argument("--num-test-ode", type=int, default=200,
                        help="held-out maps for families whose log p is an ODE solve (the first of --num-test)")
    parser.add_argument("--num-theta", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-time", type=float, default=None, help="training time cap per family (s)")
    parser.add_argument("--mapflow-config", default="{}", help='MapFlow arguments as JSON, e.g. \'{"blocks": 1}\'')
    parser.add_argument("--model-options", default="{}",
                        help='constructor arguments of the other simgen families, as JSON, e.g. '
                             '\'{"whiten": "mapflow"}\'')
    parser.add_argument("--estimator-options", default="{}",
                        help='LikelihoodEstimator arguments as JSON, e.g. \'{"log_theta": false}\'')
    parser.add_argument("--fit-settings", default="{}",
                        help='training settings for every simgen family, as JSON, e.g. \'{"patience": 30}\'')
    parser.add_argument("--spectrum-grid", type=int, default=0, metavar="N",
                        help="conditional spectrum at the prior's corners and inside, N maps per θ (0: skip)")
    parser.add_argument("--null-pairs", type=int, default=0,
                        help="also compare this many pairs of simulated sets with each other (the statistics' null)")
    parser.add_argument("--out", default="map_emulators.json")
    parser.add_argument("--save-dir", default=None,
                        help="save each trained simgen emulator there as <family>.pt (load with simgen.load)")
    parser.add_argument("--load-dir", default=None,
                        help="evaluate the emulators a run saved there with --save-dir (same field, size and seed) "
                             "instead of training them; the training time reported is the saved one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = make_simulator(args)
    setting = (f"{args.sim}" + ("" if args.sim == "powerlaw" else f" {args.field}" +
                                (" noiseless" if args.noiseless else " with noise")) + f", {args.size}x{args.size}")
    print(f"simgen {simgen.__version__}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); {setting}; "
          f"{args.num_maps} training maps, {args.num_test} held-out", flush=True)
    data = map_sets(sim, args.num_maps, args.num_test, args.num_theta, args.num_samples, args.seed)
    theta, x, theta_t, x_t, exact = data.theta, data.x, data.theta_test, data.x_test, data.exact
    pixels, theta_c, sim_maps = data.pixels, data.theta_check, data.sim_maps
    rows: list[dict[str, Any]] = []
    if args.null_pairs:
        rows.append(null_row(sim, theta_c, args.num_samples, args.null_pairs, args.seed))
        print("simulator against itself, 95th percentiles over", args.null_pairs, "pairs:",
              ", ".join(f"{k.removesuffix('_q95')} {v:.2f}" for k, v in rows[-1].items() if k.endswith("_q95")),
              flush=True)
    for name in [f for f in args.families.split(",") if f]:
        start = time.perf_counter()
        if name == "sbi":
            emu = SbiEmulator(sim.prior, tuple(x.shape[1:]))
            emu.fit(theta, x)
            epochs, history = emu.epochs, {}
        else:
            if args.load_dir is not None:  # evaluate an emulator trained (and saved) by an earlier run
                emu = simgen.load(os.path.join(args.load_dir, f"{name}.pt"))
                fitted = emu.history
            else:
                model = family_model(name, json.loads(args.mapflow_config), json.loads(args.model_options))
                emu = simgen.LikelihoodEstimator(sim.prior, model=model, **json.loads(args.estimator_options))
                settings = json.loads(args.fit_settings) | ({} if args.max_time is None else
                                                            {"max_time": args.max_time})
                fitted = emu.fit(theta, x, seed=args.seed, progress=False, **settings)
            epochs, history = fitted.epochs, {"best_epoch": fitted.best_epoch,
                                              "validation_loss": fitted.validation_loss}
        train_s = time.perf_counter() - start if args.load_dir is None else fitted.wall_time
        if args.save_dir is not None and args.load_dir is None and name != "sbi":
            os.makedirs(args.save_dir, exist_ok=True)
            emu.save(os.path.join(args.save_dir, f"{name}.pt"))
        held_out = args.num_test_ode if emu.log_prob_kind == "ode" else len(x_t)
        log_q = emu.log_prob(x_t[:held_out], theta_t[:held_out]).double()
        diff = (exact[:held_out] - log_q) / pixels
        gap, se = diff.mean().item(), (diff.std() / len(diff) ** 0.5).item()
        start = time.perf_counter()
        emu.sample_batched(1000, theta_c[:1])
        sample_s = time.perf_counter() - start
        emu_maps = emu.sample_batched(args.num_samples, theta_c).float()
        stats = _spectrum_and_peaks(sim_maps, emu_maps)
        if args.spectrum_grid:
            stats |= spectrum_grid(emu, sim, args.spectrum_grid, args.seed)
        whitening = whitening_maps(emu, theta_c, args.num_samples)
        if whitening is not None:  # what the network adds to its whitening, or takes from it
            stats |= {f"whitening_{k}": v for k, v in _spectrum_and_peaks(sim_maps, whitening).items()
                      if not isinstance(v, list)}
        row = dict(family=name, setting=setting, mapflow_config=args.mapflow_config if name == "mapflow" else None,
                   fit_settings=None if name == "sbi" else args.fit_settings, loaded_from=args.load_dir,
                   estimator_options=None if name == "sbi" else args.estimator_options,
                   model_options=None if name in ("sbi", "mapflow", "flow", "maf") else args.model_options,
                   num_maps=args.num_maps, num_held_out=held_out, gap_per_pixel=gap, gap_se=se,
                   gap_per_map=gap * pixels, **stats,
                   train_seconds=train_s, epochs=epochs, **history, sample_1000_seconds=sample_s,
                   evaluations_per_map=evaluations_per_map(name, emu, pixels), threads=args.threads)
        rows.append(row)
        print(f"{name:>8}: gap {gap:.4f} ± {se:.4f} nats/pixel ({gap * pixels:.2f} nats/map); worst C_l ratio "
              f"{stats['worst_cl_ratio']:.3f} (|z| {stats['worst_cl_z']:.1f}), {stats['cl_bins_off']} of "
              f"{stats['cl_bins']} bins off by > 5 % and > 3 SE; peak |z| {stats['peak_count_max_z']:.1f}; one-point "
              f"PDF |z| {stats['pixel_pdf_max_z']:.1f}, skewness/kurtosis |z| {stats['skew_kurtosis_max_z']:.1f}; "
              + ("" if whitening is None else
                 f"its whitening alone: C_l {stats['whitening_worst_cl_ratio']:.3f} "
                 f"(|z| {stats['whitening_worst_cl_z']:.1f}), peak |z| {stats['whitening_peak_count_max_z']:.1f}, "
                 f"PDF |z| {stats['whitening_pixel_pdf_max_z']:.1f}; ")
              + ("" if not args.spectrum_grid else
                 f"pixel variance off by {stats['grid_corner_variance_error']:.4f} at the prior's corners (max "
                 f"{stats['grid_corner_variance_error_max']:.4f}; noise {stats['grid_null_corner_variance_error']:.4f})"
                 f" and {stats['grid_interior_variance_error']:.4f} inside (noise "
                 f"{stats['grid_null_interior_variance_error']:.4f}), RMS log P(|k|) error "
                 f"{stats['grid_corner_rms_log_power']:.4f} / {stats['grid_interior_rms_log_power']:.4f} (noise "
                 f"{stats['grid_null_corner_rms_log_power']:.4f} / {stats['grid_null_interior_rms_log_power']:.4f}); ")
              + f"train {train_s:.0f} s ({epochs} epochs); "
              f"1000 maps in {sample_s:.2f} s; {row['evaluations_per_map']} net evals/map", flush=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


def spectrum_grid(emu: Any, sim: Any, n: int, seed: int) -> dict[str, float]:
    """The ``--spectrum-grid`` statistics (module docstring) of ``emu`` against ``sim`` with ``n`` maps per θ."""
    lo, hi = support_bounds(sim.prior.support)
    if lo is None or hi is None:
        raise ValueError(f"--spectrum-grid needs a box prior; got support {sim.prior.support}")
    lo, hi = lo.float().expand(sim.prior.event_shape), hi.float().expand(sim.prior.event_shape)
    corners = torch.tensor([[(i >> j) & 1 for j in range(len(lo))] for i in range(2 ** len(lo))]).float()
    g = torch.Generator().manual_seed(seed + 7)
    inside = lo + (hi - lo) * torch.rand(12, len(lo), generator=g)
    thetas = torch.cat([lo + (hi - lo) * (0.02 + 0.96 * corners), inside])
    modes = radial_modes(*sim.x_shape[-2:])

    def spectra(maps: torch.Tensor) -> tuple[float, torch.Tensor]:  # pixel variance, P(|k|) of zero-mean maps
        maps = maps.double().reshape(n, -1, *sim.x_shape[-2:])
        return maps.var().item(), radial_power(maps - maps.mean(0), modes).mean(0)

    rows = []
    for theta in thetas:
        sim_a, sim_b = (spectra(sim(theta.expand(n, -1), generator=g)) for _ in range(2))
        kwargs = {} if isinstance(emu, SbiEmulator) else {"generator": g}
        emulated = spectra(emu.sample_batched(n, theta[None], **kwargs)[0])
        rows.append([abs(emulated[0] / sim_a[0] - 1), torch.log(emulated[1] / sim_a[1]).pow(2).mean().sqrt().item(),
                     abs(sim_b[0] / sim_a[0] - 1), torch.log(sim_b[1] / sim_a[1]).pow(2).mean().sqrt().item()])
    r = torch.tensor(rows)
    k = corners.shape[0]
    out = {}
    for prefix, (var, rms) in (("grid_", (0, 1)), ("grid_null_", (2, 3))):
        out |= {f"{prefix}corner_variance_error": r[:k, var].mean().item(),
                f"{prefix}corner_variance_error_max": r[:k, var].max().item(),
                f"{prefix}interior_variance_error": r[k:, var].mean().item(),
                f"{prefix}corner_rms_log_power": r[:k, rms].mean().item(),
                f"{prefix}interior_rms_log_power": r[k:, rms].mean().item()}
    return out


def _spectrum_and_peaks(sim_maps: torch.Tensor, emu_maps: torch.Tensor) -> dict[str, Any]:
    """Worst ratio of the mean binned power spectra (and its |z|), the bins off by > 5 % and > 3 SE, and the
    largest |z| of the mean peak counts, of the pixel histogram and of the pixels' skewness and kurtosis, over θ
    (sets ``[n_θ, n, *map]``)."""
    def z_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        var = a.var(1) / a.shape[1] + b.var(1) / b.shape[1]
        return torch.where(var > 0, (b.mean(1) - a.mean(1)) / var.clamp_min(1e-30).sqrt(), torch.zeros_like(var))

    ps_sim, ps_emu = binned_power_spectrum(sim_maps).double(), binned_power_spectrum(emu_maps).double()
    ratio = ps_emu.mean(1) / ps_sim.mean(1)
    worst = (ratio - 1).abs().argmax()
    loc, scale = sim_maps.mean(), sim_maps.std()
    peaks_sim = peak_counts((sim_maps - loc) / scale, sigma_ref=1.0).double()
    peaks_emu = peak_counts((emu_maps - loc) / scale, sigma_ref=1.0).double()
    pdf_sim = pixel_histogram((sim_maps - loc) / scale, sigma_ref=1.0).double()
    pdf_emu = pixel_histogram((emu_maps - loc) / scale, sigma_ref=1.0).double()
    moments_sim, moments_emu = moments(sim_maps)[..., 1:].double(), moments(emu_maps)[..., 1:].double()
    cl_z = z_scores(ps_sim, ps_emu)
    off = SpectrumComparison.from_spectra(ps_sim, ps_emu).bad_bins()
    return dict(worst_cl_ratio=ratio.reshape(-1)[worst].item(), worst_cl_z=cl_z.abs().reshape(-1)[worst].item(),
                cl_bins_off=int(off.sum()), cl_bins=off.numel(), cl_ratio=ratio.tolist(), cl_z=cl_z.tolist(),
                peak_count_max_z=z_scores(peaks_sim, peaks_emu).abs().max().item(),
                pixel_pdf_max_z=z_scores(pdf_sim, pdf_emu).abs().max().item(),
                skew_kurtosis_max_z=z_scores(moments_sim, moments_emu).abs().max().item())


if __name__ == "__main__":
    main()
