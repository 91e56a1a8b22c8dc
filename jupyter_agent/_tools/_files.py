"""The file built-ins: read, write, edit and list files inside the workspace.

Every path goes through ``resolve_in_workspace`` (a path leaving the workspace raises
``WorkspaceEscape``). Ordinary failures a model can fix (no such file, text not found) come back
as error results that say what to do, not as exceptions.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

from ._context import Effect, ToolContext
from ._output import cap_text
from ._tool import ToolOutput, tool
from ._workspace import resolve_in_workspace

LIST_LIMIT = 500  # entries list_files shows before it asks for a narrower path
SKIPPED_DIRS = frozenset({".git", "__pycache__", ".ipynb_checkpoints"})


def _error(text: str) -> ToolOutput:
    return ToolOutput(text, is_error=True)


def _existing_file(ctx: ToolContext, path: str) -> Path | ToolOutput:
    """The confined path when it is a file; else an error result saying what is there."""
    target = resolve_in_workspace(ctx.workspace, path)
    if target.is_dir():
        return _error(f"{path!r} is a directory; use list_files to see what is in it")
    if not target.exists():
        return _error(f"no file {path!r} in the workspace; use list_files to see what exists")
    return target


@tool(effect=Effect.READ_ONLY)
def read_file(ctx: ToolContext, path: str, offset: int = 0, limit: int = 2000) -> ToolOutput:
    """Read lines of a text file in the workspace.

    Args:
        path: File path relative to the workspace.
        offset: Index of the first line to return (0 is the first line).
        limit: Most lines to return.
    """
    if offset < 0 or limit < 1:
        return _error(f"offset must be >= 0 and limit >= 1, got offset={offset}, limit={limit}")
    target = _existing_file(ctx, path)
    if isinstance(target, ToolOutput):
        return target
    with target.open(encoding="utf-8", errors="replace", newline="") as f:
        lines = list(itertools.islice(f, offset, offset + limit))
        rest = sum(1 for _ in f)
    text = cap_text("".join(lines))
    if rest:
        end = offset + len(lines)
        text += f"\n[lines {offset}-{end - 1} shown; {rest} more: read again with offset={end}]"
    return ToolOutput(text)


@tool(effect=Effect.IDEMPOTENT)
def write_file(ctx: ToolContext, path: str, content: str) -> ToolOutput:
    """Create or overwrite a text file in the workspace with exactly the given content.

    Args:
        path: File path relative to the workspace; missing parent directories are created.
        content: The whole new text of the file.
    """
    target = resolve_in_workspace(ctx.workspace, path)
    if target.is_dir():
        return _error(f"{path!r} is a directory; give a file path")
    before = target.read_bytes() if target.exists() else None
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8", newline="") as f:
        f.write(content)
    ctx.note_file_change(target, before, content.encode())
    return ToolOutput(f"wrote {len(content)} characters to {path}")


@tool(effect=Effect.SIDE_EFFECT)
def edit_file(ctx: ToolContext, path: str, old: str, new: str) -> ToolOutput:
    """Replace one exact piece of text in a file; old must occur exactly once.

    Args:
        path: File path relative to the workspace.
        old: The exact text to replace, with enough context to occur only once.
        new: The text to put in its place.
    """
    target = _existing_file(ctx, path)
    if isinstance(target, ToolOutput):
        return target
    if not old:
        return _error("old is empty; give the exact text to replace")
    try:
        with target.open(encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        return _error(f"{path} is not UTF-8 text; change it with the python or shell tool")
    count = text.count(old)
    if count == 0:
        return _error(f"old text not found in {path}; read the file and copy the text exactly")
    if count > 1:
        return _error(
            f"old text occurs {count} times in {path}; add surrounding lines so it occurs once"
        )
    after = text.replace(old, new, 1)
    with target.open("w", encoding="utf-8", newline="") as f:
        f.write(after)
    ctx.note_file_change(target, text.encode(), after.encode())
    return ToolOutput(f"replaced 1 occurrence in {path}")


@tool(effect=Effect.READ_ONLY)
def list_files(ctx: ToolContext, path: str = ".") -> ToolOutput:
    """List the files under a directory of the workspace, recursively; directories end in '/'.

    Args:
        path: Directory relative to the workspace.
    """
    root = ctx.workspace.resolve()
    target = resolve_in_workspace(ctx.workspace, path)
    if not target.is_dir():
        what = "a file" if target.exists() else "not there"
        return _error(f"{path!r} is {what}; give a directory of the workspace")
    entries = list(itertools.islice(_walk(target, root), LIST_LIMIT + 1))
    if not entries:
        return ToolOutput("(empty directory)")
    text = "\n".join(entries[:LIST_LIMIT])
    if len(entries) > LIST_LIMIT:
        text += f"\n[stopped at {LIST_LIMIT} entries; list a subdirectory to see more]"
    return ToolOutput(text)


def _walk(directory: Path, root: Path) -> Iterator[str]:
    """Entries under ``directory`` as paths relative to ``root``, depth first, sorted.

    Symlinked directories are listed but not entered, so a link cannot lead the walk outside.
    """
    with os.scandir(directory) as it:
        entries = sorted((e for e in it if e.name not in SKIPPED_DIRS), key=lambda e: e.name)
    for entry in entries:
        relative = Path(entry.path).relative_to(root).as_posix()
        if entry.is_dir(follow_symlinks=False):
            yield relative + "/"
            yield from _walk(Path(entry.path), root)
        else:
            yield relative
