"""`remember`: keep what the user said about themselves, and keep the message window bounded."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, RemoveMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.runtime import Runtime

from nodes.context import AgentContext, context_from
from nodes.memory import remember_said
from nodes.state import AgentState, emit, last_user_text
from stores.memory.facts import Origin, Outcome, Source

log = logging.getLogger(__name__)

SUMMARY_LINE_CHARS = 200


def fold_summary(summary: str, dropped: Sequence[AnyMessage], *, max_chars: int) -> str:
    """`summary` with one line per dropped message appended, cut to the newest `max_chars`."""
    lines = [line for line in summary.splitlines() if line]
    for message in dropped:
        who = "User" if message.type == "human" else "Assistant"
        text = " ".join(message.text.split())
        if text:
            lines.append(f"{who}: {text[:SUMMARY_LINE_CHARS]}")
    while lines and sum(len(line) + 1 for line in lines) > max_chars:
        lines.pop(0)
    return "\n".join(lines)


def window_changes(
    messages: Sequence[AnyMessage],
    answer: AIMessage,
    *,
    window: int,
    summary: str,
    max_chars: int,
) -> dict[str, Any]:
    """Append the turn's answer to the window, drop what is beyond `window` into the summary,
    and empty the turn's scratch (tool calls and results)."""
    kept = [*messages, answer]
    overflow = kept[: max(0, len(kept) - window)]
    removals: list[AnyMessage | RemoveMessage] = [RemoveMessage(id=m.id) for m in overflow if m.id]
    changes: dict[str, Any] = {
        "messages": [*removals, answer],
        "scratch": [RemoveMessage(id=REMOVE_ALL_MESSAGES)],
    }
    if overflow:
        changes["summary"] = fold_summary(summary, overflow, max_chars=max_chars)
    return changes


MEMORY_TOOLS = frozenset({"remember", "forget"})
EARLY_KEEP_S = 600.0  # an early remembering no `remember` joined (its turn failed) is dropped
Remembered = tuple[list[Outcome], str | None]
_early: dict[str, tuple[float, asyncio.Task[Remembered]]] = {}


def auto_remembers(ctx: AgentContext, store: Any, said: str) -> bool:
    """Whether the turn remembers what the user said by itself (policy "auto")."""
    return ctx.memory_policy == "auto" and store is not None and bool(said)


def _observed(task: asyncio.Task[Remembered]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("early remembering failed: %r", task.exception())  # `remember` reports it


def start_remembering(state: AgentState, runtime: Runtime[AgentContext]) -> str:
    """Begin `remember`'s work now, beside the rest of the turn; the token that finds it
    (for the state's `memory_task`), or "" when `remember` is to do it itself.

    `recall` calls this once it has read the user's memories (so it never sees this turn's
    statement). Only when nothing else in the turn can write memories: an agent with the
    `remember` or `forget` tool leaves it to `remember`, which must first see whether the
    model used one. `remember` joins the task and streams its outcomes; a turn resumed in
    another process finds no task and does the work in `remember`.
    """
    ctx = context_from(runtime.context)
    said = last_user_text(state)
    if MEMORY_TOOLS & set(ctx.tools) or not auto_remembers(ctx, runtime.store, said):
        return ""
    assert runtime.store is not None
    now = time.monotonic()
    for stale in [k for k, (at, task) in _early.items() if task.done() and now - at > EARLY_KEEP_S]:
        _early.pop(stale, None)
    token = uuid.uuid4().hex
    task = asyncio.create_task(
        remember_said(runtime.store, ctx, said, source=source_of(runtime, "auto")),
        name=f"remember-{token}",
    )
    task.add_done_callback(_observed)
    _early[token] = (now, task)
    return token


async def _remembered(
    state: AgentState, runtime: Runtime[AgentContext], ctx: AgentContext, said: str
) -> Remembered:
    early = _early.pop(state.get("memory_task") or "", None)
    if early is not None:
        return await early[1]
    assert runtime.store is not None
    return await remember_said(runtime.store, ctx, said, source=source_of(runtime, "auto"))


def source_of(runtime: Runtime[AgentContext], origin: Origin) -> Source:
    """Where a fact stated in this run comes from: its conversation (thread) and run."""
    info = runtime.execution_info
    return Source(
        origin=origin,
        conversation_id=info.thread_id if info is not None else None,
        run_id=info.run_id if info is not None else None,
    )


def outcome_event(outcome: Outcome) -> dict[str, Any]:
    """The `memory_saved` event of one consolidation outcome."""
    data: dict[str, Any] = {"text": outcome.text, "action": outcome.action, "key": outcome.key}
    if outcome.replaced is not None:
        data["replaced"] = outcome.replaced
    return data


def _used_memory_tool(state: AgentState) -> bool:
    return any(
        isinstance(m, AIMessage) and any(c["name"] in MEMORY_TOOLS for c in m.tool_calls)
        for m in state.get("scratch", [])
    )


def nothing_to_remember(state: AgentState, runtime: Runtime[AgentContext]) -> bool:
    """Whether `remember` would only close the turn, with nothing to save, say or empty: the
    turn called no tools (emptying the scratch stays `remember`'s), and it does not remember by
    itself (policy, no store) or the remembering `recall` began has ended with no outcome and
    no warning (usually, by the end of the answer). Then `respond` closes the turn
    (`close_turn`) and `remember` does not run: one step and one checkpoint fewer."""
    if state.get("scratch"):
        return False
    ctx = context_from(runtime.context)
    if not auto_remembers(ctx, runtime.store, last_user_text(state)):
        return True
    token = state.get("memory_task") or ""
    early = _early.get(token)
    if early is None or not early[1].done() or early[1].cancelled():
        return False
    if early[1].exception() is not None or early[1].result() != ([], None):
        return False  # `remember` reports it
    _early.pop(token, None)
    return True


def close_turn(
    state: AgentState, ctx: AgentContext, answer: str, answer_id: str | None
) -> dict[str, Any]:
    """The turn's end: its answer joins the bounded message window (the oldest messages fold
    into the summary) and the scratch is emptied (no write when it is empty already)."""
    changes = window_changes(
        state.get("messages", []),
        AIMessage(content=answer, id=answer_id),
        window=ctx.history_window,
        summary=state.get("summary", ""),
        max_chars=ctx.summary_max_chars,
    )
    if not state.get("scratch"):  # a turn without tools: nothing to empty, no blob to write
        changes.pop("scratch", None)
    return changes


def route_after_respond(state: AgentState) -> Literal["remember", "__end__"]:
    """End the turn if `respond` closed it (its answer is the window's last message)."""
    messages = state.get("messages", [])
    closed = bool(messages) and messages[-1].id == state.get("answer_id")
    return "__end__" if closed else "remember"


async def remember(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Remember what the user said about themselves (policy "auto": extract, decide against
    similar memories, consolidate; usually begun by `recall` and finished while the answer
    streamed, see `start_remembering`), and close the turn: the answer joins the bounded message
    window and the scratch is emptied."""
    ctx = context_from(runtime.context)
    said = last_user_text(state)
    if auto_remembers(ctx, runtime.store, said) and not _used_memory_tool(state):
        try:
            outcomes, warning = await _remembered(state, runtime, ctx, said)
            for outcome in outcomes:
                emit(runtime.stream_writer, "memory_saved", outcome_event(outcome))
            if warning is not None:
                emit(runtime.stream_writer, "warning", {"node": "remember", "message": warning})
        except Exception as error:  # an outage loses the fact, never the answer
            log.warning("saving a memory failed: %r", error)
            emit(
                runtime.stream_writer,
                "warning",
                {"node": "remember", "message": "I could not save that to long-term memory"},
            )
    return close_turn(state, ctx, state.get("answer", ""), state.get("answer_id"))
