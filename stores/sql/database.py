"""The SQLAlchemy async engine and session factory, and PostgreSQL URL normalisation."""

from __future__ import annotations

import math
import select
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

ASYNC_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"
"""Sent first in a transaction (the implicit one of a pipeline, up to its Sync, included):
its commit returns without waiting for PostgreSQL to flush its WAL to disk. For a run's
progress only (its checkpoints as it goes, its events but the last): what a client is told
the outcome of (the run's creation, its finish, a cancel) commits synchronously, and that
flush makes every commit before it durable too. A crash of PostgreSQL itself (not a restart,
not a cut connection) can lose the last such commits, up to three times `wal_writer_delay` (0.6 s by
default), never one without those after it; the run is then resumed from the checkpoint
before them, as after a crash of the server (docs/runs.md, "Crashes and restarts")."""


def sqlalchemy_url(url: str) -> str:
    """Return `url` with the psycopg 3 driver SQLAlchemy needs (`postgresql+psycopg://`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a database URL: no scheme:// (the value may hold a password)")
    if scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        return f"postgresql+psycopg://{rest}"
    raise ValueError(f"unsupported database URL scheme {scheme!r}; use postgresql://")


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) says the same work may succeed if sent
    again: the database connection failed (PostgreSQL restarted, cut the connection, timed out
    or is unreachable), or the transaction lost a race (a serialization failure, a deadlock,
    a lock or statement timeout), not the statement.

    An error PostgreSQL answered with says which by its SQLSTATE (`RETRYABLE_STATES`): psycopg
    maps many statement errors onto `OperationalError` too (class 54, a value over one of
    PostgreSQL's limits), and those fail again; a statement timeout (57014) or a lock not
    available (55P03) is contention or a stalled server, not the statement, and is transient.
    An error without one (a socket cut, no pooled connection free in time, SQLAlchemy
    giving up a checkout on connections found cut, `CLOSED_ON_CHECKOUT`) is transient."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        state = sqlstate(current)
        if state is not None:
            return retryable_state(state)
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, exc.InvalidRequestError) and str(current) == CLOSED_ON_CHECKOUT:
            return True
        current = current.__cause__ or current.__context__
    return False


def is_refusal(error: BaseException) -> bool:
    """Whether `error` is PostgreSQL refusing the statement itself: sending it again fails
    again (unlike `is_transient`). Either it answered with an SQLSTATE that is not transient
    (`retryable_state`: a value over its limits, class 54; a data exception, class 22; a
    constraint, class 23; a statement it cannot run, class 42), or psycopg refused the
    statement's data before sending it (a NUL in a string: a `DataError`, `IntegrityError` or
    `ProgrammingError` with no SQLSTATE). A connection error, a timeout (of a statement, of a
    lock, of a pool checkout) and anything else that is not an answer of PostgreSQL are not."""
    if isinstance(error, _REFUSALS):
        return True
    return sqlstate(error) is not None and not is_transient(error)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE PostgreSQL answered `error` with (SQLAlchemy's wrapper: its driver
    error's), or None (not an answer of PostgreSQL: a cut socket, a timeout, ours)."""
    if isinstance(error, exc.DBAPIError):
        error = error.orig  # type: ignore[assignment]
    state = getattr(error, "sqlstate", None) if isinstance(error, psycopg.Error) else None
    return state if isinstance(state, str) and state else None


def retryable_state(state: str) -> bool:
    """Whether an error of SQLSTATE `state` may go away if the same work is sent again."""
    return state.startswith("08") or state in RETRYABLE_STATES


RETRYABLE_STATES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is stopping (or pg_terminate_backend)
        "57P02",  # crash_shutdown: another backend crashed, every connection is reset
        "57P03",  # cannot_connect_now: the server is starting or in recovery
        "57P05",  # idle_session_timeout: the server closed an idle connection
        "53300",  # too_many_connections: until others close
        "53100",  # disk_full: the database's volume, not the statement (until space is freed)
        "40001",  # serialization_failure: a race lost; the transaction may be run again
        "40P01",  # deadlock_detected: likewise
        "55P03",  # lock_not_available: likewise (a lock_timeout)
        "57014",  # query_canceled: `statement_timeout` (contention, a stall; see below)
    }
)
"""SQLSTATEs besides class 08 (connection_exception) that `is_transient` calls transient. Not
in it: the rest of class 53 (out_of_memory, configuration_limit_exceeded: a statement's size),
54 (program_limit_exceeded: a value over 256 MiB in JSONB, 1 GiB in a field), 57P04
(database_dropped).

57014 is also what a client's cancel gets; the server cancels its own statements only by
their timeout (`Timeouts.statement_s`, `DB_STATEMENT_TIMEOUT_S`), which is there so a database
that stops answering makes calls fail and be retried: a lock held by a migration or a long
DELETE, an I/O stall. Refusing them instead failed healthy runs, and the event writer sent a
timed-out batch again event by event, each waiting the timeout again. An event too large to
store is refused before it is sent (`_MAX_EVENT_BYTES`), so a timeout is not about the data."""

CLOSED_ON_CHECKOUT = "This connection is closed"
"""SQLAlchemy's `InvalidRequestError` when its checkout found a pooled connection cut, replaced
it and found the new one cut as well (`_check_on_checkout` says so of both: every connection
is being cut, a restart under way): a connection outage, as any other."""


_REFUSALS = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)

_OUTAGES = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,  # no pooled connection came free in time
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
)


def is_cut(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether an idle connection can no longer serve a statement, told without a round trip.

    A connection the server closed (a restart, a failover, `pg_terminate_backend`: the
    backend sends its FATAL and closes the socket) has something to read while it should have
    nothing: polling its socket (no wait) finds it. So does a closed or broken connection.
    A connection to a server that vanished without closing it (a cable cut) is not found
    here; its first statement fails instead, as any connection cut mid-statement does.
    """
    if conn.closed or conn.broken or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        return True
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.OperationalError):
        return True


def _check_on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """SQLAlchemy's checkout hook: a pooled connection found cut (`is_cut`) is replaced by a
    new one before the caller gets it (SQLAlchemy retries the checkout)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if isinstance(driver, psycopg.BaseConnection) and is_cut(driver):
        raise exc.DisconnectionError("the pooled connection was closed by the server")


def libpq_url(url: str) -> str:
    """Return `url` in the plain `postgresql://` form that psycopg and libpq accept."""
    _, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a database URL: no scheme:// (the value may hold a password)")
    return f"postgresql://{rest}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long PostgreSQL may take: to open a connection, and per statement (0: no limit).

    Every connection of the server gets them, so a database that restarts or stops answering
    makes calls fail (and be retried or reported) instead of hanging.
    """

    connect_s: float = 10.0
    statement_s: float = 0.0

    def connect_args(self) -> dict[str, Any]:
        """The libpq keyword arguments that apply them (`connect_timeout`, `options`)."""
        args: dict[str, Any] = {"connect_timeout": max(1, math.ceil(self.connect_s))}
        if self.statement_s > 0:
            args["options"] = f"-c statement_timeout={round(self.statement_s * 1000)}"
        return args


async def connect(
    url: str, timeouts: Timeouts = Timeouts(), **kwargs: Any
) -> psycopg.AsyncConnection[Any]:
    """A psycopg autocommit connection to `url` (listeners, the event writer) with `timeouts`."""
    return await psycopg.AsyncConnection.connect(
        libpq_url(url), autocommit=True, **timeouts.connect_args(), **kwargs
    )


@dataclass(frozen=True, slots=True)
class Database:
    """An engine and the session factory bound to it."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @asynccontextmanager
    async def connection(self, *, autocommit: bool = False) -> AsyncIterator[AsyncConnection]:
        """`engine.connect()` (in autocommit if asked) for the paths every run takes, handed
        back to the pool without a task of its own.

        SQLAlchemy's `async with` closes a connection from a task it shields (two laps of the
        event loop, each behind every ready callback of every executing run). Here a block that
        ends normally with no transaction open on the driver (autocommit, or one it committed)
        closes it directly: that close sends nothing (psycopg's rollback of an idle connection
        is a no-op), so nothing can cut it halfway. A block that fails, is cancelled or leaves
        a transaction open is closed as SQLAlchemy does it (a ROLLBACK round trip, shielded)."""
        conn = await self.engine.connect()
        try:
            if autocommit:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
        except BaseException:
            await conn.__aexit__(*sys.exc_info())
            raise
        if _idle(conn):
            await conn.close()
        else:
            await conn.__aexit__(None, None, None)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads alone, on a connection in autocommit: each statement is sent on
        its own, with no BEGIN and ROLLBACK round trips around it. What it loads stays usable
        after the block (as from `sessions()`); it writes nothing. Closed without the tasks of
        SQLAlchemy's `async with` (`connection`)."""
        async with self.connection(autocommit=True) as conn:
            session = AsyncSession(bind=conn, expire_on_commit=False)
            try:
                yield session
            finally:
                await session.close()  # in autocommit: nothing to send

    async def ping(self) -> None:
        """Run `SELECT 1`; raises whatever the driver raises when the server is unreachable."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


def _idle(conn: AsyncConnection) -> bool:
    """Whether `conn`'s driver connection is idle: no transaction open, nothing to send."""
    try:
        driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    except exc.SQLAlchemyError:  # invalidated or closed
        return False
    return (
        isinstance(driver, psycopg.AsyncConnection)
        and not driver.closed
        and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )


@asynccontextmanager
async def open_database(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 10.0,
    timeouts: Timeouts = Timeouts(),
) -> AsyncIterator[Database]:
    """Open a pooled async engine on `url` and dispose of it on exit.

    Connections are checked before use without a round trip (`is_cut`: one that died while
    idle, e.g. across a restart of PostgreSQL, is replaced) and carry `timeouts`. A statement
    on a connection cut after that check fails as a disconnect: SQLAlchemy discards the
    connection and every other one opened before it (`connection_invalidated` on the error,
    which `is_transient` reports), so the caller's retry gets a new one.
    """
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args=timeouts.connect_args(),
    )
    event.listen(engine.sync_engine.pool, "checkout", _check_on_checkout)
    try:
        yield Database(engine, async_sessionmaker(engine, expire_on_commit=False))
    finally:
        await engine.dispose()
