"""Everything a test of your own agents needs: scripted and demo models, and a fake clock.

``ScriptedModel`` plays turns you write (``reply``, ``call``, ``calls``, ``call_raw``, or a
function of the request); ``FakeProvider`` is a real HTTP server on 127.0.0.1 that plays such
turns in the OpenAI and Anthropic wire formats, with faults on cue; ``DemoModel`` plays a
canned but reactive run; ``FakeClock`` lets a five-day monitoring session pass in milliseconds.

Example:
    >>> from jupyter_agent.testing import FakeClock, ScriptedModel, call, reply
    >>> model = ScriptedModel([
    ...     call("write_file", path="hello.txt", content="hi"),
    ...     reply("Wrote hello.txt."),
    ... ])
    >>> clock = FakeClock(start=0.0)
    >>> model.name, clock.now()
    ('scripted', 0.0)
"""

from __future__ import annotations

from ._clock import FakeClock, ScaledClock
from ._fake_provider import FakeProvider, Fault, RecordedRequest
from ._models._demo import DemoModel
from ._models._scripted import ScriptedModel, Turn, TurnFunction, call, call_raw, calls, reply

__all__ = [
    "DemoModel",
    "FakeClock",
    "FakeProvider",
    "Fault",
    "RecordedRequest",
    "ScaledClock",
    "ScriptedModel",
    "Turn",
    "TurnFunction",
    "call",
    "call_raw",
    "calls",
    "reply",
]
