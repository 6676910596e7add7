"""The one interface of every model family: a conditional density p_φ(y | c)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..utils import check_positive_int

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

    A family implements :meth:`_build`, :meth:`config`, :meth:`loss`, :meth:`log_prob` and :meth:`_sample`
    (draws for rows whose contexts are already repeated); :meth:`sample` does the checks and the reshaping once
    for all. Every optional hook is declared here with its default (:attr:`data_kinds`, :attr:`standardize_y`,
    :attr:`log_prob_kind`, :meth:`log_prob_with_se`, :meth:`on_epoch`, :meth:`check_context`, :attr:`device`),
    so callers never probe for attributes.
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
    #: whether the estimator standardises y before this family sees it (a family of binary data, such as a
    #: Bernoulli VAE, models y as it is)
    standardize_y: bool = True
    #: how :meth:`log_prob` is computed: ``"exact"`` (a change of variables, or a closed form), ``"ode"`` (an ODE
    #: integral per call: the instantaneous change of variables, costly and, for large y, stochastic) or
    #: ``"importance"`` (an importance-weighted estimate, biased low, such as a VAE's IWAE bound); diagnostics
    #: choose their method from it (HPD coverage is skipped for ``"ode"``)
    log_prob_kind: ClassVar[str] = "exact"

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
    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """log p(y[i] | c[i]) for each row: ``[n]``; ``options`` are a stochastic family's estimation options
        (an ODE family's ``num_probes=``, ``exact=``, a VAE's ``num_samples=``)."""

    def sample(self, n: int, c: Tensor | None, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """``n`` draws per context row: ``[m, n, *y_shape]`` (``[n, *y_shape]`` when ``c`` is ``None``).

        Checks ``n`` and ``c``, repeats each context row ``n`` times and hands the ``m · n`` rows to
        :meth:`_sample`; ``options`` are the family's sampling options (an ODE family's ``method=``, ...).
        """
        self._check_built()
        check_positive_int(n)
        self.check_context(c)
        m = 1 if c is None else c.shape[0]
        context = None if c is None else c.repeat_interleave(n, dim=0)
        y = self._sample(m * n, context, generator=generator, **options).reshape(m, n, *self.y_shape)
        return y[0] if c is None else y

    def _sample(self, rows: int, context: Tensor | None, *, generator: torch.Generator | None = None,
                **options: Any) -> Tensor:
        """One draw per context row: ``[rows, *y_shape]`` given ``context`` ``[rows, f]`` (or ``None``).

        Every family implements this; a wrapper that must see the contexts before they are repeated (the
        estimator's :class:`~simgen.models.TransformedDensity` embeds each one once) overrides :meth:`sample`.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither sample nor _sample")

    # ----------------------------------------------------------------- optional hooks, with their defaults
    def log_prob_with_se(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None,
                         **options: Any) -> tuple[Tensor, Tensor]:
        """(log p̂(y[i] | c[i]), its standard error), both ``[n]``.

        An exact family's ``log_prob`` has no estimation error, so its standard error is 0; a family whose
        ``log_prob`` is an estimate overrides this (an ODE family's Hutchinson trace: the spread over probe
        groups), and one that cannot say refuses rather than report 0.
        """
        if self.log_prob_kind != "exact":
            raise NotImplementedError(
                f"{type(self).__name__}'s log_prob is an estimate ({self.log_prob_kind!r}) without a standard error")
        logp = self.log_prob(y, c, generator=generator, **options)
        return logp, torch.zeros_like(logp)

    def on_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch (a schedule such as a KL warm-up); nothing by default."""

    @classmethod
    def training_defaults_for(cls, kind: str) -> dict[str, Any]:
        """The training settings this family starts from for y of ``kind`` (``"vector"``, ``"map"``, ...):
        ``training_defaults``, unless the family trains some kind of data differently."""
        return dict(cls.training_defaults)

    def check_context(self, c: Tensor | None, rows: int | None = None) -> None:
        """A clear error unless ``c`` is ``[rows, context_features]`` (any number of rows when ``rows`` is
        ``None``), or ``None`` for a family built without a context."""
        if (c is None) != (self.context_features is None):
            expected = "c=None (it was built without a context)" if c is not None else "a context c"
            raise ValueError(f"this {type(self).__name__} needs {expected}")
        if c is not None and (c.dim() != 2 or c.shape[1] != self.context_features
                              or (rows is not None and c.shape[0] != rows)):
            lead = "n" if rows is None else str(rows)
            raise ValueError(f"c must have shape [{lead}, {self.context_features}]; got {list(c.shape)}")

    @property
    def device(self) -> torch.device:
        """Where the family's parameters (else buffers) live; the CPU for a family without either."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _check_built(self) -> None:
        if not self.built:
            raise RuntimeError(f"{type(self).__name__} is not built: call .build(y_shape, context_features)")
