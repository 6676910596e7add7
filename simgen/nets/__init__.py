"""Networks shared by all model families, and the choice of a default context embedding.

Every built-in network has a class attribute ``name`` and a ``config()`` of JSON-serialisable constructor
arguments, so that saved models rebuild them without unpickling (see :mod:`simgen.io`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .conv import (
    ConvDecoder,
    ConvEncoder,
    Downsample,
    MapEmbedding,
    ResBlock,
    SelfAttention,
    SequenceEmbedding,
    UNet,
    Upsample,
)
from .mlp import MLP, Flatten, ResidualMLP
from .score import ScoreSummary
from .sets import DeepSets, SetStandardize, SubsetDeepSets, split_mask
from .spectra import PowerSpectrumEmbedding
from .time import FiLMResidualMLP, TimeEmbedding
from .transformer import TokenTransformer

__all__ = [
    "MLP",
    "ResidualMLP",
    "Flatten",
    "ResBlock",
    "Downsample",
    "Upsample",
    "ConvEncoder",
    "ConvDecoder",
    "SelfAttention",
    "UNet",
    "MapEmbedding",
    "SequenceEmbedding",
    "DeepSets",
    "SubsetDeepSets",
    "PowerSpectrumEmbedding",
    "TimeEmbedding",
    "FiLMResidualMLP",
    "TokenTransformer",
    "SetStandardize",
    "ScoreSummary",
    "split_mask",
    "default_embedding",
    "output_features",
    "build_network",
    "network_config",
    "register_network",
]

_BUILTIN: dict[str, type[nn.Module]] = {
    cls.name: cls
    for cls in (MLP, ResidualMLP, Flatten, ConvEncoder, ConvDecoder, UNet, MapEmbedding, SequenceEmbedding, DeepSets,
                SubsetDeepSets, PowerSpectrumEmbedding, TimeEmbedding, FiLMResidualMLP, ScoreSummary,
                TokenTransformer)
}


def register_network(cls: type[nn.Module]) -> type[nn.Module]:
    """Make a network class with ``name`` and ``config()`` rebuildable from a saved model's JSON."""
    _BUILTIN[cls.name] = cls
    return cls


def default_embedding(x_kind: str, x_shape: tuple[int, ...]) -> nn.Module:
    """The embedding an estimator uses for a context of kind ``x_kind`` and per-row shape ``x_shape``.

    - ``"vector"`` ``(d,)``: used as it is (:class:`Flatten`);
    - ``"map"`` ``(H, W)`` or ``(C, H, W)``: a CNN with a global average (:class:`MapEmbedding`, 32 features);
    - ``"sequence"`` ``(T, d)`` or ``(T,)``: a 1-D CNN along time (:class:`SequenceEmbedding`, 32 features);
    - ``"set"`` ``(N_max, F)``: :class:`DeepSets` (32 features) reading the last channel as the 0/1 mask, as the
      collider's particle sets are laid out (a set of one channel has no mask). Sets without a mask channel
      (e.g. ``double_well`` with ``n_conf > 1``) need ``embedding=nets.DeepSets(x_shape, masked=False)``.

    Any other kind is flattened. All defaults are small enough to train on a CPU (maps up to about 64×64).
    """
    if x_kind not in _DEFAULTS:
        return Flatten(x_shape)
    return _DEFAULTS[x_kind](tuple(int(s) for s in x_shape))


def _default_set_embedding(x_shape: tuple[int, ...]) -> nn.Module:
    return DeepSets(x_shape, masked=len(x_shape) == 2 and x_shape[-1] >= 2)


#: x_kind -> factory(x_shape) of the default embedding.
_DEFAULTS: dict[str, Callable[[tuple[int, ...]], nn.Module]] = {
    "vector": Flatten,
    "map": MapEmbedding,
    "sequence": SequenceEmbedding,
    "set": _default_set_embedding,
}


def output_features(embedding: nn.Module, x_shape: tuple[int, ...]) -> int:
    """Width of ``embedding``'s output for one context row of shape ``x_shape``."""
    width = getattr(embedding, "out_features", None)
    if isinstance(width, int):
        return width
    import torch

    with torch.no_grad():
        probe = torch.zeros(2, *x_shape, device=next(embedding.parameters(), torch.zeros(())).device)
        was_training = embedding.training
        embedding.eval()
        out = embedding(probe)
        embedding.train(was_training)
    if out.dim() != 2:
        raise ValueError(f"an embedding must map [n, *x_shape] to [n, features]; it returned {tuple(out.shape)}")
    return int(out.shape[1])


def network_config(net: nn.Module) -> dict[str, Any] | None:
    """``{"name": ..., "config": ...}`` for a built-in network, ``None`` for a user's module."""
    name = getattr(net, "name", None)
    if name in _BUILTIN and type(net) is _BUILTIN[name] and hasattr(net, "config"):
        return {"name": name, "config": net.config()}
    return None


def build_network(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a built-in network from :func:`network_config`'s output."""
    try:
        cls = _BUILTIN[spec["name"]]
    except KeyError:
        raise ValueError(f"unknown network {spec.get('name')!r}; built-in: {sorted(_BUILTIN)}") from None
    return cls(**spec["config"])

