"""Pooled connections are checked on checkout without a round trip (stores/sql/database.py
`is_cut`): one the server closed while it sat in the pool (a restart, `pg_terminate_backend`)
is replaced before anyone uses it; a healthy one is used as it is, with no `;` sent first."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, exc, text

from stores.checkpoints import open_checkpoints
from stores.sql.database import (
    Database,
    connect,
    is_cut,
    is_refusal,
    is_transient,
    open_database,
)


def terminate(database_url: str, pid: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        row = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert row is not None
        assert row[0] is True


async def until_cut(conn: psycopg.AsyncConnection[Any]) -> None:
    """Wait (at most 5 s) until the closed connection is seen as cut."""
    deadline = time.monotonic() + 5
    while not is_cut(conn):
        assert time.monotonic() < deadline, "a terminated connection was never seen as cut"
        await asyncio.sleep(0.02)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, pool_size=1, max_overflow=0) as database:
        yield database


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every query psycopg's async cursors send, in order (observed, then sent as they are)."""
    queries: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def observed(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        queries.append(query if isinstance(query, str) else repr(query))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", observed)
    return queries


async def test_a_healthy_connection_is_not_cut_and_a_terminated_one_is(database_url: str) -> None:
    async with await connect(database_url) as healthy, await connect(database_url) as doomed:
        await healthy.execute("SELECT 1")
        assert not is_cut(healthy)
        assert not is_cut(doomed)
        terminate(database_url, doomed.info.backend_pid)
        await until_cut(doomed)
        assert not is_cut(healthy)
        await healthy.execute("SELECT 1")  # still good
    assert is_cut(doomed)  # closed


async def test_the_pool_hands_out_a_healthy_connection_without_a_round_trip(
    db: Database, sent: list[str]
) -> None:
    async with db.engine.connect() as conn:
        first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    sent.clear()
    async with db.engine.connect() as conn:
        again = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    assert again == first  # the pooled connection, reused
    assert [q for q in sent if "pg_backend_pid" not in q] == []  # no ping before it


async def _cut_the_pooled_connection(db: Database, database_url: str) -> int:
    """Terminate the backend of `db`'s (only) pooled connection, once its client side can tell
    (`until_cut`), as a restart does while it sits idle; its backend pid."""
    async with db.engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    terminate(database_url, pid)
    await until_cut(driver)
    return int(pid)


async def test_a_pooled_connection_cut_while_idle_is_replaced_before_use(
    db: Database, database_url: str
) -> None:
    before = await _cut_the_pooled_connection(db, database_url)
    async with db.engine.connect() as conn:  # the only pooled connection was the cut one
        after = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    assert after != before
    # So is every connection after a restart: each is found cut on its checkout.
    async with db.sessions() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_checkpoint_connection_cut_while_idle_is_replaced_before_use(
    database_url: str,
) -> None:
    async with open_checkpoints(database_url, max_size=2) as checkpoints:
        saver = await checkpoints.ready()
        pool = checkpoints.pool
        await pool.wait()
        async with pool.connection() as conn:
            before = conn.info.backend_pid
        terminate(database_url, before)
        await until_cut(conn)
        config: Any = {"configurable": {"thread_id": str(uuid.uuid4()), "checkpoint_ns": ""}}
        assert await saver.aget_tuple(config) is None  # answered on another connection
        async with pool.connection() as fresh:
            assert fresh.info.backend_pid != before
            assert not fresh.closed


async def test_a_reading_session_opens_no_transaction(db: Database) -> None:
    """`Database.reading()`: each SELECT on its own (autocommit), no BEGIN/ROLLBACK round trips;
    a `sessions()` session holds a transaction open for comparison."""

    async def status(session: Any) -> Any:
        raw = await (await session.connection()).get_raw_connection()
        assert isinstance(raw.driver_connection, psycopg.AsyncConnection)
        return raw.driver_connection.info.transaction_status

    in_transaction = psycopg.pq.TransactionStatus.INTRANS
    async with db.sessions() as session:
        await session.execute(text("SELECT 1"))
        assert await status(session) == in_transaction
    async with db.reading() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        assert await status(session) == psycopg.pq.TransactionStatus.IDLE
    async with db.sessions() as session:  # the connection went back to the pool as it was
        await session.execute(text("SELECT 1"))
        assert await status(session) == in_transaction


class TasksStarted:
    """Count the tasks the running loop starts (its task factory) while installed."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> TasksStarted:
        loop = asyncio.get_running_loop()
        self._loop, self._before = loop, loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            self.count += 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.set_task_factory(self._before)


async def test_a_connection_that_ends_idle_goes_back_to_the_pool_without_a_task(
    db: Database,
) -> None:
    """`Database.connection()` closes a connection whose block ended with nothing open on the
    driver directly; SQLAlchemy's `async with` closes every connection from a task of its own
    (shielded: two laps of the loop). The pool gets it back either way."""
    pool = db.engine.sync_engine.pool
    with TasksStarted() as tasks:
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SELECT 1"))
    assert tasks.count == 1
    with TasksStarted() as tasks:
        async with db.connection(autocommit=True) as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    assert tasks.count == 0
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    with TasksStarted() as tasks:
        async with db.reading() as session:
            assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
    assert tasks.count == 0
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_connection_left_in_a_transaction_or_failing_is_closed_as_sqlalchemy_does(
    db: Database,
) -> None:
    """A block that leaves a transaction open (or raises) gets SQLAlchemy's close: rolled back,
    so the next checkout of the (only) pooled connection finds it idle, nothing written."""
    table = f"conn_{uuid.uuid4().hex[:8]}"
    async with db.connection(autocommit=True) as conn:
        await conn.execute(text(f"CREATE TABLE {table} (n int)"))
    async with db.connection() as conn:  # a transaction begun, never committed
        await conn.execute(text(f"INSERT INTO {table} VALUES (1)"))

    async def failing() -> None:
        async with db.connection() as conn:
            await conn.execute(text(f"INSERT INTO {table} VALUES (2)"))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await failing()
    async with db.connection(autocommit=True) as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, psycopg.AsyncConnection)
        assert raw.driver_connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0
        await conn.execute(text(f"DROP TABLE {table}"))
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def failure(db: Database, *statements: str) -> exc.DBAPIError:
    """What running `statements` in one transaction of `db` raised (SQLAlchemy's wrapper)."""
    try:
        async with db.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    except exc.DBAPIError as error:
        return error
    raise AssertionError(f"{statements} did not fail")


async def test_statement_errors_postgresql_answers_as_operational_errors_are_not_transient(
    db: Database, database_url: str
) -> None:
    """psycopg maps some statement errors onto `OperationalError` (a value over one of
    PostgreSQL's limits): sent again, they fail again, so they are not taken for an outage
    (a run handed back, an event retried for a minute)."""
    over_limit = await failure(db, "SELECT repeat('x', 1073741824)")  # a 1 GiB string
    assert isinstance(over_limit.orig, psycopg.errors.ProgramLimitExceeded)
    assert isinstance(over_limit.orig, psycopg.OperationalError)
    async with await connect(database_url) as conn:  # the driver's own, unwrapped
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as raw:
            await conn.execute("SELECT repeat('x', 1073741824)")
    for error in (over_limit, raw.value):
        assert not is_transient(error)
        assert is_refusal(error)
    await db.ping()  # the pool's connections are fine


async def test_a_refusal_is_postgresql_refusing_the_statement_not_an_outage(
    db: Database, database_url: str
) -> None:
    """`is_refusal`: the statement itself is refused, and would be again: PostgreSQL answered
    with an SQLSTATE that is not transient (a data exception, class 22; a constraint, 23), or
    psycopg refused its data before sending it (a NUL in a string); wrapped by SQLAlchemy or
    not. A statement or lock timeout, a cut connection, a socket error are not."""
    bad_number = await failure(db, "SELECT 'x'::integer")
    assert isinstance(bad_number, exc.DataError)
    assert isinstance(bad_number.orig, psycopg.errors.InvalidTextRepresentation)  # 22P02
    duplicate = await failure(
        db,
        "CREATE TEMPORARY TABLE sb_dup (n int PRIMARY KEY)",
        "INSERT INTO sb_dup VALUES (1), (1)",
    )
    assert isinstance(duplicate.orig, psycopg.errors.UniqueViolation)  # 23505
    async with await connect(database_url) as conn:
        with pytest.raises(psycopg.DataError) as nul:
            await conn.execute("SELECT %s::text", ("a\x00b",))
    assert nul.value.sqlstate is None  # psycopg's own: never sent
    refused: list[BaseException | None] = [bad_number, bad_number.orig, duplicate, nul.value]
    for error in refused:
        assert error is not None
        assert is_refusal(error)
        assert not is_transient(error)
    timed_out = await failure(db, "SET LOCAL statement_timeout = 10", "SELECT pg_sleep(5)")
    others: list[BaseException | None] = [timed_out, timed_out.orig, OSError("cut"), TimeoutError()]
    for other in others:
        assert other is not None
        assert not is_refusal(other)
    await db.ping()


async def test_a_statement_or_lock_timeout_is_transient(db: Database, database_url: str) -> None:
    """A statement timeout (57014, the server's `DB_STATEMENT_TIMEOUT_S`) or a lock timeout
    (55P03) is contention or a stalled server, not the statement: sent again it may succeed,
    like a deadlock (40P01), so it is retried, not refused."""
    timed_out = await failure(db, "SET LOCAL statement_timeout = 10", "SELECT pg_sleep(5)")
    assert isinstance(timed_out.orig, psycopg.errors.QueryCanceled)
    table = f"sb_locked_{uuid.uuid4().hex}"
    async with await connect(database_url) as conn:
        await conn.execute(f"CREATE TABLE {table} (n int)")  # type: ignore[arg-type]
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {table}")  # type: ignore[arg-type]
                not_available = await failure(
                    db, "SET LOCAL lock_timeout = 10", f"SELECT * FROM {table}"
                )
        finally:
            await conn.execute(f"DROP TABLE {table}")  # type: ignore[arg-type]
    assert isinstance(not_available.orig, psycopg.errors.LockNotAvailable)
    for error in (timed_out, not_available):
        assert isinstance(error.orig, psycopg.OperationalError)
        assert is_transient(error)
        assert is_transient(error.orig)  # the driver's own, unwrapped
    await db.ping()


async def test_a_connection_the_server_cuts_under_a_statement_is_transient(
    db: Database, database_url: str
) -> None:
    async with db.engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        terminate(database_url, pid)
        with pytest.raises(exc.DBAPIError) as cut:
            await conn.execute(text("SELECT 1"))
    assert isinstance(cut.value.orig, psycopg.errors.AdminShutdown)  # 57P01, with a SQLSTATE
    assert is_transient(cut.value)
    assert not is_refusal(cut.value)


async def test_a_checkout_finding_each_connection_cut_is_transient(
    db: Database, database_url: str
) -> None:
    """While every connection is being cut (a restart, an operator terminating them all), a
    checkout can find the pooled connection cut and its replacement cut too: SQLAlchemy gives
    up with its own "This connection is closed", which is an outage like the others."""
    await _cut_the_pooled_connection(db, database_url)

    def cut_at_once(dbapi_connection: Any, record: Any) -> None:
        new = dbapi_connection.driver_connection
        terminate(database_url, new.info.backend_pid)
        deadline = time.monotonic() + 5
        while not is_cut(new):
            assert time.monotonic() < deadline
            time.sleep(0.01)

    pool = db.engine.sync_engine.pool
    event.listen(pool, "connect", cut_at_once)
    try:
        with pytest.raises(exc.InvalidRequestError) as closed:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        event.remove(pool, "connect", cut_at_once)
    assert str(closed.value) == "This connection is closed"
    assert is_transient(closed.value)
    async with db.engine.connect() as conn:  # once connections last again, all is well
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
