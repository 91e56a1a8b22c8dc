"""A fake LLM provider for tests: a real HTTP server on 127.0.0.1 speaking OpenAI's Chat
Completions and Anthropic's Messages wire formats, streaming or not.

It plays a script of ``ModelResponse`` and ``Fault`` items, one per request, records every
request it receives, and fails on cue (error statuses with ``Retry-After``, delays, streams cut
short, bodies that are not JSON), so a client, the official SDKs included, is tested over real
HTTP without mocks.

Example:
    >>> import openai
    >>> from jupyter_agent.testing import FakeProvider, reply
    >>> with FakeProvider([reply("Hello!")]) as fake:
    ...     client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test")
    ...     answer = client.chat.completions.create(model="gpt-4.1-mini", messages=[])
    ...     client.close()
    >>> answer.choices[0].message.content
    'Hello!'
"""

from __future__ import annotations

from ._script import Fault, RecordedRequest, ScriptItem
from ._server import FakeProvider

__all__ = ["FakeProvider", "Fault", "RecordedRequest", "ScriptItem"]
