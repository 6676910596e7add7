"""The package's import graph: no cycle among simgen's modules (imports inside functions count), the demo
simulators import nothing from simgen, and only simgen's app layer knows the demo simulators.

The graph is read from the source (``ast``), not by importing, so an import hidden in a function body counts as
much as one at the top. An edge goes from a module to each simgen module it names: ``from .x import y`` is an
edge to ``x.y`` when that is a module, else to ``x``; ``from . import __version__`` is an edge to the package's
``__init__``. A parent package that Python runs before a submodule is not an edge (every module would otherwise
depend on ``simgen/__init__``, which imports the public API).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the app layer: the only part of simgen that may know the demo simulators' registry
APP_LAYER = {"simgen.cli", "simgen.config", "simgen.pipeline", "simgen.report"}


def modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a folder under the repository root)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """``(module, line)`` for every import in module ``name``, anywhere in its body: ``import a.b`` gives
    ``a.b``; ``from a import b`` gives ``a.b`` when that is a module of ``known``, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield (sub if sub in known else source), node.lineno


def graph() -> dict[str, set[str]]:
    """Module -> the simgen modules it imports."""
    mods = modules("simgen")
    return {name: {t for t, _ in imported(name, path, set(mods)) if t in mods and t != name}
            for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions() -> None:
    edges = graph()
    assert "simgen.io" in edges["simgen.estimators.base"]  # ``save`` imports it in its body
    assert "simgen.campaign.store" in edges["simgen.campaign.simulate"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_simgen_modules() -> None:
    found = cycles(graph())
    assert not found, "import cycles (each line a set of modules importing each other): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_simulators_import_nothing_from_simgen() -> None:
    mods = modules("simulators")
    bad = [f"{name} (line {line}): {target}" for name, path in mods.items()
           for target, line in imported(name, path, set(mods)) if target == "simgen" or target.startswith("simgen.")]
    assert not bad, bad


def test_only_the_app_layer_imports_simulators() -> None:
    def exempt(name: str) -> bool:
        return any(name == m or name.startswith(f"{m}.") for m in APP_LAYER)

    mods = modules("simgen")
    bad = [f"{name} (line {line}): {target}" for name, path in mods.items() if not exempt(name)
           for target, line in imported(name, path, set(mods))
           if target == "simulators" or target.startswith("simulators.")]
    assert not bad, bad
