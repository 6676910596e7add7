"""The one interface of every model family: a conditional density p_φ(y | c)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["ConditionalDensity"]


class ConditionalDensity(nn.Module, abc.ABC):
    r"""A conditional density p_φ(y | c), read as a latent-variable model of y given a context c.

    Posterior estimation is y = θ, c = x; likelihood emulation is y = x, c = θ; c = ``None`` is an
    unconditional model. A family is constructed from hyper-parameters only; :meth:`build` then creates its
    networks for the data it will see (the estimator calls it, and owns embedding, standardisation and
    bijections).

    Shapes: ``y`` is ``[n, *y_shape]``; ``c`` is ``[n, context_features]`` (already embedded) or ``None``.
    ``sample(n, c)`` with ``c`` ``[m, context_features]`` returns ``[m, n, *y_shape]``; with ``c=None``
    ``[n, *y_shape]``.

    ``generator`` makes a stochastic ``log_prob`` (Hutchinson probes, IWAE draws) a deterministic function of
    its inputs, so that an MCMC chain can freeze it and never sample a noisy target.
    """

    #: registry name of the family, used in saved configs
    family: str = ""
    #: :class:`~simgen.training.TrainingConfig` settings this family trains best with; an estimator starts from
    #: them when no ``config=`` is given, and a user's keyword settings override them
    training_defaults: ClassVar[dict[str, Any]] = {}
    #: how a posterior estimator maps a box prior onto R^d for this family (``"logit"`` or ``"probit"``, see
    #: :class:`~simgen.transforms.SupportBijection`); the estimator's ``support_map=`` overrides it
    support_map: ClassVar[str] = "logit"
    #: the kinds of y this family models (``"vector"``, ``"map"``, ``"set"``, ``"sequence"``): a posterior's y is
    #: θ, a vector; a likelihood's y is x, of the estimator's ``x_kind``
    data_kinds: ClassVar[frozenset[str]] = frozenset({"vector", "map", "set", "sequence"})

    def __init__(self) -> None:
        super().__init__()
        self.y_shape: tuple[int, ...] | None = None
        self.context_features: int | None = None

    @property
    def built(self) -> bool:
        return self.y_shape is not None

    def build(self, y_shape: tuple[int, ...], context_features: int | None) -> ConditionalDensity:
        """Create the networks for y of shape ``y_shape`` and ``context_features`` context features."""
        self.y_shape = tuple(int(s) for s in y_shape)
        self.context_features = None if context_features is None else int(context_features)
        self._build()
        return self

    @abc.abstractmethod
    def _build(self) -> None: ...

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments: ``type(self)(**self.config())`` rebuilds the family."""

    @abc.abstractmethod
    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        """Scalar training objective on a batch ``y`` ``[n, *y_shape]``, ``c`` ``[n, f]``."""

    @abc.abstractmethod
    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        """log p(y[i] | c[i]) for each row: ``[n]``."""

    @abc.abstractmethod
    def sample(self, n: int, c: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws per context row: ``[m, n, *y_shape]`` (``[n, *y_shape]`` when ``c`` is ``None``)."""

    def _check_built(self) -> None:
        if not self.built:
            raise RuntimeError(f"{type(self).__name__} is not built: call .build(y_shape, context_features)")
