"""Every tutorial notebook runs top to bottom (with SIMGEN_TUTORIAL_BUDGET=small: seconds, not minutes)."""

from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("*.ipynb"))


def test_there_are_five_tutorials_with_small_committed_outputs():
    assert [p.name[:3] for p in TUTORIALS] == ["01_", "02_", "03_", "04_", "05_"]
    for path in TUTORIALS:
        assert path.stat().st_size < 100_000, f"{path.name}: commit it without (large) outputs"


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
