r"""sbi interoperability, both ways: a simgen posterior seen through ``sbi``'s posterior interface
(:func:`to_sbi`), and an sbi posterior seen through simgen's (:func:`from_sbi`).

``sbi``'s analysis and diagnostics (``sbi.diagnostics.run_sbc``, ``run_tarp``, ``check_sbc``, ``get_nltp``,
``sbi.analysis.pairplot`` on its samples, ...) call a posterior as

- ``sample(sample_shape, x=None, show_progress_bars=...)`` → ``[*sample_shape, d_theta]``;
- ``sample_batched(sample_shape, x, show_progress_bars=...)`` with x ``[B, *x_shape]`` →
  ``[*sample_shape, B, d_theta]`` — **samples first**, where simgen's ``sample_batched(n, xs)`` returns
  ``[B, n, d_theta]``;
- ``log_prob(theta, x=None)`` → ``[n]``, ``potential(theta, x=None)`` (sbi's unnormalised log-posterior);
- ``set_default_x(x)`` and ``default_x``, used when ``x`` is omitted.

:class:`SbiPosterior` adapts any simgen posterior (:class:`~simgen.PosteriorEstimator`,
:class:`~simgen.mcmc.MCMCPosterior`, or anything with the same ``sample``/``sample_batched``/``log_prob``) to
that interface. sbi 0.27 checks no base class in these functions (only ``VIPosterior`` gets special care), so
duck typing suffices.

The other way, :class:`FromSbi` adapts an sbi posterior (or a trained sbi inference object, ``NPE``, ``NLE``, ...,
whose ``build_posterior()`` it calls) to the interface of simgen's checks, plots and report:
``sample(n, x)`` → ``[n, d_theta]``, ``sample_batched(n, xs)`` → ``[B, n, d_theta]`` (simgen's observations-first
order), ``log_prob(theta, x)`` → ``[n]``, ``prior``, and the training losses as ``history`` for
``Report.add_training``. sbi's samplers take no ``generator``: simgen's checks with ``seed=`` then seed torch's
global RNG around each call (:func:`simgen.utils.seeded`), so their draws are reproducible all the same.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .utils import accepts_keyword, as_tensor, check_positive_int

__all__ = ["SbiPosterior", "to_sbi", "FromSbi", "from_sbi"]


def _shape(sample_shape: Any) -> tuple[int, ...]:
    if isinstance(sample_shape, int):
        return (sample_shape,)
    shape = tuple(int(s) for s in torch.Size(sample_shape))
    if any(s < 1 for s in shape):
        raise ValueError(f"sample_shape must hold positive sizes; got {shape}")
    return shape


class SbiPosterior:
    r"""A simgen posterior behind ``sbi``'s posterior interface (see the module docstring).

    Args:
        posterior: a simgen posterior (``sample(n, x)`` → ``[n, d]``, ``sample_batched(n, xs)`` →
            ``[m, n, d]``, optionally ``log_prob(theta, x)`` → ``[n]``).
        prior: the prior, exposed as ``.prior`` (sbi reads it in some analyses); default ``posterior.prior``.
        default_x: the observation used when ``x`` is omitted.
        generator: passed to every draw of the wrapped posterior (as ``generator=``), to make sbi's runs
            reproducible; ``None`` uses the wrapped posterior's default randomness.

    Example::

        from sbi.diagnostics import run_sbc
        ranks, dap = run_sbc(theta, x, SbiPosterior(post), num_posterior_samples=100)
    """

    def __init__(
        self,
        posterior: Any,
        prior: Any = None,
        default_x: Any = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        if not (hasattr(posterior, "sample") or hasattr(posterior, "sample_batched")):
            raise ValueError(f"posterior must have sample/sample_batched; got {type(posterior).__name__}")
        self.posterior = posterior
        self.prior = prior if prior is not None else getattr(posterior, "prior", None)
        self.generator = generator
        self._x: Tensor | None = None
        if default_x is not None:
            self.set_default_x(default_x)

    def __repr__(self) -> str:
        return f"SbiPosterior({type(self.posterior).__name__})"

    # -------------------------------------------------------------------------------- default observation
    @property
    def default_x(self) -> Tensor | None:
        """The observation used when ``x`` is omitted (``[1, *x_shape]``)."""
        return self._x

    def set_default_x(self, x: Any) -> SbiPosterior:
        """Set :attr:`default_x`; returns ``self`` (as sbi's posteriors do)."""
        self._x = as_tensor(x, "x")
        return self

    def _x_or_default(self, x: Any) -> Tensor:
        if x is None:
            if self._x is None:
                raise ValueError("no x given and no default x set: pass x= or call set_default_x(x)")
            return self._x
        return as_tensor(x, "x")

    def _kwargs(self) -> dict[str, Any]:
        return {} if self.generator is None else {"generator": self.generator}

    # -------------------------------------------------------------------------------- sampling
    def sample(self, sample_shape: Any = (), x: Any = None, show_progress_bars: bool = False,
               **kwargs: Any) -> Tensor:
        """``prod(sample_shape)`` draws for one observation ``x`` (several rows: i.i.d. observations where the
        wrapped posterior supports them): ``[*sample_shape, d_theta]``. Extra sbi keywords are ignored."""
        shape = _shape(sample_shape)
        n = max(1, math.prod(shape))
        draws = as_tensor(self.posterior.sample(n, self._x_or_default(x), **self._kwargs()), "draws")
        return draws.reshape(*shape, draws.shape[-1])

    def sample_batched(self, sample_shape: Any, x: Any, show_progress_bars: bool = False,
                       **kwargs: Any) -> Tensor:
        """``prod(sample_shape)`` draws for each of B observations ``x`` ``[B, *x_shape]``:
        ``[*sample_shape, B, d_theta]`` (sbi's samples-first order; simgen's is ``[B, n, d_theta]``)."""
        shape = _shape(sample_shape)
        n = max(1, math.prod(shape))
        xs = as_tensor(x, "x")
        if hasattr(self.posterior, "sample_batched"):
            draws = as_tensor(self.posterior.sample_batched(n, xs, **self._kwargs()), "draws")
        else:
            draws = torch.stack([as_tensor(self.posterior.sample(n, xs[i : i + 1], **self._kwargs()), "draws")
                                 for i in range(xs.shape[0])])
        return draws.transpose(0, 1).reshape(*shape, xs.shape[0], draws.shape[-1])

    # -------------------------------------------------------------------------------- densities
    def log_prob(self, theta: Any, x: Any = None, **kwargs: Any) -> Tensor:
        """log q(θ | x) for θ ``[n, d_theta]`` (or ``[d_theta]``) and one observation x: ``[n]``."""
        if not hasattr(self.posterior, "log_prob"):
            raise NotImplementedError(f"{type(self.posterior).__name__} has no log_prob")
        theta = as_tensor(theta, "theta")
        single = theta.dim() == 1
        lp = as_tensor(self.posterior.log_prob(theta[None] if single else theta, self._x_or_default(x)),
                       "log_prob").reshape(-1)
        return lp[0] if single else lp

    def log_prob_batched(self, theta: Any, x: Any, **kwargs: Any) -> Tensor:
        """log q(θ[s, b] | x[b]) for θ ``[S, B, d_theta]`` and x ``[B, *x_shape]``: ``[S, B]``."""
        theta, xs = as_tensor(theta, "theta"), as_tensor(x, "x")
        if theta.dim() != 3 or theta.shape[1] != xs.shape[0]:
            raise ValueError(f"theta must be [S, B, d_theta] with B = {xs.shape[0]} (x's rows); "
                             f"got {list(theta.shape)}")
        return torch.stack([self.log_prob(theta[:, b], xs[b : b + 1]) for b in range(xs.shape[0])], dim=1)

    def potential(self, theta: Any, x: Any = None, **kwargs: Any) -> Tensor:
        """sbi's potential: the (unnormalised) log-posterior, here :meth:`log_prob`."""
        return self.log_prob(theta, x)

    def map(self, x: Any = None, num_samples: int = 1000, **kwargs: Any) -> Tensor:
        """Maximum a posteriori estimate among ``num_samples`` draws (the draw of highest ``log_prob``):
        ``[1, d_theta]``."""
        draws = self.sample((num_samples,), x=x)
        return draws[int(self.log_prob(draws, x=x).argmax())][None]


def to_sbi(posterior: Any, x: Any = None, **kwargs: Any) -> SbiPosterior:
    """``SbiPosterior(posterior, default_x=x, **kwargs)``: a simgen posterior that sbi's functions accept."""
    return SbiPosterior(posterior, default_x=x, **kwargs)


# ------------------------------------------------------------------------------------------------ from sbi
class FromSbi:
    r"""An ``sbi`` posterior behind simgen's posterior interface, for :mod:`simgen.diagnostics` (``sbc``,
    ``coverage``, ``c2st`` on its draws, ``posterior_predictive``), :mod:`simgen.plots` and
    :class:`simgen.report.Report`.

    Args:
        posterior: an sbi posterior (``DirectPosterior``, ``MCMCPosterior``, ``VectorFieldPosterior``, ...: any
            object with sbi's ``sample(sample_shape, x=...)``) or a trained sbi inference object (``NPE``,
            ``NLE``, ``NRE``, ``FMPE``, ...), whose ``build_posterior()`` is called.
        prior: exposed as ``.prior``; default the posterior's.
        normalize: ``log_prob`` corrects for the mass a posterior estimator puts outside a bounded prior (sbi's
            ``norm_posterior``: a rejection-sampling estimate per observation, the slow part of HPD coverage);
            ``False`` skips it. HPD coverage compares ``log_prob`` values within one observation only, so it
            needs no normalisation.

    Attributes:
        posterior: the sbi posterior.
        history: the inference object's training losses as a mapping (``train_loss``, ``validation_loss``,
            ``best_epoch``, ``epochs``, ``best_validation_loss``) that ``Report.add_training`` and
            ``plots.loss_curves`` accept; ``None`` when a posterior was given.
        log_prob_is_ode: ``True`` for sbi's flow-matching and score posteriors (``VectorFieldPosterior``),
            whose ``log_prob`` solves an ODE, so that ``diagnostics.coverage`` skips HPD by default as it does
            for simgen's continuous-time families.

    sbi: Tejero-Cantero et al. 2020, "sbi: A toolkit for simulation-based inference", JOSS 5(52), 2505.

    Example::

        from sbi.inference import NPE
        npe = NPE(prior); npe.append_simulations(theta, x).train()
        post = simgen.interop.from_sbi(npe)
        simgen.diagnostics.sbc(post, theta_test, x_test, seed=0)
    """

    def __init__(self, posterior: Any, prior: Any = None, *, normalize: bool = True) -> None:
        self.normalize = bool(normalize)
        self.history: dict[str, Any] | None = None
        if hasattr(posterior, "build_posterior") and not hasattr(posterior, "sample"):
            self.history = _history(getattr(posterior, "summary", None) or {})
            posterior = posterior.build_posterior()
        if not hasattr(posterior, "sample"):
            raise ValueError(f"posterior must be an sbi posterior (with sample(sample_shape, x=...)) or a trained "
                             f"sbi inference object (with build_posterior()); got {type(posterior).__name__}")
        self.posterior = posterior
        self.prior = prior if prior is not None else getattr(posterior, "prior", None)
        from sbi.inference import VectorFieldPosterior

        self.log_prob_is_ode = isinstance(posterior, VectorFieldPosterior)

    def __repr__(self) -> str:
        return f"FromSbi({type(self.posterior).__name__})"

    def sample(self, n: int, x: Any) -> Tensor:
        """``n`` posterior draws for one observation ``x`` (``[*x_shape]`` or ``[1, *x_shape]``):
        ``[n, d_theta]`` float32 on the CPU."""
        check_positive_int(n)
        draws = self.posterior.sample((n,), x=as_tensor(x, "x"), show_progress_bars=False)
        return as_tensor(draws, "draws").reshape(n, -1)

    def sample_batched(self, n: int, xs: Any) -> Tensor:
        """``n`` draws for each of B observations ``xs`` ``[B, *x_shape]``: ``[B, n, d_theta]`` (sbi's
        ``sample_batched`` returns ``[n, B, d_theta]``); one ``sample`` call per observation for a posterior
        without batched sampling."""
        check_positive_int(n)
        xs = as_tensor(xs, "xs")
        if hasattr(self.posterior, "sample_batched"):
            try:
                draws = self.posterior.sample_batched((n,), x=xs, show_progress_bars=False)
                return as_tensor(draws, "draws").reshape(n, xs.shape[0], -1).transpose(0, 1)
            except NotImplementedError:  # sbi's way of saying "this posterior samples one x at a time"
                pass
        return torch.stack([self.sample(n, xs[i : i + 1]) for i in range(xs.shape[0])])

    def log_prob(self, theta: Any, x: Any) -> Tensor:
        """log q(θ | x) for θ ``[n, d_theta]`` and one observation ``x``: ``[n]`` (sbi's ``log_prob``, where the
        posterior has one; normalised for the mass outside the prior's support unless ``normalize=False``)."""
        if not hasattr(self.posterior, "log_prob"):
            raise NotImplementedError(f"{type(self.posterior).__name__} has no log_prob")
        theta = as_tensor(theta, "theta")
        theta = theta[None] if theta.dim() == 1 else theta
        options = {}
        if not self.normalize and accepts_keyword(self.posterior.log_prob, "norm_posterior"):
            options["norm_posterior"] = False
        lp = self.posterior.log_prob(theta, x=as_tensor(x, "x"), **options)
        return as_tensor(lp, "log_prob").reshape(theta.shape[0])


def _history(summary: dict[str, Any]) -> dict[str, Any] | None:
    """sbi's ``inference.summary`` (training and validation loss per epoch) as simgen's history fields."""
    train, val = list(summary.get("training_loss") or []), list(summary.get("validation_loss") or [])
    if not train and not val:
        return None
    best = min(range(len(val)), key=val.__getitem__) if val else None
    return {"train_loss": train, "validation_loss": val, "best_epoch": best, "epochs": len(train or val),
            "best_validation_loss": None if best is None else val[best]}


def from_sbi(posterior_or_inference: Any, prior: Any = None, *, normalize: bool = True) -> FromSbi:
    """``FromSbi(posterior_or_inference, prior, normalize=normalize)``: an sbi posterior (or trained inference
    object) that simgen's diagnostics, plots and report accept."""
    return FromSbi(posterior_or_inference, prior, normalize=normalize)
