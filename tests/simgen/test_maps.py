"""Map statistics: power spectrum of white noise, peaks of known maps, moments and histograms against numpy."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from simgen.diagnostics.maps import (
    binned_power_spectrum,
    moments,
    peak_counts,
    pixel_histogram,
    power_spectrum_bins,
)

SIDE = math.radians(5.0)


def test_power_spectrum_bins():
    ell, counts = power_spectrum_bins(8, SIDE)
    assert ell.shape == counts.shape == (4,)
    np.testing.assert_allclose(ell, 2 * math.pi * np.arange(1, 5) / SIDE)
    # modes with |m| in [b - 1/2, b + 1/2), counted by hand on Z_8^2
    m = np.fft.fftfreq(8, 1 / 8)
    radius = np.hypot(m[:, None], m[None, :])
    expected = [((radius >= b - 0.5) & (radius < b + 0.5)).sum() for b in range(1, 5)]
    # by hand (m_i ∈ {-4, ..., 3}): |m| = 1, √2 | 2, √5 | 3, √8, √10 | 4 (2 modes), √13, √17, √18, √20
    assert counts.tolist() == expected == [8, 12, 16, 22]


def test_white_noise_power_spectrum_is_flat_at_the_right_level():
    n, num, sigma = 32, 400, 2.0
    maps = sigma * torch.randn(num, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = binned_power_spectrum(maps, side=SIDE).double()
    assert c.shape == (num, 16) and binned_power_spectrum(maps[:1]).dtype == torch.float32
    level = sigma**2 * (SIDE / n) ** 2  # white noise: p[m] = σ², C = σ² Δ²
    _, counts = power_spectrum_bins(n, SIDE)
    # Ĉ_b ~ Gamma(n_b / 2, scale 2 σ²Δ² / n_b): mean σ²Δ², variance 2 (σ²Δ²)² / n_b
    se = level * torch.sqrt(2 / counts / num)
    z = (c.mean(0) - level) / se
    assert z.abs().max() < 4, z
    # the exact Gamma law, bin by bin (Bonferroni over the 16 bins)
    laws = [stats.gamma(counts[b] / 2, scale=2 * level / counts[b]) for b in range(16)]
    pvalues = [stats.kstest(c[:, b], law.cdf).pvalue for b, law in enumerate(laws)]
    assert min(pvalues) * 16 > 0.01
    # noise debiasing removes the level
    debiased = binned_power_spectrum(maps, side=SIDE, noise_std=sigma).double()
    assert (debiased.mean(0) / level).abs().max() < 4 * (se / level).max()


def test_power_spectrum_of_a_single_mode():
    n, b = 16, 3
    x = torch.arange(n, dtype=torch.float64)
    plane = torch.cos(2 * math.pi * b * x / n)[:, None].expand(n, n)  # mode m = (±3, 0)
    c = binned_power_spectrum(plane[None], side=SIDE)[0].double()
    _, counts = power_spectrum_bins(n, SIDE)
    # |K[±m]| = N²/2, so Ĉ_b = Δ² / (n_b N²) · 2 (N²/2)²
    expected = (SIDE / n) ** 2 / (counts[b - 1] * n**2) * 2 * (n**2 / 2) ** 2
    assert c[b - 1].item() == pytest.approx(expected.item(), rel=1e-6)
    assert c[torch.arange(n // 2) != b - 1].abs().max() < 1e-6 * expected


def test_peaks_of_a_known_map():
    n = 16
    kappa = torch.zeros(n, n, dtype=torch.float64)
    kappa[3, 4] = 0.021  # ν = 2.1: bin [2, 2.5)
    kappa[0, 0] = 0.045  # on the corner: its neighbours wrap around; ν = 4.5
    kappa[10, 12] = 0.2  # ν = 20: overflow, into the top bin
    kappa[7, 7] = kappa[7, 8] = 0.01  # a plateau of two equal pixels is no peak
    kappa[12, 2] = -0.02  # a "peak" over a negative background, below the first edge: not counted
    kappa[11:14, 1:4] -= 0.05
    kappa[12, 2] = -0.02
    counts = peak_counts(kappa[None], smoothing=0)
    assert counts.shape == (1, 12) and counts.dtype == torch.float32
    expected = torch.zeros(12)
    expected[6] += 1  # [2.0, 2.5)
    expected[11] += 2  # [4.5, 5.0) and the overflow
    assert torch.equal(counts[0], expected)
    # the background is flat: no other pixel is strictly greater than all 8 neighbours
    assert counts.sum() == 3


def test_peak_of_a_smoothed_spike():
    n = 16
    kappa = np.zeros((2, n, n))
    kappa[0, 5, 9] = 0.3
    kappa[1, 0, 15] = 0.3  # on the edge: periodic smoothing and neighbours
    d = np.fft.fftfreq(n, 1 / n)
    height = 0.3 / np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / 2).sum()  # spike × kernel(0), unit-sum kernel
    nu = height / 0.01
    assert 4.5 < nu < 5.0
    # far from the spike the smoothed map is 0 up to FFT round-off (~1e-18), whose ripples are peaks at ν ≈ 0:
    # count from ν = 1e-6 up
    counts = peak_counts(kappa, smoothing=1.0, edges=[1e-6, 4.5, 5.0])  # numpy input
    np.testing.assert_array_equal(counts.numpy(), [[0, 1], [0, 1]])
    assert peak_counts(kappa, smoothing=1.0)[:, -1].tolist() == [1, 1]  # default edges: top bin [4.5, 5)


def test_peak_counts_shapes_and_errors():
    maps = torch.randn(2, 3, 8, 8) * 0.01
    assert peak_counts(maps).shape == (2, 3, 12)
    assert peak_counts(maps, edges=[0.0, 1.0, 2.0]).shape == (2, 3, 2)
    with pytest.raises(ValueError, match="increasing"):
        peak_counts(maps, edges=[1.0, 0.0])
    with pytest.raises(ValueError, match="square maps"):
        peak_counts(torch.zeros(3, 8, 7))
    with pytest.raises(ValueError, match="smoothing >= 0"):
        peak_counts(maps, smoothing=-1)


def test_moments_match_numpy_and_scipy():
    rng = np.random.default_rng(0)
    maps = rng.lognormal(0, 0.5, size=(5, 12, 12)) - 1
    got = moments(maps)
    assert got.shape == (5, 3) and got.dtype == torch.float32
    flat = maps.reshape(5, -1)
    expected = np.stack([flat.var(1), stats.skew(flat, axis=1), stats.kurtosis(flat, axis=1)], 1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert moments(torch.from_numpy(maps[0])).shape == (3,)  # a single map [N, N]


def test_pixel_histogram_matches_numpy():
    rng = np.random.default_rng(1)
    maps = 0.02 * rng.standard_normal((4, 16, 16))
    maps[0, 0, 0] = 0.06  # exactly the right edge: counted in the last bin, as numpy does
    maps[0, 0, 1] = -0.04  # exactly the left edge
    got = pixel_histogram(torch.from_numpy(maps))
    assert got.shape == (4, 20) and got.dtype == torch.float32
    for i in range(4):
        np.testing.assert_array_equal(got[i].numpy(), np.histogram(maps[i] / 0.01, bins=20, range=(-4, 6))[0])
    with pytest.raises(ValueError, match="bins >= 1"):
        pixel_histogram(maps, bins=0)
