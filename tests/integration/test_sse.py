"""The SSE writer over HTTP: ids, Location, Last-Event-ID replay, heartbeats, the mode filter."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Header, Request
from langgraph_sdk import get_client

from server.errors import install_error_handlers
from server.runs.events import RunEventLog, open_run_event_log
from server.sse import (
    EventStream,
    encode_comment,
    encode_event,
    event_in_modes,
    follow_run,
    parse_last_event_id,
    run_headers,
    sse_response,
)
from stores.errors import InvalidInputError
from stores.sql.database import Database, open_database
from tests.integration.run_events_support import Event, database, log, new_run
from tests.support import free_port

__all__ = ["database", "log"]  # fixtures


def test_a_join_filter_maps_events_back_to_the_modes_that_made_them() -> None:
    assert event_in_modes("messages", ["messages-tuple"])
    assert not event_in_modes("messages", ["messages"])
    assert event_in_modes("messages/partial", ["messages"])
    assert event_in_modes("messages/metadata", ["messages", "values"])
    assert event_in_modes("updates|child:1", ["updates"])
    assert not event_in_modes("updates|child:1", ["values"])
    assert event_in_modes("metadata", ["values"])
    assert event_in_modes("end", [])
    assert event_in_modes("error", ["custom"])


def test_last_event_id_must_be_a_whole_number_or_the_start() -> None:
    assert parse_last_event_id(None) is None
    assert parse_last_event_id("") is None
    assert parse_last_event_id(" 7 ") == 7
    assert parse_last_event_id("-") == 0  # langgraph-api: from the start
    assert parse_last_event_id("-1") == 0  # useStream's joinStream
    for bad in ("abc", "1.5", "-2", "--"):
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
    ) -> EventStream:
        events: RunEventLog = request.app.state.events
        return sse_response(
            follow_run(events, run_id, after_seq=parse_last_event_id(last_event_id)),
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
    thread_id, run = uuid.uuid4(), await new_run(database)
    path = f"/threads/{thread_id}/runs/{run.run_id}/stream"
    await log.append(run, "metadata", {"run_id": str(run.run_id), "attempt": 1})
    await log.append(run, "values", {"n": 1})
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as client:
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["location"] == path
            assert response.headers["content-location"] == f"/threads/{thread_id}/runs/{run.run_id}"
            seen, _ = await read_sse(response, stop_after=2)
        # The connection is gone; the run goes on.
        await log.append(run, "values", {"n": 2})
        await log.append(run, "values", {"n": 3})
        await log.append(run, "end", None)
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
    parts = [
        p async for p in sdk.runs.join_stream(str(thread_id), str(run.run_id), last_event_id="4")
    ]
    assert [(p.event, p.id) for p in parts] == [("end", "5")]


async def test_the_sdk_resumes_a_broken_stream_from_location_with_last_event_id(
    log: RunEventLog, database: Database, stream_url: str
) -> None:
    thread_id, run = uuid.uuid4(), await new_run(database)
    await log.append(run, "metadata", {"run_id": str(run.run_id), "attempt": 1})
    for n in range(3):
        await log.append(run, "values", {"n": n})
    await log.append(run, "end", None)
    sdk = get_client(url=stream_url)
    parts = [p async for p in sdk.http.stream(f"/flaky/{thread_id}/{run.run_id}", "GET")]
    assert [p.id for p in parts] == ["1", "2", "3", "4", "5"]  # nothing lost, nothing twice
    assert [p.event for p in parts] == ["metadata", "values", "values", "values", "end"]
    assert parts[2].data == {"n": 1}


async def test_a_quiet_run_gets_heartbeat_comments(
    log: RunEventLog, database: Database, stream_url: str
) -> None:
    thread_id, run = uuid.uuid4(), await new_run(database)
    await log.append(run, "metadata", {"run_id": str(run.run_id), "attempt": 1})
    path = f"/threads/{thread_id}/runs/{run.run_id}/stream"
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
                    await log.append(run, "end", None)
            elif line.startswith("event:"):
                names.append(line.partition(":")[2].strip())
    assert heartbeats >= 2
    assert names == ["metadata", "end"]


async def test_a_bad_last_event_id_is_refused_naming_the_header(
    database: Database, stream_url: str
) -> None:
    run = await new_run(database)
    async with httpx.AsyncClient(base_url=stream_url, timeout=10) as client:
        response = await client.get(
            f"/threads/{uuid.uuid4()}/runs/{run.run_id}/stream", headers={"Last-Event-ID": "x"}
        )
    assert response.status_code == 422
    assert response.json()["field"] == "Last-Event-ID"


# --- The SSE response itself (server/sse.py's EventStream), over real HTTP ---------------


def test_an_event_is_id_event_and_one_data_line_per_line() -> None:
    event = encode_event(3, "values", b'{"n":1}')
    assert event == b'id: 3\r\nevent: values\r\ndata: {"n":1}\r\n\r\n'
    assert encode_event(None, "end", b"null") == b"event: end\r\ndata: null\r\n\r\n"
    assert encode_event("7-2", "e\nx", b"a\nb\r\nc") == (
        b"id: 7-2\r\nevent: ex\r\ndata: a\r\ndata: b\r\ndata: c\r\n\r\n"
    )
    assert encode_comment("heartbeat") == b": heartbeat\r\n\r\n"


class Probe:
    """What the stream app's event iterators saw, for the test thread."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.closed = threading.Event()


def probe_app(probe: Probe) -> FastAPI:
    app = FastAPI()

    async def endless() -> AsyncIterator[Event]:
        probe.started.set()
        try:
            yield 1, "metadata", {"run_id": "r", "note": "two\nlines"}
            await asyncio.Event().wait()  # a run that never says more
            yield 2, "values", {}
        finally:
            probe.closed.set()

    async def short() -> AsyncIterator[Event]:
        yield 1, "values", {"text": "é"}
        yield 2, "end", None

    @app.api_route("/endless", methods=["GET", "HEAD"])
    async def endless_route() -> EventStream:
        return sse_response(endless(), headers={"Location": "/endless"}, heartbeat_s=60)

    @app.get("/short")
    async def short_route() -> EventStream:
        return sse_response(short(), headers=run_headers(RUN, thread_id=THREAD), heartbeat_s=60)

    return app


RUN, THREAD = uuid.UUID(int=1), uuid.UUID(int=2)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def probe_url(probe: Probe) -> Iterator[str]:
    with serve(probe_app(probe)) as url:
        yield url


async def test_the_wire_bytes_and_headers_are_what_sse_clients_expect(probe_url: str) -> None:
    async with httpx.AsyncClient(base_url=probe_url, timeout=10) as client:
        response = await client.get("/short")
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["content-location"] == f"/threads/{THREAD}/runs/{RUN}"
    wire = 'id: 1\r\nevent: values\r\ndata: {"text":"é"}\r\n\r\n'
    wire += "id: 2\r\nevent: end\r\ndata: null\r\n\r\n"
    assert response.content == wire.encode()
    sdk = get_client(url=probe_url)
    parts = [p async for p in sdk.http.stream("/short", "GET")]
    assert [(p.id, p.event, p.data) for p in parts] == [
        ("1", "values", {"text": "é"}),
        ("2", "end", None),
    ]


async def test_a_client_that_leaves_ends_the_events_at_once(probe: Probe, probe_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=probe_url, timeout=10) as client,
        client.stream("GET", "/endless") as response,
    ):
        events, _ = await read_sse(response, stop_after=1)
    assert events == [
        {"id": "1", "event": "metadata", "data": '{"run_id":"r","note":"two\\nlines"}'}
    ]
    # The iterator was waiting for an event that never comes: the disconnect cancelled it.
    assert await asyncio.to_thread(probe.closed.wait, 10)


async def test_head_answers_the_headers_without_starting_the_events(
    probe: Probe, probe_url: str
) -> None:
    async with httpx.AsyncClient(base_url=probe_url, timeout=10) as client:
        response = await client.head("/endless")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""
    assert not probe.started.is_set()


class ExitingServer:
    """Stands for the uvicorn server whose SIGTERM handler is installed: it is shutting down."""

    should_exit = True

    def handle_exit(self, sig: int, frame: object) -> None:  # pragma: no cover - never called
        pass


async def test_open_streams_end_when_the_server_shuts_down(probe: Probe, probe_url: str) -> None:
    seen: list[str] = []
    async with (
        httpx.AsyncClient(base_url=probe_url, timeout=10) as client,
        client.stream("GET", "/endless") as response,
    ):
        lines = response.aiter_lines()
        async for line in lines:
            seen.append(line)
            if not line:  # the first event is in
                break
        previous = signal.signal(signal.SIGTERM, ExitingServer().handle_exit)
        try:
            # The connection ends (uvicorn closes an unfinished response) and the events'
            # `finally` ran: uvicorn would otherwise wait for this stream before stopping.
            with contextlib.suppress(httpx.HTTPError):
                async for line in lines:
                    seen.append(line)
            assert await asyncio.to_thread(probe.closed.wait, 10)
        finally:
            signal.signal(signal.SIGTERM, previous)
    assert [line for line in seen if line.startswith("event:")] == ["event: metadata"]
