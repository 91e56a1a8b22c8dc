"""Read a tool's description and its parameters' descriptions from a Google-style docstring.

The docstring a person writes for their function is what the model reads, so a tool needs no
second copy of its documentation.
"""

from __future__ import annotations

import inspect
import re

_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_PARAM_SECTIONS = frozenset({"Args", "Arguments", "Parameters", "Attributes", "Fields"})


def summary(doc: str | None) -> str:
    """The first paragraph of ``doc``, joined into one line."""
    lines = inspect.cleandoc(doc or "").splitlines()
    paragraph: list[str] = []
    for line in lines:
        if not line.strip():
            if paragraph:
                break
            continue
        if _SECTION.match(line):
            break
        paragraph.append(line.strip())
    return " ".join(paragraph)


def param_descriptions(doc: str | None) -> dict[str, str]:
    """``{name: description}`` from the ``Args:`` (or ``Attributes:``) section of ``doc``.

    Example:
        >>> param_descriptions('''Do it.
        ...
        ... Args:
        ...     path: Where to look,
        ...         relative to the workspace.
        ... ''')
        {'path': 'Where to look, relative to the workspace.'}
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    found: dict[str, str] = {}
    in_section, entry_indent, current = False, -1, ""
    for line in lines:
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(line)
        if header and indent == 0:
            in_section, entry_indent, current = header.group(1) in _PARAM_SECTIONS, -1, ""
            continue
        if not in_section or not line.strip():
            continue
        if entry_indent < 0:
            entry_indent = indent
        entry = _ENTRY.match(line.strip()) if indent == entry_indent else None
        if entry:
            current = entry.group(1)
            found[current] = entry.group(2).strip()
        elif current and indent > entry_indent:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found
