r"""Gradient-based kernels: Hamiltonian Monte Carlo and its one-step case, MALA.

Hamiltonian Monte Carlo with L leapfrog steps (Neal 2011, "MCMC using Hamiltonian dynamics", arXiv:1206.1901);
L = 1 is the Metropolis-adjusted Langevin algorithm (MALA, Roberts & Tweedie 1996). One step size per chain is
tuned by dual averaging (Hoffman & Gelman 2014, "The No-U-Turn Sampler", JMLR 15) and a diagonal mass matrix is
estimated from the warm-up draws in Stan's windows. Many chains advance together, so every evaluation of the
target is one batched call.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..utils import rand, randint, randn
from .target import LogDensity, finite_or_minus_inf

__all__ = ["HMCResult", "hmc_sample", "mala_sample"]


@dataclasses.dataclass
class HMCResult:
    """What :func:`hmc_sample` returns.

    Attributes:
        chains: kept draws ``[C, num_samples, d]``.
        step_size: the adapted leapfrog step size of each chain ``[C]``.
        inv_mass: the diagonal inverse mass matrix ``[d]`` (≈ the target's variances).
        acceptance_rate: mean Metropolis acceptance probability of each chain after warm-up ``[C]``.
        num_evaluations: rows at which ``log_fn`` and its gradient were evaluated (warm-up included).
    """

    chains: Tensor
    step_size: Tensor
    inv_mass: Tensor
    acceptance_rate: Tensor
    num_evaluations: int


def _value_and_grad(log_fn: LogDensity, u: Tensor) -> tuple[Tensor, Tensor]:
    """log π(u) ``[B]`` (−inf where not finite) and ∇_u log π(u) ``[B, d]`` (0 where not finite)."""
    u = u.detach().requires_grad_(True)
    with torch.enable_grad():
        logp = log_fn(u)
        if not logp.requires_grad:
            raise ValueError(
                "the log-density is not differentiable in its argument (its output does not require grad); "
                "use a gradient-free sampler (method='slice')"
            )
        (grad,) = torch.autograd.grad(logp.sum(), u)
    logp = finite_or_minus_inf(logp.detach()).to(u.dtype)
    ok = torch.isfinite(logp) & torch.isfinite(grad).all(dim=1)
    grad = torch.where(ok[:, None], grad, torch.zeros_like(grad))
    logp = torch.where(ok, logp, torch.full_like(logp, -math.inf))
    return logp, grad.detach()


class _DualAveraging:
    r"""Per-chain step-size adaptation (Hoffman & Gelman 2014, Alg. 5), driving the acceptance probability α
    to δ: H̄_t = (1 − 1/(t + t₀)) H̄_{t−1} + (δ − α_t)/(t + t₀), log ε_t = μ − √t H̄_t / γ,
    log ε̄_t = t^{−κ} log ε_t + (1 − t^{−κ}) log ε̄_{t−1}, shrinking towards μ = log(``bias`` · ε₀)."""

    def __init__(self, step_size: Tensor, target: float, bias: float = 2.0, gamma: float = 0.05,
                 t0: float = 10.0, kappa: float = 0.75) -> None:
        self.mu = torch.log(bias * step_size)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.h_bar = torch.zeros_like(step_size)
        self.log_avg = torch.log(step_size)
        self.t = 0

    def update(self, accept_prob: Tensor) -> Tensor:
        """Record one iteration's acceptance probabilities ``[C]``; the next step sizes ``[C]``."""
        self.t += 1
        t = self.t
        self.h_bar = (1 - 1 / (t + self.t0)) * self.h_bar + (self.target - accept_prob) / (t + self.t0)
        log_step = self.mu - math.sqrt(t) / self.gamma * self.h_bar
        weight = t ** (-self.kappa)
        self.log_avg = weight * log_step + (1 - weight) * self.log_avg
        return torch.exp(log_step)

    @property
    def final(self) -> Tensor:
        return torch.exp(self.log_avg)


def _leapfrog_proposal(
    log_fn: LogDensity, u: Tensor, logp: Tensor, grad: Tensor, step: Tensor, inv_mass: Tensor, num_leapfrog: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""One HMC transition for every chain: momentum p ~ N(0, M), ``num_leapfrog`` leapfrog steps of size
    ``step`` ``[C]``, accepted with probability α = min(1, exp(H(u, p) − H(u', p'))),
    H(u, p) = −log π(u) + ½ pᵀ M⁻¹ p. Returns the new (u, log π, ∇ log π) and α ``[C]``."""
    eps = step[:, None].to(u.dtype)
    p = randn(u.shape, generator=generator, device=u.device, dtype=u.dtype) / inv_mass.sqrt()
    h0 = -logp + 0.5 * (p * p * inv_mass).sum(dim=1)
    u1, g1, lp1 = u, grad, logp
    p1 = p + 0.5 * eps * g1
    for i in range(num_leapfrog):
        u1 = u1 + eps * inv_mass * p1
        lp1, g1 = _value_and_grad(log_fn, u1)
        p1 = p1 + (eps if i < num_leapfrog - 1 else 0.5 * eps) * g1
    h1 = -lp1 + 0.5 * (p1 * p1 * inv_mass).sum(dim=1)
    accept_prob = torch.exp(torch.clamp(h0 - h1, max=0.0))
    accept_prob = torch.nan_to_num(accept_prob, nan=0.0)
    accept_prob = torch.where(torch.isfinite(lp1), accept_prob, torch.zeros_like(accept_prob))
    accept = rand(accept_prob.shape, generator=generator, device=u.device, dtype=accept_prob.dtype) < accept_prob
    u = torch.where(accept[:, None], u1, u)
    logp = torch.where(accept, lp1, logp)
    grad = torch.where(accept[:, None], g1, grad)
    return u, logp, grad, accept_prob


def _initial_step_size(log_fn: LogDensity, u: Tensor, logp: Tensor, grad: Tensor, inv_mass: Tensor,
                       generator: torch.Generator, max_iter: int = 8) -> tuple[Tensor, int]:
    """Per chain, double or halve ε from 1 until one leapfrog step's acceptance probability crosses ½
    (Hoffman & Gelman 2014, Alg. 4). Returns ε ``[C]`` and the rows evaluated."""
    chains = u.shape[0]
    step = torch.ones(chains, dtype=u.dtype)
    _, _, _, a = _leapfrog_proposal(log_fn, u, logp, grad, step, inv_mass, 1, generator)
    direction = torch.where(a > 0.5, 2.0, 0.5).to(u.dtype)
    active = torch.ones(chains, dtype=torch.bool)
    evaluated = chains
    for _ in range(max_iter):
        step = torch.where(active, step * direction, step)
        idx = torch.nonzero(active).flatten()
        _, _, _, a = _leapfrog_proposal(log_fn, u[idx], logp[idx], grad[idx], step[idx], inv_mass, 1, generator)
        evaluated += idx.numel()
        crossed = torch.where(direction[idx] > 1, a <= 0.5, a > 0.5)
        active[idx[crossed]] = False
        if not active.any():
            break
    return step, evaluated


def _warmup_windows(warmup: int) -> list[int]:
    """Warm-up as in Stan: a fast initial buffer (15 %), two slow windows (⅓ and ⅔ of the middle) at whose
    ends the mass matrix is re-estimated, and a terminal step-size-only buffer (20 %). Returns the windows'
    boundaries [start, end₁, end₂] in iterations; none when the middle is shorter than 10 iterations."""
    start, end = max(1, int(0.15 * warmup)), warmup - max(1, int(0.2 * warmup))
    if end - start < 10:
        return []
    return [start, start + (end - start) // 3, end]


def hmc_sample(
    log_fn: LogDensity,
    init: Tensor,
    num_samples: int,
    *,
    generator: torch.Generator,
    warmup: int = 100,
    num_leapfrog: int = 5,
    thin: int = 1,
    target_accept: float | None = None,
    inv_mass: Tensor | None = None,
    progress: bool = False,
) -> HMCResult:
    r"""Hamiltonian Monte Carlo of ``C`` chains at once, with warm-up.

    Each iteration draws a momentum p ~ N(0, M), M = diag(1 / ``inv_mass``), runs L leapfrog steps of size ε
    (for ``num_leapfrog`` = L₀ > 1, L is drawn uniformly in {1, …, 2L₀ − 1} for all chains and ε jittered
    ±10 % per chain at every iteration, so that no trajectory length resonates with the target's periods — a
    fixed L ε ≈ πσ would flip a Gaussian chain about its mean, ≈ 2πσ bring it back to its start)

        p ← p + ½ε ∇log π(u),   u ← u + ε M⁻¹ p,   p ← p + ½ε ∇log π(u)

    and accepts the end point with probability min(1, exp(H₀ − H₁)), H = −log π(u) + ½ pᵀM⁻¹p. This leaves π
    invariant for any ε and M; L = 1 is MALA. During the ``warmup`` iterations (discarded), each chain's ε is
    tuned by dual averaging towards the acceptance probability ``target_accept`` (default 0.574 for L = 1,
    0.7 otherwise), and M⁻¹ is set, at the end of two windows, to the chains' pooled within-chain variance
    (regularised towards 10⁻³ as in Stan); chains in distinct modes thus share a mass matrix that fits each
    mode. Rows with a non-finite log-density or gradient are rejected.

    Args:
        log_fn: differentiable unnormalised log-density, u ``[B, d]`` → ``[B]`` (on R^d).
        init: starting points ``[C, d]`` with finite log-density.
        num_samples: draws kept per chain.
        generator: source of all randomness.
        warmup: adaptation iterations, discarded.
        num_leapfrog: mean leapfrog steps per iteration (1 = MALA).
        thin: keep one iteration in ``thin``.
        target_accept: dual averaging's target acceptance probability, in (0, 1).
        inv_mass: starting diagonal inverse mass ``[d]``; default the variance of ``init`` over chains.
        progress: show a progress bar.
    """
    if init.dim() != 2:
        raise ValueError(f"init must have shape [C, d]; got {tuple(init.shape)}")
    if num_samples < 1 or thin < 1 or num_leapfrog < 1 or warmup < 0:
        raise ValueError(f"need num_samples, thin, num_leapfrog >= 1 and warmup >= 0; got {num_samples}, {thin}, "
                         f"{num_leapfrog}, {warmup}")
    if target_accept is None:
        target_accept = 0.574 if num_leapfrog == 1 else 0.7
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie in (0, 1); got {target_accept}")
    u = init.detach().clone()
    chains, d = u.shape
    logp, grad = _value_and_grad(log_fn, u)
    if not torch.isfinite(logp).all():
        raise ValueError("hmc_sample needs starting points with finite log-density and gradient")
    evaluated = chains
    if inv_mass is None:
        var = u.var(dim=0) if chains > 1 else torch.ones(d, dtype=u.dtype)
        inv_mass = torch.where(torch.isfinite(var) & (var > 0), var, torch.ones_like(var))
    inv_mass = inv_mass.to(u.dtype)
    step, n_eval = _initial_step_size(log_fn, u, logp, grad, inv_mass, generator)
    evaluated += n_eval
    adapt = _DualAveraging(step, target_accept)
    windows = _warmup_windows(warmup)
    window_draws: list[Tensor] = []
    total = warmup + num_samples * thin
    kept = torch.empty(chains, num_samples, d, dtype=u.dtype)
    accept_sum = torch.zeros(chains, dtype=u.dtype)
    bar = tqdm(range(total), desc="MCMC", disable=not progress, leave=False, unit="step")
    for it in bar:
        jitter, steps = 1.0, num_leapfrog
        if num_leapfrog > 1:
            jitter = 1 + 0.1 * (2 * rand(chains, generator=generator, device=u.device, dtype=u.dtype) - 1)
            steps = int(randint(1, 2 * num_leapfrog, (), generator=generator))
        u, logp, grad, accept_prob = _leapfrog_proposal(log_fn, u, logp, grad, step * jitter, inv_mass, steps,
                                                        generator)
        evaluated += chains * steps
        if it < warmup:
            step = adapt.update(accept_prob)
            if windows and windows[0] <= it < windows[-1]:
                window_draws.append(u)
            if it + 1 in windows[1:]:
                draws = torch.stack(window_draws, dim=1)  # [C, n, d]
                n = draws.shape[1]
                var = draws.var(dim=1).mean(dim=0)
                inv_mass = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
                window_draws = []
                step = adapt.final
                adapt = _DualAveraging(step, target_accept, bias=1.0)
            if it + 1 == warmup:
                step = adapt.final
            if progress and it % 10 == 0:
                bar.set_postfix(phase="warm-up", accept=f"{float(accept_prob.mean()):.2f}")
        else:
            accept_sum += accept_prob
            k = it - warmup
            if (k + 1) % thin == 0:
                kept[:, k // thin] = u
            if progress and k % 10 == 0:
                bar.set_postfix(accept=f"{float(accept_sum.mean() / (k + 1)):.2f}")
    return HMCResult(kept, step, inv_mass, accept_sum / (num_samples * thin), evaluated)


def mala_sample(log_fn: LogDensity, init: Tensor, num_samples: int, **options: Any) -> HMCResult:
    r"""The Metropolis-adjusted Langevin algorithm: :func:`hmc_sample` with one leapfrog step, i.e. the proposal
    u' = u + ½ε² M⁻¹∇log π(u) + ε M^{−½} ξ, ξ ~ N(0, I), Metropolis–Hastings corrected (target acceptance 0.574,
    Roberts & Rosenthal 1998). ``options`` as :func:`hmc_sample` (except ``num_leapfrog``)."""
    if "num_leapfrog" in options:
        raise ValueError("mala_sample takes one leapfrog step by definition; use hmc_sample for more")
    return hmc_sample(log_fn, init, num_samples, num_leapfrog=1, **options)
