r"""Conditional score-based diffusion: a variance-preserving SDE trained by noise prediction.

The forward process (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations", arXiv:2011.13456) is the VP SDE dx = −½β(t) x dt + √β(t) dw on t ∈ [0, 1], whose transition is

    x_t = α_t x₀ + σ_t ε,   ε ~ N(0, I),   α_t² + σ_t² = 1,   α_t = exp(−½ ∫₀ᵗ β(s) ds).

A network ε̂_φ(x_t, t, c) is trained by ε-prediction (Ho et al. 2020, arXiv:2006.11239), which is denoising
score matching with the score s(x, t, c) = ∇_x log p_t(x | c) = −ε̂(x, t, c) / σ_t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ..utils import randn
from .cnf import (
    ContinuousFlow,
    PaddingMode,
    TraceProbes,
    Whiten,
    stratified_uniform,
    validation_copies,
    validation_generator,
)
from .ode import Method, euler_maruyama, heun_denoiser, karras_sigmas

__all__ = ["Diffusion"]

Schedule = Literal["linear", "cosine", "edm"]
Sampler = Literal["heun", "euler", "rk4", "dopri5", "sde", "edm"]
TimeSampling = Literal["uniform_t", "uniform_tau"]

#: log-SNR log(α₁²/σ₁²) at t = 1 of the cosine schedule: α₁ ≈ 0.0067, close to the linear schedule's 0.0064
COSINE_LOG_SNR_END = -10.0
#: the ``"edm"`` schedule's noise levels σ ∈ [σ_min, σ_max] and ρ of its sampler (Karras et al. 2022, Table 1)
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0
#: σ_data of EDM's preconditioning: the estimator standardises y, so the data have unit scale
EDM_SIGMA_DATA = 1.0
#: EDM's training distribution of noise levels, ln σ ~ N(P_mean, P_std²), with P_mean = −1.2 taken relative to
#: σ_data (EDM's images have σ_data = 0.5): −1.2 + ln 2
EDM_P_MEAN, EDM_P_STD = -1.2 + math.log(2.0), 1.2


class Diffusion(ContinuousFlow):
    r"""Conditional diffusion model p(y | c) on the VP SDE, t ∈ [t_min, 1] (see the module docstring).

    **Schedules.** ``"linear"``: β(t) = β_min + (β_max − β_min) t, so log α_t = −½(β_min t + ½(β_max − β_min) t²)
    (Song et al. 2021). ``"cosine"``: α_t = cos(φ_max t), σ_t = sin(φ_max t) (Nichol & Dhariwal 2021,
    arXiv:2102.09672), φ_max = arctan(e^{−λ₁/2}) set by the log-SNR λ₁ = −10 at t = 1 (α₁ > 0, so β stays
    finite), whence β(t) = 2 φ_max tan(φ_max t).

    ``"edm"`` (Karras et al. 2022, arXiv:2206.00364): the noise level σ = σ_t/α_t of the equivalent
    variance-exploding path x_t/α_t = x₀ + σ ε runs log-linearly from σ_min = 0.002 (t = 0, the data end; ``t_min``
    is not used) to σ_max = 80 (t = 1): α_t = 1/√(1 + σ²), σ_t = σ α_t, β(t) = 2σ²/(1 + σ²) · ln(σ_max/σ_min).

    **Preconditioning** (:meth:`preconditioning`, the one place where the network meets the noise level): with
    x = x_t/α_t (variance-exploding units) the denoiser is D(x, σ) = c_skip x + c_out F_φ(c_in x, c_noise, c), and
    ε̂ = (x − D)/σ. ``"edm"`` uses EDM's coefficients (σ_data = 1, the scale of standardised data):
    c_skip = σ_d²/(σ² + σ_d²), c_out = σσ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²), c_noise = t (affine in ln σ); it is
    trained on λ(σ)‖D − y‖² = ‖F − (y − c_skip x)/c_out‖² (unit weight on the network's target at every level)
    with ln σ ~ N(−1.2 + ln 2, 1.2²) (EDM's P_mean relative to σ_data, stratified). The other schedules keep
    their ε-parametrisation ε̂ = σ_t x_t + F, which is the same form with c_skip = 1/(1 + σ²), c_out = −σ,
    c_in = α_t, c_noise = t.

    **Training** (``loss``, schedules ``"linear"`` and ``"cosine"``): t drawn (stratified over the batch) so that
    the linear-path time τ(t) (below) is uniform on [τ₀, τ₁] (``time_sampling="uniform_tau"``, the CNF's
    distribution over noise levels, which trains the low-noise levels that resolve thin posteriors more often
    than t ~ U[t_min, 1] does; ``"uniform_t"`` is the latter), x_t = α_t y + σ_t ε,
    L = E ‖ε̂_φ(x_t, t, c) − ε‖² / D (in eval mode with fixed-seed t and ε, as :class:`~simgen.models.CNF`).
    The network predicts the correction to the noise prediction that is exact for standard-normal data:
    ε̂(x, t, c) = σ_t x + F_φ(x, t, c).

    **Samplers.** The reverse-time SDE dx = [−½β x − β s(x, t, c)] dt + √β dw̄ from x₁ ~ N(0, I), by
    Euler–Maruyama on ``sde_steps`` uniform steps (``method="sde"``); or the probability-flow ODE
    dx/dt = −½β(t) (x + s(x, t, c)) = −½β(t) (x − ε̂/σ_t), which has the same marginals p_t. With
    y = x / (α_t + σ_t) and τ = σ_t / (α_t + σ_t), y_τ = (1 − τ) x₀ + τ ε is the linear path, and the
    probability-flow ODE becomes

        dy/dτ = v(y, τ, c) = E[ε − x₀ | y_τ] = (ε̂(x_t, t, c) − y) / (1 − τ),   x_t = (α_t + σ_t) y:

    the diffusion's probability-flow ODE *is* a continuous normalizing flow on the linear path, the one flow
    matching regresses directly (:class:`~simgen.models.CNF`). Both families therefore sample and evaluate
    densities through the same code (:class:`~simgen.models.cnf.ContinuousFlow`): by default Heun's method on
    ``steps`` uniform τ-steps (2·steps network evaluations per sample), in which the ODE's trajectories are
    nearly straight (the parametrisation of EDM's deterministic sampler, Karras et al. 2022, arXiv:2206.00364,
    up to a scale), so a few tens of evaluations suffice.

    **Likelihood.** ``log_prob`` integrates the probability-flow ODE from the data (taken as x_{t_min},
    i.e. y = x_{t_min} / α_{t_min}; the error is of order σ_{t_min}²/α_{t_min}² = O(β_min t_min)) to t = 1,
    where p₁ is taken to be N(0, I) (the α₁ x₀ part of x₁ is neglected, α₁ ≈ 0.006), with the instantaneous
    change of variables; exact divergence for D ≤ ``exact_trace_max_dim`` (16), a stochastic estimate above
    (Rademacher probes for vectors, coloured probes for maps; unbiased in log p for the solver's trajectory;
    ``generator=`` freezes it; ``log_prob_with_se`` gives its standard error). Costs and biases
    are those of :class:`~simgen.models.cnf.ContinuousFlow`; the ODE model's density is the density of *its*
    samples (ODE method ``"dopri5"``), not of the SDE sampler's, which differ by the score's error.

    For ``schedule="edm"`` the data end is σ_min = 0.002 and the prior N(0, σ_max² I) in x = x_t/α_t.

    ``method="edm"`` is EDM's deterministic Heun sampler on ``steps`` noise levels spaced with ρ = 7 from the
    schedule's σ at t = 1 to its data end, then to 0 (:func:`~simgen.models.ode.heun_denoiser`; 2·steps − 1
    network evaluations), for any schedule (the README compares it with the default ``"heun"``).

    Args:
        schedule: ``"linear"``, ``"cosine"`` or ``"edm"``; ``None`` (default): ``"edm"`` on maps, ``"linear"``
            on vectors.
        beta_min: the linear schedule's β(0).
        beta_max: the linear schedule's β(1).
        t_min: the smallest diffusion time (data end). Samples carry the noise of level t_min, σ_{t_min}/α_{t_min}
            ≈ √(β_min t_min) in standardised units (0.001 at the default 1e-5); larger values visibly widen thin
            posteriors (README).
        method: default sampler: ``"heun"`` (probability-flow ODE on uniform τ-steps, default), ``"edm"``
            (EDM's Heun sampler on Karras noise levels), ``"euler"``, ``"rk4"``, ``"dopri5"`` or ``"sde"``
            (Euler–Maruyama on the reverse SDE).
        steps: ODE steps of the fixed-step samplers.
        sde_steps: Euler–Maruyama steps (``method="sde"``).
        time_sampling: training distribution of t: ``"uniform_tau"`` (default) or ``"uniform_t"``.

    The other arguments are those of :class:`~simgen.models.cnf.ContinuousFlow`.
    """

    family = "diffusion"

    def __init__(
        self,
        schedule: Schedule | None = None,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        t_min: float = 1e-5,
        hidden_features: int = 128,
        num_blocks: int = 3,
        time_features: int = 64,
        channels: Sequence[int] = (16, 32),
        blocks_per_level: int = 1,
        attention: bool = False,
        method: Sampler = "heun",
        steps: int = 25,
        sde_steps: int = 500,
        log_prob_method: Method = "dopri5",
        log_prob_steps: int = 100,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        exact_trace_max_dim: int = 16,
        hutchinson_probes: int = 1,
        time_sampling: TimeSampling = "uniform_tau",
        trace_probes: TraceProbes = "coloured",
        colouring_period: int = 4,
        padding_mode: PaddingMode = "circular",
        whiten: Whiten | None = None,
    ) -> None:
        if time_sampling not in ("uniform_t", "uniform_tau"):
            raise ValueError(f"time_sampling must be 'uniform_t' or 'uniform_tau'; got {time_sampling!r}")
        if schedule not in (None, "linear", "cosine", "edm"):
            raise ValueError(f"Diffusion schedule must be 'linear', 'cosine', 'edm' or None; got {schedule!r}")
        if method not in ("heun", "euler", "rk4", "dopri5", "sde", "edm"):
            raise ValueError(f"ODE method must be one of heun, euler, rk4, dopri5, sde, edm; got {method!r}")
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max; got {beta_min}, {beta_max}")
        if not 0 < t_min < 0.5:
            raise ValueError(f"t_min must be in (0, 0.5); got {t_min}")
        if not isinstance(sde_steps, int) or sde_steps < 1:
            raise ValueError(f"sde_steps must be a positive int; got {sde_steps!r}")
        super().__init__(hidden_features, num_blocks, time_features, channels, blocks_per_level, attention,
                         "heun" if method in ("sde", "edm") else method, steps, log_prob_method, log_prob_steps,
                         rtol, atol, exact_trace_max_dim, hutchinson_probes, trace_probes, colouring_period,
                         padding_mode, whiten)
        self.method = method
        self.schedule, self.beta_min, self.beta_max, self.t_min = schedule, float(beta_min), float(beta_max), \
            float(t_min)
        self.sde_steps = sde_steps
        self.time_sampling = time_sampling
        self._phi_max = math.atan(math.exp(-COSINE_LOG_SNR_END / 2))

    def _build(self) -> None:
        if self.schedule is None:  # EDM's noise levels and preconditioning reproduce maps' lowest ℓ best
            self.schedule = "edm" if self.is_map else "linear"
        super()._build()

    def config(self) -> dict[str, Any]:
        return dict(schedule=self.schedule, beta_min=self.beta_min, beta_max=self.beta_max, t_min=self.t_min,
                    sde_steps=self.sde_steps, time_sampling=self.time_sampling, **self._flow_config())

    # ----------------------------------------------------------------- the schedule
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """α_t and σ_t of x_t = α_t x₀ + σ_t ε (computed in float64, returned in t's dtype)."""
        t64 = t.double()
        if self.schedule == "linear":
            log_alpha2 = -(self.beta_min * t64 + 0.5 * (self.beta_max - self.beta_min) * t64**2)
            alpha = torch.exp(0.5 * log_alpha2)
            sigma = torch.sqrt(-torch.expm1(log_alpha2))
        elif self.schedule == "edm":
            level = self._edm_sigma(t64)
            alpha = torch.rsqrt(1 + level**2)
            sigma = level * alpha
        else:
            phi = self._phi_max * t64
            alpha, sigma = torch.cos(phi), torch.sin(phi)
        return alpha.to(t.dtype), sigma.to(t.dtype)

    def beta(self, t: Tensor) -> Tensor:
        """β(t) = −2 d log α_t / dt."""
        if self.schedule == "linear":
            return self.beta_min + (self.beta_max - self.beta_min) * t
        if self.schedule == "edm":
            level2 = self._edm_sigma(t.double()) ** 2
            return (2 * level2 / (1 + level2) * math.log(EDM_SIGMA_MAX / EDM_SIGMA_MIN)).to(t.dtype)
        return 2 * self._phi_max * torch.tan(self._phi_max * t)

    @staticmethod
    def _edm_sigma(t: Tensor) -> Tensor:
        """The ``"edm"`` schedule's noise level σ = σ_min (σ_max/σ_min)^t."""
        return EDM_SIGMA_MIN * torch.exp(t * math.log(EDM_SIGMA_MAX / EDM_SIGMA_MIN))

    def t_of_tau(self, tau: Tensor) -> Tensor:
        """The diffusion time t of a linear-path time τ = σ_t / (α_t + σ_t), i.e. σ_t/α_t = τ / (1 − τ)."""
        ratio = (tau.double() / (1 - tau.double()))
        if self.schedule == "linear":  # B(t) = β_min t + ½Δ t² = log(1 + ratio²)
            delta = self.beta_max - self.beta_min
            b = torch.log1p(ratio**2)
            t = (-self.beta_min + torch.sqrt(self.beta_min**2 + 2 * delta * b)) / delta
        elif self.schedule == "edm":  # |ratio|: finite past τ = 1, where dopri5's first trial step may look
            t = torch.log(ratio.abs() / EDM_SIGMA_MIN) / math.log(EDM_SIGMA_MAX / EDM_SIGMA_MIN)
        else:
            t = torch.atan(ratio) / self._phi_max
        return t.to(tau.dtype)

    def tau_of_t(self, t: Tensor) -> Tensor:
        alpha, sigma = self.alpha_sigma(t.double())
        return (sigma / (alpha + sigma)).to(t.dtype)

    @property
    def t_data(self) -> float:
        """The data end of the diffusion time: ``t_min``, or 0 (σ = σ_min) for the ``"edm"`` schedule."""
        return 0.0 if self.schedule == "edm" else self.t_min

    @property
    def tau_range(self) -> tuple[float, float]:
        ends = self.tau_of_t(torch.tensor([self.t_data, 1.0], dtype=torch.float64))
        return float(ends[0]), float(ends[1])

    # ----------------------------------------------------------------- the network
    def _bcast(self, a: Tensor, y: Tensor) -> Tensor:
        return a.reshape((-1,) + (1,) * (y.dim() - 1))

    def preconditioning(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""(σ, c_skip, c_out, c_in, c_noise) at diffusion times t ``[n]`` (float64; see the class docstring).

        σ = σ_t/α_t is the noise level in variance-exploding units x = x_t/α_t, and the denoiser is
        D(x, σ) = c_skip x + c_out F_φ(c_in x, c_noise, c): EDM's coefficients (Karras et al. 2022, Table 1) for
        ``schedule="edm"``, those of the ε-parametrisation ε̂ = σ_t x_t + F otherwise."""
        alpha, sigma_t = self.alpha_sigma(t.double())
        level = sigma_t / alpha
        if self.schedule == "edm":
            sd2 = EDM_SIGMA_DATA**2
            c_skip = sd2 / (level**2 + sd2)
            c_out = level * EDM_SIGMA_DATA * torch.rsqrt(level**2 + sd2)
            c_in = torch.rsqrt(level**2 + sd2)
        else:
            c_skip, c_out, c_in = alpha**2, -level, alpha
        return level, c_skip, c_out, c_in, t

    def denoise(self, x: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        """D(x, σ(t), c) ≈ E[y | y + σ ε = x, c] for x ``[n, *y_shape]`` in variance-exploding units, t ``[n]``."""
        _, c_skip, c_out, c_in, c_noise = (self._bcast(a, x).to(x.dtype) for a in self.preconditioning(t))
        return c_skip * x + c_out * self.net(c_in * x, c_noise.reshape(-1), c)

    def noise_prediction(self, x: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        """ε̂(x_t, t, c) = (x − D(x, σ))/σ with x = x_t/α_t, for x_t ``[n, *y_shape]``, t ``[n]``: for the VP
        schedules σ_t x_t + F_φ(x_t, t, c)."""
        level, c_skip, c_out, c_in, c_noise = self.preconditioning(t)
        alpha, _ = self.alpha_sigma(t.double())
        level = level.clamp_min(1e-12)  # σ → 0: the coefficients below have finite limits
        x_coef = (1 - c_skip) / (level * alpha)
        f_coef = -c_out / level
        net_in = c_in / alpha  # F sees c_in x = (c_in/α) x_t
        x_coef, f_coef, net_in = (self._bcast(a, x).to(x.dtype) for a in (x_coef, f_coef, net_in))
        return x_coef * x + f_coef * self.net(net_in * x, c_noise.to(x.dtype), c)

    def score(self, x: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        """s(x, t, c) = ∇_x log p_t(x | c) ≈ −ε̂(x, t, c) / σ_t."""
        _, sigma = self.alpha_sigma(t)
        return -self.noise_prediction(x, t, c) / self._bcast(sigma, x)

    def velocity(self, y: Tensor, tau: Tensor, c: Tensor | None) -> Tensor:
        """The probability-flow ODE on the linear path: v = (ε̂(x_t, t, c) − y) / (1 − τ), x_t = (α_t + σ_t) y."""
        t = self.t_of_tau(tau)
        alpha, sigma = self.alpha_sigma(t)
        x = self._bcast(alpha + sigma, y) * y
        return (self.noise_prediction(x, t, c) - y) / self._bcast(1 - tau, y)

    def flow_loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        generator = validation_generator(self, y.device)
        y, c = validation_copies(self, y, c)
        if self.schedule == "edm":
            return self._edm_loss(y, c, generator)
        if self.time_sampling == "uniform_t":
            t = stratified_uniform(y.shape[0], y.device, y.dtype, self.t_min, 1.0, generator=generator)
        else:  # τ uniform on [τ₀, τ₁], the CNF's training distribution over noise levels
            tau0, tau1 = self.tau_range
            t = self.t_of_tau(stratified_uniform(y.shape[0], y.device, y.dtype, tau0, tau1, generator=generator))
        alpha, sigma = self.alpha_sigma(t)
        eps = randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        x = self._bcast(alpha, y) * y + self._bcast(sigma, y) * eps
        return (self.noise_prediction(x, t, c) - eps).pow(2).mean()

    def _edm_loss(self, y: Tensor, c: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """λ(σ)‖D(y + σε, σ) − y‖² = ‖F − (y − c_skip x)/c_out‖² with ln σ ~ N(P_mean, P_std²), stratified."""
        u = stratified_uniform(y.shape[0], y.device, torch.float64, generator=generator).clamp(1e-6, 1 - 1e-6)
        log_level = EDM_P_MEAN + EDM_P_STD * math.sqrt(2) * torch.erfinv(2 * u - 1)
        t = (log_level - math.log(EDM_SIGMA_MIN)) / math.log(EDM_SIGMA_MAX / EDM_SIGMA_MIN)
        level, c_skip, c_out, c_in, c_noise = (self._bcast(a, y).to(y.dtype) for a in self.preconditioning(t))
        eps = randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        x = y + level * eps
        target = (y - c_skip * x) / c_out
        return (self.net(c_in * x, c_noise.reshape(-1), c) - target).pow(2).mean()

    # ----------------------------------------------------------------- sampling
    def _sample_modelled(
        self,
        rows: int,
        context: Tensor | None,
        *,
        generator: torch.Generator | None = None,
        method: Sampler | None = None,
        steps: int | None = None,
    ) -> Tensor:
        """One draw per context row; ``method="sde"`` runs Euler–Maruyama on the reverse SDE (``steps`` then
        overrides ``sde_steps``), ``"edm"`` EDM's Heun sampler, any ODE method the probability-flow ODE
        (:meth:`ContinuousFlow._sample`)."""
        method = method or self.method
        if method == "edm":
            return self._sample_edm(rows, context, generator, steps or self.steps)
        if method == "sde":
            return self._sample_sde(rows, context, generator, steps or self.sde_steps)
        return super()._sample_modelled(rows, context, generator=generator, method=method, steps=steps)

    def _sample_sde(self, rows: int, context: Tensor | None, generator: torch.Generator | None, steps: int) -> Tensor:
        """Euler–Maruyama on the reverse SDE on ``steps`` uniform steps from t = 1 to t_data."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"the number of SDE steps must be a positive int; got {steps!r}")
        x1 = self._noise(rows, generator)

        def drift(t: Tensor, x: Tensor) -> Tensor:
            tt = t.expand(rows)
            _, sigma = self.alpha_sigma(tt)
            eps = self.noise_prediction(x, tt, context)
            return -0.5 * self.beta(t) * (x - 2 * eps / self._bcast(sigma, x))

        def g(t: Tensor) -> Tensor:
            return self.beta(t).sqrt()

        grid = torch.linspace(1.0, self.t_data, steps + 1)
        with torch.no_grad():
            sol = euler_maruyama(drift, g, x1, grid, generator=generator)
        self.last_nfe = sol.nfe
        alpha_min, _ = self.alpha_sigma(torch.tensor(self.t_data, dtype=torch.float64))
        return sol.y / float(alpha_min)

    def _sample_edm(self, rows: int, context: Tensor | None, generator: torch.Generator | None, steps: int) -> Tensor:
        """EDM's Heun sampler on ``steps`` Karras noise levels from σ(1) to σ(t_data), then to 0."""
        ends = self.preconditioning(torch.tensor([self.t_data, 1.0], dtype=torch.float64))[0]
        sigmas = karras_sigmas(steps, float(ends[0]), float(ends[1]), EDM_RHO)
        tau_min, tau_max = self.tau_range

        def denoise(level: Tensor, x: Tensor) -> Tensor:
            tau = (level / (1 + level)).clamp(tau_min, tau_max)  # the schedule's time of this noise level
            return self.denoise(x, self.t_of_tau(tau.double()).expand(rows), context)

        z = self._noise(rows, generator)
        with torch.no_grad():
            sol = heun_denoiser(denoise, float(sigmas[0]) * z, sigmas)
        self.last_nfe = sol.nfe
        return sol.y
