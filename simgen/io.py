"""Saving and loading estimators without running code from the file.

A model file is a ``torch.save`` archive of plain data only — loaded with ``torch.load(weights_only=True)`` —
holding:

* ``format`` (``"simgen-model"``) and ``format_version``, and ``simgen_version``;
* ``config``: a JSON string describing the estimator (direction, family and its constructor arguments, shapes,
  kinds, the prior, the embedding, the training history);
* ``state_dict``: the weights and standardisation statistics;
* ``validity_state``: the weights of an emulator's classifier P(valid | θ) when it was fitted from a store
  (its constructor arguments are ``config["validity"]``), else empty;
* ``emulator_state``: where the estimator needs an emulator to answer (a posterior that samples by importance,
  :meth:`~simgen.estimators.base.Estimator.saved_emulator`), that emulator's weights; its description is
  ``config["emulator"]`` (its own config, without a validity classifier), and it shares the estimator's prior.
  Absent otherwise, and from files written before it existed;
* ``sha256``: a digest of config and weights, so that a modified or truncated file is refused with a clear error.

Built-in networks and common priors (Uniform/BoxUniform, Normal, MultivariateNormal, Independent) are rebuilt
from the JSON; a custom embedding or prior is passed back at load time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from . import nets
from ._version import __version__
from .campaign.describe import prior_from_json, prior_to_json

__all__ = ["save", "load", "register_estimator", "ESTIMATORS", "FORMAT_VERSION", "prior_to_json", "prior_from_json"]

FORMAT = "simgen-model"
FORMAT_VERSION = 1

#: direction (``config["direction"]`` in a model file) -> estimator class; filled by :func:`register_estimator`
ESTIMATORS: dict[str, type] = {}

E = TypeVar("E", bound=type)


def register_estimator(cls: E) -> E:
    """Class decorator: files whose ``direction`` is ``cls.direction`` load as ``cls``.

    The class provides ``config()`` (what :func:`save` writes), ``from_config(config, prior=, embedding=,
    device=)`` and ``load_state(state, validity_state, validity_config)`` (what :func:`load` calls).
    """
    direction = getattr(cls, "direction", "")
    if not direction:
        raise ValueError(f"{cls.__name__} has no direction to register under")
    ESTIMATORS[direction] = cls
    return cls


def _digest(config: str, state: dict[str, Tensor]) -> str:
    h = hashlib.sha256(config.encode())
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _signed(state: dict[str, Tensor], validity_state: dict[str, Tensor],
            emulator_state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """What the digest covers: the density's weights, and the validity classifier's and the emulator's under
    their own prefixes (none for a model without them, so older files keep their digest)."""
    return {**state, **{f"@validity/{k}": v for k, v in validity_state.items()},
            **{f"@emulator/{k}": v for k, v in (emulator_state or {}).items()}}


def save(estimator: Any, path: str | Path) -> None:
    """Write a fitted estimator to ``path`` (see the module docstring for the format)."""
    config = estimator.config()
    config["prior"] = prior_to_json(estimator.prior) if estimator.prior is not None else None
    config["has_prior"] = estimator.prior is not None
    validity = estimator.validity
    config["validity"] = validity.config() if validity is not None else None
    emulator = estimator.saved_emulator()
    emulator_state = None
    if emulator is not None:
        config["emulator"] = emulator.config()
        emulator_state = {k: v.detach().cpu() for k, v in emulator.density.state_dict().items()}
    config_json = json.dumps(config, sort_keys=True)
    state = {k: v.detach().cpu() for k, v in estimator.density.state_dict().items()}
    validity_state = {k: v.detach().cpu() for k, v in validity.state_dict().items()} if validity is not None else {}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "simgen_version": __version__,
        "config": config_json,
        "state_dict": state,
        "validity_state": validity_state,
        "sha256": _digest(config_json, _signed(state, validity_state, emulator_state)),
    }
    if emulator_state is not None:
        payload["emulator_state"] = emulator_state
    torch.save(payload, str(path))


def load(
    path: str | Path,
    *,
    prior: Distribution | None = None,
    embedding: nn.Module | None = None,
    device: str | torch.device | None = None,
) -> Any:
    """Load an estimator saved with ``est.save(path)``; no code from the file is run.

    Args:
        path: the model file.
        prior: needed when the saved prior is not one of the common ones (else taken from the file).
        embedding: needed when the estimator was fitted with a custom embedding module (its weights are
            loaded into this module).
        device: where to put the model (CUDA when present).

    Raises:
        ValueError: the file is not a simgen model, is truncated or modified, has an unknown format version,
            or needs a ``prior``/``embedding`` that was not given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, not a torch file at all
        raise ValueError(f"{path} is not a readable simgen model file ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a simgen model file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {payload.get('format_version')}; this simgen ({__version__}) reads "
            f"version {FORMAT_VERSION}"
        )
    config_json, state = payload["config"], payload["state_dict"]
    validity_state = payload.get("validity_state", {})
    emulator_state = payload.get("emulator_state")
    if _digest(config_json, _signed(state, validity_state, emulator_state)) != payload.get("sha256"):
        raise ValueError(f"{path} is corrupted or was modified after saving (checksum mismatch)")
    config = json.loads(config_json)

    if prior is None and config["has_prior"]:
        if config["prior"] is None:
            raise ValueError(f"{path} was saved with a custom prior: pass it back with simgen.load(path, prior=...)")
        prior = prior_from_json(config["prior"])
    est = _build(path, config, state, validity_state, prior, embedding, device)
    if config.get("emulator") is not None:
        if emulator_state is None:
            raise ValueError(f"{path} describes an emulator but holds no weights for it")
        est.attach_emulator(_build(path, config["emulator"], emulator_state, {}, prior, None, device))
    return est


def _build(path: Path, config: dict[str, Any], state: dict[str, Tensor], validity_state: dict[str, Tensor],
           prior: Distribution | None, embedding: nn.Module | None, device: str | torch.device | None) -> Any:
    """The estimator ``config`` describes, with ``state`` loaded."""
    cls = ESTIMATORS.get(config["direction"])
    if cls is None:
        raise ValueError(f"{path} holds a {config['direction']!r} estimator; this simgen knows {sorted(ESTIMATORS)}")
    if embedding is None:
        if config["embedding"] is None:
            raise ValueError(
                f"{path} was fitted with a custom embedding: pass it with simgen.load(path, embedding=...)"
            )
        embedding = nets.build_network(config["embedding"])
    est = cls.from_config(config, prior=prior, embedding=embedding, device=device)
    try:
        est.load_state(state, validity_state, config.get("validity"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return est
