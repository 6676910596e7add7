r"""The emulator's posterior, sampled by importance sampling from an amortised posterior (``sample_with="importance"``).

An amortised posterior q(θ | x) and an emulator ℓ̂(x | θ) fitted on the same simulations give two estimates of
p(θ | x): q itself, and the emulator's posterior

    π̂(θ | x) = p(θ) ℓ̂(x | θ) / Z(x),   Z(x) = ∫ p(θ) ℓ̂(x | θ) dθ.

Where x has more dimensions than θ or the posterior is thin (slcp), the emulator has learned more from the
simulations than q, and π̂ is the better of the two; MCMC reaches it in seconds to minutes per observation. q is
close to π̂ and covers it (it is trained by maximum likelihood, which spreads mass), so π̂ can be reached by
importance sampling instead (Dax et al. 2023, "Neural importance sampling for rapid and reliable
gravitational-wave inference", PRL 130, 171403, there with the exact likelihood): draw θ_k from the defensive
mixture q_w = (1 − w) q(θ | x) + w p(θ) (:mod:`simgen.mcmc.proposal`), weight each by

    w_k = p(θ_k) ℓ̂(x | θ_k) / q_w(θ_k),

and keep one of every K draws with probability ∝ its weight (sampling-importance-resampling, Rubin 1988, done
per output draw as in ``sbi``'s importance-sampled posterior, oversampling factor K = 32). Each output comes from
its own K proposals, so no θ is repeated: SIR over one pool of draws, resampled with replacement, repeats the
heavy ones, and a two-sample classifier learns the repeats. The K draws behind each output have a Kish effective
sample size; where it is small the output leans toward q, and :meth:`ImportancePosterior.sample` warns. The mean
weight estimates Z(x), so that π̂ has a normalised density,

    log π̂(θ | x) = log p(θ) + log ℓ̂(x | θ) − log Ẑ(x),   Ẑ(x) = (1/M) Σ_k w_k,

with the delta method's standard error of log Ẑ, σ = sd(w) / (√M · mean(w)). Ẑ is unbiased but its logarithm is
not: E[log Ẑ] ≈ log Z − σ²/2 (Jensen), which would put log π̂ above the true log density on average; the σ²/2 is
added back, leaving a bias of higher order in 1/M.

Which of q and π̂ is better is measured, not assumed (:func:`held_out_gain`): on simulations that neither model
learned from, the mean of log π̂(θ_i | x_i) − log q(θ_i | x_i) is the difference of the two posteriors' expected
log scores (a proper scoring rule: the better posterior has the higher mean in expectation).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from ..mcmc.proposal import DEFAULT_PRIOR_WEIGHT, ConditionalProposal, DefensiveMixture
from ..mcmc.target import finite_or_minus_inf
from ..training import split_indices
from ..utils import multinomial
from .likelihood import LikelihoodEstimator

__all__ = ["ImportancePosterior", "ImportanceRun", "Likelihood", "HeldOutGain", "held_out_gain", "SAMPLE_WITH",
           "HELD_OUT_ROWS", "MIN_ESS_FRACTION", "held_out_rows"]

#: how a :class:`~simgen.PosteriorEstimator` samples: by its own family in one pass, by importance sampling of its
#: emulator's posterior, or whichever measured better on held-out simulations
SAMPLE_WITH = ("auto", "direct", "importance")
#: proposal draws behind each output draw of :meth:`ImportancePosterior.sample` (the oversampling factor K)
DRAWS_PER_SAMPLE = 32
#: the mean effective sample size of each output's K draws below which :meth:`ImportancePosterior.sample` warns
MIN_BATCH_ESS = 2.0
#: proposal draws per observation for the evidence Ẑ(x) behind ``log_prob`` and the held-out comparison
EVIDENCE_DRAWS = 1024
#: the most held-out simulations :meth:`simgen.PosteriorEstimator.fit` compares the two posteriors on
HELD_OUT_ROWS = 512
#: the median effective fraction of the held-out comparison's draws below which importance sampling is not chosen
MIN_ESS_FRACTION = 0.01


@runtime_checkable
class Likelihood(Protocol):
    """What importance sampling weighs by: ℓ̂(x | θ), a fitted :class:`~simgen.LikelihoodEstimator` (or any
    likelihood with its ``log_prob``)."""

    def log_prob(self, x: Any, theta: Any) -> Tensor:
        """log ℓ̂(x[i] | θ[i]) ``[n]`` for x ``[n, *x_shape]`` and θ ``[n, d_theta]``."""
        ...


@dataclasses.dataclass(frozen=True)
class ImportanceRun:
    """What one :meth:`ImportancePosterior.sample` call did: proposal draws, the effective sample size of all
    their weights, the mean effective sample size of the K draws behind each output, and seconds taken."""

    num_draws: int
    ess: float
    batch_ess: float
    wall_time: float

    def __str__(self) -> str:
        return (f"importance sampling: ESS {self.ess:.0f} of {self.num_draws} draws, {self.batch_ess:.1f} of the "
                f"{DRAWS_PER_SAMPLE} behind each draw ({self.wall_time:.1f} s)")


class ImportancePosterior:
    r"""π̂(θ | x) ∝ p(θ) ℓ̂(x | θ), sampled from the defensive mixture of ``proposal`` and the prior (module
    docstring).

    Args:
        proposal: the amortised posterior q(θ | x) (``sample(n, x_obs, generator=)``, ``log_prob(θ, x_obs)``);
            its ``log_prob`` must be exact.
        emulator: ℓ̂(x | θ), a fitted :class:`~simgen.LikelihoodEstimator` of the same θ and x.
        prior: p(θ).
        prior_weight: the prior's share w of the defensive mixture.
    """

    def __init__(self, proposal: ConditionalProposal, emulator: Likelihood, prior: Distribution, *,
                 prior_weight: float = DEFAULT_PRIOR_WEIGHT) -> None:
        if not isinstance(emulator, Likelihood) or (isinstance(emulator, LikelihoodEstimator)
                                                    and emulator.density is None):
            raise ValueError("importance sampling needs a fitted likelihood (a LikelihoodEstimator); got "
                             + (f"{type(emulator).__name__}" if not isinstance(emulator, Likelihood) else
                                "one that is not fitted"))
        if not 0 <= prior_weight < 1:
            raise ValueError(f"prior_weight must lie in [0, 1); got {prior_weight}")
        self.proposal, self.emulator, self.prior = proposal, emulator, prior
        self.prior_weight = float(prior_weight)
        #: what the last :meth:`sample` call did, else ``None``
        self.last_run: ImportanceRun | None = None

    def log_target(self, theta: Tensor, x_obs: Tensor) -> Tensor:
        """log p(θ) + log ℓ̂(x_obs | θ) ``[n]`` for θ ``[n, d_theta]`` and one observation ``x_obs``
        ``[*x_shape]``; −inf outside the prior's support."""
        log_prior = self.prior.log_prob(theta).reshape(theta.shape[0], -1).sum(dim=1).float()
        out = torch.full_like(log_prior, -math.inf)
        inside = torch.isfinite(log_prior)
        if inside.any():
            rows = int(inside.sum())
            log_like = self.emulator.log_prob(x_obs[None].expand(rows, *x_obs.shape), theta[inside]).float()
            out[inside] = finite_or_minus_inf(log_like) + log_prior[inside]
        return out

    def log_evidence(self, x_obs: Tensor, *, num_draws: int = EVIDENCE_DRAWS,
                     generator: torch.Generator | None = None) -> tuple[float, float, float]:
        """(log Ẑ(x_obs), its standard error, the weights' ESS) from ``num_draws`` draws, log Ẑ corrected for the
        logarithm's bias to second order (module docstring)."""
        generator = generator if generator is not None else _fresh_generator()
        log_w = self._draws(x_obs, num_draws, generator)[1].double()
        if not torch.isfinite(log_w).any():
            return -math.inf, math.inf, 0.0
        w = torch.exp(log_w - log_w.max())
        se = float(w.std() / (math.sqrt(num_draws) * w.mean()))
        # the second-order (delta-method) correction of log's Jensen bias (module docstring)
        log_z = float(torch.logsumexp(log_w, 0) - math.log(num_draws)) + se**2 / 2
        ess = float(w.sum() ** 2 / w.pow(2).sum())
        return log_z, se, ess

    def sample(self, n: int, x_obs: Tensor, *, generator: torch.Generator | None = None,
               chunk: int = 2048) -> Tensor:
        """``n`` draws ``[n, d_theta]`` of π̂(θ | x_obs), ``x_obs`` ``[*x_shape]``: each one of its own
        :data:`DRAWS_PER_SAMPLE` proposal draws, kept with probability ∝ weight (module docstring), ``chunk``
        outputs at a time. An output whose draws all have zero weight is drawn again (an error after ten tries).
        :attr:`last_run` records the draws and their ESS; a warning says when the draws behind each output rest on
        fewer than :data:`MIN_BATCH_ESS` of them on average (the outputs then lean toward the proposal)."""
        generator = generator if generator is not None else _fresh_generator()
        start = time.perf_counter()
        k = DRAWS_PER_SAMPLE
        kept, batch_ess, log_w_all = [], [], []
        for s in range(0, n, chunk):
            size, theta_out, tries = min(chunk, n - s), None, 0
            todo = torch.arange(size)
            while todo.numel():
                tries += 1
                if tries > 10:
                    raise RuntimeError(f"importance sampling: {todo.numel()} of {n} draws found no proposal with a "
                                       "nonzero likelihood in ten tries: the observation may lie outside the range "
                                       "the emulator was trained on")
                theta, log_w = self._draws(x_obs, todo.numel() * k, generator)
                theta, log_w = theta.reshape(todo.numel(), k, -1), log_w.reshape(todo.numel(), k).double()
                log_w_all.append(log_w.reshape(-1))
                ok = torch.isfinite(log_w).any(dim=1)
                if theta_out is None:
                    theta_out = torch.empty(size, theta.shape[2])
                if ok.any():
                    p = torch.softmax(log_w[ok], dim=1)
                    pick = multinomial(p, 1, replacement=True, generator=generator).reshape(-1)
                    theta_out[todo[ok]] = theta[ok][torch.arange(int(ok.sum())), pick]
                    batch_ess.append(1.0 / p.pow(2).sum(dim=1))
                todo = todo[~ok]
            kept.append(theta_out)
        log_w = torch.cat(log_w_all)
        weights = torch.softmax(log_w, 0)
        mean_batch_ess = float(torch.cat(batch_ess).mean())
        self.last_run = ImportanceRun(log_w.numel(), float(1.0 / weights.pow(2).sum()), mean_batch_ess,
                                      time.perf_counter() - start)
        if mean_batch_ess < MIN_BATCH_ESS:
            warnings.warn(f"importance sampling: the {k} proposal draws behind each draw rest on {mean_batch_ess:.1f} "
                          "of them on average, so the draws lean toward the amortised posterior, which is far from "
                          "the emulator's here (sample_with='direct' draws from the amortised one alone)",
                          RuntimeWarning, stacklevel=3)
        return torch.cat(kept)

    def _draws(self, x_obs: Tensor, num_draws: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``num_draws`` θ ``[num_draws, d_theta]`` of the defensive mixture and their log weights."""
        mixture = DefensiveMixture(self.proposal, x_obs, self.prior, self.prior_weight)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            theta = mixture.sample((num_draws,))
        return theta, finite_or_minus_inf(self.log_target(theta, x_obs) - mixture.log_prob(theta))

    def log_prob(self, theta: Tensor, x: Tensor, *, generator: torch.Generator | None = None,
                 num_draws: int = EVIDENCE_DRAWS, progress: bool = False) -> tuple[Tensor, Tensor]:
        """(log π̂(θ[i] | x[i]), its standard error) ``[n]`` each for θ ``[n, d_theta]`` and x ``[n, *x_shape]``
        (rows already broadcast); Ẑ is estimated once per distinct x from ``num_draws`` draws."""
        generator = generator if generator is not None else _fresh_generator()
        distinct, inverse = torch.unique(x.reshape(x.shape[0], -1), dim=0, return_inverse=True)
        log_z, se = torch.empty(distinct.shape[0]), torch.empty(distinct.shape[0])
        for j in tqdm(range(distinct.shape[0]), desc="evidence", unit="x", disable=not progress, leave=False):
            log_z[j], se[j], _ = self.log_evidence(distinct[j].reshape(x.shape[1:]), num_draws=num_draws,
                                                   generator=generator)
        out = torch.empty(theta.shape[0])
        for j in range(distinct.shape[0]):
            rows = inverse == j
            out[rows] = self.log_target(theta[rows], distinct[j].reshape(x.shape[1:])) - log_z[j]
        return out, se[inverse]


@dataclasses.dataclass(frozen=True)
class HeldOutGain:
    """The held-out comparison of :func:`held_out_gain`: the mean of log π̂ − log q over ``rows`` simulations, its
    standard error, the median ESS of the evidence draws per row out of ``num_draws``, and the seconds it took."""

    gain: float
    se: float
    rows: int
    median_ess: float
    num_draws: int
    wall_time: float = 0.0

    @property
    def favours_importance(self) -> bool:
        """π̂ ahead by more than two standard errors, with weights that rest on at least
        :data:`MIN_ESS_FRACTION` of their draws (else sampling it would need too many)."""
        return self.gain > 2 * self.se and self.median_ess >= MIN_ESS_FRACTION * self.num_draws

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (f"held-out log p: importance − direct {self.gain:+.3f} ± {self.se:.3f} nats over {self.rows} "
                f"simulations (median ESS {self.median_ess:.0f} of {self.num_draws}; {self.wall_time:.0f} s)")


def held_out_gain(importance: ImportancePosterior, log_q: Tensor, theta: Tensor, x: Tensor, *,
                  num_draws: int = EVIDENCE_DRAWS, generator: torch.Generator | None = None,
                  progress: bool = False) -> HeldOutGain:
    r"""Mean and standard error of log π̂(θ_i | x_i) − log q(θ_i | x_i) over held-out pairs θ ``[V, d_theta]``,
    x ``[V, *x_shape]`` (``log_q`` ``[V]``, the amortised posterior's), each with its own Ẑ(x_i) from
    ``num_draws`` draws (module docstring). The expected log score is proper, so a positive mean says π̂ is the
    closer to p(θ | x) on average over the prior predictive (Gneiting & Raftery 2007, JASA 102(477))."""
    generator = generator if generator is not None else _fresh_generator()
    start = time.perf_counter()
    diffs, ess = [], []
    for i in tqdm(range(theta.shape[0]), desc="importance vs direct", unit="sim", disable=not progress,
                  leave=False):
        log_z, _, e = importance.log_evidence(x[i], num_draws=num_draws, generator=generator)
        diffs.append(float(importance.log_target(theta[i : i + 1], x[i])[0]) - log_z - float(log_q[i]))
        ess.append(e)
    d = torch.tensor(diffs, dtype=torch.float64)
    median_ess, seconds = float(torch.tensor(ess).median()), time.perf_counter() - start
    if d.isnan().any() or (d == -math.inf).any():  # a held-out θ where π̂ has no density
        return HeldOutGain(-math.inf, 0.0, d.numel(), median_ess, num_draws, seconds)
    if (d == math.inf).any():  # a held-out θ where q has none
        return HeldOutGain(math.inf, 0.0, d.numel(), median_ess, num_draws, seconds)
    se = float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else math.inf
    return HeldOutGain(float(d.mean()), se, d.numel(), median_ess, num_draws, seconds)


def held_out_rows(n: int, fraction: float, seed: int | None) -> Tensor:
    """The seed-fixed ``fraction`` of ``n`` simulations that a posterior with emulated pairs and its emulator
    both hold out (for early stopping, then for :func:`held_out_gain`): indices ``[round(fraction n)]``."""
    generator = torch.Generator().manual_seed(int(seed) + 13 if seed is not None else
                                              int(torch.randint(0, 2**62, ())))
    return split_indices(n, fraction, generator)[1]


def _fresh_generator() -> torch.Generator:
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
