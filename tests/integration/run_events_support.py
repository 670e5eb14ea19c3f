"""Helpers of the run event log tests: a database, a listening log, runs to append to."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from server.runs.events import RunEventLog, open_run_event_log
from stores.sql.database import Database, open_database
from stores.sql.runs import RunToken

Event = tuple[int, str, Any]


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, pool_size=4) as db:
        yield db


@pytest.fixture
async def log(database: Database, database_url: str) -> AsyncIterator[RunEventLog]:
    """A listening event log, as one server process has it."""
    async with open_run_event_log(database, url=database_url, poll_s=0.2) as events:
        yield events


async def new_run(db: Database, *, status: str = "running") -> RunToken:
    """A row in `runs` (events belong to a run), claimed by its first attempt."""
    async with db.engine.begin() as conn:
        result = await conn.execute(
            text("INSERT INTO runs (status, attempt) VALUES (:status, 1) RETURNING id"),
            {"status": status},
        )
        run_id: uuid.UUID = result.scalar_one()
        return RunToken(run_id, 1)


async def set_status(db: Database, run: RunToken, status: str) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE runs SET status = :status WHERE id = :id"),
            {"status": status, "id": run.run_id},
        )


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [item async for item in events]


async def first_event(events: AsyncIterator[Event]) -> Event:
    async for item in events:
        return item
    raise AssertionError("the stream ended without an event")
