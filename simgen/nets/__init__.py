"""Networks shared by all model families, and the choice of a default context embedding.

Every built-in network has a class attribute ``name`` and a ``config()`` of JSON-serialisable constructor
arguments, so that saved models rebuild them without unpickling (see :mod:`simgen.io`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .conv import ConvDecoder, ConvEncoder, Downsample, ResBlock, Upsample
from .mlp import MLP, Flatten, ResidualMLP

__all__ = [
    "MLP",
    "ResidualMLP",
    "Flatten",
    "ResBlock",
    "Downsample",
    "Upsample",
    "ConvEncoder",
    "ConvDecoder",
    "default_embedding",
    "output_features",
    "build_network",
    "network_config",
    "register_network",
]

_BUILTIN: dict[str, type[nn.Module]] = {cls.name: cls for cls in (MLP, ResidualMLP, Flatten, ConvEncoder, ConvDecoder)}


def register_network(cls: type[nn.Module]) -> type[nn.Module]:
    """Make a network class with ``name`` and ``config()`` rebuildable from a saved model's JSON."""
    _BUILTIN[cls.name] = cls
    return cls


def default_embedding(x_kind: str, x_shape: tuple[int, ...]) -> nn.Module:
    """The embedding an estimator uses for a context of kind ``x_kind`` and per-row shape ``x_shape``.

    Vectors are used as they are (flattened). Other kinds fall back to flattening until a dedicated embedding
    is registered for them (CNNs for maps, DeepSets for sets, 1-D CNNs for sequences).
    """
    factory = _DEFAULTS.get(x_kind)
    if factory is not None:
        return factory(tuple(x_shape))
    return Flatten(x_shape)


#: x_kind -> factory(x_shape) of the default embedding; later modules (conv, sets) register theirs here.
_DEFAULTS: dict[str, Any] = {"vector": Flatten}


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

