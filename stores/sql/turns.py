"""Chat turns in SQL: the user message and the run row first, then what the agent produced."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import String, cast, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import ConflictError, NotFoundError
from stores.sql.database import Database
from stores.sql.models import Agent, Conversation, Message, Run

T = TypeVar("T")


def _agent_of(conversation: Conversation, agent: Agent | None) -> Agent:
    if conversation.agent_id is None or agent is None:
        raise ConflictError(
            f"conversation {conversation.id} has no agent any more (it was deleted); "
            "start a new conversation with another agent",
            field="conversation_id",
        )
    return agent


async def _recover_answers(session: AsyncSession, conversation_id: uuid.UUID) -> None:
    """Write the answers of /chat turns that a run worker finished after their process died.

    Such a run (attempt > 1) ends with the graph's values as output but no agent message in the
    transcript; its answer is added (marked `recovered`) before the next user message.
    """
    answered = exists().where(
        Message.conversation_id == conversation_id,
        Message.sender == "agent",
        Message.metadata_["run_id"].astext == cast(Run.id, String),
    )
    rows = (
        await session.execute(
            select(Run.id, Run.output)
            .where(
                Run.thread_id == conversation_id,
                Run.attempt > 1,
                Run.status == "success",
                Run.metadata_["source"].astext == "chat",
                ~answered,
            )
            .order_by(Run.created_at)
        )
    ).all()
    for run_id, output in rows:
        values = output if isinstance(output, dict) else {}
        session.add(
            Message(
                conversation_id=conversation_id,
                sender="agent",
                content=str(values.get("answer", "")),
                metadata_={
                    "run_id": str(run_id),
                    "recovered": True,
                    "citations": values.get("citations", []),
                },
            )
        )
    if rows:
        await session.flush()


async def begin_turn(
    db: Database,
    conversation_id: uuid.UUID,
    *,
    message_id: uuid.UUID,
    content: str,
    run_kwargs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    owner: str,
    lease_s: float,
    prepare: Callable[[Conversation, Agent], T],
) -> tuple[T, Message, Run]:
    """Check the conversation, then write the user's message and a leased `running` run row.

    One transaction, the conversation row locked first (as the run engine does): 404 if it is
    unknown, 409 if its agent was deleted or a run (of /chat or of the Agent Server API) is
    already pending or running on it; `prepare(conversation, agent)` runs and may raise to
    refuse the turn; nothing is written unless all pass. The run is held by `owner` for
    `lease_s` seconds (renew it with `stores.sql.runs.renew_lease`): if this process dies, the
    lease runs out and a run worker resumes the turn from its last checkpoint.

    Returns:
        What `prepare` returned, the user's message and the run.
    """
    async with db.sessions.begin() as session:
        conversation = await session.get(
            Conversation, conversation_id, with_for_update=True, populate_existing=True
        )
        if conversation is None:
            raise NotFoundError("conversation", conversation_id, field="conversation_id")
        agent = _agent_of(
            conversation,
            await session.get(Agent, conversation.agent_id) if conversation.agent_id else None,
        )
        prepared = prepare(conversation, agent)
        busy = await session.scalar(
            select(Run.id)
            .where(Run.thread_id == conversation_id, Run.status.in_(("pending", "running")))
            .limit(1)
        )
        if busy is not None:
            raise ConflictError(
                f"conversation {conversation_id} is busy with run {busy}; "
                "send the next message when it has ended",
                field="conversation_id",
            )
        await _recover_answers(session, conversation_id)
        message = Message(
            id=message_id,
            conversation_id=conversation_id,
            sender="user",
            content=content,
            metadata_={},
        )
        run = Run(
            thread_id=conversation_id,
            assistant_id=agent.id,
            status="running",
            multitask_strategy="reject",
            kwargs=dict(run_kwargs),
            metadata_=dict(metadata),
            attempt=1,
            lease_owner=owner,
            lease_expires_at=func.now() + timedelta(seconds=lease_s),
        )
        session.add_all([message, run])
        conversation.status = "busy"
        conversation.updated_at = func.now()
        await session.flush()
        return prepared, message, run


async def save_messages(
    db: Database, conversation_id: uuid.UUID, messages: Sequence[Mapping[str, Any]]
) -> list[Message]:
    """Append the turn's tool and agent messages, in order."""
    if not messages:
        return []
    async with db.sessions.begin() as session:
        rows = [
            Message(
                conversation_id=conversation_id,
                sender=values["sender"],
                content=values["content"],
                metadata_=dict(values.get("metadata", {})),
            )
            for values in messages
        ]
        session.add_all(rows)
        await session.flush()
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(updated_at=func.now())
        )
        return rows
