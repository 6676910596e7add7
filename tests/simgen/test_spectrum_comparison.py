"""A map emulator's power spectrum, its correlations across maps and the typicality of its draws under the
simulator's exact likelihood (``compare_likelihood`` on maps)."""

from __future__ import annotations

import pytest
import torch

import simulators
from simgen import diagnostics as D

SIM = simulators.get("cosmology_maps", n_pix=16)
THETA = torch.tensor([[0.3, 0.8, -1.0], [0.35, 0.7, -0.8]])


class Emulator:
    """The simulator itself (``transform`` of its draws: a wrong emulator); ``log_prob`` is exact."""

    def __init__(self, transform=None) -> None:
        self.transform = transform

    def sample_batched(self, n, thetas, *, generator=None):
        thetas = torch.as_tensor(thetas)
        x = SIM(thetas.repeat_interleave(n, dim=0), generator=generator).reshape(thetas.shape[0], n, 16, 16)
        return x if self.transform is None else self.transform(x, generator)

    def log_prob(self, x, theta):
        return SIM.log_likelihood(theta, torch.as_tensor(x))


def test_the_simulator_as_its_own_emulator_passes_every_map_check() -> None:
    res = D.compare_likelihood(Emulator(), SIM, THETA, num_samples=300, seed=0)
    assert res.spectrum is not None and res.spectrum.ratio.shape == (2, 8)
    assert not res.flagged, res.summary()
    assert (res.spectrum.ratio - 1).abs().max() < 0.1
    assert res.typicality_z.abs().max() < 4
    # the gap of an exact emulator is 0 draw by draw
    assert res.log_likelihood_gap.abs().max() < 1e-3
    row = res.table()[0]
    assert {"worst C_ℓ ratio", "max Δρ(log C_ℓ)", "log p z", "gap (nats)"} <= set(row)


def test_too_little_small_scale_power_is_flagged_by_the_spectrum_ratio_and_the_exact_likelihood() -> None:
    def smooth(x, generator):  # a 3-point average along each axis on the torus damps high ℓ
        for dim in (-1, -2):
            x = (x + x.roll(1, dim) + x.roll(-1, dim)) / 3
        return x

    res = D.compare_likelihood(Emulator(smooth), SIM, THETA[:1], num_samples=200, seed=0, gap=False)
    reasons = " ".join(res.reasons())
    assert "power spectrum ratio" in reasons and res.spectrum.worst_ratio < 0.5
    assert "exact log-likelihood" in reasons and res.typicality_z.abs().min() > 4


def test_a_random_amplitude_per_map_is_flagged_by_the_log_spectrum_correlations() -> None:
    # every map scaled by its own factor a (E a² = 1): the mean spectrum stays right, but all bins of log C_ℓ
    # move together across maps, which a Gaussian field's nearly independent bins do not
    def rescale(x, generator):
        a = torch.exp(0.5 * torch.randn(*x.shape[:2], 1, 1, generator=generator) - 0.25)
        return x * a

    res = D.compare_likelihood(Emulator(rescale), SIM, THETA[:1], num_samples=300, seed=0, gap=False)
    assert res.spectrum.max_correlation_error > 0.5
    assert res.spectrum.bad_correlations().any()
    assert any("correlations" in r for r in res.reasons())


def test_spectrum_samples_shrink_the_correlation_noise_and_keep_the_main_draws() -> None:
    """The simulator against itself: the largest log C_ℓ correlation error is noise of size ~1/√n, above 0.15 at
    100 maps per θ (2 θ × 28 entries) and below 0.1 at 2,000; the draws of the other checks are unchanged."""
    few = D.compare_likelihood(Emulator(), SIM, THETA, num_samples=100, seed=3, gap=False)
    many = D.compare_likelihood(Emulator(), SIM, THETA, num_samples=100, spectrum_samples=2000, seed=3, gap=False)
    assert few.spectrum.max_correlation_error > 0.15 and many.spectrum.max_correlation_error < 0.1
    assert torch.equal(few.simulated, many.simulated) and torch.equal(few.emulated, many.emulated)
    assert (many.spectrum.ratio - 1).abs().max() < (few.spectrum.ratio - 1).abs().max()
    assert not many.flagged, many.summary()
    with pytest.raises(ValueError, match="spectrum_samples"):
        D.compare_likelihood(Emulator(), SIM, THETA, num_samples=100, spectrum_samples=0)


def test_spectrum_comparison_from_spectra_flags_a_ten_percent_excess_and_checks_shapes() -> None:
    """Binned spectra drawn as independent exponentials (a Gaussian field's Ĉ per mode): the same law passes,
    10 % more power in one bin is flagged in that bin only, and the ratio's standard error matches its spread."""
    g = torch.Generator().manual_seed(0)
    sim = torch.empty(2, 4000, 6).exponential_(generator=g)
    same = torch.empty(2, 4000, 6).exponential_(generator=g)
    excess = same.clone()
    excess[1, :, 3] *= 1.10
    assert not D.SpectrumComparison.from_spectra(sim, same).bad_bins().any()
    bad = D.SpectrumComparison.from_spectra(sim, excess).bad_bins()
    assert bad[1, 3] and bad.sum() == 1
    ratios = torch.stack([D.SpectrumComparison.from_spectra(torch.empty(1, 4000, 1).exponential_(generator=g),
                                                            torch.empty(1, 4000, 1).exponential_(generator=g)).ratio
                          for _ in range(200)]).flatten()
    se = D.SpectrumComparison.from_spectra(sim, same).ratio_se.mean()
    assert abs(ratios.std() / se - 1) < 0.15, (ratios.std(), se)
    with pytest.raises(ValueError, match=r"\[m, n_s, k\]"):
        D.SpectrumComparison.from_spectra(sim, same[:, :, :5])


def test_broken_emulated_maps_are_flagged_and_set_aside() -> None:
    """Emulated maps with NaN or infinite pixels are counted and flagged, and every other check (the spectrum,
    its correlations, the exact log-likelihood, C2ST) runs on the finite ones instead of turning NaN."""
    def break_some(x, generator):  # 5 % of the second θ's maps broken
        x = x.clone()
        x[1, :6, 0, 0] = torch.nan
        x[1, 6:10, 3, 4] = torch.inf
        return x

    res = D.compare_likelihood(Emulator(break_some), SIM, THETA, num_samples=200, seed=0)
    assert res.non_finite_fraction.tolist() == pytest.approx([0.0, 0.05])
    assert res.impossible_fraction.tolist() == [0.0, 0.0]  # a broken draw is not counted as outside the support
    reasons = res.reasons()
    assert len(reasons) == 1 and "NaN or infinite" in reasons[0] and "[1]" in reasons[0], reasons
    assert torch.isfinite(res.spectrum.ratio).all() and (res.spectrum.ratio - 1).abs().max() < 0.1
    assert torch.isfinite(res.spectrum.correlation_error).all()
    assert torch.isfinite(res.typicality_z).all() and torch.isfinite(res.c2st).all()
    assert "5.0 % of emulated draws not finite" in res.summary() and res.table()[1]["not finite"] == pytest.approx(0.05)


def test_an_emulator_whose_maps_are_all_broken_is_flagged_not_passed() -> None:
    res = D.compare_likelihood(Emulator(lambda x, g: x * torch.nan), SIM, THETA[:1], num_samples=50, seed=0)
    assert res.non_finite_fraction.tolist() == [1.0]
    assert res.spectrum.bad_bins().all()  # no finite map: every bin unknown, none silently passed
    assert res.flagged and any("NaN or infinite" in r for r in res.reasons())
