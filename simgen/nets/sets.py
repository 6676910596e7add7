r"""Embeddings of sets, e.g. the particles of a collision event, stored as padded arrays ``[n, N_max, F]``.

Layout (as :class:`simulators.collider.Collider` with ``output="set"`` writes it, ``[n, 128, 4]`` =
:math:`(p_T, \eta, \phi, \text{mask})`): row j of a set is one element, the LAST channel is the mask (1 = a real
element, 0 = padding) and the other F − 1 channels are the element's features. A set without padding (the
i.i.d. configurations of ``double_well`` with ``n_conf > 1``: ``[n, n_conf, 2]``, no mask) uses ``masked=False``.

:class:`DeepSets` is invariant to the order of the elements and to whatever the padding rows hold;
:class:`SetStandardize` z-scores the features with one statistic per feature (shared by all elements, computed
over real elements only) and leaves the mask as it is, so that a set is still a set after standardisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DeepSets", "SubsetDeepSets", "SetStandardize", "split_mask"]

_POOLS = ("mean", "sum")


def _set_shape(shape: Sequence[int], masked: bool) -> tuple[int, int]:
    """``(N_max, F)`` of a set row, checked: two dimensions, and a feature besides the mask when masked."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"a set row must have shape (N_max, F); got {shape}")
    if masked and shape[1] < 2:
        raise ValueError(f"a masked set row (N_max, F) needs F >= 2 (features, then the mask); got {shape}")
    return shape  # type: ignore[return-value]


def split_mask(x: Tensor, masked: bool = True) -> tuple[Tensor, Tensor]:
    """Features ``[n, N_max, F']`` and a boolean mask ``[n, N_max]`` of sets ``x`` ``[n, N_max, F]``.

    With ``masked=True`` the last channel is the mask and must hold only 0 and 1 (anything else means the data
    are not in this layout, or were transformed: a ValueError says so); F' = F − 1. With ``masked=False`` every
    element is real and F' = F.
    """
    if not masked:
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    mask = x[..., -1]
    if not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise ValueError(
            "the last channel of a masked set must be its 0/1 mask (1 = real element, 0 = padding); found values "
            f"such as {bad}. For sets without a mask channel use masked=False (e.g. nets.DeepSets(x_shape, "
            "masked=False), or a custom embedding with the attribute masked = False); a set's context must not be "
            "standardised per element (nets.SetStandardize keeps the mask)"
        )
    return x[..., :-1], mask.bool()


class DeepSets(nn.Module):
    r"""Permutation-invariant embedding of padded sets ``[n, N_max, F]`` → ``[n, out_features]``
    (Zaheer et al. 2017):

    .. math::  e(X) = \rho\Big(\operatorname{pool}_{j:\, m_j = 1} \phi(x_j) \;\oplus\; |X| / N_{max}\Big),

    with φ an MLP applied to each element's F − 1 features, the pooling a masked mean (default) or sum over the
    real elements only, the number of real elements |X| (scaled by N_max) appended so that a mean still sees the
    multiplicity, and ρ an MLP. Padding rows contribute exactly nothing (they are replaced by zeros before φ and
    left out of the pool), so the output does not depend on what they hold; an empty set pools to zero.

    Args:
        in_shape: ``(N_max, F)`` of one set, the mask included when ``masked``.
        out_features: output width.
        hidden_features: width of φ's and ρ's hidden layers and of the pooled representation.
        num_layers: hidden layers of φ and of ρ.
        pool: ``"mean"`` or ``"sum"`` over the real elements.
        masked: the last channel is the 0/1 mask; ``False`` for sets without padding.
    """

    name = "deepsets"

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int = 32,
        hidden_features: int = 64,
        num_layers: int = 2,
        pool: str = "mean",
        masked: bool = True,
    ) -> None:
        super().__init__()
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {_POOLS}; got {pool!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        self.in_shape = _set_shape(in_shape, masked)
        self.n_max, features = self.in_shape
        self.features = features - 1 if masked else features
        self.out_features, self.pool, self.masked = int(out_features), pool, bool(masked)
        self.phi = _mlp(self.features, hidden_features, hidden_features, num_layers)
        self.rho = _mlp(hidden_features + 1, hidden_features, self.out_features, num_layers)
        self._config = dict(in_shape=list(self.in_shape), out_features=self.out_features,
                            hidden_features=hidden_features, num_layers=num_layers, pool=pool, masked=self.masked)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"DeepSets expects sets [n, {self.n_max}, {self.in_shape[1]}]; got {list(x.shape)}")
        features, mask = split_mask(x, self.masked)
        keep = mask.unsqueeze(-1)
        h = self.phi(torch.where(keep, features, torch.zeros((), dtype=x.dtype, device=x.device)))
        pooled = torch.where(keep, h, torch.zeros((), dtype=h.dtype, device=h.device)).sum(dim=1)
        count = mask.sum(dim=1, keepdim=True).to(h.dtype)
        if self.pool == "mean":
            pooled = pooled / count.clamp(min=1.0)
        return self.rho(torch.cat([pooled, count / self.n_max], dim=1))


class SubsetDeepSets(DeepSets):
    r""":class:`DeepSets` over sets of i.i.d. draws that, in training mode, keeps a random leading subset of each
    set: row i keeps its first m_i real elements, m_i uniform on {1, …, N_max}, so that one trained posterior
    serves every set size from 1 to N_max (amortised over the number of i.i.d. observations). The elements are
    i.i.d., so a leading subset is a uniformly random one. In eval mode it is :class:`DeepSets`.

    Args: as :class:`DeepSets` (``masked`` is always ``True``: a smaller set is a padded one).
    """

    name = "subset_deepsets"

    def __init__(self, in_shape: Sequence[int], out_features: int = 32, hidden_features: int = 64,
                 num_layers: int = 2, pool: str = "mean", masked: bool = True) -> None:
        if not masked:
            raise ValueError("SubsetDeepSets keeps random subsets through the mask channel: masked must be True")
        super().__init__(in_shape, out_features, hidden_features, num_layers, pool, masked=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.dim() == 3:
            keep = torch.randint(1, self.n_max + 1, (x.shape[0], 1), device=x.device)
            leading = torch.arange(self.n_max, device=x.device)[None, :] < keep
            x = torch.cat([x[..., :-1], (x[..., -1] * leading).unsqueeze(-1)], dim=-1)
        return super().forward(x)


class SetStandardize(nn.Module):
    r"""z-scoring of padded sets ``[n, N_max, F]``: u_{jk} = (x_{jk} − μ_k) / σ_k for each feature k, with μ, σ
    computed over the real elements of all sets (so they do not depend on the order or the padding); the mask
    channel passes unchanged.

    The same interface as :class:`simgen.transforms.Standardize` (``fit``, ``forward``, ``inverse``,
    ``log_abs_det_jacobian``; buffers ``loc``, ``scale`` of shape ``[F]``, saved with the model). It is affine
    in every feature of every element, padding included, so log |det ∂u/∂x| = −N_max Σ_{k ∈ features} log σ_k.

    Args:
        event_shape: ``(N_max, F)`` of one set.
        masked: the last channel is the 0/1 mask (kept as it is); ``False``: every channel is a feature.
    """

    enabled = True  # as Standardize's flag: sets are always standardised

    def __init__(self, event_shape: tuple[int, ...], masked: bool = True) -> None:
        super().__init__()
        self.event_shape = _set_shape(event_shape, masked)
        self.masked = bool(masked)
        self.register_buffer("loc", torch.zeros(self.event_shape[1]))
        self.register_buffer("scale", torch.ones(self.event_shape[1]))
        self._moments: tuple[Tensor, Tensor, int] | None = None

    def fit(self, x: Tensor) -> SetStandardize:
        """Set μ and σ from sets ``x`` ``[n, N_max, F]`` (real elements only); σ is floored at 1e-6."""
        self._moments = None
        return self.update(x).finish()

    @torch.no_grad()
    def update(self, x: Tensor) -> SetStandardize:
        """Accumulate the sums Σ x, Σ x² and the count of the real elements of one batch (streaming fit)."""
        if x.dim() != 3 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"SetStandardize expects sets [n, {', '.join(map(str, self.event_shape))}]; "
                             f"got {list(x.shape)}")
        features, mask = split_mask(x.double(), self.masked)
        rows = features[mask]  # [real elements, F']
        s1, s2, count = rows.sum(dim=0), (rows * rows).sum(dim=0), rows.shape[0]
        if self._moments is not None:
            s1, s2, count = s1 + self._moments[0], s2 + self._moments[1], count + self._moments[2]
        self._moments = (s1, s2, count)
        return self

    @torch.no_grad()
    def finish(self, reduce: Callable[[Tensor], Tensor] | None = None) -> SetStandardize:
        """Set μ and σ (unbiased, floored at 1e-6) from the accumulated moments, and forget them; ``reduce``
        first sums the moments over the ranks of a data-parallel run (each having seen its own shard)."""
        if reduce is not None:
            width = self.event_shape[1] - self.masked
            s1, s2, count = self._moments or (torch.zeros(width, dtype=torch.float64),) * 2 + (0,)
            self._moments = (reduce(s1), reduce(s2), int(reduce(torch.tensor(float(count), dtype=torch.float64))))
        if self._moments is None or self._moments[2] == 0:
            self._moments = None
            raise ValueError("SetStandardize: the sets hold no real element (every mask is 0)")
        s1, s2, count = self._moments
        self._moments = None
        mean = s1 / count
        var = (s2 - count * mean * mean) / max(count - 1, 1)
        scale = torch.sqrt(var.clamp(min=0.0)) if count > 1 else torch.ones_like(mean)
        width = mean.shape[0]
        self.loc[:width].copy_(mean.to(self.loc.dtype))
        self.scale[:width].copy_(torch.clamp(torch.nan_to_num(scale, nan=1.0), min=1e-6).to(self.scale.dtype))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale

    def inverse(self, u: Tensor) -> Tensor:
        return u * self.scale + self.loc

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        """log |det ∂u/∂x| = −N_max Σ_k log σ_k (the mask's σ is 1), broadcast over the ``[n]`` rows of ``x``."""
        return (-self.event_shape[0] * torch.log(self.scale).sum()).expand(x.shape[0]).to(x.dtype)


def _mlp(in_features: int, hidden_features: int, out_features: int, num_layers: int) -> nn.Sequential:
    """``num_layers`` hidden SiLU layers of width ``hidden_features``, then a linear output."""
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_features), nn.SiLU()]
        width = hidden_features
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
