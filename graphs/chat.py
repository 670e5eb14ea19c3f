"""The default assistant: (recall ∥ retrieve) → plan → call_tools ⟲ reason → respond → remember
(when it has something to save or say)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from nodes.call_tools import call_tools
from nodes.context import AgentContext
from nodes.plan import plan, route_after_plan
from nodes.reason import reason, route_after_reason
from nodes.recall import recall
from nodes.remember import remember, route_after_respond
from nodes.respond import respond
from nodes.retrieve import retrieve
from nodes.state import AgentState, InputState, OutputState

ChatGraph = CompiledStateGraph[AgentState, AgentContext, InputState, OutputState]
R = TypeVar("R")


def on_loop(route: Callable[[AgentState], R]) -> Callable[[AgentState], Awaitable[R]]:
    """`route` as a coroutine function: LangGraph runs a plain function's branch in a thread
    of the default executor (a hand-off and a wake-up per branch taken), a coroutine function's
    on the event loop. A route reads a few keys of the state: cheaper than the hand-off. The
    annotations stay `route`'s (LangGraph reads the destinations off its `Literal`)."""

    @functools.wraps(route)
    async def routed(state: AgentState) -> R:
        return route(state)

    return routed


def build_chat_graph(
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    store: BaseStore | None = None,
    name: str = "chat",
) -> ChatGraph:
    """Compile the chat graph; it connects to nothing until it runs."""
    builder = StateGraph(
        AgentState, context_schema=AgentContext, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("recall", recall)
    builder.add_node("retrieve", retrieve)
    builder.add_node("plan", plan)
    builder.add_node("call_tools", call_tools)
    builder.add_node("reason", reason)
    builder.add_node("respond", respond)
    builder.add_node("remember", remember)
    # recall and retrieve are independent: one step, side by side (one checkpoint, and the
    # message's embedding is computed once for both).
    builder.add_edge(START, "recall")
    builder.add_edge(START, "retrieve")
    builder.add_edge(["recall", "retrieve"], "plan")
    builder.add_conditional_edges("plan", on_loop(route_after_plan))
    builder.add_edge("call_tools", "reason")
    builder.add_conditional_edges("reason", on_loop(route_after_reason))
    # `respond` ends the turn itself when `remember` would have nothing to save or say (most
    # turns: the remembering `recall` began is over by then): one step and checkpoint fewer.
    builder.add_conditional_edges("respond", on_loop(route_after_respond))
    builder.add_edge("remember", END)
    return builder.compile(checkpointer=checkpointer, store=store, name=name)


graph = build_chat_graph()
