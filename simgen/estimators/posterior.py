"""The posterior direction: q_φ(θ | x) ≈ p(θ | x), trained on (θ, x) ~ p(θ) p(x | θ)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..io import register_estimator
from ..models import ConditionalDensity
from ..training import TrainingConfig, TrainingHistory
from ..transforms import Dequantize, Standardize, SupportBijection
from ..utils import check_positive_int
from . import ingest, sequential
from .base import Estimator, infer_x_kind, x_context_parts

__all__ = ["PosteriorEstimator"]


@register_estimator
class PosteriorEstimator(Estimator):
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
    y_is_theta = True

    def __init__(self, prior: Distribution, model: str | ConditionalDensity = "flow", **kwargs: Any) -> None:
        if prior is None:
            raise ValueError("PosteriorEstimator needs the prior the simulations were drawn from")
        super().__init__(prior, model, **kwargs)

    @property
    def y_kind(self) -> str:
        return "vector"

    # ----------------------------------------------------------------- the direction: y = θ, c = x
    def split(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return theta, x

    def y_parts(self, y_shape: tuple[int, ...], family: ConditionalDensity) -> tuple[
            SupportBijection | None, Dequantize | None, Standardize]:
        """θ is mapped from the prior's support onto R^d, then standardised."""
        support = SupportBijection(self.prior, self.support_map) if self.prior is not None else None
        return support, None, Standardize(y_shape, enabled=family.standardize_y)

    def context_parts(self, c_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
        """x is standardised (per channel for maps; per feature for sets, the 0/1 mask left as it is) and
        embedded by the default network for its kind."""
        return x_context_parts(self.x_kind, c_shape, self.embedding)

    def sequential_proposal(self, x_obs: Tensor, label: str, *, truncation: float, mcmc: dict[str, Any],
                            num_draws: int = 10_000) -> Distribution:
        """TSNPE's proposal: the prior truncated to q(θ | x_obs)'s region of mass 1 − ``truncation``, its
        threshold from ``num_draws`` draws of q (see :func:`~simgen.estimators.sequential.truncated_prior`)."""
        x_obs = self.check_x(x_obs, "x_obs")

        def log_q(theta: Tensor) -> Tensor:
            return self.log_prob(theta, x_obs)

        return sequential.truncated_prior(self.prior, log_q, self.sample(num_draws, x_obs), truncation, label)

    def sequential_result(self, mcmc: dict[str, Any]) -> PosteriorEstimator:
        return self

    def importance_weights(self, proposal: Distribution) -> Callable[[Tensor], Tensor]:
        """θ ↦ p(θ) / q(θ) (0 outside the prior's support), float64."""
        return ingest.importance_weights(self.prior, proposal)

    _importance = importance_weights  # the former private name

    def store_weights(self, store: Any, proposal: Distribution | None) -> Callable[[Tensor], Tensor] | None:
        """Importance weights for a store: ``None`` when it was drawn from the prior; refused when it was not,
        unless ``proposal`` (the distribution it was drawn from) is given."""
        return ingest.store_weights(store, self.prior, proposal)

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
        checkpoint: str | os.PathLike | None = None,
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

        ``checkpoint="fit.ckpt"`` saves the training state after every epoch and resumes from it when the file
        exists (see :func:`simgen.training.train`): a pre-empted job run again continues where it stopped.
        Under ``torchrun --nproc-per-node N`` training is data-parallel over the N processes, each streaming
        its own shard of a store's chunks (:mod:`simgen.training.distributed`).
        """
        seed = self.run_seed(seed, checkpoint)
        if x is None:
            return self._fit_store(theta, config, seed, progress, settings, max_memory_gb, proposal, checkpoint)[0]
        return self._fit_pairs(theta, x, config, seed, progress, settings,
                               self.importance_weights(proposal) if proposal is not None else None, checkpoint)

    def _fit_pairs(
        self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
        settings: dict[str, Any], weight_fn: Callable[[Tensor], Tensor] | None = None, checkpoint: Any = None,
    ) -> TrainingHistory:
        theta, x = self.check_pairs(theta, x)
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
        return self._fit((theta, x), config, seed, progress, settings, weights, checkpoint)

    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """``n`` posterior draws for one observation ``x_obs`` (``[*x_shape]`` or ``[1, *x_shape]``):
        ``[n, d_theta]``; ``options`` are the family's sampling options (a diffusion's ``method="sde"``,
        ``steps=``)."""
        x = self.check_x(x_obs, "x_obs")
        if x.shape[0] != 1:
            raise ValueError(
                f"sample takes one observation; x_obs has {x.shape[0]} rows. Use sample_batched(n, xs) for "
                "several observations (a PosteriorEstimator does not combine i.i.d. observations)"
            )
        return self.sample_batched(n, x, generator=generator, **options)[0]

    def sample_batched(self, n: int, xs: Any, *, generator: torch.Generator | None = None,
                       **options: Any) -> Tensor:
        """``n`` posterior draws for each of ``m`` observations ``xs`` ``[m, *x_shape]``: ``[m, n, d_theta]``."""
        check_positive_int(n)
        return self._sample_chunks(n, self.check_x(xs, "xs"), generator, options)

    def log_prob(self, theta: Any, x: Any, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """log q(θ[i] | x[i]) ``[n]``; one observation x is broadcast over θ; −inf outside the support.
        ``options`` go to the family's ``log_prob`` (a CNF's or diffusion's ``num_probes=``, ``exact=``)."""
        return self._log_prob(self.check_theta(theta), self.check_x(x), ("theta", "x"), generator, options)

    def log_prob_with_se(self, theta: Any, x: Any, *, generator: torch.Generator | None = None,
                         **options: Any) -> tuple[Tensor, Tensor]:
        """(log q̂(θ[i] | x[i]), its standard error), both ``[n]``: 0 for an exact family, the trace estimator's
        for an ODE family (``ConditionalDensity.log_prob_with_se``); arguments as :meth:`log_prob`."""
        return self._log_prob(self.check_theta(theta), self.check_x(x), ("theta", "x"), generator, options, True)
