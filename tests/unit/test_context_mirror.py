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

from server.agent_api.configurable import BOTH, mirrored
from server.runs.schema_context import schema_context
from stores.errors import InvalidInputError


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
