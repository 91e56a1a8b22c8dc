"""@tool: schemas from type hints, argument validation, invoking, resolving, workspace paths."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from jupyter_agent._errors import ToolArgsInvalid, UnknownTool, WorkspaceEscape
from jupyter_agent._tools import (
    BUILTIN_TOOLS,
    Effect,
    Tool,
    ToolContext,
    ToolOutput,
    resolve_in_workspace,
    resolve_tools,
    tool,
)


@dataclass
class Point:
    """A point on the map.

    Attributes:
        x: Metres east.
        y: Metres north.
    """

    x: float
    y: float = 0.0


@dataclass
class Route:
    name: str
    stops: list[Point] = field(default_factory=list)


def _properties(t: Tool) -> dict[str, object]:
    properties = t.parameters["properties"]
    assert isinstance(properties, dict)
    return properties


# -- schema --------------------------------------------------------------------------------


def test_scalar_parameters_map_to_json_types() -> None:
    @tool
    def f(s: str, i: int, x: float, b: bool) -> None: ...

    assert _properties(f) == {
        "s": {"type": "string"},
        "i": {"type": "integer"},
        "x": {"type": "number"},
        "b": {"type": "boolean"},
    }
    assert f.parameters["required"] == ["s", "i", "x", "b"]
    assert f.parameters["additionalProperties"] is False


def test_parameter_with_default_is_optional_and_advertises_default() -> None:
    @tool
    def f(name: str, window_s: int = 60) -> None: ...

    assert f.parameters["required"] == ["name"]
    assert _properties(f)["window_s"] == {"type": "integer", "default": 60}


def test_list_and_dict_parameters_describe_their_items() -> None:
    @tool
    def f(tags: list[str], limits: dict[str, float]) -> None: ...

    assert _properties(f)["tags"] == {"type": "array", "items": {"type": "string"}}
    assert _properties(f)["limits"] == {
        "type": "object",
        "additionalProperties": {"type": "number"},
    }


def test_optional_parameters_allow_null() -> None:
    @tool
    def f(a: int | None, b: Optional[str] = None) -> None:  # noqa: UP045 - both spellings
        ...

    assert _properties(f)["a"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert _properties(f)["b"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}


def test_literal_parameter_becomes_enum() -> None:
    @tool
    def f(level: Literal["low", "high"]) -> None: ...

    assert _properties(f)["level"] == {"type": "string", "enum": ["low", "high"]}


def test_dataclass_parameter_becomes_nested_object_schema() -> None:
    @tool
    def f(route: Route) -> None: ...

    point = {
        "type": "object",
        "description": "A point on the map.",
        "properties": {
            "x": {"type": "number", "description": "Metres east."},
            "y": {"type": "number", "description": "Metres north.", "default": 0.0},
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    assert _properties(f)["route"] == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "stops": {"type": "array", "items": point}},
        "required": ["name"],
        "additionalProperties": False,
    }


def test_description_and_argument_docs_come_from_the_docstring() -> None:
    @tool
    def read_metric(name: str, window_s: int = 60) -> float:
        """Return the current value
        of a metric.

        Reads the monitoring backend.

        Args:
            name: Metric name,
                as shown on the dashboard.
            window_s (int): Averaging window in seconds.
        """
        return 0.0

    assert read_metric.description == "Return the current value of a metric."
    assert _properties(read_metric)["name"] == {
        "type": "string",
        "description": "Metric name, as shown on the dashboard.",
    }
    assert _properties(read_metric)["window_s"]["description"] == "Averaging window in seconds."  # type: ignore[index]


def test_context_parameter_is_left_out_of_the_schema() -> None:
    @tool
    def f(ctx: ToolContext, path: str) -> None: ...

    assert list(_properties(f)) == ["path"]


def test_missing_annotation_is_refused_at_decoration() -> None:
    def f(path):  # type: ignore[no-untyped-def]
        ...

    with pytest.raises(TypeError, match="parameter 'path' has no type annotation"):
        tool(f)


def test_unsupported_annotation_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="parameter 'when' has unsupported type"):

        @tool
        def f(when: set[int]) -> None: ...


def test_unknown_effect_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown effect 'sometimes'"):
        tool(effect="sometimes")


def test_options_set_name_effect_and_timeout() -> None:
    @tool(name="metric", effect="read_only", timeout_s=5)
    def read_metric(name: str) -> float:
        return 1.0

    assert (read_metric.name, read_metric.effect, read_metric.timeout_s) == (
        "metric",
        Effect.READ_ONLY,
        5,
    )


def test_plain_decorator_defaults_to_side_effect_and_no_timeout() -> None:
    @tool
    def f() -> None: ...

    assert (f.name, f.effect, f.timeout_s) == ("f", Effect.SIDE_EFFECT, None)


def test_decorated_function_is_still_callable() -> None:
    @tool
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert add(2, b=3) == 5


def test_spec_tells_the_model_name_description_and_schema() -> None:
    @tool
    def ping(host: str) -> str:
        """Check that a host answers."""
        return "pong"

    spec = ping.spec()
    assert (spec.name, spec.description, spec.parameters) == (
        "ping",
        "Check that a host answers.",
        ping.parameters,
    )


# -- validate ------------------------------------------------------------------------------


@tool
def read_metric(name: str, window_s: int = 60, level: Literal["p50", "p95"] = "p95") -> float:
    return 0.0


def test_validate_returns_converted_arguments() -> None:
    assert read_metric.validate('{"name": "latency", "window_s": 30}') == {
        "name": "latency",
        "window_s": 30,
    }


def test_validate_refuses_invalid_json() -> None:
    with pytest.raises(ToolArgsInvalid, match="arguments are not valid JSON"):
        read_metric.validate('{"name": ')


def test_validate_refuses_a_non_object() -> None:
    with pytest.raises(ToolArgsInvalid, match="arguments must be a JSON object, got an array"):
        read_metric.validate('["latency"]')


def test_validate_refuses_missing_required_argument() -> None:
    with pytest.raises(ToolArgsInvalid, match="missing required argument 'name'"):
        read_metric.validate('{"window_s": 30}')


def test_validate_refuses_wrong_type_with_a_message_the_model_can_act_on() -> None:
    with pytest.raises(ToolArgsInvalid) as caught:
        read_metric.validate('{"name": "latency", "window_s": "abc"}')
    assert str(caught.value) == "argument 'window_s' must be an integer, got 'abc'"


def test_validate_refuses_a_boolean_for_an_integer() -> None:
    with pytest.raises(ToolArgsInvalid, match="must be an integer, got true"):
        read_metric.validate('{"name": "latency", "window_s": true}')


def test_validate_refuses_unknown_argument_and_lists_the_known_ones() -> None:
    with pytest.raises(ToolArgsInvalid) as caught:
        read_metric.validate('{"name": "latency", "windw_s": 30}')
    assert str(caught.value) == "unknown argument 'windw_s' (expected: name, window_s, level)"


def test_validate_refuses_a_value_outside_the_literal() -> None:
    with pytest.raises(ToolArgsInvalid) as caught:
        read_metric.validate('{"name": "latency", "level": "p99"}')
    assert str(caught.value) == "argument 'level' must be one of 'p50', 'p95', got 'p99'"


def test_validate_accepts_a_whole_float_for_an_integer_and_an_integer_for_a_float() -> None:
    @tool
    def f(n: int, x: float) -> None: ...

    args = f.validate('{"n": 3.0, "x": 2}')
    assert args == {"n": 3, "x": 2.0}
    assert type(args["n"]) is int and type(args["x"]) is float


def test_validate_treats_empty_arguments_as_no_arguments() -> None:
    @tool
    def f(verbose: bool = False) -> None: ...

    assert f.validate("") == {}


def test_validate_builds_dataclasses_inside_lists() -> None:
    @tool
    def f(route: Route) -> None: ...

    args = f.validate('{"route": {"name": "r", "stops": [{"x": 1}, {"x": 2, "y": 3}]}}')
    assert args == {"route": Route("r", [Point(1.0), Point(2.0, 3.0)])}


def test_validate_names_the_path_of_a_bad_nested_value() -> None:
    @tool
    def f(route: Route) -> None: ...

    with pytest.raises(ToolArgsInvalid) as caught:
        f.validate('{"route": {"name": "r", "stops": [{"x": 1}, {"y": 2}]}}')
    assert str(caught.value) == "missing required argument 'route.stops[1].x'"


def test_validate_accepts_null_for_an_optional_argument() -> None:
    @tool
    def f(limit: int | None = 5) -> None: ...

    assert f.validate('{"limit": null}') == {"limit": None}


# -- invoke --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_invoke_runs_a_plain_function_in_a_worker_thread(tmp_path: Path) -> None:
    @tool
    def where() -> str:
        return threading.current_thread().name

    output = await where.invoke({}, ToolContext(workspace=tmp_path))
    assert output.text != threading.current_thread().name


@pytest.mark.anyio
async def test_invoke_awaits_a_coroutine_function_and_passes_the_context(tmp_path: Path) -> None:
    @tool
    async def session(ctx: ToolContext, greeting: str) -> str:
        return f"{greeting} from {ctx.session_id}"

    output = await session.invoke({"greeting": "hi"}, ToolContext(session_id="s1"))
    assert output == ToolOutput("hi from s1")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("returned", "text"),
    [
        (None, "ok"),
        ("plain text", "plain text"),
        ({"p95_ms": 310}, '{"p95_ms": 310}'),
        (Point(1.0), '{"x": 1.0, "y": 0.0}'),
        (Path("a/b"), '"a/b"'),
    ],
)
async def test_invoke_turns_the_return_value_into_text(returned: object, text: str) -> None:
    @tool
    def f() -> object:
        return returned

    assert await f.invoke({}, ToolContext()) == ToolOutput(text)


@pytest.mark.anyio
async def test_invoke_passes_a_tool_output_through() -> None:
    @tool
    async def f() -> ToolOutput:
        return ToolOutput("disk full", is_error=True)

    assert await f.invoke({}, ToolContext()) == ToolOutput("disk full", is_error=True)


@pytest.mark.anyio
async def test_invoke_lets_the_tools_exception_propagate() -> None:
    @tool
    def f() -> None:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError, match="backend down"):
        await f.invoke({}, ToolContext())


# -- resolve_tools -------------------------------------------------------------------------


def test_resolve_tools_finds_builtins_by_name_and_wraps_functions() -> None:
    def read_metric(name: str) -> float:
        return 0.0

    tools = resolve_tools(["shell", read_metric, BUILTIN_TOOLS["read_file"]])
    assert list(tools) == ["shell", "read_metric", "read_file"]
    assert tools["shell"] is BUILTIN_TOOLS["shell"]
    assert tools["read_metric"].parameters["required"] == ["name"]


def test_resolve_tools_refuses_two_tools_with_one_name() -> None:
    with pytest.raises(ValueError, match="two tools are named 'shell'"):
        resolve_tools(["shell", "shell"])


def test_resolve_tools_names_the_builtins_for_an_unknown_name() -> None:
    with pytest.raises(UnknownTool) as caught:
        resolve_tools(["shel"])
    assert str(caught.value).startswith("unknown tool 'shel'; built-ins are: python, shell,")


def test_builtins_have_the_names_the_demo_model_calls() -> None:
    assert list(BUILTIN_TOOLS) == [
        "python",
        "shell",
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "update_plan",
        "sleep",
        "wait_until",
    ]


# -- resolve_in_workspace ------------------------------------------------------------------


def test_workspace_path_resolves_inside_the_workspace(tmp_path: Path) -> None:
    assert resolve_in_workspace(tmp_path, "src/a.py") == tmp_path.resolve() / "src" / "a.py"


def test_workspace_refuses_an_absolute_path(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceEscape, match="is absolute"):
        resolve_in_workspace(tmp_path, "/etc/passwd")


def test_workspace_refuses_dotdot_even_when_it_comes_back_inside(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceEscape, match=r"uses '\.\.'"):
        resolve_in_workspace(tmp_path, f"../{tmp_path.name}/a.txt")


def test_workspace_refuses_a_symlink_pointing_outside(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "out").symlink_to(tmp_path)
    with pytest.raises(WorkspaceEscape, match="outside the workspace"):
        resolve_in_workspace(tmp_path / "ws", "out/secret.txt")


def test_workspace_allows_a_symlink_that_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "latest").symlink_to(tmp_path / "data")
    assert resolve_in_workspace(tmp_path, "latest/x.csv") == tmp_path.resolve() / "data" / "x.csv"
