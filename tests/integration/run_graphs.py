"""Compiled graphs the run-engine tests serve (tests/projects/test_graphs/langgraph.json names
them by module path, so the server runs this very module): slow steps, a review that interrupts."""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt

STEPS = ("s1", "s2", "s3", "s4")
# How many times each node of a thread ran to its end, in this process (tests serving in a
# thread of their own read it): a node that ran twice was executed by two live attempts.
COMPLETED: Counter[tuple[str, str]] = Counter()
# What the nodes did, in order, in this process: (thread, run attempt, node, "start" | "end" |
# "stopped"), so a test can tell whether two attempts of a run were ever live at once.
TRACE: list[tuple[str, int, str, str]] = []


class StepsState(TypedDict, total=False):
    """What the test graphs carry: a log every node appends its name to."""

    log: Annotated[list[str], operator.add]
    approved: bool
    note: str  # by the last step: a NUL in it (`configurable.nul_note`), `note_bytes` long


def _step(name: str) -> Any:
    async def node(state: StepsState, config: RunnableConfig) -> dict[str, Any]:
        configurable = config.get("configurable") or {}
        thread_id = str(configurable.get("thread_id"))
        attempt = int((config.get("metadata") or {}).get("run_attempt", 0))
        TRACE.append((thread_id, attempt, name, "start"))
        try:
            if configurable.get("stall_at") == name and attempt == 1:
                await asyncio.Event().wait()  # never ends on its own
            await asyncio.sleep(float(configurable.get("delay", 0.0)))
        except asyncio.CancelledError:
            TRACE.append((thread_id, attempt, name, "stopped"))
            raise
        if configurable.get("fail_at") == name:
            nul = "\x00 after a NUL" if configurable.get("nul_error") else ""
            raise ValueError(f"step {name} failed on purpose{nul}")
        COMPLETED[(thread_id, name)] += 1
        TRACE.append((thread_id, attempt, name, "end"))
        if configurable.get("nul_note") and name == STEPS[-1]:
            return {"log": [name], "note": "a\x00b"}  # PostgreSQL's JSONB refuses it
        if configurable.get("note_bytes") and name == STEPS[-1]:
            return {"log": [name], "note": "x" * int(configurable["note_bytes"])}
        return {"log": [name]}

    return node


def build_steps_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """s1 → s2 → s3 → s4, each sleeping `configurable.delay` seconds, then logging its name;
    the node `configurable.stall_at` never ends on a run's first attempt (until stopped)."""
    builder = StateGraph(StepsState)
    previous = START
    for name in STEPS:
        builder.add_node(name, _step(name))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(name="steps")


async def review(state: StepsState) -> dict[str, Any]:
    """Ask a human whether to publish the draft."""
    answer = interrupt({"question": "publish the draft?", "log": state.get("log", [])})
    return {"approved": bool(answer), "log": [f"review:{answer}"]}


async def draft(state: StepsState) -> dict[str, Any]:
    """Write the draft."""
    return {"log": ["draft"]}


async def publish(state: StepsState) -> dict[str, Any]:
    """Publish (only reached after the review)."""
    return {"log": ["published" if state.get("approved") else "discarded"]}


def build_review_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """draft → review (interrupt) → publish."""
    builder = StateGraph(StepsState)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder.compile(name="review")


steps_graph = build_steps_graph()
review_graph = build_review_graph()
