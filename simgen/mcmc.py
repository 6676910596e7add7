"""Vectorised MCMC over θ for likelihood-based posteriors.

Many chains advance together, so every evaluation of the (neural) likelihood is one batched call. Chains start
from sampling-importance-resampling (SIR) of prior draws, which places them close to the posterior's typical
set (and in each of its modes in proportion to their mass), then move by coordinate-wise slice sampling with
stepping out (Neal 2003, "Slice sampling", Ann. Statist. 31(3)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

__all__ = ["slice_sample", "sir_init", "MCMCPosterior"]

LogDensity = Callable[[Tensor], Tensor]


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


class MCMCPosterior:
    r"""p(θ | x_obs) ∝ p(θ) Π_{i=1}^m q(x_obs,i | θ) for a likelihood emulator q, sampled by MCMC.

    An ``x_obs`` of ``m > 1`` rows is m i.i.d. observations. Chains start by SIR from ``num_init`` prior draws,
    run ``warmup`` sweeps (interval widths re-estimated from the chains' spread after each), then keep every
    ``thin``-th sweep. A stochastic likelihood estimate (IWAE, Hutchinson) is made a deterministic function of θ
    by re-seeding one frozen generator at every evaluation, so chains never target a noisy density.

    Args:
        likelihood: a fitted :class:`~simgen.LikelihoodEstimator` (anything with ``log_likelihood(θ, x_obs)``).
        prior: p(θ).
        num_chains: chains run in parallel (at most the number of samples asked for).
        warmup: sweeps discarded at the start.
        thin: keep one sweep in ``thin``.
        num_init: prior draws for the SIR initialisation.
        progress: show a progress bar.
        validity: a classifier with ``log_prob_valid(θ)`` (log P(valid | θ)) added to the target, for a
            simulator whose failures depend on θ (see ``LikelihoodEstimator.posterior``).
    """

    def __init__(
        self,
        likelihood: Any,
        prior: Distribution,
        *,
        num_chains: int = 200,
        warmup: int = 50,
        thin: int = 5,
        num_init: int = 10_000,
        progress: bool = True,
        validity: Any = None,
    ) -> None:
        if min(num_chains, thin, num_init) < 1 or warmup < 0:
            raise ValueError("num_chains, thin and num_init must be >= 1 and warmup >= 0")
        self.likelihood = likelihood
        self.prior = prior
        self.num_chains, self.warmup, self.thin, self.num_init = num_chains, warmup, thin, num_init
        self.progress = progress
        self.validity = validity
        self.chains: Tensor | None = None

    def _target(self, x_obs: Tensor, seed: int) -> LogDensity:
        device = self.likelihood.device

        def log_fn(theta: Tensor) -> Tensor:
            lp_prior = self.prior.log_prob(theta)
            out = torch.full((theta.shape[0],), -math.inf)
            ok = torch.isfinite(lp_prior)
            if ok.any():
                frozen = torch.Generator(device=device).manual_seed(seed)
                ll = self.likelihood.log_likelihood(theta[ok], x_obs, generator=frozen).cpu()
                out[ok] = ll + lp_prior[ok]
                if self.validity is not None:
                    out[ok] += self.validity.log_prob_valid(theta[ok]).cpu()
            return out

        return log_fn

    def log_prob(self, theta: Any, x_obs: Any) -> Tensor:
        """Unnormalised log p(θ | x_obs) = Σ_i log q(x_obs,i | θ) + log p(θ) (+ log P(valid | θ) with a validity
        classifier) for θ ``[n, d_theta]``: ``[n]``."""
        theta = self.likelihood._check_theta(theta)
        x_obs = self.likelihood._check_x(x_obs, "x_obs")
        return self._target(x_obs, 0)(theta)

    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` posterior draws given ``x_obs`` ``[m, *x_shape]`` (m i.i.d. observations): ``[n, d_theta]``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of samples must be a positive int; got {n!r}")
        x_obs = self.likelihood._check_x(x_obs, "x_obs")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        log_fn = self._target(x_obs, int(torch.randint(0, 2**62, (), generator=generator)))
        chains = min(self.num_chains, n)
        init = sir_init(log_fn, self.prior, chains, self.num_init, generator)
        prior_spread = _prior_spread(self.prior)
        widths = _widths(init, prior_spread)
        per_chain = math.ceil(n / chains)
        # Warm-up in short blocks so the widths follow the chains' spread.
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
        self.chains = run[:, self.thin - 1 :: self.thin]
        # Interleave chains so that the first n draws come from all of them.
        return self.chains.transpose(0, 1).reshape(-1, init.shape[1])[:n].contiguous()

    def sample_batched(self, n: int, xs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws for each of ``m`` single observations ``xs`` ``[m, *x_shape]``: ``[m, n, d_theta]``."""
        xs = self.likelihood._check_x(xs, "xs")
        return torch.stack([self.sample(n, xs[i : i + 1], generator=generator) for i in range(xs.shape[0])])


def _prior_spread(prior: Distribution) -> Tensor:
    """Per-coordinate standard deviation of 1000 seeded prior draws (the floor of the slice widths)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return prior.sample((1000,)).reshape(1000, -1).std(dim=0)


def _widths(theta: Tensor, prior_spread: Tensor) -> Tensor:
    """Slice widths: twice the chains' spread per coordinate, floored at 1 % of the prior's spread."""
    spread = theta.std(dim=0) if theta.shape[0] > 1 else torch.zeros(theta.shape[1])
    return torch.maximum(2 * spread, 1e-2 * prior_spread)
