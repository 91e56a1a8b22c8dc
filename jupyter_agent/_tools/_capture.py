"""Capture what one thread prints, leaving every other thread's output where it was going.

``contextlib.redirect_stdout`` swaps ``sys.stdout`` for the whole process: while an agent's code
ran, a notebook cell's prints (and other agents') would be stolen into the agent's output. Here
``sys.stdout`` and ``sys.stderr`` get a proxy that looks up the writing thread: a capturing
thread writes to its buffer, any other thread to the stream that was there before. The proxy is
installed while at least one capture is active and removed after the last one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO

from ._output import CappedText

_lock = threading.Lock()
_sinks: dict[int, CappedText] = {}  # thread id -> where that thread's output goes


class _ThreadStream:
    """Stands in for ``sys.stdout``/``sys.stderr``; writes go by the calling thread."""

    def __init__(self, target: TextIO | None) -> None:
        self.target = target

    def write(self, text: str) -> int:
        sink = _sinks.get(threading.get_ident())
        if sink is not None:
            return sink.write(text)
        return self.target.write(text) if self.target is not None else len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if threading.get_ident() not in _sinks and self.target is not None:
            self.target.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.target, name)  # encoding, isatty, fileno, a kernel's set_parent, ...


@contextmanager
def capture_thread_output(limit: int) -> Iterator[CappedText]:
    """Collect what the current thread writes to stdout and stderr, up to ``limit`` characters.

    Example:
        >>> with capture_thread_output(limit=1000) as out:
        ...     print("hello")
        >>> out.text()
        'hello\\n'
    """
    sink = CappedText(limit)
    ident = threading.get_ident()
    with _lock:
        if not _sinks:
            _install()
        outer = _sinks.get(ident)
        _sinks[ident] = sink
    try:
        yield sink
    finally:
        with _lock:
            if outer is None:
                del _sinks[ident]
            else:
                _sinks[ident] = outer
            if not _sinks:
                _uninstall()


def _install() -> None:
    if not isinstance(sys.stdout, _ThreadStream):
        sys.stdout = _ThreadStream(sys.stdout)
    if not isinstance(sys.stderr, _ThreadStream):
        sys.stderr = _ThreadStream(sys.stderr)


def _uninstall() -> None:
    # Only unwrap our own proxy: if someone replaced it meanwhile, theirs stays (ours inside it
    # just passes writes through).
    if isinstance(sys.stdout, _ThreadStream):
        sys.stdout = sys.stdout.target
    if isinstance(sys.stderr, _ThreadStream):
        sys.stderr = sys.stderr.target
