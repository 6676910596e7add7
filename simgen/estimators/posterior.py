"""The posterior direction: q_φ(θ | x) ≈ p(θ | x), trained on (θ, x) ~ p(θ) p(x | θ)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .. import nets
from ..io import register_estimator
from ..models import ConditionalDensity
from ..training import TrainingConfig, TrainingHistory
from ..transforms import Dequantize, Standardize, SupportBijection
from ..utils import as_tensor, check_positive_int, check_rows
from . import ingest, sequential
from .augment import emulated_pairs, fit_emulator
from .auto import AUTO, EMULATED_PER_PAIR, emulated_for
from .base import Estimator, infer_x_kind, x_context_parts
from .likelihood import LikelihoodEstimator

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
        model: ``"auto"`` (the default: the family, its options and training settings chosen from the data when
            fitting, :func:`~simgen.estimators.auto.choose`, recorded in :attr:`choice` and the saved file), a
            registered family's name (``"flow"``, ``"cnf"``, ...) or a family object such as ``Flow(kind="maf")``.
        iid: amortise over sets of i.i.d. observations: x rows are ``[M, *row_shape]``, M i.i.d. draws per θ
            (``simgen.simulate(..., iid=M)``), embedded by a permutation-invariant :class:`~simgen.nets.
            SubsetDeepSets` trained on random leading subsets, so that one model gives p(θ | x_1, …, x_m) for
            every m from 1 to M: ``sample(n, x_obs)`` takes ``x_obs`` ``[m, *row_shape]``, ``sample_batched(n,
            xs)`` takes ``[B, m, *row_shape]``. The embedding is chosen automatically (no ``embedding=``).

    Other Parameters:
        embedding (nn.Module | None): module mapping x ``[n, *x_shape]`` to features ``[n, f]`` (default from
            ``x_kind``).
        x_kind (str | None): ``"vector"``, ``"map"``, ``"set"`` or ``"sequence"`` (default: from ``simulator`` or
            x's shape).
        discrete (Sequence[int] | None): indices of integer-valued x dimensions (only matters for emulators).
        simulator (Any | None): optional simulator whose ``x_kind`` and ``x_discrete`` fill the above.
        device (str | torch.device | None): where to train and sample (CUDA when present).
        linear_baseline (bool): when y and the context are vectors, model y's residual from its least-squares linear
            regression on the context (:class:`~simgen.transforms.LinearResidual`), so that the family starts
            from the best linear-Gaussian model and only learns the rest. Exact, cheap, and worth most where the
            truth is nearly linear-Gaussian; ``False`` models the standardised y directly.
        support_map (str | None): how a box prior's support is mapped onto R^d, ``"logit"`` or ``"probit"``
            (:class:`~simgen.transforms.SupportBijection`); default the family's (flows and VAEs logit,
            diffusion and CNF probit, whose Gaussian tails those families follow).
        gold (str | None): ``"score"``: SCANDAL for the posterior (Brehmer et al. 2020, arXiv:1805.12244),
            trained on the joint score t(x, z | θ) of each simulation (``simgen.simulate(..., gold=True)``): the
            loss gains α E‖s ⊙ (∇_θ log q(θ | x) − t − ∇_θ log p(θ))‖², s θ's standard deviation, since
            ∇_θ log p(θ | x) = ∇_θ log p(x | θ) + ∇_θ log p(θ) (:mod:`simgen.estimators.gold`). Needs a family
            with an exact ``log_prob`` (a flow); others are refused, as is ``iid=True``, and so are ``"ratio"`` and
            ``"ratio+score"`` (the ratio term is :class:`~simgen.RatioEstimator`'s). Default ``None``.
        gold_weight (float): α (default :data:`~simgen.estimators.gold.DEFAULT_GOLD_WEIGHT`, 0.2).
    """

    direction = "posterior"
    y_is_theta = True

    def __init__(self, prior: Distribution, model: str | ConditionalDensity = AUTO, *, iid: bool = False,
                 **kwargs: Any) -> None:
        if prior is None:
            raise ValueError("PosteriorEstimator needs the prior the simulations were drawn from")
        if not isinstance(iid, bool):
            raise ValueError(f"iid must be True or False; got {iid!r}")
        if iid and (kwargs.get("embedding") is not None or kwargs.get("x_kind") not in (None, "set")):
            raise ValueError("iid=True embeds the sets of i.i.d. draws itself (nets.SubsetDeepSets): leave "
                             "embedding= and x_kind= out")
        if iid and kwargs.get("gold") is not None:
            raise ValueError("gold='score' with iid=True is not supported: the score of a set is the sum of its "
                             "draws' scores, which this estimator does not mine")
        super().__init__(prior, model, **kwargs)
        self.iid = iid
        #: the emulator the last fit drew emulated pairs from (given or fitted; not saved), else ``None``
        self.emulator: LikelihoodEstimator | None = None
        #: with ``iid``: the largest set size M trained on and the shape of one draw
        self.iid_size: int | None = None
        self.row_shape: tuple[int, ...] | None = None

    @property
    def y_kind(self) -> str:
        return "vector"

    @property
    def iid_sets(self) -> bool:
        return self.iid

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
        if self.iid and self.embedding is None:
            return nets.SubsetDeepSets(c_shape), nets.SetStandardize(c_shape, masked=True)
        return x_context_parts(self.x_kind, c_shape, self.embedding)

    # ----------------------------------------------------------------- sets of i.i.d. observations
    def _as_sets(self, x: Tensor, size: int, name: str) -> Tensor:
        """Sets of i.i.d. draws ``[B, m, *row_shape]`` (1 ≤ m ≤ ``size``) in the padded set layout the network
        reads: ``[B, size, F + 1]``, each draw flattened to F features, then its 0/1 mask (0: padding)."""
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape [B, m, *row_shape] (m i.i.d. draws per set); got "
                             f"{list(x.shape)}")
        m = x.shape[1]
        if self.row_shape is not None and tuple(x.shape[2:]) != self.row_shape:
            raise ValueError(f"{name}'s draws must have shape {list(self.row_shape)}; got {list(x.shape[2:])} "
                             f"({name} is [B, m, *row_shape])")
        if not 1 <= m <= size:
            raise ValueError(f"{name} has sets of m = {m} i.i.d. draws; this posterior was trained on sets of 1 to "
                             f"{size}" + (" (m > M: simulate with a larger iid= and refit)" if m > size else ""))
        out = x.new_zeros(x.shape[0], size, math.prod(x.shape[2:]) + 1)
        out[:, :m, :-1] = x.reshape(x.shape[0], m, -1)
        out[:, :m, -1] = 1.0
        return out

    def _iid_obs(self, x_obs: Any, name: str, batched: bool) -> Tensor:
        x = as_tensor(x_obs, name)
        if not batched:
            x = x[None]
        return check_rows(self._as_sets(x, self.iid_size, name), name)

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.iid:
            config["iid"] = {"size": self.iid_size, "row_shape": list(self.row_shape)}
        config["num_emulated"] = self.num_emulated
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], *, prior: Distribution | None, embedding: nn.Module,
                    device: str | torch.device | None = None) -> PosteriorEstimator:
        est = super().from_config(config, prior=prior, embedding=embedding, device=device)
        if config.get("iid"):
            est.iid, est.iid_size, est.row_shape = True, config["iid"]["size"], tuple(config["iid"]["row_shape"])
        est.num_emulated = config.get("num_emulated", 0)  # (absent from files written before it existed)
        return est

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
        gold: Any = None,
        emulator: LikelihoodEstimator | None = None,
        num_emulated: int | None = None,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit q(θ | x) on simulated pairs θ ``[n, d_theta]``, x ``[n, *x_shape]``, or on a campaign store.

        ``emulator=emu`` (a fitted :class:`~simgen.LikelihoodEstimator` of the same θ and x) adds
        ``num_emulated`` pairs θ ~ p(θ), x ~ emu (default :data:`~simgen.estimators.auto.EMULATED_PER_PAIR` n)
        to the simulated ones (:mod:`simgen.estimators.augment`): the posterior then learns from the emulator as
        from a simulator, where a flow of p(x | θ) has learned more from the n simulations than one of p(θ | x)
        (x of more dimensions than θ, thin posteriors; README, "Emulated pairs"). ``num_emulated=N`` without
        ``emulator=`` fits one on the same pairs first, with the same training settings
        (:func:`~simgen.estimators.augment.fit_emulator`); ``num_emulated=0`` adds none. With neither,
        ``model="auto"`` adds them where :func:`~simgen.estimators.auto.emulated_for` says (a vector x of up to
        50 features, 10³ to 2·10⁴ pairs), any other model none. Simulated pairs only: not with a store,
        ``proposal=``, ``gold`` or ``iid``. :attr:`num_emulated` records how many (in the saved file too),
        :attr:`emulator` the emulator (not saved).

        An estimator built with ``gold="score"`` trains on the joint score too: ``gold`` is the dict
        ``simulate(..., gold=True)`` returned (or the score ``[n, d_theta]``); a store brings its own.

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

        Example:
            >>> import torch, simgen
            >>> from sbi.utils import BoxUniform
            >>> prior = BoxUniform(torch.zeros(2), torch.ones(2))
            >>> theta, x = simgen.simulate(lambda t: t + 0.1 * torch.randn(t.shape), prior, 300, seed=0,
            ...                            progress=False)
            >>> posterior = simgen.PosteriorEstimator(prior, "flow")
            >>> history = posterior.fit(theta, x, seed=0, progress=False, max_epochs=2)  # a few steps
            >>> len(history.train_loss)
            2
            >>> samples = posterior.sample(100, x[:1])  # q(θ | x_1): [100, 2], inside the prior's box
            >>> samples.shape, bool(((samples > 0) & (samples < 1)).all())
            (torch.Size([100, 2]), True)
            >>> posterior.log_prob(theta[:5], x[:1]).shape  # log q(θ_i | x_1): [5]
            torch.Size([5])
        """
        seed = self.run_seed(seed, checkpoint)
        self.num_emulated, self.emulator = 0, None
        if num_emulated is None and emulator is None:
            num_emulated = self.auto_emulated(theta, x, proposal=proposal, gold=gold)
        if num_emulated != 0 and (emulator is not None or num_emulated is not None):
            theta, x = self._with_emulated(theta, x, emulator, num_emulated, seed, proposal=proposal, gold=gold,
                                           progress=progress, config=config, settings=settings)
        if x is None:
            # sets of i.i.d. draws are re-laid out in memory before training, so an iid store is never streamed
            memory = 1e12 if self.iid else max_memory_gb
            return self._fit_store(theta, config, seed, progress, settings, memory, proposal, checkpoint)[0]
        return self._fit_pairs(theta, x, config, seed, progress, settings,
                               self.importance_weights(proposal) if proposal is not None else None, checkpoint,
                               gold=gold)

    def auto_emulated(self, theta: Any, x: Any, *, proposal: Any = None, gold: Any = None) -> int:
        """How many emulated pairs a fit on θ, x adds when neither ``emulator=`` nor ``num_emulated=`` is given:
        with ``model="auto"``, :func:`~simgen.estimators.auto.emulated_for` for simulated pairs θ, x drawn from
        the prior (not a store, ``proposal=``, ``gold`` or ``iid``); else 0."""
        if self.requested_model != AUTO or x is None or proposal is not None or gold is not None or self.iid:
            return 0
        theta, x = self.check_pairs(theta, x)
        x_kind = self.x_kind or infer_x_kind(tuple(x.shape[1:]))
        return emulated_for(self.direction, x_kind=x_kind, num_rows=theta.shape[0], x_features=x[0].numel())

    def _with_emulated(self, theta: Any, x: Any, emulator: LikelihoodEstimator | None, num: int | None,
                       seed: int | None, *, proposal: Any, gold: Any, progress: bool, config: TrainingConfig | None,
                       settings: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The simulated pairs with ``num`` emulated ones appended (``fit``'s ``emulator=``; without one, an
        emulator fitted on the same pairs with the same training settings by
        :func:`~simgen.estimators.augment.fit_emulator`), checked."""
        if x is None or proposal is not None or gold is not None or self.iid:
            raise ValueError("emulated pairs join simulated pairs θ, x drawn from the prior: not with a store, "
                             "proposal=, gold or iid=True")
        theta, x = self.check_pairs(theta, x)
        # checked before an emulator is fitted for them
        num = EMULATED_PER_PAIR * theta.shape[0] if num is None else check_positive_int(num, "num_emulated")
        if emulator is None:
            emulator = fit_emulator(self.prior, theta, x, x_kind=self.x_kind, discrete=self.discrete,
                                    device=self.device, seed=None if seed is None else seed + 5, progress=progress,
                                    config=config, **settings)
        self.emulator = emulator
        if emulator.theta_shape != tuple(theta.shape[1:]) or emulator.x_shape != tuple(x.shape[1:]):
            raise ValueError(f"the emulator models x {list(emulator.x_shape or ())} given θ "
                             f"{list(emulator.theta_shape or ())}; the pairs are x {list(x.shape[1:])}, θ "
                             f"{list(theta.shape[1:])}")
        theta_e, x_e = emulated_pairs(emulator, num, seed=None if seed is None else seed + 7)
        self.num_emulated = int(theta_e.shape[0])
        return torch.cat([theta, theta_e.to(theta.dtype)]), torch.cat([x, x_e.to(x.dtype)])

    def _fit_pairs(
        self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
        settings: dict[str, Any], weight_fn: Callable[[Tensor], Tensor] | None = None, checkpoint: Any = None,
        gold: Any = None, gold_reference: Any = None,
    ) -> TrainingHistory:
        theta, x = self.check_pairs(theta, x)
        score, _ = self.check_gold_fit(gold, theta, gold_reference)
        weights = None
        if weight_fn is not None:
            weights = weight_fn(theta)
            keep = weights > 0
            theta, x, weights = theta[keep], x[keep], weights[keep]
            score = score[keep] if score is not None else None
        support = SupportBijection(self.prior)
        outside = ~support.contains(theta)
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} of {theta.shape[0]} theta rows lie outside the prior's support "
                f"(first: {theta[outside][0].tolist()}); a posterior estimator needs θ drawn from its prior "
                "(or proposal=q, the distribution θ was drawn from)"
            )
        if self.iid:
            self.iid_size, self.row_shape = None, None
            if x.dim() < 2:
                raise ValueError(f"with iid=True, x must be [n, M, *row_shape] (M i.i.d. draws per θ); got "
                                 f"{list(x.shape)}")
            size, row_shape = x.shape[1], tuple(x.shape[2:])
            x = self._as_sets(x, size, "x")
            self.iid_size, self.row_shape, self.x_kind = size, row_shape, "set"
        self.theta_shape, self.x_shape = tuple(theta.shape[1:]), tuple(x.shape[1:])
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        return self._fit((theta, x), config, seed, progress, settings, weights, checkpoint, gold=score)

    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """``n`` posterior draws for one observation ``x_obs`` (``[*x_shape]`` or ``[1, *x_shape]``):
        ``[n, d_theta]``; ``options`` are the family's sampling options (a diffusion's ``method="sde"``,
        ``steps=``)."""
        if self.iid:
            self._require_fitted()
            return self.sample_batched(n, as_tensor(x_obs, "x_obs")[None], generator=generator, **options)[0]
        x = self.check_x(x_obs, "x_obs")
        if x.shape[0] != 1:
            raise ValueError(
                f"sample takes one observation; x_obs has {x.shape[0]} rows. Use sample_batched(n, xs) for "
                "several observations (PosteriorEstimator(..., iid=True) combines sets of i.i.d. observations)"
            )
        return self.sample_batched(n, x, generator=generator, **options)[0]

    def sample_batched(self, n: int, xs: Any, *, generator: torch.Generator | None = None,
                       **options: Any) -> Tensor:
        """``n`` posterior draws for each of ``m`` observations ``xs`` ``[m, *x_shape]``: ``[m, n, d_theta]``
        (with ``iid``: for each of B sets of i.i.d. draws ``xs`` ``[B, m, *row_shape]``, 1 ≤ m ≤ M)."""
        check_positive_int(n)
        if self.iid:
            self._require_fitted()
            return self._sample_chunks(n, self._iid_obs(xs, "xs", batched=True), generator, options)
        return self._sample_chunks(n, self.check_x(xs, "xs"), generator, options)

    def log_prob(self, theta: Any, x: Any, *, generator: torch.Generator | None = None,
                 batch_size: int | None = None, progress: bool = False, **options: Any) -> Tensor:
        """log q(θ[i] | x[i]) ``[n]``; one observation x is broadcast over θ; −inf outside the support.
        ``options`` go to the family's ``log_prob`` (a CNF's or diffusion's ``num_probes=``, ``exact=``). With
        ``iid``, x is one set of i.i.d. draws ``[m, *row_shape]``, broadcast over θ. ``batch_size`` and
        ``progress`` as :meth:`simgen.LikelihoodEstimator.log_prob`."""
        if self.iid:
            self._require_fitted()
            return self._log_prob(self.check_theta(theta), self._iid_obs(x, "x", batched=False), ("theta", "x"),
                                  generator, options, batch_size=batch_size, progress=progress)
        return self._log_prob(self.check_theta(theta), self.check_x(x), ("theta", "x"), generator, options,
                              batch_size=batch_size, progress=progress)

    def log_prob_with_se(self, theta: Any, x: Any, *, generator: torch.Generator | None = None,
                         batch_size: int | None = None, progress: bool = False,
                         **options: Any) -> tuple[Tensor, Tensor]:
        """(log q̂(θ[i] | x[i]), its standard error), both ``[n]``: 0 for an exact family, the trace estimator's
        for an ODE family (``ConditionalDensity.log_prob_with_se``); arguments as :meth:`log_prob`."""
        return self._log_prob(self.check_theta(theta), self.check_x(x), ("theta", "x"), generator, options, True,
                              batch_size=batch_size, progress=progress)
