"""A family wrapped in the fixed pre-processing an estimator owns: p(y | c) in the data's own units."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..transforms import Dequantize, Standardize, SupportBijection
from .base import ConditionalDensity

__all__ = ["TransformedDensity"]


class TransformedDensity(ConditionalDensity):
    r"""p(y | c) = p_u(u | e(s(c))) · |det ∂u/∂y|, with u = S(B⁻¹(y)).

    B is the prior-support bijection (posteriors over bounded θ; identity otherwise), S a standardisation, s
    the context's standardisation and e the embedding network. The wrapped family only ever sees standardised,
    unconstrained y and embedded contexts; this class carries the Jacobian so that ``log_prob`` is a density
    in y's own units, and maps samples back so that they never leave the support. Integer-valued dimensions
    of y are dequantised while training (see :class:`~simgen.transforms.Dequantize`).

    It is itself a :class:`ConditionalDensity` on raw ``[n, *y_shape]`` / ``[n, *c_shape]`` tensors, so the
    trainer, MCMC and diagnostics treat every family alike.
    """

    family = "transformed"

    def __init__(
        self,
        density: ConditionalDensity,
        y_standardize: Standardize,
        c_standardize: Standardize | None,
        embedding: nn.Module | None,
        support: SupportBijection | None = None,
        dequantize: Dequantize | None = None,
    ) -> None:
        super().__init__()
        self.density = density
        self.y_standardize = y_standardize
        self.c_standardize = c_standardize
        self.embedding = embedding
        self.support = support
        self.dequantize = dequantize
        self.y_shape = density.y_shape
        self.context_features = density.context_features

    def _build(self) -> None:  # built from built parts
        raise RuntimeError("TransformedDensity wraps an already built family")

    def config(self) -> dict[str, Any]:
        return self.density.config()

    def on_epoch(self, epoch: int) -> None:
        hook = getattr(self.density, "on_epoch", None)
        if hook is not None:
            hook(epoch)

    def context(self, c: Tensor | None) -> Tensor | None:
        """Embedded, standardised context ``[n, features]`` (``None`` for unconditional models)."""
        if c is None:
            return None
        c = self.c_standardize(c) if self.c_standardize is not None else c
        return self.embedding(c) if self.embedding is not None else c.reshape(c.shape[0], -1)

    def to_latent(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """u = S(B⁻¹(y)) and log |det ∂u/∂y| ``[n]``."""
        logdet = y.new_zeros(y.shape[0])
        if self.support is not None:
            logdet = logdet + self.support.log_abs_det_jacobian(y)
            y = self.support(y)
        logdet = logdet + self.y_standardize.log_abs_det_jacobian(y)
        return self.y_standardize(y), logdet

    def from_latent(self, u: Tensor) -> Tensor:
        y = self.y_standardize.inverse(u)
        if self.support is not None:
            y = self.support.inverse(y)
        return y

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        if self.dequantize is not None and self.training:
            y = self.dequantize.noise(y)
        u, _ = self.to_latent(y)
        return self.density.loss(u, self.context(c))

    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        """log p(y[i] | c[i]) ``[n]``; −inf for rows outside the prior's support."""
        inside = None
        if self.support is not None:
            inside = self.support.contains(y)
        if self.dequantize is not None:
            y = self.dequantize.midpoint(y)
        u, logdet = self.to_latent(y)
        logp = self.density.log_prob(u, self.context(c), generator=generator) + logdet
        if inside is not None:
            logp = torch.where(inside, logp, torch.full_like(logp, -torch.inf))
        return logp

    def sample(self, n: int, c: Tensor | None, *, generator: torch.Generator | None = None) -> Tensor:
        u = self.density.sample(n, self.context(c), generator=generator)
        lead = u.shape[: u.dim() - len(self.y_shape)]
        y = self.from_latent(u.reshape(-1, *self.y_shape))
        if self.dequantize is not None:
            y = self.dequantize.round(y)
        return y.reshape(*lead, *self.y_shape)
