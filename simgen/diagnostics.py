r"""Checks of posteriors and emulators against references: two-sample tests, calibration, predictive checks.

Every check takes *any* object with the estimators' sampling interface, so it works for every family and both
directions:

- a posterior: ``sample_batched(n, xs)`` → ``[m, n, d_theta]`` (or ``sample(n, x)`` → ``[n, d_theta]``) and,
  for HPD coverage, ``log_prob(theta, x)`` → ``[n]`` (normalised or not: only its ordering within one x is used);
  :class:`~simgen.PosteriorEstimator`, :class:`~simgen.mcmc.MCMCPosterior` and hand-written analytic posteriors;
- an emulator: ``sample_batched(n, thetas)`` → ``[m, n, *x_shape]`` and, for the likelihood gap,
  ``log_prob(x, theta)`` → ``[n]``; :class:`~simgen.LikelihoodEstimator` or a simulator wrapped likewise.

A ``seed`` makes a check reproducible: the draws then use a ``torch.Generator`` seeded with it (passed as
``generator=`` when the object's method takes one, on the object's ``device`` when it has one) and torch's global
RNG is seeded inside a fork, so objects without a ``generator`` argument are reproducible too.

Results are dataclasses with a ``flagged`` property (``True`` when a test rejects at the stated level) and a
``summary()`` in words.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .estimators import as_tensor

__all__ = [
    "c2st",
    "mmd",
    "sbc",
    "sbc_from_draws",
    "coverage",
    "posterior_predictive",
    "compare_emulator",
    "log_prob_is_ode",
    "SBCResult",
    "CoverageResult",
    "PosteriorPredictiveResult",
    "EmulatorComparison",
    "StatisticComparison",
    "map_statistics",
]

#: families whose ``log_prob`` integrates an ODE (instantaneous change of variables) on every call
ODE_FAMILIES = ("cnf", "diffusion")


# ----------------------------------------------------------------------------------------- two-sample tests


def c2st(
    samples: Any,
    reference: Any,
    *,
    seed: int = 1,
    n_folds: int = 5,
    max_iter: int = 1000,
) -> float:
    r"""Classifier two-sample test: cross-validated accuracy of a classifier telling ``samples`` from
    ``reference`` (Lopez-Paz & Oquab 2017, "Revisiting classifier two-sample tests", arXiv:1610.06545).

    Configured as sbibm's (Lueckmann et al. 2021) so numbers compare with the published tables: both sets are
    z-scored with the *reference's* mean and standard deviation, the classifier is scikit-learn's MLP with two
    hidden layers of 10·d ReLU units (Adam), and the score is the mean accuracy over ``n_folds`` shuffled
    folds. 0.5 means indistinguishable, 1.0 perfectly separable.

    Args:
        samples: ``[n, d]`` draws to test.
        reference: ``[m, d]`` draws from the reference distribution.
        seed: seeds the folds and the classifier.

    Returns:
        The accuracy, a float in [0, 1].
    """
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    x, y = as_tensor(samples, "samples"), as_tensor(reference, "reference")
    if x.dim() == 1:
        x = x[:, None]
    if y.dim() == 1:
        y = y[:, None]
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"samples and reference must be [n, d] and [m, d]; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < n_folds or y.shape[0] < n_folds:
        raise ValueError(f"c2st needs at least n_folds={n_folds} rows in each set; got {x.shape[0]} and {y.shape[0]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("samples and reference must be finite")
    mean, std = y.mean(dim=0), y.std(dim=0).clamp_min(1e-12)
    data = torch.cat([(x - mean) / std, (y - mean) / std]).double().numpy()
    target = np.concatenate([np.zeros(x.shape[0]), np.ones(y.shape[0])])
    d = data.shape[1]
    classifier = MLPClassifier(
        activation="relu", hidden_layer_sizes=(10 * d, 10 * d), max_iter=max_iter, solver="adam", random_state=seed
    )
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, data, target, cv=folds, scoring="accuracy")))


def mmd(
    x: Any,
    y: Any,
    *,
    bandwidth: float | None = None,
    max_median_samples: int = 1000,
) -> float:
    r"""Squared maximum mean discrepancy, unbiased estimate, with a Gaussian kernel (Gretton et al. 2012, JMLR 13).

    .. math::
        \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)} \sum_{i \ne j} k(x_i, x_j)
        + \frac{1}{m(m-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{nm} \sum_{i, j} k(x_i, y_j),
        \qquad k(a, b) = \exp\!\Big(-\frac{\lVert a - b \rVert^2}{2 \sigma^2}\Big),

    with σ by the median heuristic: the median of the pairwise distances ‖a − b‖ in the pooled sample (on at most
    ``max_median_samples`` of its rows, the first ones). Zero in expectation when both sets come from one
    distribution (the estimate can then be slightly negative), positive otherwise. Rows of any shape are
    flattened (``[n, *shape]`` → ``[n, D]``); the kernel is isotropic, so standardise dimensions of different
    units first.

    Args:
        x: ``[n, *shape]`` draws, n ≥ 2.
        y: ``[m, *shape]`` draws, m ≥ 2.
        bandwidth: σ; ``None`` for the median heuristic.
        max_median_samples: rows used for the median heuristic.

    Returns:
        MMD²_u as a float (in [−2/(n−1), 2]).
    """
    a, b = as_tensor(x, "x"), as_tensor(y, "y")
    if a.dim() == 1:
        a = a[:, None]
    if b.dim() == 1:
        b = b[:, None]
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"x and y must have rows of one shape; got {list(a.shape)} and {list(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"mmd needs at least 2 rows in each set; got {a.shape[0]} and {b.shape[0]}")
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("x and y must be finite")
    if bandwidth is None:
        pooled = torch.cat([a[: max_median_samples // 2], b[: max_median_samples // 2]])
        dist = torch.cdist(pooled, pooled)
        off = dist[~torch.eye(pooled.shape[0], dtype=torch.bool)]
        off = off[off > 0]
        bandwidth = float(off.median()) if off.numel() else 1.0
    elif not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive; got {bandwidth}")
    gamma = 1.0 / (2.0 * bandwidth**2)
    n, m = a.shape[0], b.shape[0]
    k_aa = torch.exp(-gamma * torch.cdist(a, a) ** 2)
    k_bb = torch.exp(-gamma * torch.cdist(b, b) ** 2)
    k_ab = torch.exp(-gamma * torch.cdist(a, b) ** 2)
    term_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    term_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return float(term_a + term_b - 2 * k_ab.mean())


# ----------------------------------------------------------------------------------------- drawing helpers


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's global RNG (CPU and CUDA) inside a fork when ``seed`` is given; no-op otherwise."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _generator(obj: Any, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    device = getattr(obj, "device", None)
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))


def _draw_batched(obj: Any, n: int, contexts: Tensor, generator: torch.Generator | None, what: str) -> Tensor:
    """``n`` draws per context row from ``obj``: ``[m, n, *shape]`` on the CPU, float32."""
    kwargs: dict[str, Any] = {}
    if hasattr(obj, "sample_batched"):
        if generator is not None and _accepts(obj.sample_batched, "generator"):
            kwargs["generator"] = generator
        out = obj.sample_batched(n, contexts, **kwargs)
    elif hasattr(obj, "sample"):
        if generator is not None and _accepts(obj.sample, "generator"):
            kwargs["generator"] = generator
        out = torch.stack([as_tensor(obj.sample(n, contexts[i : i + 1], **kwargs), what)
                           for i in range(contexts.shape[0])])
    else:
        raise ValueError(f"{what} must have sample_batched(n, contexts) or sample(n, context); got "
                         f"{type(obj).__name__}")
    out = as_tensor(out, f"{what} draws")
    if out.dim() < 2 or out.shape[:2] != (contexts.shape[0], n):
        raise ValueError(f"{what}.sample_batched({n}, [{contexts.shape[0]}, ...]) must return "
                         f"[{contexts.shape[0]}, {n}, ...]; got {list(out.shape)}")
    return out


def _draws(obj: Any, n: int, contexts: Tensor, seed: int | None, batch_size: int, what: str) -> Tensor:
    """Draws for all context rows, ``batch_size`` rows per call (one generator for all calls)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_samples must be a positive int; got {n!r}")
    generator = _generator(obj, seed)
    with _seeded(seed):
        parts = [_draw_batched(obj, n, contexts[s : s + batch_size], generator, what)
                 for s in range(0, contexts.shape[0], batch_size)]
    return torch.cat(parts)


def _child_seeds(seed: int, k: int) -> list[int]:
    """``k`` independent seeds derived from ``seed`` (``numpy.random.SeedSequence``)."""
    return [int(v) for v in np.random.SeedSequence(int(seed)).generate_state(k, dtype=np.uint64) % 2**62]


def _simulate(simulator: Any, theta: Tensor, seed: int | None) -> Tensor:
    """``simulator(theta)`` with a seeded ``generator=`` where it takes one."""
    with _seeded(seed):
        if seed is not None and _accepts(simulator, "generator"):
            return as_tensor(simulator(theta, generator=torch.Generator().manual_seed(int(seed))), "simulations")
        return as_tensor(simulator(theta), "simulations")


def _check_pairs(theta: Any, x: Any) -> tuple[Tensor, Tensor]:
    theta, x = as_tensor(theta, "theta"), as_tensor(x, "x")
    if theta.dim() == 1:
        theta = theta[:, None]
    if theta.dim() != 2:
        raise ValueError(f"theta must be [n, d_theta]; got {list(theta.shape)}")
    if x.dim() < 2 or x.shape[0] != theta.shape[0]:
        raise ValueError(f"x must be [n, *x_shape] with theta's n = {theta.shape[0]} rows; got {list(x.shape)}")
    return theta, x


def log_prob_is_ode(obj: Any) -> bool:
    r"""Whether evaluating ``obj.log_prob`` integrates an ODE on every call (so HPD coverage would be slow).

    An object says so with a boolean attribute ``log_prob_is_ode`` (its own value decides, ``True`` or
    ``False``). Otherwise the objects it wraps are searched through their ``density`` and ``likelihood``
    attributes (an estimator's :class:`~simgen.models.TransformedDensity` and family; an
    :class:`~simgen.mcmc.MCMCPosterior`'s emulator): the answer is ``True`` when one of them has
    ``log_prob_is_ode = True`` or a ``family`` in :data:`ODE_FAMILIES` (``"cnf"``, ``"diffusion"``: log-density by
    the instantaneous change of variables along the probability-flow ODE), else ``False``.
    """
    own = getattr(obj, "log_prob_is_ode", None)
    if isinstance(own, bool):
        return own
    seen: set[int] = set()
    stack = [getattr(obj, name, None) for name in ("density", "likelihood")]
    while stack:
        o = stack.pop()
        if o is None or id(o) in seen:
            continue
        seen.add(id(o))
        if getattr(o, "log_prob_is_ode", None) is True or getattr(o, "family", None) in ODE_FAMILIES:
            return True
        stack.extend(getattr(o, name, None) for name in ("density", "likelihood"))
    return False


# ----------------------------------------------------------------------------------------- calibration


def _chi2_uniform_pvalue(ranks: Tensor, num_samples: int, bins: int) -> float:
    """χ² test that integer ranks are uniform on {0, …, L}: ranks grouped into ``bins`` consecutive groups, each
    with its exact expected share."""
    from scipy.stats import chi2

    edges = np.floor(np.arange(num_samples + 1) * bins / (num_samples + 1)).astype(int)  # group of each rank value
    expected = np.bincount(edges, minlength=bins) / (num_samples + 1) * ranks.shape[0]
    observed = np.bincount(edges[ranks.numpy().astype(int)], minlength=bins)
    stat = float(((observed - expected) ** 2 / expected).sum())
    return float(chi2.sf(stat, bins - 1))


def _ks(u: Tensor) -> tuple[float, float]:
    """Kolmogorov–Smirnov statistic (max |ECDF(u) − u|) and p-value of ``u`` against U(0, 1)."""
    from scipy.stats import kstest

    res = kstest(u.double().numpy(), "uniform")
    return float(res.statistic), float(res.pvalue)


@dataclass
class SBCResult:
    r"""Simulation-based calibration (Talts et al. 2018, arXiv:1804.06788).

    For each test pair (θ*_i, x_i) with θ*_i ~ p(θ), x_i ~ p(x | θ*_i) and L posterior draws θ_{i,l} ~ q(θ | x_i),
    the rank of coordinate j is r_ij = #{l : θ_{i,l,j} < θ*_ij} ∈ {0, …, L} (sbi's convention). If q is the
    true posterior, r_ij is uniform on {0, …, L}. A ∪-shaped histogram means an over-confident (too narrow)
    posterior, a ∩ shape an under-confident one, a slope a bias.

    Attributes:
        ranks: ``[n, d_theta]`` integer-valued ranks (float32).
        pvalues: ``[d_theta]`` χ² uniformity test: ranks grouped into ``bins`` groups of consecutive values, each
            with its exact expected count n · |group| / (L + 1), statistic against χ²(bins − 1).
        num_samples: L.
        bins: groups of the χ² test.
        alpha: family-wise level of :attr:`flagged` (Bonferroni over the d_theta tests).
    """

    ranks: Tensor
    pvalues: Tensor
    num_samples: int
    bins: int
    alpha: float = 0.01

    @property
    def max_ecdf_deviation(self) -> Tensor:
        """``[d_theta]``: max_u |ECDF(u) − u| of the normalised mid-ranks u = (r + ½)/(L + 1)."""
        u = (self.ranks + 0.5) / (self.num_samples + 1)
        return torch.tensor([_ks(u[:, j])[0] for j in range(u.shape[1])])

    @property
    def flagged(self) -> bool:
        """Some parameter's ranks reject uniformity at level ``alpha`` / d_theta."""
        return bool((self.pvalues < self.alpha / self.pvalues.numel()).any())

    def summary(self) -> str:
        worst = int(self.pvalues.argmin())
        verdict = "NOT uniform (miscalibrated)" if self.flagged else "consistent with uniform"
        dev = self.max_ecdf_deviation
        return (f"SBC on {self.ranks.shape[0]} test pairs, {self.num_samples} draws each: ranks {verdict}; "
                f"smallest p-value {float(self.pvalues[worst]):.3g} (parameter {worst + 1}); "
                f"max ECDF deviation {float(dev.max()):.3f}")


def sbc(
    posterior: Any,
    theta: Any,
    x: Any,
    *,
    num_samples: int = 100,
    bins: int | None = None,
    alpha: float = 0.01,
    seed: int | None = None,
    batch_size: int = 100,
) -> SBCResult:
    r"""Simulation-based calibration ranks with a uniformity test per parameter (see :class:`SBCResult`).

    Args:
        posterior: an object with ``sample_batched(n, xs)`` → ``[m, n, d_theta]`` (or ``sample(n, x)``).
        theta: ``[n, d_theta]`` test parameters drawn from the prior.
        x: ``[n, *x_shape]`` one simulation of each.
        num_samples: posterior draws L per test pair.
        bins: groups of the χ² test; default min(20, n // 5, L + 1), at least 2.
        alpha: family-wise level of ``flagged``.
        seed: makes the draws reproducible (see the module docstring).
        batch_size: observations per ``sample_batched`` call.

    Returns:
        :class:`SBCResult` with ``.ranks`` ``[n, d_theta]`` and ``.pvalues`` ``[d_theta]``.
    """
    theta, x = _check_pairs(theta, x)
    draws = _draws(posterior, num_samples, x, seed, batch_size, "posterior")
    if draws.dim() != 3 or draws.shape[2] != theta.shape[1]:
        raise ValueError(f"posterior draws must be [m, n, {theta.shape[1]}]; got {list(draws.shape)}")
    return sbc_from_draws(draws, theta, bins=bins, alpha=alpha)


def sbc_from_draws(draws: Any, theta: Any, *, bins: int | None = None, alpha: float = 0.01) -> SBCResult:
    """:func:`sbc` on given draws ``[n, L, d_theta]`` (one set per test parameter ``theta`` ``[n, d_theta]``)."""
    draws, theta = as_tensor(draws, "draws"), as_tensor(theta, "theta")
    if draws.dim() != 3 or theta.dim() != 2 or draws.shape[0] != theta.shape[0] or draws.shape[2] != theta.shape[1]:
        raise ValueError(f"draws must be [n, L, d_theta] for theta [n, d_theta]; got {list(draws.shape)} and "
                         f"{list(theta.shape)}")
    n, num_samples = theta.shape[0], draws.shape[1]
    ranks = (draws < theta[:, None, :]).sum(dim=1).to(torch.float32)
    bins = bins if bins is not None else max(2, min(20, n // 5, num_samples + 1))
    if not 2 <= bins <= num_samples + 1:
        raise ValueError(f"bins must be in [2, L + 1 = {num_samples + 1}]; got {bins}")
    pvalues = torch.tensor([_chi2_uniform_pvalue(ranks[:, j], num_samples, bins) for j in range(theta.shape[1])])
    return SBCResult(ranks=ranks, pvalues=pvalues, num_samples=num_samples, bins=bins, alpha=alpha)


@dataclass
class CoverageResult:
    r"""Expected coverage of credible regions at levels α (Hermans et al. 2022, arXiv:2110.06581; TARP: Lemos et
    al. 2023, arXiv:2302.03026).

    For test pair i, a *credibility* c_i ∈ (0, 1) says how deep in its posterior θ*_i lies; θ*_i is inside the
    α-credible region exactly when c_i ≤ α, so the expected coverage is C(α) = mean_i 1[c_i ≤ α]. A calibrated
    posterior has c ~ U(0, 1), i.e. C(α) = α (the diagonal); C(α) < α means over-confident (regions too small),
    C(α) > α under-confident.

    - HPD: c_i = share of the L draws θ_{i,l} with q(θ_{i,l} | x_i) > q(θ*_i | x_i) (highest-density regions,
      from ``log_prob``);
    - TARP: a reference point θ_r,i drawn uniformly in the box of the test θ (each coordinate rescaled to [0, 1]
      by the test θ's range, as sbi), c_i = share of draws closer to θ_r,i than θ*_i (Euclidean distance): balls
      around random points, needs samples only.

    Ties count one half and c = (k + ½)/(L + 1) for a count k ∈ {0, …, L} (mid-ranks), so c lies in (0, 1).

    Attributes:
        levels: ``[k]`` credibility levels α.
        tarp: ``[k]`` TARP expected coverage at the levels.
        hpd: ``[k]`` HPD expected coverage, or ``None`` when skipped (see ``note``).
        tarp_credibility, hpd_credibility: the c_i ``[n]`` (``hpd_credibility`` ``None`` when skipped).
        note: why HPD was skipped, if it was.
        alpha: level of :attr:`flagged` (a Kolmogorov–Smirnov test of c against U(0, 1), Bonferroni over the
            curves computed).
    """

    levels: Tensor
    tarp: Tensor
    hpd: Tensor | None
    tarp_credibility: Tensor
    hpd_credibility: Tensor | None
    note: str = ""
    alpha: float = 0.01

    def _curves(self) -> dict[str, Tensor]:
        out = {"tarp": self.tarp_credibility}
        if self.hpd_credibility is not None:
            out["hpd"] = self.hpd_credibility
        return out

    @property
    def max_deviation(self) -> dict[str, float]:
        """Per method, max_α |C(α) − α| over all α (the Kolmogorov–Smirnov statistic of the credibilities)."""
        return {k: _ks(c)[0] for k, c in self._curves().items()}

    @property
    def pvalues(self) -> dict[str, float]:
        """Per method, the Kolmogorov–Smirnov p-value of c ~ U(0, 1)."""
        return {k: _ks(c)[1] for k, c in self._curves().items()}

    @property
    def flagged(self) -> bool:
        """Some coverage curve departs from the diagonal at level ``alpha`` (Bonferroni over the curves)."""
        p = self.pvalues
        return any(v < self.alpha / len(p) for v in p.values())

    def summary(self) -> str:
        parts = []
        for k, c in self._curves().items():
            dev, p = _ks(c)
            text = f"{k.upper()}: max deviation from the diagonal {dev:.3f} (p = {p:.3g})"
            if k == "hpd" and p < self.alpha:
                text += ", over-confident" if float(c.mean()) > 0.5 else ", under-confident"
            parts.append(text)
        verdict = "miscalibrated" if self.flagged else "consistent with calibration"
        note = f" [{self.note}]" if self.note else ""
        return f"coverage on {self.tarp_credibility.shape[0]} test pairs: {verdict}; " + "; ".join(parts) + note


def coverage(
    posterior: Any,
    theta: Any,
    x: Any,
    *,
    levels: Any = None,
    num_samples: int = 100,
    hpd: bool | None = None,
    alpha: float = 0.01,
    seed: int | None = None,
    batch_size: int = 100,
) -> CoverageResult:
    r"""Expected coverage of HPD regions (from ``log_prob``) and of TARP regions (from samples); see
    :class:`CoverageResult`.

    Args:
        posterior: ``sample_batched(n, xs)`` → ``[m, n, d_theta]``; for HPD also ``log_prob(theta, x)`` → ``[n]``
            with one observation ``x`` broadcast over θ (an unnormalised log-density is fine).
        theta: ``[n, d_theta]`` test parameters drawn from the prior.
        x: ``[n, *x_shape]`` one simulation of each.
        levels: credibility levels α, default 0, 0.05, …, 1.
        num_samples: posterior draws L per test pair.
        hpd: ``True`` computes HPD coverage, ``False`` skips it, ``None`` (default) computes it unless the object
            has no ``log_prob`` or its ``log_prob`` is an ODE solve per call (:func:`log_prob_is_ode`); a skip is
            explained in ``.note``.
        alpha: level of ``flagged``.
        seed: makes the draws and TARP's reference points reproducible.
        batch_size: observations per ``sample_batched`` call.

    Returns:
        :class:`CoverageResult` with ``.levels``, ``.hpd`` and ``.tarp``.
    """
    theta, x = _check_pairs(theta, x)
    levels = torch.linspace(0, 1, 21) if levels is None else as_tensor(levels, "levels").reshape(-1)
    if levels.numel() < 1 or (levels < 0).any() or (levels > 1).any():
        raise ValueError(f"levels must lie in [0, 1]; got {levels.tolist()}")
    draws = _draws(posterior, num_samples, x, seed, batch_size, "posterior")
    if draws.dim() != 3 or draws.shape[2] != theta.shape[1]:
        raise ValueError(f"posterior draws must be [m, n, {theta.shape[1]}]; got {list(draws.shape)}")

    note = ""
    if hpd is None:
        if not hasattr(posterior, "log_prob"):
            hpd, note = False, "HPD coverage skipped: the posterior has no log_prob"
        elif log_prob_is_ode(posterior):
            hpd, note = False, ("HPD coverage skipped: this posterior's log_prob is an ODE solve per call "
                                "(pass hpd=True to compute it anyway); TARP needs samples only")
        else:
            hpd = True
    hpd_c = None
    if hpd:
        scores = []
        with _seeded(seed):
            for i in range(theta.shape[0]):
                points = torch.cat([theta[i : i + 1], draws[i]])
                lp = as_tensor(posterior.log_prob(points, x[i : i + 1]), "log_prob").reshape(-1)
                if lp.shape[0] != points.shape[0]:
                    raise ValueError(f"log_prob of [{points.shape[0]}, d] rows must return [{points.shape[0]}]; "
                                     f"got {list(lp.shape)}")
                scores.append(lp)
        lp = torch.stack(scores)  # [n, 1 + L]
        hpd_c = _mid_credibility(lp[:, 1:] > lp[:, :1], lp[:, 1:] == lp[:, :1])
    tarp_c = _tarp_credibility(draws, theta, seed)
    curve = lambda c: (c[None, :] <= levels[:, None]).float().mean(dim=1)  # noqa: E731
    return CoverageResult(
        levels=levels, tarp=curve(tarp_c), hpd=None if hpd_c is None else curve(hpd_c),
        tarp_credibility=tarp_c, hpd_credibility=hpd_c, note=note, alpha=alpha,
    )


def _mid_credibility(beyond: Tensor, tied: Tensor) -> Tensor:
    """c = (#beyond + ½ #tied + ½)/(L + 1) per row of ``[n, L]`` indicator matrices."""
    num = beyond.shape[1]
    return ((beyond.sum(1) + 0.5 * tied.sum(1) + 0.5) / (num + 1)).to(torch.float32)


def _tarp_credibility(draws: Tensor, theta: Tensor, seed: int | None) -> Tensor:
    """TARP credibilities: reference points uniform in the test θ's bounding box, distances after rescaling
    each coordinate to [0, 1] by that box."""
    lo, hi = theta.min(dim=0).values, theta.max(dim=0).values
    scale = (hi - lo).clamp_min(1e-12)
    generator = torch.Generator().manual_seed(_child_seeds(seed, 1)[0]) if seed is not None else None
    refs = torch.rand(theta.shape, generator=generator)  # already in the rescaled box
    t = (theta - lo) / scale
    s = (draws - lo) / scale
    d_samples = (s - refs[:, None, :]).norm(dim=2)  # [n, L]
    d_true = (t - refs).norm(dim=1, keepdim=True)  # [n, 1]
    return _mid_credibility(d_samples < d_true, d_samples == d_true)


# ----------------------------------------------------------------------------------------- summary statistics


def _is_map(x_shape: Sequence[int], kind: str | None) -> bool:
    if kind is not None:
        return kind == "map"
    return len(x_shape) >= 2


def map_statistics(maps: Any, *, loc: float = 0.0, scale: float = 1.0, side: float | None = None) -> dict[str, Tensor]:
    r"""Summary statistics of square maps ``[n, *lead, N, N]`` for comparisons (from :mod:`simulators.statistics`).

    The maps are first standardised as κ̃ = (κ − ``loc``)/``scale`` (pass the *reference* set's pixel mean and
    standard deviation so that the same fixed function is applied to both sets), then:

    - ``power_spectrum``: :func:`~simulators.statistics.binned_power_spectrum` of κ (unstandardised), bins
      b = 1 … N/2 (field side ``side`` radians, default 5°);
    - ``peak_counts``: :func:`~simulators.statistics.peak_counts` of κ̃ (heights in units of ``scale``, edges −1…5);
    - ``pixel_histogram``: :func:`~simulators.statistics.pixel_histogram` of κ̃ on 20 bins over [−4, 6];
    - ``moments``: variance, skewness, excess kurtosis of κ.

    Leading channel/patch dimensions are flattened into the statistic's dimension.

    Returns:
        name → ``[n, k]`` float32.
    """
    from simulators import statistics

    m = as_tensor(maps, "maps")
    if m.dim() < 3 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"maps must be [n, ..., N, N] (square); got {list(m.shape)}")
    n = m.shape[0]
    z = (m - loc) / scale
    ps_kwargs = {} if side is None else {"side": side}
    out = {
        "power_spectrum": statistics.binned_power_spectrum(m, **ps_kwargs),
        "peak_counts": statistics.peak_counts(z, sigma_ref=1.0),
        "pixel_histogram": statistics.pixel_histogram(z, sigma_ref=1.0),
        "moments": statistics.moments(m),
    }
    return {k: v.reshape(n, -1) for k, v in out.items()}


@dataclass
class StatisticComparison:
    r"""One summary statistic (k bins) compared between a simulated and an emulated set at each of m θ.

    z_ij = (ē_ij − s̄_ij) / √(v^s_ij/n_s + v^e_ij/n_e): two-sample z-score of bin j's mean at θ_i (≈ N(0, 1) when
    both sets come from one distribution).

    Attributes:
        name: the statistic.
        simulated_mean, emulated_mean: ``[m, k]``.
        simulated_std: ``[m, k]`` spread of the statistic over simulations.
        z: ``[m, k]``.
    """

    name: str
    simulated_mean: Tensor
    emulated_mean: Tensor
    simulated_std: Tensor
    z: Tensor

    @property
    def max_abs_z(self) -> float:
        finite = self.z[torch.isfinite(self.z)]
        return float(finite.abs().max()) if finite.numel() else 0.0

    @property
    def relative_error(self) -> Tensor:
        """``[m, k]``: (ē − s̄)/|s̄| (NaN where s̄ = 0)."""
        return (self.emulated_mean - self.simulated_mean) / self.simulated_mean.abs()


def _compare_statistic(name: str, sim: Tensor, emu: Tensor) -> StatisticComparison:
    """``sim`` ``[m, n_s, k]``, ``emu`` ``[m, n_e, k]`` → :class:`StatisticComparison` (non-finite rows dropped
    per bin)."""
    def stats(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = t.double()
        ok = torch.isfinite(t)
        cnt = ok.sum(1).clamp_min(1)
        z = torch.where(ok, t, 0.0)
        mean = z.sum(1) / cnt
        var = torch.where(ok, (t - mean[:, None]) ** 2, 0.0).sum(1) / (cnt - 1).clamp_min(1)
        return mean, var, cnt

    ms, vs, ns = stats(sim)
    me, ve, ne = stats(emu)
    se = torch.sqrt(vs / ns + ve / ne)
    z = torch.where(se > 0, (me - ms) / se, torch.where(me == ms, 0.0, math.inf))
    return StatisticComparison(name, ms.float(), me.float(), vs.sqrt().float(), z.float())


# ----------------------------------------------------------------------------------------- posterior predictive


@dataclass
class PosteriorPredictiveResult:
    r"""Posterior predictive check: x̃_k ~ p(x | θ_k), θ_k ~ q(θ | x_obs), compared with x_obs.

    For each compared quantity (every dimension of a vector x, every bin of each map statistic), the predictive
    quantile u = (#{x̃ < x_obs} + ½ #{x̃ = x_obs}) / K and the two-sided tail probability p = 2 min(u, 1 − u). A
    well-specified model and a good posterior give x_obs inside the predictive cloud (p not small).

    Attributes:
        theta: ``[K, d_theta]`` posterior draws.
        x: ``[K, *x_shape]`` their simulations (failed ones, non-finite, dropped).
        x_obs: ``[*x_shape]``.
        quantiles: name → ``[k]`` predictive quantiles u of x_obs (``"x"`` for vectors, one entry per map
            statistic for maps).
        num_failed: simulations dropped as non-finite.
        alpha: family-wise level of :attr:`flagged` (Bonferroni over every compared quantity).
    """

    theta: Tensor
    x: Tensor
    x_obs: Tensor
    quantiles: dict[str, Tensor]
    num_failed: int = 0
    alpha: float = 0.01

    @property
    def pvalues(self) -> dict[str, Tensor]:
        return {k: 2 * torch.minimum(u, 1 - u) for k, u in self.quantiles.items()}

    @property
    def flagged(self) -> bool:
        """Some compared quantity of x_obs lies in a predictive tail at level ``alpha`` / (number of quantities)."""
        p = self.pvalues
        total = sum(v.numel() for v in p.values())
        return any(bool((v < self.alpha / total).any()) for v in p.values())

    def summary(self) -> str:
        parts = []
        for k, v in self.pvalues.items():
            j = int(v.argmin())
            parts.append(f"{k}: smallest tail probability {float(v[j]):.3g} (entry {j})")
        verdict = "x_obs in a predictive tail" if self.flagged else "x_obs consistent with the predictive"
        failed = f"; {self.num_failed} failed simulations dropped" if self.num_failed else ""
        return f"posterior predictive ({self.x.shape[0]} simulations): {verdict}; " + "; ".join(parts) + failed


def posterior_predictive(
    posterior: Any,
    simulator: Any,
    x_obs: Any,
    *,
    num_samples: int = 1000,
    alpha: float = 0.01,
    seed: int | None = None,
) -> PosteriorPredictiveResult:
    r"""Simulate from posterior draws and compare with the observation (see :class:`PosteriorPredictiveResult`).

    Args:
        posterior: ``sample(n, x_obs)`` → ``[n, d_theta]`` (or ``sample_batched``).
        simulator: ``simulator(theta)`` → ``[n, *x_shape]`` (a ``generator=`` is passed when it takes one); its
            ``x_kind`` (when present) says whether x is a map, else ``[N, N]`` rows are taken as maps.
        x_obs: one observation ``[*x_shape]`` or ``[1, *x_shape]``.
        num_samples: posterior draws K.
        alpha: level of ``flagged``.
        seed: makes the draws and simulations reproducible.

    Returns:
        :class:`PosteriorPredictiveResult`.
    """
    x_obs = as_tensor(x_obs, "x_obs")
    x_shape = getattr(simulator, "x_shape", None)
    if x_shape is not None and tuple(x_obs.shape) == tuple(x_shape):
        x_obs = x_obs[None]
    elif x_shape is None and x_obs.dim() == 1:
        x_obs = x_obs[None]
    if x_obs.shape[0] != 1:
        raise ValueError(f"x_obs must be one observation [*x_shape] or [1, *x_shape]; got {list(x_obs.shape)}")
    seed_post, seed_sim = (None, None) if seed is None else _child_seeds(seed, 2)
    theta = _draws(posterior, num_samples, x_obs, seed_post, 1, "posterior")[0]
    x = _simulate(simulator, theta, seed_sim)
    if x.shape[0] != theta.shape[0] or x.shape[1:] != x_obs.shape[1:]:
        raise ValueError(f"simulator returned {list(x.shape)}; expected [{theta.shape[0]}, "
                         f"{', '.join(map(str, x_obs.shape[1:]))}] (x_obs's row shape)")
    ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if not ok.any():
        raise ValueError("every posterior-predictive simulation failed (non-finite)")
    theta, x = theta[ok], x[ok]

    def quantile(pred: Tensor, obs: Tensor) -> Tensor:
        return ((pred < obs).float().mean(0) + 0.5 * (pred == obs).float().mean(0)).reshape(-1)

    if _is_map(tuple(x.shape[1:]), getattr(simulator, "x_kind", None)) and x.shape[-1] == x.shape[-2]:
        loc, scale = float(x.mean()), float(x.std().clamp_min(1e-12))
        side = getattr(simulator, "side", None)
        pred = map_statistics(x, loc=loc, scale=scale, side=side)
        obs = map_statistics(x_obs, loc=loc, scale=scale, side=side)
        quantiles = {k: quantile(pred[k], obs[k]) for k in pred}
    else:
        quantiles = {"x": quantile(x.reshape(x.shape[0], -1), x_obs.reshape(1, -1))}
    return PosteriorPredictiveResult(theta=theta, x=x, x_obs=x_obs[0], quantiles=quantiles,
                                     num_failed=int((~ok).sum()), alpha=alpha)


# ----------------------------------------------------------------------------------------- emulator vs simulator


@dataclass
class EmulatorComparison:
    r"""An emulator q(x | θ) against its simulator p(x | θ) at m parameter rows, n draws of each per row.

    Attributes:
        theta: ``[m, d_theta]``.
        simulated, emulated: ``[m, n, *x_shape]`` the draws compared (kept for plots).
        is_map: whether x was compared as maps.
        c2st: ``[m]`` classifier two-sample accuracy per θ (:func:`c2st`, simulated draws as the reference) on
            the raw x for vectors, on the summary statistics of :func:`map_statistics` for maps (a classifier on
            N² pixels would need far more draws).
        mmd: ``[m]`` :func:`mmd` per θ, on x z-scored by the simulated draws' per-dimension statistics (vectors)
            or by their pixel mean and standard deviation (maps).
        wasserstein: ``[m, k]`` 1-D Wasserstein distance per dimension in units of the simulated standard
            deviation (vectors, k = d_x), or of all pixel values pooled (maps, k = 1).
        ks_pvalues: ``[m, d_x]`` two-sample Kolmogorov–Smirnov p-values per dimension (vectors; ``None`` for maps,
            whose pixels are not independent draws).
        statistics: name → :class:`StatisticComparison`: for maps the power spectrum, peak counts, pixel
            histogram and moments; for vectors each observable's mean and variance.
        log_likelihood_gap: ``[m]`` E_p[log p(x | θ) − log q(x | θ)] in nats, estimated on the simulated draws
            (fresh simulations, so held out from training; ≥ 0 in expectation: the KL divergence
            KL(p(·|θ) ‖ q(·|θ))), or ``None`` without an exact simulator likelihood or emulator ``log_prob``.
        log_likelihood_gap_se: ``[m]`` its standard error.
        num_dims: dimensions D of x, for the gap per dimension.
        c2st_tolerance: accuracy above which :attr:`flagged` reports a C2ST.
        alpha: family-wise level of the z-score and KS flags (Bonferroni over all bins and θ rows).
    """

    theta: Tensor
    simulated: Tensor
    emulated: Tensor
    is_map: bool
    c2st: Tensor
    mmd: Tensor
    wasserstein: Tensor
    ks_pvalues: Tensor | None
    statistics: dict[str, StatisticComparison] = field(default_factory=dict)
    log_likelihood_gap: Tensor | None = None
    log_likelihood_gap_se: Tensor | None = None
    num_dims: int = 1
    c2st_tolerance: float = 0.55
    alpha: float = 0.01

    @property
    def gap_nats(self) -> float | None:
        """Mean over θ of the likelihood gap, nats."""
        return None if self.log_likelihood_gap is None else float(self.log_likelihood_gap.mean())

    @property
    def gap_nats_per_dim(self) -> float | None:
        """:attr:`gap_nats` / D."""
        return None if self.gap_nats is None else self.gap_nats / self.num_dims

    def reasons(self) -> list[str]:
        """What the tests reject, in words (empty when nothing is flagged)."""
        from scipy.stats import norm

        out = []
        bad = torch.nonzero(self.c2st > self.c2st_tolerance).flatten().tolist()
        if bad:
            out.append(f"C2ST > {self.c2st_tolerance} at θ rows {bad} (max {float(self.c2st.max()):.3f})")
        total = sum(s.z.numel() for s in self.statistics.values())
        if total:
            z_crit = float(norm.isf(self.alpha / (2 * total)))
            for s in self.statistics.values():
                if s.max_abs_z > z_crit:
                    out.append(f"{s.name}: max |z| {s.max_abs_z:.2f} > {z_crit:.2f}")
        if self.ks_pvalues is not None:
            p_min = float(self.ks_pvalues.min())
            if p_min < self.alpha / self.ks_pvalues.numel():
                out.append(f"per-dimension KS: smallest p-value {p_min:.3g}")
        return out

    @property
    def flagged(self) -> bool:
        return bool(self.reasons())

    def summary(self) -> str:
        text = (f"emulator vs simulator at {self.theta.shape[0]} θ, {self.simulated.shape[1]} draws each: "
                f"C2ST {float(self.c2st.mean()):.3f} (max {float(self.c2st.max()):.3f}), "
                f"MMD² {float(self.mmd.mean()):.3g}, W1/σ {float(self.wasserstein.mean()):.3f}")
        if self.gap_nats is not None:
            text += f", likelihood gap {self.gap_nats:.3f} nats ({self.gap_nats_per_dim:.4f} per dimension)"
        reasons = self.reasons()
        return text + ("; FLAGGED: " + "; ".join(reasons) if reasons else "; nothing flagged")

    def table(self) -> list[dict[str, Any]]:
        """One row per θ: C2ST, MMD², mean W1/σ, likelihood gap (for reports)."""
        rows = []
        for i in range(self.theta.shape[0]):
            row: dict[str, Any] = {"theta": ", ".join(f"{v:.3g}" for v in self.theta[i].tolist()),
                                   "C2ST": float(self.c2st[i]), "MMD²": float(self.mmd[i]),
                                   "W1/σ": float(self.wasserstein[i].mean())}
            if self.log_likelihood_gap is not None:
                row["gap (nats)"] = float(self.log_likelihood_gap[i])
                row["gap/dim"] = float(self.log_likelihood_gap[i]) / self.num_dims
            rows.append(row)
        return rows


def compare_emulator(
    emulator: Any,
    simulator: Any,
    theta: Any,
    *,
    num_samples: int = 1000,
    gap: bool | None = None,
    c2st_tolerance: float = 0.55,
    alpha: float = 0.01,
    seed: int | None = None,
) -> EmulatorComparison:
    r"""Emulated against simulated draws at given θ rows (see :class:`EmulatorComparison`).

    Args:
        emulator: ``sample_batched(n, thetas)`` → ``[m, n, *x_shape]``; for the gap also ``log_prob(x, theta)``
            → ``[n]`` (a :class:`~simgen.LikelihoodEstimator`).
        simulator: ``simulator(theta)`` → ``[n, *x_shape]``; with ``tractable`` true and ``log_likelihood(theta,
            x)`` the likelihood gap is computed; ``x_kind`` (when present) says whether x is a map.
        theta: ``[m, d_theta]`` (or ``[d_theta]``) parameters to compare at.
        num_samples: draws n of each per θ.
        gap: compute the likelihood gap (``None``: when the simulator is tractable and the emulator has
            ``log_prob``).
        c2st_tolerance: C2ST accuracy above which the comparison is flagged.
        alpha: family-wise level of the other flags.
        seed: makes the draws reproducible.

    Returns:
        :class:`EmulatorComparison`.
    """
    from scipy.stats import ks_2samp, wasserstein_distance

    theta = as_tensor(theta, "theta")
    if theta.dim() == 1:
        theta = theta[None]
    if theta.dim() != 2:
        raise ValueError(f"theta must be [m, d_theta] or [d_theta]; got {list(theta.shape)}")
    if num_samples < 5:
        raise ValueError(f"num_samples must be >= 5 (C2ST folds); got {num_samples}")
    m, n = theta.shape[0], num_samples
    seed_emu, seed_sim = (None, None) if seed is None else _child_seeds(seed, 2)
    emulated = _draws(emulator, n, theta, seed_emu, m, "emulator")
    simulated = _simulate(simulator, theta.repeat_interleave(n, dim=0), seed_sim)
    simulated = simulated.reshape(m, n, *simulated.shape[1:])
    if emulated.shape != simulated.shape:
        raise ValueError(f"emulated draws {list(emulated.shape)} and simulations {list(simulated.shape)} differ "
                         "in shape")
    x_shape = tuple(simulated.shape[2:])
    is_map = _is_map(x_shape, getattr(simulator, "x_kind", None)) and x_shape[-1] == x_shape[-2]
    num_dims = math.prod(x_shape)

    c2sts, mmds, w1s, kss = [], [], [], []
    statistics: dict[str, StatisticComparison] = {}
    if is_map:
        loc, scale = float(simulated.mean()), float(simulated.std().clamp_min(1e-12))
        side = getattr(simulator, "side", None)
        sim_stats = [map_statistics(simulated[i], loc=loc, scale=scale, side=side) for i in range(m)]
        emu_stats = [map_statistics(emulated[i], loc=loc, scale=scale, side=side) for i in range(m)]
        for name in sim_stats[0]:
            statistics[name] = _compare_statistic(name, torch.stack([s[name] for s in sim_stats]),
                                                  torch.stack([s[name] for s in emu_stats]))
        for i in range(m):
            feats = [_c2st_features(st) for st in (emu_stats[i], sim_stats[i])]
            keep = [torch.isfinite(f).all(dim=1) for f in feats]
            c2sts.append(c2st(feats[0][keep[0]], feats[1][keep[1]], seed=seed if seed is not None else 1))
            es, ss = (emulated[i] - loc) / scale, (simulated[i] - loc) / scale
            mmds.append(mmd(es, ss))
            w1s.append([wasserstein_distance(es.reshape(-1).numpy(), ss.reshape(-1).numpy())])
        ks_pvalues = None
    else:
        flat_e, flat_s = emulated.reshape(m, n, -1), simulated.reshape(m, n, -1)
        statistics["mean"] = _compare_statistic("mean", flat_s, flat_e)
        statistics["variance"] = _compare_statistic(  # mean squared deviation from each set's own mean
            "variance", (flat_s - flat_s.mean(1, keepdim=True)) ** 2, (flat_e - flat_e.mean(1, keepdim=True)) ** 2)
        for i in range(m):
            mean, std = flat_s[i].mean(0), flat_s[i].std(0).clamp_min(1e-12)
            es, ss = (flat_e[i] - mean) / std, (flat_s[i] - mean) / std
            c2sts.append(c2st(flat_e[i], flat_s[i], seed=seed if seed is not None else 1))
            mmds.append(mmd(es, ss))
            w1s.append([wasserstein_distance(es[:, j].numpy(), ss[:, j].numpy()) for j in range(es.shape[1])])
            kss.append([ks_2samp(es[:, j].numpy(), ss[:, j].numpy()).pvalue for j in range(es.shape[1])])
        ks_pvalues = torch.tensor(kss, dtype=torch.float32)

    gap_mean = gap_se = None
    if gap is None:
        gap = bool(getattr(simulator, "tractable", False)) and hasattr(emulator, "log_prob")
    if gap:
        log_p = torch.stack([as_tensor(simulator.log_likelihood(theta[i : i + 1], simulated[i]), "log_likelihood")
                             .double() for i in range(m)])
        with _seeded(seed):
            log_q = torch.stack([as_tensor(emulator.log_prob(simulated[i], theta[i : i + 1]), "emulator log_prob")
                                 .double().reshape(-1) for i in range(m)])
        diff = log_p - log_q  # [m, n]
        gap_mean = diff.mean(1).float()
        gap_se = (diff.std(1) / math.sqrt(n)).float()

    return EmulatorComparison(
        theta=theta, simulated=simulated, emulated=emulated, is_map=is_map,
        c2st=torch.tensor(c2sts, dtype=torch.float32), mmd=torch.tensor(mmds, dtype=torch.float32),
        wasserstein=torch.tensor(w1s, dtype=torch.float32), ks_pvalues=ks_pvalues, statistics=statistics,
        log_likelihood_gap=gap_mean, log_likelihood_gap_se=gap_se, num_dims=num_dims,
        c2st_tolerance=c2st_tolerance, alpha=alpha,
    )


def _c2st_features(stats: dict[str, Tensor]) -> Tensor:
    """Per-map classifier features (few, so that the classifier stays small): log power spectrum, log variance,
    skewness, kurtosis and the number of peaks."""
    m = stats["moments"]
    return torch.cat([torch.log(stats["power_spectrum"].clamp_min(1e-30)), torch.log(m[:, :1].clamp_min(1e-30)),
                      m[:, 1:], stats["peak_counts"].sum(1, keepdim=True)], dim=1)
