"""Every tutorial notebook runs top to bottom (with SIMGEN_TUTORIAL_BUDGET=small: seconds, not minutes), and the
committed outputs come from the code the notebook holds (``tutorials/execute.py`` executes at the default budget
and stamps a hash of the code cells; an edit without a re-run fails here)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))
#: executed notebooks carry their figures as embedded PNG: about 2 MB at most keeps the repository light
MAX_BYTES = 2_000_000


def _execute_script():
    spec = importlib.util.spec_from_file_location("tutorials_execute", ROOT / "tutorials" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_six_tutorials_of_reasonable_size():
    assert [p.name[:3] for p in TUTORIALS] == ["01_", "02_", "03_", "04_", "05_", "06_"]
    for path in TUTORIALS:
        assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size / 1e6:.1f} MB of outputs"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_executes(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SIMGEN_TUTORIAL_BUDGET", "small")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, quoting the cell and the traceback, on any failing cell
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_committed_outputs_come_from_the_notebooks_current_code(path):
    nbformat = pytest.importorskip("nbformat")
    execute = _execute_script()
    notebook = nbformat.read(path, as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: committed without its figures"
    stamp = notebook.metadata.get(execute.STAMP, {})
    assert stamp.get("budget") == "full", f"{path.name}: not executed at the default budget"
    assert stamp.get("source_sha256") == execute.source_hash(notebook), (
        f"{path.name}: its code changed since its outputs were made; run "
        f"`PYTHONPATH=$PWD OMP_NUM_THREADS=1 python tutorials/execute.py {path.stem}` and commit the result")
    assert not any(o.get("execution_count") for o in outputs), f"{path.name}: execution counts not stripped"
