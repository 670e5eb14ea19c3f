"""A /chat turn as a run of the engine: the user's message and a pending run first, then the
run's events as /chat's typed events (`metadata` … `message`, `end`), or folded into one answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from server.chat_api.transcript import SOURCE
from server.runs.context import model_spec
from server.runs.engine import RunEngine
from server.schemas.turns import ChatAnswer, ChatRequest
from server.sse import SseEvent
from stores.sql import repositories as repo
from stores.sql import runs as run_store
from stores.sql import turns
from stores.sql.filters import Filter
from stores.sql.models import Agent, Run
from stores.sql.runs import NOBODY, RunCreator

ChatEvent = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn that was accepted: its user message and its run exist; a worker will run it."""

    run_id: uuid.UUID
    conversation_id: uuid.UUID
    metadata: dict[str, Any]  # the turn's first event
    pending: bool = False  # its run was committed waiting in the queue (nothing stored yet)


@dataclass(frozen=True, slots=True)
class TurnAccess:
    """What the caller of a turn may do: the metadata a new conversation gets (their owner
    stamp), the users and agents they may start one with, and who the run executes as (whose
    conversations it may run on)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    user_access: Filter | None = None
    agent_access: Filter | None = None
    creator: RunCreator = NOBODY


async def start_turn(
    engine: RunEngine, request: ChatRequest, access: TurnAccess | None = None
) -> Turn:
    """Check the target, write the user message and the turn's run, and start it (here, when
    this process has a free slot) or wake a worker.

    Raises `NotFoundError` (unknown conversation, user or agent, or not the caller's),
    `ConflictError` (the conversation's agent was deleted, its graph is not declared, or a run
    is in flight on it) and `LimitError` (the caller's runs in flight are at their cap)
    before any work.
    """
    access = access or TurnAccess()
    db = engine.db
    settings = engine.settings
    if request.conversation_id is None:
        conversation = await repo.create_conversation(
            db,
            {
                "user_id": request.user_id,
                "agent_id": request.agent_id,
                "title": request.title or request.message[:80],
                "metadata_": dict(access.metadata),
            },
            user_access=access.user_access,
            agent_access=access.agent_access,
        )
        conversation_id = conversation.id
    else:
        conversation_id = request.conversation_id

    message_id = uuid.uuid4()
    human = {"type": "human", "content": request.message, "id": str(message_id)}

    async def write() -> tuple[Agent, Run, bool]:
        # Claimed at creation when this process has a free slot: it starts here at once, no
        # worker claims it (`RunQueue.reserve`/`adopt`); else a worker of any process does.
        reservation = engine.queue.reserve()
        run_kwargs = {
            "input": {"messages": [human]},
            "stream_mode": ["custom"],
            "durability": settings.chat_durability,
        }
        claim = reservation.claim if reservation else None
        # While no other process listens, the commit sends no NOTIFY (`RunQueue.telling`): its
        # "new" only ever woke other processes (`adopt` wakes this one's dispatcher), and
        # this process's followers of the conversation's stream are woken at the block's end.
        with engine.queue.creating(conversation_id) as telling:
            try:
                # Checked and written in one round trip in the common case (`begin_turn`).
                agent, conversation, run = await turns.begin_turn(
                    db,
                    conversation_id,
                    message_id=message_id,
                    content=request.message,
                    run_kwargs=run_kwargs,
                    metadata={"source": SOURCE},
                    graph_ids=engine.graphs.declared(),
                    notify=telling.notify,
                    creator=access.creator,
                    claim=claim,
                    notify_thread=telling.notify_thread,
                    # Started here: its first checkpoint read goes in the same round trip.
                    read_latest=engine.resources.checkpoints.is_ready,
                )
            except BaseException:
                engine.queue.release(reservation)
                raise
        if reservation is not None and run.status == "running":
            # Started here by `adopt`: its attempt takes the rows just read (and the
            # conversation's latest checkpoint, when read with them), not reading them again.
            read, latest = turns.latest_checkpoint_read(run)
            engine.executor.preload(
                run.id, agent, conversation, fresh=read and latest is None, latest=latest
            )
        pending = run.status == "pending"
        engine.queue.adopt(run, reservation)
        return agent, run, pending

    # Shielded: a request cancelled mid-commit still launches the run it claimed.
    agent, run, pending = await asyncio.shield(write())
    return Turn(
        run_id=run.id,
        conversation_id=conversation_id,
        metadata={
            "run_id": str(run.id),
            "conversation_id": str(conversation_id),
            "agent_id": str(run.assistant_id),
            "graph_id": agent.graph_id,
            "user_message_id": str(message_id),
            "model": model_spec(agent, settings).name,
        },
        pending=pending,
    )


async def turn_events(engine: RunEngine, turn: Turn) -> AsyncIterator[SseEvent]:
    """The turn's events: `metadata`, then what its nodes stream (memories, sources, plan,
    tool_call, tool_result, token, warning, ...), then `message` and `end`, or `error` and
    `end`. Leaving early does not stop the turn: its run goes on and saves the answer."""
    yield None, "metadata", turn.metadata
    async for seq, event, data in engine.events.follow(turn.run_id, pending=turn.pending):
        if event == "custom" and isinstance(data, dict) and "event" in data:
            yield seq, str(data["event"]), dict(data.get("data") or {})
        elif event == "end":
            yield seq, "end", {"run_id": str(turn.run_id), "status": "success"}
        elif event == "error":
            error = data if isinstance(data, dict) else {}
            message = f"{error.get('error', 'Error')}: {error.get('message', 'the turn failed')}"
            yield seq, "error", {"message": message}
            status = "error"
            try:
                status = (await run_store.get_run(engine.db, turn.run_id)).status
            except Exception:  # the run was deleted (rolled back): it did not succeed
                status = "interrupted"
            yield None, "end", {"run_id": str(turn.run_id), "status": status}


async def turn_answer(engine: RunEngine, turn: Turn) -> ChatAnswer:
    """The turn's result as one JSON answer, folded from the same events a stream gets."""
    answer: dict[str, Any] = {
        "run_id": turn.run_id,
        "conversation_id": turn.conversation_id,
        "message_id": None,
        "status": "error",
        "content": "",
        "citations": [],
        "plan": [],
        "tool_calls": [],
        "sources": [],
        "warnings": [],
        "usage": {},
        "model": turn.metadata["model"],
        "latency_ms": 0.0,
    }
    async for _, event, data in turn_events(engine, turn):
        if event == "tool_result":
            answer["tool_calls"].append(data)
        elif event == "plan":
            answer["plan"] = list(data.get("steps", []))
        elif event == "sources":
            answer["sources"] = list(data.get("sources", []))
        elif event == "warning":
            answer["warnings"].append(str(data.get("message", "")))
        elif event == "message":
            answer.update({key: data[key] for key in data if key != "id"})
            answer["message_id"] = data.get("id")
        elif event == "error":
            answer["error"] = data.get("message")
        elif event == "end":
            answer["status"] = data.get("status", "error")
    if answer["status"] != "success":
        answer["content"] = ""
    return ChatAnswer.model_validate(answer)
