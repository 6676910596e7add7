r"""Four standard SBI benchmark tasks (Lueckmann et al. 2021, "Benchmarking simulation-based inference";
definitions of ``sbibm/tasks/<task>/task.py``), with exact likelihoods and reference posteriors.

============================  ====  =====  ===========================================================
task                          d_θ   x      reference posterior
============================  ====  =====  ===========================================================
``two_moons``                 2     2      exact inversion + rejection sampler (m ≥ 1 observations)
``slcp``                      5     8      stretch-move ensemble MCMC on the exact likelihood
``gaussian_linear``           10    10     analytic Gaussian (m ≥ 1 observations)
``gaussian_mixture``          2     2      exact mixture of Gaussians + rejection (1 ≤ m ≤ 12)
============================  ====  =====  ===========================================================

Corrections to sbibm: the two-moons likelihood carries the polar Jacobian :math:`1/(\pi\rho)` and its
posterior sampler rejects :math:`p'_1 < x_1`; the mixture draws its component per row (sbibm PR #54).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from simulators._ensemble import stretch_move_sample
from simulators.base import Simulator, box_uniform, register

__all__ = ["SLCP", "GaussianLinear", "GaussianMixture", "TwoMoons"]

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)
SQRT2 = math.sqrt(2.0)


def _rejection(propose: Callable[[int], tuple[Tensor, Tensor]], num_samples: int, max_proposals: int = 10**8) -> Tensor:
    """Draw proposals in batches, ``propose(n) -> (samples [n, d], accepted [n])``, until ``num_samples``."""
    kept, num_kept, num_proposed, batch = [], 0, 0, max(2 * num_samples, 1024)
    while num_kept < num_samples:
        if num_proposed >= max_proposals:
            raise RuntimeError(
                f"rejection sampler accepted {num_kept} of {num_proposed} proposals: acceptance too low "
                "(is the observation possible under the prior? with many i.i.d. observations, use fewer)"
            )
        theta, accepted = propose(batch)
        kept.append(theta[accepted])
        num_kept += len(kept[-1])
        num_proposed += batch
        rate = max(num_kept, 1) / num_proposed
        batch = min(int(1.2 * (num_samples - num_kept) / rate) + 64, 10**6)
    return torch.cat(kept)[:num_samples]


def _box_indicator(theta: Tensor, low: float, high: float) -> Tensor:
    return ((theta >= low) & (theta <= high)).all(-1)


# ------------------------------------------------------------------------------------------- two moons


@register("two_moons")
class TwoMoons(Simulator):
    r"""Two moons (Greenberg, Nonnenmacher & Macke 2019), :math:`\theta \sim U[-1, 1]^2`.

    Simulator: :math:`a \sim U(-\pi/2, \pi/2)`, :math:`r \sim N(0.1, 0.01^2)`,
    :math:`p = (r \cos a + 0.25,\; r \sin a)`, and with :math:`z_0 = (\theta_1 + \theta_2)/\sqrt2`,
    :math:`z_1 = (-\theta_1 + \theta_2)/\sqrt2`,

    .. math:: x = p + (-|z_0|,\; z_1).

    Likelihood: with :math:`u = x_1 + |z_0| - 0.25`, :math:`v = x_2 - z_1`, :math:`\rho = \sqrt{u^2 + v^2}`,

    .. math:: p(x \mid \theta) = \frac{N(\rho;\, 0.1, 0.01^2)}{\pi \rho}\, \mathbb{1}[u > 0],

    since :math:`a` has density :math:`1/\pi` and :math:`(u, v) = \rho (\cos a, \sin a)` has area element
    :math:`\rho\, d\rho\, da` (the Jacobian :math:`1/(\pi\rho)` is missing in sbibm's ``_likelihood``).

    Posterior: the likelihood depends on :math:`\theta` through :math:`(|z_0|, z_1)` only, and the rotation
    :math:`\theta \mapsto z` has unit Jacobian. So draw noise :math:`p'` as above, set
    :math:`|z_0| = p'_1 - x_1` (reject if negative), :math:`z_1 = x_2 - p'_2`, give :math:`z_0` a random sign
    and map back, :math:`\theta = ((z_0 - z_1)/\sqrt2, (z_0 + z_1)/\sqrt2)`, rejecting outside the prior:
    two mirrored moons (:math:`\theta \mapsto (-\theta_2, -\theta_1)`). For :math:`m > 1` i.i.d.
    observations, proposals conditioned on :math:`x_1` are accepted with probability
    :math:`\prod_{j \ge 2} p(x_j \mid \theta) / M`, :math:`M = \max_\rho N(\rho; 0.1, 0.01^2)/(\pi\rho)`
    (exact, but the acceptance falls with :math:`m`).
    """

    name = "two_moons"
    parameter_names = ["theta_1", "theta_2"]
    x_shape = (2,)
    tractable = True
    mu_r, sigma_r, shift = 0.1, 0.01, 0.25

    def __init__(self) -> None:
        self.prior = box_uniform(-torch.ones(2), torch.ones(2))

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``p [n, 2]``: a point of the noise half-ring."""
        a = math.pi * (torch.rand(n, dtype=F64, generator=generator) - 0.5)
        r = self.mu_r + self.sigma_r * torch.randn(n, dtype=F64, generator=generator)
        return torch.stack((r * torch.cos(a) + self.shift, r * torch.sin(a)), dim=-1)

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        theta = theta.to(F64)
        z0 = (theta[:, 0] + theta[:, 1]) / SQRT2
        z1 = (theta[:, 1] - theta[:, 0]) / SQRT2
        return self._noise(len(theta), generator) + torch.stack((-z0.abs(), z1), dim=-1)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        z0 = (theta[..., 0] + theta[..., 1]) / SQRT2
        z1 = (theta[..., 1] - theta[..., 0]) / SQRT2
        u = x[..., 0] + z0.abs() - self.shift
        rho = torch.hypot(u, x[..., 1] - z1)
        log_p = self._log_radial(rho)
        return torch.where(u > 0, log_p, torch.full_like(log_p, -math.inf))

    def _log_radial(self, rho: Tensor | float) -> Tensor:
        r""":math:`\log N(\rho; \mu_r, \sigma_r^2) - \log(\pi\rho)`."""
        rho = torch.as_tensor(rho, dtype=F64)
        z = (rho - self.mu_r) / self.sigma_r
        return -0.5 * z**2 - math.log(self.sigma_r) - 0.5 * LOG_2PI - torch.log(math.pi * rho)

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        return torch.stack([self._posterior_one(xi, num_samples, generator) for xi in x])

    def _posterior_one(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        # M = max_ρ N(ρ)/(πρ): d/dρ [-(ρ-μ)²/2σ² - log ρ] = 0  ⇔  ρ² - μρ + σ² = 0.
        rho_max = 0.5 * (self.mu_r + math.sqrt(self.mu_r**2 - 4 * self.sigma_r**2))
        log_bound = self._log_radial(rho_max).item()

        def propose(n: int) -> tuple[Tensor, Tensor]:
            p = self._noise(n, generator)
            abs_z0, z1 = p[:, 0] - x[0, 0], x[0, 1] - p[:, 1]
            sign = 2.0 * torch.randint(0, 2, (n,), generator=generator, dtype=F64) - 1.0
            z0 = sign * abs_z0
            theta = torch.stack(((z0 - z1) / SQRT2, (z0 + z1) / SQRT2), dim=-1)
            accepted = (abs_z0 >= 0) & _box_indicator(theta, -1.0, 1.0)
            if len(x) > 1:  # further i.i.d. observations: accept with prob ∏_j p(x_j|θ) / M^(m-1)
                log_l = self._log_likelihood(theta[:, None], x[None, 1:]).sum(-1) - (len(x) - 1) * log_bound
                u = torch.rand(n, dtype=F64, generator=generator)
                accepted &= torch.log(u) < log_l
            return theta, accepted

        return _rejection(propose, num_samples)


# ------------------------------------------------------------------------------------------------ SLCP


@register("slcp")
class SLCP(Simulator):
    r"""Simple likelihood, complex posterior (Papamakarios, Sterratt & Murray 2019).

    :math:`\theta \sim U[-3, 3]^5`; :math:`x = (x_1, \dots, x_4)` with i.i.d.
    :math:`x_j \sim N(m_\theta, S_\theta)`, flattened to 8 numbers in the order
    :math:`(x_{1,1}, x_{1,2}, x_{2,1}, \dots, x_{4,2})`, with

    .. math::
        m_\theta = (\theta_1, \theta_2), \quad s_1 = \theta_3^2, \quad s_2 = \theta_4^2, \quad
        \rho = \tanh\theta_5, \quad
        S_\theta = \begin{pmatrix} s_1^2 & \rho s_1 s_2 \\ \rho s_1 s_2 & s_2^2 \end{pmatrix} + 10^{-6} I

    (the standard deviations are :math:`\theta_3^2, \theta_4^2`; :math:`10^{-6} I` is sbibm's jitter).
    Likelihood: :math:`\log p(x \mid \theta) = \sum_{j=1}^4 \log N(x_j; m_\theta, S_\theta)`.

    Posterior: :math:`\theta_3 \to -\theta_3` and :math:`\theta_4 \to -\theta_4` leave likelihood and prior
    invariant, giving four symmetric modes. The reference samples the half-space
    :math:`\theta_3, \theta_4 \ge 0` (one mode) with a stretch-move ensemble
    (:func:`simulators._ensemble.stretch_move_sample`): ``num_walkers`` walkers started at the best of
    ``num_init`` prior draws plus a Gaussian jitter of scale ``init_scale``, ``burn_in`` steps discarded,
    then a snapshot of all walkers every ``thin`` steps; it finally flips the signs of :math:`\theta_3` and
    :math:`\theta_4` independently at random. With the defaults, :math:`10^4` samples (40 snapshots) take
    about 1 s on one core; SBC on 500 prior draws shows no miscalibration. ``m`` i.i.d. observations add
    their log-likelihoods; ``reference_posterior_batched`` runs one ensemble per observation, vectorised.
    """

    name = "slcp"
    parameter_names = ["theta_1", "theta_2", "theta_3", "theta_4", "theta_5"]
    x_shape = (8,)
    tractable = True
    jitter = 1e-6

    def __init__(
        self,
        *,
        num_walkers: int = 256,
        burn_in: int = 1000,
        thin: int = 10,
        num_init: int = 100_000,
        init_scale: float = 0.01,
    ) -> None:
        self.prior = box_uniform(-3 * torch.ones(5), 3 * torch.ones(5))
        self.num_walkers, self.burn_in, self.thin = num_walkers, burn_in, thin
        self.num_init, self.init_scale = num_init, init_scale

    def _covariance(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(S_11, S_12, S_22, det S)``, each ``[...]``, from ``theta [..., 5]``."""
        s1, s2 = theta[..., 2] ** 2, theta[..., 3] ** 2
        rho = torch.tanh(theta[..., 4])
        eps = self.jitter
        s11, s22, s12 = s1**2 + eps, s2**2 + eps, rho * s1 * s2
        # det = s1² s2² (1 - ρ²) + ε (s1² + s2²) + ε², with 1 - tanh² = cosh⁻² (no cancellation)
        det = (s1 * s2) ** 2 * torch.cosh(theta[..., 4]) ** -2 + eps * (s1**2 + s2**2) + eps**2
        return s11, s12, s22, det

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        theta = theta.to(F64)
        s11, s12, s22, det = self._covariance(theta)
        l11 = s11.sqrt()  # Cholesky factor of the 2×2 covariance
        l21, l22 = s12 / l11, (det / s11).sqrt()
        eps = torch.randn(len(theta), 4, 2, dtype=F64, generator=generator)
        x1 = theta[:, None, 0] + l11[:, None] * eps[..., 0]
        x2 = theta[:, None, 1] + l21[:, None] * eps[..., 0] + l22[:, None] * eps[..., 1]
        return torch.stack((x1, x2), dim=-1).reshape(len(theta), 8)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """Broadcasts over leading dimensions: ``theta [..., 5]``, ``x [..., 8]`` → ``[...]``."""
        s11, s12, s22, det = (c[..., None] for c in self._covariance(theta))
        x = x.unflatten(-1, (4, 2))
        d1, d2 = x[..., 0] - theta[..., None, 0], x[..., 1] - theta[..., None, 1]
        quad = (s22 * d1**2 - 2 * s12 * d1 * d2 + s11 * d2**2) / det
        return (-LOG_2PI - 0.5 * torch.log(det) - 0.5 * quad).sum(-1)

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        low = torch.tensor([-3.0, -3.0, 0.0, 0.0, -3.0], dtype=F64)
        high = torch.full((5,), 3.0, dtype=F64)

        def log_post(theta: Tensor, x: Tensor = x) -> Tensor:  # [k, K, 5], x [k, m, 8] → [k, K], half-space
            log_l = self._log_likelihood(theta[:, :, None], x[:, None]).sum(-1)
            inside = ((theta >= low) & (theta <= high)).all(-1)
            return torch.where(inside, log_l, torch.full_like(log_l, -math.inf))

        best = []
        for xi in x:  # the best of num_init prior draws on the half-space, one observation at a time
            draws = low + (high - low) * torch.rand(self.num_init, 5, dtype=F64, generator=generator)
            best.append(draws[log_post(draws[None], xi[None])[0].argmax()])
        walkers = torch.stack(best)[:, None] + self.init_scale * torch.randn(
            len(x), self.num_walkers, 5, dtype=F64, generator=generator
        )
        walkers = torch.where(walkers < low, 2 * low - walkers, walkers)  # reflect into the box
        walkers = torch.where(walkers > high, 2 * high - walkers, walkers)
        samples = stretch_move_sample(
            log_post, walkers, num_samples, burn_in=self.burn_in, thin=self.thin, generator=generator
        )
        flips = 2.0 * torch.randint(0, 2, (*samples.shape[:-1], 2), generator=generator, dtype=F64) - 1.0
        return torch.cat((samples[..., :2], samples[..., 2:4] * flips, samples[..., 4:]), dim=-1)


# ------------------------------------------------------------------------------------- Gaussian linear


@register("gaussian_linear")
class GaussianLinear(Simulator):
    r"""Gaussian linear (sbibm): :math:`\theta \sim N(0, 0.1 I)`, :math:`x \mid \theta \sim N(\theta, 0.1 I)`.

    Both 0.1 are **variances** (sbibm builds ``precision = inverse(0.1 I)``). With :math:`m` i.i.d.
    observations the posterior is conjugate:

    .. math:: \theta \mid x_{1:m} \sim N\Big(\frac{1}{m+1} \sum_j x_j,\; \frac{0.1}{m+1} I_d\Big),

    i.e. :math:`N(x/2, 0.05 I)` for one observation. ``dim`` (default 10) sets :math:`d`.
    """

    name = "gaussian_linear"
    tractable = True
    variance = 0.1

    def __init__(self, dim: int = 10) -> None:
        self.parameter_names = [f"theta_{i + 1}" for i in range(dim)]
        self.x_shape = (dim,)
        self.prior = MultivariateNormal(torch.zeros(dim), self.variance * torch.eye(dim))

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        return theta + math.sqrt(self.variance) * torch.randn(theta.shape, generator=generator)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        log_norm = -0.5 * theta.shape[-1] * (LOG_2PI + math.log(self.variance))
        return log_norm - 0.5 * ((x - theta) ** 2).sum(-1) / self.variance

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        k, m, d = x.shape
        mean = x.sum(1, keepdim=True) / (m + 1)
        std = math.sqrt(self.variance / (m + 1))
        return mean + std * torch.randn(k, num_samples, d, dtype=F64, generator=generator)


# ------------------------------------------------------------------------------------ Gaussian mixture


@register("gaussian_mixture")
class GaussianMixture(Simulator):
    r"""Gaussian mixture (Sisson et al. 2007; Beaumont et al. 2009), :math:`\theta \sim U[-10, 10]^2`,

    .. math:: p(x \mid \theta) = \tfrac12 N(x; \theta, I) + \tfrac12 N(x; \theta, 0.01 I),

    with the component drawn independently for every row (sbibm PR #54).

    Posterior: :math:`\prod_{j=1}^m p(x_j \mid \theta)` expands into :math:`2^m` products of Gaussians in
    :math:`\theta`. For a component choice :math:`c \in \{0, 1\}^m` with variances :math:`\sigma_j^2`,
    :math:`\lambda = \sum_j \sigma_j^{-2}` and :math:`\mu = \lambda^{-1} \sum_j x_j / \sigma_j^2`,

    .. math::
        \prod_j N(x_j; \theta, \sigma_j^2 I) = w_c\, N(\theta; \mu, \lambda^{-1} I), \quad
        \log w_c = \sum_j \Big[-\tfrac d2 \log(2\pi\sigma_j^2) - \frac{|x_j - \mu|^2}{2\sigma_j^2}\Big]
        + \tfrac d2 \log\frac{2\pi}{\lambda}.

    So the posterior is the mixture :math:`\sum_c w_c N(\mu_c, \lambda_c^{-1} I)` truncated to the prior box:
    pick :math:`c \propto w_c`, draw, reject outside the box. For :math:`m = 1`, :math:`w_c = 1` and
    :math:`\mu = x`: sbibm's sampler. Enumerating :math:`2^m` components limits this to :math:`m \le 12`.
    """

    name = "gaussian_mixture"
    parameter_names = ["theta_1", "theta_2"]
    x_shape = (2,)
    tractable = True
    scales = (1.0, 0.1)
    max_observations = 12

    def __init__(self) -> None:
        self.prior = box_uniform(-10 * torch.ones(2), 10 * torch.ones(2))

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        broad = torch.rand(len(theta), 1, generator=generator) < 0.5
        scale = torch.where(broad, self.scales[0], self.scales[1])
        return theta + scale * torch.randn(theta.shape, generator=generator)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        sq = ((x - theta) ** 2).sum(-1)
        d = theta.shape[-1]
        log_components = [math.log(0.5) - 0.5 * sq / s**2 - d * math.log(s) - 0.5 * d * LOG_2PI for s in self.scales]
        return torch.logsumexp(torch.stack(log_components), dim=0)

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        m = x.shape[1]
        if m > self.max_observations:
            raise NotImplementedError(
                f"gaussian_mixture: the exact reference posterior enumerates 2^m mixture components and "
                f"supports m <= {self.max_observations} i.i.d. observations, got m = {m}"
            )
        return torch.stack([self._posterior_one(xi, num_samples, generator) for xi in x])

    def _posterior_one(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        m, d = x.shape
        choice = (torch.arange(2**m)[:, None] >> torch.arange(m)) & 1  # [2^m, m]
        var = torch.tensor(self.scales, dtype=F64)[choice] ** 2
        lam = (1 / var).sum(-1)  # [2^m]
        mu = (x / var[..., None]).sum(1) / lam[:, None]  # [2^m, d]
        log_terms = -0.5 * d * torch.log(2 * math.pi * var) - 0.5 * ((x - mu[:, None]) ** 2).sum(-1) / var
        log_w = log_terms.sum(-1) + 0.5 * d * torch.log(2 * math.pi / lam)
        probs = torch.softmax(log_w, dim=0)

        def propose(n: int) -> tuple[Tensor, Tensor]:
            c = torch.multinomial(probs, n, replacement=True, generator=generator)
            noise = torch.randn(n, d, dtype=F64, generator=generator)
            theta = mu[c] + noise / lam[c, None].sqrt()
            return theta, _box_indicator(theta, -10.0, 10.0)

        return _rejection(propose, num_samples)
