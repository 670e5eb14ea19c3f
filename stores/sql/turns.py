"""Chat turns in SQL: the user message and the run row first, then what the agent produced."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, update

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


async def begin_turn(
    db: Database,
    conversation_id: uuid.UUID,
    *,
    content: str,
    metadata: Mapping[str, Any],
    prepare: Callable[[Conversation, Agent], T],
) -> tuple[T, Message, Run]:
    """Check the conversation, then write the user's message and a `running` run row.

    One transaction: the conversation (404 if unknown) and its agent (409 if deleted) are
    read, `prepare(conversation, agent)` runs (it may raise to refuse the turn, and nothing is
    written), then the message and the run are inserted.

    Returns:
        What `prepare` returned, the user's message and the run.
    """
    async with db.sessions.begin() as session:
        conversation = await session.get(
            Conversation, conversation_id, with_for_update={"key_share": True}
        )
        if conversation is None:
            raise NotFoundError("conversation", conversation_id, field="conversation_id")
        agent = _agent_of(
            conversation,
            await session.get(Agent, conversation.agent_id) if conversation.agent_id else None,
        )
        prepared = prepare(conversation, agent)
        message = Message(
            conversation_id=conversation_id, sender="user", content=content, metadata_={}
        )
        run = Run(
            thread_id=conversation_id,
            assistant_id=agent.id,
            status="running",
            kwargs={"input": {"message": content}},
            metadata_=dict(metadata),
            attempt=1,
        )
        session.add_all([message, run])
        conversation.updated_at = func.now()
        await session.flush()
        return prepared, message, run


async def finish_turn(
    db: Database,
    *,
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    messages: Sequence[Mapping[str, Any]],
    status: str,
    error: str | None = None,
) -> list[Message]:
    """Write the turn's tool and agent messages (in order) and close its run row."""
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
            update(Run)
            .where(Run.id == run_id)
            .values(status=status, error=error, updated_at=func.now())
        )
        if rows:
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(updated_at=func.now())
            )
        return rows
