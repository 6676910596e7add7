"""Posterior and likelihood estimators: they pick y and c, build a family for the data, and delegate.

``PosteriorEstimator`` models p(θ | x) (y = θ, c = x); ``LikelihoodEstimator`` models the likelihood p(x | θ) (y =
x, c = θ), an emulator of the simulator; ``JointEstimator`` (:mod:`~simgen.estimators.joint`) models the joint
p(θ, x) with an all-in-one Simformer and samples any conditional; ``RatioEstimator``
(:mod:`~simgen.estimators.ratio`) is a classifier of the ratio p(x | θ) / p(x), not a density, whose posterior is
sampled by MCMC. The two density estimators own the pre-processing (standardisation, prior-support bijection,
dequantisation and the context embedding) through :class:`~simgen.models.TransformedDensity`; all three train with
:func:`simgen.training.train`.

Modules: :mod:`~simgen.estimators.base` (what both share), :mod:`~simgen.estimators.posterior`,
:mod:`~simgen.estimators.likelihood`, :mod:`~simgen.estimators.augment` (pairs drawn from a fitted emulator, for a
posterior to train on: ``PosteriorEstimator.fit(..., emulator=)``), :mod:`~simgen.estimators.auto`
(``model="auto"``, the default: the family chosen from the data), :mod:`~simgen.estimators.ingest` (training from a
campaign store), :mod:`~simgen.estimators.validity` (the classifier P(valid | θ)) and
:mod:`~simgen.estimators.sequential` (``fit_sequential``: rounds of simulations for one observation, TSNPE and
sequential NLE/NRE). Each estimator registers itself with :mod:`simgen.io` under its direction, so the loader needs
no import of it.
"""

from __future__ import annotations

from ..utils import as_tensor, default_device
from .augment import emulated_pairs
from .auto import AUTO, Choice
from .base import Estimator, infer_x_kind
from .ingest import fit_streaming
from .joint import JointEstimator
from .likelihood import LikelihoodEstimator
from .posterior import PosteriorEstimator
from .ratio import RATIO_MODELS, RatioEstimator
from .validity import ValidityClassifier, fit_validity

#: the former private names, kept for code written against them
_Estimator = Estimator
_fit_streaming = fit_streaming

__all__ = [
    "PosteriorEstimator", "LikelihoodEstimator", "RatioEstimator", "JointEstimator", "RATIO_MODELS",
    "Estimator", "ValidityClassifier", "fit_validity", "infer_x_kind", "AUTO", "Choice",
    "as_tensor", "default_device", "emulated_pairs",
]
