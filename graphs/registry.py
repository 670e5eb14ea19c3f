"""The declared graphs by id, as agents name them in `graph_id` (and langgraph.json lists them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from graphs.chat import build_chat_graph
from graphs.researcher import build_researcher_graph

GraphBuilder = Callable[..., CompiledStateGraph[Any, Any, Any, Any]]

GRAPH_BUILDERS: dict[str, GraphBuilder] = {
    "chat": build_chat_graph,
    "researcher": build_researcher_graph,
}


def build_graphs(
    *, checkpointer: BaseCheckpointSaver[Any] | None, store: BaseStore | None
) -> dict[str, CompiledStateGraph[Any, Any, Any, Any]]:
    """Every declared graph compiled with the server's checkpointer and store."""
    return {
        graph_id: builder(checkpointer=checkpointer, store=store)
        for graph_id, builder in GRAPH_BUILDERS.items()
    }
