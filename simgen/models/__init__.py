"""Model families: every one is a :class:`ConditionalDensity` p_φ(y | c)."""

from __future__ import annotations

from typing import Any

from .base import ConditionalDensity
from .cnf import CNF, ContinuousFlow
from .diffusion import Diffusion
from .flow import Flow
from .mapflow import MapFlow
from .transformed import TransformedDensity
from .vae import VAE

__all__ = [
    "ConditionalDensity",
    "Flow",
    "MapFlow",
    "VAE",
    "CNF",
    "Diffusion",
    "ContinuousFlow",
    "TransformedDensity",
    "make_family",
    "FAMILIES",
]

#: model string -> family class; the string alone builds the family with its defaults.
FAMILIES: dict[str, type[ConditionalDensity]] = {"flow": Flow, "vae": VAE, "cnf": CNF, "diffusion": Diffusion,
                                                "mapflow": MapFlow}


def make_family(model: str | ConditionalDensity, config: dict[str, Any] | None = None) -> ConditionalDensity:
    """A family object from a model string (``"flow"``, ...) with optional constructor ``config``, or the
    family object itself when one is given."""
    if isinstance(model, ConditionalDensity):
        return model
    if not isinstance(model, str) or model not in FAMILIES:
        raise ValueError(f"model must be one of {sorted(FAMILIES)} or a ConditionalDensity; got {model!r}")
    return FAMILIES[model](**(config or {}))
