"""Simulators for simulation-based inference: ``x = sim(theta)`` on batches, with a torch prior.

>>> import simulators
>>> sim = simulators.get("two_moons")
>>> theta = sim.prior.sample((10,))
>>> x = sim(theta)                          # [10, 2] float32
>>> sim.log_likelihood(theta, x)            # [10] float64 (tractable simulators)

This package never imports ``simgen``.
"""

from simulators import sbibm_tasks  # noqa: F401  (registers the benchmark tasks)
from simulators.base import Simulator, available, box_uniform, get, numpy_rng, register
from simulators.collider import Collider, ColliderDetector  # noqa: F401  (registers collider, collider_detector)
from simulators.cosmology import CosmologyMaps  # noqa: F401  (registers cosmology_maps)
from simulators.external import ExternalSimulator  # noqa: F401  (registers external)
from simulators.extra_tasks import GaussianLinearUniform, GaussianSignal, PoissonGLM
from simulators.molecular import DoubleWell  # noqa: F401  (registers double_well)
from simulators.sbibm_tasks import SLCP, GaussianLinear, GaussianMixture, TwoMoons

__all__ = [
    "SLCP",
    "ExternalSimulator",
    "GaussianLinear",
    "GaussianLinearUniform",
    "GaussianMixture",
    "GaussianSignal",
    "PoissonGLM",
    "Simulator",
    "TwoMoons",
    "available",
    "box_uniform",
    "get",
    "numpy_rng",
    "register",
]
