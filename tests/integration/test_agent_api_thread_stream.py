"""`GET /threads/{id}/stream` over HTTP with langgraph-sdk: every run of a thread, its state
updates, the three stream modes, `Last-Event-ID` (`-` from the start), two servers,
heartbeats and disconnects."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from langgraph_sdk import get_client

from server.app import create_app
from server.settings import Settings
from tests.support import TEST_GRAPHS, make_settings, running_server

Part = tuple[str | None, str, Any]
SLOW = {"configurable": {"delay": 0.3}}


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path) -> Settings:
    """The server that runs the runs (a heartbeat every 0.2 s)."""
    return make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        sse_heartbeat_s=0.2,
        langgraph_config=TEST_GRAPHS,
    )


@pytest.fixture(scope="module")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture(scope="module")
def server_url(settings: Settings, app: FastAPI) -> Iterator[str]:
    with running_server(settings, app=app) as url:
        yield url


def runs_done(count: int) -> Callable[[list[Part]], bool]:
    """Stop once `count` runs said `run_done`."""

    def done(parts: list[Part]) -> bool:
        ends = [p for p in parts if p[1] == "metadata" and p[2].get("status") == "run_done"]
        return len(ends) >= count

    return done


def reaches(last: Part) -> Callable[[list[Part]], bool]:
    """Stop at the event `last`."""

    def done(parts: list[Part]) -> bool:
        return parts[-1] == last

    return done


async def take(
    joining: Awaitable[AsyncIterator[Any]],
    until: Callable[[list[Part]], bool],
    *,
    timeout_s: float = 60,
) -> list[Part]:
    """The parts of a (never-ending) thread stream until `until(parts)` holds."""
    parts: list[Part] = []
    async with asyncio.timeout(timeout_s):
        stream = cast(AsyncGenerator[Any, None], await joining)
        async with aclosing(stream) as parts_stream:
            async for part in parts_stream:
                parts.append((part.id, part.event, part.data))
                if until(parts):
                    break
    return parts


def order(event_id: str | None) -> tuple[int, int]:
    assert event_id is not None
    place, _, event = event_id.partition("-")
    return int(place), int(event)


async def new_thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


async def test_the_thread_stream_carries_every_run_and_replays_from_the_start(
    server_url: str,
) -> None:
    client: Any = get_client(url=server_url)
    thread_id = await new_thread(client)
    joined = asyncio.create_task(
        take(client.threads.join_stream(thread_id, last_event_id="-"), runs_done(2))
    )
    first = await client.runs.create(
        thread_id, "counter", input={"count": 0}, stream_mode=["values", "updates"]
    )
    await client.runs.join(thread_id, first["run_id"])
    second = await client.runs.create(thread_id, "counter", input={"count": 5})
    await client.runs.join(thread_id, second["run_id"])
    parts = await joined

    ids = [order(p[0]) for p in parts]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    starts = [p for p in parts if p[1] == "metadata" and "attempt" in p[2]]
    assert [p[2]["run_id"] for p in starts] == [first["run_id"], second["run_id"]]
    assert parts[0] == starts[0]
    # A run's events as its own stream has them (the thread stream's `run_done` stands for
    # the run stream's `end`), in the modes the run asked for.
    own = [(p.event, p.data) async for p in client.runs.join_stream(thread_id, first["run_id"])]
    boundary = parts.index(starts[1])
    assert [(p[1], p[2]) for p in parts[:boundary]] == [
        *own[:-1],
        ("metadata", {"status": "run_done", "run_id": first["run_id"]}),
    ]
    assert {p[1] for p in parts[boundary:]} == {"metadata", "values"}
    assert parts[-2][2]["count"] == 116  # 5 + 1 + 10 + 100

    # `-` replays it all; an id resumes right after that event, from any event.
    replay = await take(client.threads.join_stream(thread_id, last_event_id="-"), runs_done(2))
    assert replay == parts
    for middle in (1, boundary - 1, boundary, len(parts) - 2):
        rest = await take(
            client.threads.join_stream(thread_id, last_event_id=parts[middle][0]),
            reaches(parts[-1]),
        )
        assert rest == parts[middle + 1 :]


async def test_lifecycle_and_state_update_modes_keep_only_their_events(server_url: str) -> None:
    client: Any = get_client(url=server_url)
    thread_id = await new_thread(client)
    await client.runs.wait(thread_id, "counter", input={"count": 0})
    await client.threads.update_state(thread_id, {"count": 1000}, as_node="finish")
    run = await client.runs.create(
        thread_id, "counter", input={}, stream_mode=["updates", "custom"]
    )
    await client.runs.join(thread_id, run["run_id"])
    parts = await take(
        client.threads.join_stream(
            thread_id, last_event_id="-", stream_mode=["lifecycle", "state_update"]
        ),
        runs_done(2),
    )
    assert [p[1] for p in parts] == ["metadata", "metadata", "state_update", "metadata", "metadata"]
    assert [set(p[2]) for p in parts if p[1] == "metadata"] == [
        {"run_id", "attempt"},
        {"run_id", "status"},
    ] * 2
    update = parts[2][2]
    assert update["thread_id"] == thread_id
    assert update["state"]["values"]["count"] == 1000
    assert update["state"]["metadata"]["source"] == "update"
    assert update["state"]["checkpoint"]["checkpoint_id"]

    # langgraph-api's own parameter, `stream_modes` (comma-separated), works the same way.
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=30) as http,
        http.stream(
            "GET",
            f"/threads/{thread_id}/stream",
            params={"stream_modes": "state_update"},
            headers={"Last-Event-ID": "-"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                assert line == "event: state_update"
                break


async def test_a_failed_run_ends_with_its_error_then_run_done(server_url: str) -> None:
    client: Any = get_client(url=server_url)
    thread_id = await new_thread(client)
    run = await client.runs.create(
        thread_id, "steps", input={"log": []}, config={"configurable": {"fail_at": "s2"}}
    )
    await client.runs.join(thread_id, run["run_id"])
    parts = await take(client.threads.join_stream(thread_id, last_event_id="-"), runs_done(1))
    assert [p[1] for p in parts[-2:]] == ["error", "metadata"]
    assert parts[-2][2]["error"] == "ValueError"
    assert parts[-1][2] == {"status": "run_done", "run_id": run["run_id"]}
    assert order(parts[-1][0]) == (order(parts[-2][0])[0], order(parts[-2][0])[1] + 1)
    # Resuming between the two still gets the `run_done`.
    rest = await take(
        client.threads.join_stream(thread_id, last_event_id=parts[-2][0]), runs_done(1)
    )
    assert rest == parts[-1:]


async def test_a_join_without_an_id_gets_only_what_comes_next(server_url: str) -> None:
    client: Any = get_client(url=server_url)
    thread_id = await new_thread(client)
    earlier = await client.runs.wait(thread_id, "counter", input={"count": 0})
    assert earlier["count"] == 111
    run = await client.runs.create(thread_id, "steps", input={"log": []}, config=SLOW)
    deadline = time.monotonic() + 30
    while (await client.runs.get(thread_id, run["run_id"]))["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    parts = await take(client.threads.join_stream(thread_id), runs_done(1))
    whole = [
        (p.id, p.event, p.data) async for p in client.runs.join_stream(thread_id, run["run_id"])
    ]
    assert all(p[2].get("run_id") in (None, run["run_id"]) for p in parts if p[1] == "metadata")
    assert parts[-1][2] == {"status": "run_done", "run_id": run["run_id"]}
    # From the middle of the running run on: the tail of its events.
    shown = [(p[1], p[2]) for p in parts[:-1]]
    assert shown == [(p[1], p[2]) for p in whole[len(whole) - 1 - len(shown) : -1]]


async def test_another_server_follows_and_resumes_without_gaps_or_duplicates(
    server_url: str, follower_url: str
) -> None:
    runner: Any = get_client(url=server_url)
    follower: Any = get_client(url=follower_url)
    thread_id = await new_thread(runner)
    live = asyncio.create_task(
        take(follower.threads.join_stream(thread_id, last_event_id="-"), runs_done(2))
    )
    for _ in range(2):
        run = await runner.runs.create(
            thread_id, "steps", input={"log": []}, stream_mode=["values", "updates"]
        )
        await runner.runs.join(thread_id, run["run_id"])
    remote = await live
    local = await take(runner.threads.join_stream(thread_id, last_event_id="-"), runs_done(2))
    assert remote == local
    middle = len(local) // 2
    rest = await take(
        follower.threads.join_stream(thread_id, last_event_id=local[middle][0]), runs_done(1)
    )
    assert rest == local[middle + 1 :]


async def test_an_idle_stream_gets_heartbeats_and_a_leaving_client_frees_it(
    server_url: str, app: FastAPI
) -> None:
    client: Any = get_client(url=server_url)
    thread_id = await new_thread(client)
    events = app.state.run_events
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=30) as http,
        http.stream("GET", f"/threads/{thread_id}/stream") as response,
    ):
        assert response.status_code == 200
        beats = 0
        async for line in response.aiter_lines():
            if line.startswith(": heartbeat"):
                beats += 1
                if beats == 2:
                    break
        assert events.followers(uuid.UUID(thread_id)) == 1
    deadline = time.monotonic() + 10
    while events.followers(uuid.UUID(thread_id)):
        assert time.monotonic() < deadline, "the stream outlived its client"
        await asyncio.sleep(0.05)


async def test_a_deleted_thread_ends_its_stream(server_url: str) -> None:
    client: Any = get_client(url=server_url)
    thread_id = await new_thread(client)
    stream = asyncio.create_task(take(client.threads.join_stream(thread_id), lambda _: False))
    await asyncio.sleep(0.3)
    await client.threads.delete(thread_id)
    assert await asyncio.wait_for(stream, 30) == []


async def test_bad_joins_are_refused_with_the_field_named(server_url: str) -> None:
    client: Any = get_client(url=server_url)
    thread_id = await new_thread(client)
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        missing = await http.get(f"/threads/{uuid.uuid4()}/stream")
        bad_id = await http.get(f"/threads/{thread_id}/stream", headers={"Last-Event-ID": "x"})
        bad_mode = await http.get(f"/threads/{thread_id}/stream?stream_mode=values")
        bad_modes = await http.get(
            f"/threads/{thread_id}/stream", params={"stream_modes": "lifecycle,everything"}
        )
        too_many = await http.get(
            f"/threads/{thread_id}/stream", params={"stream_mode": ["lifecycle"] * 11}
        )
    assert missing.status_code == 404
    for response, field in (
        (bad_id, "Last-Event-ID"),
        (bad_mode, "stream_mode"),
        (bad_modes, "stream_modes"),
        (too_many, "stream_mode"),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
