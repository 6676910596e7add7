"""Vectorised MCMC over θ for likelihood-based posteriors.

Many chains advance together, so every evaluation of the (neural) likelihood is one batched call. Chains start
from sampling-importance-resampling (SIR) of prior draws, which places them close to the posterior's typical
set (and in each of its modes in proportion to their mass), then move by one of two kernels:

* gradient-based: Hamiltonian Monte Carlo with a fixed number L of leapfrog steps (Neal 2011, "MCMC using
  Hamiltonian dynamics", arXiv:1206.1901); L = 1 is the Metropolis-adjusted Langevin algorithm (MALA, Roberts &
  Tweedie 1996). It runs in the unconstrained space u = B⁻¹(θ) of the prior's support
  (B = ``torch.distributions.biject_to(prior.support)``), on the target log π(B(u)) + log |det ∂B/∂u|, with one
  step size per chain tuned by dual averaging (Hoffman & Gelman 2014, "The No-U-Turn Sampler", JMLR 15) and a
  diagonal mass matrix estimated from the warm-up draws;
* coordinate-wise slice sampling with stepping out (Neal 2003, "Slice sampling", Ann. Statist. 31(3)), for
  targets without gradients.

Every run reports the rank-normalised split-R̂ and the bulk effective sample size (Vehtari, Gelman, Simpson,
Carpenter & Bürkner 2021, "Rank-normalization, folding, and localization: an improved R̂", Bayesian Analysis
16(2)), on θ or on user-given mode-invariant functions of θ.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from .transforms import SupportBijection

__all__ = [
    "slice_sample",
    "sir_init",
    "hmc_sample",
    "mala_sample",
    "HMCResult",
    "split_rhat",
    "effective_sample_size",
    "MCMCRun",
    "MCMCPosterior",
]

LogDensity = Callable[[Tensor], Tensor]
Method = Literal["hmc", "mala", "slice"]
METHODS = ("hmc", "mala", "slice")
#: draws per chain below which R̂ and ESS are not computed (each split half needs a few)
MIN_DRAWS = 10


def _finite(logp: Tensor) -> Tensor:
    return torch.nan_to_num(logp, nan=-math.inf, posinf=-math.inf)


def sir_init(
    log_fn: LogDensity,
    prior: Distribution,
    num_chains: int,
    num_init: int,
    generator: torch.Generator,
    batch_size: int = 10_000,
) -> Tensor:
    r"""Sampling-importance-resampling: draw θ_k ~ p(θ), k ≤ ``num_init``, and keep ``num_chains`` of them with
    probability ∝ exp(log_fn(θ_k) − log p(θ_k)) (with replacement). Returns ``[num_chains, d]``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
        proposals = prior.sample((num_init,)).reshape(num_init, -1)
    weights = torch.cat(
        [
            _finite(log_fn(proposals[s : s + batch_size]).cpu()) - prior.log_prob(proposals[s : s + batch_size])
            for s in range(0, num_init, batch_size)
        ]
    )
    weights = _finite(weights)
    if not torch.isfinite(weights).any():
        raise RuntimeError(
            f"all {num_init} prior draws have zero likelihood: the observation may lie outside the range "
            "the emulator was trained on"
        )
    probs = torch.softmax(weights.double(), dim=0)
    idx = torch.multinomial(probs, num_chains, replacement=True, generator=generator)
    return proposals[idx]


def slice_sample(
    log_fn: LogDensity,
    init: Tensor,
    num_sweeps: int,
    *,
    widths: Tensor,
    generator: torch.Generator,
    max_step_out: int = 10,
    max_shrink: int = 50,
    progress: bool = False,
) -> Tensor:
    r"""Coordinate-wise slice sampling of ``C`` chains at once.

    For each coordinate j of every chain: draw a level log y = log π(θ) − E, E ~ Exp(1); place an interval of
    width w_j at random around θ_j and step it out (at most ``max_step_out`` times) while its ends lie above the
    level; then draw θ'_j uniformly in it, shrinking the interval towards θ_j until log π(θ') > log y. This
    leaves π invariant for any w_j (Neal 2003). Each step evaluates ``log_fn`` once, batched over the chains
    that still need it.

    Args:
        log_fn: unnormalised log-density, θ ``[B, d]`` → ``[B]`` (−inf outside the support).
        init: starting points ``[C, d]`` with finite log-density.
        num_sweeps: sweeps over all coordinates.
        widths: initial interval widths ``[d]``.
        generator: source of all randomness.

    Returns:
        The chains after each sweep, ``[C, num_sweeps, d]``.
    """
    theta = init.clone()
    chains, d = theta.shape
    logp = _finite(log_fn(theta))
    if not torch.isfinite(logp).all():
        raise ValueError("slice_sample needs starting points with finite log-density")
    out = torch.empty(chains, num_sweeps, d, dtype=theta.dtype)
    rand = lambda *shape: torch.rand(*shape, generator=generator, dtype=theta.dtype)  # noqa: E731
    for sweep in tqdm(range(num_sweeps), desc="MCMC", disable=not progress, leave=False, unit="sweep"):
        for j in range(d):
            level = logp + torch.log(rand(chains))
            w = widths[j]
            lower = theta[:, j] - w * rand(chains)
            upper = lower + w
            # Stepping out with Neal's budget split between the two ends.
            budget_left = torch.floor(max_step_out * rand(chains))
            budget_right = max_step_out - 1 - budget_left
            for bound, budget, sign in ((lower, budget_left, -1.0), (upper, budget_right, 1.0)):
                active = torch.ones(chains, dtype=torch.bool)
                for _ in range(max_step_out):
                    active &= budget > 0
                    if not active.any():
                        break
                    probe = theta[active].clone()
                    probe[:, j] = bound[active]
                    above = _finite(log_fn(probe).cpu()) > level[active]
                    idx = torch.nonzero(active).flatten()
                    bound[idx[above]] += sign * w
                    budget[idx] -= 1
                    active[idx[~above]] = False
            # Shrinkage.
            pending = torch.ones(chains, dtype=torch.bool)
            for _ in range(max_shrink):
                idx = torch.nonzero(pending).flatten()
                if idx.numel() == 0:
                    break
                proposal = theta[idx].clone()
                proposal[:, j] = lower[idx] + (upper[idx] - lower[idx]) * rand(idx.numel())
                lp = _finite(log_fn(proposal).cpu())
                accept = lp > level[idx]
                acc = idx[accept]
                theta[acc] = proposal[accept]
                logp[acc] = lp[accept]
                pending[acc] = False
                rej = idx[~accept]
                left = proposal[~accept, j] < theta[rej, j]
                lower[rej[left]] = proposal[~accept][left, j]
                upper[rej[~left]] = proposal[~accept][~left, j]
            # A chain whose bracket collapsed without acceptance keeps its state (still a valid MCMC move).
        out[:, sweep] = theta
    return out


# --------------------------------------------------------------------------- gradient-based kernels
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
    logp = _finite(logp.detach()).to(u.dtype)
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
    p = torch.randn(u.shape, generator=generator, dtype=u.dtype) / inv_mass.sqrt()
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
    accept = torch.rand(accept_prob.shape, generator=generator, dtype=accept_prob.dtype) < accept_prob
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
            jitter = 1 + 0.1 * (2 * torch.rand(chains, generator=generator, dtype=u.dtype) - 1)
            steps = int(torch.randint(1, 2 * num_leapfrog, (), generator=generator))
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


# --------------------------------------------------------------------------- convergence diagnostics
def _as_chains(chains: Any) -> np.ndarray:
    """``[C, n]`` or ``[C, n, k]`` array-like → float64 ``[C, n, k]``."""
    a = np.asarray(chains.detach().cpu() if isinstance(chains, Tensor) else chains, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"chains must have shape [C, n] or [C, n, k]; got {list(a.shape)}")
    return a


def _split(a: np.ndarray) -> np.ndarray:
    """Each chain cut into its first and second half (the middle draw of an odd length dropped): ``[2C, n//2, k]``."""
    half = a.shape[1] // 2
    return np.concatenate([a[:, :half], a[:, a.shape[1] - half :]], axis=0)


def _rank_normalise(a: np.ndarray) -> np.ndarray:
    r"""z = Φ⁻¹((r − 3/8) / (S + 1/4)), r the rank of each draw among all S = C·n draws (ties averaged)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    chains, n, k = a.shape
    ranks = rankdata(a.reshape(chains * n, k), axis=0)
    return ndtri((ranks - 0.375) / (chains * n + 0.25)).reshape(chains, n, k)


def _rhat_classic(a: np.ndarray) -> np.ndarray:
    r"""R̂ = √(V̂ / W) with W the mean within-chain variance, B/n the variance of the chain means and
    V̂ = (n − 1)/n W + B/n (Gelman & Rubin 1992). ``[C, n, k]`` → ``[k]``."""
    n = a.shape[1]
    w = a.var(axis=1, ddof=1).mean(axis=0)
    b_over_n = a.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(((n - 1) / n * w + b_over_n) / w)


def split_rhat(chains: Any) -> Tensor:
    r"""Rank-normalised split-R̂ per quantity (Vehtari et al. 2021): the larger of the split-R̂ of the
    rank-normalised draws (bulk) and of the rank-normalised folded draws |θ − median θ| (tails).

    Each chain is split in halves, so a drift within a chain shows up as disagreeing halves. R̂ ≈ 1 when the
    chains agree; chains stuck in different modes give R̂ ≫ 1. Values above 1.01–1.05 call for longer runs
    (or, for a posterior multimodal by symmetry, a mode-invariant quantity).

    Args:
        chains: draws ``[C, n]`` or ``[C, n, k]`` (C chains of n draws of k quantities), n ≥ 4.

    Returns:
        ``[k]`` float64 (NaN where a quantity is constant).
    """
    a = _as_chains(chains)
    if a.shape[1] < 4:
        raise ValueError(f"split-R̂ needs at least 4 draws per chain; got {a.shape[1]}")
    s = _split(a)
    bulk = _rhat_classic(_rank_normalise(s))
    folded = _rhat_classic(_rank_normalise(np.abs(s - np.median(s.reshape(-1, s.shape[2]), axis=0))))
    return torch.from_numpy(np.fmax(bulk, folded))


def _autocovariance(a: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each chain at every lag by FFT: ``[C, n]`` → ``[C, n]``."""
    n = a.shape[1]
    centred = a - a.mean(axis=1, keepdims=True)
    size = 2 ** math.ceil(math.log2(2 * n))
    f = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(f * np.conjugate(f), n=size, axis=1)[:, :n] / n


def _ess_1d(a: np.ndarray) -> float:
    r"""Multi-chain ESS of one quantity ``[C, n]`` (Stan's estimator): ρ̂_t = 1 − (W − mean_c γ̂_{c,t}) / V̂,
    summed as Geyer's initial positive and monotone sequence, ESS = C·n / τ̂, τ̂ = −1 + 2 Σ ρ̂_t."""
    chains, n = a.shape
    acov = _autocovariance(a)
    w = acov[:, 0].mean() * n / (n - 1)
    var_plus = w * (n - 1) / n + (a.mean(axis=1).var(ddof=1) if chains > 1 else 0.0)
    if not var_plus > 0:
        return float("nan")
    rho = np.zeros(n)
    rho[0] = 1.0
    mean_acov = acov.mean(axis=0)
    rho_even, rho_odd = 1.0, 1.0 - (w - mean_acov[1]) / var_plus
    rho[1] = rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0:
        rho_even = 1.0 - (w - mean_acov[t + 1]) / var_plus
        rho_odd = 1.0 - (w - mean_acov[t + 2]) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1], rho[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1  # initial monotone sequence
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2
        t += 2
    total = chains * n
    tau = -1.0 + 2.0 * rho[: max_t + 1].sum() + rho[max_t + 1]
    return float(total / max(tau, 1.0 / math.log10(total)))


def effective_sample_size(chains: Any) -> Tensor:
    r"""Bulk effective sample size per quantity (Vehtari et al. 2021): the multi-chain ESS, C·n / τ̂ with
    τ̂ = 1 + 2 Σ_{t≥1} ρ̂_t the integrated autocorrelation time (Geyer's initial monotone sequence), of the
    rank-normalised split chains. About C·n for independent draws, less for correlated ones.

    Args:
        chains: draws ``[C, n]`` or ``[C, n, k]``, n ≥ 10 (split halves of at least 5).

    Returns:
        ``[k]`` float64.
    """
    a = _as_chains(chains)
    if a.shape[1] < 10:
        raise ValueError(f"the effective sample size needs at least 10 draws per chain; got {a.shape[1]}")
    z = _rank_normalise(_split(a))
    return torch.tensor([_ess_1d(z[:, :, j]) for j in range(z.shape[2])], dtype=torch.float64)


# --------------------------------------------------------------------------- the posterior
@dataclasses.dataclass
class MCMCRun:
    """What one :meth:`MCMCPosterior.sample` call did, with its convergence diagnostics.

    Attributes:
        method: ``"hmc"``, ``"mala"`` or ``"slice"``.
        num_chains: chains run in parallel.
        draws_per_chain: draws kept per chain (after warm-up and thinning).
        warmup: warm-up iterations (sweeps for slice sampling), discarded.
        thin: one iteration kept in ``thin``.
        monitored: ``"theta"``, or ``"monitor"`` when R̂ and ESS are of the posterior's ``monitor(θ)``.
        r_hat: rank-normalised split-R̂ of each monitored quantity ``[k]`` (NaN with fewer than 10 draws per chain).
        ess: bulk effective sample size of each monitored quantity ``[k]`` (NaN likewise).
        acceptance_rate: mean Metropolis acceptance probability after warm-up (``None`` for slice sampling,
            which always moves).
        step_size: the chains' leapfrog step sizes in u-space ``[C]``, or the slice widths in θ ``[d]``.
        wall_time: seconds for the whole call (initialisation, warm-up, sampling, diagnostics).
        num_evaluations: θ rows at which the target was evaluated (with its gradient for hmc/mala), SIR
            initialisation included.
    """

    method: str
    num_chains: int
    draws_per_chain: int
    warmup: int
    thin: int
    monitored: str
    r_hat: Tensor
    ess: Tensor
    acceptance_rate: float | None
    step_size: Tensor
    wall_time: float
    num_evaluations: int

    def __str__(self) -> str:
        acc = "" if self.acceptance_rate is None else f", acceptance {self.acceptance_rate:.2f}"
        return (f"{self.method}: {self.num_chains} chains x {self.draws_per_chain} draws (warm-up {self.warmup}, "
                f"thin {self.thin}) in {self.wall_time:.2f} s, {self.num_evaluations} evaluations{acc}; "
                f"max R-hat {_fmt(self.r_hat.max())}, min ESS {_fmt(self.ess.min(), '.0f')} ({self.monitored})")


def _fmt(v: Tensor, spec: str = ".3f") -> str:
    return "nan" if not torch.isfinite(v) else format(float(v), spec)


#: per-method defaults of (num_chains, warmup, thin)
_DEFAULTS: dict[str, tuple[int, int, int]] = {"mala": (500, 200, 1), "hmc": (200, 100, 1), "slice": (200, 50, 5)}


class MCMCPosterior:
    r"""p(θ | x_obs) ∝ p(θ) Π_{i=1}^m q(x_obs,i | θ) for a likelihood emulator q, sampled by MCMC.

    An ``x_obs`` of ``m > 1`` rows is m i.i.d. observations. Chains start by SIR from ``num_init`` prior draws,
    run ``warmup`` iterations (adapting the kernel), then keep every ``thin``-th iteration, so that
    ``ceil(n / num_chains)`` draws per chain make the n asked for. ``method``:

    * ``"mala"`` (default) and ``"hmc"`` move in u = B⁻¹(θ), B = ``biject_to(prior.support)``, on the target
      log q(x_obs | B(u)) + log p(B(u)) + log |det ∂B/∂u| with gradients through the emulator (see
      :func:`hmc_sample`): step size per chain and a diagonal mass matrix adapted during warm-up. They need a
      target differentiable in θ (every simgen family is); a validity classifier enters the acceptance test only
      (no gradient), which keeps the target exact.
    * ``"slice"``: coordinate-wise slice sampling in θ (widths from the chains' spread), gradient-free.

    Chains never cross between well-separated modes: each mode keeps the share of chains SIR gave it. Every call
    stores its diagnostics in ``last_run`` (an :class:`MCMCRun`: R̂, ESS, acceptance, step size, time, number of
    evaluations) and warns when R̂ > 1.05 or the ESS is below min(400, 10 % of the draws). For a posterior
    multimodal by symmetry, pass ``monitor`` — mode-invariant functions of θ (e.g. ``|θ₃|``, ``|θ₄|`` for SLCP)
    — so that chains in mirror modes are not flagged.

    The defaults favour speed: the emulator's cost per call is mostly fixed overhead up to ~10³ rows, so the
    sampler runs many short chains (MALA: 500 chains, 200 warm-up iterations, n / 500 draws each) whose union
    inherits SIR's spread over the posterior. Short chains do not each traverse a long curved posterior
    (two_moons' crescents), which R̂ (built for few long chains) reports as R̂ ≫ 1 even when the pooled draws
    match the posterior well; ask for fewer chains and more warm-up / thinning (or ``method="hmc"``) when
    each chain must mix on its own.

    A stochastic likelihood estimate (IWAE, Hutchinson) is made a deterministic function of θ by re-seeding one
    frozen generator at every evaluation, so chains never target a noisy density.

    Args:
        likelihood: a fitted :class:`~simgen.LikelihoodEstimator` (anything with ``log_likelihood(θ, x_obs)``;
            differentiable in θ for hmc/mala).
        prior: p(θ).
        method: ``"mala"``, ``"hmc"`` or ``"slice"``.
        num_chains: chains run in parallel (at most n / 10 for n samples asked for, so that each chain keeps
            10 draws for its diagnostics); default per method (mala 500, hmc 200, slice 200).
        warmup: adaptation iterations discarded at the start; default per method (mala 200, hmc 100, slice 50).
        thin: keep one iteration in ``thin``; default per method (mala 1, hmc 1, slice 5).
        num_init: prior draws for the SIR initialisation.
        num_leapfrog: mean leapfrog steps per HMC iteration (hmc only; see :func:`hmc_sample`).
        target_accept: dual averaging's target acceptance (default 0.574 for mala, 0.7 for hmc).
        monitor: θ ``[N, d]`` → ``[N, k]`` (or ``[N]``): the quantities whose R̂ and ESS are reported (default θ).
        progress: show a progress bar.
        validity: a classifier with ``log_prob_valid(θ)`` (log P(valid | θ)) added to the target, for a
            simulator whose failures depend on θ (see ``LikelihoodEstimator.posterior``).
    """

    def __init__(
        self,
        likelihood: Any,
        prior: Distribution,
        *,
        method: Method = "mala",
        num_chains: int | None = None,
        warmup: int | None = None,
        thin: int | None = None,
        num_init: int = 10_000,
        num_leapfrog: int = 5,
        target_accept: float | None = None,
        monitor: Callable[[Tensor], Tensor] | None = None,
        progress: bool = True,
        validity: Any = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        chains_default, warmup_default, thin_default = _DEFAULTS[method]
        num_chains = chains_default if num_chains is None else num_chains
        warmup = warmup_default if warmup is None else warmup
        thin = thin_default if thin is None else thin
        if min(num_chains, thin, num_init, num_leapfrog) < 1 or warmup < 0:
            raise ValueError(
                f"num_chains, thin, num_init and num_leapfrog must be >= 1 and warmup >= 0; got {num_chains}, "
                f"{thin}, {num_init}, {num_leapfrog} and {warmup}"
            )
        if target_accept is not None and not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1); got {target_accept}")
        if monitor is not None and not callable(monitor):
            raise ValueError(f"monitor must be a function of θ [N, d] -> [N, k]; got {type(monitor).__name__}")
        self.likelihood = likelihood
        self.prior = prior
        self.method = method
        self.num_chains, self.warmup, self.thin, self.num_init = num_chains, warmup, thin, num_init
        self.num_leapfrog = 1 if method == "mala" else num_leapfrog
        self.target_accept = target_accept
        self.monitor = monitor
        self.progress = progress
        self.validity = validity
        self.support = SupportBijection(prior)
        #: the last call's chains in θ ``[C, draws_per_chain, d]``
        self.chains: Tensor | None = None
        #: the last call's diagnostics (:meth:`sample`), and one per observation of :meth:`sample_batched`
        self.last_run: MCMCRun | None = None
        self.runs: list[MCMCRun] = []

    # ----------------------------------------------------------------- targets
    def _log_likelihood(self, theta: Tensor, x_obs: Tensor, seed: int) -> Tensor:
        """Σ_i log q(x_obs,i | θ_b) ``[B]`` on the CPU, differentiable in θ when grad mode is on."""
        device = self.likelihood.device
        frozen = torch.Generator(device=device).manual_seed(seed)
        return self.likelihood.log_likelihood(theta, x_obs, generator=frozen, grad=torch.is_grad_enabled()).cpu()

    def _target(self, x_obs: Tensor, seed: int, counter: list[int] | None = None) -> LogDensity:
        """log π(θ) = Σ_i log q(x_obs,i | θ) + log p(θ) (+ log P(valid | θ)), −inf outside the support."""

        def log_fn(theta: Tensor) -> Tensor:
            if counter is not None:
                counter[0] += theta.shape[0]
            lp_prior = self.prior.log_prob(theta)
            out = torch.full((theta.shape[0],), -math.inf)
            ok = torch.isfinite(lp_prior)
            if ok.any():
                out[ok] = self._log_likelihood(theta[ok], x_obs, seed) + lp_prior[ok]
                if self.validity is not None:
                    out[ok] += self.validity.log_prob_valid(theta[ok]).cpu()
            return out

        return log_fn

    def _target_unconstrained(self, x_obs: Tensor, seed: int, counter: list[int]) -> LogDensity:
        r"""log π_u(u) = log π(B(u)) + log |det ∂B/∂u| for u ``[B, d]`` (float64), differentiable in u."""
        support = self.support

        def log_fn(u: Tensor) -> Tensor:
            counter[0] += u.shape[0]
            if support.identity:
                theta, log_jac = u.float(), torch.zeros(u.shape[0], dtype=u.dtype)
            else:
                theta = support.inverse(u.float())  # B(u) in float64, cast and kept strictly inside the support
                log_jac = support.bijection.log_abs_det_jacobian(u, support.bijection(u))
                log_jac = log_jac.reshape(u.shape[0], -1).sum(dim=1)
            logp = self._log_likelihood(theta, x_obs, seed) + self.prior.log_prob(theta)
            if self.validity is not None:
                logp = logp + self.validity.log_prob_valid(theta).cpu()
            return logp.to(u.dtype) + log_jac

        return log_fn

    def log_prob(self, theta: Any, x_obs: Any) -> Tensor:
        """Unnormalised log p(θ | x_obs) = Σ_i log q(x_obs,i | θ) + log p(θ) (+ log P(valid | θ) with a validity
        classifier) for θ ``[n, d_theta]``: ``[n]``."""
        theta = self.likelihood._check_theta(theta)
        x_obs = self.likelihood._check_x(x_obs, "x_obs")
        with torch.no_grad():
            return self._target(x_obs, 0)(theta)

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` posterior draws given ``x_obs`` ``[m, *x_shape]`` (m i.i.d. observations): ``[n, d_theta]``.

        The run's diagnostics are in ``last_run`` afterwards (a warning is issued when they flag it)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of samples must be a positive int; got {n!r}")
        x_obs = self.likelihood._check_x(x_obs, "x_obs")
        start = time.perf_counter()
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        counter = [0]
        log_fn = self._target(x_obs, seed, counter)
        chains = min(self.num_chains, max(1, n // MIN_DRAWS))
        per_chain = math.ceil(n / chains)
        with torch.no_grad():
            init = sir_init(log_fn, self.prior, chains, self.num_init, generator)
        if self.method == "slice":
            with torch.no_grad():
                run, widths = self._slice(log_fn, init, per_chain, generator)
            step, acceptance = widths, None
        else:
            u0 = self.support(init).double()
            result = hmc_sample(
                self._target_unconstrained(x_obs, seed, counter), u0, per_chain, generator=generator,
                warmup=self.warmup, num_leapfrog=self.num_leapfrog, thin=self.thin,
                target_accept=self.target_accept, progress=self.progress,
            )
            d = u0.shape[1]
            run = self.support.inverse(result.chains.reshape(-1, d).float()).reshape(chains, per_chain, d)
            step, acceptance = result.step_size, float(result.acceptance_rate.mean())
        self.chains = run
        self.last_run = self._diagnose(run, step, acceptance, counter[0], start)
        self.runs = [self.last_run]
        # Interleave chains so that the first n draws come from all of them.
        return run.transpose(0, 1).reshape(-1, init.shape[1])[:n].contiguous()

    def _slice(self, log_fn: LogDensity, init: Tensor, per_chain: int, generator: torch.Generator
               ) -> tuple[Tensor, Tensor]:
        """Slice sampling: warm-up in short blocks so that the widths follow the chains' spread, then the run
        ``[C, per_chain, d]``; also the final widths ``[d]``."""
        prior_spread = _prior_spread(self.prior)
        widths = _widths(init, prior_spread)
        theta = init
        block = max(1, self.warmup // 5)
        done = 0
        while done < self.warmup:
            steps = min(block, self.warmup - done)
            theta = slice_sample(log_fn, theta, steps, widths=widths, generator=generator)[:, -1]
            widths = _widths(theta, prior_spread)
            done += steps
        run = slice_sample(
            log_fn, theta, per_chain * self.thin, widths=widths, generator=generator, progress=self.progress
        )
        return run[:, self.thin - 1 :: self.thin], widths

    def _diagnose(self, run: Tensor, step: Tensor, acceptance: float | None, evaluations: int,
                  start: float) -> MCMCRun:
        """R̂ and ESS of θ (or of ``monitor(θ)``) over the chains ``run`` ``[C, n, d]``; warns when they flag."""
        chains, per_chain, d = run.shape
        quantities = run
        if self.monitor is not None:
            values = torch.as_tensor(self.monitor(run.reshape(-1, d)))
            if values.shape[0] != chains * per_chain or values.dim() not in (1, 2):
                raise ValueError(f"monitor must map θ [N, {d}] to [N] or [N, k]; got {list(values.shape)} for "
                                 f"N = {chains * per_chain}")
            quantities = values.reshape(chains, per_chain, -1)
        k = quantities.shape[2]
        if per_chain >= MIN_DRAWS:
            r_hat, ess = split_rhat(quantities), effective_sample_size(quantities)
        else:
            r_hat = ess = torch.full((k,), math.nan, dtype=torch.float64)
        record = MCMCRun(self.method, chains, per_chain, self.warmup, self.thin,
                         "theta" if self.monitor is None else "monitor", r_hat, ess, acceptance, step,
                         time.perf_counter() - start, evaluations)
        draws = chains * per_chain
        bad_rhat = torch.nonzero(r_hat > 1.05).flatten().tolist()
        low_ess = torch.nonzero(ess < min(400.0, 0.1 * draws)).flatten().tolist()
        if bad_rhat or low_ess:
            what = "θ" if self.monitor is None else "monitor(θ)"
            warnings.warn(
                f"MCMC may not have converged: {what} columns {bad_rhat} have R-hat > 1.05 "
                f"({[round(float(r_hat[i]), 3) for i in bad_rhat]}), columns {low_ess} have bulk ESS < "
                f"{min(400.0, 0.1 * draws):.0f} ({[round(float(ess[i])) for i in low_ess]}). Run longer "
                "(warmup=, thin=), or, for a posterior multimodal by symmetry, pass monitor= mode-invariant "
                "functions of θ",
                RuntimeWarning, stacklevel=3,
            )
        return record

    def sample_batched(self, n: int, xs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws for each of ``m`` single observations ``xs`` ``[m, *x_shape]``: ``[m, n, d_theta]``
        (``runs`` holds each observation's diagnostics)."""
        xs = self.likelihood._check_x(xs, "xs")
        samples, runs = [], []
        for i in range(xs.shape[0]):
            samples.append(self.sample(n, xs[i : i + 1], generator=generator))
            runs.append(self.last_run)
        self.runs = runs
        return torch.stack(samples)


def _prior_spread(prior: Distribution) -> Tensor:
    """Per-coordinate standard deviation of 1000 seeded prior draws (the floor of the slice widths)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return prior.sample((1000,)).reshape(1000, -1).std(dim=0)


def _widths(theta: Tensor, prior_spread: Tensor) -> Tensor:
    """Slice widths: twice the chains' spread per coordinate, floored at 1 % of the prior's spread."""
    spread = theta.std(dim=0) if theta.shape[0] > 1 else torch.zeros(theta.shape[1])
    return torch.maximum(2 * spread, 1e-2 * prior_spread)
