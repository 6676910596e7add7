r"""Training pairs from a likelihood emulator: an amortised posterior at the emulator's accuracy.

An emulator q(x | θ) fitted on n simulations is a simulator of its own, as cheap to run as a network pass.
Pairs drawn from it,

    θ_j ~ p(θ),   x_j ~ q(x | θ_j),   j = 1, …, N,

joined to the n simulated ones, train a posterior estimator whose target is q's posterior
p_q(θ | x) ∝ q(x | θ) p(θ) where the simulated pairs are few and the exact one where q is exact. This pays where
a flow learns p(x | θ) from n simulations better than it learns p(θ | x) from the same n: where x has more
dimensions than θ, or the posterior is thin next to the prior, as on slcp; it costs where the emulator is the
less accurate of the two. It is the emulator-as-simulator idea of Lueckmann et al. (2019, "Likelihood-free
inference with emulator networks", AABI) used to amortise, where they used it to choose simulations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..training import TrainingConfig
from ..utils import check_positive_int, randint
from .likelihood import LikelihoodEstimator

__all__ = ["emulated_pairs", "fit_emulator"]


def fit_emulator(prior: Distribution, theta: Tensor, x: Tensor, *, x_kind: str | None = None,
                 discrete: Sequence[int] = (), device: str | torch.device | None = None, seed: int | None = None,
                 progress: bool = True, config: TrainingConfig | None = None, validation_index: Tensor | None = None,
                 **settings: Any) -> LikelihoodEstimator:
    """The emulator q(x | θ) that emulated pairs come from when none is given: ``LikelihoodEstimator(prior)``
    with its ``"auto"`` family (a flow; MNLE over x's ``discrete`` columns) fitted on the simulated pairs
    θ ``[n, d_theta]``, x ``[n, *x_shape]``, seeded by ``seed``, with the training ``config``/``settings`` the
    posterior's fit was given (on top of the family's defaults), the rows ``validation_index`` held out."""
    emulator = LikelihoodEstimator(prior, x_kind=x_kind, discrete=list(discrete) or None, device=device)
    emulator.fit(theta, x, seed=seed, progress=progress, config=config, validation_index=validation_index,
                 **settings)
    return emulator


def emulated_pairs(emulator: LikelihoodEstimator, n: int, *, seed: int | None = None) -> tuple[Tensor, Tensor]:
    """``n`` pairs θ ``[n, d_theta]`` ~ the emulator's prior, x ``[n, *x_shape]`` ~ q(x | θ) from a fitted
    :class:`~simgen.LikelihoodEstimator` (module docstring), seeded by ``seed``. Rows whose emulated x is not
    finite are set aside, with a warning that says how many.

    Raises:
        ValueError: ``n`` not a positive int, an emulator that is not a fitted likelihood estimator with a prior.
    """
    check_positive_int(n, "the number of emulated pairs")
    if not isinstance(emulator, LikelihoodEstimator):
        raise ValueError(f"emulated pairs come from a fitted LikelihoodEstimator; got {type(emulator).__name__}")
    if emulator.prior is None or emulator.density is None:
        raise ValueError("emulated pairs come from a fitted LikelihoodEstimator with a prior (its simulations' "
                         f"p(θ)); this one {'has no prior' if emulator.prior is None else 'is not fitted'}")
    generator = torch.Generator().manual_seed(int(randint(0, 2**62, ())) if seed is None else seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(randint(0, 2**62, (), generator=generator)))
        theta = emulator.prior.sample((n,)).reshape(n, -1).float()
    x = emulator.sample_batched(1, theta, generator=generator)[:, 0].cpu()
    finite = torch.isfinite(x.reshape(n, -1)).all(dim=1)
    if not finite.all():
        warnings.warn(f"{int((~finite).sum())} of {n} emulated x are not finite and were set aside",
                      RuntimeWarning, stacklevel=2)
    return theta[finite], x[finite]
