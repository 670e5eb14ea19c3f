"""A turn's transcript in SQL: written by the transaction that ends its run, all or nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from stores.sql import runs as run_store
from stores.sql import turns
from stores.sql.database import Database, open_database
from stores.sql.runs import RunToken
from tests.integration.test_sql_runs import claimed_twice

ROWS: list[dict[str, Any]] = [
    {"sender": "tool", "content": "4", "metadata": {"tool": "calculator", "args": {"x": "2+2"}}},
    {"sender": "agent", "content": "It is 4.", "metadata": {"usage": {"tokens": 3}}},
]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, pool_size=2) as database:
        yield database


async def finish_turn(
    db: Database,
    token: RunToken,
    rows: list[dict[str, Any]],
    *,
    write: run_store.FinishWrite | None = None,
) -> tuple[bool, list[uuid.UUID], run_store.FinishWrite | None]:
    """Finish the run as `token`'s attempt with `rows` as its transcript (or `write`, the
    statement of an earlier try); whether it finished, the rows' ids, the statement."""
    run = await run_store.get_run(db, token.run_id)
    assert run.thread_id is not None
    ids: list[uuid.UUID] = []
    if write is None:
        ids, write = turns.transcript_write(token, run.thread_id, rows, status="success")
    finished = await run_store.finish_run(
        db,
        token,
        status="success",
        output={"by": token.attempt},
        thread_status="idle",
        thread_values={},
        thread_interrupts={},
        also=(write,) if write is not None else (),
    )
    return finished, ids, write


async def transcript(db: Database, run_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """The messages of the run's conversation, in transcript order."""
    async with db.engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT m.id, m.sender, m.content, m.metadata FROM messages m"
                " JOIN runs r ON r.thread_id = m.conversation_id WHERE r.id = :id ORDER BY m.seq"
            ),
            {"id": run_id},
        )
        return [tuple(row) for row in result]


async def test_the_transcript_is_written_in_order_with_the_runs_end(db: Database) -> None:
    _, current = await claimed_twice(db)
    finished, ids, _ = await finish_turn(db, current, ROWS)
    assert finished
    assert await transcript(db, current.run_id) == [
        (ids[0], "tool", "4", ROWS[0]["metadata"]),
        (ids[1], "agent", "It is 4.", ROWS[1]["metadata"]),
    ]
    assert (await run_store.get_run(db, current.run_id)).status == "success"


async def test_a_stale_attempt_writes_no_transcript(db: Database) -> None:
    stale, current = await claimed_twice(db)
    finished, _, _ = await finish_turn(db, stale, ROWS)
    assert not finished
    assert await transcript(db, current.run_id) == []
    assert (await run_store.get_run(db, current.run_id)).status == "running"


async def test_a_finish_retried_after_its_commit_writes_the_transcript_once(
    db: Database,
) -> None:
    """The retry of a finish whose answer was lost sends the same statement (the same ids):
    the run is reported ended by this attempt, and its rows are not written twice."""
    _, current = await claimed_twice(db)
    finished, ids, write = await finish_turn(db, current, ROWS)
    assert finished
    again, _, _ = await finish_turn(db, current, ROWS, write=write)
    assert again
    assert [row[0] for row in await transcript(db, current.run_id)] == ids


async def test_a_refused_transcript_leaves_the_run_unfinished(db: Database) -> None:
    """The transcript and the run's end commit together: a row PostgreSQL refuses (a sender
    its CHECK does not allow) rolls the finish back with it."""
    _, current = await claimed_twice(db)
    bad = [ROWS[0], {"sender": "nobody", "content": "x", "metadata": {}}]
    with pytest.raises(psycopg.errors.CheckViolation):
        await finish_turn(db, current, bad)
    assert await transcript(db, current.run_id) == []
    assert (await run_store.get_run(db, current.run_id)).status == "running"
    finished, ids, _ = await finish_turn(db, current, ROWS)  # the connection is usable again
    assert finished
    assert [row[0] for row in await transcript(db, current.run_id)] == ids


async def test_a_turn_without_rows_finishes_without_a_statement(db: Database) -> None:
    _, current = await claimed_twice(db)
    run = await run_store.get_run(db, current.run_id)
    assert run.thread_id is not None
    assert turns.transcript_write(current, run.thread_id, [], status="error") == ([], None)
