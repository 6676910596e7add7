r"""p(θ | x_obs) ∝ p(θ) Π_i q(x_obs,i | θ) for a likelihood emulator q, sampled by MCMC (:class:`MCMCPosterior`).

Chains start from SIR (:mod:`~simgen.mcmc.sir`), move by HMC/MALA in the prior's unconstrained space
(:mod:`~simgen.mcmc.gradient`) or by slice sampling in θ (:mod:`~simgen.mcmc.slice`), and every run reports
split-R̂ and bulk ESS (:mod:`~simgen.mcmc.convergence`). The likelihood is any object with
``log_likelihood(θ, x_obs, generator=, grad=)``, ``device`` and the argument checks ``check_theta``/``check_x``
(a :class:`~simgen.LikelihoodEstimator`); this module imports no estimator.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..transforms import SupportBijection
from ..utils import randint
from .convergence import effective_sample_size, split_rhat
from .gradient import hmc_sample
from .proposal import DEFAULT_PRIOR_WEIGHT, ConditionalProposal, DefensiveMixture
from .sir import sir_start
from .slice import slice_sample
from .target import LogDensity

__all__ = ["MCMCRun", "MCMCPosterior", "METHODS", "MIN_DRAWS"]

Method = Literal["hmc", "mala", "slice"]
METHODS = ("hmc", "mala", "slice")
#: draws per chain below which R̂ and ESS are not computed (each split half needs a few)
MIN_DRAWS = 10


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
        init_draws: draws the SIR starting points were resampled from.
        init_ess: the effective sample size of their importance weights (:mod:`simgen.mcmc.sir`).
        init_from: what SIR drew from: ``"prior"``, or ``"proposal"`` (an amortised posterior's defensive
            mixture, :mod:`simgen.mcmc.proposal`).
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
    init_draws: int = 0
    init_ess: float = math.nan
    init_from: str = "prior"

    def __str__(self) -> str:
        acc = "" if self.acceptance_rate is None else f", acceptance {self.acceptance_rate:.2f}"
        return (f"{self.method}: {self.num_chains} chains x {self.draws_per_chain} draws (warm-up {self.warmup}, "
                f"thin {self.thin}) in {self.wall_time:.2f} s, {self.num_evaluations} evaluations{acc}, started by "
                f"SIR from {self.init_draws} {self.init_from} draws (ESS {self.init_ess:.0f}); "
                f"max R-hat {_fmt(self.r_hat.max())}, min ESS {_fmt(self.ess.min(), '.0f')} ({self.monitored})")


def _fmt(v: Tensor, spec: str = ".3f") -> str:
    return "nan" if not torch.isfinite(v) else format(float(v), spec)


#: per-method defaults of (num_chains, warmup, thin)
_DEFAULTS: dict[str, tuple[int, int, int]] = {"mala": (500, 200, 10), "hmc": (200, 100, 3), "slice": (200, 50, 5)}


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

    The defaults favour speed: a batched network call costs about the same for one row as for many (its
    overhead dominates until the batch fills the device), so the sampler runs many short chains (MALA: 500
    chains, 200 warm-up iterations, n / 500 draws each, one kept in 10 iterations) whose union inherits SIR's
    spread over the posterior; SIR draws from the prior until its weights rest on ``init_ess`` effective draws, so
    that each mode gets its share of the chains. Given an amortised posterior as ``proposal``, SIR draws from it
    (mixed with the prior) instead, which on thin posteriors needs far fewer draws for the same ESS.
    Short chains do not each traverse a long curved posterior (two_moons' crescents), which R̂ (built for few
    long chains) reports as R̂ ≫ 1 even when the pooled draws match the posterior well; ask for fewer chains and
    more warm-up / thinning (or ``method="hmc"``) when each chain must mix on its own.

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
        thin: keep one iteration in ``thin``; default per method (mala 10, hmc 3, slice 5). Successive
            iterations are correlated (MALA's strongly), and the pooled draws of many short chains then come in
            clumps that a classifier (C2ST) tells from independent draws.
        num_init: draws for the SIR initialisation's first round.
        init_ess: the effective sample size of the SIR weights to reach before the chains start: more draws
            (doubling each round) until it does, or until ``max_init`` (:func:`~simgen.mcmc.sir.sir_start`). Chains
            keep the share of the posterior's modes that SIR gives them, so a narrow posterior needs many draws.
        max_init: the most draws for SIR.
        proposal: an amortised posterior q(θ | x) (a fitted :class:`~simgen.PosteriorEstimator` of the same
            θ and x) for SIR to draw from instead of the prior, as the defensive mixture
            (1 − w) q(θ | x_obs) + w p(θ) (:mod:`~simgen.mcmc.proposal`): where the posterior is thin, it reaches
            ``init_ess`` in far fewer draws and gives each mode its share. The chains' target is unchanged.
        prior_weight: w, the prior's share of that mixture, in [0, 1).
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
        init_ess: float = 50.0,
        max_init: int = 1_000_000,
        num_leapfrog: int = 5,
        target_accept: float | None = None,
        monitor: Callable[[Tensor], Tensor] | None = None,
        progress: bool = True,
        validity: Any = None,
        proposal: ConditionalProposal | None = None,
        prior_weight: float = DEFAULT_PRIOR_WEIGHT,
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
        if not init_ess >= 0 or max_init < num_init:
            raise ValueError(f"init_ess must be >= 0 and max_init >= num_init ({num_init}); got {init_ess} and "
                             f"{max_init}")
        if target_accept is not None and not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1); got {target_accept}")
        if proposal is not None and not isinstance(proposal, ConditionalProposal):
            raise ValueError("proposal must be an amortised posterior q(θ | x) with sample(n, x_obs, generator=) "
                             f"and log_prob(theta, x) (a fitted PosteriorEstimator); got {type(proposal).__name__}")
        if not 0 <= prior_weight < 1:
            raise ValueError(f"prior_weight must lie in [0, 1); got {prior_weight}")
        if monitor is not None and not callable(monitor):
            raise ValueError(f"monitor must be a function of θ [N, d] -> [N, k]; got {type(monitor).__name__}")
        self.likelihood = likelihood
        self.prior = prior
        self.method = method
        self.num_chains, self.warmup, self.thin, self.num_init = num_chains, warmup, thin, num_init
        self.init_ess, self.max_init = float(init_ess), max_init
        self.num_leapfrog = 1 if method == "mala" else num_leapfrog
        self.target_accept = target_accept
        self.monitor = monitor
        self.progress = progress
        self.validity = validity
        self.proposal, self.prior_weight = proposal, float(prior_weight)
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
        theta = self.likelihood.check_theta(theta)
        x_obs = self.likelihood.check_x(x_obs, "x_obs")
        with torch.no_grad():
            return self._target(x_obs, 0)(theta)

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` posterior draws given ``x_obs`` ``[m, *x_shape]`` (m i.i.d. observations): ``[n, d_theta]``.

        The run's diagnostics are in ``last_run`` afterwards (a warning is issued when they flag it)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of samples must be a positive int; got {n!r}")
        x_obs = self.likelihood.check_x(x_obs, "x_obs")
        start = time.perf_counter()
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        seed = int(randint(0, 2**62, (), generator=generator))
        counter = [0]
        log_fn = self._target(x_obs, seed, counter)
        chains = min(self.num_chains, max(1, n // MIN_DRAWS))
        per_chain = math.ceil(n / chains)
        source = (self.prior if self.proposal is None
                  else DefensiveMixture(self.proposal, x_obs, self.prior, self.prior_weight))
        with torch.no_grad():
            start_points = sir_start(log_fn, source, chains, self.num_init, generator, min_ess=self.init_ess,
                                     max_init=self.max_init)
        init = start_points.theta
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
        self.last_run.init_draws, self.last_run.init_ess = start_points.num_draws, start_points.ess
        self.last_run.init_from = "prior" if self.proposal is None else "proposal"
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
        min_ess = min(400.0, 0.1 * draws)
        bad_rhat = torch.nonzero(r_hat > 1.05).flatten().tolist()
        low_ess = torch.nonzero(ess < min_ess).flatten().tolist()
        if bad_rhat or low_ess:
            what = "θ" if self.monitor is None else "monitor(θ)"
            problems = []
            if bad_rhat:
                problems.append(f"{what} columns {bad_rhat} have R-hat > 1.05 "
                                f"({[round(float(r_hat[i]), 3) for i in bad_rhat]})")
            if low_ess:
                problems.append(f"{what} columns {low_ess} have bulk ESS < {min_ess:.0f} "
                                f"({[round(float(ess[i])) for i in low_ess]})")
            warnings.warn(
                f"MCMC may not have converged: {'; '.join(problems)}. Run longer (warmup=, thin=), or, for a "
                "posterior multimodal by symmetry, pass monitor= mode-invariant functions of θ",
                RuntimeWarning, stacklevel=3,
            )
        return record

    def sample_batched(self, n: int, xs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws for each of ``m`` single observations ``xs`` ``[m, *x_shape]``: ``[m, n, d_theta]``
        (``runs`` holds each observation's diagnostics)."""
        xs = self.likelihood.check_x(xs, "xs")
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
