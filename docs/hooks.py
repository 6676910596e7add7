"""MkDocs hooks: the site's home page and guides are README.md cut at its ``## `` sections, and its tutorials are the
executed notebooks of tutorials/ (rendered by mkdocs-jupyter). The README stays the one source of the prose.

A README section goes to the page whose title list starts its heading (:data:`GUIDES`); a section that none
claims lands on ``guides/more.md``, so a new README section shows up on the site without an edit here.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: page → (title, the README headings (prefixes) it collects, in page order); "index.md" also gets the preamble
GUIDES: dict[str, tuple[str, list[str]]] = {
    "index.md": ("simgen", ["Set-up", "Quick start", "Tutorials", "Documentation"]),
    "guides/running.md": ("Running simgen: the job, configuration files, the command line",
                          ["The main job", "Configuration files", "Command line"]),
    "guides/models.md": ("Models and training: families, emulators of maps, mixed precision, saving",
                         ["Map emulators", "Variational auto-encoders", "Continuous-time models", "Mixed precision",
                          "Saving models"]),
    "guides/inference.md": ("Inference: MCMC, ratios, sets, mixed data, sequential rounds, sbi, GPUs",
                            ["Emulator posteriors by MCMC", "Neural ratio estimation", "Posteriors over sets",
                             "Mixed discrete and continuous", "Sequential rounds", "sbi, both ways", "GPUs"]),
    "guides/campaigns.md": ("Simulation campaigns and clusters", ["Simulation campaigns", "Training on a cluster"]),
    "guides/development.md": ("Design, tests, benchmarks and references",
                              ["How it is built", "Architecture", "Tests and benchmarks", "Methods and references"]),
}
MORE = "guides/more.md"


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """README text → (preamble before the first ``## ``, [(heading, section text including its heading)]).

    Lines inside fenced code blocks are never headings (shell and TOML comments start with ``#``).
    """
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fence = None
    for line in text.splitlines():
        stripped = line.lstrip()
        match = re.match(r"(`{3,}|~{3,})", stripped)
        if match and (fence is None or match.group(1).startswith(fence)):
            fence = match.group(1)[:3] if fence is None else None
        if fence is None and line.startswith("## "):
            sections.append((line[3:].strip(), [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), [(title, "\n".join(lines)) for title, lines in sections]


def pages_from_readme(text: str) -> dict[str, str]:
    """The Markdown of every page cut from the README (see :data:`GUIDES`)."""
    preamble, sections = split_sections(text)
    collected: dict[str, list[str]] = {page: [] for page in [*GUIDES, MORE]}
    for title, body in sections:
        page = next((p for p, (_, prefixes) in GUIDES.items() if any(title.startswith(s) for s in prefixes)), MORE)
        collected[page].append(body)
    pages = {}
    for page, bodies in collected.items():
        if page == "index.md":
            head = preamble.strip()
        else:
            title = GUIDES[page][0] if page in GUIDES else "More"
            head = f"# {title}"
        if page == MORE and not bodies:
            bodies = ["Every section of the README is on one of the other pages."]
        pages[page] = "\n\n".join([head, *bodies]) + "\n"
    # the README names the notebooks as `01_quickstart`: on the site they are pages
    notebooks = {p.stem for p in (ROOT / "tutorials").glob("[0-9]*.ipynb")}
    pages["index.md"] = re.sub(r"`(\d\d_\w+)`", lambda m: f"[`{m.group(1)}`](tutorials/{m.group(1)}.ipynb)"
                               if m.group(1) in notebooks else m.group(0), pages["index.md"])
    return pages


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    for uri, content in pages_from_readme(README.read_text(encoding="utf-8")).items():
        files.append(File.generated(config, uri, content=content))
    for notebook in sorted((ROOT / "tutorials").glob("[0-9]*.ipynb")):
        # a File rooted at the repository (not File.generated): mkdocs-jupyter's wrapper finds the notebook through
        # src_dir, which a generated file lacks
        files.append(File(f"tutorials/{notebook.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_config(config):
    # the README's own links are written for the repository: watch it (and the notebooks) under `mkdocs serve`
    config.watch.extend([str(README), str(ROOT / "tutorials")])
    return config
