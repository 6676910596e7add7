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
from ..training import TrainingConfig, TrainingHistory, check_validation_index
from ..transforms import Dequantize, Standardize, SupportBijection
from ..utils import as_tensor, broadcast_rows, check_positive_int, check_rows
from . import ingest, sequential
from .augment import emulated_pairs, fit_emulator
from .auto import AUTO, EMULATED_PER_PAIR, emulated_for
from .base import Estimator, infer_x_kind, training_config, x_context_parts
from .importance import HELD_OUT_ROWS, SAMPLE_WITH, HeldOutGain, ImportancePosterior, held_out_gain, held_out_rows
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
        sample_with (str): how ``sample`` and ``log_prob`` answer once a fit has an emulator (emulated pairs):
            ``"direct"``, by the fitted family alone (one pass); ``"importance"``, by the emulator's posterior
            p(θ) ℓ̂(x | θ) / Z(x) importance-sampled from the family (:mod:`simgen.estimators.importance`:
            seconds per observation); ``"auto"`` (default), importance sampling where it scores better than the
            family on simulations that neither model trained on (:attr:`held_out`), else direct. What a fit
            settled on is :attr:`sample_with`; the request is :attr:`requested_sample_with`.
    """

    direction = "posterior"
    y_is_theta = True

    def __init__(self, prior: Distribution, model: str | ConditionalDensity = AUTO, *, iid: bool = False,
                 sample_with: str = "auto", **kwargs: Any) -> None:
        if prior is None:
            raise ValueError("PosteriorEstimator needs the prior the simulations were drawn from")
        if not isinstance(iid, bool):
            raise ValueError(f"iid must be True or False; got {iid!r}")
        if sample_with not in SAMPLE_WITH:
            raise ValueError(f"sample_with must be one of {list(SAMPLE_WITH)}; got {sample_with!r}")
        if iid and sample_with == "importance":
            raise ValueError("sample_with='importance' needs an emulator of one x, which iid=True does not fit")
        if iid and (kwargs.get("embedding") is not None or kwargs.get("x_kind") not in (None, "set")):
            raise ValueError("iid=True embeds the sets of i.i.d. draws itself (nets.SubsetDeepSets): leave "
                             "embedding= and x_kind= out")
        if iid and kwargs.get("gold") is not None:
            raise ValueError("gold='score' with iid=True is not supported: the score of a set is the sum of its "
                             "draws' scores, which this estimator does not mine")
        super().__init__(prior, model, **kwargs)
        self.iid = iid
        #: the emulator the last fit drew emulated pairs from (given or fitted; saved with the posterior when it
        #: samples by importance), else ``None``
        self.emulator: LikelihoodEstimator | None = None
        self.requested_sample_with = sample_with
        #: how ``sample`` and ``log_prob`` answer: ``"direct"`` (the family) or ``"importance"`` (the emulator's
        #: posterior, :attr:`importance`); settled by each fit
        self.sample_with = "direct"
        #: the emulator's posterior importance-sampled from this one's family, when a fit had an emulator
        self.importance: ImportancePosterior | None = None
        #: the held-out comparison behind ``sample_with="auto"``'s choice (``None`` where none was made)
        self.held_out: HeldOutGain | None = None
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
        config["sample_with"] = {"requested": self.requested_sample_with, "used": self.sample_with}
        config["held_out"] = self.held_out.to_dict() if self.held_out is not None else None
        return config

    def saved_emulator(self) -> LikelihoodEstimator | None:
        """The emulator importance sampling needs (saved in this posterior's file), else ``None``."""
        return self.emulator if self.sample_with == "importance" else None

    def attach_emulator(self, emulator: Estimator) -> None:
        """Sample by importance with ``emulator`` (a loaded file's, :func:`simgen.load`)."""
        if not isinstance(emulator, LikelihoodEstimator):
            raise ValueError(f"a posterior's emulator is a LikelihoodEstimator; got {type(emulator).__name__}")
        self.emulator = emulator
        self.importance = ImportancePosterior(_Amortised(self), emulator, self.prior)

    @classmethod
    def from_config(cls, config: dict[str, Any], *, prior: Distribution | None, embedding: nn.Module,
                    device: str | torch.device | None = None) -> PosteriorEstimator:
        est = super().from_config(config, prior=prior, embedding=embedding, device=device)
        if config.get("iid"):
            est.iid, est.iid_size, est.row_shape = True, config["iid"]["size"], tuple(config["iid"]["row_shape"])
        est.num_emulated = config.get("num_emulated", 0)  # (absent from files written before it existed)
        sample_with = config.get("sample_with") or {"requested": "direct", "used": "direct"}
        est.requested_sample_with, est.sample_with = sample_with["requested"], sample_with["used"]
        est.held_out = HeldOutGain(**config["held_out"]) if config.get("held_out") else None
        return est

    def sequential_proposal(self, x_obs: Tensor, label: str, *, truncation: float, mcmc: dict[str, Any],
                            num_draws: int = 10_000) -> Distribution:
        """TSNPE's proposal: the prior truncated to q(θ | x_obs)'s region of mass 1 − ``truncation``, its
        threshold from ``num_draws`` draws of q (see :func:`~simgen.estimators.sequential.truncated_prior`). q is
        the fitted family itself, also where the posterior samples by importance: its exact density gives the
        region one threshold, where the importance posterior's would move with each estimate of its evidence."""
        x_obs = self.check_x(x_obs, "x_obs")
        family = _Amortised(self)

        def log_q(theta: Tensor) -> Tensor:
            return family.log_prob(theta, x_obs)

        return sequential.truncated_prior(self.prior, log_q, family.sample(num_draws, x_obs), truncation, label)

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
        validation_index: Any = None,
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
        :attr:`emulator` the emulator. An emulator fitted here learns from the same simulations but the
        posterior's held-out ones, which both use for early stopping; with ``sample_with="auto"`` they then
        decide whether ``sample`` importance-samples the emulator's posterior (class docstring, :attr:`held_out`;
        the emulator is then saved with the posterior).

        ``validation_index`` (row indices ``[v]`` of θ, x) holds those rows out for early stopping instead of a
        seed-fixed ``validation_fraction`` of them (and out of an emulator fitted here). Given with ``emulator=``,
        they must be rows that emulator held out as well (its own ``fit(..., validation_index=)``): ``"auto"``
        then compares the two posteriors on them.

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
        self.num_emulated, self.emulator, self.importance, self.held_out = 0, None, None, None
        self.sample_with = "direct"
        if num_emulated is None and emulator is None:
            num_emulated = self.auto_emulated(theta, x, proposal=proposal, gold=gold)
        with_emulator = num_emulated != 0 and (emulator is not None or num_emulated is not None)
        if self.requested_sample_with == "importance" and not with_emulator:
            raise ValueError("sample_with='importance' samples an emulator's posterior: pass emulator= or "
                             "num_emulated= (a fit without emulated pairs has no emulator)")
        if x is None and validation_index is not None:
            raise ValueError("validation_index names rows of θ, x tensors; a store's split is its own")
        held = None
        if with_emulator:
            theta, x, validation_index, held = self._with_emulated(
                theta, x, emulator, num_emulated, seed, proposal=proposal, gold=gold, progress=progress,
                config=config, settings=settings, validation_index=validation_index)
        if x is None:
            # sets of i.i.d. draws are re-laid out in memory before training, so an iid store is never streamed
            memory = 1e12 if self.iid else max_memory_gb
            return self._fit_store(theta, config, seed, progress, settings, memory, proposal, checkpoint)[0]
        history = self._fit_pairs(theta, x, config, seed, progress, settings,
                                  self.importance_weights(proposal) if proposal is not None else None, checkpoint,
                                  gold=gold, validation_index=validation_index)
        if with_emulator:
            self._settle_sampling(held, seed, progress)
        return history

    def _settle_sampling(self, held: tuple[Tensor, Tensor] | None, seed: int | None, progress: bool) -> None:
        """:attr:`sample_with` after a fit with an emulator: as requested, or for ``"auto"`` by the held-out
        comparison (:func:`~simgen.estimators.importance.held_out_gain`) on up to :data:`HELD_OUT_ROWS` of
        the simulations that neither the emulator nor the family trained on. Importance sampling needs the
        family's exact ``log_prob``; with another family, or an emulator given from outside without
        ``validation_index`` (its training rows unknown), ``"auto"`` stays direct."""
        if self.requested_sample_with == "direct" or self.emulator is None:
            return
        exact = self.log_prob_kind == "exact"
        if self.requested_sample_with == "importance":
            if not exact:
                raise ValueError(f"sample_with='importance' needs a family with an exact log_prob; "
                                 f"{self.density.density.family!r} has a {self.log_prob_kind!r} one")
            self.attach_emulator(self.emulator)
            self.sample_with = "importance"
            return
        if not exact or held is None:
            return
        theta, x = held
        generator = torch.Generator().manual_seed(int(seed) + 11 if seed is not None else
                                                  int(torch.randint(0, 2**62, ())))
        keep = torch.randperm(theta.shape[0], generator=generator)[:HELD_OUT_ROWS]
        theta, x = theta[keep], x[keep]
        importance = ImportancePosterior(_Amortised(self), self.emulator, self.prior)
        log_q = self._log_prob(theta, x, ("theta", "x"), None, {})
        self.held_out = held_out_gain(importance, log_q, theta, x, generator=generator, progress=progress)
        if self.held_out.favours_importance:
            self.importance, self.sample_with = importance, "importance"

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
                       settings: dict[str, Any], validation_index: Any = None
                       ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """The simulated pairs with ``num`` emulated ones appended (``fit``'s ``emulator=``; without one, an
        emulator fitted on the same pairs with the same training settings by
        :func:`~simgen.estimators.augment.fit_emulator`), checked; the rows held out for early stopping (the
        simulated ones given or drawn with the fit's ``validation_fraction``, and as large a share of the emulated
        ones); and the held-out simulations (θ, x), which the emulator did not learn from: those of an emulator
        fitted here (it holds them out), or with ``emulator=`` the ``validation_index`` rows, which the caller
        vouches it held out too (else ``None``)."""
        if x is None or proposal is not None or gold is not None or self.iid:
            raise ValueError("emulated pairs join simulated pairs θ, x drawn from the prior: not with a store, "
                             "proposal=, gold or iid=True")
        theta, x = self.check_pairs(theta, x)
        # checked before an emulator is fitted for them
        num = EMULATED_PER_PAIR * theta.shape[0] if num is None else check_positive_int(num, "num_emulated")
        fraction = training_config(config, settings, self.training_defaults()).validation_fraction
        if validation_index is None:
            held_rows = held_out_rows(theta.shape[0], fraction, seed)
        else:
            held_rows = check_validation_index(validation_index, theta.shape[0])
        # rows the emulator did not learn from: the ones it held out when fitted here, or the caller's word
        held = (theta[held_rows], x[held_rows]) if emulator is None or validation_index is not None else None
        if emulator is None:
            emulator = fit_emulator(self.prior, theta, x, x_kind=self.x_kind, discrete=self.discrete,
                                    device=self.device, seed=None if seed is None else seed + 5, progress=progress,
                                    config=config, validation_index=held_rows, **settings)
        self.emulator = emulator
        if emulator.theta_shape != tuple(theta.shape[1:]) or emulator.x_shape != tuple(x.shape[1:]):
            raise ValueError(f"the emulator models x {list(emulator.x_shape or ())} given θ "
                             f"{list(emulator.theta_shape or ())}; the pairs are x {list(x.shape[1:])}, θ "
                             f"{list(theta.shape[1:])}")
        theta_e, x_e = emulated_pairs(emulator, num, seed=None if seed is None else seed + 7)
        self.num_emulated = int(theta_e.shape[0])
        split = torch.Generator().manual_seed(int(seed) + 17 if seed is not None else
                                              int(torch.randint(0, 2**62, ())))
        held_emulated = theta.shape[0] + torch.randperm(self.num_emulated, generator=split)[
            :round(fraction * self.num_emulated)]
        validation = torch.cat([held_rows, held_emulated])
        return torch.cat([theta, theta_e.to(theta.dtype)]), torch.cat([x, x_e.to(x.dtype)]), validation, held

    def _fit_pairs(
        self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
        settings: dict[str, Any], weight_fn: Callable[[Tensor], Tensor] | None = None, checkpoint: Any = None,
        gold: Any = None, gold_reference: Any = None, validation_index: Any = None,
    ) -> TrainingHistory:
        theta, x = self.check_pairs(theta, x)
        if validation_index is not None:
            if weight_fn is not None:
                raise ValueError("validation_index with proposal=: the importance weights draw the validation rows")
            validation_index = check_validation_index(validation_index, theta.shape[0])
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
        return self._fit((theta, x), config, seed, progress, settings, weights, checkpoint, gold=score,
                         validation_index=validation_index)

    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """``n`` posterior draws for one observation ``x_obs`` (``[*x_shape]`` or ``[1, *x_shape]``):
        ``[n, d_theta]``; ``options`` are the family's sampling options (a diffusion's ``method="sde"``,
        ``steps=``). With :attr:`sample_with` ``"importance"``, draws of the emulator's posterior
        (:meth:`~simgen.estimators.importance.ImportancePosterior.sample`; ``importance.last_run`` says how
        many proposal draws they rest on)."""
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
        xs = self.check_x(xs, "xs")
        if self.sample_with == "importance":
            importance = self._importance_sampler(options)
            return torch.stack([importance.sample(n, x, generator=generator) for x in xs])
        return self._sample_chunks(n, xs, generator, options)

    def _importance_sampler(self, options: dict[str, Any]) -> ImportancePosterior:
        """The importance sampler ``sample`` and ``log_prob`` answer with (:attr:`sample_with`)."""
        if options:
            raise ValueError(f"sampling options {sorted(options)} are the family's: with sample_with="
                             "'importance' the family is the proposal, drawn with its defaults")
        if self.importance is None:
            raise ValueError("sample_with='importance' without an emulator: fit with emulated pairs, or load a "
                             "file saved with its emulator")
        return self.importance

    def log_prob(self, theta: Any, x: Any, *, generator: torch.Generator | None = None,
                 batch_size: int | None = None, progress: bool = False, **options: Any) -> Tensor:
        """log q(θ[i] | x[i]) ``[n]``; one observation x is broadcast over θ; −inf outside the support. With
        :attr:`sample_with` ``"importance"``, log π̂(θ | x) of the emulator's posterior (normalised by an
        importance estimate of its evidence per distinct x; :meth:`log_prob_with_se` gives its error).
        ``options`` go to the family's ``log_prob`` (a CNF's or diffusion's ``num_probes=``, ``exact=``). With
        ``iid``, x is one set of i.i.d. draws ``[m, *row_shape]``, broadcast over θ. ``batch_size`` and
        ``progress`` as :meth:`simgen.LikelihoodEstimator.log_prob`."""
        if self.iid:
            self._require_fitted()
            return self._log_prob(self.check_theta(theta), self._iid_obs(x, "x", batched=False), ("theta", "x"),
                                  generator, options, batch_size=batch_size, progress=progress)
        if self.sample_with == "importance":
            return self.log_prob_with_se(theta, x, generator=generator, progress=progress, **options)[0]
        return self._log_prob(self.check_theta(theta), self.check_x(x), ("theta", "x"), generator, options,
                              batch_size=batch_size, progress=progress)

    def log_prob_with_se(self, theta: Any, x: Any, *, generator: torch.Generator | None = None,
                         batch_size: int | None = None, progress: bool = False,
                         **options: Any) -> tuple[Tensor, Tensor]:
        """(log q̂(θ[i] | x[i]), its standard error), both ``[n]``: 0 for an exact family, the trace estimator's
        for an ODE family (``ConditionalDensity.log_prob_with_se``), the evidence estimate's where the posterior
        samples by importance (:meth:`~simgen.estimators.importance.ImportancePosterior.log_prob`); arguments as
        :meth:`log_prob`."""
        if self.sample_with == "importance":
            importance = self._importance_sampler(options)
            theta, x = broadcast_rows(self.check_theta(theta), self.check_x(x), "theta", "x")
            return importance.log_prob(theta, x, generator=generator, progress=progress)
        return self._log_prob(self.check_theta(theta), self.check_x(x), ("theta", "x"), generator, options, True,
                              batch_size=batch_size, progress=progress)


class _Amortised:
    """The family's own draws and density of a :class:`PosteriorEstimator`, whatever its :attr:`sample_with`:
    the proposal its importance sampling draws from (:class:`~simgen.mcmc.proposal.ConditionalProposal`)."""

    def __init__(self, posterior: PosteriorEstimator) -> None:
        self.posterior = posterior

    def sample(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None) -> Tensor:
        x = self.posterior.check_x(x_obs, "x_obs")
        return self.posterior._sample_chunks(n, x, generator)[0]

    def log_prob(self, theta: Any, x: Any) -> Tensor:
        return self.posterior._log_prob(self.posterior.check_theta(theta), self.posterior.check_x(x),
                                        ("theta", "x"), None, {})
