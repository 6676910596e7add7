import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import simgen
from simgen.models import VAE, make_family
from simgen.models.fourier import StationaryNormal, radial_modes

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "models_v0"


def _raw(vae, sigma):
    """The unconstrained value that VAE._scale maps to ``sigma`` (inverse of the softplus parametrisation)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    floor = vae.min_scale
    return torch.log(torch.expm1(sigma - floor)) - math.log(math.expm1(1.0 - floor))


class _Linear(nn.Module):
    """out = A x + B c + b (B c left out when B is None), with the (x, context) call of the VAE's networks."""

    def __init__(self, A, B, b):
        super().__init__()
        self.A, self.B, self.b = A, B, b

    def forward(self, x, context=None):
        out = x @ self.A.T + self.b
        return out if self.B is None else out + context @ self.B.T


def _linear_gaussian_vae():
    r"""A VAE with hand-set linear-Gaussian pieces, d = 3, L = 2, two context features:

    p(z | c) = N(P c, diag s_p²),  p(y | z, c) = N(W z + V c + b, diag s_y²)  ⇒  p(y | c) = N(W P c + V c + b,
    W diag s_p² W^T + diag s_y²) in closed form. The encoder is the exact posterior's mean with a diagonal scale
    1.5 × too wide, so IWAE has a positive, K-dependent gap.
    """
    g = torch.Generator().manual_seed(0)
    d, L, f = 3, 2, 2
    vae = VAE(latent_features=L, prior="learned", decoder_variance="learned").build((d,), f)
    W, V, b = torch.randn(d, L, generator=g), torch.randn(d, f, generator=g), torch.randn(d, generator=g)
    P = torch.randn(L, f, generator=g)
    s_p, s_y = torch.tensor([0.8, 1.3]), torch.tensor([0.5, 0.7, 0.4])
    vae.prior_net = _Linear(torch.cat([P, torch.zeros(L, f)]), None, torch.cat([torch.zeros(L), _raw(vae, s_p)]))
    vae.decoder = _Linear(W, V, b)
    with torch.no_grad():
        vae.decoder_log_scale.copy_(_raw(vae, s_y))
    # exact posterior p(z | y, c) = N(m, Λ⁻¹): Λ = S_p⁻¹ + Wᵀ S_y⁻¹ W, m = Λ⁻¹ (S_p⁻¹ P c + Wᵀ S_y⁻¹ (y − V c − b))
    Lam = torch.diag(s_p**-2) + W.T @ torch.diag(s_y**-2) @ W
    cov = torch.linalg.inv(Lam)
    Ay = cov @ W.T @ torch.diag(s_y**-2)
    Ac = cov @ torch.diag(s_p**-2) @ P - Ay @ V
    enc_scale = 1.5 * cov.diagonal().sqrt()
    vae.encoder = _Linear(torch.cat([Ay, torch.zeros(L, d)]), torch.cat([Ac, torch.zeros(L, f)]),
                          torch.cat([-Ay @ b, _raw(vae, enc_scale)]))
    marginal = lambda c: torch.distributions.MultivariateNormal(  # noqa: E731
        c @ (W @ P + V).T + b, covariance_matrix=W @ torch.diag(s_p**2) @ W.T + torch.diag(s_y**2)
    )
    return vae, marginal


def test_linear_gaussian_vae_bounds_and_iwae_gap_shrink():
    torch.manual_seed(0)
    vae, marginal = _linear_gaussian_vae()
    n = 1000
    c = torch.randn(n, 2)
    y = marginal(c).sample()
    with torch.no_grad():
        exact = marginal(c).log_prob(y)
        elbo = vae.elbo(y, c, num_samples=64, generator=torch.Generator().manual_seed(1))
        iwae = {k: vae.log_prob(y, c, num_samples=k) for k in (1, 16, 256)}

    def mean_se(t):  # paired per-row differences: mean and Monte Carlo standard error
        return t.mean().item(), t.std().item() / n**0.5

    gaps = {k: mean_se(exact - v) for k, v in iwae.items()}
    diff, se = mean_se(iwae[1] - elbo)
    assert abs(diff) < 4 * se  # E[log p̂_1] = ELBO (Monte Carlo KL against analytic KL)
    assert mean_se(exact - elbo)[0] > 0.3  # the encoder is 1.5x too wide on purpose: a real gap to close
    for k, (gap, se) in gaps.items():  # IWAE(K) ≤ log p(y | c) within Monte Carlo error
        assert gap > -4 * se, (k, gap, se)
    assert mean_se(iwae[16] - elbo)[0] > 0 and mean_se(iwae[256] - iwae[16])[0] > 0
    assert gaps[1][0] > 5 * gaps[16][0] and gaps[16][0] > 5 * max(gaps[256][0], 0.0)
    assert gaps[256][0] < 0.01


def test_vae_log_prob_is_deterministic_per_row_given_a_generator():
    vae = VAE(latent_features=3, hidden_features=16).build((4,), 2)
    y, c = torch.randn(9, 4), torch.randn(9, 2)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    with torch.no_grad():
        full = vae.log_prob(y, c, generator=gen(), num_samples=32)
        part = vae.log_prob(y[3:6].flip(0), c[3:6].flip(0), generator=gen(), num_samples=32)
        again = vae.log_prob(y, c, generator=gen(), num_samples=32)
        other = vae.log_prob(y, c, generator=torch.Generator().manual_seed(6), num_samples=32)
    assert torch.equal(full, again)
    assert torch.allclose(full[3:6].flip(0), part, atol=1e-5)  # independent of the other rows in the batch
    assert not torch.allclose(full, other)


@pytest.mark.parametrize("y_shape", [(3,), (12, 10), (2, 8, 8)])
@pytest.mark.parametrize("options", [dict(), dict(prior="standard", decoder_variance="learned"),
                                     dict(decoder_noise="fourier"), dict(decoder_noise="diagonal")])
def test_vae_shapes(y_shape, options):
    if options.get("decoder_noise") == "fourier" and len(y_shape) == 1:
        pytest.skip("the Fourier decoder models maps")
    vae = VAE(latent_features=3, hidden_features=16, channels=(4, 8), **options).build(y_shape, 2)
    y, c = torch.randn(5, *y_shape), torch.randn(5, 2)
    assert vae.loss(y, c).shape == ()
    assert vae.elbo(y, c).shape == (5,)
    assert vae.log_prob(y, c, num_samples=8).shape == (5,)
    assert vae.sample(4, c[:2]).shape == (2, 4, *y_shape)
    assert vae.sample(4, c[:2], mean=True).shape == (2, 4, *y_shape)
    q = vae.encode(y, c)
    assert q.mean.shape == (5, 3) and q.sample().shape == (5, 3)
    assert vae.decode(q.mean, c).mean.shape == (5, *y_shape)
    assert vae.prior_distribution(c).mean.shape == (5, 3)


def test_unconditional_and_bernoulli_vae():
    vae = VAE(latent_features=2, hidden_features=16).build((3,), None)
    assert vae.sample(6, None).shape == (6, 3)
    assert vae.log_prob(torch.randn(4, 3), None, num_samples=4).shape == (4,)
    binary = VAE(latent_features=2, hidden_features=16, likelihood="bernoulli").build((5,), 1)
    draws = binary.sample(50, torch.zeros(1, 1))
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    means = binary.sample(50, torch.zeros(1, 1), mean=True)
    assert ((means > 0) & (means < 1)).all()
    assert torch.isfinite(binary.log_prob(draws[0], torch.zeros(50, 1), num_samples=4)).all()


def test_mean_samples_are_decoder_means_and_follow_the_generator():
    vae = VAE(latent_features=2, hidden_features=16).build((3,), 1)
    c = torch.zeros(1, 1)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with torch.no_grad():
        means = vae.sample(5, c, generator=gen(), mean=True)[0]
        z = vae.prior_distribution(c.expand(5, 1)).mean
        eps = torch.randn(5, 2, generator=gen())
        z = z + vae.prior_distribution(c.expand(5, 1)).stddev * eps
        assert torch.allclose(means, vae.decode(z, c.expand(5, 1)).mean, atol=1e-6)
        assert torch.equal(vae.sample(5, c, generator=gen()), vae.sample(5, c, generator=gen()))


def test_kl_warmup_follows_the_trainer_and_validation_uses_the_full_elbo():
    from simgen.training import TrainingConfig, train

    vae = VAE(latent_features=2, hidden_features=16, kl_warmup_epochs=4).build((2,), 1)
    assert vae.kl_weight == 0.25
    y, c = torch.randn(64, 2), torch.randn(64, 1)
    train(vae, y, c, TrainingConfig(max_epochs=2, batch_size=32), seed=0, progress=False)
    assert vae.kl_weight == 0.5  # epochs 0 and 1 ran: β = 2 / 4
    vae.eval()
    torch.manual_seed(1)
    loss = vae.loss(y, c)
    torch.manual_seed(1)
    assert torch.allclose(loss, -vae.elbo(y, c).mean())  # β = 1 in eval mode
    vae.train()
    torch.manual_seed(1)
    assert vae.loss(y, c) < loss  # β = 0.5 lowers the training loss


def test_vae_rejects_bad_arguments():
    with pytest.raises(ValueError, match="prior"):
        VAE(prior="mixture")
    with pytest.raises(ValueError, match="decoder_variance"):
        VAE(decoder_variance="fixed")
    with pytest.raises(ValueError, match="likelihood"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="latent_features"):
        VAE(latent_features=0)
    with pytest.raises(ValueError, match="iwae_samples"):
        VAE(iwae_samples=0)
    with pytest.raises(ValueError, match="min_scale"):
        VAE(min_scale=1.5)
    with pytest.raises(RuntimeError, match="not built"):
        VAE().log_prob(torch.zeros(1, 2), None)
    with pytest.raises(ValueError, match="y_shape"):
        VAE().build((2, 2, 2, 2), None)
    vae = VAE(latent_features=2, hidden_features=8).build((3,), 2)
    with pytest.raises(ValueError, match=r"y must have shape \[n, 3\]"):
        vae.log_prob(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="context"):
        vae.elbo(torch.zeros(4, 3), None)
    with pytest.raises(ValueError, match="context"):
        vae.sample(2, None)
    with pytest.raises(ValueError, match="built without a context"):
        VAE(latent_features=2, hidden_features=8).build((3,), None).log_prob(torch.zeros(1, 3), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"c must have shape \[4, 2\]"):
        vae.log_prob(torch.zeros(4, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="num_samples"):
        vae.log_prob(torch.zeros(4, 3), torch.zeros(4, 2), num_samples=-1)
    with pytest.raises(ValueError, match="decoder_noise"):
        VAE(decoder_noise="full")
    with pytest.raises(ValueError, match="likelihood='gaussian'"):
        VAE(decoder_noise="fourier", likelihood="bernoulli")
    with pytest.raises(ValueError, match="models maps"):
        VAE(decoder_noise="fourier").build((3,), 2)
    with pytest.raises(ValueError, match="one of decoder_variance"):
        VAE(decoder_noise="fourier", decoder_variance="learned")


@pytest.mark.parametrize("options, y_shape, noise, variance", [
    (dict(), (8, 8), "fourier", None),  # Gaussian maps: the stationary decoder
    (dict(), (2, 8, 8), "fourier", None),
    (dict(), (5,), "diagonal", "heteroscedastic"),  # vectors keep the diagonal one
    (dict(decoder_variance="heteroscedastic"), (8, 8), "diagonal", "heteroscedastic"),  # as files saved before
    (dict(decoder_variance="learned"), (8, 8), "diagonal", "learned"),
    (dict(likelihood="bernoulli"), (8, 8), "diagonal", "heteroscedastic"),
    (dict(decoder_noise="diagonal"), (8, 8), "diagonal", "heteroscedastic"),
])
def test_decoder_defaults_resolve_for_the_data_and_are_saved(options, y_shape, noise, variance):
    vae = VAE(latent_features=2, channels=(4,), num_blocks=1, **options)
    assert type(vae)(**vae.config()).config() == vae.config()  # unresolved before build
    vae.build(y_shape, 1)
    assert (vae.decoder_noise, vae.decoder_variance) == (noise, variance)
    rebuilt = VAE(**vae.config()).build(y_shape, 1)
    assert rebuilt.config() == vae.config() and rebuilt.state_dict().keys() == vae.state_dict().keys()


def test_vae_config_rebuilds_the_family():
    vae = VAE(latent_features=5, channels=(8, 16), prior="standard", kl_warmup_epochs=0, iwae_samples=32)
    rebuilt = make_family("vae", vae.config())
    assert isinstance(rebuilt, VAE) and rebuilt.config() == vae.config()
    assert isinstance(make_family("vae"), VAE)


# ------------------------------------------------------------------------------- through the estimators


def _maps(n, seed):
    """θ ~ U[0, 1]², x = θ₁ · (a smooth pattern) + θ₂ + 0.1 noise on a 16×16 grid."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 2, generator=g)
    grid = torch.linspace(0, math.pi, 16)
    pattern = torch.sin(grid)[:, None] * torch.cos(grid)[None, :]
    return theta, theta[:, :1, None] * pattern + theta[:, 1:, None] + 0.1 * torch.randn(n, 16, 16, generator=g)


@pytest.fixture(scope="module")
def map_emulator():
    prior = torch.distributions.Independent(torch.distributions.Uniform(torch.zeros(2), torch.ones(2)), 1)
    emu = simgen.LikelihoodEstimator(prior, VAE(latent_features=4, channels=(8, 8), num_blocks=1, iwae_samples=8))
    theta, x = _maps(128, seed=0)
    emu.fit(theta, x, seed=0, progress=False, max_epochs=2, batch_size=64)
    return emu


def test_map_vae_emulator_trains_and_samples(map_emulator):
    emu = map_emulator
    assert emu.x_kind == "map" and emu.history.epochs == 2
    theta, x = _maps(5, seed=1)
    assert emu.sample(3, theta[0]).shape == (3, 16, 16)
    assert emu.sample_batched(4, theta[:2]).shape == (2, 4, 16, 16)
    logq = emu.log_prob(x, theta, generator=torch.Generator().manual_seed(0))
    assert logq.shape == (5,) and torch.isfinite(logq).all()


def test_vae_estimators_save_and_load(tmp_path, map_emulator, conjugate, conjugate_data):
    post = simgen.PosteriorEstimator(conjugate.prior, VAE(latent_features=2, hidden_features=16, iwae_samples=16))
    post.fit(*conjugate_data, seed=0, progress=False, max_epochs=3)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    theta, x_obs = torch.randn(6, 2), torch.tensor([0.3, -0.2])
    for est, args, sample_at in ((post, (theta, x_obs), x_obs), (map_emulator, _maps(3, seed=2)[::-1], [0.5, 0.5])):
        path = tmp_path / f"{est.direction}.pt"
        est.save(path)
        loaded = simgen.load(path)
        assert loaded.density.density.config() == est.density.density.config()
        assert torch.allclose(loaded.log_prob(*args, generator=gen()), est.log_prob(*args, generator=gen()))
        assert torch.equal(loaded.sample(5, sample_at, generator=gen()), est.sample(5, sample_at, generator=gen()))


def test_bernoulli_vae_emulator_models_unstandardised_binary_data(conjugate):
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(200, 2, generator=g)
    x = (torch.rand(200, 6, generator=g) < torch.sigmoid(theta[:, :1])).float()
    emu = simgen.LikelihoodEstimator(conjugate.prior, VAE(latent_features=2, hidden_features=16,
                                                          likelihood="bernoulli", iwae_samples=8))
    emu.fit(theta, x, seed=0, progress=False, max_epochs=2)
    assert not emu.density.y_standardize.enabled
    assert set(emu.sample(20, theta[0]).unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(emu.log_prob(x[:5], theta[:5])).all()


def test_vae_emulator_gives_mcmc_a_deterministic_target(conjugate, conjugate_data):
    emu = simgen.LikelihoodEstimator(conjugate.prior, VAE(latent_features=2, hidden_features=16, iwae_samples=16))
    emu.fit(*conjugate_data, seed=0, progress=False, max_epochs=3)
    mcmc = emu.posterior(num_chains=10, warmup=3, thin=1, num_init=200, progress=False)
    theta, x_obs = torch.randn(8, 2), torch.tensor([[0.2, -0.4], [0.1, 0.0]])
    target = mcmc.log_prob(theta, x_obs)
    assert torch.equal(mcmc.log_prob(theta, x_obs), target)
    assert torch.allclose(mcmc.log_prob(theta[5:7], x_obs), target[5:7], atol=1e-5)  # whatever the batch
    assert mcmc.sample(20, x_obs, generator=torch.Generator().manual_seed(0)).shape == (20, 2)


# ------------------------------------------------------------------------------- the Fourier (stationary) decoder


def _dense_covariance(scale, height, width):
    """Σ = F* diag(λ) F built from dense unitary DFT matrices, λ_k = scale[radius index of |k|]², independently
    of the FFT code under test: ``[H W, H W]`` (float64)."""
    def dft(n):
        k = torch.arange(n, dtype=torch.float64)
        return torch.exp(-2j * math.pi * torch.outer(k, k) / n) / math.sqrt(n)

    F = torch.kron(dft(height), dft(width))  # row-major pixels, modes (k_y, k_x)
    ky = torch.fft.fftfreq(height, 1.0 / height).double()
    kx = torch.fft.fftfreq(width, 1.0 / width).double()
    r2 = ((ky[:, None] * width) ** 2 + (kx[None, :] * height) ** 2).round().long().reshape(-1)
    index = {v: i for i, v in enumerate(sorted(set(r2.tolist())))}
    lam = scale.double()[[index[v] for v in r2.tolist()]] ** 2
    cov = F.conj().T @ torch.diag(lam.to(F.dtype)) @ F
    assert cov.imag.abs().max() < 1e-12
    return cov.real


@pytest.mark.parametrize("height, width", [(4, 4), (4, 5), (3, 6)])
def test_radial_modes_count_every_mode_of_the_full_grid_once(height, width):
    modes = radial_modes(height, width)
    assert modes.shape == (height, width) and modes.group.shape == (height, width // 2 + 1)
    ky = torch.fft.fftfreq(height, 1.0 / height)
    kx = torch.fft.fftfreq(width, 1.0 / width)
    r2 = ((ky[:, None] * width) ** 2 + (kx[None, :] * height) ** 2).round().long()
    expected = torch.unique(r2, return_counts=True)[1].double()
    assert torch.equal(modes.counts, expected) and modes.counts.sum() == height * width


@pytest.mark.parametrize("height, width", [(4, 4), (4, 5)])
def test_stationary_normal_log_prob_equals_the_dense_gaussian(height, width):
    g = torch.Generator().manual_seed(0)
    modes = radial_modes(height, width)
    scale = 0.3 + torch.rand(modes.num_radii, generator=g, dtype=torch.float64)
    loc = torch.randn(height, width, generator=g, dtype=torch.float64)
    cov = _dense_covariance(scale, height, width)
    dense = torch.distributions.MultivariateNormal(loc.reshape(-1), covariance_matrix=cov)
    y = torch.randn(6, height, width, generator=g, dtype=torch.float64)
    field = StationaryNormal(loc.expand(6, -1, -1), scale.expand(6, -1), modes, channels=False)
    torch.testing.assert_close(field.log_prob(y), dense.log_prob(y.reshape(6, -1)), rtol=0, atol=1e-10)
    # two channels: independent fields, one spectrum each
    scale2 = torch.stack([scale, scale.flip(0)])
    two = StationaryNormal(torch.zeros(2, height, width, dtype=torch.float64), scale2, modes)
    y2 = torch.randn(3, 2, height, width, generator=g, dtype=torch.float64)
    expected = sum(torch.distributions.MultivariateNormal(
        torch.zeros(height * width, dtype=torch.float64), _dense_covariance(scale2[ch], height, width)
    ).log_prob(y2[:, ch].reshape(3, -1)) for ch in range(2))
    torch.testing.assert_close(two.log_prob(y2), expected, rtol=0, atol=1e-10)


def test_stationary_normal_draws_have_the_requested_power_spectrum():
    height, width, n = 8, 6, 4000
    modes = radial_modes(height, width)
    scale = torch.linspace(2.0, 0.2, modes.num_radii, dtype=torch.float64)  # a red spectrum
    field = StationaryNormal(torch.zeros(height, width, dtype=torch.float64), scale, modes, channels=False)
    draws = field.rsample((n,), generator=torch.Generator().manual_seed(0))
    power = torch.fft.rfft2(draws, norm="ortho").abs() ** 2  # E|r̂_k|² = λ_k for every stored mode
    per_radius = torch.zeros(modes.num_radii, dtype=torch.float64).index_add_(
        0, modes.group.reshape(-1), power.mean(0).reshape(-1)) / torch.bincount(modes.group.reshape(-1))
    # each |r̂_k|² is λ_k times an exponential (complex mode) or a χ²₁ (real mode): relative SD at most √2
    se = math.sqrt(2.0 / n) / torch.bincount(modes.group.reshape(-1)).double().sqrt()
    assert ((per_radius / scale**2 - 1).abs() < 4 * se).all()
    # the pixel covariance is the dense Σ, and the per-pixel variance is Σ_k λ_k / (H W)
    cov = _dense_covariance(scale, height, width)
    flat = draws.reshape(n, -1)
    sample_cov = flat.T @ flat / n
    assert (sample_cov - cov).abs().max() < 5 * cov.diagonal().max() * math.sqrt(2.0 / n)
    torch.testing.assert_close(field.variance, cov.diagonal().reshape(height, width))


def test_fourier_decoder_is_the_stationary_gaussian_of_the_decoder_mean_and_spectrum():
    torch.manual_seed(0)
    vae = VAE(latent_features=3, channels=(4, 8), num_blocks=1, decoder_noise="fourier").build((4, 4), 2)
    with torch.no_grad():  # a non-trivial spectrum of c
        vae.spectrum_net.output.weight.normal_(0.0, 0.3)
        z, c, y = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 4, 4)
        p = vae.decode(z, c)
        loc, scale = p.mean, p.scale  # scale [5, R]
        for i in range(5):
            cov = _dense_covariance(scale[i], 4, 4).float()
            dense = torch.distributions.MultivariateNormal(loc[i].reshape(-1), covariance_matrix=cov)
            torch.testing.assert_close(p.log_prob(y)[i], dense.log_prob(y[i].reshape(-1)), rtol=1e-5, atol=1e-4)
        assert torch.allclose(vae._log_likelihood(y, z, c), p.log_prob(y))
    assert "spectrum_net.output.weight" in vae.state_dict()
    assert not any(k.startswith("_mode") for k in vae.state_dict())  # derived from the shape, not saved


def test_unconditional_fourier_vae_learns_one_spectrum():
    vae = VAE(latent_features=2, channels=(4,), num_blocks=1, decoder_noise="fourier").build((2, 6, 6), None)
    assert vae.spectrum_net is None and vae.spectrum_params.shape == (2 * radial_modes(6, 6).num_radii,)
    y = torch.randn(4, 2, 6, 6)
    assert torch.isfinite(vae.log_prob(y, None, num_samples=4)).all()
    assert vae.sample(3, None).shape == (3, 2, 6, 6)


@pytest.fixture(scope="module")
def fourier_map_emulator():
    prior = torch.distributions.Independent(torch.distributions.Uniform(torch.zeros(2), torch.ones(2)), 1)
    emu = simgen.LikelihoodEstimator(prior, VAE(latent_features=4, channels=(8, 8), num_blocks=1, iwae_samples=8,
                                                decoder_noise="fourier"))
    theta, x = _maps(128, seed=0)
    emu.fit(theta, x, seed=0, progress=False, max_epochs=2, batch_size=64)
    return emu


def test_fourier_map_vae_trains_samples_and_round_trips(tmp_path, fourier_map_emulator):
    emu = fourier_map_emulator
    theta, x = _maps(5, seed=1)
    draws = emu.sample_batched(4, theta[:2], generator=torch.Generator().manual_seed(0))
    assert draws.shape == (2, 4, 16, 16) and torch.isfinite(draws).all()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    logq = emu.log_prob(x, theta, generator=gen())
    assert logq.shape == (5,) and torch.isfinite(logq).all()
    emu.save(tmp_path / "fourier.pt")
    loaded = simgen.load(tmp_path / "fourier.pt")
    assert loaded.density.density.config()["decoder_noise"] == "fourier"
    assert torch.allclose(loaded.log_prob(x, theta, generator=gen()), logq)
    assert torch.equal(loaded.sample(3, theta[0], generator=gen()), emu.sample(3, theta[0], generator=gen()))


def test_saved_map_vae_without_decoder_noise_keeps_its_diagonal_decoder_and_log_prob():
    payload = torch.load(FIXTURES / "likelihood_map_vae.pt", weights_only=True)
    family_config = json.loads(payload["config"])["family_config"]
    assert "decoder_noise" not in family_config  # written before the option existed
    assert VAE(**family_config).build((8, 8), 2).decoder_noise == "diagonal"  # it names its decoder_variance
    est = simgen.load(FIXTURES / "likelihood_map_vae.pt", device="cpu")
    assert est.density.density.decoder_noise == "diagonal"
    case = json.loads((FIXTURES / "expected.json").read_text())["likelihood_map_vae"]
    lp = est.log_prob(torch.tensor(case["y"]), torch.tensor(case["c"]), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lp, torch.tensor(case["log_prob"]), rtol=1e-5, atol=1e-5)


def test_fourier_spectrum_starts_at_the_first_training_batch_and_loaded_weights_are_kept():
    height, width, n = 8, 8, 2000
    modes = radial_modes(height, width)
    scale = torch.linspace(3.0, 0.3, modes.num_radii)
    field = StationaryNormal(torch.zeros(height, width), scale, modes, channels=False)
    y = field.rsample((n,), generator=torch.Generator().manual_seed(0))
    vae = VAE(latent_features=2, channels=(4,), num_blocks=1).build((height, width), 1)
    c = torch.zeros(n, 1)
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    vae.train()
    vae.loss(y, c)
    start = vae._spectrum_scale(c[:1], 1)[0, 0]
    assert ((start / scale - 1).abs() < 0.1).all()  # the batch's spectrum, within its sampling error
    vae.loss(y * 2, c)  # once only
    assert torch.equal(vae._spectrum_scale(c[:1], 1)[0, 0], start)
    fresh = VAE(**vae.config()).build((height, width), 1)
    fresh.load_state_dict(state)
    fresh.train()
    fresh.loss(y, c)  # loaded weights: no data-dependent start
    assert torch.allclose(fresh._spectrum_scale(c[:1], 1), torch.ones(1, 1, modes.num_radii))
