"""A compiled graph loaded by file path: it greets with the project's env and files each note."""

from __future__ import annotations

import os
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime

# Read when the module is imported: the project's `env` must be applied before that.
GREETING = os.environ.get("NOTES_GREETING", "no greeting")


class EchoState(TypedDict, total=False):
    """A note in, a reply out."""

    key: str
    text: str
    reply: str


async def echo(state: EchoState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Reply with the greeting, and put the note in the store under its key."""
    assert runtime.store is not None
    await runtime.store.aput(("notes",), state["key"], {"text": state["text"]})
    return {"reply": f"{GREETING}: {state['text']}"}


builder = StateGraph(EchoState)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
graph = builder.compile(name="Echo")
