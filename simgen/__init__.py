"""simgen: simulation-based inference with conditional deep generative models.

Every model is a conditional density p(y | c): a posterior p(θ | x) or an emulator p(x | θ).
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import diagnostics, models, nets, plots  # noqa: E402
from .estimators import LikelihoodEstimator, PosteriorEstimator  # noqa: E402
from .io import load  # noqa: E402
from .simulate import simulate  # noqa: E402
from .store import Store, open_store  # noqa: E402
from .training import TrainingConfig, TrainingHistory  # noqa: E402

__all__ = [
    "__version__",
    "simulate",
    "open_store",
    "Store",
    "PosteriorEstimator",
    "LikelihoodEstimator",
    "TrainingConfig",
    "TrainingHistory",
    "load",
    "diagnostics",
    "plots",
    "models",
    "nets",
]
