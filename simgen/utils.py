"""The leaf every other module may import: tensors from array-likes, argument checks, seeded simulator calls,
random draws that follow a ``torch.Generator`` wherever it lives.

Nothing here imports from the rest of simgen, so any module can depend on it without creating a cycle.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "as_tensor",
    "default_device",
    "check_positive_int",
    "check_rows",
    "broadcast_rows",
    "accepts_keyword",
    "seeded",
    "call_simulator",
    "randn",
    "rand",
    "randint",
    "randperm",
    "multinomial",
    "bernoulli",
]

#: guards torch's and numpy's global RNGs while a simulator without ``generator=`` runs in a seeded fork
#: (executors may run chunks on threads)
GLOBAL_RNG_LOCK = threading.RLock()


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_tensor(a: Any, name: str) -> Tensor:
    """A float32 CPU tensor from an array-like (torch, numpy, nested lists), with a clear error otherwise."""
    try:
        t = torch.as_tensor(a.detach().cpu() if isinstance(a, Tensor) else a)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} must be an array-like of numbers; got {type(a).__name__} ({e})") from None
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)):
        raise ValueError(f"{name} must hold real numbers; got dtype {t.dtype}")
    return t.to(torch.float32)


def check_positive_int(n: Any, what: str = "the number of samples") -> int:
    """``n`` itself when it is a positive ``int``; a ``ValueError`` naming ``what`` otherwise."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{what} must be a positive int; got {n!r}")
    return n


def check_rows(t: Tensor, name: str, hint: str = "") -> Tensor:
    """``t`` ``[n, ...]`` itself when it has at least one row and every row is finite; else a ``ValueError``
    naming ``name``, how many rows are bad and the first of them, followed by ``hint``."""
    if t.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row; got shape {list(t.shape)}")
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf in {int(bad.sum())} of {t.shape[0]} rows (first: {rows}){hint}")
    return t


def broadcast_rows(a: Tensor, b: Tensor, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    """``a`` ``[n, ...]`` and ``b`` ``[n, ...]`` with a single row of either expanded to the other's ``n``."""
    if a.shape[0] == b.shape[0]:
        return a, b
    if b.shape[0] == 1:
        return a, b.expand(a.shape[0], *b.shape[1:])
    if a.shape[0] == 1:
        return a.expand(b.shape[0], *a.shape[1:]), b
    raise ValueError(f"{name_a} and {name_b} must have the same number of rows or one of them a single row; "
                     f"got {a.shape[0]} and {b.shape[0]}")


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (by name or through ``**kwargs``); ``False`` when it has no
    inspectable signature."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's (CPU, and CUDA when initialised) and numpy's global RNGs inside a fork when ``seed`` is
    given, restoring both afterwards; a no-op for ``None``."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        np_state = np.random.get_state()
        np.random.seed(int(seed) % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def call_simulator(simulator: Callable[..., Any], theta: Tensor, seed: int | None) -> Tensor:
    """``simulator(theta)`` as a float32 tensor, its randomness fixed by ``seed``.

    A simulator that takes ``generator=`` gets ``torch.Generator().manual_seed(seed)``; any other (``sbi`` and
    ``sbibm`` simulators) runs with torch's and numpy's global RNGs seeded in a fork, so the caller's RNG state
    is untouched. ``seed=None`` calls it as it is. The row count is not checked here: callers report a wrong
    shape in their own terms.
    """
    if seed is not None and accepts_keyword(simulator, "generator"):
        out = simulator(theta, generator=torch.Generator().manual_seed(int(seed)))
    else:
        with seeded(seed):
            out = simulator(theta)
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(out)
    return torch.as_tensor(out).to(torch.float32)


# ------------------------------------------------------------------------------------------ generator-aware draws
# torch draws on the device of its ``generator`` only: ``torch.randn(..., generator=cpu_gen, device="cuda")``
# raises. These helpers draw where the generator lives and move the draws to ``device``, so a user's CPU
# generator seeds a model on a GPU (and a CUDA generator a CPU computation). Where both devices agree they are
# exactly torch's call, so CPU draws are bit-identical to it. Without a generator they draw on ``device``.

def _shape(size: tuple[Any, ...]) -> tuple[int, ...]:
    """``randn(2, 3)`` and ``randn((2, 3))`` alike (as torch's factories accept both)."""
    if len(size) == 1 and isinstance(size[0], tuple | list | torch.Size):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


def _draw_device(generator: torch.Generator | None, device: Any) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.empty(0).device


def _moved(t: Tensor, device: Any) -> Tensor:
    return t if device is None else t.to(device)


def randn(*size: Any, generator: torch.Generator | None = None, device: Any = None,
          dtype: torch.dtype | None = None) -> Tensor:
    """``torch.randn(*size, dtype=dtype)`` drawn on ``generator``'s device and moved to ``device`` (torch's
    default device when ``None``). Example: ``randn(4, 2, generator=torch.Generator().manual_seed(0),
    device="cuda")``."""
    out = torch.randn(_shape(size), generator=generator, device=_draw_device(generator, device), dtype=dtype)
    return _moved(out, device)


def rand(*size: Any, generator: torch.Generator | None = None, device: Any = None,
         dtype: torch.dtype | None = None) -> Tensor:
    """``torch.rand`` (uniform on [0, 1)) like :func:`randn`."""
    out = torch.rand(_shape(size), generator=generator, device=_draw_device(generator, device), dtype=dtype)
    return _moved(out, device)


def randint(low: int, high: int, size: Any, *, generator: torch.Generator | None = None, device: Any = None,
            dtype: torch.dtype | None = None) -> Tensor:
    """``torch.randint(low, high, size)`` (integers in [low, high), int64 unless ``dtype``) like :func:`randn`."""
    kwargs = {} if dtype is None else {"dtype": dtype}
    out = torch.randint(low, high, _shape((size,)), generator=generator, device=_draw_device(generator, device),
                        **kwargs)
    return _moved(out, device)


def randperm(n: int, *, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
    """``torch.randperm(n)`` (a random permutation of 0 … n − 1) like :func:`randn`."""
    return _moved(torch.randperm(n, generator=generator, device=_draw_device(generator, device)), device)


def multinomial(probs: Tensor, num_samples: int, replacement: bool = False, *,
                generator: torch.Generator | None = None) -> Tensor:
    """``torch.multinomial`` (indices drawn ∝ ``probs`` ``[..., k]``) on ``generator``'s device, returned on
    ``probs``' device."""
    at = _draw_device(generator, probs.device)
    out = torch.multinomial(probs.to(at), num_samples, replacement, generator=generator)
    return out.to(probs.device)


def bernoulli(probs: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``torch.bernoulli(probs)`` (0/1 draws with success probabilities ``probs``) on ``generator``'s device,
    returned on ``probs``' device."""
    at = _draw_device(generator, probs.device)
    return torch.bernoulli(probs.to(at), generator=generator).to(probs.device)
