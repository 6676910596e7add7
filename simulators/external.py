r"""A command-line program as a simulator.

:class:`ExternalSimulator` runs a program for a batch of parameters and reads its simulations back. The argument
list is run directly (``subprocess.run`` with a list, never through a shell), so parameters and paths cannot be
misread as shell syntax. Exchange:

* **θ in**: JSON ``{"theta": [[...], ...], "seed": S}`` or a ``.npy`` array ``[n, d_theta]`` (float64), on the
  program's standard input, or in a file whose path replaces ``{input}`` in the arguments.
* **x out**: JSON (a list of rows, or ``{"x": [...]}``) or a ``.npy`` array ``[n, *x_shape]``, on standard
  output, or in the file whose path replaces ``{output}``.
* **seed**: a fresh integer drawn from the simulator's ``torch.Generator`` for every call, in the JSON input, in
  the ``SIMGEN_SEED`` environment variable and in place of ``{seed}`` in the arguments; a program that seeds its
  randomness with it makes ``simgen.simulate`` campaigns reproducible.

A call that runs past ``timeout`` seconds is killed and raises :class:`TimeoutError`; a non-zero exit raises
:class:`ExternalSimulatorError` quoting the end of its standard error; output that is not an array of the
expected shape raises :class:`ValueError`. ``simgen.simulate`` then retries the chunk row by row and records
each failing row (θ, error type, message) — one bad θ does not sink its neighbours.

>>> sim = ExternalSimulator(["./my_sim", "--params", "{input}"], prior=box_uniform([0, 0], [1, 1]), x_shape=(3,))
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from simulators.base import Simulator, box_uniform, register

__all__ = ["ExternalSimulator", "ExternalSimulatorError"]

FORMATS = ("json", "npy")


class ExternalSimulatorError(RuntimeError):
    """The external program exited with a non-zero status."""


@register("external")
class ExternalSimulator(Simulator):
    """Wrap a command-line program (see the module docstring for the exchange protocol).

    Args:
        command: the program and its arguments, a list (or a string split with ``shlex.split``; no shell is
            ever used). ``{input}``, ``{output}`` and ``{seed}`` in an argument are replaced per call.
        prior: a torch ``Distribution`` over θ, or ``{"low": [...], "high": [...]}`` for a box.
        parameter_names: one name per θ dimension (default ``theta_0``, ...).
        x_shape: shape of one simulation (default: inferred by ``simgen.simulate`` from the first outputs).
        x_kind: ``"vector"``, ``"map"``, ``"set"`` or ``"sequence"``.
        input_format, output_format: ``"json"`` or ``"npy"``.
        timeout: seconds one call may run before it is killed.
        per_row: run the program once per θ row (for programs that take a single parameter vector).
        env: extra environment variables for the program.
        cwd: working directory of the program.
    """

    name = "external"

    def __init__(
        self,
        command: Sequence[str] | str,
        *,
        prior: Distribution | dict[str, Any],
        parameter_names: Sequence[str] | None = None,
        x_shape: Sequence[int] | None = None,
        x_kind: str = "vector",
        input_format: str = "json",
        output_format: str = "json",
        timeout: float = 60.0,
        per_row: bool = False,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        if isinstance(command, str):
            command = shlex.split(command)
        command = [str(a) for a in command]
        if not command:
            raise ValueError("command must name a program")
        if input_format not in FORMATS or output_format not in FORMATS:
            raise ValueError(f"input_format and output_format must be one of {FORMATS}; got {input_format!r}, "
                             f"{output_format!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive; got {timeout!r}")
        if isinstance(prior, dict):
            prior = box_uniform(prior["low"], prior["high"])
        if not isinstance(prior, Distribution) or len(prior.event_shape) != 1:
            raise ValueError("prior must be a torch Distribution with event shape [d_theta] or {'low', 'high'}")
        d = int(prior.event_shape[0])
        self.command, self.prior = command, prior
        self.parameter_names = list(parameter_names) if parameter_names is not None else [f"theta_{i}"
                                                                                          for i in range(d)]
        if len(self.parameter_names) != d:
            raise ValueError(f"parameter_names has {len(self.parameter_names)} names for {d} parameters")
        self.x_shape = tuple(int(s) for s in x_shape) if x_shape is not None else None
        self.x_kind = x_kind
        self.input_format, self.output_format = input_format, output_format
        self.timeout, self.per_row = float(timeout), bool(per_row)
        self.env = dict(env or {})
        self.cwd = None if cwd is None else str(cwd)
        self.options = {"command": command, "input_format": input_format, "output_format": output_format,
                        "timeout": self.timeout, "per_row": self.per_row, "x_shape": x_shape}

    def __repr__(self) -> str:
        return f"ExternalSimulator({self.command!r}, d_theta={self.d_theta}, x_shape={self.x_shape})"

    def _simulate(self, theta: Tensor, generator: torch.Generator | None) -> Tensor:
        rows = [theta[i : i + 1] for i in range(theta.shape[0])] if self.per_row else [theta]
        outputs = []
        for batch in rows:
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            outputs.append(self._run(batch.double().numpy(), seed))
        return torch.from_numpy(np.concatenate(outputs)).to(torch.float32)

    def _run(self, theta: np.ndarray, seed: int) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="simgen-external-") as tmp:
            in_path = Path(tmp) / f"theta.{self.input_format}"
            out_path = Path(tmp) / f"x.{self.output_format}"
            payload = self._encode(theta, seed)
            args = [a.replace("{input}", str(in_path)).replace("{output}", str(out_path)).replace("{seed}", str(seed))
                    for a in self.command]
            stdin = payload
            if any("{input}" in a for a in self.command):
                in_path.write_bytes(payload)
                stdin = b""
            env = {**os.environ, **self.env, "SIMGEN_SEED": str(seed)}
            try:
                done = subprocess.run(args, input=stdin, capture_output=True, timeout=self.timeout, env=env,
                                      cwd=self.cwd, check=False)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{self._name()} did not finish within {self.timeout:g} s (killed)") from None
            except FileNotFoundError:
                raise FileNotFoundError(f"cannot run {args[0]!r}: no such program (command {args})") from None
            if done.returncode != 0:
                err = done.stderr.decode(errors="replace").strip()[-500:]
                raise ExternalSimulatorError(f"{self._name()} exited with status {done.returncode}"
                                             + (f": {err}" if err else ""))
            if any("{output}" in a for a in self.command):
                if not out_path.is_file():
                    raise ValueError(f"{self._name()} wrote no output file (expected it at {{output}})")
                raw = out_path.read_bytes()
            else:
                raw = done.stdout
            return self._decode(raw, theta.shape[0])

    def _name(self) -> str:
        return f"external simulator {Path(self.command[0]).name!r}"

    def _encode(self, theta: np.ndarray, seed: int) -> bytes:
        if self.input_format == "json":
            return json.dumps({"theta": theta.tolist(), "seed": seed}).encode()
        buf = io.BytesIO()
        np.save(buf, theta, allow_pickle=False)
        return buf.getvalue()

    def _decode(self, raw: bytes, n: int) -> np.ndarray:
        try:
            if self.output_format == "json":
                data = json.loads(raw.decode())
                if isinstance(data, dict):
                    data = data["x"]
                x = np.asarray(data, dtype=np.float64)
            else:
                x = np.load(io.BytesIO(raw), allow_pickle=False)
                x = np.asarray(x, dtype=np.float64)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, OSError) as e:
            head = raw[:80].decode(errors="replace")
            raise ValueError(f"{self._name()} gave unreadable {self.output_format} output ({type(e).__name__}: "
                             f"{e}; it began {head!r})") from None
        if x.ndim == 0 or x.shape[0] != n:
            raise ValueError(f"{self._name()} returned an array of shape {list(x.shape)} for {n} parameter rows")
        if self.x_shape is not None and tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"{self._name()} returned rows of shape {list(x.shape[1:])}; expected "
                             f"{list(self.x_shape)}")
        return x
