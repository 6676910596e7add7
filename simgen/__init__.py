"""simgen: simulation-based inference with conditional deep generative models.

Every model is a conditional density p(y | c): a posterior p(θ | x) or a likelihood p(x | θ) (an emulator of
the simulator). README's "Architecture" section maps the package.
"""

from __future__ import annotations

from . import diagnostics, models, nets, plots
from ._version import __version__
from .campaign import Store, open_store
from .estimators import JointEstimator, LikelihoodEstimator, PosteriorEstimator, RatioEstimator
from .io import load

# ``simgen.simulate`` is the function; importing the former module of that name here first keeps a later
# ``from simgen.simulate import ...`` from rebinding the package attribute to the module
from .simulate import simulate
from .training import TrainingConfig, TrainingHistory

__all__ = [
    "__version__",
    "simulate",
    "open_store",
    "Store",
    "PosteriorEstimator",
    "LikelihoodEstimator",
    "RatioEstimator",
    "JointEstimator",
    "TrainingConfig",
    "TrainingHistory",
    "load",
    "diagnostics",
    "plots",
    "models",
    "nets",
]
