r"""The ODE/SDE toolbox shared by the continuous-time families: integrators, divergences, evaluation counts.

Every continuous-time family (:class:`~simgen.models.CNF`, :class:`~simgen.models.Diffusion`) samples and
evaluates densities through the functions here and nowhere else:

* :func:`integrate` solves dy/dt = f(t, y) from t₀ to t₁ with a fixed-step explicit Runge–Kutta method —
  ``"euler"`` (order 1, 1 evaluation per step), ``"heun"`` (the explicit trapezoidal rule, order 2,
  2 evaluations per step), ``"rk4"`` (classical, order 4, 4 per step) — or adaptively with torchdiffeq's
  Dormand–Prince ``"dopri5"`` (order 5(4), step size controlled by ``rtol``/``atol``);
* :func:`euler_maruyama` integrates an Itô SDE dy = b(t, y) dt + g(t) dw (strong order ½);
* :func:`heun_denoiser` is EDM's deterministic sampler (Karras et al. 2022, arXiv:2206.00364, Algorithm 1 without
  churn) on the noise levels of :func:`karras_sigmas`: the probability-flow ODE dx/dσ = (x − D(x, σ))/σ of a
  denoiser D, written for any family that has one (k-diffusion style: a plain function of a denoiser);
* :func:`divergence` computes ∇·f = tr(∂f/∂y) for a batch, exactly (one backward pass per dimension) or by
  Hutchinson's estimator tr(J) = E_ε[εᵀ J ε] with E[εεᵀ] = I (Hutchinson 1989; FFJORD: Grathwohl et al. 2019,
  arXiv:1810.01367), unbiased for any number of probes; :func:`divergence_draws` returns independent estimates
  (one per probe group) so that a caller can attach a standard error;
* :func:`coloured_probes` are probes for maps whose Jacobian is local (convolutional networks): the pixels are
  coloured by their position modulo a period s, and one probe per colour carries random signs on that colour's
  pixels only (the "probing" method of matrix-function trace estimation: Bekas, Kokiopoulou & Saad 2007,
  Tang & Saad 2012). The estimate is unbiased for any Jacobian; its variance comes only from pairs of pixels of
  the same colour, i.e. at least s apart, where a local Jacobian is small.

Each solver returns the number of evaluations of f it made (NFE): one evaluation processes the whole batch,
so for a batched sampler it is the number of network evaluations *per sample*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["ODE_METHODS", "Solution", "integrate", "euler_maruyama", "karras_sigmas", "heun_denoiser",
           "divergence", "divergence_draws", "hutchinson_probes", "coloured_probes"]

#: the ODE methods of :func:`integrate`
ODE_METHODS = ("euler", "heun", "rk4", "dopri5")
Method = Literal["euler", "heun", "rk4", "dopri5"]
VectorField = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Solution:
    """The end state of a solve and what it cost.

    Attributes:
        y: the state at the final time, shaped like the initial state.
        nfe: number of evaluations of the vector field (each one batched over all rows).
    """

    y: Tensor
    nfe: int


def check_method(method: str, steps: int | None = None) -> None:
    """Raise a clear error for an unknown ODE method or a non-positive step count."""
    if method not in ODE_METHODS:
        raise ValueError(f"ODE method must be one of {ODE_METHODS}; got {method!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"the number of ODE steps must be a positive int; got {steps!r}")


def integrate(
    f: VectorField,
    y0: Tensor,
    grid: Tensor,
    *,
    method: Method = "heun",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    split: int | None = None,
) -> Solution:
    r"""Solve dy/dt = f(t, y) from ``grid[0]`` to ``grid[-1]``, y(grid[0]) = ``y0``.

    Fixed-step methods step through the times ``grid`` (t₀, …, t_N; decreasing grids integrate backwards in
    time); with h_k = t_{k+1} − t_k,

    * Euler:  y ← y + h f(t, y);
    * Heun:   k₁ = f(t, y), k₂ = f(t + h, y + h k₁), y ← y + h (k₁ + k₂)/2 (local error O(h³));
    * RK4:    the classical four-stage method (local error O(h⁵)).

    ``"dopri5"`` uses only the end points of ``grid`` and chooses its own steps so that the local error
    estimate stays below ``atol + rtol·|y|`` (torchdiffeq's ``odeint``): the root-mean-square over the state of
    the error relative to that tolerance must stay below 1. With ``split = k``, the state ``[n, m]`` holds two
    quantities, columns ``[:, :k]`` and ``[:, k:]``, and the error norm is the larger of their two RMS norms
    (torchdiffeq's mixed norm for tuple states): an augmented state [y, log-det] of a D-dimensional flow would
    otherwise weigh the log-det's error by 1/(D + 1), and at D = 256 let it drift by many nats.

    Args:
        f: the vector field, ``f(t, y)`` with t a 0-dimensional tensor and y shaped like ``y0``.
        y0: initial state, any shape (a batch).
        grid: times ``[N + 1]``, strictly monotone.
        method: ``"euler"``, ``"heun"``, ``"rk4"`` or ``"dopri5"``.
        rtol, atol: tolerances of ``"dopri5"``.
        split: see above (``"dopri5"`` only; ``y0`` must then be ``[n, m]`` with 0 < ``split`` < m).

    Returns:
        :class:`Solution` with the state at ``grid[-1]`` and the number of evaluations of f.
    """
    check_method(method)
    if grid.dim() != 1 or grid.shape[0] < 2:
        raise ValueError(f"grid must be a 1-D tensor of at least 2 times; got shape {list(grid.shape)}")
    steps = grid[1:] - grid[:-1]
    if not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError("grid must be strictly increasing or strictly decreasing")
    grid = grid.to(device=y0.device, dtype=y0.dtype)
    nfe = 0

    def field(t: Tensor, y: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        return f(t, y)

    if split is not None and not (y0.dim() == 2 and 0 < split < y0.shape[1]):
        raise ValueError(f"split must be in (0, {y0.shape[-1]}) for a state [n, m]; got {split} for shape "
                         f"{list(y0.shape)}")
    if method == "dopri5":
        from torchdiffeq import odeint

        options = None
        if split is not None:
            def mixed_norm(error: Tensor) -> Tensor:
                return torch.maximum(error[:, :split].pow(2).mean().sqrt(), error[:, split:].pow(2).mean().sqrt())

            options = {"norm": mixed_norm}
        y = odeint(field, y0, grid[[0, -1]], rtol=rtol, atol=atol, method="dopri5", options=options)[-1]
        return Solution(y, nfe)
    y = y0
    for k in range(grid.shape[0] - 1):
        t, h = grid[k], grid[k + 1] - grid[k]
        if method == "euler":
            y = y + h * field(t, y)
        elif method == "heun":
            k1 = field(t, y)
            k2 = field(t + h, y + h * k1)
            y = y + 0.5 * h * (k1 + k2)
        else:  # rk4
            k1 = field(t, y)
            k2 = field(t + 0.5 * h, y + 0.5 * h * k1)
            k3 = field(t + 0.5 * h, y + 0.5 * h * k2)
            k4 = field(t + h, y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return Solution(y, nfe)


def euler_maruyama(
    drift: VectorField,
    g: Callable[[Tensor], Tensor],
    y0: Tensor,
    grid: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Solution:
    r"""Euler–Maruyama for the Itô SDE dy = b(t, y) dt + g(t) dw through the times ``grid``.

    y ← y + b(t, y) h + g(t) √|h| z, z ~ N(0, I), h = t_{k+1} − t_k (negative for a reverse-time SDE, whose
    Brownian increments have variance |h|); strong order ½, weak order 1. ``nfe`` counts evaluations of b.
    """
    if grid.dim() != 1 or grid.shape[0] < 2:
        raise ValueError(f"grid must be a 1-D tensor of at least 2 times; got shape {list(grid.shape)}")
    grid = grid.to(device=y0.device, dtype=y0.dtype)
    gen_device = generator.device if generator is not None else y0.device
    y = y0
    for k in range(grid.shape[0] - 1):
        t, h = grid[k], grid[k + 1] - grid[k]
        z = torch.randn(y.shape, generator=generator, device=gen_device, dtype=y.dtype).to(y.device)
        y = y + drift(t, y) * h + g(t) * h.abs().sqrt() * z
    return Solution(y, grid.shape[0] - 1)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    r"""EDM's noise levels σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0, …, N−1, then σ_N = 0:
    ``[steps + 1]`` (float64), decreasing; ρ = 7 concentrates the steps at low noise (Karras et al. 2022, eq. 5)."""
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"the number of noise levels must be an int >= 2; got {steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def heun_denoiser(denoise: VectorField, x: Tensor, sigmas: Tensor) -> Solution:
    r"""Integrate dx/dσ = (x − D(x, σ))/σ through the decreasing noise levels ``sigmas`` (last one 0).

    Heun's method (EDM's Algorithm 1 with S_churn = 0): with d_i = (x_i − D(x_i, σ_i))/σ_i,
    x̃ = x_i + (σ_{i+1} − σ_i) d_i, and unless σ_{i+1} = 0, x_{i+1} = x_i + (σ_{i+1} − σ_i)(d_i + d̃)/2 with
    d̃ = (x̃ − D(x̃, σ_{i+1}))/σ_{i+1}; the last step (to σ = 0) is Euler's, x = D(x, σ_{N−1}). N levels before 0
    cost 2N − 1 evaluations of ``denoise(sigma, x)`` (σ a 0-dimensional tensor), counted in ``nfe``.
    """
    if sigmas.dim() != 1 or sigmas.shape[0] < 2 or not (sigmas[1:] < sigmas[:-1]).all() or sigmas[-1] != 0:
        raise ValueError("sigmas must be a decreasing 1-D tensor ending at 0")
    nfe = 0
    for i in range(sigmas.shape[0] - 1):
        sigma, nxt = sigmas[i], sigmas[i + 1]
        d = (x - denoise(sigma, x)) / float(sigma)
        nfe += 1
        x_new = x + float(nxt - sigma) * d
        if nxt > 0:
            d_new = (x_new - denoise(nxt, x_new)) / float(nxt)
            nfe += 1
            x_new = x + float(nxt - sigma) * 0.5 * (d + d_new)
        x = x_new
    return Solution(x, nfe)


def hutchinson_probes(
    num_probes: int,
    features: int,
    *,
    rows: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
) -> Tensor:
    """Probe vectors ε with E[εεᵀ] = I: Rademacher (±1, the lower-variance choice, Var = 2 Σ_{i≠j} J_ij² per
    probe) or standard normal (Var = ‖J + Jᵀ‖²_F / 2 per probe).

    ``[num_probes, features]``, shared by every row of a batch, or with ``rows`` ``[num_probes, rows, features]``,
    independent probes for each row. Drawn from ``generator`` (on its device) when given, else from torch's
    global RNG."""
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"the number of Hutchinson probes must be a positive int; got {num_probes!r}")
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"probe distribution must be 'rademacher' or 'gaussian'; got {distribution!r}")
    if rows is not None and (not isinstance(rows, int) or rows < 1):
        raise ValueError(f"rows must be a positive int or None; got {rows!r}")
    gen_device = generator.device if generator is not None else device
    shape = (num_probes, features) if rows is None else (num_probes, rows, features)
    if distribution == "rademacher":
        eps = torch.randint(0, 2, shape, generator=generator, device=gen_device).to(dtype) * 2 - 1
    else:
        eps = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    return eps.to(device)


def coloured_probes(
    groups: int,
    shape: tuple[int, ...],
    period: int,
    *,
    rows: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Coloured Rademacher probes for maps of shape ``(H, W)`` or ``(C, H, W)``: ``[groups, Q, D]`` (or with
    ``rows``, ``[groups, Q, rows, D]``, independent signs per row), D = prod(shape).

    Position (c, i, j) has colour q = (c, i mod s, j mod s), s = ``period``, so there are Q = C·s_H·s_W colours
    (s_H = min(s, H), s_W = min(s, W)). Probe q of a group is √Q · r ⊙ 1_q, r a Rademacher vector: the mean over
    the Q probes of εᵀ J ε is Σ_q (r ⊙ 1_q)ᵀ J (r ⊙ 1_q), whose expectation is tr J for any J (E[r_i r_j] = δ_ij),
    and whose variance is 2 Σ_{i≠j, same colour} J_ij² — only pairs at least s apart along an axis (on the torus
    of the map) contribute. Each group is one independent estimate, at the cost of Q vector–Jacobian products.
    """
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"the number of probe groups must be a positive int; got {groups!r}")
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"the colouring period must be a positive int; got {period!r}")
    if len(shape) not in (2, 3):
        raise ValueError(f"coloured probes need a map shape (H, W) or (C, H, W); got {tuple(shape)}")
    if rows is not None and (not isinstance(rows, int) or rows < 1):
        raise ValueError(f"rows must be a positive int or None; got {rows!r}")
    channels, height, width = (1, *shape) if len(shape) == 2 else tuple(shape)
    s_h, s_w = min(period, height), min(period, width)
    colour = (torch.arange(channels)[:, None, None] * s_h * s_w + (torch.arange(height) % s_h)[None, :, None] * s_w
              + (torch.arange(width) % s_w)[None, None, :]).reshape(-1)
    q = channels * s_h * s_w
    masks = (colour[None, :] == torch.arange(q)[:, None]).to(dtype)  # [Q, D]
    gen_device = generator.device if generator is not None else device
    sign_shape = (groups, 1, colour.numel()) if rows is None else (groups, 1, rows, colour.numel())
    signs = (torch.randint(0, 2, sign_shape, generator=generator, device=gen_device).to(dtype) * 2 - 1).to(device)
    masks = masks.to(device)
    if rows is not None:
        masks = masks[:, None, :]
    return math.sqrt(q) * signs * masks


def divergence_draws(out: Tensor, y: Tensor, probes: Tensor) -> Tensor:
    r"""Independent estimates of ∇_y · F(y), one per probe group: ``[G, n]``.

    ``probes`` is ``[G, Q, D]`` (shared by the rows) or ``[G, Q, n, D]`` (per row); group g's estimate is
    (1/Q) Σ_q ε_{gq}ᵀ (∂F/∂y) ε_{gq}, unbiased when E[(1/Q) Σ_q ε_{gq} ε_{gqᵀ}] = I (Rademacher probes with Q = 1,
    :func:`coloured_probes`). G·Q backward passes. Row conventions as in :func:`divergence`; detached.
    """
    if out.shape != y.shape:
        raise ValueError(f"divergence needs F(y) shaped like y; got {list(out.shape)} and {list(y.shape)}")
    n = y.shape[0]
    flat = out.reshape(n, -1)
    d = flat.shape[1]
    if not ((probes.dim() == 3 and probes.shape[2] == d) or (probes.dim() == 4 and probes.shape[2:] == (n, d))):
        raise ValueError(f"probes must have shape [G, Q, {d}] or [G, Q, {n}, {d}]; got {list(probes.shape)}")
    probes = probes.to(device=y.device, dtype=y.dtype)
    draws = torch.zeros(probes.shape[0], n, device=y.device, dtype=y.dtype)
    for g, group in enumerate(probes):
        for eps in group:
            (grad,) = torch.autograd.grad((flat * eps).sum(), y, retain_graph=True)
            draws[g] += (grad.reshape(n, -1) * eps).sum(-1)
    return (draws / probes.shape[1]).detach()


def divergence(out: Tensor, y: Tensor, *, probes: Tensor | None = None) -> Tensor:
    r"""Batched divergence ∇_y · F(y) = Σ_i ∂F_i/∂y_i of a row-wise map, ``[n, D]`` → ``[n]``.

    ``out`` = F(y) must have been computed from ``y`` (which requires grad) row by row: row i of ``out``
    depends on row i of ``y`` only (true of every network here; batch statistics would break it).

    * ``probes=None`` — exact: D backward passes, pass i giving the column ∂F_i/∂y_· summed over the batch,
      whose i-th entry is ∂F_i/∂y_i for every row; cost D vector–Jacobian products.
    * ``probes`` ε ``[K, D]`` or ``[K, n, D]`` — Hutchinson: (1/K) Σ_k ε_kᵀ (∂F/∂y) ε_k, K backward passes, an
      unbiased estimate of the trace for probes with E[εεᵀ] = I. ``[K, D]`` probes serve every row (common
      random numbers: each row's estimate depends on that row and the probes only, whatever else is in the
      batch, but the rows' errors are correlated — for similar rows nearly equal, so a batch mean keeps one
      probe's error); ``[K, n, D]`` gives each row its own probes (independent errors that average out).

    ``out`` and ``y`` may be ``[n, *shape]``; they are flattened to D = prod(shape). The result is detached.
    """
    if out.shape != y.shape:
        raise ValueError(f"divergence needs F(y) shaped like y; got {list(out.shape)} and {list(y.shape)}")
    n = y.shape[0]
    flat = out.reshape(n, -1)
    d = flat.shape[1]
    total = torch.zeros(n, device=y.device, dtype=y.dtype)
    if probes is None:
        for i in range(d):
            (grad,) = torch.autograd.grad(flat[:, i].sum(), y, retain_graph=True)
            total = total + grad.reshape(n, -1)[:, i]
        return total.detach()
    if not ((probes.dim() == 2 and probes.shape[1] == d) or (probes.dim() == 3 and probes.shape[1:] == (n, d))):
        raise ValueError(f"probes must have shape [K, {d}] or [K, {n}, {d}]; got {list(probes.shape)}")
    return divergence_draws(out, y, probes[None]).mean(0)
