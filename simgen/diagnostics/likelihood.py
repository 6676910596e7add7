r"""A likelihood emulator q(x | θ) against its simulator p(x | θ): two-sample tests per θ, summary statistics,
and the exact-likelihood gap E_p[log p − log q] when the simulator's likelihood is tractable.

The result is a :class:`LikelihoodComparison` from :func:`compare_likelihood`; ``compare_emulator`` and
``EmulatorComparison`` are their former names, kept as deprecated aliases.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..utils import as_tensor, call_simulator, check_positive_int, seeded
from .draws import child_seeds, draw
from .maps import binned_power_spectrum, map_statistics
from .maps import is_map as rows_are_maps
from .two_sample import c2st, mmd

__all__ = ["LikelihoodComparison", "StatisticComparison", "SpectrumComparison", "compare_likelihood",
           "compare_emulator"]

#: former names, still importable with a DeprecationWarning
DEPRECATED_NAMES = {"EmulatorComparison": "LikelihoodComparison"}


@dataclass
class StatisticComparison:
    r"""One summary statistic (k bins) compared between a simulated and an emulated set at each of m θ.

    z_ij = (ē_ij − s̄_ij) / √(v^s_ij/n_s + v^e_ij/n_e): two-sample z-score of bin j's mean at θ_i (≈ N(0, 1) when
    both sets come from one distribution).

    Attributes:
        name: the statistic.
        simulated_mean, emulated_mean: ``[m, k]``.
        simulated_std: ``[m, k]`` spread of the statistic over simulations.
        z: ``[m, k]``.
    """

    name: str
    simulated_mean: Tensor
    emulated_mean: Tensor
    simulated_std: Tensor
    z: Tensor

    @property
    def max_abs_z(self) -> float:
        finite = self.z[torch.isfinite(self.z)]
        return float(finite.abs().max()) if finite.numel() else 0.0

    @property
    def relative_error(self) -> Tensor:
        """``[m, k]``: (ē − s̄)/|s̄| (NaN where s̄ = 0)."""
        return (self.emulated_mean - self.simulated_mean) / self.simulated_mean.abs()


def _compare_statistic(name: str, sim: Tensor, emu: Tensor) -> StatisticComparison:
    """``sim`` ``[m, n_s, k]``, ``emu`` ``[m, n_e, k]`` → :class:`StatisticComparison` (non-finite rows dropped
    per bin)."""
    def stats(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = t.double()
        ok = torch.isfinite(t)
        cnt = ok.sum(1).clamp_min(1)
        z = torch.where(ok, t, 0.0)
        mean = z.sum(1) / cnt
        var = torch.where(ok, (t - mean[:, None]) ** 2, 0.0).sum(1) / (cnt - 1).clamp_min(1)
        return mean, var, cnt

    ms, vs, ns = stats(sim)
    me, ve, ne = stats(emu)
    se = torch.sqrt(vs / ns + ve / ne)
    z = torch.where(se > 0, (me - ms) / se, torch.where(me == ms, 0.0, math.inf))
    return StatisticComparison(name, ms.float(), me.float(), vs.sqrt().float(), z.float())


@dataclass
class SpectrumComparison:
    r"""The binned power spectrum C_b of emulated against simulated maps at each of m θ, bin by bin and in its
    covariance across maps (what cosmological analyses take from an emulator).

    - ratio r_ib = mean_e Ĉ_ib / mean_s Ĉ_ib with its standard error (delta method over the two sets' means);
      bin b agrees when |r_ib − 1| ≤ max(``ratio_tolerance``, 3 SE);
    - the correlation matrices ρ^s_i, ρ^e_i of log Ĉ_b across maps; an off-diagonal entry agrees when
      |ρ^e − ρ^s| ≤ ``correlation_tolerance`` or is within the noise of the two estimates: below z_crit
      standard errors, SE² = ((1 − ρ_s²)² + (1 − ρ_e²)²)/n (Fisher's large-sample variance of a correlation), with
      z_crit the Bonferroni two-sided bound at level ``alpha`` over all entries and θ.

    Attributes:
        ratio, ratio_se: ``[m, k]``.
        correlation_error: ``[m, k, k]`` ρ^e − ρ^s (zero diagonal).
        correlation_se: ``[m, k, k]``.
    """

    ratio: Tensor
    ratio_se: Tensor
    correlation_error: Tensor
    correlation_se: Tensor
    ratio_tolerance: float = 0.05
    correlation_tolerance: float = 0.15
    alpha: float = 0.01

    @classmethod
    def from_spectra(cls, simulated: Tensor, emulated: Tensor, *, alpha: float = 0.01) -> SpectrumComparison:
        """Compare binned power spectra Ĉ ``[m, n_s, k]`` of simulated maps with ``[m, n_e, k]`` of emulated ones at
        the same m θ (e.g. :func:`~simgen.diagnostics.maps.binned_power_spectrum` of each set); ``alpha`` is the
        level of the correlation test (see the class docstring). Rows with a non-finite entry are left out (a
        θ whose rows are all non-finite gets NaN ratios, which :meth:`bad_bins` reports)."""
        if simulated.dim() != 3 or emulated.dim() != 3 or simulated.shape[::2] != emulated.shape[::2]:
            raise ValueError(f"expected spectra [m, n_s, k] and [m, n_e, k] with the same m and k; got "
                             f"{tuple(simulated.shape)} and {tuple(emulated.shape)}")
        def corr(t: Tensor) -> Tensor:  # [n, k] → [k, k] correlation of log Ĉ across the rows
            logs = torch.log(t.clamp_min(1e-300))
            centred = logs - logs.mean(0)
            cov = centred.T @ centred / max(t.shape[0] - 1, 1)
            sd = cov.diagonal().sqrt().clamp_min(1e-300)
            return cov / (sd[:, None] * sd[None, :])

        ratios, ratio_ses, errors, ses = [], [], [], []
        eye = torch.eye(simulated.shape[-1], dtype=torch.bool)
        for sim, emu in zip(simulated.double(), emulated.double(), strict=True):
            # a map with a non-finite spectrum (a NaN or infinite draw) is set aside here; compare_likelihood
            # counts and flags such draws (LikelihoodComparison.non_finite_fraction)
            sim, emu = sim[torch.isfinite(sim).all(1)], emu[torch.isfinite(emu).all(1)]
            ms, me = sim.mean(0), emu.mean(0)
            ratio = me / ms
            rel_var = sim.var(0) / (sim.shape[0] * ms**2) + emu.var(0) / (emu.shape[0] * me**2)
            rs, re = corr(sim), corr(emu)
            ratios.append(ratio)
            ratio_ses.append(ratio.abs() * rel_var.sqrt())
            errors.append(torch.where(eye, 0.0, re - rs))
            ses.append(torch.sqrt((1 - rs**2) ** 2 / sim.shape[0] + (1 - re**2) ** 2 / emu.shape[0]))
        ratio, ratio_se, error, se = (torch.stack(t) for t in (ratios, ratio_ses, errors, ses))
        return cls(ratio.float(), ratio_se.float(), error.float(), se.float(), alpha=alpha)

    @property
    def worst_ratio(self) -> float:
        """The bin ratio farthest from 1 (over θ and bins)."""
        dev = (self.ratio - 1).abs()
        return float(self.ratio.reshape(-1)[dev.reshape(-1).argmax()])

    @property
    def max_correlation_error(self) -> float:
        return float(self.correlation_error.abs().max())

    def bad_bins(self) -> Tensor:
        """``[m, k]`` bins whose ratio is off by more than the tolerance and 3 standard errors, or not finite (no
        finite map on a side)."""
        ok = (self.ratio - 1).abs() <= torch.clamp(3 * self.ratio_se, min=self.ratio_tolerance)
        return ~ok

    def bad_correlations(self) -> Tensor:
        """``[m, k, k]`` off-diagonal entries off by more than the tolerance and the noise bound."""
        from scipy.stats import norm

        k = self.correlation_error.shape[-1]
        tests = self.correlation_error.shape[0] * k * (k - 1) // 2
        z_crit = float(norm.isf(self.alpha / (2 * max(tests, 1))))
        err = self.correlation_error.abs()
        return (err > self.correlation_tolerance) & (err > z_crit * self.correlation_se)

    def reasons(self) -> list[str]:
        out = []
        bad = self.bad_bins()
        if bad.any():
            rows, bins = torch.nonzero(bad, as_tuple=True)
            where = f"θ rows {sorted(set(rows.tolist()))}, bins {sorted(set(bins.tolist()))}"
            out.append(f"power spectrum ratio off by more than {self.ratio_tolerance:.0%} and 3 SE in "
                       f"{int(bad.sum())} bins ({where}; worst ratio {self.worst_ratio:.3f})")
        bad = self.bad_correlations()
        if bad.any():
            out.append(f"log C_ℓ correlations across maps off by more than {self.correlation_tolerance} beyond "
                       f"noise in {int(bad.sum()) // 2} pairs (max error {self.max_correlation_error:.3f})")
        return out


@dataclass
class LikelihoodComparison:
    r"""An emulator q(x | θ) against its simulator p(x | θ) at m parameter rows, n draws of each per row.

    Attributes:
        theta: ``[m, d_theta]``.
        simulated, emulated: ``[m, n, *x_shape]`` the draws compared (kept for plots).
        is_map: whether x was compared as maps.
        c2st: ``[m]`` classifier two-sample accuracy per θ (:func:`c2st`, simulated draws as the reference) on
            the raw x for vectors, on the summary statistics of :func:`map_statistics` for maps (a classifier on
            N² pixels would need far more draws).
        mmd: ``[m]`` :func:`mmd` per θ, on x z-scored by the simulated draws' per-dimension statistics (vectors)
            or by their pixel mean and standard deviation (maps).
        wasserstein: ``[m, k]`` 1-D Wasserstein distance per dimension in units of the simulated standard
            deviation (vectors, k = d_x), or of all pixel values pooled (maps, k = 1).
        ks_pvalues: ``[m, d_x]`` two-sample Kolmogorov–Smirnov p-values per dimension (vectors; ``None`` for maps,
            whose pixels are not independent draws).
        statistics: name → :class:`StatisticComparison`: for maps the power spectrum, peak counts, pixel
            histogram and moments; for vectors each observable's mean and variance.
        log_likelihood_gap: ``[m]`` E_p[log p(x | θ) − log q(x | θ)] in nats, estimated on the simulated draws
            (fresh simulations, so held out from training; ≥ 0 in expectation: the KL divergence
            KL(p(·|θ) ‖ q(·|θ))), or ``None`` without an exact simulator likelihood or emulator ``log_prob``.
        log_likelihood_gap_se: ``[m]`` its standard error.
        spectrum: for maps, the power spectrum bin by bin and its correlations across maps
            (:class:`SpectrumComparison`); ``None`` for vectors.
        simulated_log_likelihood, emulated_log_likelihood: ``[m, n]`` the simulator's exact log p(x | θ) of each
            simulated and emulated draw (``None`` without a tractable simulator): an emulator's draws should be as
            typical under p as the simulator's, and none should be impossible (log p = −∞: outside the
            simulator's support).
        num_dims: dimensions D of x, for the gap per dimension.
        c2st_tolerance: accuracy above which :attr:`flagged` reports a C2ST.
        impossible_tolerance: fraction of emulated draws that are not finite themselves
            (:attr:`non_finite_fraction`), or whose exact log-likelihood is not (:attr:`impossible_fraction`),
            above which :attr:`flagged` reports them.
        alpha: family-wise level of the z-score and KS flags (Bonferroni over all bins and θ rows).
    """

    theta: Tensor
    simulated: Tensor
    emulated: Tensor
    is_map: bool
    c2st: Tensor
    mmd: Tensor
    wasserstein: Tensor
    ks_pvalues: Tensor | None
    statistics: dict[str, StatisticComparison] = field(default_factory=dict)
    log_likelihood_gap: Tensor | None = None
    log_likelihood_gap_se: Tensor | None = None
    spectrum: SpectrumComparison | None = None
    simulated_log_likelihood: Tensor | None = None
    emulated_log_likelihood: Tensor | None = None
    num_dims: int = 1
    c2st_tolerance: float = 0.55
    alpha: float = 0.01
    #: |z| of :attr:`typicality_z` above which the comparison is flagged
    typicality_z_max: float = 4.0
    impossible_tolerance: float = 0.01

    @property
    def gap_nats(self) -> float | None:
        """Mean over θ of the likelihood gap, nats."""
        return None if self.log_likelihood_gap is None else float(self.log_likelihood_gap.mean())

    @property
    def gap_nats_per_dim(self) -> float | None:
        """:attr:`gap_nats` / D."""
        return None if self.gap_nats is None else self.gap_nats / self.num_dims

    @property
    def non_finite_fraction(self) -> Tensor:
        """``[m]`` fraction of the emulated draws with a NaN or infinite value: a broken draw, set aside from every
        statistic of the comparison and flagged above ``impossible_tolerance``."""
        return (~_finite_draws(self.emulated)).float().mean(1)

    @property
    def impossible_fraction(self) -> Tensor | None:
        """``[m]`` fraction of the emulated draws, finite themselves, whose exact log-likelihood is not finite
        (−∞: a draw the simulator cannot produce; ``None`` without a tractable simulator)."""
        if self.emulated_log_likelihood is None:
            return None
        return (~torch.isfinite(self.emulated_log_likelihood) & _finite_draws(self.emulated)).float().mean(1)

    @property
    def typicality_z(self) -> Tensor | None:
        r"""``[m]`` two-sample z-score of the mean exact log-likelihood of emulated against simulated draws,
        (ē − s̄)/√(v_s/n_s + v_e/n_e), over the draws whose log-likelihood is finite (the others are counted by
        :attr:`impossible_fraction`); NaN for a θ with fewer than two such draws on a side (``None`` without a
        tractable simulator)."""
        if self.simulated_log_likelihood is None or self.emulated_log_likelihood is None:
            return None
        z = []
        for s, e in zip(self.simulated_log_likelihood.double(), self.emulated_log_likelihood.double(), strict=True):
            s, e = s[torch.isfinite(s)], e[torch.isfinite(e)]
            if len(s) < 2 or len(e) < 2:
                z.append(torch.tensor(float("nan"), dtype=torch.float64))
                continue
            se = torch.sqrt(s.var() / len(s) + e.var() / len(e)).clamp_min(1e-300)
            z.append((e.mean() - s.mean()) / se)
        return torch.stack(z).float()

    def reasons(self) -> list[str]:
        """What the tests reject, in words (empty when nothing is flagged)."""
        from scipy.stats import norm

        out = []
        broken = self.non_finite_fraction
        if bool((broken > self.impossible_tolerance).any()):
            rows = torch.nonzero(broken > self.impossible_tolerance).flatten().tolist()
            out.append(f"emulated draws with NaN or infinite values: {100 * float(broken.max()):.1f} % at θ rows "
                       f"{rows} (tolerance {100 * self.impossible_tolerance:g} %; set aside from the other checks)")
        impossible = self.impossible_fraction
        if impossible is not None and bool((impossible > self.impossible_tolerance).any()):
            rows = torch.nonzero(impossible > self.impossible_tolerance).flatten().tolist()
            out.append(f"emulated draws the simulator cannot produce (exact log p not finite): "
                       f"{100 * float(impossible.max()):.1f} % at θ rows {rows} (tolerance "
                       f"{100 * self.impossible_tolerance:g} %)")
        z = self.typicality_z
        if z is not None and bool(torch.isnan(z).any()):
            out.append(f"exact log-likelihood of emulated draws: fewer than two finite values at θ rows "
                       f"{torch.nonzero(torch.isnan(z)).flatten().tolist()}")
        if z is not None and bool((z.abs() > self.typicality_z_max).any()):
            out.append(f"exact log-likelihood of emulated draws: |z| {float(z.abs().max()):.2f} > "
                       f"{self.typicality_z_max:g}")
        if self.spectrum is not None:
            out.extend(self.spectrum.reasons())
        bad = torch.nonzero(self.c2st > self.c2st_tolerance).flatten().tolist()
        if bad:
            out.append(f"C2ST > {self.c2st_tolerance} at θ rows {bad} (max {float(self.c2st.max()):.3f})")
        total = sum(s.z.numel() for s in self.statistics.values())
        if total:
            z_crit = float(norm.isf(self.alpha / (2 * total)))
            for s in self.statistics.values():
                if s.max_abs_z > z_crit:
                    out.append(f"{s.name}: max |z| {s.max_abs_z:.2f} > {z_crit:.2f}")
        if self.ks_pvalues is not None:
            p_min = float(self.ks_pvalues.min())
            if p_min < self.alpha / self.ks_pvalues.numel():
                out.append(f"per-dimension KS: smallest p-value {p_min:.3g}")
        return out

    @property
    def flagged(self) -> bool:
        return bool(self.reasons())

    def summary(self) -> str:
        text = (f"emulator vs simulator at {self.theta.shape[0]} θ, {self.simulated.shape[1]} draws each: "
                f"C2ST {float(self.c2st.mean()):.3f} (max {float(self.c2st.max()):.3f}), "
                f"MMD² {float(self.mmd.mean()):.3g}, W1/σ {float(self.wasserstein.mean()):.3f}")
        if self.gap_nats is not None:
            text += f", likelihood gap {self.gap_nats:.3f} nats ({self.gap_nats_per_dim:.2g} per dimension)"
        if self.spectrum is not None:
            text += (f", worst C_ℓ ratio {self.spectrum.worst_ratio:.3f}, log C_ℓ correlations within "
                     f"{self.spectrum.max_correlation_error:.3f}")
        broken = float(self.non_finite_fraction.max())
        if broken > 0:
            text += f", {100 * broken:.1f} % of emulated draws not finite"
        if self.typicality_z is not None:
            z_max = float(self.typicality_z.abs().nan_to_num(torch.inf).max())
            text += f", exact log p of emulated draws |z| ≤ {z_max:.2f}"
            impossible = float(self.impossible_fraction.max())
            if impossible > 0:
                text += f" ({100 * impossible:.1f} % of them impossible)"
        reasons = self.reasons()
        return text + ("; FLAGGED: " + "; ".join(reasons) if reasons else "; nothing flagged")

    def table(self) -> list[dict[str, Any]]:
        """One row per θ: C2ST, MMD², mean W1/σ, likelihood gap (for reports)."""
        rows = []
        for i in range(self.theta.shape[0]):
            row: dict[str, Any] = {"theta": ", ".join(f"{v:.3g}" for v in self.theta[i].tolist()),
                                   "C2ST": float(self.c2st[i]), "MMD²": float(self.mmd[i]),
                                   "W1/σ": float(self.wasserstein[i].mean())}
            if self.log_likelihood_gap is not None:
                row["gap (nats)"] = float(self.log_likelihood_gap[i])
                row["gap SE"] = float(self.log_likelihood_gap_se[i])
                row["gap/dim"] = float(self.log_likelihood_gap[i]) / self.num_dims
            if self.spectrum is not None:
                dev = (self.spectrum.ratio[i] - 1).abs()
                row["worst C_ℓ ratio"] = float(self.spectrum.ratio[i][dev.argmax()])
                row["max Δρ(log C_ℓ)"] = float(self.spectrum.correlation_error[i].abs().max())
            typical = self.typicality_z
            if typical is not None:
                row["log p z"] = float(typical[i])
                row["impossible"] = float(self.impossible_fraction[i])
            row["not finite"] = float(self.non_finite_fraction[i])
            rows.append(row)
        return rows


def compare_likelihood(
    emulator: Any,
    simulator: Any,
    theta: Any,
    *,
    num_samples: int = 1000,
    spectrum_samples: int | None = None,
    gap: bool | None = None,
    c2st_tolerance: float = 0.55,
    alpha: float = 0.01,
    seed: int | None = None,
) -> LikelihoodComparison:
    r"""Emulated against simulated draws at given θ rows (see :class:`LikelihoodComparison`).

    Args:
        emulator: ``sample_batched(n, thetas)`` → ``[m, n, *x_shape]``; for the gap also ``log_prob(x, theta)``
            → ``[n]`` (a :class:`~simgen.LikelihoodEstimator`).
        simulator: ``simulator(theta)`` → ``[n, *x_shape]``; with ``tractable`` true and ``log_likelihood(theta,
            x)`` the likelihood gap is computed; ``x_kind`` (when present) says whether x is a map.
        theta: ``[m, d_theta]`` (or ``[d_theta]``) parameters to compare at.
        num_samples: draws n of each per θ.
        spectrum_samples: draws of each per θ for the power-spectrum comparison of maps
            (:class:`SpectrumComparison`: bin ratios and the correlations of log C_ℓ across maps); above
            ``num_samples`` the extra maps are drawn in chunks and only their spectra are kept. A correlation
            estimated from n maps has a standard error of about 1/√n, so the largest of the m k(k − 1)/2 errors
            is noise-dominated at a few hundred maps and needs thousands to resolve a 0.1 difference. ``None``
            (or a value at most ``num_samples``): the ``num_samples`` draws.
        gap: compute the likelihood gap (``None``: when the simulator is tractable and the emulator has
            ``log_prob``).
        c2st_tolerance: C2ST accuracy above which the comparison is flagged.
        alpha: family-wise level of the other flags.
        seed: makes the draws reproducible.

    Returns:
        :class:`LikelihoodComparison`.
    """
    from scipy.stats import ks_2samp, wasserstein_distance

    theta = as_tensor(theta, "theta")
    if theta.dim() == 1:
        theta = theta[None]
    if theta.dim() != 2:
        raise ValueError(f"theta must be [m, d_theta] or [d_theta]; got {list(theta.shape)}")
    if num_samples < 5:
        raise ValueError(f"num_samples must be >= 5 (C2ST folds); got {num_samples}")
    m, n = theta.shape[0], num_samples
    n_spectrum = n if spectrum_samples is None else check_positive_int(spectrum_samples, "spectrum_samples")
    chunks = [min(n, n_spectrum - s) for s in range(n, n_spectrum, n)]  # extra spectrum-only draws per θ
    # the first two seeds are those of the main draws whatever the number of extra chunks (a seed sequence's
    # states are a stream)
    seeds = [None] * (2 + 2 * len(chunks)) if seed is None else child_seeds(seed, 2 + 2 * len(chunks))
    seed_emu, seed_sim = seeds[:2]
    emulated = draw(emulator, n, theta, seed_emu, m, "emulator")
    simulated = _simulate(simulator, theta, n, seed_sim)
    finite = _finite_draws(emulated)  # [m, n]
    if emulated.shape != simulated.shape:
        raise ValueError(f"emulated draws {list(emulated.shape)} and simulations {list(simulated.shape)} differ "
                         "in shape")
    finite_sim = _finite_draws(simulated)  # [m, n]
    if not bool(finite_sim.all()):  # bad simulator output: reported, and set aside from every statistic below
        rows = torch.nonzero(~finite_sim.all(1)).flatten().tolist()
        warnings.warn(f"the simulator returned {int((~finite_sim).sum())} of {finite_sim.numel()} draws with NaN or "
                      f"infinite values (θ rows {rows}); they are set aside", RuntimeWarning, stacklevel=2)
    if int(finite_sim.sum(1).min()) < 5:
        raise ValueError("compare_likelihood needs at least 5 finite simulations at each θ; the simulator returned "
                         f"{finite_sim.sum(1).tolist()} of {n}")
    x_shape = tuple(simulated.shape[2:])
    is_map = rows_are_maps(x_shape, getattr(simulator, "x_kind", None)) and x_shape[-1] == x_shape[-2]
    num_dims = math.prod(x_shape)

    c2sts, mmds, w1s, kss = [], [], [], []
    statistics: dict[str, StatisticComparison] = {}
    spectrum = None
    if is_map:
        kept = simulated[finite_sim]
        loc, scale = float(kept.mean()), float(kept.std().clamp_min(1e-12))
        side = getattr(simulator, "side", None)
        sim_stats = [map_statistics(simulated[i], loc=loc, scale=scale, side=side) for i in range(m)]
        emu_stats = [map_statistics(emulated[i], loc=loc, scale=scale, side=side) for i in range(m)]
        for name in sim_stats[0]:
            statistics[name] = _compare_statistic(name, torch.stack([s[name] for s in sim_stats]),
                                                  torch.stack([s[name] for s in emu_stats]))
        spectra = [torch.stack([s["power_spectrum"] for s in stats]) for stats in (sim_stats, emu_stats)]
        for j, c in enumerate(chunks):
            extra = (_simulate(simulator, theta, c, seeds[2 + 2 * j]), draw(emulator, c, theta, seeds[3 + 2 * j], m,
                                                                            "emulator"))
            for which, maps in enumerate(extra):
                ps = binned_power_spectrum(maps.reshape(m * c, *x_shape), **({} if side is None else {"side": side}))
                spectra[which] = torch.cat([spectra[which], ps.reshape(m, c, -1)], dim=1)
        spectrum = SpectrumComparison.from_spectra(spectra[0], spectra[1], alpha=alpha)
        for i in range(m):
            if int(finite[i].sum()) < 5:  # too few draws to compare (flagged by non_finite_fraction)
                c2sts.append(math.nan)
                mmds.append(math.nan)
                w1s.append([math.nan])
                continue
            feats = [_c2st_features(st) for st in (emu_stats[i], sim_stats[i])]
            keep = [torch.isfinite(f).all(dim=1) for f in feats]
            c2sts.append(c2st(feats[0][keep[0]], feats[1][keep[1]], seed=seed if seed is not None else 1))
            es, ss = (emulated[i][finite[i]] - loc) / scale, (simulated[i][finite_sim[i]] - loc) / scale
            mmds.append(mmd(es, ss))
            w1s.append([wasserstein_distance(es.reshape(-1).numpy(), ss.reshape(-1).numpy())])
        ks_pvalues = None
    else:
        flat_e, flat_s = emulated.reshape(m, n, -1), simulated.reshape(m, n, -1)
        # a broken emulated draw is set aside (the statistics drop non-finite rows themselves)
        kept_e = torch.where(finite[..., None], flat_e, torch.nan)
        kept_s = torch.where(finite_sim[..., None], flat_s, torch.nan)
        statistics["mean"] = _compare_statistic("mean", kept_s, kept_e)
        statistics["variance"] = _compare_statistic(  # mean squared deviation from each set's own mean
            "variance", (kept_s - kept_s.nanmean(1, keepdim=True)) ** 2,
            (kept_e - kept_e.nanmean(1, keepdim=True)) ** 2)
        for i in range(m):
            if int(finite[i].sum()) < 5:  # too few draws to compare (flagged by non_finite_fraction)
                c2sts.append(math.nan)
                mmds.append(math.nan)
                w1s.append([math.nan] * flat_s.shape[-1])
                kss.append([math.nan] * flat_s.shape[-1])
                continue
            si = flat_s[i][finite_sim[i]]
            mean, std = si.mean(0), si.std(0).clamp_min(1e-12)
            es, ss = (flat_e[i][finite[i]] - mean) / std, (si - mean) / std
            c2sts.append(c2st(flat_e[i][finite[i]], si, seed=seed if seed is not None else 1))
            mmds.append(mmd(es, ss))
            w1s.append([wasserstein_distance(es[:, j].numpy(), ss[:, j].numpy()) for j in range(es.shape[1])])
            kss.append([ks_2samp(es[:, j].numpy(), ss[:, j].numpy()).pvalue for j in range(es.shape[1])])
        ks_pvalues = torch.tensor(kss, dtype=torch.float32)

    gap_mean = gap_se = log_p = log_p_emulated = None
    tractable = bool(getattr(simulator, "tractable", False))  # simulators are duck-typed: optional attribute
    if gap is None:
        gap = tractable and hasattr(emulator, "log_prob")

    def exact(draws: Tensor) -> Tensor:  # [m, n] log p(x | θ) of draws [m, n, *x_shape]; NaN for a broken draw
        out = torch.full((m, n), torch.nan, dtype=torch.float64)
        for i in range(m):
            ok = _finite_draws(draws[i : i + 1])[0]
            if ok.any():
                out[i, ok] = as_tensor(simulator.log_likelihood(theta[i : i + 1], draws[i][ok]),
                                       "log_likelihood").double().reshape(-1)
        return out

    if tractable:
        log_p, log_p_emulated = exact(simulated), exact(emulated)
    elif gap:
        log_p = exact(simulated)
    if gap:
        with seeded(seed):
            log_q = torch.full((m, n), torch.nan, dtype=torch.float64)
            for i in range(m):
                log_q[i, finite_sim[i]] = as_tensor(emulator.log_prob(simulated[i][finite_sim[i]], theta[i : i + 1]),
                                                    "emulator log_prob").double().reshape(-1)
        diff = torch.where(finite_sim, log_p - log_q, torch.nan)  # [m, n]; a broken simulation is set aside
        count = finite_sim.sum(1)
        gap_mean = diff.nanmean(1)
        gap_se = (((diff - gap_mean[:, None]) ** 2).nansum(1) / (count - 1)).sqrt() / count.sqrt()
        gap_mean, gap_se = gap_mean.float(), gap_se.float()

    return LikelihoodComparison(
        theta=theta, simulated=simulated, emulated=emulated, is_map=is_map,
        c2st=torch.tensor(c2sts, dtype=torch.float32), mmd=torch.tensor(mmds, dtype=torch.float32),
        wasserstein=torch.tensor(w1s, dtype=torch.float32), ks_pvalues=ks_pvalues, statistics=statistics,
        log_likelihood_gap=gap_mean, log_likelihood_gap_se=gap_se, spectrum=spectrum,
        simulated_log_likelihood=None if log_p is None else log_p.float(),
        emulated_log_likelihood=None if log_p_emulated is None else log_p_emulated.float(), num_dims=num_dims,
        c2st_tolerance=c2st_tolerance, alpha=alpha,
    )


def _finite_draws(draws: Tensor) -> Tensor:
    """``[m, n]`` whether each draw of ``draws`` ``[m, n, *x_shape]`` is finite in every entry."""
    return torch.isfinite(draws.reshape(*draws.shape[:2], -1)).all(-1)


def _simulate(simulator: Any, theta: Tensor, n: int, seed: int | None) -> Tensor:
    """``n`` simulations at each θ row ``[m, d_theta]`` → ``[m, n, *x_shape]``."""
    simulated = as_tensor(call_simulator(simulator, theta.repeat_interleave(n, dim=0), seed), "simulations")
    return simulated.reshape(theta.shape[0], n, *simulated.shape[1:])


def _c2st_features(stats: dict[str, Tensor]) -> Tensor:
    """Per-map classifier features (few, so that the classifier stays small): log power spectrum, log variance,
    skewness, kurtosis and the number of peaks."""
    m = stats["moments"]
    return torch.cat([torch.log(stats["power_spectrum"].clamp_min(1e-30)), torch.log(m[:, :1].clamp_min(1e-30)),
                      m[:, 1:], stats["peak_counts"].sum(1, keepdim=True)], dim=1)


def compare_emulator(*args: Any, **kwargs: Any) -> LikelihoodComparison:
    """Deprecated name of :func:`compare_likelihood` (same arguments, same result)."""
    warnings.warn("simgen.diagnostics.compare_emulator is deprecated; use compare_likelihood (same arguments)",
                  DeprecationWarning, stacklevel=2)
    return compare_likelihood(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        warnings.warn(f"simgen.diagnostics.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
