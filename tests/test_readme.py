"""Every ```python block of README.md runs as written: in order, in one namespace, in a scratch folder.

Blocks are run at the written sizes when ``SIMGEN_DOCS_SMALL=0``; by default (``SIMGEN_DOCS_SMALL=1``) the test caps
what only costs time — simulations per :func:`simgen.simulate` call, training epochs (simgen's and sbi's), local
worker processes, the draws that C2ST classifies, MCMC warm-up, thinning and SIR draws — so that the blocks stay
readable (no budget switches in them) and the suite stays fast. The numbers they print are then meaningless; that
every name is defined, every call accepted and every shape right is what is checked.

A block that cannot run here (it needs a cluster, say) starts with a visible marker line naming the reason::

    # readme-test: skip — needs a SLURM cluster

and is left out (listed, with its reason, in the output of ``pytest -rA``).
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
#: the first line of a block that the test leaves out, and why
SKIP_MARKER = re.compile(r"^\s*#\s*readme-test:\s*skip\b\s*[—:-]*\s*(?P<reason>.*)$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each fenced ```python block of a Markdown text, in order."""
    blocks, inside, start, lines = [], False, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = line.strip()
        if not inside and fence.startswith("```python"):
            inside, start, lines = True, number + 1, []
        elif inside and fence.startswith("```"):
            blocks.append((start, "\n".join(lines) + "\n"))
            inside = False
        elif inside:
            lines.append(line)
    if inside:
        raise ValueError(f"README.md: the ```python block opened at line {start - 1} is never closed")
    return blocks


def skip_reason(code: str) -> str | None:
    """The reason on a block's skip marker (its first non-empty line), or ``None`` for a block that runs."""
    first = next((line for line in code.splitlines() if line.strip()), "")
    match = SKIP_MARKER.match(first)
    return None if match is None else (match.group("reason") or "marked skip")


def test_blocks_are_found_and_skip_markers_parse():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python block"
    assert skip_reason("# readme-test: skip — needs a SLURM cluster\nx = 1\n") == "needs a SLURM cluster"
    assert skip_reason("\n#readme-test: skip\n") == "marked skip"
    assert skip_reason("x = 1  # readme-test: skip\n") is None
    assert python_blocks("```python\na = 1\n```\ntext\n```bash\nls\n```\n```python\nb = 2\n```\n") == [
        (2, "a = 1\n"), (9, "b = 2\n")]


def _small_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cap what costs only time: simulations, epochs (simgen's and sbi's), worker processes and the draws that
    two-sample checks classify (see the module docstring)."""
    from sklearn.exceptions import ConvergenceWarning

    import simgen
    from simgen import diagnostics
    from simgen.diagnostics import likelihood, two_sample
    from simgen.training import trainer

    def cap(n: int) -> int:
        # grows with n so that a call asking for more than an earlier one still extends a store
        return min(n, 1000 + n // 1000)

    original_simulate = simgen.simulate

    @functools.wraps(original_simulate)
    def simulate(simulator, prior, num_simulations, *args, **kwargs):
        if kwargs.get("workers"):
            kwargs["workers"] = min(kwargs["workers"], 2)
        return original_simulate(simulator, prior, cap(num_simulations), *args, **kwargs)

    monkeypatch.setattr(simgen, "simulate", simulate)
    original_post_init = trainer.TrainingConfig.__post_init__

    def post_init(self) -> None:
        original_post_init(self)
        self.max_epochs = min(self.max_epochs, 3)

    monkeypatch.setattr(trainer.TrainingConfig, "__post_init__", post_init)
    from sbi.inference import NPE

    original_train = NPE.train

    @functools.wraps(original_train)
    def train(self, *args, **kwargs):  # sbi's own training, in the interop section
        kwargs["max_num_epochs"] = min(kwargs.get("max_num_epochs", 3), 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not yet fully converged"
            return original_train(self, *args, **kwargs)

    monkeypatch.setattr(NPE, "train", train)

    # C2ST trains a classifier on every draw it gets, to convergence: 500 rows of each set and 100 iterations do
    # here (wherever it is called from: the emulator check calls it too)
    original_c2st = two_sample.c2st

    @functools.wraps(original_c2st)
    def c2st(samples, reference, **kwargs):
        kwargs["max_iter"] = min(kwargs.get("max_iter", 1000), 100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return original_c2st(samples[:500], reference[:500], **kwargs)

    for module in (diagnostics, two_sample, likelihood):
        monkeypatch.setattr(module, "c2st", c2st)

    # MCMC: short warm-up, light thinning and SIR from at most 2·10⁴ prior draws (the sampler's accuracy is
    # tested in tests/simgen/test_mcmc.py)
    from simgen.mcmc import MCMCPosterior

    original_init = MCMCPosterior.__init__

    @functools.wraps(original_init)
    def mcmc_init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self.warmup, self.thin = min(self.warmup, 50), min(self.thin, 2)
        self.num_init = min(self.num_init, 10_000)
        self.max_init = min(self.max_init, 20_000)

    monkeypatch.setattr(MCMCPosterior, "__init__", mcmc_init)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)  # blocks write files (post.pt, runs.h5, ...)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if os.environ.get("SIMGEN_DOCS_SMALL", "1") != "0":
        _small_sizes(monkeypatch)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace: dict[str, object] = {"__name__": "__readme__"}
    skipped = []
    try:
        for line, code in blocks:
            reason = skip_reason(code)
            if reason is not None:
                skipped.append(f"README.md:{line}: {reason}")
                continue
            try:
                # padded so that a traceback's line numbers are the README's
                exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)  # noqa: S102
            except Exception as e:
                raise AssertionError(f"the ```python block at README.md line {line} fails: "
                                     f"{type(e).__name__}: {e}") from e
    finally:
        plt.close("all")
    assert len(skipped) < len(blocks), "every README block is marked skip"
    for reason in skipped:  # shown with -rA / -v; not a failure
        print("skipped block", reason)
