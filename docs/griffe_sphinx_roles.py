"""A griffe extension for the API pages: simgen's docstrings use Sphinx roles (:class:`~simgen.Store`,
:math:`\\theta`) and reST literal blocks (``Example::``), which Markdown would show verbatim.

* ``:class:`~a.b.C``` → ```C```, ``:func:`a.b.f``` → ```a.b.f``` (any role but math: code, as a reader of the
  source sees it);
* ``:math:`x``` → ``$x$`` (rendered by MathJax through pymdownx.arithmatex);
* a line ending in ``::`` before an indented block → ``:`` (the indented block stays a code block);
* a reST simple table (columns under ``=====  =====`` rules) → a Markdown table.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|obj|exc|const|ref|doc):`(~?)([^`]+)`")
MATH = re.compile(r":math:`([^`]+)`")
LITERAL = re.compile(r"(\S)::[ \t]*\n(?=[ \t]*\n)")


def _role(match: re.Match[str]) -> str:
    target = re.sub(r"\s+", "", match.group(2))  # a role broken across lines
    if "<" in target and target.endswith(">"):  # :class:`text <target>`: the text
        target = re.sub(r"\s+", " ", match.group(2)).split("<", 1)[0].strip()
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _simple_tables(text: str) -> str:
    """reST simple tables (rule, header, rule, rows, rule) as Markdown tables; other lines unchanged."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        rules = [j for j in range(i, min(len(lines), i + 200)) if RULE.match(lines[j])][:3]
        if len(rules) == 3 and rules[0] == i and rules[1] == i + 2:
            spans = [m.span() for m in re.finditer(r"=+", lines[i])]
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]

            bounds = [start for start, _ in spans[1:]] + [None]
            rows = [[line[start:end].strip() for (start, _), end in zip(spans, bounds, strict=True)]
                    for line in [lines[i + 1], *lines[rules[1] + 1: rules[2]]] if line.strip()]
            out.append("")
            out += [indent + "| " + " | ".join(row) + " |" for row in rows[:1]]
            out.append(indent + "|" + "---|" * len(spans))
            out += [indent + "| " + " | ".join(row) + " |" for row in rows[1:]]
            out.append("")
            i = rules[2] + 1
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """A docstring with Sphinx roles, literal-block markers and simple tables, as Markdown."""
    text = MATH.sub(lambda m: f"${m.group(1)}$", text)
    text = ROLE.sub(_role, text)
    text = _simple_tables(text)
    return LITERAL.sub(r"\1:\n", text)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
