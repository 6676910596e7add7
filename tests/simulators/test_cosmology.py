"""cosmology_maps: anchors, exact likelihoods against dense Gaussians, moments, scores, reference posterior."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import simulators
from simgen.diagnostics.maps import binned_power_spectrum
from simulators.cosmology import (
    C_OVER_H0,
    CosmologyMaps,
    background,
    bbks_transfer,
    convergence_power,
    empty_beam_convergence,
    shape_noise_std,
)

F64 = torch.float64
FIDUCIAL = [[0.3, 0.8, -1.0]]
THETAS = [[0.3, 0.8, -1.0], [0.15, 1.1, -0.5], [0.45, 0.5, -1.8]]
L = 99  # posterior samples per SBC draw: ranks take the values 0..99


def circulant(p: np.ndarray) -> np.ndarray:
    """Dense pixel covariance ``[N², N²]`` of a periodic field with pixel power ``p [N, N]``: C = ξ[(r - r') mod N]."""
    n = p.shape[0]
    xi = np.fft.ifft2(p).real
    d = (np.arange(n)[:, None] - np.arange(n)[None, :]) % n
    return xi[d[:, None, :, None], d[None, :, None, :]].reshape(n * n, n * n)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- registry, anchors


def test_registered_with_the_protocol_attributes():
    from sbi.utils import BoxUniform

    sim = simulators.get("cosmology_maps")
    assert isinstance(sim, CosmologyMaps) and "cosmology_maps" in simulators.available()
    assert sim.name == "cosmology_maps" and sim.parameter_names == ["Omega_m", "sigma_8", "w_0"]
    assert sim.x_shape == (32, 32) and sim.x_kind == "map" and sim.tractable and sim.x_discrete == ()
    assert isinstance(sim.prior, BoxUniform)
    bounds = sim.prior.support.base_constraint
    np.testing.assert_allclose(bounds.lower_bound, [0.1, 0.4, -2.0])
    np.testing.assert_allclose(bounds.upper_bound, [0.5, 1.2, -1 / 3])
    assert simulators.get("cosmology_maps", n_pix=8, n_maps=3).x_shape == (3, 8, 8)
    assert not simulators.get("cosmology_maps", field="lognormal").tractable
    assert simulators.get("cosmology_maps", field="lognormal", n_gal=None).tractable


def test_anchor_values():
    """research/simulators.md §1.4–1.8 anchors (computed once with an independent numpy implementation), ±2 %."""
    bg = background(FIDUCIAL)
    assert bg.chi[0, -1].item() / C_OVER_H0 == pytest.approx(0.7714, rel=0.02)
    assert bg.growth[0, -1].item() == pytest.approx(0.6116, rel=0.02)
    assert bg.growth[0, 0].item() == 1.0
    ell = torch.tensor([100.0, 300.0, 1000.0])
    c = convergence_power(FIDUCIAL, ell)[0]
    np.testing.assert_allclose(ell * (ell + 1) * c / (2 * math.pi), [1.05e-5, 1.68e-5, 1.55e-5], rtol=0.02)
    c300 = convergence_power([[0.3, 0.8, -2.0], [0.3, 0.8, -1.0], [0.3, 0.8, -1 / 3]], [300.0])[:, 0]
    np.testing.assert_allclose(c300, [1.59e-9, 1.17e-9, 0.76e-9], rtol=0.02)
    assert empty_beam_convergence(FIDUCIAL).item() == pytest.approx(0.0644, rel=0.02)
    for n, sigma_kappa, sigma_n in [(32, 0.0068, 0.0088), (64, 0.0074, 0.0175)]:
        sim = CosmologyMaps(n)
        assert sim.pixel_power(FIDUCIAL).mean().sqrt().item() == pytest.approx(sigma_kappa, rel=0.02)
        assert sim.noise_std == pytest.approx(sigma_n, rel=0.02) and sim.noise_std == shape_noise_std(n, 10.0)
    assert shape_noise_std(32, None) == 0.0 and CosmologyMaps(8, n_gal=None).noise_std == 0.0
    # C ∝ σ_8² exactly; BBKS T(q) → 1 as q → 0 and falls monotonically
    c_low = convergence_power([[0.3, 0.4, -1.0]], ell)[0]
    np.testing.assert_allclose(c_low / c, 0.25, rtol=1e-12)
    t = bbks_transfer(torch.logspace(-6, 2, 50))
    assert t[0].item() == pytest.approx(1.0, abs=1e-4) and (t.diff() < 0).all()


def test_anchor_ranges_over_the_prior():
    corners = torch.cartesian_prod(torch.tensor([0.1, 0.5]), torch.tensor([0.4, 1.2]), torch.tensor([-2.0, -1 / 3]))
    kappa0 = empty_beam_convergence(corners)
    assert kappa0.min().item() == pytest.approx(0.016, rel=0.05)  # the spec quotes 2 digits
    assert kappa0.max().item() == pytest.approx(0.10, rel=0.05)
    sim = simulators.get("cosmology_maps", field="lognormal", n_gal=None)
    p_g, _, _ = sim.lognormal_parameters(corners)
    ratio = p_g.amin((-2, -1)) / p_g.amax((-2, -1))
    assert (ratio > 1e-5).all()  # no flooring anywhere in the box (spec: 1e-4 – 6e-3)


# ------------------------------------------------------------------- exact likelihood vs dense Gaussians


@pytest.mark.parametrize("n", [6, 8])
@pytest.mark.parametrize(
    "options",
    [dict(n_gal=None), dict(), dict(n_gal=3.0, k0="zero"), dict(n_gal=None, k0="zero")],
    ids=["noiseless", "noisy", "noisy-k0zero", "noiseless-k0zero"],
)
def test_gaussian_log_likelihood_matches_dense_normal(n, options):
    sim = CosmologyMaps(n, **options)
    theta = torch.tensor(THETAS, dtype=F64)
    singular = options.get("k0") == "zero" and options.get("n_gal", 10.0) is None
    x = sim(theta.repeat(2, 1), generator=generator(0)).double()  # simulated maps (zero mean when singular)
    if not singular:  # and arbitrary maps: the density is defined everywhere
        x = torch.cat((x, 0.02 * torch.randn(3, n, n, dtype=F64, generator=generator(1))))
    theta = theta.repeat(len(x) // 3, 1)
    got = sim.log_likelihood(theta, x)
    assert got.dtype == F64 and got.shape == (len(x),)
    p = sim.pixel_power(theta)
    if singular:  # float32 round-off leaves a tiny mean, which scipy reads as off the support: project it out
        x = x - x.mean((-2, -1), keepdim=True)
    expected = [
        stats.multivariate_normal(
            np.zeros(n * n), circulant(pi.numpy()) + sim.noise_std**2 * np.eye(n * n), allow_singular=singular
        ).logpdf(xi.reshape(-1).numpy())
        for pi, xi in zip(p, x, strict=True)
    ]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-7)
    if singular:  # maps off the zero-mean subspace are impossible
        assert torch.isneginf(sim.log_likelihood(theta[:1], x[:1] + 1e-3)).all()


@pytest.mark.parametrize("n", [6, 8])
@pytest.mark.parametrize("shift", ["empty_beam", 0.02])
def test_lognormal_log_likelihood_matches_dense_normal_with_jacobian(n, shift):
    sim = CosmologyMaps(n, field="lognormal", n_gal=None, shift=shift)
    theta = torch.tensor(THETAS, dtype=F64).repeat(2, 1)
    x = sim(theta, generator=generator(0)).double()
    got = sim.log_likelihood(theta, x)
    p_g, mu_g, kappa0 = sim.lognormal_parameters(theta)
    expected = []
    for xi, pi, mu, k0 in zip(x, p_g, mu_g, kappa0, strict=True):
        g = np.log(xi.reshape(-1).numpy() + k0.item())
        normal = stats.multivariate_normal(np.full(n * n, mu.item()), circulant(pi.numpy()))
        expected.append(normal.logpdf(g) - g.sum())  # change of variables κ = e^g - κ_0: |dg/dκ| = 1 / (κ + κ_0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-7)
    # the map's pixels must exceed -κ_0
    bad = x[:1].clone()
    bad[0, 1, 2] = -kappa0[0] - 1e-4
    assert torch.isneginf(sim.log_likelihood(theta[:1], bad)).all()


def test_lognormal_field_transform_is_exact():
    """Cov(e^g) = κ_0² (exp ξ_g - 1) must give back ξ_κ = ifft2(p) when nothing is floored."""
    sim = CosmologyMaps(8, field="lognormal", n_gal=None)
    theta = torch.tensor(THETAS, dtype=F64)
    p_g, mu_g, kappa0 = sim.lognormal_parameters(theta)
    xi_g = torch.fft.ifft2(p_g).real
    xi_kappa = torch.fft.ifft2(sim.pixel_power(theta)).real
    np.testing.assert_allclose(kappa0[:, None, None] ** 2 * torch.expm1(xi_g), xi_kappa, rtol=1e-9, atol=1e-16)
    np.testing.assert_allclose(torch.exp(mu_g + xi_g[:, 0, 0] / 2), kappa0, rtol=1e-12)  # E[e^g] = κ_0


def test_n_maps_adds_the_log_likelihoods_of_the_patches():
    one, three = CosmologyMaps(8), CosmologyMaps(8, n_maps=3)
    theta = torch.tensor(THETAS)
    x = three(theta, generator=generator(0))
    assert x.shape == (3, 3, 8, 8)
    per_patch = one.log_likelihood(theta.repeat_interleave(3, 0), x.reshape(9, 8, 8)).reshape(3, 3).sum(1)
    np.testing.assert_allclose(three.log_likelihood(theta, x), per_patch, rtol=1e-12)


# ----------------------------------------------------------------------------------- simulated moments


def test_gaussian_sample_covariance_matches_the_model():
    n, num = 6, 20_000
    sim = CosmologyMaps(n, n_gal=20.0)
    theta = torch.tensor([[0.4, 1.0, -0.8]])
    x = sim(theta.expand(num, -1), generator=generator(0)).double().reshape(num, -1).numpy()
    cov = circulant(sim.pixel_power(theta)[0].numpy()) + sim.noise_std**2 * np.eye(n * n)
    z_mean = x.mean(0) / np.sqrt(np.diag(cov) / num)
    assert np.abs(z_mean).max() < 4.5
    sample = x.T @ x / num  # the mean is known to be 0
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / num)  # Var of a Gaussian product moment
    z = (sample - cov) / se
    assert np.abs(z[np.triu_indices(n * n)]).max() < 4.5  # 666 entries: a false alarm in < 1 % of seeds


def test_lognormal_moments_match_the_model():
    n, num = 6, 20_000
    sim = CosmologyMaps(n, field="lognormal", n_gal=None)
    theta = torch.tensor([[0.15, 1.2, -0.5]])  # strong non-Gaussianity: σ_κ / κ_0 ≈ 0.2
    x = sim(theta.expand(num, -1), generator=generator(0)).double()
    p_g, _, kappa0 = sim.lognormal_parameters(theta)
    assert (x > -kappa0).all()
    flat = x.reshape(num, -1).numpy()
    cov = circulant(sim.pixel_power(theta)[0].numpy())
    assert np.abs(flat.mean(0) / np.sqrt(np.diag(cov) / num)).max() < 4.5  # E[κ] = 0
    products = flat[:, :, None] * flat[:, None, :]
    z = (products.mean(0) - cov) / (products.std(0) / math.sqrt(num))
    assert np.abs(z[np.triu_indices(n * n)]).max() < 4.5
    # E[κ³] = κ_0³ (e^{3 s²} - 3 e^{s²} + 2) for κ + κ_0 = e^g with Var g = s² = mean(p_g)
    s2 = p_g.mean().item()
    third = kappa0.item() ** 3 * (math.exp(3 * s2) - 3 * math.exp(s2) + 2)
    per_map = (flat**3).mean(1)
    assert abs(per_map.mean() - third) < 4 * per_map.std() / math.sqrt(num)
    skewness = stats.skew(flat.reshape(-1))
    assert skewness == pytest.approx((math.exp(s2) + 2) * math.sqrt(math.expm1(s2)), rel=0.1)
    assert skewness > 0.3  # clearly non-Gaussian (the pixels of N = 6 are large, so σ_κ / κ_0 is small)


def test_expected_binned_power_is_the_bin_mean_of_the_pixel_power():
    n, num = 16, 3000
    sim = CosmologyMaps(n)
    theta = torch.tensor(FIDUCIAL)
    x = sim(theta.expand(num, -1), generator=generator(0))
    c_hat = binned_power_spectrum(x, side=sim.side).double()
    debiased = binned_power_spectrum(x, side=sim.side, noise_std=sim.noise_std).double()
    p = sim.pixel_power(theta)[0]
    m = torch.from_numpy(np.fft.fftfreq(n, 1 / n))
    bins = torch.floor(torch.hypot(m[:, None], m[None, :]) + 0.5)
    expected = torch.stack([p[bins == b].mean() for b in range(1, n // 2 + 1)]) * sim.pixel**2
    se = c_hat.std(0) / math.sqrt(num)
    assert ((c_hat.mean(0) - expected - sim.noise_std**2 * sim.pixel**2) / se).abs().max() < 4
    assert ((debiased.mean(0) - expected) / se).abs().max() < 4


# ---------------------------------------------------------------------------------------------- scores


@pytest.mark.parametrize("options", [dict(), dict(field="lognormal", n_gal=None)], ids=["gaussian", "lognormal"])
def test_score_has_zero_mean_and_fisher_covariance(options):
    """E_x[∇_θ log p(x | θ)] = 0 and (Gaussian) E[s sᵀ] = F, with the score from autograd."""
    sim, num = CosmologyMaps(8, **options), 1500
    theta0 = torch.tensor(FIDUCIAL, dtype=F64)
    x = sim(theta0.expand(num, -1), generator=generator(0))
    theta = theta0.repeat(num, 1).requires_grad_()
    sim.log_likelihood(theta, x).sum().backward()
    score = theta.grad
    z = score.mean(0) / (score.std(0) / math.sqrt(num))
    assert z.abs().max() < 4, z
    if options:
        return
    fisher = sim.fisher_information(theta0)[0]
    products = score[:, :, None] * score[:, None, :]
    z = (products.mean(0) - fisher) / (products.std(0) / math.sqrt(num))
    assert z.abs().max() < 4, z


@pytest.mark.parametrize("options", [dict(), dict(field="lognormal", n_gal=None)], ids=["gaussian", "lognormal"])
def test_autograd_score_matches_finite_differences(options):
    sim = CosmologyMaps(8, **options)
    theta = torch.tensor([[0.25, 0.9, -1.2]], dtype=F64)
    x = sim(theta, generator=generator(3))
    t = theta.clone().requires_grad_()
    sim.log_likelihood(t, x).sum().backward()
    h = 1e-6
    fd = []
    for i in range(3):
        e = torch.zeros(1, 3, dtype=F64)
        e[0, i] = h
        fd.append((sim.log_likelihood(theta + e, x) - sim.log_likelihood(theta - e, x)).item() / (2 * h))
    np.testing.assert_allclose(t.grad[0].numpy(), fd, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------- reference posterior


def sbc_ranks(sim, num_draws, seed):
    """Ranks of θ_i (and of the ridge coordinate ln σ_8 + 0.8 ln Ω_m) among L posterior samples given x_i."""
    torch.manual_seed(seed)
    theta = sim.prior.sample((num_draws,))
    x = sim(theta, generator=generator(seed + 1))
    samples = sim.reference_posterior_batched(x, L, generator=generator(seed + 2))
    assert samples.shape == (num_draws, L, 3)

    def with_ridge(t):
        return torch.cat((t, (torch.log(t[..., 1]) + 0.8 * torch.log(t[..., 0]))[..., None]), -1)

    return (with_ridge(samples) < with_ridge(theta)[:, None]).sum(1)


def sbc_pvalue(ranks, bins):
    """Bonferroni-corrected chi-square uniformity p-value of ranks in {0, ..., L}, over the columns."""
    counts = np.stack([np.bincount(r * bins // (L + 1), minlength=bins) for r in ranks.T.numpy()])
    pvalues = stats.chisquare(counts, axis=1).pvalue
    return min(1.0, len(pvalues) * pvalues.min())


@pytest.mark.parametrize("options", [dict(), dict(field="lognormal", n_gal=None)], ids=["gaussian", "lognormal"])
def test_sbc_reference_posterior_small_maps(options):
    ranks = sbc_ranks(CosmologyMaps(8, **options), 30, seed=0)
    assert sbc_pvalue(ranks, bins=3) > 0.01


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(), dict(field="lognormal", n_gal=None)], ids=["gaussian", "lognormal"])
def test_sbc_reference_posterior_default_size(options):
    ranks = sbc_ranks(CosmologyMaps(32, **options), 300, seed=0)
    assert sbc_pvalue(ranks, bins=10) > 0.01


def test_reference_posterior_matches_importance_sampling():
    """Grid sampler vs self-normalised importance sampling from the prior with the public log_likelihood."""
    sim = CosmologyMaps(8)
    x = sim(torch.tensor([[0.35, 0.7, -1.2]]), generator=generator(0))
    samples = sim.reference_posterior(x, 20_000, generator=generator(1)).double()
    assert ((samples >= torch.tensor([0.1, 0.4, -2.0])) & (samples <= torch.tensor([0.5, 1.2, -1 / 3]))).all()
    torch.manual_seed(2)
    draws = sim.prior.sample((20_000,)).double()
    w = torch.softmax(sim.log_likelihood(draws, x), 0)
    assert 1 / (w**2).sum() > 1000  # effective sample size
    features = [
        lambda t: t[:, 0],
        lambda t: t[:, 1],
        lambda t: t[:, 2],
        lambda t: torch.log(t[:, 1]) + 0.8 * torch.log(t[:, 0]),
    ]
    for f in features:
        expected = (w * f(draws)).sum()
        se_is = (w**2 * (f(draws) - expected) ** 2).sum().sqrt()
        se_grid = f(samples).std() / math.sqrt(len(samples))
        assert abs(f(samples).mean() - expected) < 4 * math.hypot(se_is, se_grid)


def test_grid_log_posterior_is_the_log_likelihood_plus_jacobian():
    sim = CosmologyMaps(8, field="lognormal", n_gal=None)
    x = sim(torch.tensor(THETAS), generator=generator(0)).double()
    grid = sim._reference_grid()
    rows = torch.randint(0, grid.size, (20,), generator=generator(1))
    log_post = sim._grid_log_posterior(grid, x)  # three i.i.d. observations
    log_l = sum(sim.log_likelihood(grid.theta[rows], xi[None]) for xi in x)
    np.testing.assert_allclose(log_post[rows] - grid.log_jacobian[rows], log_l, rtol=1e-10)
    # three i.i.d. observations of one patch = one observation of three patches
    three = CosmologyMaps(8, field="lognormal", n_gal=None, n_maps=3)
    np.testing.assert_allclose(three._grid_log_posterior(three._reference_grid(), x[None]), log_post, rtol=1e-10)


def test_coarse_grid_warns():
    sim = CosmologyMaps(8, grid=(6, 3, 3))
    x = sim(torch.tensor(FIDUCIAL), generator=generator(0))
    with pytest.warns(UserWarning, match="the grid is too coarse"):
        sim.reference_posterior(x, 10, generator=generator(1))


# ------------------------------------------------------------------------------ seeding, shapes, dtypes


@pytest.mark.parametrize(
    "options", [dict(), dict(field="lognormal"), dict(n_maps=2, k0="zero")], ids=["gaussian", "lognormal", "maps"]
)
def test_shapes_dtypes_and_seeding(options):
    sim = CosmologyMaps(8, **options)
    theta = sim.prior.sample((5,))
    x = sim(theta, generator=generator(3))
    assert x.shape == (5, *sim.x_shape) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sim(theta, generator=generator(3)))
    assert not torch.equal(x, sim(theta, generator=generator(4)))
    assert torch.equal(sim(theta.double().numpy(), generator=generator(3)), x)  # array-likes, float64
    assert torch.equal(sim(theta.tolist(), generator=generator(3)), x)
    assert sim(theta[:0]).shape == (0, *sim.x_shape)
    torch.manual_seed(11)
    y = sim(theta)
    torch.manual_seed(11)
    assert torch.equal(sim(theta), y)
    if sim.tractable:
        log_l = sim.log_likelihood(theta, x)
        assert log_l.shape == (5,) and log_l.dtype == F64 and torch.isfinite(log_l).all()
        assert torch.equal(sim.log_likelihood(theta[:1], x), sim.log_likelihood(theta[:1].expand(5, -1), x))


def test_zero_mode_maps_have_zero_mean_without_noise():
    sim = CosmologyMaps(8, k0="zero", n_gal=None, n_maps=2)
    x = sim(sim.prior.sample((4,)), generator=generator(0)).double()
    assert (x.sum((-2, -1)).abs() < 1e-5).all()
    assert sim.pixel_power(FIDUCIAL)[0, 0, 0] == 0


def test_reference_posterior_shapes_and_seeding():
    sim = CosmologyMaps(8)
    x = sim(torch.tensor(THETAS), generator=generator(0))
    a = sim.reference_posterior(x[0], 50, generator=generator(5))
    assert a.shape == (50, 3) and a.dtype == torch.float32
    assert torch.equal(a, sim.reference_posterior(x[:1], 50, generator=generator(5)))
    assert not torch.equal(a, sim.reference_posterior(x[0], 50, generator=generator(6)))
    assert sim.reference_posterior(x, 7, generator=generator(0)).shape == (7, 3)  # three i.i.d. observations
    batched = sim.reference_posterior_batched(x, 4, generator=generator(0))
    assert batched.shape == (3, 4, 3) and batched.dtype == torch.float32


def test_spectra_are_cached_and_shared():
    sim = CosmologyMaps(8)
    theta = torch.tensor(THETAS, dtype=F64)
    first = sim._spectra(theta)
    assert sim._spectra(theta.clone()) is first  # the sampler and the likelihood reuse one computation
    # duplicated rows are computed once and agree with a fresh computation
    repeated = sim._spectra(theta[[0, 0, 1]])
    np.testing.assert_allclose(repeated.field, sim._compute_spectra(theta[[0, 0, 1]]).field, rtol=1e-13)


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(n_pix=7), "n_pix must be an even integer"),
        (dict(n_pix=0), "n_pix must be an even integer"),
        (dict(field="poisson"), "field must be 'gaussian' or 'lognormal'"),
        (dict(n_gal=0.0), "n_gal must be a positive number or None"),
        (dict(n_maps=0), "n_maps must be a positive integer"),
        (dict(k0="none"), "k0 must be 'fundamental' or 'zero'"),
        (dict(field="lognormal", k0="zero"), "k0='zero' is only allowed for the Gaussian field"),
        (dict(shift=-0.1), "shift must be 'empty_beam' or a positive float"),
        (dict(grid=(10, 10)), "grid must be three integers"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        simulators.get("cosmology_maps", **options)


def test_bad_inputs():
    sim = CosmologyMaps(8)
    with pytest.raises(ValueError, match=r"expected theta of shape \[n, 3\]"):
        sim(torch.zeros(4, 2))
    for bad in ([[0.0, 0.8, -1.0]], [[0.3, -0.1, -1.0]], [[0.3, 0.8, math.nan]], [[1.5, 0.8, -1.0]]):
        with pytest.raises(ValueError, match="outside the model's domain"):
            sim(bad)
        with pytest.raises(ValueError, match="outside the model's domain"):
            sim.log_likelihood(bad, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"expected x of shape \[n, 8, 8\], got \[2, 8, 6\]"):
        sim.log_likelihood(torch.tensor(FIDUCIAL), torch.zeros(2, 8, 6))
    with pytest.raises(ValueError, match=r"expected x_obs of shape \[8, 8\] or \[m, 8, 8\]"):
        sim.reference_posterior(torch.zeros(3, 8), 10)


def test_lognormal_with_noise_is_intractable():
    sim = CosmologyMaps(8, field="lognormal")
    x = sim(torch.tensor(FIDUCIAL), generator=generator(0))
    with pytest.raises(NotImplementedError, match="lognormal field with shape noise has an intractable likelihood"):
        sim.log_likelihood(torch.tensor(FIDUCIAL), x)
    with pytest.raises(NotImplementedError, match="no reference posterior for the lognormal field with shape noise"):
        sim.reference_posterior(x, 10)
    with pytest.raises(NotImplementedError, match="only available for field='gaussian'"):
        sim.fisher_information(FIDUCIAL)
    with pytest.raises(ValueError, match="needs field='lognormal'"):
        CosmologyMaps(8).lognormal_parameters(FIDUCIAL)


def test_lognormal_shift_too_small_is_an_error():
    sim = CosmologyMaps(8, field="lognormal", n_gal=None, shift=1e-4)  # ξ_κ < -κ_0² somewhere
    with pytest.raises(ValueError, match="lognormal field undefined"):
        sim(torch.tensor([[0.5, 1.2, -1.0]]))
