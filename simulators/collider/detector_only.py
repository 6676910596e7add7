r"""``collider_detector``: the collider chain's detector response to one particle, with its exact likelihood."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simulators.base import Simulator, register
from simulators.collider.constants import E_THR, EFFICIENCY, ETA_MAX, F64
from simulators.collider.detector import detector_response_log_prob, sigma_rel
from simulators.collider.distributions import LogUniformBox

__all__ = ["ColliderDetector"]


@register("collider_detector")
class ColliderDetector(Simulator):
    r"""The collider chain's detector response to one particle, :math:`\theta = (E, \eta, \mathrm{JES})`.

    Prior (:class:`LogUniformBox`): :math:`E` log-uniform on [1, 500] GeV, :math:`\eta \sim U[-3, 3]` (so part of
    the prior lies outside the acceptance :math:`|\eta| < 2.5`), :math:`\mathrm{JES} \sim U[0.95, 1.05]` (the
    chain's prior). Output :math:`x = (d, E_{reco} \cdot d)` with :math:`d \in \{0, 1\}` (dimension 0 is
    ``x_discrete``): :math:`d = 1` iff the particle is in the acceptance, passes the efficiency and
    :math:`E_{reco} = \mathrm{JES} E (1 + \sigma(E) \xi) > 1` GeV. Exact likelihood
    (:func:`detector_response_log_prob`, the function the chain uses): a probability for :math:`d = 0`
    (requires :math:`x_1 = 0`) and a density in :math:`x_1` for :math:`d = 1`. No reference posterior.
    """

    name = "collider_detector"
    parameter_names = ["E", "eta", "JES"]
    x_shape = (2,)
    x_kind = "vector"
    tractable = True
    x_discrete = (0,)

    def __init__(self) -> None:
        self.prior = LogUniformBox([1.0, -3.0, 0.95], [500.0, 3.0, 1.05], [True, False, False])

    @staticmethod
    def _check(theta: Tensor) -> None:
        if not (torch.isfinite(theta).all() and (theta[:, 0] > 0).all() and (theta[:, 2] > 0).all()):
            raise ValueError("collider_detector: theta must be finite with E > 0 and JES > 0")

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        theta = theta.to(F64)
        self._check(theta)
        E, eta, jes = theta.unbind(-1)
        efficient = torch.rand(len(theta), dtype=F64, generator=generator) < EFFICIENCY
        xi = torch.randn(len(theta), dtype=F64, generator=generator)
        e_reco = jes * E * (1 + sigma_rel(E) * xi)
        detected = (eta.abs() < ETA_MAX) & efficient & (e_reco > E_THR)
        return torch.stack((detected.to(F64), torch.where(detected, e_reco, 0.0)), -1)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        self._check(theta)
        d = x[:, 0]
        valid = ((d == 0) & (x[:, 1] == 0)) | (d == 1)
        log_p = detector_response_log_prob(theta[:, 0], theta[:, 1], theta[:, 2], d == 1, x[:, 1])
        return torch.where(valid, log_p, -math.inf)
