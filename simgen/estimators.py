"""Posterior and likelihood estimators: they pick y and c, build a family for the data, and delegate.

``PosteriorEstimator`` models p(θ | x) (y = θ, c = x); ``LikelihoodEstimator`` models the emulator p(x | θ)
(y = x, c = θ). Both own the pre-processing (standardisation, prior-support bijection, dequantisation and the
context embedding) through :class:`~simgen.models.TransformedDensity`, and train with :func:`simgen.training.train`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from . import nets
from .models import ConditionalDensity, TransformedDensity, make_family
from .training import TrainingConfig, TrainingHistory, train
from .transforms import Dequantize, Standardize, SupportBijection

__all__ = ["PosteriorEstimator", "LikelihoodEstimator", "as_tensor", "default_device"]

X_KINDS = ("vector", "map", "set", "sequence")


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_tensor(a: Any, name: str) -> Tensor:
    """A float32 CPU tensor from an array-like (torch, numpy, nested lists), with a clear error otherwise."""
    try:
        t = torch.as_tensor(a.detach().cpu() if isinstance(a, Tensor) else a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} must be an array-like of numbers; got {type(a).__name__} ({e})") from None
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)):
        raise ValueError(f"{name} must hold real numbers; got dtype {t.dtype}")
    return t.to(torch.float32)


def infer_x_kind(x_shape: tuple[int, ...]) -> str:
    """``[d]`` → vector, ``[H, W]`` or ``[C, H, W]`` → map; other shapes must be given explicitly."""
    if len(x_shape) == 1:
        return "vector"
    if len(x_shape) in (2, 3):
        return "map"
    raise ValueError(f"cannot infer x_kind for rows of shape {x_shape}; pass x_kind= one of {X_KINDS}")


class _Estimator:
    """What both directions share: the family, pre-processing, fitting, saving."""

    direction: str = ""

    def __init__(
        self,
        prior: Distribution | None,
        model: str | ConditionalDensity = "flow",
        *,
        embedding: nn.Module | None = None,
        x_kind: str | None = None,
        discrete: Sequence[int] | None = None,
        simulator: Any | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if prior is not None and not isinstance(prior, Distribution):
            raise ValueError(f"prior must be a torch Distribution; got {type(prior).__name__}")
        if prior is not None and len(prior.event_shape) != 1:
            raise ValueError(
                f"prior must have event shape [d_theta]; got {list(prior.event_shape)} (wrap a scalar prior as "
                "torch.distributions.Independent(..., 1) over a 1-element batch, or use sbi.utils.BoxUniform)"
            )
        make_family(model)  # validate the model string early
        if x_kind is None and simulator is not None:
            x_kind = getattr(simulator, "x_kind", None)
        if discrete is None and simulator is not None:
            discrete = getattr(simulator, "x_discrete", None)
        if x_kind is not None and x_kind not in X_KINDS:
            raise ValueError(f"x_kind must be one of {X_KINDS}; got {x_kind!r}")
        self.prior = prior
        self.model_spec = model
        self.embedding = embedding
        self.x_kind = x_kind
        self.discrete = tuple(int(i) for i in (discrete or ()))
        self.device = torch.device(device) if device is not None else default_device()
        self.theta_shape: tuple[int, ...] | None = None
        self.x_shape: tuple[int, ...] | None = None
        self.density: TransformedDensity | None = None
        self.history: TrainingHistory | None = None

    # ----------------------------------------------------------------- data checks
    @property
    def d_theta(self) -> int:
        return math.prod(self._require_fitted().theta_shape)

    def _require_fitted(self) -> _Estimator:
        if self.density is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call .fit(theta, x) first")
        return self

    def _check_pairs(self, theta: Any, x: Any) -> tuple[Tensor, Tensor]:
        theta, x = as_tensor(theta, "theta"), as_tensor(x, "x")
        if theta.dim() == 1:
            theta = theta[:, None]
        if theta.dim() != 2:
            raise ValueError(f"theta must have shape [n, d_theta]; got {tuple(theta.shape)}")
        if x.dim() < 2:
            raise ValueError(f"x must have shape [n, *x_shape] with a batch dimension; got {tuple(x.shape)}")
        if theta.shape[0] != x.shape[0]:
            raise ValueError(f"theta and x must have the same number of rows; got {theta.shape[0]} and {x.shape[0]}")
        if self.prior is not None:
            d = self.prior.event_shape[0]
            if theta.shape[1] != d:
                raise ValueError(f"theta must have d_theta = {d} columns (the prior's); got {theta.shape[1]}")
        for name, t in (("theta", theta), ("x", x)):
            bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
            if bad.any():
                rows = torch.nonzero(bad).flatten()[:5].tolist()
                raise ValueError(
                    f"{name} contains NaN or inf in {int(bad.sum())} of {t.shape[0]} rows (first: {rows}); "
                    "remove them (simgen.simulate reports and drops failed simulations)"
                )
        return theta, x

    def _check_theta(self, theta: Any, name: str = "theta") -> Tensor:
        theta = as_tensor(theta, name)
        d = self.d_theta
        if theta.dim() == 1 and theta.shape[0] == d:
            theta = theta[None]
        if theta.dim() != 2 or theta.shape[1] != d:
            raise ValueError(f"{name} must have shape [n, {d}] or [{d}]; got {tuple(theta.shape)}")
        return theta

    def _check_x(self, x: Any, name: str = "x") -> Tensor:
        x = as_tensor(x, name)
        shape = self._require_fitted().x_shape
        if tuple(x.shape) == shape:
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} must have shape [m, {', '.join(map(str, shape))}] or {list(shape)}; "
                             f"got {list(x.shape)}")
        return x

    # ----------------------------------------------------------------- building
    def _make_density(
        self, y_shape: tuple[int, ...], c_shape: tuple[int, ...], y_is_theta: bool
    ) -> TransformedDensity:
        """A fresh family, built for y ``[n, *y_shape]`` given c ``[n, *c_shape]``, in its pre-processing.

        The embedding is the user's ``embedding=`` if given, else the default for the context's kind.
        """
        is_map = self.x_kind == "map"
        support = SupportBijection(self.prior) if (y_is_theta and self.prior is not None) else None
        dequantize = Dequantize(self.discrete) if (not y_is_theta and self.discrete) else None
        y_std = Standardize(y_shape, per_channel=is_map and not y_is_theta)
        c_std = Standardize(c_shape, per_channel=is_map and y_is_theta)
        if self.embedding is not None:
            embedding = self.embedding
        elif y_is_theta:
            embedding = nets.default_embedding(self.x_kind, c_shape)
        else:
            embedding = nets.Flatten(c_shape)
        features = nets.output_features(embedding, c_shape)
        spec = self.model_spec
        family = make_family(spec) if isinstance(spec, str) else type(spec)(**spec.config())
        family.build(y_shape, features)
        return TransformedDensity(family, y_std, c_std, embedding, support=support, dequantize=dequantize)

    def _fit(
        self,
        y: Tensor,
        c: Tensor,
        y_is_theta: bool,
        config: TrainingConfig | None,
        seed: int | None,
        progress: bool,
        settings: dict[str, Any],
    ) -> TrainingHistory:
        config = _training_config(config, settings)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            density = self._make_density(tuple(y.shape[1:]), tuple(c.shape[1:]), y_is_theta)
        y_fit = density.dequantize.midpoint(y) if density.dequantize is not None else y
        u = density.support(y_fit) if density.support is not None else y_fit
        density.y_standardize.fit(u)
        density.c_standardize.fit(c)
        density.to(self.device)
        self.history = train(density, y, c, config, seed=seed, device=self.device, progress=progress)
        self.density = density
        return self.history

    def _config(self) -> dict[str, Any]:
        """JSON description of the estimator (family, shapes, kinds); see :mod:`simgen.io`."""
        self._require_fitted()
        return {
            "direction": self.direction,
            "family": self.density.density.family,
            "family_config": self.density.density.config(),
            "theta_shape": list(self.theta_shape),
            "x_shape": list(self.x_shape),
            "x_kind": self.x_kind,
            "discrete": list(self.discrete),
            "embedding": nets.network_config(self.density.embedding) if self.density.embedding else None,
            "history": self.history.to_dict() if self.history is not None else None,
        }

    def save(self, path: str) -> None:
        """Write weights, a JSON config and the format version to ``path`` (see :func:`simgen.load`)."""
        from .io import save

        save(self, path)

    def _sample_chunks(self, n: int, c: Tensor, generator: torch.Generator | None, chunk: int = 100_000) -> Tensor:
        """``n`` samples per context row, drawn ``chunk`` rows at a time: ``[m, n, *y_shape]`` on the CPU."""
        out = []
        with torch.no_grad():
            c = c.to(self.device)
            for s in range(0, n, chunk):
                out.append(self.density.sample(min(chunk, n - s), c, generator=generator).cpu())
        return torch.cat(out, dim=1)


class PosteriorEstimator(_Estimator):
    r"""Amortised neural posterior estimation: q_φ(θ | x) ≈ p(θ | x), trained on (θ, x) ~ p(θ) p(x | θ).

    Minimising E_{p(θ, x)}[−log q_φ(θ | x)] makes q_φ(θ | x) → p(θ | x) for every x in the simulated range
    (Papamakarios & Murray 2016, "Fast ε-free inference of simulation models with Bayesian conditional density
    estimation", arXiv:1605.06376). θ is modelled in the prior's unconstrained space, so samples never leave a
    bounded prior's support and ``log_prob`` carries the Jacobian.

    Args:
        prior: the prior p(θ) the simulations were drawn from (a torch ``Distribution``).
        model: ``"flow"`` or a family object such as ``Flow(kind="maf")``.
        embedding: module mapping x ``[n, *x_shape]`` to features ``[n, f]`` (default from ``x_kind``).
        x_kind: ``"vector"``, ``"map"``, ``"set"`` or ``"sequence"`` (default: from ``simulator`` or x's shape).
        discrete: indices of integer-valued x dimensions (only matters for emulators).
        simulator: optional simulator whose ``x_kind`` and ``x_discrete`` fill the above.
        device: where to train and sample (CUDA when present).
    """

    direction = "posterior"

    def __init__(self, prior: Distribution, model: str | ConditionalDensity = "flow", **kwargs: Any) -> None:
        if prior is None:
            raise ValueError("PosteriorEstimator needs the prior the simulations were drawn from")
        super().__init__(prior, model, **kwargs)

    def fit(
        self,
        theta: Any,
        x: Any,
        *,
        config: TrainingConfig | None = None,
        seed: int | None = None,
        progress: bool = True,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit q(θ | x) on simulated pairs θ ``[n, d_theta]``, x ``[n, *x_shape]``.

        ``settings`` override :class:`~simgen.training.TrainingConfig` fields (``batch_size=``,
        ``learning_rate=``, ``max_epochs=``, ...). θ outside the prior's support is an error. Fitting again
        starts from fresh networks.
        """
        theta, x = self._check_pairs(theta, x)
        support = SupportBijection(self.prior)
        outside = ~support.contains(theta)
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} of {theta.shape[0]} theta rows lie outside the prior's support "
                f"(first: {theta[outside][0].tolist()}); a posterior estimator needs θ drawn from its prior"
            )
        self.theta_shape, self.x_shape = tuple(theta.shape[1:]), tuple(x.shape[1:])
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        return self._fit(theta, x, True, config, seed, progress, settings)

    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` posterior draws for one observation ``x_obs`` (``[*x_shape]`` or ``[1, *x_shape]``):
        ``[n, d_theta]``."""
        x = self._check_x(x_obs, "x_obs")
        if x.shape[0] != 1:
            raise ValueError(
                f"sample takes one observation; x_obs has {x.shape[0]} rows. Use sample_batched(n, xs) for "
                "several observations (a PosteriorEstimator does not combine i.i.d. observations)"
            )
        return self.sample_batched(n, x, generator=generator)[0]

    def sample_batched(self, n: int, xs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` posterior draws for each of ``m`` observations ``xs`` ``[m, *x_shape]``: ``[m, n, d_theta]``."""
        _check_n(n)
        return self._sample_chunks(n, self._check_x(xs, "xs"), generator)

    def log_prob(self, theta: Any, x: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """log q(θ[i] | x[i]) ``[n]``; one observation x is broadcast over θ; −inf outside the support."""
        theta, x = self._check_theta(theta), self._check_x(x)
        theta, x = _broadcast_rows(theta, x, "theta", "x")
        with torch.no_grad():
            return self.density.log_prob(theta.to(self.device), x.to(self.device), generator=generator).cpu()


class LikelihoodEstimator(_Estimator):
    r"""Neural likelihood estimation: an emulator q_φ(x | θ) ≈ p(x | θ) of the simulator.

    Trained by maximum likelihood on simulated pairs (Papamakarios, Sterratt & Murray 2019, "Sequential Neural
    Likelihood", arXiv:1805.07226). ``posterior()`` turns it into p(θ | x_obs) ∝ Π_i q(x_obs,i | θ) p(θ),
    sampled by MCMC (:mod:`simgen.mcmc`).

    Arguments as :class:`PosteriorEstimator`; ``prior`` may be ``None`` when no posterior is needed.
    """

    direction = "likelihood"

    def fit(
        self,
        theta: Any,
        x: Any,
        *,
        config: TrainingConfig | None = None,
        seed: int | None = None,
        progress: bool = True,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit q(x | θ) on simulated pairs θ ``[n, d_theta]``, x ``[n, *x_shape]`` (see
        :meth:`PosteriorEstimator.fit` for ``settings``)."""
        theta, x = self._check_pairs(theta, x)
        self.theta_shape, self.x_shape = tuple(theta.shape[1:]), tuple(x.shape[1:])
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        d_x = math.prod(self.x_shape)
        if any(not 0 <= i < d_x for i in self.discrete):
            raise ValueError(f"discrete indices must lie in [0, {d_x}); got {list(self.discrete)}")
        if self.discrete and self.x_kind != "vector":
            raise ValueError(f"discrete dimensions are supported for vector x only; x_kind is {self.x_kind!r}")
        return self._fit(x, theta, False, config, seed, progress, settings)

    def sample(self, n: int, theta: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` emulated simulations at one θ (``[d_theta]`` or ``[1, d_theta]``): ``[n, *x_shape]``."""
        theta = self._check_theta(theta)
        if theta.shape[0] != 1:
            raise ValueError(f"sample takes one theta; got {theta.shape[0]} rows. Use sample_batched(n, thetas)")
        return self.sample_batched(n, theta, generator=generator)[0]

    def sample_batched(self, n: int, thetas: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` emulated simulations for each of ``m`` parameters ``[m, d_theta]``: ``[m, n, *x_shape]``."""
        _check_n(n)
        return self._sample_chunks(n, self._check_theta(thetas, "thetas"), generator)

    def log_prob(self, x: Any, theta: Any, *, generator: torch.Generator | None = None) -> Tensor:
        """log q(x[i] | θ[i]) ``[n]``; a single x or θ row is broadcast against the other."""
        x, theta = self._check_x(x), self._check_theta(theta)
        x, theta = _broadcast_rows(x, theta, "x", "theta")
        with torch.no_grad():
            return self.density.log_prob(x.to(self.device), theta.to(self.device), generator=generator).cpu()

    def log_likelihood(self, theta: Tensor, x_obs: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Σ_i log q(x_obs,i | θ_b) for each θ row: θ ``[B, d_theta]``, x_obs ``[m, *x_shape]`` → ``[B]``.

        Runs on the model's device without input checks or gradients (the MCMC hot path).
        """
        m, b = x_obs.shape[0], theta.shape[0]
        with torch.no_grad():
            x_rep = x_obs.to(self.device).repeat(b, *([1] * (x_obs.dim() - 1)))
            theta_rep = theta.to(self.device).repeat_interleave(m, dim=0)
            return self.density.log_prob(x_rep, theta_rep, generator=generator).reshape(b, m).sum(dim=1)

    def posterior(self, **mcmc: Any) -> Any:
        """p(θ | x_obs) ∝ Π_i q(x_obs,i | θ) p(θ), sampled by a vectorised slice sampler.

        ``mcmc`` sets :class:`~simgen.mcmc.MCMCPosterior`'s options (``num_chains=``, ``warmup=``, ``thin=``,
        ``num_init=``).
        """
        from .mcmc import MCMCPosterior

        self._require_fitted()
        if self.prior is None:
            raise ValueError("posterior() needs a prior: construct LikelihoodEstimator(prior=..., ...)")
        return MCMCPosterior(self, self.prior, **mcmc)


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of samples must be a positive int; got {n!r}")


def _broadcast_rows(a: Tensor, b: Tensor, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    """Broadcast a single row of one argument against the other's ``n`` rows."""
    if a.shape[0] == b.shape[0]:
        return a, b
    if b.shape[0] == 1:
        return a, b.expand(a.shape[0], *b.shape[1:])
    if a.shape[0] == 1:
        return a.expand(b.shape[0], *a.shape[1:]), b
    raise ValueError(f"{name_a} and {name_b} must have the same number of rows or one of them a single row; "
                     f"got {a.shape[0]} and {b.shape[0]}")


def _training_config(config: TrainingConfig | None, settings: dict[str, Any]) -> TrainingConfig:
    config = config or TrainingConfig()
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = set(settings) - names
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}; allowed: {sorted(names)}")
    return dataclasses.replace(config, **settings)
