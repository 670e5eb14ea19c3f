"""A server killed in the middle of a /chat turn: another process resumes the turn's run."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

from tests.integration.chat_support import sse_events
from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.support import REPO_PROJECT, SWITCHBOARD, free_port, scratch_database, served_by


@contextlib.contextmanager
def serve(database_url: str, data_dir: Path, log: Path) -> Iterator[tuple[str, int]]:
    """`switchboard serve` in a process group of its own; yields its URL and pid."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "LANGGRAPH_CONFIG": str(REPO_PROJECT),
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "MIGRATE_ON_START": "false",
        "INGEST_SAMPLES_ON_START": "false",
        "OFFLINE_TOKEN_DELAY_S": "0.2",
        # Long enough that a loaded machine does not starve the renewals of the turn it runs
        # (a 2 s lease was lost mid-run under load); the restarted server waits it out.
        "RUN_LEASE_S": "10",
        "RUN_POLL_S": "0.5",
    }
    url = f"http://127.0.0.1:{port}"
    with served_by(
        [str(SWITCHBOARD), "serve"], cwd=Path.cwd(), env=env, log=log, url=url
    ) as server:
        yield url, server.pid


def run_status(database_url: str, run_id: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_turn_of_a_killed_server_is_resumed_by_another(pg_admin_url: str, tmp_path: Path) -> None:
    log = tmp_path / "servers.log"
    with scratch_database(pg_admin_url, "chat_crash") as url:
        with serve(url, tmp_path / "data", log) as (base, pid):
            with httpx.Client(base_url=base, timeout=60) as api:
                agent = create_agent(api, tools=["calculator"])
                conversation = create_conversation(api, create_user(api)["id"], agent["id"])
                body = {"conversation_id": conversation["id"], "message": "What is 6 * 7?"}
                with api.stream("POST", "/chat", json=body) as response:
                    lines = []
                    for line in response.iter_lines():
                        lines.append(line)
                        if line == "event: token":
                            os.killpg(pid, signal.SIGKILL)  # mid-answer, no clean-up
                            break
            metadata = dict(sse_events(httpx.Response(200, text="\n".join(lines) + "\n\n")))
            run_id = metadata["metadata"]["run_id"]
            assert run_status(url, run_id) == "running"
        with serve(url, tmp_path / "data", log) as (base, _):
            deadline = time.monotonic() + 300  # the lease lapses, then the turn is resumed
            while run_status(url, run_id) != "success":
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            with httpx.Client(base_url=base, timeout=60) as api:
                assert api.get(f"/conversations/{conversation['id']}").json()["status"] == "idle"
                again = api.post(
                    "/chat/invoke",
                    json={
                        "conversation_id": conversation["id"],
                        "message": "What did I ask before?",
                    },
                ).json()
                transcript = api.get(f"/conversations/{conversation['id']}/messages").json()
    assert again["status"] == "success"
    assert "What is 6 * 7?" in again["content"]
    # The resumed turn's tool call and answer are in the transcript, before the next question:
    # written from the run's results by the process that finished it.
    senders = [(m["sender"], m["metadata"].get("recovered", False)) for m in transcript["items"]]
    assert senders == [
        ("user", False),
        ("tool", False),
        ("agent", True),
        ("user", False),
        ("agent", False),
    ]
    tool, answer = transcript["items"][1], transcript["items"][2]
    assert (tool["metadata"]["tool"], tool["content"]) == ("calculator", "42")
    assert "42" in answer["content"]
    assert answer["metadata"]["tool_calls"][0]["name"] == "calculator"
