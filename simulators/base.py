r"""The simulator protocol and the registry of named simulators.

A simulator is a conditional sampler :math:`x \sim p(x \mid \theta)` on batches:

.. math:: \theta \in \mathbb{R}^{n \times d_\theta} \;\longmapsto\; x \in \mathbb{R}^{n \times x_{shape}},

with a prior :math:`p(\theta)` (a torch ``Distribution``). Tractable simulators also give the exact
log-likelihood :math:`\log p(x \mid \theta)` (float64), and benchmark tasks give samples of the reference
posterior :math:`p(\theta \mid x_{1:m}) \propto p(\theta) \prod_j p(x_j \mid \theta)`.

Randomness comes from the ``torch.Generator`` passed as ``generator``, else from torch's global RNG, so
``torch.manual_seed`` reproduces a run. A simulator working in numpy derives its ``numpy.random.Generator``
from that torch source with :func:`numpy_rng`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform

__all__ = ["Simulator", "available", "box_uniform", "get", "numpy_rng", "register"]

X_KINDS = ("vector", "map", "set", "sequence")


class Simulator:
    r"""Base class of every simulator: :math:`x \sim p(x \mid \theta)` on a batch ``[n, d_theta]``.

    Subclasses set the attributes below and implement ``_simulate``; tractable ones implement
    ``_log_likelihood``, benchmark tasks ``_posterior``. The public methods validate and convert inputs
    (array-likes accepted) and fix the output dtypes, so the hooks only see clean tensors.

    Attributes:
        name: registry name.
        prior: the prior :math:`p(\theta)`, a torch ``Distribution`` with event shape ``[d_theta]``
            (``sbi.utils.BoxUniform`` for boxes).
        parameter_names: one name per dimension of :math:`\theta`.
        x_shape: shape of one simulation, ``x`` is ``[n, *x_shape]``.
        x_kind: ``"vector"``, ``"map"``, ``"set"`` or ``"sequence"``.
        tractable: whether :meth:`log_likelihood` is available.
        x_discrete: indices (in the flattened ``x``) of integer-valued dimensions.
    """

    name: str = "simulator"
    prior: Distribution
    parameter_names: list[str]
    x_shape: tuple[int, ...]
    x_kind: str = "vector"
    tractable: bool = False
    x_discrete: tuple[int, ...] = ()

    @property
    def d_theta(self) -> int:
        """Number of parameters."""
        return len(self.parameter_names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, d_theta={self.d_theta}, x_shape={self.x_shape})"

    # ----------------------------------------------------------------------------------------- public API

    def __call__(self, theta: Any, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Simulate :math:`x_i \sim p(x \mid \theta_i)` for every row.

        Args:
            theta: parameters ``[n, d_theta]`` (tensor or array-like).
            generator: source of randomness; torch's global RNG when ``None``.

        Returns:
            ``x`` of shape ``[n, *x_shape]``, CPU float32.
        """
        theta = self._as_theta(theta, torch.float32)
        return self._simulate(theta, generator).to(torch.float32)

    def log_likelihood(self, theta: Any, x: Any) -> Tensor:
        r"""Exact :math:`\log p(x_b \mid \theta_b)`, computed in float64.

        Args:
            theta: ``[B, d_theta]`` or ``[1, d_theta]``.
            x: ``[B, *x_shape]`` or ``[1, *x_shape]`` (a row count of 1 broadcasts against the other).

        Returns:
            ``[B]`` float64; ``-inf`` where ``x`` is outside the support of :math:`p(\cdot \mid \theta)`.
        """
        if not self.tractable:
            raise NotImplementedError(
                f"simulator {self.name!r} has an intractable likelihood: log_likelihood is not available"
            )
        theta = self._as_theta(theta, torch.float64)
        x = self._as_x(x)
        n_theta, n_x = len(theta), len(x)
        if n_theta != n_x and 1 not in (n_theta, n_x):
            raise ValueError(f"theta has {n_theta} rows and x has {n_x}: expected equal row counts, or one of them 1")
        batch = max(n_theta, n_x)
        return self._log_likelihood(theta.expand(batch, -1), x.expand(batch, *self.x_shape))

    def reference_posterior(self, x_obs: Any, num_samples: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Samples of the reference posterior :math:`p(\theta \mid x_1, \dots, x_m)`.

        Args:
            x_obs: one observation ``[*x_shape]`` or ``[1, *x_shape]``, or ``[m, *x_shape]`` for ``m``
                i.i.d. observations of the same :math:`\theta`.
            num_samples: number of samples.
            generator: source of randomness; torch's global RNG when ``None``.

        Returns:
            ``[num_samples, d_theta]`` float32.
        """
        x = self._as_observations(x_obs)
        return self._sample_posterior(x[None], num_samples, generator)[0]

    def reference_posterior_batched(
        self, xs: Any, num_samples: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Reference posterior samples for ``k`` separate single observations (vectorised where possible).

        Args:
            xs: ``[k, *x_shape]``, one observation per row.
            num_samples: number of samples per observation.
            generator: source of randomness; torch's global RNG when ``None``.

        Returns:
            ``[k, num_samples, d_theta]`` float32; row ``i`` is distributed as :math:`p(\theta \mid x_i)`.
        """
        x = self._as_x(xs)
        return self._sample_posterior(x[:, None], num_samples, generator)

    def _sample_posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        return self._posterior(x, int(num_samples), generator).to(torch.float32)

    # --------------------------------------------------------------------------------- subclass hooks

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        """``theta [n, d_theta]`` float32 → ``x [n, *x_shape]``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _simulate")

    def _log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``theta [B, d_theta]``, ``x [B, *x_shape]`` float64 → ``[B]`` float64."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _log_likelihood")

    def _posterior(self, x: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """``x [k, m, *x_shape]`` float64 (k sets of m i.i.d. rows) → ``[k, num_samples, d_theta]``."""
        raise NotImplementedError(f"simulator {self.name!r} has no reference posterior")

    # ------------------------------------------------------------------------------------- validation

    def _as_theta(self, theta: Any, dtype: torch.dtype) -> Tensor:
        theta = torch.as_tensor(theta, dtype=dtype, device="cpu")
        if theta.ndim != 2 or theta.shape[1] != self.d_theta:
            raise ValueError(
                f"{self.name}: expected theta of shape [n, {self.d_theta}] (parameters "
                f"{', '.join(self.parameter_names)}), got {list(theta.shape)}"
            )
        return theta

    def _as_x(self, x: Any) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64, device="cpu")
        if tuple(x.shape[1:]) != self.x_shape or x.ndim != len(self.x_shape) + 1:
            expected = f"[n, {_dims(self.x_shape)}]"
            raise ValueError(f"{self.name}: expected x of shape {expected}, got {list(x.shape)}")
        return x

    def _as_observations(self, x_obs: Any) -> Tensor:
        x = torch.as_tensor(x_obs, dtype=torch.float64, device="cpu")
        if tuple(x.shape) == self.x_shape:
            x = x[None]
        if x.ndim != len(self.x_shape) + 1 or tuple(x.shape[1:]) != self.x_shape or len(x) == 0:
            raise ValueError(
                f"{self.name}: expected x_obs of shape [{_dims(self.x_shape)}] or [m, {_dims(self.x_shape)}] "
                f"(m >= 1 i.i.d. observations), got {list(x.shape)}"
            )
        return x


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))


def numpy_rng(generator: torch.Generator | None = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded by one draw from ``generator`` (torch's global RNG if ``None``)."""
    seed = torch.randint(0, 2**62, (), generator=generator).item()
    return np.random.default_rng(seed)


def box_uniform(low: Any, high: Any) -> Distribution:
    """Uniform prior on the box ``[low, high]``: ``sbi.utils.BoxUniform`` (float32), or an equivalent
    ``Independent(Uniform(low, high), 1)`` where ``sbi`` is not installed."""
    low = torch.as_tensor(low, dtype=torch.float32)
    high = torch.as_tensor(high, dtype=torch.float32)
    try:
        from sbi.utils import BoxUniform
    except ImportError:
        return Independent(Uniform(low, high), 1)
    return BoxUniform(low, high)


# ------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Simulator]] = {}
F = TypeVar("F", bound=Callable[..., Simulator])


def register(name: str, factory: F | None = None) -> Any:
    """Register a simulator class (or any factory returning a :class:`Simulator`) under ``name``.

    Use as a decorator, ``@register("two_moons")``, or as a call, ``register("two_moons", TwoMoons)``.
    """

    def decorator(factory: F) -> F:
        if _REGISTRY.get(name, factory) is not factory:
            raise ValueError(f"a simulator named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator if factory is None else decorator(factory)


def get(name: str, **options: Any) -> Simulator:
    """The simulator registered as ``name``, built with ``options``: ``get("gaussian_linear", dim=5)``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown simulator {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name](**options)


def available() -> list[str]:
    """Names of the registered simulators, sorted."""
    return sorted(_REGISTRY)
