"""The likelihood direction: q_φ(x | θ) ≈ p(x | θ), an emulator of the simulator (y = x, c = θ)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .. import nets
from ..io import register_estimator
from ..models import ConditionalDensity, Flow, MixedDensity
from ..models.mixed import MAX_CATEGORIES
from ..training import StoreBatches, TrainingConfig, TrainingHistory, check_validation_index, distributed
from ..transforms import Dequantize, LogPositive, Standardize, SupportBijection, positive_dims
from ..utils import check_positive_int
from .auto import AUTO
from .base import Estimator, infer_x_kind
from .validity import fit_validity

__all__ = ["LikelihoodEstimator", "DISCRETE_MODELS", "check_log_theta"]

#: how a likelihood models x's declared discrete columns (``discrete_model=``)
DISCRETE_MODELS = ("mnle", "dequantize")


def check_log_theta(log_theta: bool | Sequence[int] | None, prior: Distribution | None) -> tuple[int, ...]:
    """The dimensions of θ a likelihood feeds as log θ (``LikelihoodEstimator(log_theta=)``): ``None`` or
    ``True`` the prior's positive ones (:func:`~simgen.transforms.positive_dims`; none without a prior for
    ``None``, an error for ``True``), ``False`` none, a list those, each of which must be positive under the
    prior when one is given. Raises ValueError otherwise."""
    if log_theta is None or log_theta is True:
        if prior is None:
            if log_theta:
                raise ValueError("log_theta=True takes the prior's positive dimensions, and no prior was given: "
                                 "pass the dimensions, e.g. log_theta=[0, 1]")
            return ()
        return positive_dims(prior)
    if log_theta is False:
        return ()
    if isinstance(log_theta, (str, bytes)) or not isinstance(log_theta, Sequence) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in log_theta):
        raise ValueError(f"log_theta must be True, False or a list of dimensions of theta (integers >= 0); got "
                         f"{log_theta!r}")
    dims = tuple(sorted(set(log_theta)))
    if prior is not None:
        outside = [i for i in dims if i not in positive_dims(prior)]
        if outside:
            raise ValueError(f"log_theta: the prior's support is not positive in dimension(s) {outside} (log θ is "
                             f"defined for θ > 0 only); its positive dimensions are {list(positive_dims(prior))}")
    return dims


@register_estimator
class LikelihoodEstimator(Estimator):
    r"""Neural likelihood estimation: an emulator q_φ(x | θ) ≈ p(x | θ) of the simulator.

    Trained by maximum likelihood on simulated pairs (Papamakarios, Sterratt & Murray 2019, "Sequential Neural
    Likelihood", arXiv:1805.07226). ``posterior()`` turns it into p(θ | x_obs) ∝ Π_i q(x_obs,i | θ) p(θ),
    sampled by MCMC (:mod:`simgen.mcmc`).

    Arguments as :class:`PosteriorEstimator`; ``prior`` may be ``None`` when no posterior is needed, and

    Args:
        discrete_model: how the declared discrete columns of x (``discrete=``, or the simulator's ``x_discrete``)
            are modelled. ``"mnle"`` (the default for a flow on vector x): mixed neural likelihood estimation
            (Boelts et al. 2022), p(x | θ) = p(d | θ) · q(v | θ, d) with a categorical network over the discrete
            columns d and the flow over the continuous ones v given θ and d, an exact likelihood
            (:class:`~simgen.models.MixedDensity`). ``"dequantize"`` (the default for other families and for
            maps): uniform dequantisation of the integer columns, a lower bound on the discrete likelihood
            (:class:`~simgen.transforms.Dequantize`). Models saved with either keep loading as they were saved.
        log_theta: which parameters enter the network as log θ (then standardised like the others;
            :class:`~simgen.transforms.LogPositive`): ``True`` (the default when a prior is given) those on which
            the prior's support is positive (:func:`~simgen.transforms.positive_dims`: a box above 0, a
            log-normal prior), a list of dimensions, or ``False`` for none (θ as it is). An amplitude or
            a rate acts multiplicatively, and the network then learns it as a linear direction, also at the
            prior's edges. Models saved before the option keep θ as it is.

    Other Parameters:
        gold (str | None): ``"score"``: SCANDAL (Brehmer et al. 2020, arXiv:1805.12244), trained on the joint
            score t(x, z | θ) of each simulation (``simgen.simulate(..., gold=True)``): the loss gains
            α E‖s ⊙ (∇_θ log q(x | θ) − t)‖², s θ's standard deviation (:mod:`simgen.estimators.gold`). Needs a
            family with an exact ``log_prob`` (flow, MNLE, map flow); others are refused, and so are ``"ratio"``
            and ``"ratio+score"`` (the ratio term is :class:`~simgen.RatioEstimator`'s). Default ``None``.
        gold_weight (float): α (default :data:`~simgen.estimators.gold.DEFAULT_GOLD_WEIGHT`, 0.2).
    """

    direction = "likelihood"

    def __init__(self, prior: Any = None, model: str | ConditionalDensity = AUTO, *,
                 discrete_model: str | None = None, log_theta: bool | Sequence[int] | None = None,
                 **kwargs: Any) -> None:
        if discrete_model is not None and discrete_model not in DISCRETE_MODELS:
            raise ValueError(f"discrete_model must be one of {DISCRETE_MODELS} or None (the default for the "
                             f"family); got {discrete_model!r}")
        super().__init__(prior, model, **kwargs)
        self.discrete_model = discrete_model
        #: the dimensions of θ fed as log θ (``log_theta=``, resolved against the prior)
        self.log_theta = check_log_theta(log_theta, self.prior)

    def resolved_discrete_model(self) -> str | None:
        """``"mnle"`` or ``"dequantize"`` for this estimator's discrete columns (``None`` without any).

        Raises:
            ValueError: ``discrete_model="mnle"`` with a family other than a flow, or with x not a vector.
        """
        if not self.discrete:
            return None
        spec = self.requested_model
        flow_like = (spec in ("flow", "mnle", AUTO) if isinstance(spec, str)
                     else isinstance(spec, Flow | MixedDensity))
        vector = self.x_kind in (None, "vector")
        if self.discrete_model is None:
            return "mnle" if flow_like and vector else "dequantize"
        if self.discrete_model == "mnle" and not (flow_like and vector):
            raise ValueError(f"discrete_model='mnle' models vector x with a flow over the continuous columns; got "
                             f"model={spec!r} on x_kind={self.x_kind!r} (use discrete_model='dequantize')")
        return self.discrete_model

    def mixed_family(self, x_rows: Any, gather: Any = None) -> MixedDensity:
        """The MNLE family for this estimator's discrete columns, their value ranges read from ``x_rows`` (an
        iterable of ``[n, d_x]`` batches; ``gather``, a data-parallel group's ``all_gather_object``, joins the
        ranks' shards so that every rank builds the same networks), the continuous part's settings from the
        given model."""
        idx = list(self.discrete)
        low = high = None
        for x in x_rows:
            d = x[:, idx]
            bad = d != torch.round(d)
            if bad.any():
                row, col = (int(v) for v in torch.nonzero(bad)[0])
                raise ValueError(f"discrete column {idx[col]} of x holds a non-integer value ({float(d[row, col])}); "
                                 "declare only integer-valued columns discrete")
            if d.shape[0]:
                lo, hi = d.min(dim=0).values, d.max(dim=0).values
                low, high = (lo, hi) if low is None else (torch.minimum(low, lo), torch.maximum(high, hi))
        if gather is not None:
            ranges = [r for r in gather((low, high)) if r[0] is not None]
            if ranges:
                low = torch.stack([lo for lo, _ in ranges]).min(dim=0).values
                high = torch.stack([hi for _, hi in ranges]).max(dim=0).values
        if low is None:
            raise ValueError("no training rows to read the discrete columns' values from")
        too_many = [(i, int(lo), int(hi)) for i, lo, hi in zip(idx, low, high, strict=True)
                    if hi - lo + 1 > MAX_CATEGORIES]
        if too_many:
            raise ValueError(f"discrete column(s) {too_many} (index, min, max) take more than {MAX_CATEGORIES} values: "
                             "too many for a categorical; use discrete_model='dequantize'")
        spec = self.model_spec  # the family asked for, or model="auto"'s choice
        if isinstance(spec, MixedDensity):
            settings = spec.config()
            flow, hidden, blocks = settings["flow"], settings["hidden_features"], settings["num_blocks"]
        else:
            flow = spec.config() if isinstance(spec, Flow) else {}
            hidden, blocks = 64, 2
        return MixedDensity(self.discrete, [[int(lo), int(hi)] for lo, hi in zip(low, high, strict=True)], flow=flow,
                            hidden_features=hidden, num_blocks=blocks)

    @property
    def y_kind(self) -> str:
        return self.x_kind or "vector"

    # ----------------------------------------------------------------- the direction: y = x, c = θ
    def split(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, theta

    def y_parts(self, y_shape: tuple[int, ...], family: ConditionalDensity) -> tuple[
            SupportBijection | None, Dequantize | None, Standardize]:
        """x's integer-valued dimensions are dequantised, then x is standardised (per channel for maps; not at
        all for a family of binary data, such as a Bernoulli VAE). A mixed family (MNLE) models the integers
        themselves: no dequantisation, and its discrete columns are left unstandardised."""
        if isinstance(family, MixedDensity):
            return None, None, Standardize(y_shape, enabled=family.standardize_y, fixed=family.discrete)
        dequantize = Dequantize(self.discrete) if self.discrete else None
        return None, dequantize, Standardize(y_shape, per_channel=self.x_kind == "map", enabled=family.standardize_y)

    def context_parts(self, c_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
        """θ is standardised and passed on as it is (flattened), unless an ``embedding=`` was given."""
        embedding = self.embedding if self.embedding is not None else nets.Flatten(c_shape)
        return embedding, Standardize(c_shape)

    def context_map(self, c_shape: tuple[int, ...]) -> LogPositive | None:
        """log θ in the dimensions :attr:`log_theta` (before the standardisation); ``None`` for none."""
        if not self.log_theta:
            return None
        if len(c_shape) != 1 or max(self.log_theta) >= c_shape[0]:
            raise ValueError(f"log_theta dimensions {list(self.log_theta)} do not fit theta rows of shape "
                             f"{list(c_shape)}")
        return LogPositive(c_shape[0], self.log_theta)

    def fit(
        self,
        theta: Any,
        x: Any = None,
        *,
        config: TrainingConfig | None = None,
        seed: int | None = None,
        progress: bool = True,
        max_memory_gb: float | None = None,
        checkpoint: str | os.PathLike | None = None,
        gold: Any = None,
        validation_index: Any = None,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit q(x | θ) on simulated pairs θ ``[n, d_theta]``, x ``[n, *x_shape]``, or on a campaign store
        (``fit("runs.h5")``; see :meth:`PosteriorEstimator.fit` for stores, ``max_memory_gb``,
        ``validation_index`` and ``settings``).
        An estimator built with ``gold="score"`` trains on the joint score too: ``gold`` is the dict
        ``simulate(..., gold=True)`` returned (or the score ``[n, d_theta]``); a store brings its own.

        From a store, it also fits the classifier P(valid | θ) on every row's status (valid or failed), which
        ``posterior(validity=True)`` uses; the emulator itself only ever sees valid rows. ``checkpoint=`` and
        ``torchrun`` as for :meth:`PosteriorEstimator.fit`.

        Example:
            >>> import torch, simgen
            >>> from sbi.utils import BoxUniform
            >>> prior = BoxUniform(torch.zeros(2), torch.ones(2))
            >>> theta, x = simgen.simulate(lambda t: t + 0.1 * torch.randn(t.shape), prior, 300, seed=0,
            ...                            progress=False)
            >>> emulator = simgen.LikelihoodEstimator(prior, "flow")
            >>> _ = emulator.fit(theta, x, seed=0, progress=False, max_epochs=2)  # a few steps
            >>> emulator.sample(50, torch.tensor([0.3, 0.7])).shape  # x ~ q(x | θ): [50, 2]
            torch.Size([50, 2])
            >>> emulator.log_prob(x[:4], theta[:4]).shape  # log q(x_i | θ_i): [4]
            torch.Size([4])
        """
        seed = self.run_seed(seed, checkpoint)
        if x is None:
            if validation_index is not None:
                raise ValueError("validation_index names rows of θ, x tensors; a store's split is its own")
            history, store = self._fit_store(theta, config, seed, progress, settings, max_memory_gb, None,
                                             checkpoint)
            self.validity = fit_validity(store.theta, store.valid, seed=seed, device=self.device)
            return history
        return self._fit_pairs(theta, x, config, seed, progress, settings, checkpoint=checkpoint, gold=gold,
                               validation_index=validation_index)

    def _fit_pairs(
        self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
        settings: dict[str, Any], weight_fn: Any = None, checkpoint: Any = None, gold: Any = None,
        gold_reference: Any = None, validation_index: Any = None,
    ) -> TrainingHistory:
        theta, x = self.check_pairs(theta, x)
        score, _ = self.check_gold_fit(gold, theta, gold_reference)
        self.theta_shape, self.x_shape = tuple(theta.shape[1:]), tuple(x.shape[1:])
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        d_x = math.prod(self.x_shape)
        if any(not 0 <= i < d_x for i in self.discrete):
            raise ValueError(f"discrete indices must lie in [0, {d_x}); got {list(self.discrete)}")
        if self.discrete and self.x_kind != "vector":
            raise ValueError(f"discrete dimensions are supported for vector x only; x_kind is {self.x_kind!r}")
        if validation_index is not None:
            validation_index = check_validation_index(validation_index, theta.shape[0])
        return self._fit((x, theta), config, seed, progress, settings, checkpoint=checkpoint, gold=score,
                         validation_index=validation_index)

    def prepare_model(self, data: Any) -> None:
        """As :meth:`Estimator.prepare_model`, then the family chosen for the discrete columns: under MNLE the
        mixed family with the value ranges of the training rows (y = x)."""
        super().prepare_model(data)
        if self.resolved_discrete_model() == "mnle":
            streaming = isinstance(data, StoreBatches)
            rows = (y for y, _ in data.iter_rows()) if streaming else [data[0]]
            group = distributed.setup(self.device) if streaming and data.sharded else None
            self.model_spec = self.mixed_family(rows, group.all_gather_object if group is not None else None)
        self.check_gold_family()

    def config(self) -> dict[str, Any]:
        mixed = isinstance(self._require_fitted().density.density, MixedDensity)
        return {**super().config(), "discrete_model": ("mnle" if mixed else "dequantize") if self.discrete else None,
                "log_theta": list(self.log_theta)}

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> LikelihoodEstimator:
        """As :meth:`Estimator.from_config`; a file without ``discrete_model`` (written before MNLE) holds a
        dequantised family, and fitting the loaded estimator again keeps the saved choice."""
        est = super().from_config(config, **kwargs)
        est.discrete_model = config.get("discrete_model") or ("dequantize" if config["discrete"] else None)
        return est

    def restore_options(self, config: dict[str, Any]) -> None:
        """θ's log dimensions as saved, whatever the loaded prior's support says (none in a file written before
        ``log_theta``)."""
        self.log_theta = tuple(int(i) for i in config.get("log_theta", []))

    def sample(self, n: int, theta: Any, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """``n`` emulated simulations at one θ (``[d_theta]`` or ``[1, d_theta]``): ``[n, *x_shape]``;
        ``options`` are the family's sampling options (a diffusion's ``method="sde"``, ``steps=``)."""
        theta = self.check_theta(theta)
        if theta.shape[0] != 1:
            raise ValueError(f"sample takes one theta; got {theta.shape[0]} rows. Use sample_batched(n, thetas)")
        return self.sample_batched(n, theta, generator=generator, **options)[0]

    def sample_batched(self, n: int, thetas: Any, *, generator: torch.Generator | None = None,
                       **options: Any) -> Tensor:
        """``n`` emulated simulations for each of ``m`` parameters ``[m, d_theta]``: ``[m, n, *x_shape]``."""
        check_positive_int(n)
        return self._sample_chunks(n, self.check_theta(thetas, "thetas"), generator, options)

    def log_prob(self, x: Any, theta: Any, *, generator: torch.Generator | None = None,
                 batch_size: int | None = None, progress: bool = False, **options: Any) -> Tensor:
        """log q(x[i] | θ[i]) ``[n]``; a single x or θ row is broadcast against the other. ``options`` go to the
        family's ``log_prob`` (a CNF's or diffusion's ``num_probes=``, ``exact=``, ``method=``; a VAE's
        ``num_samples=``). ``batch_size`` rows go to each call of the family's ``log_prob`` (``None``: all at
        once; smaller chunks bound the memory of an ODE family's solve, whose adaptive steps are then chosen per
        chunk), with a progress bar over the rows when ``progress``."""
        return self._log_prob(self.check_x(x), self.check_theta(theta), ("x", "theta"), generator, options,
                              batch_size=batch_size, progress=progress)

    def log_prob_with_se(self, x: Any, theta: Any, *, generator: torch.Generator | None = None,
                         batch_size: int | None = None, progress: bool = False,
                         **options: Any) -> tuple[Tensor, Tensor]:
        """(log q̂(x[i] | θ[i]), its standard error), both ``[n]``: 0 for an exact family, the trace estimator's
        for an ODE family (``ConditionalDensity.log_prob_with_se``); arguments as :meth:`log_prob`."""
        return self._log_prob(self.check_x(x), self.check_theta(theta), ("x", "theta"), generator, options, True,
                              batch_size=batch_size, progress=progress)

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
        ``thin=``, ``num_init=``, ``init_ess=``, ``max_init=``, ``num_leapfrog=``, ``target_accept=``,
        ``monitor=`` (mode-invariant functions of θ for R̂/ESS), ``proposal=`` (a fitted
        :class:`~simgen.PosteriorEstimator` of the same θ and x for SIR's starting points to be drawn from,
        mixed with the prior at ``prior_weight=``, instead of the prior alone: :mod:`simgen.mcmc.proposal`) and
        ``progress=``. Each call's split-R̂ and ESS are in ``.last_run``.

        Raises:
            ValueError: no prior, or ``validity=True`` for an emulator not fitted from a store.
        """
        from ..mcmc import MCMCPosterior

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
