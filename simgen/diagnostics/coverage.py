r"""Expected coverage of credible regions: highest-density (HPD, from ``log_prob``) and TARP (from samples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..utils import as_tensor, seeded
from .draws import check_pairs, child_seeds, draw
from .uniformity import ks_uniform

__all__ = ["CoverageResult", "coverage", "log_prob_is_ode"]


def log_prob_is_ode(obj: Any) -> bool:
    r"""Whether evaluating ``obj.log_prob`` integrates an ODE on every call (so HPD coverage would be slow).

    An object says so with a boolean attribute ``log_prob_is_ode`` (its own value decides, ``True`` or
    ``False``). Otherwise the answer is ``True`` when ``obj`` or an object it wraps, through ``density`` and
    ``likelihood`` attributes (an estimator's :class:`~simgen.models.TransformedDensity` and family; an
    :class:`~simgen.mcmc.MCMCPosterior`'s emulator), declares ``log_prob_kind == "ode"``
    (:attr:`~simgen.models.ConditionalDensity.log_prob_kind`: log-density by the instantaneous change of
    variables along an ODE) or ``log_prob_is_ode = True``; else ``False``.
    """
    own = getattr(obj, "log_prob_is_ode", None)
    if isinstance(own, bool):
        return own
    seen: set[int] = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if o is None or id(o) in seen:
            continue
        seen.add(id(o))
        # duck-typed on purpose: a user's posterior object need not be a simgen class
        if getattr(o, "log_prob_kind", None) == "ode" or getattr(o, "log_prob_is_ode", None) is True:
            return True
        stack.extend(getattr(o, name, None) for name in ("density", "likelihood"))
    return False


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
        return {k: ks_uniform(c)[0] for k, c in self._curves().items()}

    @property
    def pvalues(self) -> dict[str, float]:
        """Per method, the Kolmogorov–Smirnov p-value of c ~ U(0, 1)."""
        return {k: ks_uniform(c)[1] for k, c in self._curves().items()}

    @property
    def flagged(self) -> bool:
        """Some coverage curve departs from the diagonal at level ``alpha`` (Bonferroni over the curves)."""
        p = self.pvalues
        return any(v < self.alpha / len(p) for v in p.values())

    def summary(self) -> str:
        parts = []
        for k, c in self._curves().items():
            dev, p = ks_uniform(c)
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
    theta, x = check_pairs(theta, x)
    levels = torch.linspace(0, 1, 21) if levels is None else as_tensor(levels, "levels").reshape(-1)
    if levels.numel() < 1 or (levels < 0).any() or (levels > 1).any():
        raise ValueError(f"levels must lie in [0, 1]; got {levels.tolist()}")
    draws = draw(posterior, num_samples, x, seed, batch_size, "posterior")
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
        with seeded(seed):
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
    generator = torch.Generator().manual_seed(child_seeds(seed, 1)[0]) if seed is not None else None
    refs = torch.rand(theta.shape, generator=generator)  # already in the rescaled box
    t = (theta - lo) / scale
    s = (draws - lo) / scale
    d_samples = (s - refs[:, None, :]).norm(dim=2)  # [n, L]
    d_true = (t - refs).norm(dim=1, keepdim=True)  # [n, 1]
    return _mid_credibility(d_samples < d_true, d_samples == d_true)
