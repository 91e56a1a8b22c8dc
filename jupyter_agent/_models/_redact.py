"""Keep API keys out of everything we write: the store, logs, exports and error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Key-shaped strings: OpenAI-style (sk-..., sk-proj-...), Anthropic (sk-ant-...), bearer tokens.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|"
    r"(?i:x-api-key|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._\-]{8,})"
)
REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every given secret and anything shaped like a key replaced."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, secret.strip(), secret.encode("unicode_escape").decode()}:
            if len(form) >= 4:
                text = text.replace(form, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)
