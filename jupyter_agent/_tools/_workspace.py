"""Keep the file tools inside the agent's workspace.

A model may be tricked (by a file it read, a web page) into asking for ``/etc/passwd`` or
``../../.ssh``; every path a file tool touches goes through ``resolve_in_workspace`` first.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from .._errors import WorkspaceEscape


def resolve_in_workspace(workspace: Path, path: str) -> Path:
    """The real location of ``path`` inside ``workspace``, or ``WorkspaceEscape``.

    Refuses absolute paths, any ``..`` component, and paths that leave the workspace through a
    symlink (followed, even when it dangles). ``""`` and ``"."`` are the workspace itself.

    Example:
        >>> resolve_in_workspace(Path("/tmp"), "../etc/passwd")
        Traceback (most recent call last):
        ...
        jupyter_agent._errors.WorkspaceEscape: path '../etc/passwd' uses '..'; ...
    """
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute():
        raise WorkspaceEscape(f"path {path!r} is absolute; give a path relative to the workspace")
    if ".." in path.replace("\\", "/").split("/"):
        raise WorkspaceEscape(f"path {path!r} uses '..'; give a path inside the workspace")
    root = workspace.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise WorkspaceEscape(
            f"path {path!r} leads outside the workspace through a symlink; it is refused"
        )
    return target
