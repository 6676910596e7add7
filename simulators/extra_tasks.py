r"""Benchmark tasks beyond sbibm's four, chosen to test defaults away from the tasks they were tuned on: other
dimensions of :math:`\theta` and :math:`x`, a box prior in 10 dimensions, and count-valued statistics. Each has an
exact likelihood and a reference posterior.

============================  ====  =====  ==============  ===============================================
task                          d_θ   x      prior           reference posterior
============================  ====  =====  ==============  ===============================================
``gaussian_linear_uniform``   10    10     box [-1, 1]     exact truncated normals (m ≥ 1 observations)
``gaussian_signal``           3     20     Gaussian        analytic correlated Gaussian (m ≥ 1)
``poisson_glm``               4     12     Gaussian        stretch-move ensemble MCMC on the exact likelihood
============================  ====  =====  ==============  ===============================================

``gaussian_linear_uniform`` is sbibm's task of that name; the other two are simgen's own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from simulators._ensemble import stretch_move_sample
from simulators.base import Simulator, box_uniform, register
from simulators.sbibm_tasks import GaussianLinear

__all__ = ["GaussianLinearUniform", "GaussianSignal", "PoissonGLM"]

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


@register("gaussian_linear_uniform")
class GaussianLinearUniform(GaussianLinear):
    r"""Gaussian linear with a uniform prior (sbibm): :math:`\theta \sim U[-1, 1]^d`,
    :math:`x \mid \theta \sim N(\theta, 0.1 I)` (0.1 a variance), :math:`d = 10` by default: the simulator and
    likelihood of :class:`~simulators.sbibm_tasks.GaussianLinear` under a box prior.

    Posterior: with :math:`m` i.i.d. observations every coordinate is independent,

    .. math:: \theta_i \mid x_{1:m} \sim N\big(\bar x_i, 0.1 / m\big) \text{ truncated to } [-1, 1],

    sampled exactly by the inverse CDF: :math:`u \sim U(\Phi(a_i), \Phi(b_i))`,
    :math:`\theta_i = \bar x_i + \sigma \Phi^{-1}(u)` with :math:`a_i = (-1 - \bar x_i)/\sigma`,
    :math:`b_i = (1 - \bar x_i)/\sigma`, in float64 (an observation more than a few σ outside the box puts
    both bounds far in one tail; the sampler works in the lower tail, mirroring where needed, since
    :math:`\Phi` keeps its relative precision there and loses it near 1).
    """

    name = "gaussian_linear_uniform"

    def __init__(self, dim: int = 10) -> None:
        super().__init__(dim)
        self.prior = box_uniform(-torch.ones(dim), torch.ones(dim))

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        k, m, d = x.shape
        mean = x.mean(1, keepdim=True)  # [k, 1, d]
        std = math.sqrt(self.variance / m)
        # mirror where the box lies above the mean, so the bounds sit in Φ's lower tail (no cancellation near 1)
        sign = torch.where(mean < 0, -1.0, 1.0).to(F64)
        lo, hi = sign * (-1 - mean) / std, sign * (1 - mean) / std
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        c_lo, c_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
        u = torch.rand(k, num_samples, d, dtype=F64, generator=generator)
        z = torch.special.ndtri((c_lo + u * (c_hi - c_lo)).clamp(1e-300, 1 - 1e-16))
        return (mean + sign * std * z.clamp(lo, hi)).clamp(-1.0, 1.0)


@register("gaussian_signal")
class GaussianSignal(Simulator):
    r"""A noisy signal of three overlapping bumps: :math:`\theta \sim N(0, I_3)`,

    .. math:: x_k = \sum_{j=1}^{3} \theta_j \phi_j(t_k) + \sigma \varepsilon_k, \quad
        \phi_j(t) = \exp\!\big(-(t - c_j)^2 / w^2\big), \quad \varepsilon_k \sim N(0, 1),

    at :math:`t_k = k / 19`, :math:`k = 0, \dots, 19`, with centres :math:`c = (0.25, 0.5, 0.75)`, width
    :math:`w = 0.3` and :math:`\sigma = 0.5`: 20 numbers about 3 parameters, whose overlapping bumps make the
    posterior correlated. With design :math:`A_{kj} = \phi_j(t_k)` and :math:`m` i.i.d. observations the
    posterior is conjugate,

    .. math:: \theta \mid x_{1:m} \sim N\big(\Lambda^{-1} A^\top \textstyle\sum_i x_i / \sigma^2,\; \Lambda^{-1}\big),
        \quad \Lambda = I + m A^\top A / \sigma^2.
    """

    name = "gaussian_signal"
    parameter_names = ["amplitude_1", "amplitude_2", "amplitude_3"]
    x_shape = (20,)
    tractable = True
    centres = (0.25, 0.5, 0.75)
    width = 0.3
    sigma = 0.5

    def __init__(self) -> None:
        self.prior = MultivariateNormal(torch.zeros(3), torch.eye(3))
        t = torch.linspace(0, 1, self.x_shape[0], dtype=F64)
        self.design = torch.exp(-(((t[:, None] - torch.tensor(self.centres, dtype=F64)) / self.width) ** 2))

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        signal = theta.to(F64) @ self.design.T
        return signal + self.sigma * torch.randn(signal.shape, dtype=F64, generator=generator)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        residual = x - theta @ self.design.T
        return -0.5 * x.shape[-1] * (LOG_2PI + 2 * math.log(self.sigma)) - 0.5 * (residual**2).sum(-1) / self.sigma**2

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        k, m, _ = x.shape
        precision = torch.eye(3, dtype=F64) + m * self.design.T @ self.design / self.sigma**2
        covariance = torch.linalg.inv(precision)
        mean = (x.sum(1) @ self.design / self.sigma**2) @ covariance  # [k, 3] (covariance is symmetric)
        chol = torch.linalg.cholesky(covariance)
        noise = torch.randn(k, num_samples, 3, dtype=F64, generator=generator)
        return mean[:, None] + noise @ chol.T


@register("poisson_glm")
class PoissonGLM(Simulator):
    r"""Counts from a Poisson GLM: :math:`\theta \sim N(0, I_4)`, twelve independent counts

    .. math:: x_k \sim \mathrm{Poisson}(\lambda_k), \quad \log \lambda_k = \log 5 + W_k \theta, \quad
        W_{kj} = 0.6 \cos\!\big(\pi (2k + 1)(j + 1) / 24\big),

    :math:`k = 0, \dots, 11`, :math:`j = 0, \dots, 3` (a fixed design of cosines): small integers, so every
    dimension of :math:`x` is discrete (``x_discrete``). Likelihood
    :math:`\log p(x \mid \theta) = \sum_k x_k \log \lambda_k - \lambda_k - \log x_k!`.

    Posterior: log-concave, unimodal. The reference runs one stretch-move ensemble per observation
    (:func:`simulators._ensemble.stretch_move_sample`): ``num_walkers`` walkers at the best of ``num_init`` prior
    draws plus a Gaussian jitter of scale ``init_scale``, ``burn_in`` steps discarded, a snapshot of all walkers
    every ``thin`` steps.
    """

    name = "poisson_glm"
    parameter_names = ["theta_1", "theta_2", "theta_3", "theta_4"]
    x_shape = (12,)
    x_discrete = tuple(range(12))
    tractable = True
    base_rate = 5.0

    def __init__(
        self, *, num_walkers: int = 64, burn_in: int = 500, thin: int = 5, num_init: int = 10_000,
        init_scale: float = 0.01,
    ) -> None:
        self.prior = MultivariateNormal(torch.zeros(4), torch.eye(4))
        k, j = torch.arange(12, dtype=F64)[:, None], torch.arange(4, dtype=F64)
        self.design = 0.6 * torch.cos(math.pi * (2 * k + 1) * (j + 1) / 24)  # [12, 4]
        self.num_walkers, self.burn_in, self.thin = num_walkers, burn_in, thin
        self.num_init, self.init_scale = num_init, init_scale

    def _log_rate(self, theta: Tensor) -> Tensor:
        return math.log(self.base_rate) + theta @ self.design.T

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.poisson(self._log_rate(theta.to(F64)).exp(), generator=generator)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        log_rate = self._log_rate(theta)
        return (x * log_rate - log_rate.exp() - torch.lgamma(x + 1)).sum(-1)

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        def log_post(theta: Tensor, x: Tensor = x) -> Tensor:  # [k, K, 4], x [k, m, 12] → [k, K]
            log_l = self._log_likelihood(theta[:, :, None], x[:, None]).sum(-1)
            return log_l - 0.5 * (theta**2).sum(-1)

        best = []
        for xi in x:  # the best of num_init prior draws, one observation at a time
            draws = torch.randn(self.num_init, 4, dtype=F64, generator=generator)
            best.append(draws[log_post(draws[None], xi[None])[0].argmax()])
        walkers = torch.stack(best)[:, None] + self.init_scale * torch.randn(
            len(x), self.num_walkers, 4, dtype=F64, generator=generator
        )
        return stretch_move_sample(log_post, walkers, num_samples, burn_in=self.burn_in, thin=self.thin,
                                   generator=generator)
