"""A family wrapped in the fixed pre-processing an estimator owns: p(y | c) in the data's own units."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..transforms import Dequantize, LinearResidual, LogPositive, Standardize, SupportBijection
from ..utils import check_positive_int
from .base import ConditionalDensity

__all__ = ["TransformedDensity"]


class TransformedDensity(ConditionalDensity):
    r"""p(y | c) = p_u(u | e(s(m(c)))) · |det ∂u/∂y|, with u = R(S(B⁻¹(y)); s(m(c))).

    B is the prior-support bijection (posteriors over bounded θ; identity otherwise), S a standardisation, m a
    fixed map of the context (a likelihood's log of positive θ, :class:`~simgen.transforms.LogPositive`;
    identity otherwise), s the context's standardisation, R the optional linear-regression residual on s(m(c))
    (vectors; see :class:`~simgen.transforms.LinearResidual`) and e the embedding network. The wrapped family only ever
    sees standardised, unconstrained y and embedded contexts; this class carries the Jacobian so that
    ``log_prob`` is a density in y's own units, and maps samples back so that they never leave the support.
    Integer-valued dimensions of y are dequantised while training (see :class:`~simgen.transforms.Dequantize`).

    It is itself a :class:`ConditionalDensity` on raw ``[n, *y_shape]`` / ``[n, *c_shape]`` tensors, so the
    trainer, MCMC and diagnostics treat every family alike.
    """

    family = "transformed"

    @property
    def log_prob_kind(self) -> str:  # type: ignore[override]
        """The wrapped family's (the fixed maps around it are exact)."""
        return self.density.log_prob_kind

    def __init__(
        self,
        density: ConditionalDensity,
        y_standardize: Standardize,
        c_standardize: Standardize | None,
        embedding: nn.Module | None,
        support: SupportBijection | None = None,
        dequantize: Dequantize | None = None,
        residual: LinearResidual | None = None,
        context_map: LogPositive | None = None,
    ) -> None:
        super().__init__()
        self.density = density
        self.y_standardize = y_standardize
        self.c_standardize = c_standardize
        self.embedding = embedding
        self.support = support
        self.dequantize = dequantize
        self.residual = residual
        self.context_map = context_map
        self.y_shape = density.y_shape
        self.context_features = density.context_features

    def _build(self) -> None:  # built from built parts
        raise RuntimeError("TransformedDensity wraps an already built family")

    def config(self) -> dict[str, Any]:
        return self.density.config()

    def on_epoch(self, epoch: int) -> None:
        self.density.on_epoch(epoch)

    def mapped_context(self, c: Tensor | None) -> Tensor | None:
        """m(c): the context through its fixed map, not yet standardised (what s's statistics are fitted on)."""
        if c is None or self.context_map is None:
            return c
        return self.context_map(c)

    def standardized_context(self, c: Tensor | None) -> Tensor | None:
        """s(m(c)): the mapped and standardised, not yet embedded context ``[n, *c_shape]``."""
        c = self.mapped_context(c)
        if c is None or self.c_standardize is None:
            return c
        return self.c_standardize(c)

    def embed(self, c_std: Tensor | None) -> Tensor | None:
        """e(s(c)) ``[n, features]`` from the standardised context (``None`` for unconditional models)."""
        if c_std is None:
            return None
        return self.embedding(c_std) if self.embedding is not None else c_std.reshape(c_std.shape[0], -1)

    def context(self, c: Tensor | None) -> Tensor | None:
        """Embedded, standardised context ``[n, features]`` (``None`` for unconditional models)."""
        return self.embed(self.standardized_context(c))

    def to_latent(self, y: Tensor, c_std: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """u = R(S(B⁻¹(y)); s(c)) and log |det ∂u/∂y| ``[n]``; ``c_std`` is s(c), needed with a residual."""
        logdet = y.new_zeros(y.shape[0])
        if self.support is not None:
            logdet = logdet + self.support.log_abs_det_jacobian(y)
            y = self.support(y)
        logdet = logdet + self.y_standardize.log_abs_det_jacobian(y)
        u = self.y_standardize(y)
        if self.residual is not None and c_std is not None:
            logdet = logdet + self.residual.log_abs_det_jacobian(u)
            u = self.residual(u, c_std)
        return u, logdet

    def from_latent(self, u: Tensor, c_std: Tensor | None = None) -> Tensor:
        """y from u ``[m, k, *y_shape]`` drawn under the standardised contexts ``c_std`` ``[m, ...]``."""
        if self.residual is not None and c_std is not None:
            u = self.residual.inverse(u, c_std)
        lead = u.shape[: u.dim() - len(self.y_shape)]
        y = self.y_standardize.inverse(u.reshape(-1, *self.y_shape))
        if self.support is not None:
            y = self.support.inverse(y)
        return y.reshape(*lead, *self.y_shape)

    def initialize(self, y: Tensor, c: Tensor | None) -> None:
        """The family's data-dependent start (:meth:`ConditionalDensity.initialize`) from raw rows y, c, passed
        through the fitted pre-processing (the standardisations must be fitted first)."""
        with torch.no_grad():
            if self.dequantize is not None:
                y = self.dequantize.midpoint(y)
            c_std = self.standardized_context(c)
            u, _ = self.to_latent(y, c_std)
            e = self.embed(c_std)
        self.density.initialize(u, e)

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        if self.dequantize is not None and self.training:
            y = self.dequantize.noise(y)
        c_std = self.standardized_context(c)
        u, _ = self.to_latent(y, c_std)
        return self.density.loss(u, self.embed(c_std))

    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """log p(y[i] | c[i]) ``[n]``; −inf for rows outside the prior's support; ``options`` go to the family."""
        u, e, logdet, inside = self._latent_rows(y, c)
        logp = self.density.log_prob(u, e, generator=generator, **options) + logdet
        return logp if inside is None else torch.where(inside, logp, torch.full_like(logp, -torch.inf))

    def log_prob_with_se(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None,
                         **options: Any) -> tuple[Tensor, Tensor]:
        """The family's (log p̂, standard error) in y's units: the Jacobian is exact, so the error is the family's
        (0 for rows outside the prior's support, where log p = −inf exactly)."""
        u, e, logdet, inside = self._latent_rows(y, c)
        logp, se = self.density.log_prob_with_se(u, e, generator=generator, **options)
        logp = logp + logdet
        if inside is None:
            return logp, se
        return torch.where(inside, logp, torch.full_like(logp, -torch.inf)), torch.where(inside, se, 0.0)

    def _latent_rows(self, y: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """(u, e(s(c)), log |det ∂u/∂y|, rows inside the prior's support or ``None``) for ``log_prob``."""
        inside = None
        if self.support is not None:
            inside = self.support.contains(y)
        if self.dequantize is not None:
            y = self.dequantize.midpoint(y)
        c_std = self.standardized_context(c)
        u, logdet = self.to_latent(y, c_std)
        return u, self.embed(c_std), logdet, inside

    def sample(self, n: int, c: Tensor | None, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """``n`` draws per raw context row ``c`` ``[m, *c_shape]``: ``[m, n, *y_shape]``.

        Overrides :meth:`ConditionalDensity.sample`, which would repeat each raw context ``n`` times before the
        embedding: here the ``m`` contexts are embedded once and the family repeats the embedded rows.
        """
        check_positive_int(n)
        c_std = self.standardized_context(c)
        y = self.from_latent(self.density.sample(n, self.embed(c_std), generator=generator, **options), c_std)
        if self.dequantize is not None:
            y = self.dequantize.round(y.reshape(-1, *self.y_shape)).reshape(y.shape)
        return y
