"""A tiny counter graph with a subgraph, and one that naps: compiled graphs the API tests serve."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from typing_extensions import TypedDict


class CountState(TypedDict, total=False):
    """A count and a log of the nodes that ran."""

    count: int
    log: Annotated[list[str], operator.add]


async def start(state: CountState) -> dict[str, Any]:
    """Add one."""
    return {"count": state.get("count", 0) + 1, "log": ["start"]}


async def inner_step(state: CountState) -> dict[str, Any]:
    """Add ten, inside the subgraph."""
    return {"count": state.get("count", 0) + 10, "log": ["inner_step"]}


async def finish(state: CountState) -> dict[str, Any]:
    """Add a hundred."""
    return {"count": state.get("count", 0) + 100, "log": ["finish"]}


def build_inner() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The subgraph: one node."""
    builder = StateGraph(CountState)
    builder.add_node("inner_step", inner_step)
    builder.add_edge(START, "inner_step")
    builder.add_edge("inner_step", END)
    return builder.compile()


def build_counter_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """start → child (subgraph) → finish."""
    builder = StateGraph(CountState)
    builder.add_node("start", start)
    builder.add_node("child", build_inner())
    builder.add_node("finish", finish)
    builder.add_edge(START, "start")
    builder.add_edge("start", "child")
    builder.add_edge("child", "finish")
    builder.add_edge("finish", END)
    return builder.compile()


async def nap(state: CountState) -> dict[str, Any]:
    """Take a minute: long enough that only a cancel ends the run in a test."""
    await asyncio.sleep(60)
    return {"log": ["nap"]}


def build_sleeper_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """start → nap (a minute)."""
    builder = StateGraph(CountState)
    builder.add_node("start", start)
    builder.add_node("nap", nap)
    builder.add_edge(START, "start")
    builder.add_edge("start", "nap")
    builder.add_edge("nap", END)
    return builder.compile()


counter_graph = build_counter_graph()
sleeper_graph = build_sleeper_graph()
