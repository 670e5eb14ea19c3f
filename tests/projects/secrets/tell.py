"""A graph that repeats the secrets its run was given (config and context), so a test can see
that masking in responses never reaches the graph."""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import get_runtime


class State(TypedDict, total=False):
    """What the run was told: its configurable values and its context."""

    question: str
    told: dict[str, Any]
    context: dict[str, Any]


def tell(state: State, config: RunnableConfig) -> dict[str, Any]:
    """Copy the run's own configurable values (not the server's) and context into the state."""
    configurable = config.get("configurable") or {}
    context = get_runtime().context
    return {
        "told": {
            k: v
            for k, v in configurable.items()
            if not k.startswith(("__", "langgraph_", "checkpoint", "thread_id", "run_id"))
            and isinstance(v, str | int | float | bool | list | dict)
        },
        "context": dict(context) if isinstance(context, dict) else {},
    }


builder = StateGraph(State)
builder.add_node("tell", tell)
builder.add_edge(START, "tell")
builder.add_edge("tell", END)
graph = builder.compile()
