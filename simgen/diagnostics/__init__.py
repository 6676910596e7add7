r"""Checks of posteriors and likelihood emulators against references: two-sample tests, calibration, predictive
checks.

One idea per module:

- :mod:`~simgen.diagnostics.two_sample`: :func:`c2st`, :func:`mmd`;
- :mod:`~simgen.diagnostics.sbc`: simulation-based calibration, :func:`sbc`, :func:`sbc_from_draws`;
- :mod:`~simgen.diagnostics.coverage`: expected coverage of HPD and TARP regions, :func:`coverage`;
- :mod:`~simgen.diagnostics.predictive`: the posterior predictive check, :func:`posterior_predictive`;
- :mod:`~simgen.diagnostics.likelihood`: an emulator against its simulator, :func:`compare_likelihood`;
- :mod:`~simgen.diagnostics.maps`: summary statistics of maps (power spectrum, peak counts, moments, histogram);
- :mod:`~simgen.diagnostics.draws` and :mod:`~simgen.diagnostics.uniformity`: seeded draws and uniformity tests
  that the checks share.

Every check takes *any* object with the sampling interface, so it works for every family and both directions
(and imports no estimator):

- a posterior: ``sample_batched(n, xs)`` → ``[m, n, d_theta]`` (or ``sample(n, x)`` → ``[n, d_theta]``) and,
  for HPD coverage, ``log_prob(theta, x)`` → ``[n]`` (normalised or not: only its ordering within one x is used);
  :class:`~simgen.PosteriorEstimator`, :class:`~simgen.mcmc.MCMCPosterior` and hand-written analytic posteriors;
- an emulator: ``sample_batched(n, thetas)`` → ``[m, n, *x_shape]`` and, for the likelihood gap,
  ``log_prob(x, theta)`` → ``[n]``; :class:`~simgen.LikelihoodEstimator` or a simulator wrapped likewise.

A ``seed`` makes a check reproducible (:mod:`~simgen.diagnostics.draws`). Results are dataclasses with a
``flagged`` property (``True`` when a test rejects at the stated level) and a ``summary()`` in words.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import likelihood as _likelihood
from .coverage import CoverageResult, coverage, log_prob_is_ode
from .likelihood import (
    LikelihoodComparison,
    SpectrumComparison,
    StatisticComparison,
    compare_emulator,
    compare_likelihood,
)
from .maps import map_statistics
from .predictive import PosteriorPredictiveResult, posterior_predictive
from .sbc import SBCResult, sbc, sbc_from_draws
from .two_sample import c2st, mmd

__all__ = [
    "c2st",
    "mmd",
    "sbc",
    "sbc_from_draws",
    "coverage",
    "posterior_predictive",
    "compare_likelihood",
    "compare_emulator",
    "log_prob_is_ode",
    "SBCResult",
    "CoverageResult",
    "PosteriorPredictiveResult",
    "LikelihoodComparison",
    "StatisticComparison",
    "SpectrumComparison",
    "map_statistics",
]


def __getattr__(name: str) -> Any:
    # former names (``EmulatorComparison``) still resolve, with a DeprecationWarning
    if name in _likelihood.DEPRECATED_NAMES:
        new = _likelihood.DEPRECATED_NAMES[name]
        warnings.warn(f"simgen.diagnostics.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        return getattr(_likelihood, new)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
