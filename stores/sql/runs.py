"""Durable runs in SQL: a row before work, claims with a lease, multitask rules, thread status."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import and_, bindparam, delete, func, or_, select, text, true, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from stores.errors import ConflictError, NotFoundError
from stores.sql.database import Database
from stores.sql.filters import Filter
from stores.sql.models import Agent, Conversation, Run
from stores.sql.quotas import check_in_flight
from stores.sql.thread_events import CHANNEL as THREAD_CHANNEL
from stores.sql.threads import ThreadTTL, thread_row, visible

CancelAction = Literal["interrupt", "rollback"]
IN_FLIGHT = ("pending", "running")
DONE = ("success", "error", "timeout", "interrupted")


@dataclass(frozen=True, slots=True)
class RunCreator:
    """Who creates a run, which then executes as them: their identity, what the run keeps of
    them (`runs.auth`), the filter the run's thread must satisfy (their `create_run` filter)
    and how many runs they may have in flight (0: no cap)."""

    user_id: str | None = None
    auth: Mapping[str, Any] | None = None
    access: Filter | None = None
    max_in_flight: int = 0


NOBODY = RunCreator()
"""The creator of runs on an open server: no identity, no filter, no cap."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A running run another process (or this one) must stop: its id, owner and action."""

    run_id: uuid.UUID
    thread_id: uuid.UUID | None
    owner: str | None
    action: CancelAction


@dataclass(frozen=True, slots=True)
class RunToken:
    """A claim of a run: its id and the attempt that holds it (the fencing token).

    Every write of an attempt (renewing its lease, storing its events, finishing it) goes
    through only while the run's `attempt` is still this one: once another worker has
    reclaimed the run, the stale attempt's writes change nothing.
    """

    run_id: uuid.UUID
    attempt: int


@dataclass(frozen=True, slots=True)
class Renewal:
    """What renewing a lease found: whether the claim still holds, any cancel request, and
    the run as the renewal saw it: its status (None: no such run any more) and the attempt
    holding it (another one: taken over)."""

    held: bool
    cancel_reason: str | None = None
    status: str | None = None
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """NOTIFYs to send with a transaction's commit: `payload|sender` on `channel`."""

    channel: str
    sender: str
    payloads: tuple[str, ...] = ()
    if_busy: tuple[str, ...] = ()  # finish_run: only when other runs of the thread wait
    # finish_run: called after its commit when other runs of the thread wait (this process's
    # own action on them, sent or not), or when a retry finds the run already ended by it.
    on_busy: Callable[[], None] | None = None


def creation_notifies(
    notify: Notify | None,
    payloads: Sequence[str],
    *,
    thread_id: uuid.UUID,
    claimed: bool,
    notify_thread: bool = True,
) -> tuple[list[str], list[str]]:
    """The `(channels, payloads)` a statement creating a run sends at commit: `payloads` on
    `notify`'s channel, then "new" for a run left pending, or, for one claimed at creation, the
    thread's id on the thread-stream channel (its followers: the run has its place), unless
    `notify_thread` is false (no other process listens: the caller wakes its own)."""
    payloads = [*payloads] if claimed else [*payloads, "new"]
    channels = [notify.channel] * len(payloads) if notify else []
    payloads = [f"{p}|{notify.sender}" for p in payloads] if notify else []
    if claimed and notify_thread:
        channels.append(THREAD_CHANNEL)
        payloads.append(str(thread_id))
    return channels, payloads


async def send_notify(
    session: AsyncSession,
    notify: Notify | None,
    *extra: str,
    raw: Sequence[tuple[str, str]] = (),
) -> None:
    """Have the transaction of `session` send `notify`'s payloads (and `extra`) at commit, and
    the `(channel, payload)` pairs of `raw` as they are, all in one statement."""
    payloads = (*(notify.payloads if notify else ()), *(notify.if_busy if notify else ()), *extra)
    if notify is None:
        payloads = ()
    params: dict[str, Any] = {}
    calls: list[str] = []
    for n, payload in enumerate(payloads):
        assert notify is not None
        params[f"c{n}"], params[f"p{n}"] = notify.channel, f"{payload}|{notify.sender}"
        calls.append(f"pg_notify(:c{n}, :p{n})")
    for n, (channel, payload) in enumerate(raw):
        params[f"rc{n}"], params[f"rp{n}"] = channel, payload
        calls.append(f"pg_notify(:rc{n}, :rp{n})")
    if calls:
        await session.execute(text(f"SELECT {', '.join(calls)}"), params)


async def lock_thread(session: AsyncSession, thread_id: uuid.UUID) -> Conversation | None:
    """The thread row, locked for the transaction (None if unknown)."""
    # Every writer locks the thread row before its runs, so lock order never inverts.
    return await session.get(Conversation, thread_id, with_for_update=True, populate_existing=True)


async def in_flight(
    session: AsyncSession, thread_id: uuid.UUID, *, exclude: uuid.UUID | None = None
) -> list[Run]:
    """The thread's pending and running runs, oldest first."""
    stmt = select(Run).where(Run.thread_id == thread_id, Run.status.in_(IN_FLIGHT))
    if exclude is not None:
        stmt = stmt.where(Run.id != exclude)
    return list((await session.scalars(stmt.order_by(Run.created_at))).all())


async def _cancel_in_session(
    session: AsyncSession, runs: Sequence[Run], *, action: CancelAction, reason: str
) -> list[CancelRequest]:
    """Pending runs stop here; running ones are marked and returned for their owner to stop."""
    requests: list[CancelRequest] = []
    for run in runs:
        if run.status == "pending":
            if action == "rollback":
                await session.delete(run)
            else:
                run.status, run.cancel_reason = "interrupted", reason
                run.lease_owner, run.lease_expires_at = None, None
        elif run.status == "running":
            run.cancel_reason = f"{action}: {reason}"
            requests.append(CancelRequest(run.id, run.thread_id, run.lease_owner, action))
    await session.flush()
    return requests


# Creating a run, under the thread row's lock, in one statement: insert it (pending, or claimed
# as `_CLAIM_TAKE` claims: running, this process's lease, attempt 1, its place in the thread's
# stream), mark its thread busy (its agent, and its metadata when given), and NOTIFY at commit.
# A run claimed here also gets its first event, the attempt's `metadata`, stored at seq 1 (the
# event its executor would append first): a stream of the new run can send it as soon as the
# commit returns, and a replay from the table shows the same. With `if_idle`, nothing is written
# (no row returned) when a run of the thread is pending or running: the statement runs under the
# thread row's lock with a snapshot taken after it, so it reads the runs in flight as a separate
# read would, and a thread with none (the usual case) costs no such read.
# The CTEs that end both creating statements (after `r`, the run written, and `t`, its
# thread): the NOTIFYs when a run was written, and a claimed run's first event (`metadata`).
_NOTIFY_AND_FIRST_EVENT = (
    "), n AS ("
    " SELECT pg_notify(ch, p) FROM unnest(CAST(:channels AS text[]), CAST(:payloads AS text[]))"
    " AS u(ch, p) WHERE EXISTS (SELECT 1 FROM r)"
    "), e AS ("
    " INSERT INTO run_events (run_id, seq, event, data)"
    " SELECT r.id, 1, 'metadata', jsonb_build_object('run_id', r.id::text, 'attempt', 1)"
    " FROM r WHERE r.status = 'running' RETURNING seq"
)


_CREATE = text(
    "WITH r AS ("
    " INSERT INTO runs (thread_id, assistant_id, status, multitask_strategy, kwargs, metadata,"
    " user_id, auth, lease_owner, lease_expires_at, attempt, stream_position)"
    " SELECT CAST(:thread_id AS uuid), CAST(:assistant_id AS uuid), CAST(:status AS text),"
    " CAST(:multitask_strategy AS text), :kwargs, :metadata, CAST(:user_id AS text), :auth,"
    " CAST(:owner AS text),"
    " CASE WHEN :claimed THEN now() + make_interval(secs => :lease_s) END,"
    " CASE WHEN :claimed THEN 1 ELSE 0 END,"
    " CASE WHEN :claimed THEN nextval('thread_stream_positions') END"
    " WHERE NOT (CAST(:if_idle AS boolean) AND EXISTS (SELECT 1 FROM runs o"
    " WHERE o.thread_id = :thread_id AND o.status IN ('pending', 'running')))"
    " RETURNING *"
    "), t AS ("
    " UPDATE conversations c SET status = 'busy',"
    " agent_id = COALESCE(c.agent_id, :assistant_id),"
    " metadata = CASE WHEN :set_meta THEN :thread_meta ELSE c.metadata END,"
    " updated_at = now() WHERE c.id = :thread_id AND EXISTS (SELECT 1 FROM r) RETURNING c.id"
    + _NOTIFY_AND_FIRST_EVENT
    + ") SELECT r.*, (SELECT count(*) FROM t) AS threads, (SELECT count(*) FROM n) AS notified,"
    " (SELECT count(*) FROM e) AS first_events"
    " FROM r"
).bindparams(
    bindparam("kwargs", type_=JSONB),
    bindparam("metadata", type_=JSONB),
    bindparam("auth", type_=JSONB),
    bindparam("thread_meta", type_=JSONB),
)


@dataclass(frozen=True, slots=True)
class InlineClaim:
    """Claim the run as it is created, for the process `owner` (a lease of `lease_s`), when it
    can start at once: no other run of its thread is pending or running (once the multitask
    strategy is applied) and it has no `after_seconds`."""

    owner: str
    lease_s: float


async def create_run(
    db: Database,
    *,
    thread_id: uuid.UUID,
    assistant_id: uuid.UUID,
    graph_id: str,
    kwargs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    multitask_strategy: str,
    if_not_exists: Literal["create", "reject"] = "reject",
    temporary: bool = False,
    thread_ttl: ThreadTTL | None = None,
    notify: Notify | None = None,
    creator: RunCreator = NOBODY,
    claim: InlineClaim | None = None,
    notify_thread: bool = True,
) -> tuple[Run, list[CancelRequest]]:
    """Write a pending run on `thread_id`, applying the multitask strategy to runs in flight.

    With `claim`, a run that can start at once is written already claimed, in the same
    transaction: exactly the row `claim_run` would make of it (`running`, the lease, attempt 1,
    its place in the thread's stream, the thread's stream followers woken at commit), and no
    "new" NOTIFY (there is nothing for another worker to take), with its attempt's first event
    (`metadata`, seq 1) stored in the same statement (`stored_first_event` of the returned run
    gives it). Otherwise it is `pending`. With `notify_thread` false, a run claimed here does
    not NOTIFY the thread's stream followers (`creation_notifies`; with no `notify` either, the
    commit sends no NOTIFY at all: for a process alone on its database, which wakes its own).

    A thread the run creates (`if_not_exists="create"`) gets `thread_ttl`, and the run's
    metadata (as LangGraph's server does: an auth handler's owner stamp lands on it).

    The thread row is locked first, so two creations on one thread (e.g. two resumes of the
    same interrupt) are serialised: the second sees the first and is rejected or queued.
    An existing thread must satisfy `creator.access` (in SQL): someone else's thread is not
    found, and never created over. Raises `NotFoundError` (unknown thread and
    `if_not_exists="reject"`), `ConflictError` (`reject` while a run is pending or running) and
    `LimitError` (the creator's runs in flight are at their cap).
    """
    async with db.sessions.begin() as session:
        if creator.user_id is not None:
            await check_in_flight(session, creator.user_id, cap=creator.max_in_flight)
        thread = await lock_thread(session, thread_id)
        if thread is not None and creator.access is not None:
            thread = await thread_row(session, thread_id, creator.access, field="thread_id")
        thread_meta: dict[str, Any] | None = None
        if thread is None:
            if if_not_exists != "create":
                raise NotFoundError("thread", thread_id, field="thread_id")
            thread_meta = {
                "graph_id": graph_id,
                "assistant_id": str(assistant_id),
                **metadata,
            }
            if temporary:
                thread_meta["temporary"] = True
            thread = Conversation(
                id=thread_id, agent_id=assistant_id, status="busy", metadata_=thread_meta
            )
            if thread_ttl is not None:
                thread.ttl_minutes, thread.ttl_strategy = thread_ttl.minutes, thread_ttl.strategy
            session.add(thread)
            await session.flush()
        created = thread_meta is not None
        # As langgraph-api does: the thread names the graph and assistant that last ran on it,
        # so `threads.search(metadata={"graph_id": ...})` lists it (Agent Chat UI).
        thread_meta_update = None
        if not created and thread.status != "busy":
            thread_meta_update = {
                **(thread.metadata_ or {}),
                "graph_id": graph_id,
                "assistant_id": str(assistant_id),
            }

        async def write(active: Sequence[Run], cancels: list[CancelRequest], if_idle: bool) -> Any:
            # Runs that still hold the thread: every one under `enqueue`; under
            # interrupt/rollback the running ones (their owner stops them), not the pending
            # ones (stopped before).
            blocked = any(r.status == "running" for r in active) or (
                bool(active) and multitask_strategy not in ("interrupt", "rollback")
            )
            claimed = claim is not None and not blocked and not kwargs.get("after_seconds")
            # Delivered at commit: "cancel <run> <action>" for each run to stop, then "new" (or,
            # claimed here, the thread's stream followers: the run has its place).
            channels, payloads = creation_notifies(
                notify,
                [f"cancel {c.run_id} {c.action}" for c in cancels],
                thread_id=thread_id,
                claimed=claimed,
                notify_thread=notify_thread,
            )
            # One statement: the run (claimed or pending), the thread (busy, its agent, its
            # metadata) and the NOTIFYs.
            return (
                await session.execute(
                    _CREATE,
                    {
                        "thread_id": thread_id,
                        "assistant_id": assistant_id,
                        "status": "running" if claimed else "pending",
                        "multitask_strategy": multitask_strategy,
                        "kwargs": dict(kwargs),
                        "metadata": dict(metadata),
                        "user_id": creator.user_id,
                        "auth": dict(creator.auth) if creator.auth is not None else None,
                        "claimed": claimed,
                        "owner": claim.owner if claim is not None and claimed else None,
                        "lease_s": float(claim.lease_s) if claim is not None else 0.0,
                        "set_meta": thread_meta_update is not None,
                        "thread_meta": thread_meta_update,
                        "channels": channels,
                        "payloads": payloads,
                        "if_idle": if_idle,
                    },
                )
            ).one_or_none()

        cancels: list[CancelRequest] = []
        # A thread with no run in flight (read under its row's lock, in the statement itself)
        # gets its run at once; a new thread has none.
        row = await write([], cancels, if_idle=not created)
        if row is None:
            # The runs in flight, read under the thread row's lock.
            active = await in_flight(session, thread_id)
            if active:
                if multitask_strategy == "reject":
                    raise ConflictError(
                        f"thread {thread_id} is busy with run {active[0].id}; "
                        "multitask_strategy 'reject' refuses a second run",
                        field="multitask_strategy",
                    )
                if multitask_strategy in ("interrupt", "rollback"):
                    action: CancelAction = (
                        "rollback" if multitask_strategy == "rollback" else "interrupt"
                    )
                    cancels = await _cancel_in_session(
                        session, active, action=action, reason="a new run replaced it"
                    )
            row = await write(active, cancels, if_idle=False)
        assert row is not None
        run = run_from_row(row._mapping)
        if row.first_events:
            sa_inspect(run).info[_FIRST_EVENT] = (1, "metadata", first_metadata(run.id))
        return run, cancels


# The common case of creating a run, with everything it reads in the same statement: an existing
# thread with no run in flight, and an assistant of a declared graph (read here rather than in
# a round trip of its own before). Sent after the thread row's lock (`_LOCK_THREAD`), with
# BEGIN and COMMIT, in one pipelined round trip (`create_run_at_once`). It writes what `_CREATE`
# writes for an idle thread, and nothing (no row) when any of that does not hold: the caller
# then takes `create_run`, which tells why (unknown or someone else's assistant or thread, an
# undeclared graph) or applies the multitask strategy to the runs in flight.
_LOCK_THREAD = text("SELECT id FROM conversations WHERE id = :thread_id FOR UPDATE")
_CREATE_AT_ONCE = text(
    "WITH a AS ("
    " SELECT * FROM agents"
    " WHERE id = :assistant_id AND graph_id = ANY(CAST(:graph_ids AS text[]))"
    "), c0 AS ("
    " SELECT id, status, metadata FROM conversations WHERE id = :thread_id"
    "), r AS ("
    " INSERT INTO runs (id, thread_id, assistant_id, status, multitask_strategy, kwargs,"
    " metadata, user_id, auth, lease_owner, lease_expires_at, attempt, stream_position)"
    " SELECT :run_id, c0.id, a.id, CAST(:status AS text), CAST(:multitask_strategy AS text),"
    " :kwargs,"
    " :metadata, CAST(:user_id AS text), :auth, CAST(:owner AS text),"
    " CASE WHEN :claimed THEN now() + make_interval(secs => :lease_s) END,"
    " CASE WHEN :claimed THEN 1 ELSE 0 END,"
    " CASE WHEN :claimed THEN nextval('thread_stream_positions') END"
    " FROM a, c0 WHERE NOT EXISTS (SELECT 1 FROM runs o"
    " WHERE o.thread_id = :thread_id AND o.status IN ('pending', 'running'))"
    " RETURNING *"
    "), t AS ("
    # As `create_run`: the thread names the graph and assistant that last ran on it (unless it
    # was busy), its agent is set when it had none.
    " UPDATE conversations c SET status = 'busy', agent_id = COALESCE(c.agent_id, a.id),"
    " metadata = CASE WHEN c0.status <> 'busy' THEN COALESCE(c0.metadata, '{}'::jsonb)"
    " || jsonb_build_object('graph_id', a.graph_id, 'assistant_id', a.id::text)"
    " ELSE c.metadata END,"
    " updated_at = now() FROM a, c0 WHERE c.id = c0.id AND EXISTS (SELECT 1 FROM r)"
    " RETURNING c.id"
    + _NOTIFY_AND_FIRST_EVENT
    + ") SELECT r.*, (SELECT graph_id FROM a) AS graph_id, (SELECT count(*) FROM t) AS threads,"
    " (SELECT count(*) FROM n) AS notified, (SELECT count(*) FROM e) AS first_events,"
    # The assistant's row, for the attempt that starts here (`agent_of`): it is not read again.
    " (SELECT to_jsonb(a) FROM a) AS agent,"
    " {fresh} AS fresh"
    " FROM r"
)
# Whether the thread has no checkpoint (`thread_was_fresh`): read under the thread row's lock,
# in the statement's snapshot. Only asked for when LangGraph's checkpoint tables exist (the
# saver makes them at startup, or at its first use when PostgreSQL was down then).
_FRESH = "NOT EXISTS (SELECT 1 FROM checkpoints k WHERE k.thread_id = CAST(:thread_id AS text))"
_AT_ONCE_SQL: dict[bool, tuple[str, str]] = {}


def _at_once_sql(db: Database, *, ask_fresh: bool = False) -> tuple[str, str]:
    """`_LOCK_THREAD` and `_CREATE_AT_ONCE` as psycopg takes them (compiled once each way)."""
    if ask_fresh not in _AT_ONCE_SQL:
        dialect = db.engine.dialect
        create = text(_CREATE_AT_ONCE.text.replace("{fresh}", _FRESH if ask_fresh else "NULL"))
        _AT_ONCE_SQL[ask_fresh] = (
            str(_LOCK_THREAD.compile(dialect=dialect)),
            str(create.compile(dialect=dialect)),
        )
    return _AT_ONCE_SQL[ask_fresh]


async def psycopg_of(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a SQLAlchemy one (for its pipeline mode, binary results,
    or statements written for psycopg), in whatever transaction `conn` holds."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    return driver


async def one_implicit_transaction(
    db: Database, statements: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, Any] | None:
    """Send `statements` (psycopg SQL and parameters; e.g. a row's lock, then the statement
    that writes under it) on a pooled connection in one round trip, and answer the last
    one's first row by column name: None when it returned none, or when PostgreSQL refused a
    value (`DataError`; nothing was written).

    Autocommit: no BEGIN and COMMIT of psycopg's, each with a Sync (PostgreSQL answers each
    Sync at once, so the answer would come in up to four reads, each a wait). The statements
    go out in psycopg's pipeline mode with one Sync, which makes them one implicit
    transaction: a lock is held until the statements after it have committed (or failed:
    nothing is written)."""
    answered = await implicit_transaction(db, statements)
    return None if answered is None else answered[0]


async def implicit_transaction(
    db: Database,
    statements: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    read: tuple[str, Sequence[Any]] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """`one_implicit_transaction`, with `read` (a query and its parameters) sent after the
    statements in the same round trip and implicit transaction, its results in binary format:
    the last statement's first row and `read`'s (None: no row, or no `read`); None when
    PostgreSQL refused a value (nothing was written)."""
    # Not `async with`: SQLAlchemy closes a connection so from a task of its own, shielded
    # (two laps of the event loop, each a wait behind every executing run's callbacks). This
    # connection holds no transaction when it is closed (the implicit one ended at the Sync).
    conn = await db.engine.connect()
    try:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        driver = await psycopg_of(conn)
        reading: psycopg.AsyncCursor[Any] | None = None
        async with driver.pipeline():
            for sql, params in statements:
                cursor = await driver.execute(sql, params)
            if read is not None:
                reading = await driver.execute(read[0], read[1], binary=True)
        row = await cursor.fetchone()
        names = [column.name for column in cursor.description or ()]
        read_row: dict[str, Any] | None = None
        if reading is not None:
            found = await reading.fetchone()
            if found is not None:
                read_names = [column.name for column in reading.description or ()]
                read_row = dict(zip(read_names, found, strict=True))
    except psycopg.DataError:
        await conn.invalidate()
        await conn.close()
        return None
    except BaseException as error:
        # Cut short (a cancellation, a failure): the connection may be mid-pipeline, so it is
        # closed rather than handed back to the pool.
        await conn.invalidate()
        await conn.close()
        task = asyncio.current_task()
        if not isinstance(error, asyncio.CancelledError) and task and task.cancelling():
            # psycopg ends a pipeline cut by a cancellation with an error of its own.
            raise asyncio.CancelledError from error
        raise
    await conn.close()
    return (None if row is None else dict(zip(names, row, strict=True))), read_row


async def create_run_at_once(
    db: Database,
    *,
    run_id: uuid.UUID,
    thread_id: uuid.UUID,
    assistant_id: uuid.UUID,
    graph_ids: Sequence[str],
    kwargs: Mapping[str, Any],
    metadata: Mapping[str, Any],
    multitask_strategy: str,
    notify: Notify | None = None,
    creator: RunCreator = NOBODY,
    claim: InlineClaim | None = None,
    ask_fresh: bool = False,
    notify_thread: bool = True,
) -> tuple[Run, str] | None:
    """`create_run`'s common case in one round trip: the run (its id `run_id`) and its graph
    id, or None when nothing was written (take `create_run` then; it says why or applies the
    multitask strategy). A caller cancelled while waiting for it learns what was written
    from `created_run`.

    It writes only when the thread exists and has no run pending or running (tested under the
    thread row's lock, as `create_run` does), and the assistant `assistant_id` exists with its
    graph among `graph_ids`; the row is what `create_run` writes then (claimed with `claim`
    when it can start at once, its first event stored; else pending, with a "new" NOTIFY).
    The thread row's lock and the statement go out together in psycopg's pipeline mode, as
    one implicit transaction (one Sync): PostgreSQL still runs the statement once the lock is
    held, with a snapshot taken after it, and answers both at once.

    Only for a creator with no thread filter and no cap of runs in flight (both are
    `create_run`'s). With `ask_fresh` (LangGraph's checkpoint tables exist), the statement
    also says whether the thread has no checkpoint (`thread_was_fresh`). With `notify_thread`
    false, a run claimed here sends no NOTIFY at all (see `creation_notifies`): a transaction
    that NOTIFYs takes PostgreSQL's one lock on the notification queue at commit and holds it
    through its WAL flush, so such commits of the whole database (other runs' finishes) go
    one at a time, and a creation queued behind them.
    """
    if creator.access is not None or creator.max_in_flight > 0:
        raise ValueError("create_run_at_once takes no thread filter and no cap; use create_run")
    claimed = claim is not None and not kwargs.get("after_seconds")
    channels, payloads = creation_notifies(
        notify, [], thread_id=thread_id, claimed=claimed, notify_thread=notify_thread
    )
    args = {
        "run_id": run_id,
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "graph_ids": list(graph_ids),
        "status": "running" if claimed else "pending",
        "multitask_strategy": multitask_strategy,
        "kwargs": Jsonb(dict(kwargs)),
        "metadata": Jsonb(dict(metadata)),
        "user_id": creator.user_id,
        "auth": Jsonb(dict(creator.auth)) if creator.auth is not None else None,
        "claimed": claimed,
        "owner": claim.owner if claim is not None and claimed else None,
        "lease_s": float(claim.lease_s) if claim is not None else 0.0,
        "channels": channels,
        "payloads": payloads,
    }
    lock, create = _at_once_sql(db, ask_fresh=ask_fresh)
    # PostgreSQL refusing a value (e.g. a NUL in a JSON string) wrote nothing either: the full
    # path answers as it would have (it reads the assistant first).
    values = await one_implicit_transaction(db, [(lock, {"thread_id": thread_id}), (create, args)])
    if values is None:
        return None
    run = run_from_row(values)
    if values["first_events"]:
        sa_inspect(run).info[_FIRST_EVENT] = (1, "metadata", first_metadata(run.id))
    sa_inspect(run).info[_AGENT] = agent_from_json(values["agent"])
    if values["fresh"]:
        sa_inspect(run).info[_FRESH_THREAD] = True
    return run, str(values["graph_id"])


async def created_run(db: Database, *, thread_id: uuid.UUID, run_id: uuid.UUID) -> Run | None:
    """The run `create_run_at_once` was writing (`run_id`, on `thread_id`) when its caller
    was cancelled, once that write has ended either way (the thread row's lock waits for its
    transaction): None when it wrote nothing. A run it wrote claimed has its first event as
    `stored_first_event` gives it."""
    async with db.sessions.begin() as session:
        await session.execute(_LOCK_THREAD, {"thread_id": thread_id})
        row = (
            (await session.execute(text("SELECT * FROM runs WHERE id = :id"), {"id": run_id}))
            .mappings()
            .one_or_none()
        )
    if row is None:
        return None
    run = run_from_row(row)
    if run.status == "running" and run.attempt == 1 and run.lease_owner is not None:
        sa_inspect(run).info[_FIRST_EVENT] = (1, "metadata", first_metadata(run.id))
    return run


_FIRST_EVENT = "switchboard.first_event"
_AGENT = "switchboard.agent"
_FRESH_THREAD = "switchboard.fresh_thread"


def agent_of(run: Run) -> Agent | None:
    """The assistant `create_run_at_once` read with `run` in its statement (a transient
    `Agent`), when `run` is the object that call returned; None otherwise."""
    agent = sa_inspect(run).info.get(_AGENT)
    return agent if isinstance(agent, Agent) else None


def thread_was_fresh(run: Run) -> bool:
    """Whether `create_run_at_once(ask_fresh=True)` found `run`'s thread without any checkpoint
    when it wrote `run` (under the thread row's lock), when `run` is the object it returned."""
    return bool(sa_inspect(run).info.get(_FRESH_THREAD))


def agent_from_json(row: Mapping[str, Any]) -> Agent:
    """A (transient) `Agent` from `to_jsonb` of a row of `agents` (its timestamps as text)."""
    values = {attr: row[name] for name, attr in _AGENT_ATTRS.items() if name in row}
    for stamp in ("created_at", "updated_at"):
        if isinstance(values.get(stamp), str):
            values[stamp] = datetime.fromisoformat(values[stamp])
    values["id"] = uuid.UUID(str(values["id"]))
    return Agent(**values)


def first_metadata(run_id: uuid.UUID, attempt: int = 1) -> dict[str, Any]:
    """The data of an attempt's `metadata` event, the first event of each attempt (as
    langgraph-api sends it; key order as PostgreSQL's JSONB keeps it)."""
    return {"run_id": str(run_id), "attempt": attempt}


def stored_first_event(run: Run) -> tuple[int, str, dict[str, Any]] | None:
    """`(seq, event, data)` of the first event stored with `run` by the statement that created
    it (`create_run`, for a run claimed at creation: its attempt 1's `metadata`), when `run` is
    the object that call returned; None otherwise (the executor appends its own)."""
    event = sa_inspect(run).info.get(_FIRST_EVENT)
    return event if isinstance(event, tuple) else None


# A run is runnable when it is pending (and due: `after_seconds` delays its start), or running
# with an expired lease (its owner died), and no other run of its thread holds a live lease and
# no older run of its thread is still pending (runs of one thread go in order, one at a time).
_RUNNABLE = """
  ((r.status = 'pending' AND r.created_at
      + make_interval(secs => COALESCE((r.kwargs ->> 'after_seconds')::float8, 0)) <= now())
   OR (r.status = 'running' AND r.lease_expires_at < now()))
  AND NOT EXISTS (
    SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.id <> r.id
      AND ((o.status = 'running' AND o.lease_expires_at >= now())
           OR (o.status = 'pending' AND o.created_at < r.created_at)))
"""
# Plain statements, compiled once: a claim is two of them in one transaction.
# 1. The oldest runnable run whose thread row this transaction can lock (SKIP LOCKED).
_CLAIM_PICK = text(
    "SELECT r.id FROM runs r JOIN conversations t ON t.id = r.thread_id"
    f" WHERE {_RUNNABLE} AND r.id <> ALL(CAST(:skip AS uuid[]))"
    " ORDER BY r.created_at LIMIT 1 FOR UPDATE OF t SKIP LOCKED"
)
# 2. Under the thread row's lock, the same test again (a fresh snapshot: another claim may have
# committed meanwhile) and the claim itself: status, lease, attempt + 1, the run's place in its
# thread's stream at its first claim (from the sequence, under the thread row's lock); the
# thread's stream followers are woken at commit; `more` says whether other runs are pending.
_CLAIM_TAKE = text(
    "WITH claimed AS ("
    " UPDATE runs r SET status = 'running', lease_owner = :owner,"
    " lease_expires_at = now() + make_interval(secs => :lease_s), attempt = r.attempt + 1,"
    " stream_position = COALESCE(r.stream_position, nextval('thread_stream_positions')),"
    " updated_at = now()"
    f" WHERE r.id = :run_id AND {_RUNNABLE}"
    " RETURNING r.*"
    "), woke AS (SELECT pg_notify(:channel, thread_id::text) FROM claimed"
    " WHERE CAST(:notify AS boolean))"
    " SELECT claimed.*, (SELECT count(*) FROM woke) AS woke,"
    " EXISTS (SELECT 1 FROM runs p WHERE p.status = 'pending' AND p.id <> :run_id) AS more"
    " FROM claimed"
)


def _columns(model: type[Any]) -> dict[str, str]:
    """Column name -> attribute name of a model (`metadata` is `metadata_`)."""
    return {prop.columns[0].name: prop.key for prop in sa_inspect(model).column_attrs}


_RUN_ATTRS = _columns(Run)
_AGENT_ATTRS = _columns(Agent)


def run_from_row(row: Any) -> Run:
    """A (transient) `Run` from a row of `runs` read with plain SQL."""
    return Run(**{attr: row[name] for name, attr in _RUN_ATTRS.items() if name in row})


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed run, and whether other runs were pending when it was claimed."""

    run: Run
    more: bool


async def claim_run(
    db: Database, *, owner: str, lease_s: float, scan: int = 16, notify_thread: bool = True
) -> Claim | None:
    """Claim the oldest runnable run: pending, or running with an expired lease (a dead owner).

    A run is runnable when no other run of its thread holds a live lease and no older run of
    its thread is still pending (runs of one thread go in order, one at a time). The thread row
    is locked first with `SKIP LOCKED`, then the run is tested again and claimed under that lock,
    so processes never claim the same run and never run two runs of one thread at once. Up to
    `scan` candidates are tried (one that another claim took meanwhile is skipped).

    The commit NOTIFYs the thread's stream followers (the run has its place), unless
    `notify_thread` is false: no other process listens, and the caller wakes its own (a
    NOTIFYing commit takes PostgreSQL's one notification-queue lock through its WAL flush).
    """
    skipped: list[uuid.UUID] = []
    async with db.engine.begin() as conn:
        for _ in range(scan):
            run_id = (await conn.execute(_CLAIM_PICK, {"skip": skipped})).scalar()
            if run_id is None:
                return None
            row = (
                await conn.execute(
                    _CLAIM_TAKE,
                    {
                        "owner": owner,
                        "lease_s": float(lease_s),
                        "run_id": run_id,
                        "channel": THREAD_CHANNEL,
                        "notify": notify_thread,
                    },
                )
            ).first()
            if row is not None:
                values = row._mapping
                return Claim(run_from_row(values), bool(values["more"]))
            skipped.append(run_id)
    return None


def _holds(token: RunToken) -> Any:
    """The condition of a fenced write: the run is still held by the token's attempt."""
    return and_(Run.id == token.run_id, Run.attempt == token.attempt, Run.status == "running")


# Renewing leases: one statement for every attempt a process holds, fenced like every write of
# an attempt: a run's lease is extended only while its attempt is the token's and it is running.
# One row per token asked: renewed or not, and the run as the statement's snapshot saw it
# (so a run that finished is told apart from one taken over). A run whose row a concurrent
# transaction changed (a finish committing while the renewal waited for its lock) is not
# renewed, yet the snapshot still shows it running with the same attempt.
_RENEW_ALL = (
    "WITH asked AS ("
    " SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS t(id, attempt)"
    "), renewed AS ("
    " UPDATE runs r SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)"
    " FROM asked t"
    " WHERE r.id = t.id AND r.attempt = t.attempt AND r.status = 'running'"
    " RETURNING r.id, r.attempt, r.cancel_reason"
    ")"
    " SELECT t.id, t.attempt, n.id IS NOT NULL, n.cancel_reason, r.status, r.attempt"
    " FROM asked t"
    " LEFT JOIN renewed n ON n.id = t.id AND n.attempt = t.attempt"
    " LEFT JOIN runs r ON r.id = t.id"
)


async def renew_leases(
    conn: psycopg.AsyncConnection[Any], tokens: Sequence[RunToken], *, lease_s: float
) -> dict[RunToken, Renewal]:
    """Extend the leases of all `tokens` in one statement on `conn` (autocommit): a renewal
    per token, `held` False for those whose run is no longer theirs, with the run's status
    and attempt (finished, taken over, handed back or deleted)."""
    if not tokens:
        return {}
    cursor = await conn.execute(
        _RENEW_ALL,
        {
            "lease_s": float(lease_s),
            "ids": [token.run_id for token in tokens],
            "attempts": [token.attempt for token in tokens],
        },
    )
    rows = await cursor.fetchall()
    found = {
        RunToken(run_id, attempt): Renewal(
            held=bool(held), cancel_reason=reason, status=status, attempt=current
        )
        for run_id, attempt, held, reason, status, current in rows
    }
    return {token: found.get(token, Renewal(held=False)) for token in tokens}


async def release_runs(db: Database, tokens: Sequence[RunToken]) -> int:
    """Hand the runs these attempts hold back (pending, no lease) so another process resumes
    them at once; a run some other attempt holds by now is left alone."""
    if not tokens:
        return 0
    async with db.sessions.begin() as session:
        result = await session.execute(
            update(Run)
            .where(or_(*(_holds(token) for token in tokens)))
            .values(status="pending", lease_owner=None, lease_expires_at=None)
            .returning(Run.id)
        )
        return len(result.all())


@dataclass(frozen=True, slots=True)
class FinishWrite:
    """A statement sent in a run's finishing transaction right after the finish, in the same
    round trip (e.g. /chat's transcript rows): psycopg SQL (`%(name)s` parameters) and its
    parameters. It must write nothing unless the finish ended the run (guard on the run's
    new status and attempt), and must be safe to run again after a finish whose commit went
    through but whose answer was lost (e.g. `ON CONFLICT DO NOTHING` on ids chosen once)."""

    sql: str
    params: Mapping[str, Any] | Sequence[Any]
    many: bool = False  # `params` is a sequence of parameter sets (`executemany`)


_FINISH_LOCK = text(
    "SELECT id FROM conversations WHERE id = (SELECT thread_id FROM runs WHERE id = :run_id)"
    " FOR UPDATE"
)
# One statement under the thread row's lock: close the run if the attempt still holds it, then
# its thread (busy while other runs wait, else `thread_status`; values and interrupts when
# given), and NOTIFY at commit (`if_busy` payloads only when other runs of the thread wait).
_FINISH = text(
    "WITH r AS ("
    " UPDATE runs SET status = :status, output = :output, error = :error,"
    " lease_expires_at = NULL, updated_at = now()"
    " WHERE id = :run_id AND attempt = :attempt AND status = 'running'"
    " RETURNING id, thread_id"
    "), waiting AS ("
    " SELECT EXISTS (SELECT 1 FROM runs o WHERE o.thread_id = (SELECT thread_id FROM r)"
    " AND o.id <> :run_id AND o.status IN ('pending', 'running')) AS busy"
    "), t AS ("
    " UPDATE conversations c SET"
    " status = CASE WHEN (SELECT busy FROM waiting) THEN 'busy' ELSE :thread_status END,"
    ' "values" = CASE WHEN :set_values THEN :values ELSE c."values" END,'
    " interrupts = CASE WHEN :set_interrupts THEN :interrupts ELSE c.interrupts END,"
    " updated_at = now()"
    " WHERE c.id = (SELECT thread_id FROM r) RETURNING c.id"
    "), n AS ("
    " SELECT pg_notify(:channel, p || '|' || :sender) FROM r,"
    " unnest(CAST(:payloads AS text[])) AS p"
    " UNION ALL SELECT pg_notify(:channel, p || '|' || :sender) FROM r, waiting,"
    " unnest(CAST(:if_busy AS text[])) AS p WHERE waiting.busy"
    ") SELECT (SELECT count(*) FROM r) AS finished, (SELECT count(*) FROM t) AS threads,"
    " (SELECT count(*) FROM n) AS notified,"
    # Already ended by this very attempt: an earlier try of this finish committed, and its
    # answer was lost with its connection (the statement sees the row as it was before it).
    " (SELECT count(*) FROM runs WHERE id = :run_id AND attempt = :attempt"
    "  AND status IN ('success', 'error', 'timeout', 'interrupted')) AS ended_before,"
    " (SELECT busy FROM waiting) AS busy"
).bindparams(
    bindparam("output", type_=JSONB),
    bindparam("values", type_=JSONB),
    bindparam("interrupts", type_=JSONB),
)


async def finish_run(
    db: Database,
    token: RunToken,
    *,
    status: str,
    output: Any,
    error: str | None = None,
    thread_status: str,
    thread_values: Mapping[str, Any] | None,
    thread_interrupts: Mapping[str, Any] | None,
    delete_thread: bool = False,
    notify: Notify | None = None,
    also: Sequence[FinishWrite] = (),
    before: Sequence[FinishWrite] = (),
) -> bool:
    """Close the run `token` holds and update its thread (status, values, interrupts) in one
    transaction, with the statements of `also` sent after it in the same transaction, and
    those of `before` (the run's last checkpoint writes) first: these write whether or not the
    finish ends the run, as if sent on their own before it, and must be safe to send again.

    With `delete_thread` (a stateless run), the run is detached from its temporary thread,
    which is then deleted. False (and nothing written) when the attempt no longer holds the
    run: another worker reclaimed it, or it was deleted. True, without writing, when this
    attempt ended the run already: a finish retried after its commit's answer was lost with
    its connection (`also` must then write nothing twice). `notify.if_busy` payloads are sent
    only when other runs of the thread are waiting, and `notify.on_busy` is called then (or
    when the run was ended already: whether others wait is not known then).

    This is two statements (lock the thread row; then close the run, update the thread and
    NOTIFY in one) and those of `also`, sent with the transaction's BEGIN and COMMIT in one
    pipelined round trip (`_finish_pipelined`).
    """
    if delete_thread:
        if before:
            raise ValueError("a stateless run's finish carries no checkpoint writes")
        return await _finish_stateless(
            db, token, status=status, output=output, error=error, notify=notify, also=also
        )
    params = {
        "run_id": token.run_id,
        "attempt": token.attempt,
        "status": status,
        "output": output,
        "error": error,
        "thread_status": thread_status,
        "set_values": thread_values is not None,
        "values": dict(thread_values) if thread_values is not None else None,
        "set_interrupts": thread_interrupts is not None,
        "interrupts": dict(thread_interrupts) if thread_interrupts is not None else None,
        "channel": notify.channel if notify else "",
        "sender": notify.sender if notify else "",
        "payloads": list(notify.payloads) if notify else [],
        "if_busy": list(notify.if_busy) if notify else [],
    }
    return await _finish_pipelined(
        db, params, also, before, on_busy=notify.on_busy if notify else None
    )


async def _finish_pipelined(
    db: Database,
    params: dict[str, Any],
    also: Sequence[FinishWrite] = (),
    before: Sequence[FinishWrite] = (),
    *,
    on_busy: Callable[[], None] | None = None,
) -> bool:
    """`before`, `_FINISH_LOCK` then `_FINISH` (then `also`) in one transaction, in one round
    trip: `before`, the lock, the finish and `also` go out together in psycopg's pipeline mode,
    on a pooled connection's driver in autocommit, with one Sync: PostgreSQL runs them as one
    implicit transaction (all or nothing, committed at the Sync) and answers once. It still
    runs them one after the other: the finish starts (and takes its snapshot) once the thread
    row's lock is held, as when each waited for the last, and `also` sees what the finish
    wrote. (psycopg's `transaction()` in pipeline mode sends BEGIN and COMMIT each with a Sync
    of their own: three answers to wait for instead of one.)"""
    lock, finish = _finish_sql(db)
    args = {
        **params,
        "output": Jsonb(params["output"]),
        "values": Jsonb(params["values"]) if params["values"] is not None else None,
        "interrupts": Jsonb(params["interrupts"]) if params["interrupts"] is not None else None,
    }
    # Closed without a task: the implicit transaction ended at the Sync.
    async with db.connection(autocommit=True) as conn:
        driver = await psycopg_of(conn)
        async with driver.pipeline():
            for write in before:  # prepared, as `also` (executemany prepares its own)
                if write.many:
                    async with driver.cursor() as many:
                        await many.executemany(write.sql, write.params)  # type: ignore[arg-type]
                else:
                    await driver.execute(write.sql, write.params, prepare=True)  # type: ignore[arg-type]
            await driver.execute(lock, {"run_id": params["run_id"]})
            cursor = await driver.execute(finish, args)
            for write in also:  # prepared at a connection's first use: the pool's
                # connections take turns, so psycopg's threshold (5 uses) is rarely met
                await driver.execute(write.sql, write.params, prepare=True)
        row = await cursor.fetchone()
    assert row is not None
    finished, ended_before, busy = bool(row[0]), bool(row[3]), bool(row[4])
    if on_busy is not None and ((finished and busy) or ended_before):
        on_busy()
    return finished or ended_before


_PIPELINED: list[tuple[str, str]] = []


def _finish_sql(db: Database) -> tuple[str, str]:
    """`_FINISH_LOCK` and `_FINISH` as psycopg takes them (compiled once: every engine here
    has the same psycopg dialect)."""
    if not _PIPELINED:
        dialect = db.engine.dialect
        _PIPELINED.append(
            (str(_FINISH_LOCK.compile(dialect=dialect)), str(_FINISH.compile(dialect=dialect)))
        )
    return _PIPELINED[0]


async def _finish_stateless(
    db: Database,
    token: RunToken,
    *,
    status: str,
    output: Any,
    error: str | None,
    notify: Notify | None,
    also: Sequence[FinishWrite],
) -> bool:
    """`finish_run` of a stateless run: close it, detach it and delete its temporary thread."""
    run_id = token.run_id
    async with db.sessions.begin() as session:
        run = await session.get(Run, run_id)
        if run is None:
            return False
        thread = await lock_thread(session, run.thread_id) if run.thread_id else None
        run = await session.get(Run, run_id, with_for_update=True, populate_existing=True)
        if run is None or run.attempt != token.attempt or run.status != "running":
            return False
        run.status, run.output, run.error = status, output, error
        run.lease_expires_at = None  # lease_owner stays: which process ran it last
        if also:
            await session.flush()  # (`also` guards on the run's new status)
            driver = await psycopg_of(await session.connection())
            for write in also:
                await driver.execute(write.sql, write.params)
        if thread is not None:
            run.thread_id = None
            await session.flush()
            await session.delete(thread)
        # Its temporary thread has no other run: no `if_busy` payloads.
        await send_notify(
            session, Notify(notify.channel, notify.sender, notify.payloads) if notify else None
        )
        return True


async def drop_run(
    db: Database,
    token: RunToken,
    *,
    also: Sequence[tuple[str, Mapping[str, Any]]] = (),
    retried: bool = False,
) -> bool:
    """Delete a run row (rollback) while `token`'s attempt holds it, and send the statements
    of `also` (psycopg SQL and parameters: the run's checkpoints deleted) in the same
    transaction, under its thread row's lock, only when the row was deleted: both are
    committed or neither, so the run's next attempt, or a retry after a lost answer, finds
    either the run still there or nothing left to delete.

    `retried`: an earlier call for this attempt failed, maybe after it committed (its answer
    lost): a run no longer there counts as deleted (True). Whatever else deletes a run (its
    thread deleted, a next attempt's rollback) takes its checkpoints too. A run another
    attempt holds is False either way."""
    run_id = token.run_id
    async with db.sessions.begin() as session:
        run = await session.get(Run, run_id)
        if run is None:
            return retried
        thread = await lock_thread(session, run.thread_id) if run.thread_id else None
        stmt = delete(Run).where(Run.id == run_id, Run.attempt == token.attempt)
        deleted = await session.scalar(stmt.returning(Run.id))
        if deleted is not None and also:
            driver = await psycopg_of(await session.connection())
            for sql, params in also:
                await driver.execute(sql, params)  # type: ignore[arg-type]
        idle = deleted is not None and thread is not None and thread.status == "busy"
        if idle and thread is not None and not await in_flight(session, thread.id):
            thread.status = "idle"
        return deleted is not None


def _on_visible_thread(access: Filter | None) -> Any:
    """Runs whose thread satisfies `access` (runs belong to their thread's owner)."""
    if access is None:
        return true()
    return Run.thread_id.in_(select(Conversation.id).where(visible(access)))


async def get_run(
    db: Database,
    run_id: uuid.UUID,
    *,
    thread_id: uuid.UUID | None = None,
    access: Filter | None = None,
) -> Run:
    """The run; `NotFoundError` if unknown, not on `thread_id` when given, or on a thread
    that does not satisfy `access`."""
    stmt = select(Run).where(Run.id == run_id, _on_visible_thread(access))
    if thread_id is not None:
        stmt = stmt.where(Run.thread_id == thread_id)
    async with db.sessions() as session:
        run = await session.scalar(stmt.execution_options(populate_existing=True))
        if run is None:
            raise NotFoundError("run", run_id, field="run_id")
        return run


async def require_thread(
    db: Database, thread_id: uuid.UUID, access: Filter | None = None
) -> Conversation:
    """The thread; `NotFoundError` naming `thread_id` if unknown (or not the caller's)."""
    async with db.sessions() as session:
        return await thread_row(session, thread_id, access, field="thread_id")


async def list_runs(
    db: Database, thread_id: uuid.UUID, *, limit: int, offset: int, status: str | None = None
) -> list[Run]:
    """The thread's runs, newest first."""
    stmt = select(Run).where(Run.thread_id == thread_id)
    if status is not None:
        stmt = stmt.where(Run.status == status)
    stmt = stmt.order_by(Run.created_at.desc(), Run.id).limit(limit).offset(offset)
    async with db.sessions() as session:
        return list((await session.scalars(stmt)).all())


async def delete_run(
    db: Database, run_id: uuid.UUID, *, thread_id: uuid.UUID, access: Filter | None = None
) -> None:
    """Delete a finished run; `ConflictError` while it is pending or running."""
    async with db.sessions.begin() as session:
        run = await session.scalar(
            select(Run).where(
                Run.id == run_id, Run.thread_id == thread_id, _on_visible_thread(access)
            )
        )
        if run is None:
            raise NotFoundError("run", run_id, field="run_id")
        if run.status in IN_FLIGHT:
            raise ConflictError(
                f"run {run_id} is {run.status}; cancel it before deleting it", field="run_id"
            )
        await session.delete(run)


async def cancel_runs(
    db: Database,
    run_ids: Sequence[uuid.UUID],
    *,
    action: CancelAction,
    reason: str,
    thread_id: uuid.UUID | None = None,
    access: Filter | None = None,
) -> list[CancelRequest]:
    """Cancel runs by id: pending ones at once, running ones marked for their owner to stop.

    Raises `NotFoundError` for an unknown run (or one not on `thread_id`, or on a thread that
    does not satisfy `access`). Finished runs are left as they are.
    """
    requests: list[CancelRequest] = []
    for run_id in run_ids:
        async with db.sessions.begin() as session:
            run = await session.scalar(
                select(Run).where(Run.id == run_id, _on_visible_thread(access))
            )
            if run is None or (thread_id is not None and run.thread_id != thread_id):
                raise NotFoundError("run", run_id, field="run_id")
            if run.thread_id is not None:
                thread = await lock_thread(session, run.thread_id)
            else:
                thread = None
            run = await session.get(Run, run_id, with_for_update=True, populate_existing=True)
            if run is None or run.status not in IN_FLIGHT:
                continue
            requests += await _cancel_in_session(session, [run], action=action, reason=reason)
            busy = thread is not None and thread.status == "busy"
            if busy and thread is not None and not await in_flight(session, thread.id):
                thread.status = "idle"
    return requests


async def runs_with_status(
    db: Database,
    statuses: Sequence[str],
    *,
    thread_id: uuid.UUID | None = None,
    access: Filter | None = None,
) -> list[uuid.UUID]:
    """Ids of runs in `statuses` (on `thread_id` when given; on threads satisfying `access`)."""
    stmt = select(Run.id).where(Run.status.in_(statuses), _on_visible_thread(access))
    if thread_id is not None:
        stmt = stmt.where(Run.thread_id == thread_id)
    async with db.sessions() as session:
        return list((await session.scalars(stmt)).all())


async def count_active(db: Database) -> list[tuple[str, str, int]]:
    """`(status, graph_id, count)` of the pending and running runs of every process."""
    graph = func.coalesce(Agent.graph_id, "unknown")
    stmt = (
        select(Run.status, graph, func.count())
        .select_from(Run)
        .outerjoin(Agent, Agent.id == Run.assistant_id)
        .where(Run.status.in_(("pending", "running")))
        .group_by(Run.status, graph)
    )
    async with db.sessions() as session:
        return [(str(s), str(g), int(n)) for s, g, n in (await session.execute(stmt)).all()]


async def cancel_reason(db: Database, run_id: uuid.UUID) -> str | None:
    """The cancel request recorded on a run ("interrupt: ..." / "rollback: ..."), if any."""
    async with db.sessions() as session:
        reason: str | None = await session.scalar(select(Run.cancel_reason).where(Run.id == run_id))
        return reason
