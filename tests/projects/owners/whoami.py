"""A graph that says who runs it: the user LangGraph's server puts in the run's config
(`langgraph_auth_user`), as a graph written for LangGraph reads it."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages


class State(TypedDict, total=False):
    """The conversation, and who the last run executed as."""

    messages: Annotated[list[AnyMessage], add_messages]
    who: str | None
    permissions: list[str]


def whoami(state: State, config: RunnableConfig) -> dict[str, Any]:
    """Answer with the identity of the run's user."""
    configurable = config.get("configurable") or {}
    user = configurable.get("langgraph_auth_user")
    identity = user["identity"] if user is not None else None
    return {
        "who": identity,
        "permissions": list(configurable.get("langgraph_auth_permissions") or []),
        "messages": [AIMessage(content=f"you are {identity}")],
    }


builder = StateGraph(State)
builder.add_node("whoami", whoami)
builder.add_edge(START, "whoami")
builder.add_edge("whoami", END)
graph = builder.compile()
