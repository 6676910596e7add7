r"""The collider's exact variant ``level="parton_smeared"``: :math:`m_{obs} = \mathrm{JES}\, \bar m\, (1 + r_m \xi)`,
its likelihood by quadrature over the 4000 Breit–Wigner mass cells and its grid reference posterior (the math is
in :class:`simulators.collider.Collider`'s docstring)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from simulators.collider.constants import F64, M_HI, M_LO, N_CELLS, PRIOR_HIGH, PRIOR_LOW, R_M
from simulators.collider.distributions import bw_cdf, bw_sample

__all__ = ["smeared_cell_masses", "smeared_joint_log_prob", "smeared_log_likelihood", "smeared_posterior",
           "smeared_sample", "smeared_sample_latents"]


def _cell_edges() -> Tensor:
    return torch.linspace(M_LO, M_HI, N_CELLS + 1, dtype=F64)


def _cell_centres() -> Tensor:
    edges = _cell_edges()
    return 0.5 * (edges[1:] + edges[:-1])


def _cell_index(m: Tensor) -> Tensor:
    return ((m - M_LO) / ((M_HI - M_LO) / N_CELLS)).floor().long().clamp(0, N_CELLS - 1)


def smeared_cell_masses(M: Tensor, Gamma: Tensor) -> Tensor:
    r"""Exact Breit–Wigner probabilities of the 4000 mass cells, :math:`P_k = F(m_{k+1}) - F(m_k)`,
    ``[B, 4000]`` for ``M, Gamma [B]`` (differentiable; rows sum to 1)."""
    return torch.diff(bw_cdf(_cell_edges(), M[:, None], Gamma[:, None]), dim=-1)


def _smearing_kernel(m_obs: Tensor, jes: Tensor) -> Tensor:
    r""":math:`N(m_{obs}; \mathrm{JES}\,\bar m_k, (\mathrm{JES}\,\bar m_k r_m)^2)`, ``[B, 4000]`` for ``[B]`` inputs."""
    mean = jes[:, None] * _cell_centres()
    std = R_M * mean
    return torch.exp(-0.5 * ((m_obs[:, None] - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _grid_axes(G: int) -> list[Tensor]:
    centres = torch.arange(G, dtype=F64) + 0.5
    return [lo + (hi - lo) / G * centres for lo, hi in zip(PRIOR_LOW, PRIOR_HIGH, strict=True)]


@lru_cache(maxsize=2)
def _grid_cell_masses(G: int) -> Tensor:
    """:func:`smeared_cell_masses` at the ``G²`` (M, Gamma) grid centres, ``[G², 4000]`` (M-major)."""
    M, Gamma = torch.meshgrid(_grid_axes(G)[0], _grid_axes(G)[1], indexing="ij")
    return smeared_cell_masses(M.reshape(-1), Gamma.reshape(-1))


def smeared_sample_latents(theta: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""(:math:`m_{obs}` ``[B, 1]``, the mass cell k ``[B]`` (int64)) for a checked float64 ``theta [B, 3]``."""
    M, Gamma, jes = theta[:, 0], theta[:, 1], theta[:, 2]
    m = bw_sample(torch.rand(len(theta), dtype=F64, generator=generator), M, Gamma)
    cell = _cell_index(m)
    xi = torch.randn(len(theta), dtype=F64, generator=generator)
    return (jes * _cell_centres()[cell] * (1 + R_M * xi))[:, None], cell


def smeared_sample(theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r""":math:`m_{obs}` ``[B, 1]`` for a checked float64 ``theta [B, 3]``."""
    return smeared_sample_latents(theta, generator)[0]


def smeared_joint_log_prob(theta: Tensor, x: Tensor, cell: Tensor) -> Tensor:
    r"""The joint :math:`\log p(m_{obs}, k \mid 	heta) = \log P_k(M, \Gamma) + \log N(m_{obs}; \mathrm{JES}\,
    ar m_k, (\mathrm{JES}\, ar m_k r_m)^2)` ``[B]`` over the latent mass cell k (the mass within its cell does
    not reach :math:`m_{obs}`, so it is integrated out exactly); differentiable in ``theta [B, 3]``. Summed over k
    it is :func:`smeared_log_likelihood`."""
    edges = _cell_edges()
    M, Gamma, jes = theta[:, 0], theta[:, 1], theta[:, 2]
    log_cell = torch.log(bw_cdf(edges[cell + 1], M, Gamma) - bw_cdf(edges[cell], M, Gamma))
    mean = jes * _cell_centres()[cell]
    std = R_M * mean
    return log_cell - 0.5 * ((x[:, 0] - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


def smeared_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    r""":math:`\log p(m_{obs} \mid \theta)` ``[B]`` for a checked ``theta [B, 3]`` and ``x [B, 1]``."""
    parts = []
    for i in range(0, len(theta), 1024):  # [rows, N_CELLS] work arrays
        P = smeared_cell_masses(theta[i : i + 1024, 0], theta[i : i + 1024, 1])
        K = _smearing_kernel(x[i : i + 1024, 0], theta[i : i + 1024, 2])
        parts.append(torch.log((P * K).sum(-1)))
    return torch.cat(parts) if parts else theta.new_zeros(0)


def smeared_posterior(
    x: Tensor, num_samples: int, grid_size: int, generator: torch.Generator | None = None
) -> Tensor:
    """Reference posterior draws ``[n_obs, num_samples, 3]`` for observations ``x [n_obs, n_evt, 1]`` on the
    ``grid_size³`` grid of the prior box (a cell drawn by its posterior mass, then a uniform jitter)."""
    G = grid_size
    axes = _grid_axes(G)
    P = _grid_cell_masses(G)  # [G², N_CELLS] over (M, Gamma)
    out = []
    for obs in x:  # obs [m, 1]
        m_obs = obs[:, 0]
        # kernel columns (event j, JES c): N(m_obs_j; c m̄_k, (c m̄_k r)²)
        K = _smearing_kernel(m_obs[:, None].expand(-1, G).reshape(-1), axes[2].repeat(len(m_obs)))
        log_l = torch.log(P @ K.T)  # [G², m * G]
        log_l = log_l.reshape(G, G, len(m_obs), G).sum(2)  # [M, Gamma, JES]
        flat = log_l.reshape(-1)
        if not torch.isfinite(flat.amax()):
            raise ValueError("collider: the observation has zero likelihood on the whole grid")
        cells = torch.multinomial(torch.softmax(flat, 0), num_samples, replacement=True, generator=generator)
        index = torch.stack((cells // (G * G), (cells // G) % G, cells % G), -1).to(F64)
        low = torch.tensor(PRIOR_LOW, dtype=F64)
        width = (torch.tensor(PRIOR_HIGH, dtype=F64) - low) / G
        out.append(low + width * (index + torch.rand(num_samples, 3, dtype=F64, generator=generator)))
    return torch.stack(out)
