"""What both estimators share: the family, its pre-processing, input checks, fitting, saving and sampling.

An estimator models y given a context c: a posterior y = θ, c = x (:mod:`~simgen.estimators.posterior`), a
likelihood y = x, c = θ (:mod:`~simgen.estimators.likelihood`). Each subclass knows its direction and says
how its y and c are pre-processed (:meth:`Estimator.y_parts`, :meth:`Estimator.context_parts`); everything else
is here. The density itself is a :class:`~simgen.models.TransformedDensity` trained by
:func:`simgen.training.train`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from tqdm.auto import tqdm

from .. import nets
from ..models import MODELS, ConditionalDensity, TransformedDensity, make_model, model_for
from ..training import StoreBatches, TrainingConfig, TrainingHistory, distributed, train
from ..training.checkpoint import checkpoint_seed
from ..transforms import SUPPORT_MAPS, Dequantize, LinearResidual, LogPositive, Standardize, SupportBijection
from ..utils import as_tensor, broadcast_rows, check_positive_int, check_rows, default_device
from . import ingest, sequential
from .auto import AUTO, Choice, choose, family_for
from .gold import (
    DEFAULT_GOLD_WEIGHT,
    DENSITY_GOLD_MODES,
    GoldObjective,
    check_gold_options,
    check_gold_rows,
    check_log_ratio_rows,
    elementwise_jacobian,
    gold_terms,
    gold_training_defaults,
    score_scale,
)
from .validity import ValidityClassifier

__all__ = ["Estimator", "infer_x_kind", "training_config", "x_context_parts", "X_KINDS"]

X_KINDS = ("vector", "map", "set", "sequence")


def infer_x_kind(x_shape: tuple[int, ...]) -> str:
    """``[d]`` → vector, ``[H, W]`` or ``[C, H, W]`` → map; other shapes must be given explicitly."""
    if len(x_shape) == 1:
        return "vector"
    if len(x_shape) in (2, 3):
        return "map"
    raise ValueError(f"cannot infer x_kind for rows of shape {x_shape}; pass x_kind= one of {X_KINDS}")


def x_context_parts(x_kind: str | None, x_shape: tuple[int, ...], embedding: nn.Module | None
                    ) -> tuple[nn.Module, nn.Module]:
    """x's embedding (``embedding`` when given, else the default for ``x_kind``) and its standardisation (per
    channel for maps; per feature for sets, the 0/1 mask left as it is): what every estimator that reads x
    (a posterior's context, a ratio estimator's input) puts in front of its network."""
    embedding = embedding if embedding is not None else nets.default_embedding(x_kind, x_shape)
    if x_kind == "set":
        # a user's set embedding may say whether its rows carry a mask; else a mask when there is room for one
        masked = getattr(embedding, "masked", x_shape[-1] >= 2)
        return embedding, nets.SetStandardize(x_shape, masked=masked)
    return embedding, Standardize(x_shape, per_channel=x_kind == "map")

def check_prior(prior: Any) -> None:
    """A prior must be a torch ``Distribution`` over vectors θ (event shape ``[d_theta]``): else a ValueError."""
    if not isinstance(prior, Distribution):
        raise ValueError(f"prior must be a torch Distribution; got {type(prior).__name__}")
    if len(prior.event_shape) != 1:
        raise ValueError(
            f"prior must have event shape [d_theta]; got {list(prior.event_shape)} (wrap a scalar prior as "
            "torch.distributions.Independent(..., 1) over a 1-element batch, or use sbi.utils.BoxUniform)"
        )


def resolve_x_kind(x_kind: str | None, simulator: Any | None) -> str | None:
    """``x_kind``, else the simulator's (simulators are duck-typed: the attribute is optional), checked against
    :data:`X_KINDS`; ``None`` when neither says (it is then inferred from x's shape at fit time)."""
    if x_kind is None and simulator is not None:
        x_kind = getattr(simulator, "x_kind", None)
    if x_kind is not None and x_kind not in X_KINDS:
        raise ValueError(f"x_kind must be one of {X_KINDS}; got {x_kind!r}")
    return x_kind


#: rows a family's data-dependent start (``ConditionalDensity.initialize``) sees at most: a streamed store's
#: first chunk, or the first rows of in-memory data
INITIALIZE_ROWS = 20_000


class Estimator:
    """What both directions share: the family, pre-processing, fitting, saving.

    Subclasses set :attr:`direction` and implement :meth:`y_parts`, :meth:`context_parts`, :meth:`split`
    (which of θ, x is y) and their public ``fit``/``sample``/``log_prob`` in their own argument order.
    """

    #: ``"posterior"`` (y = θ, c = x) or ``"likelihood"`` (y = x, c = θ); the key the loader finds it by
    direction: ClassVar[str] = ""
    #: whether the trainer's y is θ (and c is x), which is how a store's rows are served when streamed
    y_is_theta: ClassVar[bool] = False

    def __init__(
        self,
        prior: Distribution | None,
        model: str | ConditionalDensity = AUTO,
        *,
        embedding: nn.Module | None = None,
        x_kind: str | None = None,
        discrete: Sequence[int] | None = None,
        simulator: Any | None = None,
        device: str | torch.device | None = None,
        linear_baseline: bool = True,
        support_map: str | None = None,
        gold: str | None = None,
        gold_weight: float = DEFAULT_GOLD_WEIGHT,
    ) -> None:
        if prior is not None:
            check_prior(prior)
        self.gold, self.gold_weight = check_gold_options(gold, gold_weight, self.GOLD_MODES)
        if model != AUTO:
            make_model(model)  # validate the model string early
        if support_map is not None and support_map not in SUPPORT_MAPS:
            raise ValueError(f"support_map must be one of {SUPPORT_MAPS} or None (the family's); got {support_map!r}")
        x_kind = resolve_x_kind(x_kind, simulator)
        if discrete is None and simulator is not None:
            discrete = getattr(simulator, "x_discrete", None)
        self.prior = prior
        self.model_spec = model
        #: the model asked for (``"auto"``, a name or a family object); ``model_spec`` becomes ``"auto"``'s choice
        self.requested_model = model
        #: what ``model="auto"`` chose at the last fit (:class:`~simgen.estimators.auto.Choice`), else ``None``
        self.choice: Choice | None = None
        #: pairs drawn from an emulator that the last fit trained on beside the simulated ones (a posterior's
        #: ``fit(..., emulator=)`` and its ``"auto"`` choice; 0 for every other fit)
        self.num_emulated = 0
        self.embedding = embedding
        self.x_kind = x_kind
        self._discrete_given = discrete is not None
        self.discrete = tuple(int(i) for i in (discrete or ()))
        self.device = torch.device(device) if device is not None else default_device()
        self.linear_baseline = bool(linear_baseline)
        self.support_map = support_map if support_map is not None else self.family_spec().support_map
        self.theta_shape: tuple[int, ...] | None = None
        self.x_shape: tuple[int, ...] | None = None
        self.density: TransformedDensity | None = None
        self.history: TrainingHistory | None = None
        #: P(valid | θ), fitted by ``fit(store)`` (likelihoods only); see ``LikelihoodEstimator.posterior``
        self.validity: ValidityClassifier | None = None
        self.check_gold_family()

    # ----------------------------------------------------------------- gold (simgen.estimators.gold)
    #: the families that train on gold, by their ``log_prob_kind``
    GOLD_LOG_PROB_KINDS: ClassVar[tuple[str, ...]] = ("exact",)
    #: the ``gold=`` modes this estimator takes (:mod:`simgen.estimators.gold`)
    GOLD_MODES: ClassVar[tuple[str, ...]] = DENSITY_GOLD_MODES

    def check_gold_family(self) -> None:
        """With ``gold="score"``, the family must have an exact, differentiable ``log_prob``: else a ValueError
        naming the families that do."""
        if self.gold is None or self.log_prob_kind in self.GOLD_LOG_PROB_KINDS:
            return
        spec = self.family_spec()
        name = getattr(spec, "family", type(spec).__name__)
        raise ValueError(
            f"gold='score' trains the θ-gradient of an exact log-density (SCANDAL); the {name!r} family's log_prob "
            f"is {self.log_prob_kind!r} (an ODE solve or an importance estimate, too costly or noisy to "
            "differentiate at every step). Use model='flow' (or an MNLE or map flow), or gold=None"
        )

    def gold_log_density(self, model: nn.Module, y: Tensor, c: Tensor) -> Tensor:
        """The log-density whose θ-gradient the score term compares with the joint score: the density's."""
        return model.log_prob(y, c)

    def gold_log_ratio(self, model: nn.Module, theta: Tensor, x: Tensor, reference: Tensor) -> Tensor:
        """The model's log p(x | θ_ref)/p(x | θ) ``[n, k]``, what the ratio term compares with the joint log ratio
        (a :class:`~simgen.RatioEstimator`'s only)."""
        raise NotImplementedError(f"{type(self).__name__} has no ratio term")

    def gold_objective(self, model: nn.Module, gold: Tensor, theta: Tensor | None = None,
                       reference: Tensor | None = None) -> GoldObjective:
        """The training objective with the gold terms around ``model``. ``gold`` ``[n, w]`` holds the gold
        columns of :meth:`check_gold_fit` (all rows, or a streamed store's first chunk): the joint score's
        ``d_theta`` first (with the score term), which with their θ set that term's units
        (:func:`~simgen.estimators.gold.score_scale`), then the joint log ratio's ``k`` (with the ratio term,
        whose references θ_ref ``[k, d_theta]`` are ``reference``). A posterior's score term is compared in the
        unconstrained space of its support bijection (``model.support``; see :mod:`simgen.estimators.gold`)."""
        use_score, use_ratio = gold_terms(self.gold)
        if use_ratio and reference is None:
            raise ValueError(f"gold={self.gold!r} needs the references θ_ref of the joint log ratio")
        d = theta.shape[1] if theta is not None else (gold.shape[1] if not use_ratio else reference.shape[1])
        score = gold[:, :d] if use_score else None
        prior_log_prob = jacobian = None
        if self.direction == "posterior":
            prior_log_prob = self.prior.log_prob
            support = getattr(model, "support", None)
            if support is not None and not getattr(support, "identity", False):
                jacobian = elementwise_jacobian(support)
                if theta is not None and score is not None:
                    score = score / jacobian(theta)
        scale = score_scale(score) if score is not None else None
        return GoldObjective(model, theta_in_y=self.y_is_theta, d_theta=d, weight=self.gold_weight,
                             scale=scale, log_density=self.gold_log_density, prior_log_prob=prior_log_prob,
                             latent_jacobian=jacobian, reference=reference if use_ratio else None,
                             log_ratio=self.gold_log_ratio if use_ratio else None)

    def check_gold_fit(self, gold: Any, theta: Tensor, reference: Any = None) -> tuple[Tensor | None, Tensor | None]:
        """``(columns, reference)`` for ``fit(theta, x, gold=gold)``: the gold columns ``[n, w]`` the objective
        reads (the joint score ``[n, d_theta]`` for the score term, then the joint log ratio ``[n, k]`` for the
        ratio term) and the ratio term's references θ_ref ``[k, d_theta]`` (``(None, None)`` without gold); a
        ValueError when ``gold`` and the estimator's ``gold=`` option disagree or the gold lacks what it needs."""
        if self.gold is None:
            if gold is not None:
                raise ValueError(f"fit got gold, but this {type(self).__name__} was built with gold=None: build it "
                                 "with gold='score' (and gold_weight=) to train on the joint score")
            return None, None
        if gold is None:
            raise ValueError(f"this {type(self).__name__} was built with gold={self.gold!r}: fit it with its gold, "
                             "fit(theta, x, gold=gold) (theta, x, gold = simgen.simulate(..., gold=True)), or on a "
                             "store simulated with gold=True")
        self.check_gold_family()
        use_score, use_ratio = gold_terms(self.gold)
        n, d = theta.shape
        columns = [check_gold_rows(gold, n, d)] if use_score else []
        if use_ratio:
            log_ratio, reference = check_log_ratio_rows(gold, reference, n, d)
            columns.append(log_ratio)
        return torch.cat(columns, dim=1), (reference if use_ratio else None)

    # ----------------------------------------------------------------- the direction (subclasses)
    #: ``"posterior"`` or ``"likelihood"``
    direction: str = ""

    @property
    def y_kind(self) -> str:
        """The kind of data the family models: θ, a vector, for a posterior; x, of ``x_kind``, for a likelihood."""
        raise NotImplementedError

    def split(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, c)`` from θ and x."""
        raise NotImplementedError

    def y_parts(self, y_shape: tuple[int, ...], family: ConditionalDensity) -> tuple[
            SupportBijection | None, Dequantize | None, Standardize]:
        """The fixed maps applied to y before the family sees it: support bijection, dequantisation,
        standardisation."""
        raise NotImplementedError

    def context_parts(self, c_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
        """The context's embedding and standardisation (the user's ``embedding=`` when given)."""
        raise NotImplementedError

    def context_map(self, c_shape: tuple[int, ...]) -> LogPositive | None:
        """The fixed map of the context before its standardisation: none here; a likelihood's log of its positive
        parameters (:class:`~simgen.transforms.LogPositive`)."""
        return None

    # ----------------------------------------------------------------- data checks
    @property
    def d_theta(self) -> int:
        return math.prod(self._require_fitted().theta_shape)

    def _require_fitted(self) -> Estimator:
        if self.density is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call .fit(theta, x) first")
        return self

    def check_pairs(self, theta: Any, x: Any) -> tuple[Tensor, Tensor]:
        """θ ``[n, d_theta]`` and x ``[n, *x_shape]`` as float tensors, checked for shape and finiteness."""
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
            check_rows(t, name, "; remove them (simgen.simulate reports and drops failed simulations)")
        return theta, x

    def check_theta(self, theta: Any, name: str = "theta") -> Tensor:
        """θ as ``[n, d_theta]`` (a single ``[d_theta]`` row gets its batch dimension)."""
        theta = as_tensor(theta, name)
        d = self.d_theta
        if theta.dim() == 1 and theta.shape[0] == d:
            theta = theta[None]
        if theta.dim() != 2 or theta.shape[1] != d:
            raise ValueError(f"{name} must have shape [n, {d}] or [{d}]; got {tuple(theta.shape)}")
        return check_rows(theta, name)

    def check_x(self, x: Any, name: str = "x") -> Tensor:
        """x as ``[m, *x_shape]`` (a single ``[*x_shape]`` row gets its batch dimension)."""
        x = as_tensor(x, name)
        shape = self._require_fitted().x_shape
        if tuple(x.shape) == shape:
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} must have shape [m, {', '.join(map(str, shape))}] or {list(shape)}; "
                             f"got {list(x.shape)}")
        return check_rows(x, name)

    # the former private names, still used by code written against them
    _check_pairs, _check_theta, _check_x = check_pairs, check_theta, check_x

    # ----------------------------------------------------------------- building
    def family_spec(self) -> ConditionalDensity | type[ConditionalDensity]:
        """The chosen family's class (model string, resolved for this estimator's kind of y by
        :func:`~simgen.models.model_for`) or object: where its class-level preferences live."""
        spec = self.model_spec
        if spec == AUTO:
            spec = family_for(self.direction, self.y_kind)
        return MODELS[model_for(spec, self.y_kind)] if isinstance(spec, str) else spec

    @property
    def log_prob_kind(self) -> str:
        """How the family computes ``log_prob`` (see ``ConditionalDensity.log_prob_kind``): ``"exact"``,
        ``"ode"`` or ``"importance"``."""
        return self.family_spec().log_prob_kind

    def training_defaults(self) -> dict[str, Any]:
        """The chosen family's preferred training settings for this estimator's kind of y (see
        ``ConditionalDensity.training_defaults_for``); with gold, a smaller learning rate and restarts from the
        best state (:func:`~simgen.estimators.gold.gold_training_defaults`)."""
        defaults = self.family_spec().training_defaults_for(self.y_kind)
        if self.choice is not None:
            defaults = {**defaults, **self.choice.training}
        return gold_training_defaults(defaults) if self.gold is not None else defaults

    def choose_model(self, num_rows: int) -> None:
        """The family this fit builds (:attr:`model_spec`): the one asked for, or with ``model="auto"`` the
        family, options and training settings :func:`~simgen.estimators.auto.choose` picks for ``num_rows``
        training pairs (of which :attr:`num_emulated` emulated), recorded in :attr:`choice` (``None`` for any other
        model)."""
        self.model_spec, self.choice = self.requested_model, None
        if self.requested_model != AUTO:
            return
        self.choice = choose(self.direction, y_kind=self.y_kind, x_kind=self.x_kind or "vector",
                             num_rows=num_rows - self.num_emulated, discrete=bool(self.discrete), iid=self.iid_sets,
                             emulated=self.num_emulated)
        self.model_spec = make_model(self.choice.model, self.choice.options)

    def prepare_model(self, data: tuple[Tensor, Tensor] | StoreBatches) -> None:
        """Settle the family before a fit builds it (:meth:`choose_model` for the rows of ``data``: tensors
        ``(y, c)``, or the valid rows of the whole store a source streams, so that every rank of a data-parallel
        fit chooses alike); a likelihood then puts x's discrete columns under MNLE."""
        self.choose_model(data.store.num_valid if isinstance(data, StoreBatches) else data[0].shape[0])

    @property
    def iid_sets(self) -> bool:
        """Whether x rows are sets of i.i.d. observations (a posterior's ``iid=True``)."""
        return False

    def make_density(self, y_shape: tuple[int, ...], c_shape: tuple[int, ...]) -> TransformedDensity:
        """A fresh family, built for y ``[n, *y_shape]`` given c ``[n, *c_shape]``, in its pre-processing.

        The embedding is the user's ``embedding=`` if given, else the default for the context's kind.
        """
        spec = self.model_spec
        family = make_model(model_for(spec, self.y_kind)) if isinstance(spec, str) else type(spec)(**spec.config())
        if self.y_kind not in family.data_kinds:
            raise ValueError(f"model {family.family!r} models y of kind {sorted(family.data_kinds)}; this "
                             f"{self.direction} estimator's y is of kind {self.y_kind!r} (shape {list(y_shape)})")
        support, dequantize, y_std = self.y_parts(y_shape, family)
        embedding, c_std = self.context_parts(c_shape)
        family.build(y_shape, nets.output_features(embedding, c_shape))
        residual = None
        if self.linear_baseline and len(y_shape) == 1 and len(c_shape) == 1 and y_std.enabled:
            residual = LinearResidual(y_shape[0], c_shape[0], fixed=y_std.fixed)
        return TransformedDensity(family, y_std, c_std, embedding, support=support, dequantize=dequantize,
                                  residual=residual, context_map=self.context_map(c_shape))

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(y_shape, c_shape)`` of the fitted data."""
        y, c = self.split(torch.empty(0, *self.theta_shape), torch.empty(0, *self.x_shape))
        return tuple(y.shape[1:]), tuple(c.shape[1:])

    # ----------------------------------------------------------------- fitting
    def run_seed(self, seed: int | None, checkpoint: Any = None) -> int | None:
        """The seed a fit uses: ``seed``; else a checkpoint's recorded one (so that a resumed fit draws the same
        split); under ``torchrun`` rank 0's, so that every rank builds the same networks and split."""
        seed = checkpoint_seed(checkpoint, seed)
        group = distributed.setup(self.device)
        return group.shared_seed(seed) if group is not None else seed

    def _fit(
        self,
        data: tuple[Tensor, Tensor] | StoreBatches,
        config: TrainingConfig | None,
        seed: int | None,
        progress: bool,
        settings: dict[str, Any],
        weights: Tensor | None = None,
        checkpoint: Any = None,
        gold: Tensor | None = None,
        gold_reference: Tensor | None = None,
        validation_index: Tensor | None = None,
    ) -> TrainingHistory:
        """Build a fresh density and train it on tensors ``(y, c)`` (with optional importance ``weights``, and
        ``validation_index``, the rows held out for early stopping, see :func:`~simgen.training.train`) or on
        a streaming :class:`~simgen.training.StoreBatches` (under ``torchrun``, each rank's shard of it: the
        standardisation statistics are then summed over the ranks). With ``gold`` (the gold columns ``[n, w]``
        of tensor rows, :meth:`check_gold_fit`; a streaming source serves its own) the loss gains the gold terms
        (:class:`~simgen.estimators.gold.GoldObjective`; the ratio term's references θ_ref are
        ``gold_reference``). The family is settled first (:meth:`prepare_model`)."""
        streaming = isinstance(data, StoreBatches)
        self.prepare_model(data)
        config = training_config(config, settings, self.training_defaults())
        group = distributed.setup(self.device)
        if group is not None:
            self.device = group.device
        # sums of the statistics over the ranks' shards, so that every rank standardises alike
        reduce = group.all_reduce if group is not None and streaming and data.sharded else None
        y_shape, c_shape = self.shapes() if streaming else (tuple(data[0].shape[1:]), tuple(data[1].shape[1:]))
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            density = self.make_density(y_shape, c_shape)

        def prepared(y_rows: Tensor) -> Tensor:
            y_fit = density.dequantize.midpoint(y_rows) if density.dequantize is not None else y_rows
            return density.support(y_fit) if density.support is not None else y_fit

        if streaming:  # standardisation statistics from one pass over the chunks
            ingest.fit_streaming(density.y_standardize, density.c_standardize,
                                 ((prepared(yb), density.mapped_context(cb)) for yb, cb in data.iter_rows()),
                                 reduce=reduce)
        else:
            density.y_standardize.fit(prepared(data[0]))
            density.c_standardize.fit(density.mapped_context(data[1]))
        if density.residual is not None:  # regression of the standardised y on the standardised context
            rows = data.iter_rows() if streaming else [data]
            density.residual.fit(((density.y_standardize(prepared(yb)), density.standardized_context(cb))
                                  for yb, cb in rows), reduce=reduce)
        density.to(self.device)
        y, c = (data, None) if streaming else data
        start = next(iter(data.iter_rows())) if streaming else data
        density.initialize(*(rows[:INITIALIZE_ROWS].to(self.device) for rows in start))
        model = density
        if self.gold is not None:
            if streaming:
                k, keep = data.chunks[0]
                rows = data.read(k, keep, ("theta", "gold", "valid"))
                gold, theta_rows = rows["gold"][rows["valid"]], rows["theta"][rows["valid"]]
            else:
                theta_rows = data[0] if self.y_is_theta else data[1]
                if gold is None:
                    raise ValueError("a gold-trained estimator needs the gold of its training rows")
                with_gold = torch.cat([theta_rows, gold.to(theta_rows)], dim=1)
                y, c = (with_gold, c) if self.y_is_theta else (y, with_gold)
            model = self.gold_objective(density, gold, theta_rows, gold_reference).to(self.device)
        self.history = train(model, y, c, config, seed=seed, device=self.device, progress=progress,
                             weights=weights, checkpoint=checkpoint, validation_index=validation_index)
        self.density = density
        self.validity = None
        return self.history

    def _fit_store(
        self,
        path: Any,
        config: TrainingConfig | None,
        seed: int | None,
        progress: bool,
        settings: dict[str, Any],
        max_memory_gb: float | None,
        proposal: Distribution | None,
        checkpoint: Any = None,
    ) -> tuple[TrainingHistory, Any]:
        """Fit from a campaign store: in memory when its valid rows fit in ``max_memory_gb``, else streamed;
        under ``torchrun`` always streamed, each rank reading its own shard of the chunks."""
        store = ingest.open_training_store(path)
        meta = store.metadata
        d_theta = int(meta.get("theta_dim", 0))
        if self.prior is not None and d_theta != self.prior.event_shape[0]:
            raise ValueError(f"the store's theta has {d_theta} dimensions; the prior has {self.prior.event_shape[0]}")
        self.x_kind = self.x_kind or meta.get("x_kind")
        if not self._discrete_given and meta.get("x_discrete"):
            self.discrete = tuple(int(i) for i in meta["x_discrete"])
        weight_fn = self.store_weights(store, proposal)
        if self.gold is not None and not store.has_gold:
            raise ValueError(f"this {type(self).__name__} was built with gold={self.gold!r}, but the store "
                             f"{store.path} holds no gold: simulate it with simgen.simulate(..., gold=True)")
        use_score, use_ratio = gold_terms(self.gold)
        reference = (meta.get("gold") or {}).get("reference") if use_ratio else None
        if use_ratio and reference is None:
            raise ValueError(f"this {type(self).__name__} was built with gold={self.gold!r}, but the store "
                             f"{store.path} holds no joint log ratio: simulate it with simgen.simulate(..., "
                             "gold=True, gold_reference=theta_ref)")
        in_memory, per_buffer = ingest.rows_fit_in_memory(store, d_theta, max_memory_gb)
        group = distributed.setup(self.device)
        if in_memory and group is None:
            theta, x = store.load()
            gold = store.load_gold() if self.gold is not None else None
            return self._fit_pairs(theta, x, config, seed, progress, settings, weight_fn, checkpoint,
                                   gold=gold, gold_reference=reference), store
        self.choose_model(store.num_valid)  # the training settings below depend on the choice
        config = training_config(config, settings, self.training_defaults())
        split_seed = int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())
        shard = (group.rank, group.world_size) if group is not None else None
        source = StoreBatches(store, self.y_is_theta, config.validation_fraction, split_seed,
                              per_buffer, weight_fn, shard=shard,
                              gold=[name for name, used in (("joint_score", use_score), ("joint_log_ratio", use_ratio))
                                    if used])
        self.theta_shape, self.x_shape = (d_theta,), tuple(store.x_shape)
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        if use_ratio:
            reference = check_log_ratio_rows({"joint_log_ratio": torch.zeros(1, len(reference))}, reference, 1,
                                             d_theta)[1]
        return self._fit(source, config, seed, progress, {}, checkpoint=checkpoint, gold_reference=reference), store

    def store_weights(self, store: Any, proposal: Distribution | None) -> Callable[[Tensor], Tensor] | None:
        """Importance weights of a store's rows (see :func:`simgen.estimators.ingest.store_weights`); a
        likelihood needs none: p(x | θ) is the same whatever θ was drawn from."""
        return None

    def _fit_pairs(
        self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
        settings: dict[str, Any], weight_fn: Callable[[Tensor], Tensor] | None = None, checkpoint: Any = None,
        gold: Any = None, gold_reference: Any = None, validation_index: Tensor | None = None,
    ) -> TrainingHistory:
        raise NotImplementedError

    # ----------------------------------------------------------------- sequential rounds
    def fit_sequential(
        self,
        simulator: Any,
        x_obs: Any,
        *,
        num_simulations: int,
        rounds: int = 2,
        store: str | os.PathLike | None = None,
        seed: int = 0,
        progress: bool = True,
        chunk_size: int = 1000,
        truncation: float = 1e-4,
        mcmc: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Any:
        r"""Fit for one observation ``x_obs`` in ``rounds`` rounds of simulations that share ``num_simulations``
        (failed ones count): round 0 from the prior, each later one from a proposal built from the estimator
        trained so far, the estimator trained afresh on all rounds' pairs after each round
        (:mod:`~simgen.estimators.sequential`).

        A :class:`~simgen.PosteriorEstimator` runs truncated sequential NPE (TSNPE, Deistler et al. 2022,
        arXiv:2210.04815): later rounds draw θ from the prior truncated to the current posterior's
        highest-probability region of mass 1 − ``truncation``, so the plain NPE loss stays valid; it returns
        itself (``sample(n, x_obs)``, ``log_prob(θ, x_obs)``), trustworthy at ``x_obs`` only. A
        :class:`~simgen.LikelihoodEstimator` or :class:`~simgen.RatioEstimator` runs sequential NLE / NRE
        (Papamakarios et al. 2019, arXiv:1805.07226; Durkan et al. 2020, arXiv:2002.03712): later rounds draw θ
        from the current MCMC posterior (options ``mcmc``); it returns ``posterior(**mcmc)``.

        ``store="seq.h5"`` keeps round r in the campaign store ``seq.h5/round-r`` (its proposal in the metadata,
        log q(θ) per row; a round complete there is read back, not simulated again). ``seed`` fixes every
        round's simulations and training; ``settings`` are the training settings of every fit (``max_epochs=``,
        ...). What each round did is in ``sequential_rounds``.
        """
        self.sequential_rounds = sequential.fit_rounds(
            self, simulator, x_obs, num_simulations=num_simulations, rounds=rounds, store=store, seed=seed,
            progress=progress, chunk_size=chunk_size, settings=settings,
            proposal_options={"truncation": truncation, "mcmc": dict(mcmc or {})})
        return self.sequential_result({"progress": progress, **(mcmc or {})})

    def sequential_proposal(self, x_obs: Tensor, label: str, *, truncation: float,
                            mcmc: dict[str, Any]) -> Distribution:
        """The next round's proposal: draws of the current MCMC posterior for ``x_obs`` (a likelihood's or a
        ratio's; a posterior estimator truncates its prior instead)."""
        return sequential.PosteriorProposal(self.posterior(**{**mcmc, "progress": False}), x_obs, self.prior, label)

    def sequential_result(self, mcmc: dict[str, Any]) -> Any:
        """What :meth:`fit_sequential` returns: the MCMC posterior (a posterior estimator: itself)."""
        return self.posterior(**mcmc)

    # ----------------------------------------------------------------- saving and loading
    def config(self) -> dict[str, Any]:
        """JSON description of the fitted estimator (family, shapes, kinds); see :mod:`simgen.io`."""
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
            "gold": self.gold,
            "gold_weight": self.gold_weight,
            "auto": self.choice.to_dict() if self.choice is not None else None,
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], *, prior: Distribution | None, embedding: nn.Module,
        device: str | torch.device | None = None,
    ) -> Estimator:
        """An estimator with a fresh density of the shapes and kinds ``config`` describes (weights not loaded):
        the loader's half of :meth:`config`."""
        est = cls(prior, make_model(config["family"], config["family_config"]), embedding=embedding,
                  x_kind=config["x_kind"], discrete=config["discrete"], device=device,
                  linear_baseline=config.get("linear_baseline", False), support_map=config.get("support_map", "logit"))
        est.restore_options(config)
        est.theta_shape, est.x_shape = tuple(config["theta_shape"]), tuple(config["x_shape"])
        est.gold, est.gold_weight = check_gold_options(config.get("gold"),
                                                       config.get("gold_weight", DEFAULT_GOLD_WEIGHT), cls.GOLD_MODES)
        est.density = est.make_density(*est.shapes())
        if config.get("auto"):  # what model="auto" chose; fitting the loaded estimator again keeps that family
            est.choice = Choice.from_dict(config["auto"])
        if config.get("history"):
            est.history = TrainingHistory(**config["history"])
        return est

    def restore_options(self, config: dict[str, Any]) -> None:
        """A subclass's own settings as :meth:`config` saved them, set before :meth:`from_config` builds the
        density: none here."""

    def load_state(self, state: dict[str, Tensor], validity_state: dict[str, Tensor],
                   validity_config: dict[str, Any] | None) -> None:
        """Load saved weights into the density built by :meth:`from_config` (and its validity classifier).

        Raises:
            ValueError: the weights do not fit the model.
        """
        try:
            self.density.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"the weights do not fit the model described by its config ({e})") from e
        self.density = self.density.to(self.device).eval()
        if validity_config:
            validity = ValidityClassifier(**validity_config)
            try:
                validity.load_state_dict(validity_state, strict=True)
            except RuntimeError as e:
                raise ValueError(f"the validity classifier's weights do not fit its config ({e})") from e
            self.validity = validity.to(self.device).eval()

    def saved_emulator(self) -> Estimator | None:
        """An emulator saved inside this estimator's file (:func:`simgen.io.save`), which it needs to answer:
        none here."""
        return None

    def attach_emulator(self, emulator: Estimator) -> None:
        """Take back the emulator :meth:`saved_emulator` gave, when the file is loaded (:func:`simgen.load`)."""
        raise ValueError(f"a {self.direction} estimator keeps no emulator in its file")

    def save(self, path: str) -> None:
        """Write weights, a JSON config and the format version to ``path`` (see :func:`simgen.load`)."""
        from ..io import save

        save(self, path)

    # ----------------------------------------------------------------- sampling
    def _sample_chunks(self, n: int, c: Tensor, generator: torch.Generator | None,
                       options: dict[str, Any] | None = None, chunk: int = 100_000) -> Tensor:
        """``n`` samples per context row, drawn ``chunk`` rows at a time: ``[m, n, *y_shape]`` on the CPU;
        ``options`` are the family's sampling options (an ODE family's ``method=``, ``steps=``)."""
        check_positive_int(n)
        out = []
        with torch.no_grad():
            c = c.to(self.device)
            for s in range(0, n, chunk):
                out.append(self.density.sample(min(chunk, n - s), c, generator=generator, **(options or {})).cpu())
        return torch.cat(out, dim=1)

    def _log_prob(self, y: Tensor, c: Tensor, names: tuple[str, str], generator: torch.Generator | None,
                  options: dict[str, Any], with_se: bool = False, *, batch_size: int | None = None,
                  progress: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The fitted density's ``log_prob`` (or ``log_prob_with_se``) at rows of y and c, one row broadcast,
        ``batch_size`` rows per call (``None``: all), with a progress bar over the rows when ``progress``."""
        y, c = broadcast_rows(y, c, *names)
        density = self._require_fitted().density
        method = density.log_prob_with_se if with_se else density.log_prob
        rows = y.shape[0]
        step = max(rows, 1) if batch_size is None else check_positive_int(batch_size, "batch_size")
        parts = []
        with torch.no_grad(), tqdm(total=rows, desc="log_prob", unit="row", disable=not progress,
                                   leave=False) as bar:
            for s in range(0, max(rows, 1), step):  # one call even without rows: the family's empty answer
                out = method(y[s : s + step].to(self.device), c[s : s + step].to(self.device), generator=generator,
                             **options)
                parts.append(tuple(t.cpu() for t in out) if with_se else (out.cpu(),))
                bar.update(max(min(step, rows - s), 0))
        joined = tuple(torch.cat(t) for t in zip(*parts, strict=True))
        return joined if with_se else joined[0]


def training_config(
    config: TrainingConfig | None, settings: dict[str, Any], defaults: dict[str, Any] | None = None
) -> TrainingConfig:
    """``config`` (else a :class:`TrainingConfig` from the family's ``defaults``) with ``settings`` replaced."""
    config = config or TrainingConfig(**(defaults or {}))
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = set(settings) - names
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}; allowed: {sorted(names)}")
    return dataclasses.replace(config, **settings)
