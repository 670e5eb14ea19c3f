"""A run created at once on a thread without any checkpoint does not read the thread's latest
checkpoint before it puts its own (the creating statement said there was none: stores/sql/runs.py
`thread_was_fresh`, stores/checkpoints.py `RunWrites.unstored`); a thread with state, from a run
or from `update_state`, is read as before."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.support import TEST_GRAPHS, make_settings, running_server


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    settings = make_settings(
        database_url, data_dir, migrate_on_start=False, langgraph_config=TEST_GRAPHS
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[LangGraphClient]:
    client = get_client(url=server_url)
    try:
        yield client
    finally:
        await client.aclose()


async def wait(client: LangGraphClient, thread_id: str) -> dict[str, Any]:
    """The final values of a run of the counter graph on the thread."""
    result = await client.runs.wait(thread_id, "counter", input={})
    assert isinstance(result, dict)
    return result


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The reads of a thread's latest checkpoint that went to PostgreSQL, by thread id (the
    server runs in a thread of this process)."""
    counted: dict[str, int] = {}
    read = AsyncPostgresSaver.aget_tuple

    async def counting(self: Any, config: Any) -> Any:
        configurable = config["configurable"]
        if not configurable.get("checkpoint_id") and not configurable.get("checkpoint_ns"):
            thread_id = str(configurable["thread_id"])
            counted[thread_id] = counted.get(thread_id, 0) + 1
        return await read(self, config)

    monkeypatch.setattr(AsyncPostgresSaver, "aget_tuple", counting)
    return counted


async def test_a_run_on_a_fresh_thread_reads_no_checkpoint_and_a_second_run_reads_the_first(
    client: LangGraphClient, reads: dict[str, int]
) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    first = await wait(client, thread_id)
    assert first["count"] == 111
    assert reads.get(thread_id, 0) == 0
    second = await wait(client, thread_id)
    assert second["count"] == 222
    assert reads[thread_id] >= 1  # the first run's checkpoints: read back, as always


async def test_a_thread_given_state_by_update_state_is_read_by_its_first_run(
    client: LangGraphClient, reads: dict[str, int]
) -> None:
    thread = await client.threads.create(graph_id="counter")
    thread_id = thread["thread_id"]
    await client.threads.update_state(
        thread_id, {"count": 1000, "log": ["seeded"]}, as_node="finish"
    )
    reads.clear()
    result = await wait(client, thread_id)
    assert result["count"] == 1111
    assert result["log"][0] == "seeded"
    assert reads[thread_id] >= 1


async def test_a_thread_copied_from_one_with_state_is_read_by_its_first_run(
    client: LangGraphClient, reads: dict[str, int]
) -> None:
    thread = await client.threads.create()
    await wait(client, thread["thread_id"])
    copied = await client.http.post(f"/threads/{thread['thread_id']}/copy", json={})
    reads.clear()
    result = await wait(client, copied["thread_id"])
    assert result["count"] == 222
    assert reads[copied["thread_id"]] >= 1
