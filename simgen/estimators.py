"""Posterior and likelihood estimators: they pick y and c, build a family for the data, and delegate.

``PosteriorEstimator`` models p(θ | x) (y = θ, c = x); ``LikelihoodEstimator`` models the emulator p(x | θ)
(y = x, c = θ). Both own the pre-processing (standardisation, prior-support bijection, dequantisation and the
context embedding) through :class:`~simgen.models.TransformedDensity`, and train with :func:`simgen.training.train`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.nn import functional as F

from . import nets
from .models import FAMILIES, ConditionalDensity, TransformedDensity, make_family
from .training import TrainingConfig, TrainingHistory, train
from .transforms import SUPPORT_MAPS, Dequantize, LinearResidual, Standardize, SupportBijection
from .utils import as_tensor, default_device

__all__ = ["PosteriorEstimator", "LikelihoodEstimator", "ValidityClassifier", "as_tensor", "default_device"]

X_KINDS = ("vector", "map", "set", "sequence")


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
        linear_baseline: bool = True,
        support_map: str | None = None,
    ) -> None:
        if prior is not None and not isinstance(prior, Distribution):
            raise ValueError(f"prior must be a torch Distribution; got {type(prior).__name__}")
        if prior is not None and len(prior.event_shape) != 1:
            raise ValueError(
                f"prior must have event shape [d_theta]; got {list(prior.event_shape)} (wrap a scalar prior as "
                "torch.distributions.Independent(..., 1) over a 1-element batch, or use sbi.utils.BoxUniform)"
            )
        make_family(model)  # validate the model string early
        if support_map is not None and support_map not in SUPPORT_MAPS:
            raise ValueError(f"support_map must be one of {SUPPORT_MAPS} or None (the family's); got {support_map!r}")
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
        self._discrete_given = discrete is not None
        self.discrete = tuple(int(i) for i in (discrete or ()))
        self.device = torch.device(device) if device is not None else default_device()
        self.linear_baseline = bool(linear_baseline)
        self.support_map = support_map if support_map is not None else self._family_spec().support_map
        self.theta_shape: tuple[int, ...] | None = None
        self.x_shape: tuple[int, ...] | None = None
        self.density: TransformedDensity | None = None
        self.history: TrainingHistory | None = None
        #: P(valid | θ), fitted by ``fit(store)`` (emulators only); see ``LikelihoodEstimator.posterior``
        self.validity: ValidityClassifier | None = None

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
            _check_rows(t, name, "; remove them (simgen.simulate reports and drops failed simulations)")
        return theta, x

    def _check_theta(self, theta: Any, name: str = "theta") -> Tensor:
        theta = as_tensor(theta, name)
        d = self.d_theta
        if theta.dim() == 1 and theta.shape[0] == d:
            theta = theta[None]
        if theta.dim() != 2 or theta.shape[1] != d:
            raise ValueError(f"{name} must have shape [n, {d}] or [{d}]; got {tuple(theta.shape)}")
        return _check_rows(theta, name)

    def _check_x(self, x: Any, name: str = "x") -> Tensor:
        x = as_tensor(x, name)
        shape = self._require_fitted().x_shape
        if tuple(x.shape) == shape:
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} must have shape [m, {', '.join(map(str, shape))}] or {list(shape)}; "
                             f"got {list(x.shape)}")
        return _check_rows(x, name)

    # ----------------------------------------------------------------- building
    def _family_spec(self) -> ConditionalDensity | type[ConditionalDensity]:
        """The chosen family's class (model string) or object: where its class-level preferences live."""
        spec = self.model_spec
        return FAMILIES[spec] if isinstance(spec, str) else spec

    def _training_defaults(self) -> dict[str, Any]:
        """The chosen family's preferred training settings (see ``ConditionalDensity.training_defaults``)."""
        return dict(self._family_spec().training_defaults)

    def _make_density(
        self, y_shape: tuple[int, ...], c_shape: tuple[int, ...], y_is_theta: bool
    ) -> TransformedDensity:
        """A fresh family, built for y ``[n, *y_shape]`` given c ``[n, *c_shape]``, in its pre-processing.

        The embedding is the user's ``embedding=`` if given, else the default for the context's kind.
        """
        is_map = self.x_kind == "map"
        support = SupportBijection(self.prior, self.support_map) if (y_is_theta and self.prior is not None) else None
        dequantize = Dequantize(self.discrete) if (not y_is_theta and self.discrete) else None
        spec = self.model_spec
        family = make_family(spec) if isinstance(spec, str) else type(spec)(**spec.config())
        # a family for binary data (a Bernoulli VAE) models y unstandardised
        y_std = Standardize(y_shape, per_channel=is_map and not y_is_theta,
                            enabled=getattr(family, "standardize_y", True))
        if self.embedding is not None:
            embedding = self.embedding
        elif y_is_theta:
            embedding = nets.default_embedding(self.x_kind, c_shape)
        else:
            embedding = nets.Flatten(c_shape)
        if self.x_kind == "set" and y_is_theta:  # one statistic per feature, the 0/1 mask left as it is
            c_std = nets.SetStandardize(c_shape, masked=getattr(embedding, "masked", c_shape[-1] >= 2))
        else:
            c_std = Standardize(c_shape, per_channel=is_map and y_is_theta)
        features = nets.output_features(embedding, c_shape)
        family.build(y_shape, features)
        residual = None
        if self.linear_baseline and len(y_shape) == 1 and len(c_shape) == 1 and y_std.enabled:
            residual = LinearResidual(y_shape[0], c_shape[0])
        return TransformedDensity(family, y_std, c_std, embedding, support=support, dequantize=dequantize,
                                  residual=residual)

    def _fit(
        self,
        y: Any,
        c: Tensor | None,
        y_is_theta: bool,
        config: TrainingConfig | None,
        seed: int | None,
        progress: bool,
        settings: dict[str, Any],
        weights: Tensor | None = None,
    ) -> TrainingHistory:
        """Build a fresh density and train it on tensors ``y``, ``c`` (with optional importance ``weights``),
        or on a streaming :class:`~simgen.store.StoreBatches` ``y`` (``c`` is ``None``)."""
        config = _training_config(config, settings, self._training_defaults())
        streaming = not isinstance(y, Tensor)
        if streaming:
            y_shape, c_shape = (self.theta_shape, self.x_shape) if y_is_theta else (self.x_shape, self.theta_shape)
        else:
            y_shape, c_shape = tuple(y.shape[1:]), tuple(c.shape[1:])
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            density = self._make_density(y_shape, c_shape, y_is_theta)

        def prepared(y_rows: Tensor) -> Tensor:
            y_fit = density.dequantize.midpoint(y_rows) if density.dequantize is not None else y_rows
            return density.support(y_fit) if density.support is not None else y_fit

        if streaming:  # standardisation statistics from one pass over the chunks
            _fit_streaming(density.y_standardize, density.c_standardize,
                           ((prepared(yb), cb) for yb, cb in y.iter_rows()))
        else:
            density.y_standardize.fit(prepared(y))
            density.c_standardize.fit(c)
        if density.residual is not None:  # regression of the standardised y on the standardised context
            rows = y.iter_rows() if streaming else [(y, c)]
            density.residual.fit((density.y_standardize(prepared(yb)), density.c_standardize(cb)) for yb, cb in rows)
        density.to(self.device)
        self.history = train(density, y, c, config, seed=seed, device=self.device, progress=progress,
                             weights=weights)
        self.density = density
        self.validity = None
        return self.history

    def _fit_store(
        self,
        path: Any,
        y_is_theta: bool,
        config: TrainingConfig | None,
        seed: int | None,
        progress: bool,
        settings: dict[str, Any],
        max_memory_gb: float | None,
        proposal: Distribution | None,
    ) -> tuple[TrainingHistory, Any]:
        """Fit from a campaign store: in memory when its valid rows fit in ``max_memory_gb``, else streamed."""
        from .store import Store, StoreBatches, open_store

        if not isinstance(path, str | os.PathLike | Store):
            raise ValueError(
                f"fit takes (theta, x) or a store path; got {type(path).__name__} without x"
            )
        store = path if isinstance(path, Store) else open_store(path)
        missing = store.missing_chunks()
        if missing:
            warnings.warn(
                f"the store {store.path} misses {len(missing)} chunk(s) of its campaign (first: {missing[0]}); "
                "training on the chunks present. Run simgen.simulate(..., store=) again to complete it",
                RuntimeWarning, stacklevel=3,
            )
        meta = store.metadata
        if store.x_shape is None:
            raise ValueError(f"the store {store.path} holds no valid simulation")
        d_theta = int(meta.get("theta_dim", 0))
        if self.prior is not None and d_theta != self.prior.event_shape[0]:
            raise ValueError(f"the store's theta has {d_theta} dimensions; the prior has {self.prior.event_shape[0]}")
        self.x_kind = self.x_kind or meta.get("x_kind")
        if not self._discrete_given and meta.get("x_discrete"):
            self.discrete = tuple(int(i) for i in meta["x_discrete"])
        weight_fn = self._store_weights(store, proposal) if y_is_theta else None
        valid = store.valid
        n_valid = int(valid.sum())
        row_bytes = 4 * (d_theta + math.prod(store.x_shape))
        budget = (max_memory_gb if max_memory_gb is not None else _default_memory_gb()) * 1e9
        if 3 * n_valid * row_bytes <= budget:  # the rows, the train/validation copies and the standardised batch
            theta, x = store.load()
            return self._fit_pairs(theta, x, config, seed, progress, settings, weight_fn), store
        config = _training_config(config, settings, self._training_defaults())
        split_seed = int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())
        per_buffer = int(budget // (3 * store.chunk_size * row_bytes))
        source = StoreBatches(store, y_is_theta, config.validation_fraction, split_seed, per_buffer, weight_fn)
        self.theta_shape, self.x_shape = (d_theta,), tuple(store.x_shape)
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        return self._fit(source, None, y_is_theta, config, seed, progress, {}), store

    def _importance(self, proposal: Distribution) -> Callable[[Tensor], Tensor]:
        """θ ↦ p(θ) / q(θ) (0 outside the prior's support), float64."""
        support = SupportBijection(self.prior)

        def weight_fn(theta: Tensor) -> Tensor:
            w = torch.zeros(theta.shape[0], dtype=torch.float64)
            inside = support.contains(theta)
            if inside.any():
                t = theta[inside]
                log_w = self.prior.log_prob(t).double() - proposal.log_prob(t).double()
                w[inside] = torch.nan_to_num(torch.exp(log_w), nan=0.0, posinf=0.0)
            return w

        return weight_fn

    def _store_weights(self, store: Any, proposal: Distribution | None) -> Callable[[Tensor], Tensor] | None:
        """Importance weights for a store: ``None`` when it was drawn from the prior; refused when it was not,
        unless ``proposal`` (the distribution it was drawn from) is given."""
        from .store import describe_distribution

        described = store.metadata.get("proposal", {})
        k, keep = store._visible_chunks()[0]
        rows = store.read_chunk(k, min(keep, 256), ("theta", "proposal_log_prob"))

        def drew_from(dist: Distribution) -> bool:
            mine = describe_distribution(dist)
            if "custom" not in (mine.get("type"), described.get("type")) and mine != described:
                return False
            if not torch.isfinite(rows["proposal_log_prob"]).all():
                return mine == described
            try:
                log_q = dist.log_prob(rows["theta"]).double()
            except (ValueError, RuntimeError):
                return False
            return bool(torch.allclose(log_q, rows["proposal_log_prob"], rtol=1e-5, atol=1e-5))

        if proposal is None:
            if drew_from(self.prior):
                return None
            raise ValueError(
                f"the store {store.path} was drawn from {_short(described)}, not from this estimator's prior "
                f"{_short(describe_distribution(self.prior))}: a posterior trained on those draws would be wrong. "
                "Pass proposal=q (the distribution the store was drawn from) to importance-weight the loss by "
                "p(θ)/q(θ), or simulate from the prior"
            )
        if not drew_from(proposal):
            raise ValueError(f"proposal= is not the distribution the store {store.path} was drawn from "
                             f"({_short(described)})")
        return None if drew_from(self.prior) else self._importance(proposal)

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
            "linear_baseline": self.linear_baseline,
            "support_map": self.support_map,
            "embedding": nets.network_config(self.density.embedding) if self.density.embedding is not None else None,
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
        linear_baseline: when y and the context are vectors, model y's residual from its least-squares linear
            regression on the context (:class:`~simgen.transforms.LinearResidual`), so that the family starts
            from the best linear-Gaussian model and only learns the rest. Exact, cheap, and worth most where the
            truth is nearly linear-Gaussian; ``False`` models the standardised y directly.
        support_map: how a box prior's support is mapped onto R^d, ``"logit"`` or ``"probit"``
            (:class:`~simgen.transforms.SupportBijection`); default the family's (flows and VAEs logit,
            diffusion and CNF probit, whose Gaussian tails those families follow).
    """

    direction = "posterior"

    def __init__(self, prior: Distribution, model: str | ConditionalDensity = "flow", **kwargs: Any) -> None:
        if prior is None:
            raise ValueError("PosteriorEstimator needs the prior the simulations were drawn from")
        super().__init__(prior, model, **kwargs)

    def fit(
        self,
        theta: Any,
        x: Any = None,
        *,
        config: TrainingConfig | None = None,
        seed: int | None = None,
        progress: bool = True,
        proposal: Distribution | None = None,
        max_memory_gb: float | None = None,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit q(θ | x) on simulated pairs θ ``[n, d_theta]``, x ``[n, *x_shape]``, or on a campaign store.

        ``fit("runs.h5")`` trains on a store's valid rows: in memory when they fit in ``max_memory_gb``
        (default: a quarter of this machine's memory), else streamed chunk by chunk (shuffled chunk order,
        rows shuffled within buffers of chunks, a seed-fixed validation split, standardisation statistics from
        one pass). ``x_kind`` and ``discrete`` are taken from the store's metadata when not given.

        A posterior needs θ drawn from its prior. A store drawn from another distribution is refused unless
        ``proposal=q`` (that distribution) is passed: the loss is then importance-weighted by p(θ)/q(θ) (rows
        are drawn with probability ∝ p/q each epoch), and rows outside the prior's support are left out. The
        same ``proposal=`` works for θ, x tensors drawn from q.

        ``settings`` override :class:`~simgen.training.TrainingConfig` fields (``batch_size=``,
        ``learning_rate=``, ``max_epochs=``, ...). θ outside the prior's support is an error. Fitting again
        starts from fresh networks.
        """
        if x is None:
            return self._fit_store(theta, True, config, seed, progress, settings, max_memory_gb, proposal)[0]
        return self._fit_pairs(theta, x, config, seed, progress, settings,
                               self._importance(proposal) if proposal is not None else None)

    def _fit_pairs(
        self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
        settings: dict[str, Any], weight_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> TrainingHistory:
        theta, x = self._check_pairs(theta, x)
        weights = None
        if weight_fn is not None:
            weights = weight_fn(theta)
            keep = weights > 0
            theta, x, weights = theta[keep], x[keep], weights[keep]
        support = SupportBijection(self.prior)
        outside = ~support.contains(theta)
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} of {theta.shape[0]} theta rows lie outside the prior's support "
                f"(first: {theta[outside][0].tolist()}); a posterior estimator needs θ drawn from its prior "
                "(or proposal=q, the distribution θ was drawn from)"
            )
        self.theta_shape, self.x_shape = tuple(theta.shape[1:]), tuple(x.shape[1:])
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        return self._fit(theta, x, True, config, seed, progress, settings, weights)

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
        x: Any = None,
        *,
        config: TrainingConfig | None = None,
        seed: int | None = None,
        progress: bool = True,
        max_memory_gb: float | None = None,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit q(x | θ) on simulated pairs θ ``[n, d_theta]``, x ``[n, *x_shape]``, or on a campaign store
        (``fit("runs.h5")``; see :meth:`PosteriorEstimator.fit` for stores, ``max_memory_gb`` and ``settings``).

        From a store, it also fits the classifier P(valid | θ) on every row's status (valid or failed), which
        ``posterior(validity=True)`` uses; the emulator itself only ever sees valid rows.
        """
        if x is None:
            history, store = self._fit_store(theta, False, config, seed, progress, settings, max_memory_gb, None)
            self.validity = fit_validity(store.theta, store.valid, seed=seed, device=self.device)
            return history
        return self._fit_pairs(theta, x, config, seed, progress, settings)

    def _fit_pairs(
        self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
        settings: dict[str, Any], weight_fn: Any = None,
    ) -> TrainingHistory:
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

    def log_likelihood(
        self, theta: Tensor, x_obs: Tensor, *, generator: torch.Generator | None = None, grad: bool = False
    ) -> Tensor:
        r"""Σ_i log q(x_obs,i | θ_b) for each θ row: θ ``[B, d_theta]``, x_obs ``[m, *x_shape]`` → ``[B]``.

        Runs on the model's device without input checks (the MCMC hot path); differentiable in θ with
        ``grad=True`` (gradient-based samplers), else under ``no_grad``.
        """
        m, b = x_obs.shape[0], theta.shape[0]
        with torch.set_grad_enabled(grad):
            x_rep = x_obs.to(self.device).repeat(b, *([1] * (x_obs.dim() - 1)))
            theta_rep = theta.to(self.device).repeat_interleave(m, dim=0)
            return self.density.log_prob(x_rep, theta_rep, generator=generator).reshape(b, m).sum(dim=1)

    def posterior(self, validity: bool = False, **mcmc: Any) -> Any:
        r"""p(θ | x_obs) ∝ Π_i q(x_obs,i | θ) p(θ), sampled by MCMC over many chains (MALA by default).

        ``validity=True`` multiplies in P(valid | θ), a classifier fitted on the store's rows by ``fit(store)``:
        p(θ | x_obs) ∝ P(valid | θ) Π_i q(x_obs,i | θ) p(θ). The emulator is trained on valid simulations only,
        so it models p(x | θ, valid); when the failure rate depends on θ, the simulator's actual likelihood of
        a (valid) observation is P(valid | θ) p(x | θ, valid), and leaving the factor out over-weights regions
        where the simulator often fails. It matters when failures are frequent and θ-dependent; it costs one
        small MLP evaluation per likelihood call (negligible next to the emulator).

        ``mcmc`` sets :class:`~simgen.mcmc.MCMCPosterior`'s options: ``method=`` (``"mala"``, ``"hmc"`` or
        ``"slice"`` — the one for emulators whose ``log_prob`` has no gradient), ``num_chains=``, ``warmup=``,
        ``thin=``, ``num_init=``, ``num_leapfrog=``, ``target_accept=``, ``monitor=`` (mode-invariant functions
        of θ for R̂/ESS) and ``progress=``. Each call's split-R̂ and ESS are in ``.last_run``.

        Raises:
            ValueError: no prior, or ``validity=True`` for an emulator not fitted from a store.
        """
        from .mcmc import MCMCPosterior

        self._require_fitted()
        if self.prior is None:
            raise ValueError("posterior() needs a prior: construct LikelihoodEstimator(prior=..., ...)")
        if validity and self.validity is None:
            raise ValueError(
                "posterior(validity=True) needs the classifier P(valid | θ), which is fitted from a campaign "
                "store's valid and failed rows: fit the emulator with emu.fit('runs.h5') (a store written by "
                "simgen.simulate(..., store='runs.h5'))"
            )
        return MCMCPosterior(self, self.prior, validity=self.validity if validity else None, **mcmc)


class ValidityClassifier(nn.Module):
    """P(valid | θ): a small MLP on standardised θ, trained by binary cross-entropy with the shared trainer.

    ``always_valid`` (no failure in the training rows) makes ``log_prob_valid`` exactly 0.
    """

    def __init__(self, theta_features: int, hidden_features: int = 64, num_layers: int = 2) -> None:
        super().__init__()
        self._config = {"theta_features": theta_features, "hidden_features": hidden_features,
                        "num_layers": num_layers}
        self.standardize = Standardize((theta_features,))
        self.net = nets.MLP(theta_features, 1, hidden_features, num_layers)
        self.register_buffer("always_valid", torch.tensor(False))

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def logits(self, theta: Tensor) -> Tensor:
        return self.net(self.standardize(theta)).squeeze(-1)

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        """Binary cross-entropy of labels ``y`` ``[n, 1]`` (1 valid) given θ ``c``."""
        return F.binary_cross_entropy_with_logits(self.logits(c), y.reshape(-1))

    @torch.no_grad()
    def log_prob_valid(self, theta: Tensor) -> Tensor:
        """log P(valid | θ) ``[n]`` on θ's device."""
        if bool(self.always_valid):
            return torch.zeros(theta.shape[0], device=theta.device)
        device = self.always_valid.device
        return F.logsigmoid(self.logits(theta.to(device).float())).to(theta.device)


def fit_validity(
    theta: Tensor, valid: Tensor, *, seed: int | None = None, device: Any = None, progress: bool = False
) -> ValidityClassifier:
    """Fit :class:`ValidityClassifier` on θ ``[n, d]`` and validity ``[n]`` (all rows of a store)."""
    clf = ValidityClassifier(theta.shape[1])
    if bool(valid.all()):
        clf.always_valid.fill_(True)
        return clf.eval().to(device or "cpu")
    clf.standardize.fit(theta)
    labels = valid.float()[:, None]
    config = TrainingConfig(max_epochs=200, patience=10, learning_rate=3e-3)
    train(clf, labels, theta.float(), config, seed=seed, device=device, progress=progress)
    return clf.eval()


def _fit_streaming(y_std: Standardize, c_std: Standardize, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
    """Set both standardisations' statistics (as :meth:`Standardize.fit` would) from one pass over batches."""
    sums: list[list[Any]] = [[0.0, 0.0, 0], [0.0, 0.0, 0]]
    stds = (y_std, c_std)
    for batch in batches:
        for acc, std, t in zip(sums, stds, batch, strict=True):
            if hasattr(std, "update"):  # a standardisation with its own streaming statistics (SetStandardize)
                std.update(t)
                continue
            if not std.enabled:
                continue
            dims = [0] + [i + 1 for i, (a, e) in enumerate(zip(std.loc.shape, std.event_shape, strict=True))
                          if a == 1 and e != 1]
            t = t.double()
            total = t.sum(dim=dims)
            acc[0] = acc[0] + total
            acc[1] = acc[1] + (t * t).sum(dim=dims)
            acc[2] += t.numel() // total.numel()
    for (s1, s2, n), std in zip(sums, stds, strict=True):
        if hasattr(std, "finish"):
            std.finish()
            continue
        if not std.enabled or n == 0:
            continue
        mean = s1 / n
        var = (s2 - n * mean * mean) / max(n - 1, 1)
        std.loc.copy_(mean.reshape(std.loc.shape).to(std.loc.dtype))
        scale = torch.sqrt(torch.clamp(var, min=0.0)).reshape(std.scale.shape).to(std.scale.dtype)
        std.scale.copy_(torch.clamp(torch.nan_to_num(scale, nan=1.0), min=1e-6))


def _default_memory_gb() -> float:
    """A quarter of this machine's physical memory (4 GB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4e9
    except (ValueError, OSError, AttributeError):
        return 4.0


def _short(description: dict[str, Any]) -> str:
    text = str(description)
    return text if len(text) <= 200 else text[:197] + "..."


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of samples must be a positive int; got {n!r}")


def _check_rows(t: Tensor, name: str, hint: str = "") -> Tensor:
    """``t`` ``[n, ...]`` when it has rows and all are finite; else a ``ValueError`` naming ``name``."""
    if t.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row; got shape {list(t.shape)}")
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf in {int(bad.sum())} of {t.shape[0]} rows (first: {rows}){hint}")
    return t


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


def _training_config(
    config: TrainingConfig | None, settings: dict[str, Any], defaults: dict[str, Any] | None = None
) -> TrainingConfig:
    """``config`` (else a :class:`TrainingConfig` from the family's ``defaults``) with ``settings`` replaced."""
    config = config or TrainingConfig(**(defaults or {}))
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = set(settings) - names
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}; allowed: {sorted(names)}")
    return dataclasses.replace(config, **settings)
