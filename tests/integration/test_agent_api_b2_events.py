"""The run event log: append/follow here and across connections, replay, prune, SSE over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI, Header, Request
from langgraph_sdk import get_client
from sqlalchemy import text
from sse_starlette import EventSourceResponse

from server.errors import install_error_handlers
from server.runs.events import (
    RunEventLog,
    open_run_event_log,
    parse_last_event_id,
    run_headers,
    sse_response,
)
from stores.errors import InvalidInputError
from stores.sql.database import Database, open_database
from tests.support import free_port

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


async def new_run(db: Database, *, status: str = "running") -> uuid.UUID:
    """A row in `runs` (events belong to a run)."""
    async with db.engine.begin() as conn:
        result = await conn.execute(
            text("INSERT INTO runs (status) VALUES (:status) RETURNING id"), {"status": status}
        )
        run_id: uuid.UUID = result.scalar_one()
        return run_id


async def set_status(db: Database, run_id: uuid.UUID, status: str) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE runs SET status = :status WHERE id = :id"),
            {"status": status, "id": run_id},
        )


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [item async for item in events]


async def first_event(events: AsyncIterator[Event]) -> Event:
    async for item in events:
        return item
    raise AssertionError("the stream ended without an event")


async def test_seq_counts_from_one_in_each_run(log: RunEventLog, database: Database) -> None:
    first, second = await new_run(database), await new_run(database)
    assert [await log.append(first, "values", {"n": n}) for n in range(3)] == [1, 2, 3]
    assert await log.append(second, "values", {"n": 0}) == 1
    await log.flush()
    assert await log.last_seq(first) == 3
    assert await log.events_after(first, 1) == [(2, "values", {"n": 1}), (3, "values", {"n": 2})]


async def test_an_event_the_database_refuses_does_not_hold_up_other_runs(
    log: RunEventLog, database: Database
) -> None:
    gone, run_id = uuid.uuid4(), await new_run(database)  # `gone`: no such run (deleted)
    await log.append(gone, "values", {"n": 1})
    await log.append(run_id, "values", {"n": 1})
    assert await asyncio.wait_for(log.append(run_id, "end", None), 10) == 2
    assert await log.events_after(gone) == []
    assert [name for _, name, _ in await log.events_after(run_id)] == ["values", "end"]


async def test_a_deeply_nested_subgraph_event_name_is_stored_whole(
    log: RunEventLog, database: Database
) -> None:
    run_id = await new_run(database)
    name = "values|" + "|".join(f"level{n}:{uuid.uuid4()}" for n in range(6))
    assert len(name) > 200
    await log.append(run_id, name, {"deep": True})
    await log.append(run_id, "end", None)
    assert (await log.events_after(run_id))[0][1] == name


async def test_the_log_recovers_when_its_database_connections_are_cut(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    run_id = await new_run(database)
    await log.append(run_id, "values", {"n": 1})
    await log.flush()
    follower = asyncio.create_task(collect(log.follow(run_id)))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )  # the writer's, the listener's and the pool's connections all go
    await log.append(run_id, "values", {"n": 2})
    assert await asyncio.wait_for(log.append(run_id, "end", None), 20) == 3
    events = await asyncio.wait_for(follower, 20)
    assert [seq for seq, _, _ in events] == [1, 2, 3]


async def test_another_process_taking_over_a_run_continues_its_numbering(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    run_id = await new_run(database)
    async with open_run_event_log(database, url=database_url) as first:
        assert [await first.append(run_id, "values", {"n": n}) for n in range(2)] == [1, 2]
    # Closing stored what was queued; a process resuming the run numbers on from there.
    async with open_run_event_log(database, url=database_url) as second:
        assert await second.append(run_id, "metadata", {"attempt": 2}) == 3
        assert await second.append(run_id, "end", None) == 4
    assert [seq for seq, _, _ in await log.events_after(run_id)] == [1, 2, 3, 4]


async def test_follow_replays_stored_events_then_live_ones_until_end(
    log: RunEventLog, database: Database
) -> None:
    run_id = await new_run(database)
    await log.append(run_id, "metadata", {"run_id": str(run_id), "attempt": 1})
    follower = asyncio.create_task(collect(log.follow(run_id)))
    for n in range(3):
        await log.append(run_id, "values", {"n": n})
    await log.append(run_id, "end", None)
    await log.append(run_id, "values", {"n": "after the end"})
    events = await asyncio.wait_for(follower, 10)
    assert [seq for seq, _, _ in events] == [1, 2, 3, 4, 5]
    assert [name for _, name, _ in events] == ["metadata", "values", "values", "values", "end"]


async def test_a_follower_in_another_process_gets_events_through_notify(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    run_id = await new_run(database)
    # Another "process": its own pool and LISTEN connection; it polls only every 60 s, so
    # events reaching it in time came through NOTIFY.
    async with (
        open_database(database_url, pool_size=2) as other_db,
        open_run_event_log(other_db, url=database_url, poll_s=60) as other,
    ):
        follower = asyncio.create_task(collect(other.follow(run_id)))
        first = asyncio.create_task(first_event(other.follow(run_id)))
        await log.append(run_id, "metadata", {"run_id": str(run_id)})
        assert (await asyncio.wait_for(first, 10))[0] == 1
        for n in range(5):
            await log.append(run_id, "values", {"n": n})
        await log.append(run_id, "end", None)
        events = await asyncio.wait_for(follower, 10)
    assert [seq for seq, _, _ in events] == list(range(1, 8))
    assert events[3] == (4, "values", {"n": 2})


async def test_follow_after_a_seq_replays_only_later_events(
    log: RunEventLog, database: Database
) -> None:
    run_id = await new_run(database)
    for n in range(4):
        await log.append(run_id, "values", {"n": n})
    await log.append(run_id, "end", None)
    events = await asyncio.wait_for(collect(log.follow(run_id, after_seq=3)), 10)
    assert events == [(4, "values", {"n": 3}), (5, "end", None)]


async def test_follow_stops_at_an_error_event(log: RunEventLog, database: Database) -> None:
    run_id = await new_run(database)
    await log.append(run_id, "values", {})
    await log.append(run_id, "error", {"error": "ValueError", "message": "bad input"})
    events = await asyncio.wait_for(collect(log.follow(run_id)), 10)
    assert events[-1] == (2, "error", {"error": "ValueError", "message": "bad input"})


async def test_follow_ends_when_the_run_finished_without_an_end_event(
    log: RunEventLog, database: Database
) -> None:
    run_id = await new_run(database)
    await log.append(run_id, "values", {"n": 1})
    follower = asyncio.create_task(collect(log.follow(run_id)))
    await set_status(database, run_id, "error")  # e.g. its worker died and it was given up
    events = await asyncio.wait_for(follower, 10)
    assert events == [(1, "values", {"n": 1})]


async def test_prune_deletes_only_finished_runs_events_past_retention(
    log: RunEventLog, database: Database
) -> None:
    finished, running = await new_run(database), await new_run(database)
    for run_id in (finished, running):
        await log.append(run_id, "values", {})
        await log.append(run_id, "end", None)
    await set_status(database, finished, "success")
    assert await log.prune(keep_s=3600) == 0  # too recent
    assert await log.prune(keep_s=0) >= 2  # (other tests' finished runs go too)
    assert await log.events_after(finished) == []
    assert len(await log.events_after(running)) == 2  # still running: kept


async def test_the_opened_log_prunes_finished_runs_on_its_own(
    database: Database, database_url: str
) -> None:
    run_id = await new_run(database, status="success")
    async with open_run_event_log(
        database, url=database_url, retention_s=0, prune_every_s=0.05
    ) as events:
        await events.append(run_id, "end", None)
        deadline = time.monotonic() + 10
        while await events.events_after(run_id):
            assert time.monotonic() < deadline, "the finished run's events were not pruned"
            await asyncio.sleep(0.05)


def test_last_event_id_must_be_a_whole_number() -> None:
    assert parse_last_event_id(None) is None
    assert parse_last_event_id("") is None
    assert parse_last_event_id(" 7 ") == 7
    for bad in ("abc", "1.5", "-1"):
        with pytest.raises(InvalidInputError) as caught:
            parse_last_event_id(bad)
        assert caught.value.field == "Last-Event-ID"


# --- SSE over HTTP: sse_response mounted on a small app served by uvicorn -----------------


def stream_app(database_url: str, *, heartbeat_s: float) -> FastAPI:
    """An app that serves a run's events at the join-stream path langgraph-sdk uses."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_database(database_url, pool_size=4) as db,
            open_run_event_log(db, url=database_url, poll_s=0.5) as events,
        ):
            app.state.events = events
            yield

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/threads/{thread_id}/runs/{run_id}/stream")
    async def join(
        thread_id: uuid.UUID,
        run_id: uuid.UUID,
        request: Request,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        events: RunEventLog = request.app.state.events
        return sse_response(
            events.follow(run_id, after_seq=parse_last_event_id(last_event_id)),
            headers=run_headers(run_id, thread_id=thread_id),
            heartbeat_s=heartbeat_s,
        )

    @app.get("/flaky/{thread_id}/{run_id}")
    async def flaky(thread_id: uuid.UUID, run_id: uuid.UUID, request: Request) -> Any:
        """Sends two events, then the connection breaks; `Location` says where to rejoin."""
        events: RunEventLog = request.app.state.events

        async def two_then_break() -> AsyncIterator[Event]:
            sent = 0
            async for item in events.follow(run_id):
                yield item
                sent += 1
                if sent == 2:
                    raise ConnectionResetError("the connection broke")

        return sse_response(two_then_break(), headers=run_headers(run_id, thread_id=thread_id))

    return app


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the stream app did not start"
        assert time.monotonic() < deadline, "the stream app did not start in 30 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def stream_url(database_url: str) -> Iterator[str]:
    with serve(stream_app(database_url, heartbeat_s=0.2)) as url:
        yield url


async def read_sse(
    response: httpx.Response, *, stop_after: int | None = None
) -> tuple[list[dict[str, str]], list[str]]:
    """The events (id, event, data fields) and comment lines of an SSE response."""
    events: list[dict[str, str]] = []
    comments: list[str] = []
    current: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif not line:
            if current:
                events.append(current)
                current = {}
                if stop_after is not None and len(events) >= stop_after:
                    break
        else:
            name, _, value = line.partition(":")
            current[name] = value.strip()
    return events, comments


async def test_rejoining_with_last_event_id_replays_only_the_missed_events(
    log: RunEventLog, database: Database, stream_url: str
) -> None:
    thread_id, run_id = uuid.uuid4(), await new_run(database)
    path = f"/threads/{thread_id}/runs/{run_id}/stream"
    await log.append(run_id, "metadata", {"run_id": str(run_id), "attempt": 1})
    await log.append(run_id, "values", {"n": 1})
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as client:
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["location"] == path
            assert response.headers["content-location"] == f"/threads/{thread_id}/runs/{run_id}"
            seen, _ = await read_sse(response, stop_after=2)
        # The connection is gone; the run goes on.
        await log.append(run_id, "values", {"n": 2})
        await log.append(run_id, "values", {"n": 3})
        await log.append(run_id, "end", None)
        headers = {"Last-Event-ID": seen[-1]["id"]}
        async with client.stream("GET", path, headers=headers) as response:
            rest, _ = await read_sse(response)
    assert [(e["id"], e["event"]) for e in seen] == [("1", "metadata"), ("2", "values")]
    assert [(e["id"], e["event"], e["data"]) for e in rest] == [
        ("3", "values", '{"n":2}'),
        ("4", "values", '{"n":3}'),
        ("5", "end", "null"),
    ]
    # The SDK's join_stream sends the same header.
    sdk = get_client(url=stream_url)
    parts = [p async for p in sdk.runs.join_stream(str(thread_id), str(run_id), last_event_id="4")]
    assert [(p.event, p.id) for p in parts] == [("end", "5")]


async def test_the_sdk_resumes_a_broken_stream_from_location_with_last_event_id(
    log: RunEventLog, database: Database, stream_url: str
) -> None:
    thread_id, run_id = uuid.uuid4(), await new_run(database)
    await log.append(run_id, "metadata", {"run_id": str(run_id), "attempt": 1})
    for n in range(3):
        await log.append(run_id, "values", {"n": n})
    await log.append(run_id, "end", None)
    sdk = get_client(url=stream_url)
    parts = [p async for p in sdk.http.stream(f"/flaky/{thread_id}/{run_id}", "GET")]
    assert [p.id for p in parts] == ["1", "2", "3", "4", "5"]  # nothing lost, nothing twice
    assert [p.event for p in parts] == ["metadata", "values", "values", "values", "end"]
    assert parts[2].data == {"n": 1}


async def test_a_quiet_run_gets_heartbeat_comments(
    log: RunEventLog, database: Database, stream_url: str
) -> None:
    thread_id, run_id = uuid.uuid4(), await new_run(database)
    await log.append(run_id, "metadata", {"run_id": str(run_id), "attempt": 1})
    path = f"/threads/{thread_id}/runs/{run_id}/stream"
    heartbeats = 0
    names: list[str] = []
    async with (
        httpx.AsyncClient(base_url=stream_url, timeout=10) as client,
        client.stream("GET", path) as response,
    ):
        async for line in response.aiter_lines():
            if line == ": heartbeat":
                heartbeats += 1
                if heartbeats == 2:  # the run was quiet for two heartbeats: now it ends
                    await log.append(run_id, "end", None)
            elif line.startswith("event:"):
                names.append(line.partition(":")[2].strip())
    assert heartbeats >= 2
    assert names == ["metadata", "end"]


async def test_a_bad_last_event_id_is_refused_naming_the_header(
    database: Database, stream_url: str
) -> None:
    run_id = await new_run(database)
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as client:
        response = await client.get(
            f"/threads/{uuid.uuid4()}/runs/{run_id}/stream", headers={"Last-Event-ID": "x"}
        )
    assert response.status_code == 422
    assert response.json()["field"] == "Last-Event-ID"
