"""``Tool`` and the ``@tool`` decorator: a typed Python function the model can call.

The function's type hints become the JSON schema the model sees, its docstring the description,
and the same hints check what the model sends back, so a tool is written once, as plain Python.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import SupportsIndex, cast, overload

import anyio.to_thread

from .._errors import ToolArgsInvalid
from .._models._base import ToolSpec
from ._context import Effect, ToolContext
from ._docstring import param_descriptions, summary
from ._schema import REQUIRED, Field, ObjectConverter, compile_annotation, resolve_hints


def _attribute(module: str, qualname: str) -> object:
    found: object = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def _import_tool(module: str, qualname: str) -> object:
    found: object = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the model providers accept


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool hands back: the ``text`` the model sees, and whether it is an error."""

    text: str
    is_error: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """A function the model may call, with its schema and its effect on the world.

    Make one with ``@tool``; call it like the function it wraps, for your own tests.
    """

    name: str
    description: str
    parameters: dict[str, object]
    effect: Effect
    timeout_s: float | None
    fn: Callable[..., object] = field(repr=False)
    arguments: ObjectConverter = field(repr=False)
    context_param: str | None = field(default=None, repr=False)
    awaited: bool = field(init=False, repr=False)  # ``fn`` is a coroutine function

    def __post_init__(self) -> None:
        object.__setattr__(self, "awaited", inspect.iscoroutinefunction(self.fn))

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.fn(*args, **kwargs)

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[object, ...]:
        """A tool that a module defines pickles as a reference to it (the worker imports the
        module), not by value with the module's globals its function uses; one made in a
        notebook's cell goes by value."""
        module, qualname = getattr(self.fn, "__module__", None), self.fn.__qualname__
        if module and module != "__main__" and _attribute(module, qualname) is self:
            return _import_tool, (module, qualname)
        return object.__reduce_ex__(self, protocol)

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def validate(self, arguments: str) -> dict[str, object]:
        """The keyword arguments in the model's raw JSON ``arguments``, checked and converted.

        Raises ``ToolArgsInvalid`` with one line the model can act on. An empty string counts
        as ``{}``, as some models send it for a call without arguments.
        """
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolArgsInvalid(f"arguments are not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            kind = "an array" if isinstance(value, list) else json.dumps(value)[:40]
            raise ToolArgsInvalid(f"arguments must be a JSON object, got {kind}")
        converted = self.arguments.convert(value, "")
        assert isinstance(converted, dict)
        return converted

    async def invoke(self, args: Mapping[str, object], ctx: ToolContext) -> ToolOutput:
        """Run the tool on validated ``args``; its exceptions propagate to the caller.

        Coroutine functions are awaited; plain functions run in a worker thread so a slow tool
        never stalls the event loop.
        """
        kwargs = dict(args)
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        if self.awaited:
            result = await cast(Awaitable[object], self.fn(**kwargs))
        else:
            result = await anyio.to_thread.run_sync(functools.partial(self.fn, **kwargs))
        return to_output(result)


def to_output(result: object) -> ToolOutput:
    """A tool's return value as a ``ToolOutput``: text as is, ``None`` as "ok", else JSON."""
    if isinstance(result, ToolOutput):
        return result
    if isinstance(result, str):
        return ToolOutput(result)
    if result is None:
        return ToolOutput("ok")
    return ToolOutput(json.dumps(result, default=_jsonable))


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


@overload
def tool(
    fn: Callable[..., object],
    /,
    *,
    name: str | None = None,
    effect: Effect | str = Effect.SIDE_EFFECT,
    timeout_s: float | None = None,
) -> Tool: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    effect: Effect | str = Effect.SIDE_EFFECT,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., object]], Tool]: ...


def tool(
    fn: Callable[..., object] | None = None,
    /,
    *,
    name: str | None = None,
    effect: Effect | str = Effect.SIDE_EFFECT,
    timeout_s: float | None = None,
) -> Tool | Callable[[Callable[..., object]], Tool]:
    """Make a model-callable ``Tool`` of a typed function; use as ``@tool`` or ``@tool(...)``.

    The schema comes from the type hints, the description from the docstring's first paragraph
    and each argument's description from its ``Args:`` section. ``effect`` says what an
    interrupted call may do when re-run: "read_only", "idempotent" or "side_effect" (default).

    Example:
        >>> @tool(effect="read_only")
        ... def read_metric(name: str, window_s: int = 60) -> float:
        ...     '''Return the current value of a metric.'''
        ...     return 0.25
        >>> read_metric.parameters["required"]
        ['name']
    """
    chosen = _effect(effect)

    def wrap(f: Callable[..., object]) -> Tool:
        chosen_name = name or getattr(f, "__name__", "")
        if not chosen_name:
            raise TypeError(f"{f!r} has no __name__; give the tool one with tool(..., name=...)")
        return _make_tool(f, name=chosen_name, effect=chosen, timeout_s=timeout_s)

    return wrap if fn is None else wrap(fn)


def _effect(effect: Effect | str) -> Effect:
    try:
        return Effect(effect)
    except ValueError:
        known = ", ".join(e.value for e in Effect)
        raise ValueError(f"unknown effect {effect!r}; use one of: {known}") from None


def _make_tool(
    fn: Callable[..., object], *, name: str, effect: Effect, timeout_s: float | None
) -> Tool:
    if not _NAME.match(name):
        raise ValueError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
    where = f"tool '{name}'"
    hints = resolve_hints(fn, where)
    docs = param_descriptions(fn.__doc__)
    fields: list[Field] = []
    context_param = None
    for param in inspect.signature(fn).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"{where}: parameter '{param.name}' must be passable by keyword")
        if param.name not in hints:
            raise TypeError(f"{where}: parameter '{param.name}' has no type annotation")
        if hints[param.name] is ToolContext:
            context_param = param.name
            continue
        converter = compile_annotation(hints[param.name], f"{where}: parameter '{param.name}'")
        default = REQUIRED if param.default is param.empty else param.default
        fields.append(Field(param.name, converter, default, docs.get(param.name, "")))
    arguments = ObjectConverter(tuple(fields))
    return Tool(
        name=name,
        description=summary(fn.__doc__),
        parameters=arguments.schema(),
        effect=effect,
        timeout_s=timeout_s,
        fn=fn,
        arguments=arguments,
        context_param=context_param,
    )
