"""The researcher: always searches (twice) and answers only from cited passages, no tools."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from nodes.context import AgentContext
from nodes.recall import recall
from nodes.remember import remember
from nodes.respond import respond
from nodes.retrieve import retrieve
from nodes.state import AgentState, InputState, OutputState
from nodes.widen import widen

ResearcherGraph = CompiledStateGraph[AgentState, AgentContext, InputState, OutputState]


def build_researcher_graph(
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    store: BaseStore | None = None,
    name: str = "researcher",
) -> ResearcherGraph:
    """Compile recall → retrieve → widen → respond → remember; it connects to nothing."""
    builder = StateGraph(
        AgentState, context_schema=AgentContext, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("recall", recall)
    builder.add_node("retrieve", retrieve)
    builder.add_node("widen", widen)
    builder.add_node("respond", respond)
    builder.add_node("remember", remember)
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "retrieve")
    builder.add_edge("retrieve", "widen")
    builder.add_edge("widen", "respond")
    builder.add_edge("respond", "remember")
    builder.add_edge("remember", END)
    return builder.compile(checkpointer=checkpointer, store=store, name=name)


graph = build_researcher_graph()
