"""Model families: every one is a :class:`ConditionalDensity` p_φ(y | c), registered in :data:`MODELS`.

A family joins by registration (:func:`register_model`): the estimators' ``model="name"``, the config files'
``model = "name"``, the loader and the contract test over every family then know it.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

from .base import ConditionalDensity
from .cnf import CNF, ContinuousFlow
from .diffusion import Diffusion
from .flow import Flow
from .mapflow import MapFlow
from .mixed import MixedDensity
from .simformer import Simformer
from .transformed import TransformedDensity
from .vae import VAE

__all__ = [
    "ConditionalDensity",
    "Flow",
    "MapFlow",
    "VAE",
    "CNF",
    "Simformer",
    "Diffusion",
    "ContinuousFlow",
    "TransformedDensity",
    "MODELS",
    "make_model",
    "model_for",
    "register_model",
    "make_family",
    "FAMILIES",
]

#: model name -> family class; the name alone builds the family with its defaults
MODELS: dict[str, type[ConditionalDensity]] = {}

F = TypeVar("F", bound=type[ConditionalDensity])


def register_model(cls: F) -> F:
    """Class decorator: make family ``cls`` available as ``model=cls.family`` (its name in saved files)."""
    if not (isinstance(cls, type) and issubclass(cls, ConditionalDensity)) or not cls.family:
        raise ValueError(f"register_model takes a ConditionalDensity subclass with a family name; got {cls!r}")
    if MODELS.get(cls.family, cls) is not cls:
        raise ValueError(f"the model name {cls.family!r} is taken by {MODELS[cls.family].__name__}")
    MODELS[cls.family] = cls
    return cls


for _family in (Flow, VAE, CNF, Diffusion, MapFlow, MixedDensity, Simformer):
    register_model(_family)


def make_model(model: str | ConditionalDensity, config: dict[str, Any] | None = None) -> ConditionalDensity:
    """A family object from a model name (``"flow"``, ...) with optional constructor ``config``, or the
    family object itself when one is given."""
    if isinstance(model, ConditionalDensity):
        return model
    if not isinstance(model, str) or model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)} or a ConditionalDensity; got {model!r}")
    return MODELS[model](**(config or {}))


#: (model name, kind of y) -> the registered family that name stands for on that kind of data: ``model="flow"``
#: on maps is the map flow, which is exact and translation-invariant on the torus where a flow on flattened
#: pixels is neither
KIND_MODELS: dict[tuple[str, str], str] = {("flow", "map"): "mapflow"}


def model_for(model: str, y_kind: str) -> str:
    """The registered family name that ``model`` stands for when it models y of kind ``y_kind`` (``"vector"``,
    ``"map"``, ``"set"``, ``"sequence"``): the map architecture for maps (see :data:`KIND_MODELS`), else
    ``model`` itself."""
    return KIND_MODELS.get((model, y_kind), model)


#: deprecated name of :data:`MODELS` (the same dict)
FAMILIES = MODELS


def make_family(model: str | ConditionalDensity, config: dict[str, Any] | None = None) -> ConditionalDensity:
    """Deprecated name of :func:`make_model`."""
    warnings.warn("simgen.models.make_family is deprecated; use simgen.models.make_model", DeprecationWarning,
                  stacklevel=2)
    return make_model(model, config)
