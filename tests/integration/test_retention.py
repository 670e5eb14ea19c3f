"""Retention: threads past their TTL (POST/PATCH /threads `ttl`, or the project's
`checkpointer.ttl.default_ttl`) are swept: `delete` removes them with their runs and
checkpoints, `keep_latest` keeps the thread and its latest checkpoint only."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.errors import NotFoundError

from tests.support import TEST_GRAPHS, make_settings, running_server

SHORT = 0.02  # minutes: 1.2 s
COUNTER = f"{TEST_GRAPHS.parent / 'counter.py'}:counter_graph"


@pytest.fixture(scope="module")
def client(database_url: str, data_dir: Path) -> Iterator[SyncLangGraphClient]:
    """A server whose project keeps idle threads' latest checkpoint after 1.8 s, swept every
    0.3 s."""
    project = data_dir / "project" / "langgraph.json"
    project.parent.mkdir()
    project.write_text(
        json.dumps(
            {
                "graphs": {"counter": COUNTER},
                "checkpointer": {
                    "ttl": {
                        "strategy": "keep_latest",
                        "default_ttl": 0.03,
                        "sweep_interval_minutes": 0.005,
                    }
                },
            }
        ),
        encoding="utf-8",
    )
    settings = make_settings(
        database_url, data_dir / "server", migrate_on_start=False, langgraph_config=project
    )
    with running_server(settings) as url:
        yield get_sync_client(url=url)


def rows(database_url: str, query: str, *args: Any) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, args).fetchone()
        assert row is not None
        return int(row[0])


def eventually(condition: Callable[[], bool], what: str, *, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def gone(client: SyncLangGraphClient, thread_id: str) -> bool:
    try:
        client.threads.get(thread_id)
    except NotFoundError:
        return True
    return False


def count_once(client: SyncLangGraphClient, thread_id: str) -> None:
    client.runs.wait(thread_id, "counter", input={"count": 0})


def test_threads_whose_ttl_expires_are_deleted_with_their_runs_and_checkpoints(
    client: SyncLangGraphClient, database_url: str
) -> None:
    posted = client.threads.create(ttl={"ttl": SHORT, "strategy": "delete"})["thread_id"]
    patched = client.threads.create(ttl=600)["thread_id"]
    kept = client.threads.create(ttl=600)["thread_id"]
    shown: Any = client.threads.get(posted, include=["ttl"])
    assert shown["ttl"]["strategy"] == "delete"
    assert shown["ttl"]["ttl_minutes"] == SHORT
    assert shown["ttl"]["expires_at"] > shown["updated_at"]
    for thread_id in (patched, kept):  # (a run on `posted` could lose the race to its TTL)
        count_once(client, thread_id)
    assert rows(database_url, "SELECT count(*) FROM runs WHERE thread_id = %s", uuid.UUID(patched))
    client.threads.update(patched, metadata={"why": "expire soon"}, ttl={"ttl": SHORT})
    assert client.threads.get(patched, include=["ttl"])["ttl"]["ttl_minutes"] == SHORT  # type: ignore[typeddict-item]
    eventually(lambda: gone(client, posted) and gone(client, patched), "both threads are swept")
    for thread_id in (posted, patched):
        assert (
            rows(database_url, "SELECT count(*) FROM checkpoints WHERE thread_id = %s", thread_id)
            == 0
        )
        assert (
            rows(
                database_url, "SELECT count(*) FROM runs WHERE thread_id = %s", uuid.UUID(thread_id)
            )
            == 0
        )
    assert client.threads.get(kept)["values"]["count"] == 111  # type: ignore[index, call-overload]


def test_the_projects_default_ttl_prunes_an_idle_thread_to_its_latest_checkpoint(
    client: SyncLangGraphClient, database_url: str
) -> None:
    thread_id = client.threads.create()["thread_id"]
    assert client.threads.get(thread_id, include=["ttl"])["ttl"]["strategy"] == "keep_latest"  # type: ignore[typeddict-item]
    created_by_run = str(uuid.uuid4())
    client.runs.wait(created_by_run, "counter", input={"count": 0}, if_not_exists="create")
    assert client.threads.get(created_by_run, include=["ttl"])["ttl"]["ttl_minutes"] == 0.03  # type: ignore[typeddict-item]
    count_once(client, thread_id)
    client.runs.wait(thread_id, "counter", input=None)  # a second run: more checkpoints

    def root_checkpoints() -> int:
        query = "SELECT count(*) FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''"
        return rows(database_url, query, thread_id)

    assert root_checkpoints() > 1
    eventually(lambda: root_checkpoints() == 1, "the idle thread is pruned to one checkpoint")
    assert client.threads.get_state(thread_id)["values"]["count"] == 111  # type: ignore[call-overload]
