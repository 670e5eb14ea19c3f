"""Assistants on the agents table: system assistants, resolution by id or graph id, versions."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import String, cast, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import ConflictError, NotFoundError
from stores.sql.database import Database
from stores.sql.filters import Filter, filter_clause, visible_row
from stores.sql.models import Agent, AgentVersion, Conversation

# The namespace langgraph-api derives system assistant ids from, so ids match across servers.
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")

ASSISTANT_SORT_COLUMNS = ("assistant_id", "graph_id", "name", "created_at", "updated_at")
AssistantSort = Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"]

# Fields an assistant version snapshots (and that `set_latest` restores).
_VERSIONED = ("graph_id", "name", "description", "config", "context", "metadata_")


@dataclass(frozen=True, slots=True)
class SystemAssistant:
    """The assistant the server keeps for a graph: its id derives from the graph id."""

    graph_id: str
    name: str
    description: str | None = None


def system_assistant_id(graph_id: str) -> uuid.UUID:
    """The deterministic id of the system assistant of `graph_id` (as langgraph-api derives it)."""
    return uuid.uuid5(NAMESPACE_GRAPH, graph_id)


def _parse_id(value: str | uuid.UUID) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _snapshot(agent: Agent) -> AgentVersion:
    return AgentVersion(
        agent_id=agent.id,
        version=agent.version,
        **{name: getattr(agent, name) for name in _VERSIONED},
    )


async def record_version(session: AsyncSession, agent: Agent) -> None:
    """Write the version row of `agent` at its current `version` (after a create or update)."""
    await session.flush()
    await session.merge(_snapshot(agent))


def visible(access: Filter | None) -> Any:
    """The condition under which an assistant (agent) satisfies an auth filter."""
    return filter_clause(Agent.metadata_, access)


SYSTEM: Filter = {"created_by": "system"}
"""The metadata of system assistants (one per graph, made at startup)."""


def or_system(access: Filter | None) -> Filter | None:
    """`access`, or a system assistant: what a run may use (as LangGraph, which never asks the
    read handler about system assistants)."""
    return None if access is None else {"$or": [dict(access), SYSTEM]}


async def _agent_row(
    session: AsyncSession,
    key: uuid.UUID,
    access: Filter | None,
    *,
    shown: object,
    for_update: bool = False,
    field: str | None = "assistant_id",
) -> Agent:
    agent = await visible_row(session, Agent, key, visible(access), for_update=for_update)
    if agent is None:
        raise NotFoundError("assistant", shown, field=field)
    return agent


def assistant_key(assistant_id_or_graph_id: str | uuid.UUID) -> uuid.UUID:
    """The id of an assistant named by its id, or by the graph id of its system assistant."""
    if isinstance(assistant_id_or_graph_id, uuid.UUID):
        return assistant_id_or_graph_id
    return _key_of(str(assistant_id_or_graph_id))


@functools.lru_cache(maxsize=1024)
def _key_of(assistant_id_or_graph_id: str) -> uuid.UUID:
    # Every run's creation asks (a graph id costs a failed parse and a SHA-1): remembered for
    # the few names clients use, bounded for the others.
    key = _parse_id(assistant_id_or_graph_id)
    return key if key is not None else system_assistant_id(assistant_id_or_graph_id)


async def resolve_assistant(
    db: Database, assistant_id_or_graph_id: str | uuid.UUID, access: Filter | None = None
) -> Agent:
    """The assistant with this id, or the system assistant of the graph with this id, if it
    satisfies `access` (in SQL).

    Raises:
        NotFoundError: neither an assistant id nor a graph with a system assistant, or not
            the caller's (field `assistant_id`).
    """
    # One SELECT in autocommit (no BEGIN/ROLLBACK round trips): every run's creation reads it.
    async with db.reading() as session:
        return await _agent_row(
            session,
            assistant_key(assistant_id_or_graph_id),
            access,
            shown=assistant_id_or_graph_id,
        )


async def assistants_with_id_prefix(
    db: Database, prefix: str, *, limit: int = 10, access: Filter | None = None
) -> list[Agent]:
    """Assistants whose id (as 32 hex digits) starts with `prefix` (hex digits only) and that
    satisfy `access`."""
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise ValueError(f"an id prefix is lower-case hex digits, got {prefix!r}")
    stmt = (
        select(Agent)
        .where(func.replace(cast(Agent.id, String), "-", "").like(f"{prefix}%"), visible(access))
        .order_by(Agent.created_at, Agent.id)
        .limit(limit)
    )
    async with db.sessions() as session:
        return list((await session.scalars(stmt)).all())


async def backfill_versions(db: Database) -> int:
    """Write the missing version row of each agent's current version (agents made before
    version rows were kept); returns how many were written."""
    current = select(
        Agent.id,
        Agent.version,
        Agent.graph_id,
        Agent.name,
        Agent.description,
        Agent.config,
        Agent.context,
        Agent.metadata_,
    ).where(
        ~select(AgentVersion.agent_id)
        .where(AgentVersion.agent_id == Agent.id, AgentVersion.version == Agent.version)
        .exists()
    )
    columns = ["agent_id", "version", "graph_id", "name", "description", "config", "context"]
    stmt = (
        insert(AgentVersion)
        .from_select([*columns, "metadata"], current)
        .on_conflict_do_nothing()
        .returning(AgentVersion.agent_id)
    )
    async with db.sessions.begin() as session:
        return len((await session.execute(stmt)).all())


async def ensure_system_assistants(
    db: Database,
    assistants: Iterable[SystemAssistant | str],
    *,
    tools: Mapping[str, Sequence[str]] | None = None,
) -> list[Agent]:
    """Create the system assistant of every graph that lacks one (idempotent, race-safe), keep
    the name and description of existing ones in step with the project (as langgraph-api does),
    and write the version rows that agents made before versions were kept lack.

    Args:
        db: The database.
        assistants: The declared graphs' system assistants (a bare graph id: named after it).
        tools: The tools each graph's system assistant starts with (none when absent). A system
            assistant nobody has changed yet (version 1, no tools) gets them too, so a database
            made before the defaults existed catches up.
    """
    await backfill_versions(db)
    created: list[Agent] = []
    for wanted in assistants:
        if isinstance(wanted, str):
            wanted = SystemAssistant(graph_id=wanted, name=wanted)
        graph_id = wanted.graph_id
        key = system_assistant_id(graph_id)
        default_tools = list((tools or {}).get(graph_id, ()))
        description = wanted.description or ""
        async with db.sessions.begin() as session:
            # A transaction-scoped advisory lock makes concurrent server starts insert once.
            await session.execute(select(func.pg_advisory_xact_lock(key.int & 0x7FFFFFFFFFFFFFFF)))
            agent = await session.get(Agent, key)
            if agent is not None and (agent.name, agent.description) != (
                wanted.name,
                description,
            ):
                agent.name, agent.description = wanted.name, description
                version = await session.get(AgentVersion, (agent.id, agent.version))
                if version is not None:
                    version.name, version.description = wanted.name, description
            if agent is None:
                agent = Agent(
                    id=key,
                    graph_id=graph_id,
                    name=wanted.name,
                    description=description,
                    tools=default_tools,
                    config={},
                    context={},
                    metadata_={"created_by": "system"},
                    version=1,
                )
                session.add(agent)
                await record_version(session, agent)
            elif default_tools and agent.version == 1 and not agent.tools:
                agent.tools = default_tools
            created.append(agent)
    return created


async def create_assistant(
    db: Database,
    *,
    graph_id: str,
    assistant_id: uuid.UUID | None,
    if_exists: Literal["raise", "do_nothing"],
    name: str,
    description: str,
    config: Mapping[str, Any],
    context: Mapping[str, Any],
    metadata: Mapping[str, Any],
    access: Filter | None = None,
) -> Agent:
    """Create an assistant at version 1 (and its version row).

    With `if_exists="do_nothing"` an existing assistant is returned only if it satisfies
    `access` (the caller's read filter); someone else's id is taken (409), never shown.

    Raises:
        ConflictError: `assistant_id` exists and `if_exists="raise"` (field `assistant_id`).
    """
    conflict = f"assistant {assistant_id} already exists"
    try:
        async with db.sessions.begin() as session:
            if assistant_id is not None:
                existing = await session.get(Agent, assistant_id, with_for_update=True)
                if existing is not None:
                    if if_exists == "do_nothing":
                        return await _agent_row(session, assistant_id, access, shown=assistant_id)
                    raise ConflictError(conflict, field="assistant_id")
            agent = Agent(
                graph_id=graph_id,
                name=name,
                description=description,
                config=dict(config),
                context=dict(context),
                metadata_=dict(metadata),
                version=1,
            )
            if assistant_id is not None:
                agent.id = assistant_id
            session.add(agent)
            await record_version(session, agent)
            return agent
    except IntegrityError as error:  # a concurrent create of the same id won the race
        if assistant_id is None:
            raise
        if if_exists == "do_nothing":
            return await resolve_assistant(db, assistant_id, access)
        raise ConflictError(conflict, field="assistant_id") from error
    except NotFoundError as error:  # it exists, but not for this caller
        raise ConflictError(conflict, field="assistant_id") from error


async def _locked(
    session: AsyncSession, assistant_id: uuid.UUID, access: Filter | None = None
) -> Agent:
    return await _agent_row(
        session, assistant_id, access, shown=assistant_id, for_update=True, field=None
    )


async def next_version(session: AsyncSession, assistant_id: uuid.UUID) -> int:
    """The version after the highest one kept (not current + 1: `set_latest` may go back)."""
    latest = await session.scalar(
        select(func.max(AgentVersion.version)).where(AgentVersion.agent_id == assistant_id)
    )
    return (latest or 0) + 1


async def update_assistant(
    db: Database,
    assistant_id: uuid.UUID,
    *,
    graph_id: str | None,
    name: str | None,
    description: str | None,
    config: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    access: Filter | None = None,
) -> Agent:
    """Write a new version of an assistant (metadata is merged) and make it the latest."""
    async with db.sessions.begin() as session:
        agent = await _locked(session, assistant_id, access)
        if graph_id is not None:
            agent.graph_id = graph_id
        if name is not None:
            agent.name = name
        if description is not None:
            agent.description = description
        if config is not None:
            agent.config = dict(config)
        if context is not None:
            agent.context = dict(context)
        if metadata is not None:
            agent.metadata_ = {**agent.metadata_, **metadata}
        agent.version = await next_version(session, assistant_id)
        agent.updated_at = func.now()
        await record_version(session, agent)
        await session.refresh(agent)
        return agent


async def delete_assistant(
    db: Database,
    assistant_id: uuid.UUID,
    *,
    thread_ids: Sequence[uuid.UUID] = (),
    access: Filter | None = None,
) -> None:
    """Delete an assistant (its versions by cascade) and, in the same transaction, `thread_ids`."""
    async with db.sessions.begin() as session:
        agent = await _locked(session, assistant_id, access)
        if thread_ids:
            await session.execute(delete(Conversation).where(Conversation.id.in_(thread_ids)))
        await session.delete(agent)


def _assistant_filters(
    *,
    graph_id: str | None,
    name: str | None,
    metadata: Mapping[str, Any] | None,
    access: Filter | None = None,
) -> list[Any]:
    clauses: list[Any] = [visible(access)]
    if graph_id is not None:
        clauses.append(Agent.graph_id == graph_id)
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(Agent.name.ilike(f"%{escaped}%", escape="\\"))
    if metadata:
        clauses.append(Agent.metadata_.contains(dict(metadata)))
    return clauses


async def search_assistants(
    db: Database,
    *,
    graph_id: str | None,
    name: str | None,
    metadata: Mapping[str, Any] | None,
    limit: int,
    offset: int,
    sort_by: AssistantSort | None,
    sort_order: Literal["asc", "desc"] | None,
    access: Filter | None = None,
) -> tuple[Sequence[Agent], bool]:
    """A page of assistants matching the filters, and whether more follow."""
    column = {
        "assistant_id": Agent.id,
        "graph_id": func.lower(Agent.graph_id),
        "name": func.lower(Agent.name),
        "created_at": Agent.created_at,
        "updated_at": Agent.updated_at,
    }[sort_by or "created_at"]
    descending = sort_order != "asc" if sort_by else True
    order = column.desc() if descending else column.asc()
    stmt = (
        select(Agent)
        .where(*_assistant_filters(graph_id=graph_id, name=name, metadata=metadata, access=access))
        .order_by(order, Agent.id.desc() if descending else Agent.id.asc())
        .limit(limit + 1)
        .offset(offset)
    )
    async with db.sessions() as session:
        rows = (await session.scalars(stmt)).all()
    return rows[:limit], len(rows) > limit


async def count_assistants(
    db: Database,
    *,
    graph_id: str | None,
    name: str | None,
    metadata: Mapping[str, Any] | None,
    access: Filter | None = None,
) -> int:
    """How many assistants match the filters."""
    stmt = select(func.count()).select_from(Agent)
    stmt = stmt.where(
        *_assistant_filters(graph_id=graph_id, name=name, metadata=metadata, access=access)
    )
    async with db.sessions() as session:
        return int(await session.scalar(stmt) or 0)


async def list_versions(
    db: Database,
    assistant_id: uuid.UUID,
    *,
    metadata: Mapping[str, Any] | None,
    limit: int,
    offset: int,
    access: Filter | None = None,
) -> Sequence[AgentVersion]:
    """An assistant's versions, newest first (`NotFoundError` if the assistant is unknown, or
    does not satisfy `access`)."""
    stmt = select(AgentVersion).where(AgentVersion.agent_id == assistant_id)
    if metadata:
        stmt = stmt.where(AgentVersion.metadata_.contains(dict(metadata)))
    stmt = stmt.order_by(AgentVersion.version.desc()).limit(limit).offset(offset)
    async with db.sessions() as session:
        await _agent_row(session, assistant_id, access, shown=assistant_id, field=None)
        return (await session.scalars(stmt)).all()


async def set_latest_version(
    db: Database, assistant_id: uuid.UUID, *, version: int, access: Filter | None = None
) -> Agent:
    """Make an existing version the assistant's current one.

    Raises:
        NotFoundError: unknown assistant (or not the caller's), or no such version (field
            `version`).
    """
    async with db.sessions.begin() as session:
        agent = await _locked(session, assistant_id, access)
        row = await session.get(AgentVersion, (assistant_id, version))
        if row is None:
            raise NotFoundError(f"version of assistant {assistant_id}", version, field="version")
        for name in _VERSIONED:
            setattr(agent, name, getattr(row, name))
        agent.version = version
        agent.updated_at = func.now()
        await session.flush()
        await session.refresh(agent)
        return agent
