"""Run streams over HTTP with langgraph-sdk: order, ids, headers, Last-Event-ID, two servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client

from tests.support import TEST_GRAPHS, make_settings, running_server

QUESTION: Any = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}
MODES: Any = ["values", "updates", "messages-tuple", "custom"]


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """The server that runs the runs (a token every 5 ms, a heartbeat every 0.1 s)."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        offline_token_delay_s=0.005,
        sse_heartbeat_s=0.1,
        langgraph_config=TEST_GRAPHS,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def assistant_id(database_url: str) -> str:
    """An agent of the chat graph that may use the calculator."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO agents (graph_id, name, tools) VALUES ('chat', %s, '[\"calculator\"]')"
            " RETURNING id",
            (f"chat {uuid.uuid4().hex[:6]}",),
        ).fetchone()
    assert row is not None
    return str(row[0])


async def parts_of(stream: AsyncIterator[Any]) -> list[tuple[str | None, str, Any]]:
    return [(part.id, part.event, part.data) async for part in stream]


async def test_a_run_stream_starts_with_metadata_ends_with_end_and_numbers_events(
    server_url: str, assistant_id: str
) -> None:
    client = get_client(url=server_url)
    parts = await parts_of(
        client.runs.stream(
            str(uuid.uuid4()),
            assistant_id,
            input=QUESTION,
            stream_mode=MODES,
            if_not_exists="create",
        )
    )
    assert parts[0][1] == "metadata"
    assert set(parts[0][2]) == {"run_id", "attempt"}
    assert parts[-1][1] == "end"
    assert [int(str(p[0])) for p in parts] == list(range(1, len(parts) + 1))
    names = {p[1] for p in parts}
    assert {"values", "updates", "messages", "custom"} <= names
    tokens = [p[2] for p in parts if p[1] == "messages" and p[2][1]["langgraph_node"] == "respond"]
    assert len(tokens) > 3
    answer = "".join(chunk["content"] for chunk, _ in tokens)
    final = [p[2] for p in parts if p[1] == "values"][-1]
    assert answer == final["answer"]
    assert "42" in answer


async def test_a_dropped_stream_is_resumed_with_last_event_id(
    server_url: str, assistant_id: str
) -> None:
    thread_id = str(uuid.uuid4())
    body = {
        "assistant_id": assistant_id,
        "input": QUESTION,
        "stream_mode": MODES,
        "if_not_exists": "create",
    }
    seen: list[tuple[str, str]] = []
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=30) as http,
        http.stream("POST", f"/threads/{thread_id}/runs/stream", json=body) as response,
    ):
        assert response.status_code == 200
        location = response.headers["location"]
        content_location = response.headers["content-location"]
        event_id = ""
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("event:"):
                seen.append((event_id or "?", line[6:].strip()))
            if len(seen) == 4:
                break  # the client goes away mid-run
    run_id = content_location.rsplit("/", 1)[-1]
    assert content_location == f"/threads/{thread_id}/runs/{run_id}"
    assert location == f"{content_location}/stream"
    client = get_client(url=server_url)
    rest = await parts_of(client.runs.join_stream(thread_id, run_id, last_event_id=seen[-1][0]))
    assert rest[0][0] == str(int(seen[-1][0]) + 1)  # nothing lost, nothing twice
    assert rest[-1][1] == "end"
    # A join without Last-Event-ID after the end replays the whole run, same ids and events.
    whole = await parts_of(client.runs.join_stream(thread_id, run_id))
    assert [(p[0], p[1]) for p in whole] == [
        *[(i, e) for i, e in seen],
        *[(p[0], p[1]) for p in rest],
    ]


async def test_another_server_follows_a_run_it_does_not_execute(
    server_url: str, follower_url: str, assistant_id: str
) -> None:
    runner, follower = get_client(url=server_url), get_client(url=follower_url)
    thread_id = str(uuid.uuid4())
    run = await runner.runs.create(
        thread_id, assistant_id, input=QUESTION, stream_mode=MODES, if_not_exists="create"
    )
    remote = await parts_of(follower.runs.join_stream(thread_id, run["run_id"]))
    local = await parts_of(runner.runs.join_stream(thread_id, run["run_id"]))
    assert remote == local
    assert remote[0][1] == "metadata"
    assert remote[-1][1] == "end"
    assert any(p[1] == "messages" for p in remote)


async def test_a_slow_run_gets_heartbeat_comments_between_its_events(
    server_url: str, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO agents (graph_id, name) VALUES ('steps', %s) RETURNING id",
            (f"steps {uuid.uuid4().hex[:6]}",),
        ).fetchone()
    assert row is not None
    body = {
        "assistant_id": str(row[0]),
        "input": {"log": []},
        "config": {"configurable": {"delay": 0.4}},  # each of the 4 steps takes 0.4 s
        "stream_mode": ["updates"],
        "if_not_exists": "create",
    }
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=30) as http,
        http.stream("POST", f"/threads/{uuid.uuid4()}/runs/stream", json=body) as response,
    ):
        async for line in response.aiter_lines():
            lines.append(line)
    events = [line[6:].strip() for line in lines if line.startswith("event:")]
    assert events[0] == "metadata"
    assert events[-1] == "end"
    assert events.count("updates") == 4
    first, last = lines.index("event: metadata"), lines.index("event: end")
    assert lines[first:last].count(": heartbeat") >= 4  # while the steps were working
