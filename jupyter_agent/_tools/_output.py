"""Keep tool output to a size a model can read, saying what was cut.

The start of an output usually says what ran and the end says how it finished, so both are kept
and the middle goes. The buffer is bounded while it fills, so a runaway ``print`` loop cannot
exhaust memory before its time limit stops it.
"""

from __future__ import annotations

OUTPUT_LIMIT = 20_000  # characters a tool hands back to the model


class CappedText:
    """A growing text that keeps its first and last ``limit // 2`` characters.

    Example:
        >>> out = CappedText(limit=10)
        >>> out.write("0123456789" * 3)
        30
        >>> out.text()
        '01234\\n[... 20 characters cut ...]\\n56789'
    """

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self._half = max(1, limit // 2)
        self._head: list[str] = []
        self._head_len = 0
        self._tail: list[str] = []
        self._tail_len = 0
        self.total = 0

    def write(self, text: str) -> int:
        written = len(text)
        self.total += written
        room = self._half - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += len(text[:room])
            text = text[room:]
        if text:
            self._tail.append(text)
            self._tail_len += len(text)
            if self._tail_len > 4 * self._half:  # trim now and then, not on every write
                self._tail = ["".join(self._tail)[-self._half :]]
                self._tail_len = self._half
        return written

    def text(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)[-self._half :]
        cut = self.total - len(head) - len(tail)
        if cut <= 0:
            return head + tail
        return f"{head}\n[... {cut} characters cut ...]\n{tail}"


def cap_text(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """``text`` itself when it fits in ``limit`` characters, else its head and tail."""
    if len(text) <= limit:
        return text
    capped = CappedText(limit)
    capped.write(text)
    return capped.text()
