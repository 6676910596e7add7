r"""``collider_detector``: the collider chain's detector response to one particle, with its exact likelihood."""

from __future__ import annotations

import math
from typing import Any

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

    Gold (:mod:`simgen.campaign.gold`): ``return_latents=True`` also returns the latent efficiency draw
    :math:`e \in \{0, 1\}` ``[n]`` (bool), and :meth:`joint_log_prob` is :math:`\log p(x, e \mid \theta)`, whose
    sum over :math:`e` is the exact likelihood: the joint score's ground truth is the score of
    :meth:`log_likelihood`.
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

    def __call__(self, theta: Any, *, generator: torch.Generator | None = None,
                 return_latents: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``x [n, 2]`` (float32); with ``return_latents=True`` also the efficiency draws ``[n]`` (bool)."""
        theta = self._as_theta(theta, torch.float32)
        x, efficient = self._draw(theta.to(F64), generator)
        return (x.to(torch.float32), efficient) if return_latents else x.to(torch.float32)

    def joint_log_prob(self, theta: Any, x: Any, z: Any) -> Tensor:
        r""":math:`\log p(x, e \mid \theta)` ``[n]`` (float64) over the efficiency draw :math:`e` = ``z`` ``[n]``,
        differentiable in ``theta``: in the acceptance, detected: :math:`\log\varepsilon + \log N(E_{reco};
        \mathrm{JES} E, (\mathrm{JES} E \sigma(E))^2)` (needs :math:`e = 1`); missed with :math:`e = 1`:
        :math:`\log\varepsilon + \log\Phi((E_{thr} - \mathrm{JES}E)/(\mathrm{JES}E\sigma(E)))`; missed with
        :math:`e = 0`: :math:`\log(1 - \varepsilon)`. Outside it, :math:`\log P(e)` (never detected)."""
        theta = torch.as_tensor(theta)
        theta = theta.to(F64) if theta.dtype != F64 else theta
        if theta.ndim != 2 or theta.shape[1] != 3:
            raise ValueError(f"collider_detector: expected theta of shape [n, 3], got {list(theta.shape)}")
        x = self._as_x(x)
        efficient = torch.as_tensor(z).to(torch.bool)
        if len(theta) != len(x) or efficient.shape != (len(x),):
            raise ValueError("collider_detector: theta, x and z must have the same number of rows")
        E, eta, jes = theta.unbind(-1)
        detected = x[:, 0] == 1
        mean = jes * E
        std = mean * sigma_rel(E)
        log_eff, log_ineff = math.log(EFFICIENCY), math.log1p(-EFFICIENCY)
        log_seen = detector_response_log_prob(E, eta, jes, torch.ones_like(detected), x[:, 1])
        log_below = log_eff + torch.special.log_ndtr((E_THR - mean) / std)
        missed = torch.where(efficient, log_below, torch.full_like(log_below, log_ineff))
        inside = torch.where(detected, torch.where(efficient, log_seen, -math.inf), missed)
        outside = torch.where(detected, torch.full_like(inside, -math.inf),
                              torch.where(efficient, torch.full_like(mean, log_eff),
                                          torch.full_like(mean, log_ineff)) + 0.0 * mean)
        log_p = torch.where(eta.abs() < ETA_MAX, inside, outside)
        valid = (detected & (x[:, 1] > 0)) | ((x[:, 0] == 0) & (x[:, 1] == 0))
        return torch.where(valid, log_p, -math.inf)

    def _draw(self, theta: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        self._check(theta)
        E, eta, jes = theta.unbind(-1)
        efficient = torch.rand(len(theta), dtype=F64, generator=generator) < EFFICIENCY
        xi = torch.randn(len(theta), dtype=F64, generator=generator)
        e_reco = jes * E * (1 + sigma_rel(E) * xi)
        detected = (eta.abs() < ETA_MAX) & efficient & (e_reco > E_THR)
        return torch.stack((detected.to(F64), torch.where(detected, e_reco, 0.0)), -1), efficient

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        return self._draw(theta.to(F64), generator)[0]

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        self._check(theta)
        d = x[:, 0]
        valid = ((d == 0) & (x[:, 1] == 0)) | (d == 1)
        log_p = detector_response_log_prob(theta[:, 0], theta[:, 1], theta[:, 2], d == 1, x[:, 1])
        return torch.where(valid, log_p, -math.inf)
