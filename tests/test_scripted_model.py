"""ScriptedModel: the public model that plays a script, for tests of users' own agents."""

from __future__ import annotations

import json

import pytest

from jupyter_agent._errors import ModelError
from jupyter_agent._models._base import Message, ModelRequest, ModelResponse, ToolCallRequest
from jupyter_agent.testing import ScriptedModel, call, call_raw, calls, reply

pytestmark = pytest.mark.anyio
GOAL = Message("user", "do it")


def after(turns: int) -> ModelRequest:
    """A request with ``turns`` assistant messages already in it, each answered by a tool."""
    messages = [GOAL]
    for n in range(turns):
        made = ToolCallRequest(f"call_{n}_0", "noop", "{}")
        messages += [
            Message("assistant", "", tool_calls=(made,)),
            Message("tool", "ok", tool_call_id=made.id, name="noop"),
        ]
    return ModelRequest(messages)


async def test_the_turn_played_is_the_number_of_assistant_messages() -> None:
    model = ScriptedModel(["first", "second", "third"])
    assert (await model.complete(after(2))).text == "third"
    assert (await model.complete(after(0))).text == "first"


async def test_a_fresh_model_plays_on_where_another_stopped() -> None:
    script = [call("a"), call("b"), reply("done with a and b")]
    await ScriptedModel(script).complete(after(0))
    response = await ScriptedModel(script).complete(after(2))
    assert response.text == "done with a and b"


async def test_call_sends_its_keyword_arguments_as_json() -> None:
    response = await ScriptedModel([call("read_file", path="a.txt", limit=10)]).complete(after(0))
    (made,) = response.tool_calls
    assert (made.name, json.loads(made.arguments)) == ("read_file", {"path": "a.txt", "limit": 10})
    assert response.stop_reason == "tool_use"


async def test_call_accepts_an_argument_called_name() -> None:
    response = await ScriptedModel([call("greet", name="Ada")]).complete(after(0))
    assert json.loads(response.tool_calls[0].arguments) == {"name": "Ada"}


async def test_call_ids_are_numbered_by_turn_and_position() -> None:
    model = ScriptedModel([call("a"), calls(call("b"), call("c"), text="two at once")])
    response = await model.complete(after(1))
    assert [c.id for c in response.tool_calls] == ["call_1_0", "call_1_1"]
    assert [c.name for c in response.tool_calls] == ["b", "c"]
    assert response.text == "two at once"


async def test_call_raw_keeps_invalid_json_as_is() -> None:
    response = await ScriptedModel([call_raw("python", "{not json")]).complete(after(0))
    assert response.tool_calls[0].arguments == "{not json"


async def test_a_full_response_is_played_as_given() -> None:
    given = ModelResponse("hi", (ToolCallRequest("mine", "x", "{}"),), model="fake:1")
    response = await ScriptedModel([given]).complete(after(0))
    assert response == given


async def test_reply_ends_the_run_without_tool_calls() -> None:
    response = await ScriptedModel([reply("finished")]).complete(after(0))
    assert (response.text, response.tool_calls, response.stop_reason) == (
        "finished",
        (),
        "end_turn",
    )
    assert response.model == "scripted"


async def test_a_turn_can_be_a_function_of_the_request() -> None:
    def echo(request: ModelRequest) -> ModelResponse:
        return reply(f"{len(request.messages)} messages")

    model = ScriptedModel([call("a"), echo])
    assert (await model.complete(after(1))).text == "3 messages"


async def test_a_turn_function_may_be_async() -> None:
    async def later(request: ModelRequest) -> ModelResponse:
        return call("look", at=request.messages[-1].content)

    response = await ScriptedModel([later]).complete(after(0))
    assert json.loads(response.tool_calls[0].arguments) == {"at": "do it"}
    assert response.tool_calls[0].id == "call_0_0"


async def test_one_function_can_play_every_turn() -> None:
    model = ScriptedModel(lambda request: reply(str(len(request.messages))))
    assert (await model.complete(after(5))).text == "11"


async def test_past_the_end_the_model_answers_done() -> None:
    response = await ScriptedModel([call("a")]).complete(after(1))
    assert (response.text, response.tool_calls) == ("done", ())


async def test_past_the_end_a_strict_model_raises() -> None:
    with pytest.raises(ModelError, match="has 1 turns; turn 2 was asked for"):
        await ScriptedModel([call("a")], strict=True).complete(after(1))


async def test_requests_are_recorded_in_order() -> None:
    model = ScriptedModel(["a", "b"], name="mine")
    first, second = after(0), after(1)
    await model.complete(first)
    await model.complete(second)
    assert model.requests == [first, second]
    assert model.name == "mine"


async def test_a_long_run_keeps_only_the_newest_requests() -> None:
    from jupyter_agent._models._scripted import REQUESTS_KEPT

    model = ScriptedModel(lambda request: reply("ok"))
    sent = [after(0) for _ in range(2 * REQUESTS_KEPT + 1)]
    for request in sent:
        await model.complete(request)
    assert model.requests == sent[-REQUESTS_KEPT:]


def test_calls_needs_at_least_one_call() -> None:
    with pytest.raises(ValueError, match="at least one"):
        calls(reply("no calls here"))


def test_a_single_turn_must_be_wrapped_in_a_list() -> None:
    with pytest.raises(TypeError, match="wrap one turn"):
        ScriptedModel("hello")


async def test_a_turn_function_returning_something_else_is_a_type_error() -> None:
    model = ScriptedModel([lambda request: "text"])  # type: ignore[list-item, return-value]
    with pytest.raises(TypeError, match="must give a ModelResponse"):
        await model.complete(after(0))
