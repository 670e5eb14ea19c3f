"""Chat turns in SQL: the user's message and a pending run first, then what the run produced."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import bindparam, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from stores.checkpoints import LATEST_CHECKPOINT_SQL
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
    agent_from_json,
    creation_notifies,
    implicit_transaction,
    run_from_row,
)
from stores.sql.threads import thread_row


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
    graph_ids: Sequence[str],
    notify: Notify | None = None,
    creator: RunCreator = NOBODY,
    claim: InlineClaim | None = None,
    notify_thread: bool = True,
    read_latest: bool = False,
) -> tuple[Agent, Conversation, Run]:
    """Check the conversation, then write the user's message and a pending run of its agent.

    One transaction, the conversation row locked first (as every run writer does): 404 if it
    is unknown, 409 if its agent was deleted, its agent's graph is not among `graph_ids` (the
    graphs declared here) or a run (of /chat or of the Agent Server API) is already pending or
    running on it; nothing is written unless all pass. The conversation must satisfy
    `creator.access` (404 otherwise), and the creator's runs in flight must be under their cap
    (429). The commit sends `notify` ("new"): a run worker of any process claims the run like
    any other, and runs it as `creator`.

    With `claim` (a slot reserved in this process: `RunQueue.reserve`), the run is written
    already claimed by it (running, attempt 1, with its lease): hand it to `RunQueue.adopt`
    after the commit; no worker claims it. With `notify_thread` false, a run claimed here
    does not NOTIFY the thread's stream followers (see `creation_notifies`): the caller wakes
    its own, when no other process listens. Alone, a caller passes no `notify` either: the
    commit then sends no NOTIFY at all (a NOTIFYing commit takes PostgreSQL's one lock on
    the notification queue and holds it through its WAL flush: such commits of the whole
    database go one at a time).

    The common case (no conversation filter, every check passing) takes one round trip
    (`begin_turn_at_once`); when that writes nothing, the checks run one by one and say why.
    With `read_latest` (LangGraph's checkpoint tables exist) and `claim`, that round trip
    also reads the conversation's latest checkpoint (`latest_checkpoint_read`).

    Returns:
        The conversation's agent, the conversation and the run (the user's message has id
        `message_id`).
    """
    if creator.access is None:
        written = await begin_turn_at_once(
            db,
            conversation_id,
            message_id=message_id,
            content=content,
            run_kwargs=run_kwargs,
            metadata=metadata,
            graph_ids=graph_ids,
            notify=notify,
            creator=creator,
            claim=claim,
            notify_thread=notify_thread,
            read_latest=read_latest,
        )
        if written is not None:
            return written
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
        if agent.graph_id not in graph_ids:
            raise ConflictError(
                f"agent {agent.id} uses graph {agent.graph_id!r}, which is not declared; "
                f"declared graphs: {sorted(graph_ids)}",
                field="graph_id",
            )
        # What `send_notify` would send, then "new" (or, claimed, the thread's followers).
        channels, payloads = creation_notifies(
            notify,
            [*(notify.payloads if notify else ()), *(notify.if_busy if notify else ())],
            thread_id=conversation_id,
            claimed=claim is not None,
            notify_thread=notify_thread,
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
        return agent, conversation, run_from_row(row._mapping)


_LOCK_CONVERSATION = "SELECT id FROM conversations WHERE id = %(conversation_id)s FOR UPDATE"
_LOCK_CREATOR = "SELECT pg_advisory_xact_lock(hashtext('runs:' || %(user_id)s::text))"

# `_BEGIN_TURN`'s common case in one statement that also checks what `begin_turn` checks with
# reads of its own first: the conversation exists, has an agent whose graph is declared here
# (`graph_ids`) and no run in flight, and the creator (`user_id`, when `cap` > 0) has fewer than
# `cap` runs pending or running. Nothing is written unless all hold (`ok` has no row then).
_BEGIN_AT_ONCE = (
    "WITH c AS ("
    " SELECT id, user_id, agent_id, title, status FROM conversations"
    " WHERE id = %(conversation_id)s"
    "), a AS ("
    " SELECT agents.* FROM agents, c WHERE agents.id = c.agent_id"
    " AND agents.graph_id = ANY(%(graph_ids)s::text[])"
    "), ok AS ("
    " SELECT c.id AS conversation_id, a.id AS agent_id FROM c, a"
    " WHERE NOT EXISTS (SELECT 1 FROM runs o WHERE o.thread_id = %(conversation_id)s"
    " AND o.status IN ('pending', 'running'))"
    " AND (%(cap)s::int <= 0 OR (SELECT count(*) FROM runs u WHERE u.user_id = %(user_id)s::text"
    " AND u.status IN ('pending', 'running')) < %(cap)s::int)"
    "), message AS ("
    " INSERT INTO messages (id, conversation_id, sender, content, metadata)"
    " SELECT %(message_id)s, ok.conversation_id, 'user', %(content)s, '{}'::jsonb FROM ok"
    "), r AS ("
    " INSERT INTO runs (id, thread_id, assistant_id, status, multitask_strategy, kwargs,"
    " metadata, user_id, auth, lease_owner, lease_expires_at, attempt, stream_position)"
    " SELECT %(run_id)s, ok.conversation_id, ok.agent_id,"
    " CASE WHEN %(claimed)s THEN 'running' ELSE 'pending' END, 'reject', %(kwargs)s,"
    " %(metadata)s, %(user_id)s::text, %(auth)s, %(owner)s::text,"
    " CASE WHEN %(claimed)s THEN now() + make_interval(secs => %(lease_s)s) END,"
    " CASE WHEN %(claimed)s THEN 1 ELSE 0 END,"
    " CASE WHEN %(claimed)s THEN nextval('thread_stream_positions') END"
    " FROM ok RETURNING *"
    "), busy AS ("
    " UPDATE conversations SET status = 'busy', updated_at = now()"
    " WHERE id = %(conversation_id)s AND EXISTS (SELECT 1 FROM ok)"
    "), n AS ("
    " SELECT pg_notify(ch, p) FROM unnest(%(channels)s::text[], %(payloads)s::text[])"
    " AS u(ch, p) WHERE EXISTS (SELECT 1 FROM ok)"
    ") SELECT r.*, (SELECT count(*) FROM n) AS notified, (SELECT to_jsonb(a) FROM a) AS agent,"
    " (SELECT user_id FROM c) AS conversation_user_id,"
    " (SELECT title FROM c) AS conversation_title"
    " FROM r"
)


async def begin_turn_at_once(
    db: Database,
    conversation_id: uuid.UUID,
    *,
    message_id: uuid.UUID,
    content: str,
    run_kwargs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    graph_ids: Sequence[str],
    notify: Notify | None = None,
    creator: RunCreator = NOBODY,
    claim: InlineClaim | None = None,
    notify_thread: bool = True,
    read_latest: bool = False,
) -> tuple[Agent, Conversation, Run] | None:
    """`begin_turn`'s common case in one round trip (`begin_turn` tries it first): the
    conversation's agent, the conversation (a transient row with what a run's attempt reads of
    it) and the run; or None when nothing was written (`begin_turn` then says why).

    It writes what `begin_turn` writes, only when `begin_turn` would: the conversation exists,
    its agent exists with its graph among `graph_ids`, no run is pending or running on it
    (tested under the conversation row's lock), and the creator is under their cap of runs in
    flight (counted under the lock per identity `check_in_flight` takes, taken first as there).
    The locks and the
    statement go out together in psycopg's pipeline mode, as one implicit transaction (one
    Sync), as `create_run_at_once` sends its own.

    With `read_latest` and `claim` (the run starts in this process), the same round trip
    reads the conversation's latest checkpoint after the statement, as LangGraph's saver reads
    it (`LATEST_CHECKPOINT_SQL`, binary), for the run's first read (`latest_checkpoint_read`).
    Only when LangGraph's checkpoint tables exist (else the transaction fails).

    Only for a creator with no conversation filter (`creator.access`: `begin_turn`'s).
    """
    if creator.access is not None:
        raise ValueError("begin_turn_at_once takes no conversation filter; use begin_turn")
    claimed = claim is not None
    cap = creator.max_in_flight if creator.user_id is not None else 0
    channels, payloads = creation_notifies(
        notify,
        [*(notify.payloads if notify else ()), *(notify.if_busy if notify else ())],
        thread_id=conversation_id,
        claimed=claimed,
        notify_thread=notify_thread,
    )
    args = {
        "conversation_id": conversation_id,
        "graph_ids": list(graph_ids),
        "cap": cap,
        "message_id": message_id,
        "content": content,
        "run_id": uuid.uuid4(),
        "claimed": claimed,
        "kwargs": Jsonb(dict(run_kwargs)),
        "metadata": Jsonb(dict(metadata)),
        "user_id": creator.user_id,
        "auth": Jsonb(dict(creator.auth)) if creator.auth is not None else None,
        "owner": claim.owner if claim is not None else None,
        "lease_s": float(claim.lease_s) if claim is not None else 0.0,
        "channels": channels,
        "payloads": payloads,
    }
    statements: list[tuple[str, Mapping[str, Any]]] = []
    if cap > 0:  # first, as `begin_turn` takes them (the other order could deadlock)
        statements.append((_LOCK_CREATOR, {"user_id": creator.user_id}))
    statements.append((_LOCK_CONVERSATION, {"conversation_id": conversation_id}))
    statements.append((_BEGIN_AT_ONCE, args))
    # PostgreSQL refusing a value (e.g. a NUL in the message) wrote nothing either: the full
    # path answers as it would have.
    read = (LATEST_CHECKPOINT_SQL, (str(conversation_id), "")) if read_latest and claimed else None
    answered = await implicit_transaction(db, statements, read=read)
    values = None if answered is None else answered[0]
    if answered is None or values is None:
        return None
    run = run_from_row(values)
    if read is not None:
        sa_inspect(run).info[_LATEST_CHECKPOINT] = answered[1]
    agent = agent_from_json(values["agent"])
    conversation = Conversation(
        id=conversation_id,
        user_id=values["conversation_user_id"],
        agent_id=agent.id,
        title=values["conversation_title"],
        status="busy",
    )
    return agent, conversation, run


_LATEST_CHECKPOINT = "switchboard.latest_checkpoint"


def latest_checkpoint_read(run: Run) -> tuple[bool, dict[str, Any] | None]:
    """Whether `begin_turn(read_latest=True)` read the conversation's latest checkpoint with
    `run` (in the round trip that wrote it, under the conversation row's lock; `run` the object
    it returned), and that row (a row of `LATEST_CHECKPOINT_SQL`; None: it had no checkpoint).
    """
    info = sa_inspect(run).info
    if _LATEST_CHECKPOINT not in info:
        return False, None
    row = info[_LATEST_CHECKPOINT]
    return True, row if isinstance(row, dict) else None


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
