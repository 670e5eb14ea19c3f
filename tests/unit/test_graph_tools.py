"""The call_tools machinery: argument checks, timeouts, errors, the tool cache, the registry."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from langchain_core.messages import ToolCall
from langgraph.store.memory import InMemoryStore

from nodes.call_tools import run_tool_call
from nodes.context import AgentContext, context_from
from nodes.memory import recall_memories
from nodes.offline_model import OfflineChatModel
from nodes.tools.builtin import BUILTIN_TOOLS
from nodes.tools.registry import ToolEnv, ToolError, ToolSpec, enabled_tools, validate_args


class FakeCache:
    """An in-memory stand-in for the MongoDB tool cache."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Any] = {}

    async def get(self, tool: str, args: Mapping[str, Any]) -> Any | None:
        return self.entries.get((tool, repr(sorted(args.items()))))

    async def put(
        self, tool: str, args: Mapping[str, Any], result: Any, *, ttl_seconds: float
    ) -> None:
        self.entries[(tool, repr(sorted(args.items())))] = result


def spec(name: str, run: Any, *, cacheable: bool = False) -> ToolSpec:
    return ToolSpec(
        name=name,
        description="test tool",
        parameters={"type": "object", "properties": {"x": {"type": "integer"}}, "required": []},
        run=run,
        cacheable=cacheable,
    )


def call(name: str, **args: Any) -> ToolCall:
    return ToolCall(name=name, args=args, id=f"id-{name}", type="tool_call")


async def test_cacheable_tool_result_is_reused() -> None:
    runs = 0

    async def counted(args: Mapping[str, Any], env: ToolEnv) -> str:
        nonlocal runs
        runs += 1
        return f"value {args['x']}"

    tool = spec("counted", counted, cacheable=True)
    env = ToolEnv(context=AgentContext(tool_cache=FakeCache()), store=None)
    first, record1 = await run_tool_call(call("counted", x=1), tools={"counted": tool}, env=env)
    second, record2 = await run_tool_call(call("counted", x=1), tools={"counted": tool}, env=env)
    assert (first.content, second.content) == ("value 1", "value 1")
    assert (record1["cached"], record2["cached"], runs) == (False, True, 1)


async def test_slow_tool_times_out_into_an_error_message() -> None:
    async def slow(args: Mapping[str, Any], env: ToolEnv) -> str:
        await asyncio.sleep(5)
        return "late"

    env = ToolEnv(context=AgentContext(tool_timeout_s=0.05), store=None)
    message, record = await run_tool_call(call("slow"), tools={"slow": spec("slow", slow)}, env=env)
    assert message.status == "error"
    assert "timed out" in str(message.content)
    assert record["status"] == "error"


async def test_crashing_tool_and_unknown_tool_become_error_messages() -> None:
    async def broken(args: Mapping[str, Any], env: ToolEnv) -> str:
        raise RuntimeError("boom")

    env = ToolEnv(context=AgentContext(), store=None)
    tools = {"broken": spec("broken", broken)}
    crashed, _ = await run_tool_call(call("broken"), tools=tools, env=env)
    assert crashed.status == "error"
    assert "boom" in str(crashed.content)
    missing, _ = await run_tool_call(call("calculator", expression="1+1"), tools=tools, env=env)
    assert "not enabled" in str(missing.content)
    bad_args, _ = await run_tool_call(call("broken", x="seven"), tools=tools, env=env)
    assert "must be of type integer" in str(bad_args.content)


def test_arguments_are_checked_against_the_schema() -> None:
    calculator = next(t for t in BUILTIN_TOOLS if t.name == "calculator")
    assert validate_args(calculator, {"expression": "1+1"}) == {"expression": "1+1"}
    with pytest.raises(ToolError, match="missing required argument 'expression'"):
        validate_args(calculator, {})
    with pytest.raises(ToolError, match="unknown argument 'code'"):
        validate_args(calculator, {"expression": "1", "code": "x"})


def test_registry_names_every_builtin_and_refuses_unknown_names() -> None:
    assert [t.name for t in enabled_tools(["calculator", "remember"])] == ["calculator", "remember"]
    with pytest.raises(ValueError, match="unknown tools"):
        enabled_tools(["shell"])
    for tool in BUILTIN_TOOLS:
        schema = tool.openai_schema()["function"]
        assert schema["parameters"]["type"] == "object"


async def test_remember_and_forget_tools_write_the_users_namespace() -> None:
    store = InMemoryStore()
    env = ToolEnv(context=AgentContext(user_id="u1"), store=store, conversation_id="c1")
    tools = {t.name: t for t in BUILTIN_TOOLS}
    await run_tool_call(call("remember", fact="I'm vegetarian"), tools=tools, env=env)
    recalled = await recall_memories(store, "u1", "What do you know about me?")
    assert [m["text"] for m in recalled] == ["I'm vegetarian"]
    [item] = await store.asearch(("u1", "memories"))
    assert item.value["attribute"] == "is"
    assert item.value["source"]["origin"] == "tool"
    assert item.value["source"]["conversation_id"] == "c1"
    forgot, _ = await run_tool_call(call("forget", fact="vegetarian"), tools=tools, env=env)
    assert "forgot" in str(forgot.content)
    assert await recall_memories(store, "u1", "What do you know about me?") == []


async def test_remember_tool_keeps_what_the_grammar_cannot_parse_as_a_note() -> None:
    store = InMemoryStore()
    env = ToolEnv(context=AgentContext(user_id="u1"), store=store)
    tools = {t.name: t for t in BUILTIN_TOOLS}
    message, _ = await run_tool_call(
        call("remember", fact="the spare key is under the blue pot"), tools=tools, env=env
    )
    assert message.status == "success"
    [item] = await store.asearch(("u1", "memories"))
    assert item.value["attribute"] == "note"
    assert item.value["text"] == "the spare key is under the blue pot"


async def test_memory_tools_without_a_store_say_so() -> None:
    env = ToolEnv(context=AgentContext(), store=None)
    tools = {t.name: t for t in BUILTIN_TOOLS}
    message, _ = await run_tool_call(call("remember", fact="x"), tools=tools, env=env)
    assert "not available" in str(message.content)


def test_context_from_json_mapping_as_langgraph_dev_sends_it() -> None:
    ctx = context_from(
        {"user_id": "me", "tools": ["calculator"], "model": {"provider": "offline"}, "x": 1}
    )
    assert ctx.tools == ("calculator",)
    assert ctx.model.provider == "offline"
    assert replace(ctx, max_steps=2).max_steps == 2


def test_offline_model_binds_tools_by_name() -> None:
    bound = OfflineChatModel().bind_tools([t.openai_schema() for t in BUILTIN_TOOLS[:2]])
    assert isinstance(bound, OfflineChatModel)
    assert bound.tool_names == ("knowledge_search", "calculator")
