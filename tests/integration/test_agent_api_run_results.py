"""Run results over HTTP (`/runs/wait`, `/join`): a client that leaves is noticed at once, not
at the next keep-alive newline (a server whose newline comes every 60 s), whichever ASGI spec
version the server reports: uvicorn says 2.3; a server saying 2.4 (a `send` on a closed
connection raises) made Starlette's `StreamingResponse` stop listening for the disconnect."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from starlette.types import ASGIApp, Receive, Scope, Send

from server.app import create_app
from tests.support import TEST_GRAPHS, make_settings, running_server

# s2 never ends on the run's first attempt: only a cancel ends the run.
STALL = {"configurable": {"stall_at": "s2"}}


def reporting_spec(app: ASGIApp, version: str) -> ASGIApp:
    """`app` served as by a server that reports ASGI spec `version` in each scope."""

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "asgi": {**scope.get("asgi", {}), "spec_version": version}}
        await app(scope, receive, send)

    return served


@pytest.fixture(scope="module", params=["uvicorn", "2.4"])
def server_url(database_url: str, data_dir: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A server whose keep-alive newlines (and SSE heartbeats) come every 60 s: uvicorn as it
    is, and the same app told the server speaks ASGI spec 2.4."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        sse_heartbeat_s=60.0,
        run_poll_s=0.3,
    )
    app: Any = create_app(settings)
    if request.param != "uvicorn":
        app = reporting_spec(app, request.param)
    with running_server(settings, app=app) as url:
        yield url


@pytest.fixture(scope="module")
def steps(database_url: str, server_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO agents (graph_id, name) VALUES ('steps', %s) RETURNING id",
            (f"steps {uuid.uuid4().hex[:6]}",),
        ).fetchone()
    assert row is not None
    return str(row[0])


async def _leave_while_waiting(server_url: str, path: str, body: dict[str, Any] | None) -> str:
    """Open `path` (POST with `body`, else GET), read its headers, leave while the run goes
    on; the run's id."""
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        request = http.build_request("POST" if body else "GET", path, json=body)
        response = await http.send(request, stream=True)
        assert response.status_code == 200
        run_id = response.headers["content-location"].rsplit("/", 1)[-1]
        await asyncio.sleep(0.5)  # the run is under way, stalled at s2
        await response.aclose()  # the connection is closed mid-answer
    return run_id


async def _status_within(client: Any, thread_id: str, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str((await client.runs.get(thread_id, run_id))["status"])
        if status not in ("pending", "running") or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def test_a_wait_whose_client_leaves_cancels_its_run_at_once(
    server_url: str, steps: str
) -> None:
    thread_id = str(uuid.uuid4())
    body = {
        "assistant_id": steps,
        "input": {"log": []},
        "config": STALL,
        "if_not_exists": "create",
        "on_disconnect": "cancel",
    }
    run_id = await _leave_while_waiting(server_url, f"/threads/{thread_id}/runs/wait", body)
    client: Any = get_client(url=server_url)
    # Well before the 60 s newline that would have been the first write to fail.
    assert await _status_within(client, thread_id, run_id, 10.0) == "interrupted"


async def test_a_join_whose_client_leaves_cancels_the_run_it_was_asked_to(
    server_url: str, steps: str
) -> None:
    client: Any = get_client(url=server_url)
    thread_id = str(uuid.uuid4())
    run = await client.runs.create(
        thread_id, steps, input={"log": []}, config=STALL, if_not_exists="create"
    )
    path = f"/threads/{thread_id}/runs/{run['run_id']}/join?cancel_on_disconnect=true"
    await _leave_while_waiting(server_url, path, None)
    assert await _status_within(client, thread_id, run["run_id"], 10.0) == "interrupted"


async def test_a_wait_whose_client_stays_gets_the_values(server_url: str, steps: str) -> None:
    client: Any = get_client(url=server_url)
    result = await client.runs.wait(
        str(uuid.uuid4()), steps, input={"log": ["start"]}, if_not_exists="create"
    )
    assert result == {"log": ["start", "s1", "s2", "s3", "s4"]}
