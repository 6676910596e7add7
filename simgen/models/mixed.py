r"""Mixed neural likelihood estimation (MNLE): a density for y with discrete and continuous columns.

Boelts, Lueckmann, Gao & Macke 2022, "Flexible and efficient simulation-based inference for models of
decision-making", eLife 11:e77220. With y = (d, v), d the discrete (integer-valued) columns and v the continuous
ones, the density factorises exactly as

    p(d, v | c) = p(d | c) · p(v | c, d),

a probability mass over d times a density over v. p(d | c) is a categorical network, p(v | c, d) a normalizing
flow (:class:`~simgen.models.Flow`) conditioned on c and on d. Both terms are exact, so ``log_prob`` is exact, and
Σ_d ∫ p(d, v | c) dv = 1.

The discrete columns are modelled **autoregressively**, p(d | c) = Π_j p(d_j | c, d_1, …, d_{j−1}), each factor a
categorical over the integers lo_j … hi_j of column j (the range seen in the training data, gaps included, so
that a count between two observed counts keeps some mass). Unlike independent factors given c (Boelts et al.'s
single-column case), this is exact for discrete columns that depend on each other given θ (two counts of one
process), at the cost of one small network per discrete column. A value outside lo_j … hi_j, or not an integer,
has probability 0 (``log_prob`` −∞).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..nets import ResidualMLP
from ..utils import multinomial
from .base import ConditionalDensity
from .flow import Flow

__all__ = ["MixedDensity", "MAX_CATEGORIES"]

#: most values one discrete column may take (hi − lo + 1); beyond it a categorical is the wrong model, and
#: dequantisation (``discrete_model="dequantize"``) treats the column as continuous
MAX_CATEGORIES = 1000


class MixedDensity(ConditionalDensity):
    r"""p(d, v | c) = Π_j Cat(d_j; softmax g_j(c, d_{<j})) · q_flow(v | c, d): discrete columns by autoregressive
    categorical networks, continuous ones by a flow conditioned on c and the discrete values (see the module
    docstring; Boelts et al. 2022, eLife 11:e77220).

    y is a vector ``[n, d_y]``; ``discrete`` lists the integer-valued columns and ``bounds`` their value ranges
    ``[[lo, hi], ...]`` (a :class:`~simgen.LikelihoodEstimator` fills both from its ``discrete=`` and the training
    data). Without discrete columns it is the flow alone. The estimator leaves the discrete columns unstandardised
    (the family must see the integers), and standardises the continuous ones as for any family.

    Args:
        discrete: indices of the discrete columns of y.
        bounds: ``[lo, hi]`` per discrete column (integers, lo ≤ hi).
        flow: the continuous part's :class:`~simgen.models.Flow` settings (``kind=``, ``transforms=``, ...).
        hidden_features, num_blocks: each categorical network's residual MLP.
    """

    family = "mnle"
    training_defaults: ClassVar[dict[str, Any]] = dict(Flow.training_defaults)
    data_kinds: ClassVar[frozenset[str]] = frozenset({"vector"})

    def __init__(self, discrete: Sequence[int] = (), bounds: Sequence[Sequence[int]] = (),
                 flow: dict[str, Any] | None = None, hidden_features: int = 64, num_blocks: int = 2) -> None:
        super().__init__()
        self.discrete = tuple(int(i) for i in discrete)
        self.bounds = tuple((int(lo), int(hi)) for lo, hi in bounds)
        if len(set(self.discrete)) != len(self.discrete) or any(i < 0 for i in self.discrete):
            raise ValueError(f"discrete must list distinct column indices >= 0; got {list(self.discrete)}")
        if self.bounds and len(self.bounds) != len(self.discrete):
            raise ValueError(f"bounds must give [lo, hi] for each of the {len(self.discrete)} discrete columns; "
                             f"got {len(self.bounds)}")
        for lo, hi in self.bounds:
            if not lo <= hi or hi - lo + 1 > MAX_CATEGORIES:
                raise ValueError(f"a discrete column's bounds must satisfy lo <= hi with at most {MAX_CATEGORIES} "
                                 f"values; got [{lo}, {hi}] (dequantise a column with more values)")
        if hidden_features < 1 or num_blocks < 1:
            raise ValueError(f"hidden_features and num_blocks must be >= 1; got {hidden_features}, {num_blocks}")
        self.flow_config = Flow(**(flow or {})).config()  # validated, defaults filled in
        self.hidden_features, self.num_blocks = int(hidden_features), int(num_blocks)
        self.continuous: Flow | None = None
        self.categorical = nn.ModuleList()

    def config(self) -> dict[str, Any]:
        return {"discrete": list(self.discrete), "bounds": [list(b) for b in self.bounds], "flow": self.flow_config,
                "hidden_features": self.hidden_features, "num_blocks": self.num_blocks}

    def _build(self) -> None:
        if len(self.y_shape) != 1:
            raise ValueError(f"MixedDensity models vectors [n, d]; got rows of shape {list(self.y_shape)}")
        d = self.y_shape[0]
        if any(i >= d for i in self.discrete):
            raise ValueError(f"discrete columns {list(self.discrete)} must lie in [0, {d})")
        if self.discrete and not self.bounds:
            raise ValueError("MixedDensity needs each discrete column's value range bounds=[[lo, hi], ...] "
                             "(a LikelihoodEstimator sets them from its training data)")
        self.cont_idx = [i for i in range(d) if i not in set(self.discrete)]
        c = self.context_features or 0
        self.register_buffer("low", torch.tensor([lo for lo, _ in self.bounds], dtype=torch.float32))
        self.register_buffer("high", torch.tensor([hi for _, hi in self.bounds], dtype=torch.float32))
        self.categorical = nn.ModuleList(
            ResidualMLP(c + j, hi - lo + 1, self.hidden_features, self.num_blocks, activation="relu")
            for j, (lo, hi) in enumerate(self.bounds)
        )
        self.continuous = None
        if self.cont_idx:
            flow_context = c + len(self.discrete)
            self.continuous = Flow(**self.flow_config).build((len(self.cont_idx),), flow_context or None)

    # ----------------------------------------------------------------- pieces
    def _scaled(self, d: Tensor) -> Tensor:
        """The discrete values mapped to about [−½, ½] (lo … hi), the networks' input."""
        return (d - self.low) / torch.clamp(self.high - self.low, min=1.0) - 0.5

    def _context(self, c: Tensor | None, rows: int, like: Tensor) -> Tensor:
        return c if c is not None else like.new_zeros(rows, 0)

    def _flow_context(self, c: Tensor, d: Tensor) -> Tensor | None:
        h = torch.cat([c, self._scaled(d)], dim=1)
        return h if h.shape[1] > 0 else None

    def log_prob_discrete(self, d: Tensor, c: Tensor | None) -> Tensor:
        """log p(d[i] | c[i]) ``[n]`` for the discrete columns ``d`` ``[n, k]``; −∞ for a value outside a column's
        range or not an integer."""
        n = d.shape[0]
        c = self._context(c, n, d)
        rounded = torch.round(d)
        ok = (rounded == d).all(dim=1) & (rounded >= self.low).all(dim=1) & (rounded <= self.high).all(dim=1)
        index = (torch.clamp(rounded, self.low, self.high) - self.low).long()
        scaled = self._scaled(torch.clamp(rounded, self.low, self.high))
        logp = d.new_zeros(n)
        for j, net in enumerate(self.categorical):
            logits = net(torch.cat([c, scaled[:, :j]], dim=1))
            logp = logp + F.log_softmax(logits, dim=1).gather(1, index[:, j : j + 1]).squeeze(1)
        return torch.where(ok, logp, torch.full_like(logp, -torch.inf))

    # ----------------------------------------------------------------- the interface
    def initialize(self, y: Tensor, c: Tensor | None) -> None:
        """The continuous flow's data-dependent start (its tails' map) from the continuous columns of y."""
        if self.continuous is not None:
            self.continuous.initialize(y[:, self.cont_idx], None)

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        return -self.log_prob(y, c).mean()

    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """log p(d | c) + log q(v | c, d) ``[n]`` (exact; ``generator`` unused)."""
        d = y[:, list(self.discrete)]
        logp = self.log_prob_discrete(d, c)
        if self.continuous is not None:
            cd = torch.clamp(torch.round(d), self.low, self.high)  # out-of-range rows are −∞ already
            h = self._flow_context(self._context(c, y.shape[0], y), cd)
            logp = logp + self.continuous.log_prob(y[:, self.cont_idx], h)
        return logp

    def _sample(self, rows: int, context: Tensor | None, *, generator: torch.Generator | None = None,
                **options: Any) -> Tensor:
        """d_1, …, d_k drawn in turn from their categoricals, then v from the flow given (c, d): ``[rows, d_y]``."""
        c = self._context(context, rows, self.low)
        d = c.new_zeros(rows, len(self.discrete))
        for j, net in enumerate(self.categorical):
            probs = F.softmax(net(torch.cat([c, self._scaled(d)[:, :j]], dim=1)), dim=1)
            d[:, j] = self.low[j] + multinomial(probs, 1, generator=generator).squeeze(1).to(d.dtype)
        y = c.new_empty(rows, self.y_shape[0])
        y[:, list(self.discrete)] = d
        if self.continuous is not None:
            y[:, self.cont_idx] = self.continuous._sample(rows, self._flow_context(c, d), generator=generator)
        return y
