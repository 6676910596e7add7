"""Plug-in tests of the continuous-time likelihood code: the *exact* field of a Gaussian random field replaces
the network, so ``log_prob`` must equal the exact log-likelihood up to the solver's and the dropped terms' errors.

The field lives on a 16 × 16 torus with a known power spectrum P(k): its covariance is diagonal in the
orthonormal Fourier basis (Σ = Fᴴ diag(P) F). After the estimator's standardisation u = (x − m)/s the data are
N(μ, Λ) with μ = −m/s and Λ = diag(P)/s² in that basis, and every Gaussian path of them is Gaussian:

* diffusion: in variance-exploding units x = u + σ ε, the exact denoiser is
  D(x, σ) = E[u | x] = μ + Λ (Λ + σ² I)⁻¹ (x − μ), whose noise prediction (x − D)/σ is the exact score's;
* flow matching: y_τ = (1 − τ) u + τ ε has covariance C_τ = (1 − τ)² Λ + τ² I and the velocity
  E[ε − u | y_τ] = (τ I − (1 − τ) Λ) C_τ⁻¹ (y_τ − (1 − τ) μ) − μ.

Each is written as the family's network F (what the family adds to its standard-normal prediction) and plugged
into the family, which is wrapped in the estimator's :class:`~simgen.models.TransformedDensity`: the test runs
the real ``log_prob`` path (t_min, the prior at t = 1, the standardisation Jacobian, the ODE solver, the trace).
"""

import math

import pytest
import torch
from torch import nn

from simgen.models import CNF, Diffusion, TransformedDensity
from simgen.transforms import Standardize

SIZE = 16
D = SIZE * SIZE


def power_spectrum(size: int = SIZE) -> torch.Tensor:
    """A red spectrum P(k) ∝ (k² + k₀²)^(−3/2) plus a white floor, in float64, ``[size, size]``."""
    k = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    return 40.0 * (k2 + 1.0) ** -1.5 + 0.05


def gaussian_field(n: int, power: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """n draws ``[n, H, W]`` (float64) of the zero-mean stationary field with spectrum ``power``."""
    white = torch.randn(n, *power.shape, generator=generator, dtype=torch.float64)
    return torch.fft.ifft2(power.sqrt() * torch.fft.fft2(white, norm="ortho"), norm="ortho").real


def exact_log_likelihood(x: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, Σ) = −½ Σ_k |X_k|²/P_k − ½ Σ_k log P_k − D/2 log 2π with X = F x (orthonormal)."""
    modes = torch.fft.fft2(x.double(), norm="ortho")
    d = power.numel()
    return (-0.5 * (modes.abs() ** 2 / power).sum((-2, -1)) - 0.5 * power.log().sum()
            - 0.5 * d * math.log(2 * math.pi))


class _GaussianField(nn.Module):
    """What both exact fields share: the standardised field's mean μ and spectrum Λ."""

    def __init__(self, power: torch.Tensor, standardize: Standardize) -> None:
        super().__init__()
        scale, loc = float(standardize.scale), float(standardize.loc)
        self.register_buffer("lam", power / scale**2)
        self.mu = -loc / scale

    def solve(self, z: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        """diag(·)⁻¹ in the Fourier basis applied to maps ``[n, H, W]``."""
        return torch.fft.ifft2(torch.fft.fft2(z.double()) / diag).real

    def times(self, z: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(z.double()) * diag).real


class ExactDenoiser(_GaussianField):
    """The network F of a :class:`Diffusion` whose denoiser D(x, σ) = c_skip x + c_out F(c_in x, c_noise) is the
    exact E[u | u + σε = x] = μ + Λ (Λ + σ² I)⁻¹ (x − μ) (so ε̂ = (x − D)/σ is the exact noise prediction), for
    whichever preconditioning the family uses."""

    def __init__(self, power: torch.Tensor, standardize: Standardize, diffusion: Diffusion) -> None:
        super().__init__(power, standardize)
        self.preconditioning = diffusion.preconditioning

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, c=None) -> torch.Tensor:
        level, c_skip, c_out, c_in, _ = (a.double()[:, None, None] for a in self.preconditioning(t.double()))
        x = x_in.double() / c_in
        denoised = self.mu + self.times(self.solve(x - self.mu, self.lam + level**2), self.lam)
        return ((denoised - c_skip * x) / c_out).to(x_in.dtype)


class ExactVelocity(_GaussianField):
    """F(y, τ) = v(y, τ) − (2τ − 1) y / ((1 − τ)² + τ²) for the exact flow-matching velocity (a :class:`CNF`'s net)."""

    def forward(self, y: torch.Tensor, tau: torch.Tensor, c=None) -> torch.Tensor:
        t = tau.double()[:, None, None]
        cov = (1 - t) ** 2 * self.lam + t**2
        centred = self.solve(y - (1 - t) * self.mu, cov)
        v = self.times(centred, t - (1 - t) * self.lam) - self.mu
        return (v - (2 * t - 1) / ((1 - t) ** 2 + t**2) * y.double()).to(y.dtype)


def plugged(family: str, x_train: torch.Tensor, power: torch.Tensor, **options) -> TransformedDensity:
    """The family with its network replaced by the exact field, wrapped as the estimator wraps it (maps: one
    scalar standardisation per channel, fitted on ``x_train``)."""
    size = x_train.shape[-1]
    standardize = Standardize((size, size), per_channel=True).fit(x_train.float())
    if family == "diffusion_edm":
        options = dict(options, schedule="edm")
    model = (CNF if family == "cnf" else Diffusion)(channels=(8,), blocks_per_level=1, attention=False,
                                                    **options).build((size, size), None)
    model.net = (ExactDenoiser(power, standardize, model) if family.startswith("diffusion")
                 else ExactVelocity(power, standardize))
    return TransformedDensity(model, standardize, None, None)


@pytest.fixture(scope="module")
def field():
    g = torch.Generator().manual_seed(0)
    power = power_spectrum()
    return power, gaussian_field(2000, power, g).float(), gaussian_field(6, power, g).float()


FAMILIES = ["diffusion", "diffusion_edm", "cnf"]


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_field_log_prob_is_the_exact_log_likelihood(field, family):
    """Exact trace (D backward passes per evaluation), dopri5 at the family's tolerance: |error| ≤ 0.002
    nats/pixel on each map — in fact ≤ 2·10⁻⁴, well below what a dropped term would cost (the diffusion's
    data-end scale D log(1 − τ₀) is ≈ τ₀ ≈ 10⁻³ nats/pixel, its prior's α₁² term ≈ ½α₁²·Λ per mode)."""
    power, x_train, x = field
    density = plugged(family, x_train, power, exact_trace_max_dim=D)
    got = density.log_prob(x[:2], None).double()
    want = exact_log_likelihood(x[:2], power)
    err = (got - want) / D
    assert err.abs().max() <= 2e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_stochastic_trace_is_unbiased_and_its_standard_error_is_honest(field, family):
    """The default (coloured-probe) estimate: the mean error over independent rows is 0 within 4 standard
    errors; ``log_prob_with_se``'s standard errors match the spread of the errors; the mean agrees with the
    exact-trace value to 0.002 nats/pixel per map."""
    power, x_train, x = field
    density = plugged(family, x_train, power, log_prob_method="rk4", log_prob_steps=12)
    model = density.density
    u, logdet = density.to_latent(x)
    want = exact_log_likelihood(x, power) - logdet.double()
    rows = u.repeat(8, 1, 1)
    logp, se = model.log_prob_with_se(rows, None, num_probes=4)
    err = logp.double() - want.repeat(8)
    assert (se > 0).all()
    assert err.mean().abs() <= 4 * err.std() / math.sqrt(err.numel())
    assert 0.5 < (err.std() / se.double().mean()).item() < 2.0
    assert (err.abs() / D).max() <= 0.002



@pytest.mark.parametrize(("family", "method", "steps", "nfe"), [
    ("diffusion_edm", "heun", 17, 34), ("diffusion", "heun", 17, 34), ("cnf", "heun", 17, 34),
    ("diffusion_edm", "edm", 60, 119)])
def test_deterministic_samplers_with_the_exact_field_draw_the_field(field, family, method, steps, nfe):
    """The probability-flow samplers on the exact field: the sampled maps' Fourier power matches P(k) (mean of
    |X_k|²/P_k over modes and maps within 5 of its standard errors, no mode off by more than 40 %), and their
    exact log-likelihoods have the field's mean (|z| < 4). The linear-path Heun sampler does it in 34 network
    evaluations; EDM's Heun sampler on Karras noise levels needs more on this field (README)."""
    power, x_train, x = field
    density = plugged(family, x_train, power, method=method, steps=steps)
    maps = density.sample(256, None, generator=torch.Generator().manual_seed(3)).double()
    assert density.density.last_nfe == nfe
    ratio = torch.fft.fft2(maps, norm="ortho").abs() ** 2 / power
    assert (ratio.mean() - 1).abs() < 5 * math.sqrt(2 / ratio.numel())
    assert (ratio.mean(0) - 1).abs().max() < 0.4
    ll = exact_log_likelihood(maps, power)
    reference = exact_log_likelihood(gaussian_field(256, power, torch.Generator().manual_seed(4)), power)
    z = (ll.mean() - reference.mean()) / math.sqrt(ll.var() / 256 + reference.var() / 256)
    assert z.abs() < 4


def test_standard_error_is_zero_for_the_exact_trace_and_probe_counts_are_checked():
    model = CNF(hidden_features=8, num_blocks=1, time_features=4, log_prob_method="rk4", log_prob_steps=2)
    model.build((3,), None)
    with torch.no_grad():  # a fresh network is zero: its Jacobian is diagonal and every probe exact
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    logp, se = model.log_prob_with_se(y, None)
    assert torch.equal(se, torch.zeros(4)) and torch.allclose(logp, model.log_prob(y, None))
    # Rademacher probes in 3 dimensions give one of 4 values of the off-diagonal part, so a few groups can all
    # agree on a row by chance (1 in 16 for 3 groups): 8 groups, from a fixed seed, whatever ran before
    with torch.random.fork_rng():
        torch.manual_seed(0)
        _, se = model.log_prob_with_se(y, None, exact=False, num_probes=8)
    assert (se > 0).all()
    with pytest.raises(ValueError, match="num_probes"):
        model.log_prob(y, None, exact=False, num_probes=0)
    with pytest.raises(ValueError, match="trace_probes"):
        CNF(trace_probes="gaussian")
