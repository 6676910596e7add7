"""Execute tutorial notebooks at the default budget, strip the noise, and stamp them with a hash of their code.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python tutorials/execute.py                  # all, in order
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python tutorials/execute.py 03_collider_chain
    python tutorials/execute.py --check                                           # stamps match the code?

Each notebook runs top to bottom in a fresh kernel, in a scratch folder (the files it writes do not land in the
repository), with ``SIMGEN_TUTORIAL_BUDGET`` removed from the environment: the outputs are those of the real
budget. The notebook is then written back with its outputs (figures as embedded PNG, printed numbers) but without
execution counts, per-cell timings and the kernel's version details, so that a re-run changes only what the code
printed. ``metadata.simgen.source_sha256`` records a hash of the code cells that produced the outputs;
``tests/test_tutorials.py`` fails when a notebook's code no longer matches its stamp (re-run this script then).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
#: the key under a notebook's metadata where the stamp is kept
STAMP = "simgen"


def source_hash(notebook: nbformat.NotebookNode) -> str:
    """SHA-256 of the notebook's code cells' sources, in order (markdown edits do not invalidate the outputs)."""
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources, ensure_ascii=False).encode("utf-8")).hexdigest()


#: run-specific text in outputs: the scratch folder, the kernel's cell file names, tqdm's notice about ipywidgets
NOISE = [
    (re.compile(re.escape(tempfile.gettempdir()) + r"/simgen-[0-9A-Za-z_]+-[0-9A-Za-z_]+/"), ""),
    (re.compile(r"/tmp/ipykernel_\d+/\d+\.py"), "<cell>"),
    (re.compile(r"[^\n]*TqdmWarning: IProgress not found[^\n]*\n[^\n]*\n"), ""),
]


def terminal_text(text: str) -> str:
    """What a terminal shows for ``text``: each carriage return overwrites its line (progress bars end as their
    last state, or vanish when they clear themselves)."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join(line if line.strip() else "" for line in lines)


def clean_outputs(cell: nbformat.NotebookNode) -> None:
    """Merge consecutive stream outputs of a cell, apply carriage returns, drop run-specific noise."""
    merged: list[nbformat.NotebookNode] = []
    for output in cell.outputs:
        if output.output_type == "stream" and merged and merged[-1].output_type == "stream" \
                and merged[-1].name == output.name:
            merged[-1].text += output.text
        else:
            merged.append(output)
    cell.outputs = []
    for output in merged:
        if output.output_type == "stream":
            text = terminal_text(output.text)
            for pattern, replacement in NOISE:
                text = pattern.sub(replacement, text)
            text = re.sub(r"\n{3,}", "\n\n", text).lstrip("\n")
            if not text.strip():
                continue
            output.text = text
        cell.outputs.append(output)


def strip(notebook: nbformat.NotebookNode) -> None:
    """Drop what changes on every run without being a result: execution counts, timings, kernel versions, progress
    bars and scratch paths."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
        if cell.cell_type == "code":
            clean_outputs(cell)
            cell.execution_count = None
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = None
                output.get("metadata", {}).pop("needs_background", None)
    notebook.metadata.pop("widgets", None)
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}


def stamp(notebook: nbformat.NotebookNode, seconds: float) -> None:
    """Record which code produced the outputs (and how long the run took, a rounded figure for the reader)."""
    notebook.metadata[STAMP] = {"source_sha256": source_hash(notebook), "budget": "full",
                                "execution_minutes": round(seconds / 60, 1)}


def execute(path: Path, timeout: int = 3600) -> float:
    """Run one notebook at the default budget in a scratch folder, strip and stamp it in place; the seconds."""
    import nbclient

    notebook = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.pop("SIMGEN_TUTORIAL_BUDGET", None)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # inline figures (a PNG in the output), whatever backend the calling shell chose
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # the kernel imports this checkout's simgen and simulators, wherever it runs
    root = str(HERE.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"simgen-{path.stem}-") as scratch:
            client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                             resources={"metadata": {"path": scratch}})
            client.execute()  # raises CellExecutionError (with the cell and the traceback) on a failing cell
    finally:
        os.environ.clear()
        os.environ.update(saved)
    seconds = time.perf_counter() - start
    strip(notebook)
    stamp(notebook, seconds)
    nbformat.write(notebook, path)
    return seconds


def check(paths: list[Path]) -> list[str]:
    """The notebooks whose outputs are missing or were produced by other code than they now hold."""
    stale = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        recorded = notebook.metadata.get(STAMP, {}).get("source_sha256")
        if recorded != source_hash(notebook):
            stale.append(path.name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks (file names or stems); default: all, in order")
    parser.add_argument("--check", action="store_true", help="only report notebooks whose stamp is stale")
    parser.add_argument("--strip", action="store_true", help="only strip the noise from the committed outputs")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    everything = sorted(HERE.glob("[0-9]*.ipynb"))
    if args.names:
        paths = []
        for name in args.names:
            matches = [p for p in everything if p.name == name or p.stem == name or p.name.startswith(name)]
            if len(matches) != 1:
                parser.error(f"{name!r} names {len(matches)} notebooks of {[p.name for p in everything]}")
            paths.extend(matches)
    else:
        paths = everything
    if args.check:
        stale = check(paths)
        for name in stale:
            print(f"{name}: outputs do not come from its current code; run: python tutorials/execute.py {name}")
        return 1 if stale else 0
    if args.strip:
        for path in paths:
            notebook = nbformat.read(path, as_version=4)
            strip(notebook)
            nbformat.write(notebook, path)
        return 0
    for path in paths:
        print(f"{path.name}: executing ...", flush=True)
        seconds = execute(path, timeout=args.timeout)
        print(f"{path.name}: {seconds / 60:.1f} min, {path.stat().st_size / 1e6:.2f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
