r"""The ``collider`` simulator: parton → shower → detector → jets, with its exact joint log-density.

**Observation** :math:`x` (deterministic in :math:`z_d`, :meth:`Collider.observe`): ``output="summary"``
(default) gives the 10-d :func:`~simulators.collider.jets.jet_summary` of a 2-seed jet algorithm,
:math:`[m_{jj}, p_{T,j1}, p_{T,j2}, \eta_{j1}, \eta_{j2}, |\Delta\phi_{jj}|, m_{j1}, m_{j2}, n_{j1}, n_{j2}]`
(the counts, dimensions 8 and 9, are ``x_discrete``); ``output="set"`` gives the detected particles
:math:`(p_T, \eta, \phi, \text{mask})` sorted by :math:`p_T`, zero-padded (or truncated, rarely) to 128 rows,
``x_kind="set"`` (``x_discrete`` is empty: the 0/1 mask is structure, not data to dequantise).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from simulators.base import Simulator, box_uniform, register
from simulators.collider.constants import F64, N_MAX, PRIOR_HIGH, PRIOR_LOW
from simulators.collider.detector import detector_log_prob, padded_particles, sample_detector
from simulators.collider.jets import jet_summary
from simulators.collider.latents import ColliderLatents, DetectorLatents, PartonLatents, ShowerLatents
from simulators.collider.parton import parton_log_prob, sample_parton
from simulators.collider.shower import sample_shower, shower_log_prob
from simulators.collider.smeared import (
    smeared_joint_log_prob,
    smeared_log_likelihood,
    smeared_posterior,
    smeared_sample,
    smeared_sample_latents,
)

__all__ = ["Collider"]


@register("collider")
class Collider(Simulator):
    r"""The parton → shower → detector → jets chain (see :mod:`simulators.collider`), :math:`\theta = (M, \Gamma,
    \mathrm{JES})`.

    Args:
        output: ``"summary"`` (default, ``x [n, 10]``) or ``"set"`` (``x [n, 128, 4]``: :math:`p_T, \eta, \phi`,
            mask); full chain only.
        level: ``"full"`` (default; intractable) or ``"parton_smeared"`` (``x [n, 1]`` = :math:`m_{obs}`, one
            event per simulation, exact likelihood, grid reference posterior).
        grid_size: cells per axis of the parton-smeared reference grid (default 64, i.e. 64³).

    ``level="parton_smeared"``: :math:`m_{obs} = \mathrm{JES}\, \bar m\, (1 + r_m \xi)`, :math:`r_m = 0.05`, where
    :math:`\bar m` is the Breit–Wigner mass rounded to the centre of its cell among 4000 equal cells of the
    window (0.26 GeV wide, far below the 5 % resolution). Deviation from the spec, which smears :math:`m` itself:
    with the rounding the quadrature

    .. math::
        p(m_{obs} \mid \theta) = \sum_k P_k(M, \Gamma)\,
        N(m_{obs}; \mathrm{JES}\, \bar m_k, (\mathrm{JES}\, \bar m_k r_m)^2),

    with the exact cell probabilities :math:`P_k = F(m_{k+1}) - F(m_k)` (:func:`smeared_cell_masses`), is the
    exact likelihood of the simulator as implemented, sums to one exactly and is smooth in :math:`\theta`. An
    observation is ``n_evt`` i.i.d. events given as rows ``[n_evt, 1]``; the reference posterior evaluates
    :math:`\sum_j \log p(m_{obs,j} \mid \theta)` at the ``grid_size³`` cell centres of the prior box (one matrix
    product per observation) and samples a cell plus a uniform
    jitter. An :math:`m_{obs}` so far from every :math:`\mathrm{JES}\, \bar m_k` that all Gaussian terms
    underflow (beyond ~38 standard deviations) gets log-likelihood ``-inf``. The likelihood depends (up to the
    window) on :math:`(\mathrm{JES} M, \mathrm{JES} \Gamma)` only: the JES–M ridge.
    """

    name = "collider"
    parameter_names = ["M", "Gamma", "JES"]
    OUTPUTS = ("summary", "set")
    LEVELS = ("full", "parton_smeared")

    def __init__(self, output: str = "summary", *, level: str = "full", grid_size: int = 64) -> None:
        if output not in self.OUTPUTS:
            raise ValueError(f"collider: output must be one of {self.OUTPUTS}, got {output!r}")
        if level not in self.LEVELS:
            raise ValueError(f"collider: level must be one of {self.LEVELS}, got {level!r}")
        if int(grid_size) != grid_size or grid_size < 2:
            raise ValueError(f"collider: grid_size must be an integer >= 2, got {grid_size!r}")
        if level == "parton_smeared" and output != "summary":
            raise ValueError("collider: level='parton_smeared' observes m_obs only; output applies to level='full'")
        self.output, self.level, self.grid_size = output, level, int(grid_size)
        self.prior = box_uniform(torch.tensor(PRIOR_LOW), torch.tensor(PRIOR_HIGH))
        if level == "parton_smeared":
            self.x_shape, self.x_kind, self.tractable, self.x_discrete = (1,), "vector", True, ()
        elif output == "summary":
            self.x_shape, self.x_kind, self.tractable, self.x_discrete = (10,), "vector", False, (8, 9)
        else:
            self.x_shape, self.x_kind, self.tractable, self.x_discrete = (N_MAX, 4), "set", False, ()

    def __repr__(self) -> str:
        return f"Collider(output={self.output!r}, level={self.level!r}, x_shape={self.x_shape})"

    # ------------------------------------------------------------------------------------ public API

    def __call__(
        self, theta: Any, *, generator: torch.Generator | None = None, return_latents: bool = False
    ) -> Tensor | tuple[Tensor, Any]:
        r"""Simulate ``x [n, *x_shape]`` (float32); with ``return_latents=True`` also the latents, drawn with the
        same random numbers as ``x`` alone: on the full chain :class:`ColliderLatents` (float64), whose stages
        carry :math:`\log p(z_p|\theta)`, :math:`\log p(z_s|z_p)` and :math:`\log p(z_d|z_s,\theta)` as
        ``log_prob``; at ``level="parton_smeared"`` the Breit–Wigner mass cell k ``[n]`` (int64), see
        :meth:`joint_log_prob`. Together they are the gold protocol of :mod:`simgen.campaign.gold`."""
        theta = self._as_theta(theta, torch.float32)
        if not return_latents:
            return self._simulate(theta, generator).to(torch.float32)
        if self.level == "parton_smeared":
            theta = theta.to(F64)
            self._check_theta(theta)
            x, cell = smeared_sample_latents(theta, generator)
            return x.to(torch.float32), cell
        x, z = self._chain(theta.to(F64), generator)
        return x.to(torch.float32), z

    def parton(self, theta: Any, *, generator: torch.Generator | None = None) -> PartonLatents:
        """Parton-level latents :math:`z_p \\sim p(z_p \\mid \\theta)` for ``theta [B, 3]``."""
        theta = self._as_theta(theta, F64)
        self._check_theta(theta)
        return sample_parton(theta, generator)

    parton_log_prob = staticmethod(parton_log_prob)

    def shower(self, z_p: PartonLatents, *, generator: torch.Generator | None = None) -> ShowerLatents:
        """Shower both partons of every event with a level-synchronous frontier (see
        :mod:`simulators.collider.shower`)."""
        return sample_shower(z_p, generator)

    shower_log_prob = staticmethod(shower_log_prob)

    def detector(self, z_s: ShowerLatents, theta: Any, *, generator: torch.Generator | None = None) -> DetectorLatents:
        """Detector response to every leaf of ``z_s`` for ``theta [B, 3]`` (only JES enters)."""
        theta = self._as_theta(theta, F64)
        self._check_theta(theta)
        return sample_detector(z_s, theta, generator)

    detector_log_prob = staticmethod(detector_log_prob)

    def observe(self, z_d: DetectorLatents, n_events: int) -> Tensor:
        """``x`` from the detector latents (deterministic): ``[B, 10]`` summary or ``[B, 128, 4]`` set."""
        pt, eta, phi, mask = padded_particles(z_d, n_events)
        if self.output == "summary":
            return jet_summary(pt, eta, phi, mask)
        x = torch.stack((pt, eta, phi, mask.to(F64)), -1)[:, :N_MAX]
        if x.shape[1] < N_MAX:
            x = torch.cat((x, x.new_zeros(len(x), N_MAX - x.shape[1], 4)), 1)
        return x

    def joint_log_prob(self, theta: Any, x: Any, z: Any) -> Tensor:
        r""":math:`\log p(x, z \mid \theta) = \log p(z_p|\theta) + \log p(z_s|z_p) + \log p(z_d|z_s,\theta)` ``[B]``
        (float64), differentiable in ``theta`` (pass a tensor with ``requires_grad``).

        ``x`` is a deterministic function of :math:`z_d` (:math:`p(x|z_d)` is a delta): rows where ``x``
        differs from ``observe(z_d)`` (beyond float32 rounding) get ``-inf``.

        At ``level="parton_smeared"``, z is the mass cell k ``[B]`` and :math:`\log p(m_{obs}, k \mid \theta) =
        \log P_k(M, \Gamma) + \log N(m_{obs}; \mathrm{JES}\, \bar m_k, (\mathrm{JES}\, \bar m_k r_m)^2)`
        (:func:`~simulators.collider.smeared.smeared_joint_log_prob`): summed over k it is the exact
        likelihood, so this level's gold has an exact ground truth (the score of :meth:`log_likelihood`).
        """
        theta = torch.as_tensor(theta)
        theta = theta.to(F64) if theta.dtype != F64 else theta
        if theta.ndim != 2 or theta.shape[1] != 3:
            raise ValueError(f"collider: expected theta of shape [n, 3], got {list(theta.shape)}")
        x = self._as_x(x)
        if self.level == "parton_smeared":
            cell = torch.as_tensor(z, dtype=torch.long)
            if len(theta) != len(x) or cell.shape != (len(x),):
                raise ValueError(f"collider: theta ({len(theta)} rows), x ({len(x)}) and the cells z "
                                 f"({list(cell.shape)}) must agree")
            return smeared_joint_log_prob(theta, x, cell)
        B = len(z.parton.m)
        if len(theta) != B or len(x) != B:
            raise ValueError(f"collider: theta ({len(theta)} rows), x ({len(x)}) and z ({B} events) must agree")
        expected = self.observe(z.detector, B).to(torch.float32).to(F64)
        consistent = torch.isclose(x, expected, rtol=1e-6, atol=1e-5).flatten(1).all(1)
        log_p = (
            self.parton_log_prob(theta, z.parton)
            + self.shower_log_prob(z.parton, z.shower)
            + self.detector_log_prob(theta, z.shower, z.detector)
        )
        return torch.where(consistent, log_p, -math.inf)

    # ------------------------------------------------------------------------------------- internals

    @staticmethod
    def _check_theta(theta: Tensor) -> None:
        if not (torch.isfinite(theta).all() and (theta[:, 0] > 0).all() and (theta[:, 1] > 0).all()):
            raise ValueError("collider: theta must be finite with M > 0 and Gamma > 0")
        if not (theta[:, 2] > 0).all():
            raise ValueError("collider: theta must have JES > 0")
    def _chain(self, theta: Tensor, generator: torch.Generator | None) -> tuple[Tensor, ColliderLatents]:
        z_p = self.parton(theta, generator=generator)
        z_s = self.shower(z_p, generator=generator)
        z_d = self.detector(z_s, theta, generator=generator)
        return self.observe(z_d, len(theta)), ColliderLatents(z_p, z_s, z_d)

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        theta = theta.to(F64)
        if self.level == "full":
            return self._chain(theta, generator)[0]
        self._check_theta(theta)
        return smeared_sample(theta, generator)

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        self._check_theta(theta)
        return smeared_log_likelihood(theta, x)

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        if self.level != "parton_smeared":
            raise NotImplementedError(
                "collider: no exact reference posterior for the full chain (p(x|θ) is intractable); "
                "use level='parton_smeared'"
            )
        return smeared_posterior(x, num_samples, self.grid_size, generator)
