"""A griffe extension for the API pages: simgen's docstrings use Sphinx roles (:class:`~simgen.Store`,
:math:`\\theta`) and reST literal blocks (``Example::``), which Markdown would show verbatim.

* ``:class:`~a.b.C``` → ```C```, ``:func:`a.b.f``` → ```a.b.f``` (any role but math: code, as a reader of the
  source sees it);
* ``:math:`x``` → ``$x$`` (rendered by MathJax through pymdownx.arithmatex);
* a line ending in ``::`` before an indented block → ``:`` (the indented block stays a code block).
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


def to_markdown(text: str) -> str:
    """A docstring with Sphinx roles and literal-block markers, as Markdown."""
    text = MATH.sub(lambda m: f"${m.group(1)}$", text)
    text = ROLE.sub(_role, text)
    return LITERAL.sub(r"\1:\n", text)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
