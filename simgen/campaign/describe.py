"""JSON descriptions of priors, proposals and simulators: what a model file and a campaign store record.

A common prior (Uniform/BoxUniform, Normal, MultivariateNormal, Independent) is described exactly and rebuilt
from its description (:func:`prior_to_json`, :func:`prior_from_json`); any other distribution or simulator is
described by its class and ``repr``, which can be compared (is a store resumed with the same campaign?) but not
rebuilt.
"""

from __future__ import annotations

import json
import types
from typing import Any

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, Uniform

__all__ = ["prior_to_json", "prior_from_json", "describe_distribution", "describe_simulator", "jsonable"]


def prior_to_json(prior: Distribution) -> dict[str, Any] | None:
    """JSON description of a common prior, ``None`` for one that must be passed back at load time."""
    if isinstance(prior, Independent):
        base = prior_to_json(prior.base_dist)
        if base is None:
            return None
        return {"type": "Independent", "base": base, "reinterpreted": prior.reinterpreted_batch_ndims}
    if isinstance(prior, Uniform):
        return {"type": "Uniform", "low": prior.low.tolist(), "high": prior.high.tolist()}
    if isinstance(prior, Normal):
        return {"type": "Normal", "loc": prior.loc.tolist(), "scale": prior.scale.tolist()}
    if isinstance(prior, MultivariateNormal):
        return {"type": "MultivariateNormal", "loc": prior.loc.tolist(), "covariance": prior.covariance_matrix.tolist()}
    return None


def prior_from_json(spec: dict[str, Any]) -> Distribution:
    """Rebuild a prior written by :func:`prior_to_json` (a ``BoxUniform`` comes back as the equivalent
    ``Independent(Uniform)``)."""
    kind = spec["type"]
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    if kind == "Independent":
        return Independent(prior_from_json(spec["base"]), spec["reinterpreted"])
    if kind == "Uniform":
        return Uniform(t(spec["low"]), t(spec["high"]))
    if kind == "Normal":
        return Normal(t(spec["loc"]), t(spec["scale"]))
    if kind == "MultivariateNormal":
        return MultivariateNormal(t(spec["loc"]), covariance_matrix=t(spec["covariance"]))
    raise ValueError(f"unknown prior type {kind!r} in the model file")


def describe_distribution(dist: Distribution) -> dict[str, Any]:
    """JSON description of a distribution: the model file's prior description where one exists, else its
    class and ``repr`` (which cannot be rebuilt, only compared)."""
    spec = prior_to_json(dist)
    if spec is not None:
        return spec
    cls = type(dist)
    return {"type": "custom", "class": f"{cls.__module__}.{cls.__qualname__}", "repr": repr(dist)[:2000]}


def describe_simulator(simulator: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Name, class and options of a simulator (options: as given, else its ``options`` attribute)."""
    if isinstance(simulator, types.FunctionType):
        qual, name = f"{simulator.__module__}.{simulator.__qualname__}", simulator.__name__
    else:
        cls = type(simulator)
        qual, name = f"{cls.__module__}.{cls.__qualname__}", getattr(simulator, "name", None) or cls.__name__
    opts = options if options is not None else getattr(simulator, "options", None)
    return {"name": str(name), "class": qual, "options": jsonable(opts or {})}


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON would give it back (non-JSON values become their ``str``)."""
    return json.loads(json.dumps(obj, default=str))
