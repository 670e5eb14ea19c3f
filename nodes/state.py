"""The agent's typed state: a bounded window of messages, a running summary, and per-turn work."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


class Source(TypedDict):
    """A retrieved chunk the answer may cite as `[n]`."""

    n: int
    document_id: str
    chunk_index: int
    collection: str
    source: str
    doc_type: str
    title: str
    text: str
    score: float


class Memory(TypedDict):
    """A long-term fact about the user, recalled from the memory store."""

    key: str
    text: str


class AgentState(TypedDict, total=False):
    """State of one conversation (thread).

    `messages` holds only a window of recent turns, user messages and answers (the `remember`
    node appends the answer, trims the window and folds what drops out into `summary`), so the
    checkpoint written per turn does not grow with the conversation; the full transcript lives
    in the SQL `messages` table. `recall` and `retrieve` run side by side in the turn's first
    step, so each writes keys of its own: `retrieve` its warning in `search_warnings`, which
    `turn_warnings` adds to `warnings`. `scratch` holds the turn's tool calls and results and is
    emptied at its end, so the window is written twice per turn, not once per step. The other
    keys are rewritten every turn; `tool_calls` keeps the turn's tool calls with their results
    (what the transcript records, whichever process finishes the turn).
    """

    messages: Annotated[list[AnyMessage], add_messages]
    scratch: Annotated[list[AnyMessage], add_messages]
    answer_id: str
    summary: str
    memories: list[Memory]
    sources: list[Source]
    plan: list[str]
    steps: int
    warnings: list[str]
    search_warnings: list[str]
    answer: str
    citations: list[Source]
    turn: int
    usage: dict[str, int]
    stopped: bool
    tool_calls: list[dict[str, Any]]
    memory_task: str  # finds the work `recall` began for `remember` (`nodes.remember`)


class InputState(TypedDict):
    """What a run takes: the new user message(s)."""

    messages: Annotated[list[AnyMessage], add_messages]


class OutputState(TypedDict, total=False):
    """What a run returns: the answer with its citations, and the plan it followed."""

    messages: Annotated[list[AnyMessage], add_messages]
    answer: str
    citations: list[Source]
    plan: list[str]
    warnings: list[str]
    summary: str
    turn: int


def last_user_text(state: AgentState) -> str:
    """The text of the latest human message of the state ("" when there is none)."""
    for message in reversed(state.get("messages", [])):
        if message.type == "human":
            return message.text
    return ""


def turn_warnings(state: AgentState) -> list[str]:
    """The turn's warnings: those in `warnings`, then the knowledge search's."""
    return [*state.get("warnings", []), *state.get("search_warnings", [])]


def changed(state: AgentState, updates: dict[str, Any]) -> dict[str, Any]:
    """`updates` without the plain keys whose value the state already has: a key a node
    writes is saved again in the next checkpoint (a blob row for a list or a dict) even when
    its value did not change, and most turns reset lists that are already empty."""
    return {
        key: value
        for key, value in updates.items()
        if key in _REDUCED or key not in state or state[key] != value  # type: ignore[literal-required]
    }


_REDUCED = frozenset({"messages", "scratch"})  # appended to, never compared


def emit(writer: Any, event: str, data: dict[str, Any]) -> None:
    """Send a typed custom stream event `{"event": ..., "data": ...}` through `writer`."""
    writer({"event": event, "data": data})
