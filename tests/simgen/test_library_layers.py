"""Import rules of the diagnostics, the samplers and the plots, checked on the source (imports inside functions
count too): they never import an estimator or the demo simulators, and ``simulators/`` never imports simgen."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against ``package``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)  # `from . import estimators`
    return out


def package_of(path: Path) -> str:
    """The package a module's relative imports start from: its folder, for ``__init__.py`` and others alike."""
    return ".".join(path.relative_to(ROOT).parts[:-1])


LIBRARY = sorted([*(ROOT / "simgen" / "diagnostics").glob("*.py"), *(ROOT / "simgen" / "mcmc").glob("*.py"),
                  ROOT / "simgen" / "plots.py"])


@pytest.mark.parametrize("path", LIBRARY, ids=[str(p.relative_to(ROOT)) for p in LIBRARY])
def test_diagnostics_mcmc_and_plots_import_no_estimator_and_no_simulator(path):
    names = imported_modules(path, package_of(path))
    bad = sorted(n for n in names if n == "simgen.estimators" or n.startswith("simgen.estimators.")
                 or n == "simulators" or n.startswith("simulators."))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_simulators_import_nothing_from_simgen():
    for path in sorted((ROOT / "simulators").glob("*.py")):
        names = imported_modules(path, "simulators")
        assert not [n for n in names if n == "simgen" or n.startswith("simgen.")], path.name


def test_the_import_walker_sees_relative_and_function_level_imports(tmp_path):
    assert package_of(ROOT / "simgen" / "diagnostics" / "sbc.py") == "simgen.diagnostics"
    source = tmp_path / "m.py"
    source.write_text("from ..utils import as_tensor\nfrom . import draws\n\ndef f():\n    from .. import estimators\n")
    names = imported_modules(source, "simgen.diagnostics")
    assert {"simgen.utils", "simgen.diagnostics.draws", "simgen.estimators"} <= names
