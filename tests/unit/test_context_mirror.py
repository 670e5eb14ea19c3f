"""`config.configurable` and `context` mirrored as langgraph-api mirrors them, and a graph given
only the context keys its context schema declares (dataclass, TypedDict, pydantic, none)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel
from typing_extensions import TypedDict

from server.agent_api.configurable import BOTH, mirrored, refuse_both, run_mirrored
from server.runs.schema_context import CONTEXT_GIVEN, drop_undeclared, schema_context
from stores.errors import InvalidInputError
from stores.sql.crons import merged_payload


class State(TypedDict, total=False):
    seen: Any


@dataclasses.dataclass
class DataTone:
    tone: str = "plain"


class TypedTone(TypedDict, total=False):
    tone: str


class ModelTone(BaseModel):
    tone: str = "plain"


def _graph(schema: Any) -> Any:
    async def echo(state: State, runtime: Runtime[Any]) -> dict[str, Any]:
        context = runtime.context
        if dataclasses.is_dataclass(context) and not isinstance(context, type):
            context = dataclasses.asdict(context)
        if isinstance(context, BaseModel):
            context = context.model_dump()
        return {"seen": context}

    builder = StateGraph(State, context_schema=schema)
    builder.add_node("echo", echo)
    builder.add_edge(START, "echo")
    builder.add_edge("echo", END)
    return builder.compile()


def test_configurable_becomes_the_context_and_the_context_configurable() -> None:
    config, context = mirrored({"configurable": {"x": 1}, "recursion_limit": 5}, None)
    assert (config, context) == ({"configurable": {"x": 1}, "recursion_limit": 5}, {"x": 1})
    assert mirrored(None, {"x": 2}) == ({"configurable": {"x": 2}}, {"x": 2})
    assert mirrored({}, None) == ({}, None)
    assert mirrored({"configurable": {}}, {}) == ({"configurable": {}}, {})


def test_both_at_once_is_a_400_even_when_they_agree() -> None:
    with pytest.raises(InvalidInputError) as refused:
        mirrored({"configurable": {"x": 1}}, {"x": 1})
    assert (refused.value.status, str(refused.value), refused.value.field) == (400, BOTH, "context")


@pytest.mark.parametrize("schema", [DataTone, TypedTone, ModelTone])
async def test_a_graph_gets_only_its_declared_context_keys(schema: Any) -> None:
    graph = _graph(schema)
    context = schema_context(graph, {"tone": "warm", "junk": 1})
    assert context == {"tone": "warm"}
    assert (await graph.ainvoke({}, context=context))["seen"] == {"tone": "warm"}


async def test_a_graph_without_a_context_schema_gets_every_key() -> None:
    graph = _graph(None)
    assert schema_context(graph, {"tone": "warm", "junk": 1}) == {"tone": "warm", "junk": 1}
    assert schema_context(graph, {}) == {}


def test_a_runs_given_context_marks_its_mirrored_configurable() -> None:
    config, context = run_mirrored({"tags": ["t"]}, {"x": 1})
    assert config == {"tags": ["t"], "configurable": {"x": 1, CONTEXT_GIVEN: True}}
    assert context == {"x": 1}
    assert run_mirrored({"configurable": {"x": 1}}, None) == ({"configurable": {"x": 1}}, {"x": 1})
    with pytest.raises(InvalidInputError):
        refuse_both({"configurable": {"x": 1}}, {"y": 2})
    refuse_both({"configurable": {}}, {"y": 2})


def test_undeclared_keys_leave_configurable_only_where_they_hold_the_contexts_value() -> None:
    configurable = {"tone": "warm", "junk": 1, "other": 2, "thread_id": "t"}
    context = {"tone": "warm", "junk": 1, "other": 3}
    drop_undeclared(configurable, context, {"tone": "warm"})
    assert configurable == {"tone": "warm", "other": 2, "thread_id": "t"}


def test_a_cron_update_replaces_configurable_or_context_never_leaving_both() -> None:
    payload = {"input": {}, "config": {"configurable": {"a": 1}, "tags": ["t"]}}
    assert merged_payload(payload, {"context": {"b": 2}}) == {
        "input": {},
        "config": {"tags": ["t"]},
        "context": {"b": 2},
    }
    assert merged_payload({"config": {"configurable": {"a": 1}}}, {"context": {"b": 2}}) == {
        "context": {"b": 2}
    }
    assert merged_payload({"context": {"b": 2}}, {"config": {"configurable": {"a": 1}}}) == {
        "config": {"configurable": {"a": 1}}
    }
    assert merged_payload({"context": {"b": 2}}, {"config": {"tags": []}}) == {
        "context": {"b": 2},
        "config": {"tags": []},
    }
    assert merged_payload(payload, {"input": {"n": 1}}) == {**payload, "input": {"n": 1}}
