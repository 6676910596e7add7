r"""A particle in a tilted, curved 2-D double well at temperature :math:`T` — ``double_well``.

Potential (units :math:`k_B = 1`, mobility 1), with fixed tilt :math:`c = 0.25`, valley stiffness
:math:`k_y = 1` and valley curvature :math:`\beta = 0.5`:

.. math:: U(x, y; h) = h (x^2 - 1)^2 + c x + \tfrac{k_y}{2} (y - \beta x^2)^2,

.. math::
    \partial_x U = 4 h x (x^2 - 1) + c - 2 \beta k_y x (y - \beta x^2), \qquad
    \partial_y U = k_y (y - \beta x^2).

:math:`\theta = (T, h) \sim U[0.2, 1.0] \times U[0.5, 3.0]`, so :math:`h / T \in [0.5, 15]`.

Boltzmann density on the strip :math:`|x| \le 3` (the tails beyond carry less than :math:`e^{-30}` of the mass;
truncating there makes the sampler's support and the likelihood's support the same set):

.. math::
    \pi(x, y \mid \theta) = e^{-U/T} / Z(\theta), \qquad
    Z(\theta) = \sqrt{2 \pi T / k_y} \int_{-3}^{3} e^{-(h (x^2 - 1)^2 + c x)/T}\, dx,

the :math:`y` integral being Gaussian. The 1-D integral is an 8001-point Simpson rule, computed by
:func:`log_partition` — the one function behind every likelihood and the grid posterior. Because :math:`Z`
depends on :math:`\theta`, an unnormalised density would not do for posteriors over :math:`\theta`.

Modes (``mode=``):

``"equilibrium"`` (default, exact Boltzmann)
    :math:`x` from its 1-D marginal by inverse CDF on the same 8001-point grid (trapezoid cell masses,
    uniform within a cell), :math:`y \mid x \sim N(\beta x^2, T / k_y)`, then ``n_steps = 50`` MALA steps
    (Roberts & Tweedie 1996) with the overdamped-Langevin proposal
    :math:`z' = z - \Delta t \nabla U(z) + \sqrt{2 T \Delta t}\, \xi`, :math:`\Delta t = 0.05`, and the
    Metropolis–Hastings correction for the exact target (proposals with :math:`|x'| > 3` are rejected). The MALA
    steps remove the tiny inverse-CDF discretisation error; correctness never relies on Langevin mixing
    across the barrier (Kramers time :math:`\approx 2\pi/(\sqrt{32} h)\, e^{h/T}`). ``n_conf`` i.i.d.
    configurations per :math:`\theta`: ``x`` is ``[n, 2]`` for ``n_conf = 1``, else ``[n, n_conf, 2]``
    (``x_kind = "set"``: the configurations are exchangeable; unlike the collider's set there is no mask
    channel, every row is a configuration). Likelihood:
    :math:`\sum_j -U(z_j)/T - n_{conf} \log Z(\theta)`.

``"trajectory"``
    Euler–Maruyama (unadjusted Langevin) from :math:`z_0 = (-1, 0.5)`, :math:`\Delta t = 0.01`,
    ``n_record = 100`` recorded steps (stride 1, :math:`z_0` not included): ``x`` is ``[n, 100, 2]``,
    ``x_kind = "sequence"``. Exact likelihood, a product of Gaussian transitions,

    .. math::
        \log p = \sum_{k=0}^{K-1} \log N\big(z_{k+1};\, z_k - \Delta t \nabla U_\theta(z_k),\, 2 T \Delta t\, I_2\big).

    :math:`\nabla U` is linear in :math:`h`, so at fixed :math:`T` the log-likelihood is quadratic in
    :math:`h` (:meth:`DoubleWell.trajectory_h_quadratic`).

``"langevin"``
    Unadjusted Langevin from :math:`z_0` for :math:`t_{final} = 5` (1000 steps of :math:`\Delta t = 0.005`); ``x``
    is the final configuration ``[n, 2]``. This non-equilibrium, discretised law depends on the
    barrier-crossing kinetics and is **intractable** (``tractable = False``; no reference posterior).

Reference posterior (equilibrium and trajectory): the exact log-posterior on a ``grid_size²`` grid of cell
centres over the prior box (default 256²), sampled by choosing a cell and jittering uniformly inside it.
The grid's :math:`\log Z` values are computed once per grid size and cached.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from simulators.base import Simulator, box_uniform, register

__all__ = ["DoubleWell", "grad_potential", "log_partition", "potential"]

F64 = torch.float64

TILT, K_Y, BETA = 0.25, 1.0, 0.5
X_MAX = 3.0  # the strip |x| <= X_MAX carries the whole (normalised) density
N_QUAD = 8001  # Simpson nodes on [-X_MAX, X_MAX] (8000 intervals)
Z0 = (-1.0, 0.5)  # start of trajectories and Langevin runs
PRIOR_LOW, PRIOR_HIGH = (0.2, 0.5), (1.0, 3.0)
_CHUNK = 512  # rows of [rows, N_QUAD] work arrays (32 MB in float64)


def potential(z: Tensor, h: Tensor) -> Tensor:
    r""":math:`U(x, y; h)` for ``z [..., 2]`` and ``h`` broadcastable to ``[...]``."""
    x, y = z[..., 0], z[..., 1]
    return h * (x**2 - 1) ** 2 + TILT * x + 0.5 * K_Y * (y - BETA * x**2) ** 2


def grad_potential(z: Tensor, h: Tensor) -> Tensor:
    r""":math:`\nabla U(x, y; h)` ``[..., 2]`` for ``z [..., 2]`` and ``h`` broadcastable to ``[...]``."""
    x, y = z[..., 0], z[..., 1]
    dy = K_Y * (y - BETA * x**2)
    return torch.stack((4 * h * x * (x**2 - 1) + TILT - 2 * BETA * x * dy, dy), dim=-1)


def _x_grid() -> Tensor:
    return torch.linspace(-X_MAX, X_MAX, N_QUAD, dtype=F64)


def _log_marginal_integrand(x: Tensor, T: Tensor, h: Tensor) -> Tensor:
    r""":math:`-(h (x^2 - 1)^2 + c x)/T`: the log of the unnormalised :math:`x`-marginal, ``[B, G]``."""
    return -(h[:, None] * (x**2 - 1) ** 2 + TILT * x) / T[:, None]


def log_partition(T: Tensor, h: Tensor) -> Tensor:
    r""":math:`\log Z(\theta)` ``[B]`` (float64, differentiable) for ``T [B]``, ``h [B]``.

    :math:`Z = \sqrt{2\pi T/k_y}\, \sum_i w_i\, e^{g_i}` with the 8001-point Simpson weights :math:`w_i` on
    :math:`[-3, 3]` and :math:`g_i = -(h (x_i^2 - 1)^2 + c x_i)/T`. Over the prior :math:`g \le 1.3`, so the
    sum is taken directly (no overflow). Works in chunks of rows to bound memory.
    """
    T, h = torch.broadcast_tensors(torch.as_tensor(T, dtype=F64), torch.as_tensor(h, dtype=F64))
    x = _x_grid()
    dx = 2 * X_MAX / (N_QUAD - 1)
    w = torch.full((N_QUAD,), 2.0, dtype=F64)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    w = w * dx / 3
    T_flat, h_flat = T.reshape(-1), h.reshape(-1)
    differentiable = torch.is_grad_enabled() and (T.requires_grad or h.requires_grad)
    a, cx = (x**2 - 1) ** 2, TILT * x
    parts = []
    for i in range(0, len(T_flat), _CHUNK):
        Ti, hi = T_flat[i : i + _CHUNK], h_flat[i : i + _CHUNK]
        if differentiable:
            integrand = torch.exp(_log_marginal_integrand(x, Ti, hi))
        else:  # the same sum (up to rounding), in place: 3x faster; the 256² posterior grid needs 5e8 terms
            integrand = torch.addr(cx.expand(len(Ti), -1), hi, a).mul_((-1 / Ti)[:, None]).exp_()
        parts.append(torch.log(integrand @ w))
    integral = torch.cat(parts) if parts else T_flat.new_zeros(0)
    return (0.5 * torch.log(2 * math.pi * T_flat / K_Y) + integral).reshape(T.shape)


def _trajectory_sums(x: Tensor, dt: float) -> tuple[Tensor, Tensor, Tensor]:
    r"""The :math:`\theta`-free sums of a trajectory ``x [..., K, 2]`` (from :math:`z_0`), each ``[...]``.

    With :math:`\nabla U = h G_1 + G_0` and :math:`d_k = z_{k+1} - z_k + \Delta t\, G_0(z_k)`:
    :math:`D = \sum_k |d_k|^2`, :math:`S = \sum_k d_k \cdot G_1(z_k)`, :math:`Q = \sum_k |G_1(z_k)|^2`.
    """
    start = torch.tensor(Z0, dtype=F64).expand(*x.shape[:-2], 1, 2)
    prev = torch.cat((start, x[..., :-1, :]), -2)
    g0 = grad_potential(prev, torch.zeros((), dtype=F64))
    g1 = grad_potential(prev, torch.ones((), dtype=F64)) - g0
    d = x - prev + dt * g0
    return (d**2).sum((-1, -2)), (d * g1).sum((-1, -2)), (g1**2).sum((-1, -2))


def _trajectory_quadratic(T: Tensor, D: Tensor, S: Tensor, Q: Tensor, n_transitions: int, dt: float):
    r"""``(a, b, q)`` of :math:`\log p = a - b h - \tfrac12 q h^2` from the sums of :func:`_trajectory_sums`:
    :math:`\sum_k |r_k|^2 = D + 2 \Delta t h S + \Delta t^2 h^2 Q` and each 2-D transition contributes
    :math:`-\log(2\pi \sigma^2)`, :math:`\sigma^2 = 2 T \Delta t`."""
    var = 2 * T * dt
    return -D / (2 * var) - n_transitions * torch.log(2 * math.pi * var), dt * S / var, dt**2 * Q / var


@lru_cache(maxsize=4)
def _grid_log_partition(grid_size: int) -> Tensor:
    """``log Z`` at the ``grid_size x grid_size`` cell centres of the prior box, ``[grid_size, grid_size]``."""
    T, h = _grid_axes(grid_size)
    TT, hh = torch.meshgrid(T, h, indexing="ij")
    return log_partition(TT, hh)


def _grid_axes(grid_size: int) -> tuple[Tensor, Tensor]:
    axes = []
    for lo, hi in zip(PRIOR_LOW, PRIOR_HIGH, strict=True):
        width = (hi - lo) / grid_size
        axes.append(lo + width * (torch.arange(grid_size, dtype=F64) + 0.5))
    return axes[0], axes[1]


@register("double_well")
class DoubleWell(Simulator):
    r"""Particle in the tilted, curved double well :math:`U(x, y; h)` at temperature :math:`T`.

    See the module docstring for the equations. ``x`` is ``[n, 2]`` (equilibrium with ``n_conf = 1``,
    langevin), ``[n, n_conf, 2]`` (equilibrium) or ``[n, n_record, 2]`` (trajectory).

    Args:
        mode: ``"equilibrium"`` (default), ``"trajectory"`` or ``"langevin"``.
        n_conf: i.i.d. Boltzmann configurations per simulation (equilibrium only).
        n_steps: MALA steps after the inverse-CDF draw (equilibrium only).
        mala_dt: MALA step size :math:`\Delta t`.
        n_record: recorded Euler–Maruyama steps (trajectory only).
        grid_size: cells per axis of the reference-posterior grid.
    """

    name = "double_well"
    parameter_names = ["T", "h"]
    MODES = ("equilibrium", "trajectory", "langevin")
    trajectory_dt = 0.01
    langevin_dt, langevin_steps = 0.005, 1000

    def __init__(
        self,
        mode: str = "equilibrium",
        *,
        n_conf: int = 1,
        n_steps: int = 50,
        mala_dt: float = 0.05,
        n_record: int = 100,
        grid_size: int = 256,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"double_well: mode must be one of {self.MODES}, got {mode!r}")
        for label, value in (("n_conf", n_conf), ("n_record", n_record), ("grid_size", grid_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"double_well: {label} must be a positive integer, got {value!r}")
        if int(n_steps) != n_steps or n_steps < 0:
            raise ValueError(f"double_well: n_steps must be a non-negative integer, got {n_steps!r}")
        if not mala_dt > 0:
            raise ValueError(f"double_well: mala_dt must be positive, got {mala_dt!r}")
        if n_conf != 1 and mode != "equilibrium":
            raise ValueError(f"double_well: n_conf applies to mode='equilibrium' only, got mode={mode!r}")
        self.mode = mode
        self.n_conf, self.n_steps, self.mala_dt = int(n_conf), int(n_steps), float(mala_dt)
        self.n_record, self.grid_size = int(n_record), int(grid_size)
        self.prior = box_uniform(torch.tensor(PRIOR_LOW), torch.tensor(PRIOR_HIGH))
        self.tractable = mode != "langevin"
        if mode == "trajectory":
            self.x_shape, self.x_kind = (self.n_record, 2), "sequence"
        elif mode == "equilibrium" and self.n_conf > 1:
            self.x_shape, self.x_kind = (self.n_conf, 2), "set"
        else:
            self.x_shape, self.x_kind = (2,), "vector"

    def __repr__(self) -> str:
        return f"DoubleWell(mode={self.mode!r}, x_shape={self.x_shape})"

    # ------------------------------------------------------------------------------------ simulation

    @staticmethod
    def _check_theta(theta: Tensor) -> tuple[Tensor, Tensor]:
        T, h = theta[:, 0], theta[:, 1]
        if not (torch.isfinite(theta).all() and (T > 0).all()):
            raise ValueError("double_well: theta must be finite with temperature T > 0")
        return T, h

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        T, h = self._check_theta(theta.to(F64))
        if self.mode == "equilibrium":
            z = self.sample_equilibrium(T, h, self.n_conf, generator=generator)[0]
            return z[:, 0] if self.n_conf == 1 else z
        if self.mode == "trajectory":
            return self._euler_maruyama(T, h, self.trajectory_dt, self.n_record, generator, record=True)
        return self._euler_maruyama(T, h, self.langevin_dt, self.langevin_steps, generator, record=False)

    def sample_equilibrium(
        self, T: Tensor, h: Tensor, n_conf: int = 1, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Exact Boltzmann configurations: inverse CDF in :math:`x`, Gaussian :math:`y \mid x`, then MALA.

        Args:
            T, h: ``[n]`` each.
            n_conf: configurations per row.
            generator: source of randomness.

        Returns:
            ``(z [n, n_conf, 2], acceptance [n])`` in float64; ``acceptance`` is the mean MALA acceptance
            rate per row (NaN when ``n_steps = 0``).
        """
        T, h = torch.as_tensor(T, dtype=F64), torch.as_tensor(h, dtype=F64)
        grid = _x_grid()
        dx = 2 * X_MAX / (N_QUAD - 1)
        u = torch.rand(len(T), n_conf, dtype=F64, generator=generator)
        xs = []
        for i in range(0, len(T), _CHUNK):
            g = _log_marginal_integrand(grid, T[i : i + _CHUNK], h[i : i + _CHUNK])
            p = torch.exp(g - g.amax(-1, keepdim=True))
            cdf = torch.cumsum(0.5 * (p[:, 1:] + p[:, :-1]), -1)  # trapezoid cell masses, [rows, G - 1]
            cdf = torch.cat((torch.zeros_like(cdf[:, :1]), cdf), -1)
            target = u[i : i + _CHUNK] * cdf[:, -1:]
            k = torch.searchsorted(cdf, target, right=True).clamp(1, N_QUAD - 1)  # cdf[k-1] <= target < cdf[k]
            lo, hi = cdf.gather(1, k - 1), cdf.gather(1, k)
            frac = ((target - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1)
            xs.append(grid[k - 1] + frac * dx)
        x = torch.cat(xs) if xs else T.new_zeros(0, n_conf)
        y = BETA * x**2 + torch.sqrt(T[:, None] / K_Y) * torch.randn(x.shape, dtype=F64, generator=generator)
        z = torch.stack((x, y), -1)
        return self.mala(z, T[:, None], h[:, None], self.n_steps, generator=generator)

    def mala(
        self, z: Tensor, T: Tensor, h: Tensor, n_steps: int, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""``n_steps`` Metropolis-adjusted Langevin steps targeting :math:`e^{-U/T}` on :math:`|x| \le 3`.

        Args:
            z: configurations ``[n, k, 2]``; ``T``, ``h`` broadcastable to ``[n, k]``.

        Returns:
            ``(z [n, k, 2], acceptance [n])``, the acceptance rate averaged over steps and configurations.
        """
        dt = self.mala_dt
        scale = math.sqrt(2 * dt) * torch.sqrt(T)[..., None]
        u_z, g_z = potential(z, h), grad_potential(z, h)
        accepted = torch.zeros(z.shape[0], dtype=F64)
        for _ in range(n_steps):
            prop = z - dt * g_z + scale * torch.randn(z.shape, dtype=F64, generator=generator)
            u_p, g_p = potential(prop, h), grad_potential(prop, h)
            fwd = ((prop - z + dt * g_z) ** 2).sum(-1)
            bwd = ((z - prop + dt * g_p) ** 2).sum(-1)
            log_alpha = (u_z - u_p) / T + (fwd - bwd) / (4 * T * dt)
            log_alpha = torch.where(prop[..., 0].abs() <= X_MAX, log_alpha, -math.inf)
            accept = torch.log(torch.rand(log_alpha.shape, dtype=F64, generator=generator)) < log_alpha
            z = torch.where(accept[..., None], prop, z)
            u_z = torch.where(accept, u_p, u_z)
            g_z = torch.where(accept[..., None], g_p, g_z)
            accepted += accept.to(F64).mean(-1)
        return z, accepted / n_steps if n_steps else torch.full_like(accepted, math.nan)

    @staticmethod
    def _euler_maruyama(
        T: Tensor, h: Tensor, dt: float, n: int, generator: torch.Generator | None, *, record: bool
    ) -> Tensor:
        z = torch.tensor(Z0, dtype=F64).expand(len(T), 2)
        scale = torch.sqrt(2 * T * dt)[:, None]
        path = []
        for _ in range(n):
            z = z - dt * grad_potential(z, h) + scale * torch.randn(len(T), 2, dtype=F64, generator=generator)
            if record:
                path.append(z)
        return torch.stack(path, 1) if record else z

    # ----------------------------------------------------------------------------------- likelihood

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        T, h = theta[..., 0], theta[..., 1]
        if not (T > 0).all():
            raise ValueError("double_well: log_likelihood needs temperature T > 0")
        if self.mode == "equilibrium":
            z = x if self.n_conf > 1 else x[..., None, :]
            inside = (z[..., 0].abs() <= X_MAX).all(-1)
            log_l = -(potential(z, h[..., None]) / T[..., None]).sum(-1) - self.n_conf * log_partition(T, h)
            return torch.where(inside, log_l, -math.inf)
        a, b, q = self.trajectory_h_quadratic(T, x)
        return a - b * h - 0.5 * q * h**2

    def trajectory_h_quadratic(self, T: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Trajectory mode: :math:`\log p(x \mid T, h) = a - b h - \tfrac12 q h^2`, returns ``(a, b, q)``.

        Writing :math:`\nabla U = h G_1 + G_0` with :math:`G_1 = (4 x (x^2 - 1), 0)`, the residual is
        :math:`r_k = d_k + \Delta t\, h\, G_1(z_k)` with :math:`d_k = z_{k+1} - z_k + \Delta t G_0(z_k)`, so at
        fixed :math:`T` the posterior of :math:`h` is a Gaussian with mean :math:`-b/q` and variance :math:`1/q`,
        truncated to the prior. ``T [B]``, ``x [B, K, 2]`` → three ``[B]`` tensors.
        """
        T = torch.as_tensor(T, dtype=F64)
        D, S, Q = _trajectory_sums(torch.as_tensor(x, dtype=F64), self.trajectory_dt)
        return _trajectory_quadratic(T, D, S, Q, x.shape[-2], self.trajectory_dt)

    # ---------------------------------------------------------------------------- reference posterior

    def grid_log_posterior(self, x: Tensor) -> Tensor:
        r"""Unnormalised log-posterior (flat prior) on the grid, ``x [k, m, *x_shape]`` → ``[k, G, G]``.

        Axis 1 is :math:`T`, axis 2 is :math:`h` (cell centres, see :func:`_grid_axes`).
        """
        G = self.grid_size
        T, h = _grid_axes(G)
        TT, hh = torch.meshgrid(T, h, indexing="ij")
        if self.mode == "equilibrium":
            # Σ_j U_j = h A + B with A = Σ (x²-1)², B = Σ [c x + k_y/2 (y - βx²)²] over every configuration
            z = x.reshape(len(x), -1, 2)
            inside = (z[..., 0].abs() <= X_MAX).all(-1)
            A = ((z[..., 0] ** 2 - 1) ** 2).sum(-1)
            B = potential(z, torch.zeros(())).sum(-1)
            n_total = z.shape[1]
            log_z = _grid_log_partition(G)
            log_post = -(hh * A[:, None, None] + B[:, None, None]) / TT - n_total * log_z
            return torch.where(inside[:, None, None], log_post, -math.inf)
        # trajectory: quadratic in h at each T, summed over the m i.i.d. trajectories
        D, S, Q = (v.sum(1)[:, None, None] for v in _trajectory_sums(x, self.trajectory_dt))
        a, b, q = _trajectory_quadratic(TT, D, S, Q, x.shape[1] * x.shape[-2], self.trajectory_dt)
        return a - b * hh - 0.5 * q * hh**2

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        if not self.tractable:
            raise NotImplementedError(f"simulator {self.name!r} (mode='langevin') has no reference posterior")
        G = self.grid_size
        log_post = self.grid_log_posterior(x).reshape(len(x), G * G)
        if not torch.isfinite(log_post.amax(-1)).all():
            raise ValueError("double_well: an observation has zero likelihood on the whole grid (|x| > 3?)")
        probs = torch.softmax(log_post, -1)
        cells = torch.multinomial(probs, num_samples, replacement=True, generator=generator)  # [k, S]
        i, j = cells // G, cells % G
        low = torch.tensor(PRIOR_LOW, dtype=F64)
        width = (torch.tensor(PRIOR_HIGH, dtype=F64) - low) / G
        jitter = torch.rand(*cells.shape, 2, dtype=F64, generator=generator)
        return low + width * (torch.stack((i, j), -1).to(F64) + jitter)
