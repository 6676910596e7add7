r"""Vectorised MCMC over θ for likelihood-based posteriors.

Many chains advance together, so every evaluation of the (neural) likelihood is one batched call. One idea per
module:

- :mod:`~simgen.mcmc.target`: what the samplers take, a batched unnormalised log-density;
- :mod:`~simgen.mcmc.sir`: starting points by sampling-importance-resampling of prior draws, close to the
  posterior's typical set and in each of its modes in proportion to their mass;
- :mod:`~simgen.mcmc.proposal`: SIR from an amortised posterior's defensive mixture instead of the prior
  (Hesterberg 1995), for posteriors too thin for prior draws;
- :mod:`~simgen.mcmc.gradient`: Hamiltonian Monte Carlo (Neal 2011, arXiv:1206.1901) and MALA (its one-step
  case, Roberts & Tweedie 1996), step size per chain by dual averaging (Hoffman & Gelman 2014, JMLR 15) and a
  diagonal mass matrix from Stan-like warm-up windows;
- :mod:`~simgen.mcmc.slice`: coordinate-wise slice sampling with stepping out (Neal 2003, Ann. Statist. 31(3)),
  for targets without gradients;
- :mod:`~simgen.mcmc.convergence`: rank-normalised split-R̂ and bulk effective sample size (Vehtari, Gelman,
  Simpson, Carpenter & Bürkner 2021, Bayesian Analysis 16(2)), as ArviZ defines them;
- :mod:`~simgen.mcmc.posterior`: :class:`MCMCPosterior`, the posterior of a likelihood emulator, which runs the
  gradient kernels in the unconstrained space u = B⁻¹(θ) of the prior's support
  (B = ``torch.distributions.biject_to(prior.support)``) and reports R̂ and ESS with every run.

This package imports no estimator (:class:`~simgen.LikelihoodEstimator` builds an :class:`MCMCPosterior`, not
the other way round).
"""

from __future__ import annotations

from .convergence import effective_sample_size, split_rhat
from .gradient import HMCResult, hmc_sample, mala_sample
from .posterior import METHODS, MIN_DRAWS, MCMCPosterior, MCMCRun, Method
from .proposal import DEFAULT_PRIOR_WEIGHT, ConditionalProposal, DefensiveMixture
from .sir import SIRStart, sir_init, sir_start
from .slice import slice_sample
from .target import LogDensity

__all__ = [
    "slice_sample",
    "sir_init",
    "sir_start",
    "SIRStart",
    "ConditionalProposal",
    "DefensiveMixture",
    "DEFAULT_PRIOR_WEIGHT",
    "hmc_sample",
    "mala_sample",
    "HMCResult",
    "split_rhat",
    "effective_sample_size",
    "MCMCRun",
    "MCMCPosterior",
    "METHODS",
    "MIN_DRAWS",
    "Method",
    "LogDensity",
]
