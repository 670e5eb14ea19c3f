"""The benchmark's trivial graph: three nodes and a fake chat model, nothing else.

Every server in bench/agent_api_bench.py serves this same module (Switchboard and
`langgraph dev` through langgraph.json here, Aegra through aegra.json), so what differs
between them is the server alone. It imports only langgraph and langchain-core.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

MODEL = FakeListChatModel(responses=["Hello from the fake model."])


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int


def prepare(state: State) -> dict[str, Any]:
    """Count the turn (state written by a plain node)."""
    return {"turns": state.get("turns", 0) + 1}


async def respond(state: State) -> dict[str, Any]:
    """Ask the fake model (a real langchain chat model call, no network)."""
    return {"messages": [await MODEL.ainvoke(state["messages"])]}


def finish(state: State) -> dict[str, Any]:
    """Close the turn: a turn whose answer is empty does not count."""
    last = state["messages"][-1] if state["messages"] else HumanMessage("")
    return {} if last.content else {"turns": state["turns"] - 1}


builder = StateGraph(State)
builder.add_node("prepare", prepare)
builder.add_node("respond", respond)
builder.add_node("finish", finish)
builder.add_edge(START, "prepare")
builder.add_edge("prepare", "respond")
builder.add_edge("respond", "finish")
builder.add_edge("finish", END)
graph = builder.compile()
