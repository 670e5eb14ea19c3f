"""Chat turns in SQL: the user's message and a pending run first, then what the run produced."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from psycopg.types.json import Jsonb
from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import ConflictError, NotFoundError
from stores.sql.database import Database
from stores.sql.models import Agent, Conversation, Run
from stores.sql.quotas import check_in_flight
from stores.sql.runs import (
    NOBODY,
    FinishWrite,
    InlineClaim,
    Notify,
    RunCreator,
    RunToken,
    creation_notifies,
    run_from_row,
)
from stores.sql.threads import thread_row

T = TypeVar("T")


def _agent_of(conversation: Conversation, agent: Agent | None) -> Agent:
    if conversation.agent_id is None or agent is None:
        raise ConflictError(
            f"conversation {conversation.id} has no agent any more (it was deleted); "
            "start a new conversation with another agent",
            field="conversation_id",
        )
    return agent


# The user's message, the run (pending, or claimed by this process when it has a free slot:
# a turn's conversation has no other run in flight), the conversation marked busy and the
# NOTIFYs (sent at commit: "new" for the workers, or the thread's stream followers when
# claimed) in one round trip: data-modifying CTEs all run, referenced or not. It also returns
# the oldest run in flight on the conversation before this one (`in_flight_run`, read in this
# statement's snapshot, taken after the conversation row was locked): when there is one, the
# caller refuses the turn and the transaction rolls back (its writes and NOTIFYs with it).
_BEGIN_TURN = text(
    """
    WITH in_flight AS (
        SELECT id FROM runs
        WHERE thread_id = :conversation_id AND status IN ('pending', 'running')
        ORDER BY created_at LIMIT 1
    ), message AS (
        INSERT INTO messages (id, conversation_id, sender, content, metadata)
        VALUES (:message_id, :conversation_id, 'user', :content, '{}'::jsonb)
    ), run AS (
        INSERT INTO runs
            (thread_id, assistant_id, status, multitask_strategy, kwargs, metadata,
             user_id, auth, lease_owner, lease_expires_at, attempt, stream_position)
        VALUES (:conversation_id, :assistant_id,
                CASE WHEN :claimed THEN 'running' ELSE 'pending' END, 'reject', :kwargs,
                :metadata, :user_id, :auth, :owner,
                CASE WHEN :claimed THEN now() + make_interval(secs => :lease_s) END,
                CASE WHEN :claimed THEN 1 ELSE 0 END,
                CASE WHEN :claimed THEN nextval('thread_stream_positions') END)
        RETURNING *
    ), busy AS (
        UPDATE conversations SET status = 'busy', updated_at = now()
        WHERE id = :conversation_id
    ), notified AS (
        SELECT pg_notify(ch, p)
        FROM unnest(CAST(:channels AS text[]), CAST(:payloads AS text[])) AS u(ch, p)
    )
    SELECT run.*, (SELECT count(*) FROM notified) AS notified,
        (SELECT id FROM in_flight) AS in_flight_run
    FROM run
    """
).bindparams(
    bindparam("kwargs", type_=JSONB),
    bindparam("metadata", type_=JSONB),
    bindparam("auth", type_=JSONB),
)


async def _lock_with_agent(
    session: AsyncSession, conversation_id: uuid.UUID
) -> tuple[Conversation | None, Agent | None]:
    """The conversation row locked for the transaction (as `lock_thread` does) and its agent,
    in one statement."""
    row = (
        await session.execute(
            select(Conversation, Agent)
            .outerjoin(Agent, Agent.id == Conversation.agent_id)
            .where(Conversation.id == conversation_id)
            .with_for_update(of=Conversation)
            .execution_options(populate_existing=True)
        )
    ).first()
    return (row[0], row[1]) if row is not None else (None, None)


async def begin_turn(
    db: Database,
    conversation_id: uuid.UUID,
    *,
    message_id: uuid.UUID,
    content: str,
    run_kwargs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    prepare: Callable[[Conversation, Agent], T],
    notify: Notify | None = None,
    creator: RunCreator = NOBODY,
    claim: InlineClaim | None = None,
) -> tuple[T, Run]:
    """Check the conversation, then write the user's message and a pending run of its agent.

    One transaction, the conversation row locked first (as every run writer does): 404 if it
    is unknown, 409 if its agent was deleted or a run (of /chat or of the Agent Server API)
    is already pending or running on it; `prepare(conversation, agent)` runs and may raise to
    refuse the turn; nothing is written unless all pass. The conversation must satisfy
    `creator.access` (404 otherwise), and the creator's runs in flight must be under their cap
    (429). The commit sends `notify` ("new"): a run worker of any process claims the run like
    any other, and runs it as `creator`.

    With `claim` (a slot reserved in this process: `RunQueue.reserve`), the run is written
    already claimed by it (running, attempt 1, with its lease): hand it to `RunQueue.adopt`
    after the commit; no worker claims it.

    Returns:
        What `prepare` returned, and the run (the user's message has id `message_id`).
    """
    async with db.sessions.begin() as session:
        if creator.user_id is not None:
            await check_in_flight(session, creator.user_id, cap=creator.max_in_flight)
        conversation, agent = await _lock_with_agent(session, conversation_id)
        if conversation is not None and creator.access is not None:
            conversation = await thread_row(
                session, conversation_id, creator.access, field="conversation_id"
            )
        if conversation is None:
            raise NotFoundError("conversation", conversation_id, field="conversation_id")
        agent = _agent_of(conversation, agent)
        prepared = prepare(conversation, agent)
        # What `send_notify` would send, then "new" (or, claimed, the thread's followers).
        channels, payloads = creation_notifies(
            notify,
            [*(notify.payloads if notify else ()), *(notify.if_busy if notify else ())],
            thread_id=conversation_id,
            claimed=claim is not None,
        )
        row = (
            await session.execute(
                _BEGIN_TURN,
                {
                    "message_id": message_id,
                    "conversation_id": conversation_id,
                    "content": content,
                    "assistant_id": agent.id,
                    "kwargs": dict(run_kwargs),
                    "metadata": dict(metadata),
                    "user_id": creator.user_id,
                    "auth": dict(creator.auth) if creator.auth is not None else None,
                    "claimed": claim is not None,
                    "owner": claim.owner if claim is not None else None,
                    "lease_s": float(claim.lease_s) if claim is not None else 0.0,
                    "channels": channels,
                    "payloads": payloads,
                },
            )
        ).one()
        if row.in_flight_run is not None:  # (raised in the transaction: nothing is written)
            raise ConflictError(
                f"conversation {conversation_id} is busy with run {row.in_flight_run}; "
                "send the next message when it has ended",
                field="conversation_id",
            )
        return prepared, run_from_row(row._mapping)


# A turn's transcript rows (tool rows, then the answer), written in the transaction that
# finishes its run, right after the finish (`FinishWrite`): only when that finish ended the
# run with this attempt (its new status), and never twice (the ids are chosen once, so a
# finish retried after a lost commit answer inserts nothing). `seq` (identity) follows the
# ORDER BY: the transcript's order.
_TRANSCRIPT = (
    "INSERT INTO messages (id, conversation_id, sender, content, metadata)"
    " SELECT u.id, %(conversation_id)s, u.sender, u.content, u.metadata"
    " FROM unnest(%(ids)s::uuid[], %(senders)s::text[], %(contents)s::text[],"
    " %(metadata)s::jsonb[]) WITH ORDINALITY AS u(id, sender, content, metadata, n)"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE id = %(run_id)s AND attempt = %(attempt)s"
    " AND status = %(status)s)"
    " ORDER BY u.n ON CONFLICT (id) DO NOTHING"
)


def transcript_write(
    token: RunToken,
    conversation_id: uuid.UUID,
    messages: Sequence[Mapping[str, Any]],
    *,
    status: str,
) -> tuple[list[uuid.UUID], FinishWrite | None]:
    """A turn's tool and agent messages (`sender`, `content`, `metadata`), in order, as a
    statement of the finish that ends the run `token` holds with `status`
    (`finish_run(also=...)`): the ids the rows get, and the statement (None: no rows)."""
    ids = [uuid.uuid4() for _ in messages]
    if not messages:
        return ids, None
    return ids, FinishWrite(
        _TRANSCRIPT,
        {
            "conversation_id": conversation_id,
            "ids": ids,
            "senders": [str(m["sender"]) for m in messages],
            "contents": [str(m["content"]) for m in messages],
            "metadata": [Jsonb(dict(m.get("metadata", {}))) for m in messages],
            "run_id": token.run_id,
            "attempt": token.attempt,
            "status": status,
        },
    )
