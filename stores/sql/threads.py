"""Threads on the conversations table: create, get, patch, delete, search, count, copy rows."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import ConflictError, NotFoundError
from stores.sql.assistants import system_assistant_id
from stores.sql.database import Database
from stores.sql.filters import Filter, filter_clause, visible_row
from stores.sql.models import Agent, Conversation

ThreadSort = Literal["thread_id", "status", "created_at", "updated_at"]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
TTLStrategy = Literal["delete", "keep_latest"]


@dataclass(frozen=True, slots=True)
class ThreadTTL:
    """A thread's time to live: `minutes` after its last update, `strategy` applies."""

    strategy: TTLStrategy
    minutes: float


def visible(access: Filter | None) -> Any:
    """The condition under which a thread satisfies an auth filter (on its metadata)."""
    return filter_clause(Conversation.metadata_, access)


async def thread_row(
    session: AsyncSession,
    thread_id: uuid.UUID,
    access: Filter | None = None,
    *,
    for_update: bool = False,
    field: str | None = None,
) -> Conversation:
    """The thread if it exists and satisfies `access` (in SQL); else `NotFoundError`: a thread
    that is not the caller's does not exist for them."""
    row = await visible_row(
        session, Conversation, thread_id, visible(access), for_update=for_update
    )
    if row is None:
        raise NotFoundError("thread", thread_id, field=field)
    return row


def _set_ttl(row: Conversation, ttl: ThreadTTL | None) -> None:
    if ttl is not None:
        row.ttl_minutes, row.ttl_strategy, row.ttl_swept_at = ttl.minutes, ttl.strategy, None


def _agent_candidates(metadata: Mapping[str, Any]) -> list[uuid.UUID]:
    """The assistants a thread may belong to, in order: its `assistant_id`, then the system
    assistant of its `graph_id` metadata."""
    candidates: list[uuid.UUID] = []
    assistant_id = metadata.get("assistant_id")
    if isinstance(assistant_id, str):
        try:
            candidates.append(uuid.UUID(assistant_id))
        except ValueError:
            candidates.append(system_assistant_id(assistant_id))
    graph_id = metadata.get("graph_id")
    if isinstance(graph_id, str) and graph_id:
        candidates.append(system_assistant_id(graph_id))
    return candidates


def _agent_for(metadata: Mapping[str, Any]) -> Any:
    """The assistant a thread belongs to (the first of its candidates that exists), as a SQL
    expression of the INSERT: no round trip of its own."""
    found = [
        select(Agent.id).where(Agent.id == key).scalar_subquery()
        for key in _agent_candidates(metadata)
    ]
    if not found:
        return None
    return found[0] if len(found) == 1 else func.coalesce(*found)


async def _existing_agent(session: AsyncSession, metadata: Mapping[str, Any]) -> uuid.UUID | None:
    """The assistant a thread belongs to, read in `session`."""
    for key in _agent_candidates(metadata):
        if await session.get(Agent, key) is not None:
            return key
    return None


_CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
_ATTRIBUTES = [(prop.key, prop.columns[0]) for prop in Conversation.__mapper__.column_attrs]


def _detached(row: Any) -> Conversation:
    """A thread from a row of all its columns (in `_ATTRIBUTES` order), in no session."""
    return Conversation(**{key: row[i] for i, (key, _) in enumerate(_ATTRIBUTES)})


async def create_thread(
    db: Database,
    *,
    thread_id: uuid.UUID | None,
    metadata: Mapping[str, Any],
    if_exists: Literal["raise", "do_nothing"],
    ttl: ThreadTTL | None = None,
    access: Filter | None = None,
) -> tuple[Conversation, bool]:
    """Create a thread (no user, `ttl` when given); returns it and whether it was created now.

    One statement (`INSERT … ON CONFLICT DO NOTHING RETURNING`, its assistant looked up inside
    it) in autocommit: no BEGIN/COMMIT round trips. The row comes back detached.

    With `if_exists="do_nothing"` an existing thread is returned only if it satisfies `access`
    (the caller's read filter): someone else's thread id is taken (409), never shown.

    Raises:
        ConflictError: `thread_id` exists and `if_exists="raise"` (field `thread_id`).
    """
    taken = f"thread {thread_id} already exists"
    values: dict[str, Any] = {"metadata": dict(metadata), "status": "idle"}
    agent = _agent_for(metadata)
    if agent is not None:
        values["agent_id"] = agent
    if thread_id is not None:
        values["id"] = thread_id
    if ttl is not None:
        values.update(ttl_minutes=ttl.minutes, ttl_strategy=ttl.strategy, ttl_swept_at=None)
    statement = (
        pg_insert(_CONVERSATIONS)
        .values(values)
        .on_conflict_do_nothing(index_elements=[_CONVERSATIONS.c.id])
        .returning(*(column for _, column in _ATTRIBUTES))
    )
    async with db.connection(autocommit=True) as conn:
        row = (await conn.execute(statement)).one_or_none()
    if row is not None:
        return _detached(row), True
    # The id is taken (only a given id can be).
    if if_exists == "do_nothing":
        try:
            return await get_thread(db, thread_id, access), False  # type: ignore[arg-type]
        except NotFoundError as error:  # it exists, but not for this caller
            raise ConflictError(taken, field="thread_id") from error
    raise ConflictError(taken, field="thread_id")


async def get_thread(
    db: Database, thread_id: uuid.UUID, access: Filter | None = None
) -> Conversation:
    """The thread with this id if it satisfies `access`, or `NotFoundError`: one SELECT in
    autocommit (no BEGIN/ROLLBACK round trips); the row comes back detached."""
    statement = select(*(column for _, column in _ATTRIBUTES)).where(
        _CONVERSATIONS.c.id == thread_id, visible(access)
    )
    async with db.connection(autocommit=True) as conn:
        row = (await conn.execute(statement)).one_or_none()
    if row is None:
        raise NotFoundError("thread", thread_id)
    return _detached(row)


async def graph_id_of(db: Database, thread: Conversation) -> str | None:
    """The graph whose checkpoints a thread holds: its assistant's, else `metadata.graph_id`."""
    if thread.agent_id is not None:
        async with db.sessions() as session:
            agent = await session.get(Agent, thread.agent_id)
        if agent is not None:
            return agent.graph_id
    graph_id = thread.metadata_.get("graph_id")
    return graph_id if isinstance(graph_id, str) and graph_id else None


async def update_thread(
    db: Database,
    thread_id: uuid.UUID,
    *,
    metadata: Mapping[str, Any],
    ttl: ThreadTTL | None = None,
    access: Filter | None = None,
) -> Conversation:
    """Merge `metadata` into the thread's metadata (and set its TTL when `ttl` is given)."""
    async with db.sessions.begin() as session:
        row = await thread_row(session, thread_id, access, for_update=True)
        row.metadata_ = {**row.metadata_, **metadata}
        _set_ttl(row, ttl)
        if row.agent_id is None:
            row.agent_id = await _existing_agent(session, row.metadata_)
        row.updated_at = func.now()
        await session.flush()
        await session.refresh(row)
        return row


async def set_thread_state_cache(
    db: Database,
    thread_id: uuid.UUID,
    *,
    values: Mapping[str, Any],
    interrupts: Mapping[str, Any],
    status: ThreadStatus | None = None,
) -> None:
    """Store the thread's latest values and interrupts (after a state update) and its status."""
    async with db.sessions.begin() as session:
        row = await session.get(Conversation, thread_id, with_for_update=True)
        if row is None:
            raise NotFoundError("thread", thread_id)
        row.values_ = dict(values)
        row.interrupts = dict(interrupts)
        if status is not None:
            row.status = status
        row.updated_at = func.now()


async def delete_threads(
    db: Database, thread_ids: Sequence[uuid.UUID], access: Filter | None = None
) -> list[uuid.UUID]:
    """Delete threads (with their messages and runs) that satisfy `access`; returns the ids
    that were deleted."""
    if not thread_ids:
        return []
    async with db.sessions.begin() as session:
        result = await session.execute(
            delete(Conversation)
            .where(Conversation.id.in_(list(thread_ids)), visible(access))
            .returning(Conversation.id)
        )
        return list(result.scalars().all())


async def threads_of_assistant(
    db: Database, assistant_id: uuid.UUID, access: Filter | None = None
) -> list[uuid.UUID]:
    """Ids of the threads an assistant owns (its `agent_id` or `metadata.assistant_id`) that
    satisfy `access`."""
    stmt = select(Conversation.id).where(
        (Conversation.agent_id == assistant_id)
        | (Conversation.metadata_["assistant_id"].astext == str(assistant_id)),
        visible(access),
    )
    async with db.sessions() as session:
        return list((await session.scalars(stmt)).all())


async def existing_thread_ids(
    db: Database, thread_ids: Sequence[uuid.UUID], access: Filter | None = None
) -> list[uuid.UUID]:
    """Which of `thread_ids` exist (and satisfy `access`)."""
    if not thread_ids:
        return []
    async with db.sessions() as session:
        rows = await session.scalars(
            select(Conversation.id).where(Conversation.id.in_(list(thread_ids)), visible(access))
        )
        return list(rows.all())


def _thread_filters(
    *,
    metadata: Mapping[str, Any] | None,
    values: Mapping[str, Any] | None,
    status: ThreadStatus | None,
    ids: Sequence[uuid.UUID] | None,
    access: Filter | None = None,
) -> list[Any]:
    clauses: list[Any] = [visible(access)]
    if metadata:
        clauses.append(Conversation.metadata_.contains(dict(metadata)))
    if values:
        clauses.append(Conversation.values_.contains(dict(values)))
    if status is not None:
        clauses.append(Conversation.status == status)
    if ids is not None:
        clauses.append(Conversation.id.in_(list(ids)))
    return clauses


async def search_threads(
    db: Database,
    *,
    metadata: Mapping[str, Any] | None,
    values: Mapping[str, Any] | None,
    status: ThreadStatus | None,
    ids: Sequence[uuid.UUID] | None,
    limit: int,
    offset: int,
    sort_by: ThreadSort | None,
    sort_order: Literal["asc", "desc"] | None,
    access: Filter | None = None,
) -> tuple[Sequence[Conversation], bool]:
    """A page of threads matching the filters (newest first by default) and whether more follow."""
    column = {
        "thread_id": Conversation.id,
        "status": Conversation.status,
        "created_at": Conversation.created_at,
        "updated_at": Conversation.updated_at,
    }[sort_by or "created_at"]
    descending = sort_order != "asc"
    stmt = (
        select(Conversation)
        .where(
            *_thread_filters(
                metadata=metadata, values=values, status=status, ids=ids, access=access
            )
        )
        .order_by(
            column.desc() if descending else column.asc(),
            Conversation.id.desc() if descending else Conversation.id.asc(),
        )
        .limit(limit + 1)
        .offset(offset)
    )
    async with db.sessions() as session:
        rows = (await session.scalars(stmt)).all()
    return rows[:limit], len(rows) > limit


async def count_threads(
    db: Database,
    *,
    metadata: Mapping[str, Any] | None,
    values: Mapping[str, Any] | None,
    status: ThreadStatus | None,
    access: Filter | None = None,
) -> int:
    """How many threads match the filters."""
    stmt = select(func.count()).select_from(Conversation)
    stmt = stmt.where(
        *_thread_filters(metadata=metadata, values=values, status=status, ids=None, access=access)
    )
    async with db.sessions() as session:
        return int(await session.scalar(stmt) or 0)


async def copy_thread_row(
    db: Database,
    thread_id: uuid.UUID,
    *,
    access: Filter | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Conversation:
    """A new thread with the source thread's user, assistant, metadata (or `metadata`, as the
    copy's creator stamped it) and cached state; the source must satisfy `access`."""
    async with db.sessions.begin() as session:
        source = await thread_row(session, thread_id, access)
        row = Conversation(
            user_id=source.user_id,
            agent_id=source.agent_id,
            title=source.title,
            status="interrupted" if source.status == "interrupted" else "idle",
            metadata_=dict(source.metadata_ if metadata is None else metadata),
            values_=dict(source.values_),
            interrupts=dict(source.interrupts),
        )
        session.add(row)
        await session.flush()
        return row


async def expired_threads(db: Database, *, limit: int) -> list[tuple[uuid.UUID, TTLStrategy]]:
    """Threads past their TTL (oldest first, at most `limit`) that are not running, with the
    strategy each asks for; a `keep_latest` thread counts once per idle period."""
    stmt = (
        select(Conversation.id, Conversation.ttl_strategy)
        .where(
            Conversation.ttl_minutes.is_not(None),
            Conversation.status != "busy",
            Conversation.updated_at + Conversation.ttl_minutes * text("interval '1 minute'")
            <= func.now(),
            (Conversation.ttl_swept_at.is_(None))
            | (Conversation.ttl_swept_at < Conversation.updated_at),
        )
        .order_by(Conversation.updated_at)
        .limit(limit)
    )
    async with db.sessions() as session:
        rows = (await session.execute(stmt)).all()
    return [
        (row.id, "keep_latest" if row.ttl_strategy == "keep_latest" else "delete") for row in rows
    ]


async def mark_swept(db: Database, thread_ids: Sequence[uuid.UUID]) -> None:
    """Note that `keep_latest` threads were pruned (their `updated_at` stays as it was)."""
    if not thread_ids:
        return
    async with db.sessions.begin() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id.in_(list(thread_ids)))
            .values(ttl_swept_at=func.now(), updated_at=Conversation.updated_at)
        )
