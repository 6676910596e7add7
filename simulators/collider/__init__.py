r"""A collider-like chain, parton → shower → detector → jets — ``collider`` and ``collider_detector``.

:math:`p(x \mid \theta) = \int p(z_p \mid \theta)\, p(z_s \mid z_p)\, p(z_d \mid z_s, \theta)\, p(x \mid z_d)\, dz`
for a scalar dijet resonance :math:`X \to q \bar q` with :math:`\theta = (M, \Gamma, \mathrm{JES})
\sim U[400, 600]\,\mathrm{GeV} \times U[5, 50]\,\mathrm{GeV} \times U[0.95, 1.05]`. All momenta are
:math:`(E, p_x, p_y, p_z)` in GeV, float64.

One idea per module (each imports only those above it):

- ``constants``: the chain's fixed parameters;
- ``kinematics``: boosts, :math:`(p_T, \eta, \phi)`, angle wrapping, back-to-back rest frames, axes;
- ``distributions``: the truncated Breit–Wigner, the truncated exponential, :class:`LogUniformBox`;
- ``latents``: the latent dataclasses :class:`PartonLatents`, :class:`ShowerLatents`, :class:`DetectorLatents`,
  :class:`ColliderLatents`;
- ``parton`` (:math:`z_p`), ``shower`` (:math:`z_s`, Ginkgo's invariant-mass shower and
  :func:`ginkgo_tree_log_likelihood`), ``detector`` (:math:`z_d`, :func:`detector_response_log_prob`): each stage's
  sampler and exact log-density, with its math in the module docstring;
- ``jets``: :func:`jet_summary`, the observed summary;
- ``smeared``: the exact variant ``level="parton_smeared"`` (:func:`smeared_cell_masses`);
- ``simulator``: :class:`Collider`; ``detector_only``: :class:`ColliderDetector`.

Not implemented (optional in the spec): the angular smearing option of the detector and ``free_shower``.

**Tractability.** :math:`p(x \mid \theta)` is intractable (``tractable=False``), but the joint
:math:`\log p(x, z \mid \theta)` is exact (:meth:`Collider.joint_log_prob`, differentiable in :math:`\theta` by
torch autograd, for the joint score and ratio of "mining gold", Brehmer et al. 2020). ``level="parton_smeared"``
is the exact variant: :math:`x = m_{obs} = \mathrm{JES}\, m\, (1 + 0.05 \xi)`, one event per simulation, likelihood
by quadrature over 4000 mass cells, a 3-D grid reference posterior for ``n_evt`` i.i.d. events
(:class:`Collider`). ``collider_detector`` (:class:`ColliderDetector`) is the detector's per-particle response.
"""

from simulators.collider.constants import (
    A_STOCH,
    B_CONST,
    DR_SEED,
    E_THR,
    EFFICIENCY,
    EPS,
    ETA_MAX,
    F64,
    LAMBDA,
    LAMBDA_ROOT,
    LOG_2PI,
    M_HI,
    M_LO,
    MAX_DEPTH,
    N_CELLS,
    N_MAX,
    PRIOR_HIGH,
    PRIOR_LOW,
    PT_MEAN,
    R_M,
    RHO,
    T_CUT,
)
from simulators.collider.detector import detector_response_log_prob
from simulators.collider.detector_only import ColliderDetector
from simulators.collider.distributions import LogUniformBox, bw_cdf, bw_log_density, bw_sample
from simulators.collider.jets import jet_summary
from simulators.collider.kinematics import boost
from simulators.collider.kinematics import kallen_sqrt as _kallen_sqrt  # noqa: F401  (the name tests import)
from simulators.collider.latents import ColliderLatents, DetectorLatents, PartonLatents, ShowerLatents
from simulators.collider.shower import ginkgo_tree_log_likelihood
from simulators.collider.simulator import Collider
from simulators.collider.smeared import smeared_cell_masses

# A store records its simulator's and proposal's class as ``module.qualname`` and refuses to resume a campaign
# whose description differs: keep the names the single-module ``simulators.collider`` wrote.
for _cls in (Collider, ColliderDetector, LogUniformBox):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "A_STOCH",
    "B_CONST",
    "DR_SEED",
    "EFFICIENCY",
    "EPS",
    "ETA_MAX",
    "E_THR",
    "F64",
    "LAMBDA",
    "LAMBDA_ROOT",
    "LOG_2PI",
    "MAX_DEPTH",
    "M_HI",
    "M_LO",
    "N_CELLS",
    "N_MAX",
    "PRIOR_HIGH",
    "PRIOR_LOW",
    "PT_MEAN",
    "RHO",
    "R_M",
    "T_CUT",
    "Collider",
    "ColliderDetector",
    "ColliderLatents",
    "DetectorLatents",
    "LogUniformBox",
    "PartonLatents",
    "ShowerLatents",
    "boost",
    "bw_cdf",
    "bw_log_density",
    "bw_sample",
    "detector_response_log_prob",
    "ginkgo_tree_log_likelihood",
    "jet_summary",
    "smeared_cell_masses",
]
