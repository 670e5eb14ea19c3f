"""A graph factory: an async context manager taking the run's config, entered for every run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime


class NotesState(TypedDict, total=False):
    """A question in, the keys of the closest notes out."""

    query: str
    found: list[str]
    limit: int


@asynccontextmanager
async def make_graph(
    config: RunnableConfig,
) -> AsyncIterator[CompiledStateGraph[Any, Any, Any, Any]]:
    """A graph that searches the notes by meaning; `configurable.limit` says how many to find."""
    limit = int((config.get("configurable") or {}).get("limit", 2))

    async def find(state: NotesState, runtime: Runtime[Any]) -> dict[str, Any]:
        assert runtime.store is not None
        hits = await runtime.store.asearch(("notes",), query=state["query"], limit=limit)
        return {"found": [hit.key for hit in hits], "limit": limit}

    builder = StateGraph(NotesState)
    builder.add_node("find", find)
    builder.add_edge(START, "find")
    yield builder.compile()
