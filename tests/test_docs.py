"""The documentation site's helpers (docs/): README → pages, Sphinx roles → Markdown. ``mkdocs build --strict``
itself runs in CI (.ci/run)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_sections_become_pages_and_fences_are_not_headings():
    pytest.importorskip("mkdocs")
    hooks = _load("hooks")
    preamble, sections = hooks.split_sections("# t\nintro\n## Quick start\n```bash\n## not a heading\n```\n## New\nx\n")
    assert preamble == "# t\nintro"
    assert [title for title, _ in sections] == ["Quick start", "New"]
    pages = hooks.pages_from_readme((ROOT / "README.md").read_text(encoding="utf-8"))
    assert pages["index.md"].startswith("# simgen") and "## Quick start" in pages["index.md"]
    assert "## The main job" in pages["guides/running.md"]
    # every README section is on exactly one page
    _, readme_sections = hooks.split_sections((ROOT / "README.md").read_text(encoding="utf-8"))
    for title, _ in readme_sections:
        assert sum(f"\n## {title}\n" in f"\n{page}" for page in pages.values()) == 1, title


def test_sphinx_roles_math_and_simple_tables_become_markdown():
    pytest.importorskip("griffe")
    roles = _load("griffe_sphinx_roles")
    assert roles.to_markdown(":class:`~simgen.campaign.Store` and :func:`simgen.simulate`") == \
        "`Store` and `simgen.simulate`"
    assert roles.to_markdown(":math:`\\theta`") == "$\\theta$"
    assert roles.to_markdown("Example::\n\n    code\n") == "Example:\n\n    code\n"
    table = "====  =====\na     b\n====  =====\n1     two\n====  =====\n"
    assert "| a | b |\n|---|---|\n| 1 | two |" in roles.to_markdown(table)
