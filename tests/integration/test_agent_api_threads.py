"""The Agent Server API's threads (CRUD, search, copy, prune, state, history), via the SDK."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from langgraph_sdk.schema import Checkpoint

from tests.support import TEST_GRAPHS, make_settings, running_server


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """A server of the test project (tests/projects/test_graphs): counter, sleeper, ..."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        offline_token_delay_s=0.0,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[SyncLangGraphClient]:
    """A langgraph-sdk sync client of the module's server."""
    with get_sync_client(url=server_url) as sdk:
        yield sdk


def _checkpoint(thread_id: str, checkpoint_id: str | None) -> Checkpoint:
    return {
        "thread_id": thread_id,
        "checkpoint_ns": "",
        "checkpoint_id": checkpoint_id,
        "checkpoint_map": None,
    }


def _counter_thread(client: SyncLangGraphClient, **metadata: Any) -> str:
    thread = client.threads.create(metadata={"graph_id": "counter", **metadata})
    return str(thread["thread_id"])


def test_create_get_update_delete(client: SyncLangGraphClient) -> None:
    thread_id = str(uuid.uuid4())
    created = client.threads.create(thread_id=thread_id, metadata={"owner": "ana"})
    assert created["thread_id"] == thread_id
    assert (created["status"], created["values"], created["interrupts"]) == ("idle", {}, {})
    with pytest.raises(ConflictError):
        client.threads.create(thread_id=thread_id, if_exists="raise")
    again = client.threads.create(thread_id=thread_id, if_exists="do_nothing", metadata={"x": 1})
    assert again["metadata"] == {"owner": "ana"}

    updated = client.threads.update(thread_id, metadata={"topic": "tests"})
    assert updated["metadata"] == {"owner": "ana", "topic": "tests"}
    fetched: Any = client.threads.get(thread_id)
    assert fetched["metadata"]["topic"] == "tests"

    client.threads.delete(thread_id)
    with pytest.raises(NotFoundError) as missing:
        client.threads.get(thread_id)
    assert thread_id in missing.value.response.json()["detail"]
    with pytest.raises(NotFoundError):
        client.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        client.threads.update(thread_id, metadata={})


def test_search_and_count_by_metadata_values_status_and_ids(
    client: SyncLangGraphClient, api: httpx.Client
) -> None:
    tag = uuid.uuid4().hex

    def api_search(**body: Any) -> httpx.Response:
        response = api.post("/threads/search", json=body)
        assert response.status_code == 200, response.text
        return response

    first = _counter_thread(client, tag=tag, n=1)
    second = _counter_thread(client, tag=tag, n=2)
    third = _counter_thread(client, tag=tag, n=3)
    client.threads.update_state(second, {"count": 7}, as_node="start")

    assert client.threads.count(metadata={"tag": tag}) == 3
    assert client.threads.count(metadata={"tag": tag, "n": 2}) == 1
    assert client.threads.count(values={"count": 7}, metadata={"tag": tag}) == 1
    # A state written as node `start` leaves `child` to run: the thread is interrupted.
    assert client.threads.count(metadata={"tag": tag}, status="idle") == 2
    assert client.threads.count(metadata={"tag": tag}, status="interrupted") == 1
    assert client.threads.count(metadata={"tag": tag}, status="busy") == 0

    newest_first = client.threads.search(metadata={"tag": tag})
    assert [t["thread_id"] for t in newest_first] == [third, second, first]
    oldest_first = client.threads.search(
        metadata={"tag": tag}, sort_by="created_at", sort_order="asc", limit=2, offset=1
    )
    assert [t["thread_id"] for t in oldest_first] == [second, third]
    page = api_search(metadata={"tag": tag}, limit=2)
    assert (page.headers["x-pagination-next"], page.headers["x-pagination-total"]) == ("2", "3")
    last = api_search(metadata={"tag": tag}, limit=2, offset=2)
    assert "x-pagination-next" not in last.headers
    assert last.headers["x-pagination-total"] == "3"
    by_ids = client.threads.search(ids=[first, third], sort_order="asc")
    assert [t["thread_id"] for t in by_ids] == [first, third]
    by_values = client.threads.search(values={"count": 7})
    assert [t["thread_id"] for t in by_values] == [second]
    selected = client.threads.search(metadata={"tag": tag}, select=["thread_id", "status"])
    assert all(set(t) == {"thread_id", "status"} for t in selected)


def test_state_update_history_and_checkpoints(client: SyncLangGraphClient) -> None:
    thread_id = _counter_thread(client)
    empty = client.threads.get_state(thread_id)
    assert (empty["values"], empty["next"]) == ({}, [])

    first = client.threads.update_state(thread_id, {"count": 1, "log": ["seed"]}, as_node="start")
    first_id = first["checkpoint"]["checkpoint_id"]
    assert first["checkpoint"]["thread_id"] == thread_id
    second = client.threads.update_state(thread_id, {"count": 5, "log": ["more"]}, as_node="start")
    second_id = second["checkpoint"]["checkpoint_id"]

    state = client.threads.get_state(thread_id)
    assert state["values"] == {"count": 5, "log": ["seed", "more"]}
    assert state["next"] == ["child"]
    assert state["checkpoint"]["checkpoint_id"] == second_id
    assert state["parent_checkpoint"] is not None
    assert state["parent_checkpoint"]["checkpoint_id"] == first_id
    assert [t["name"] for t in state["tasks"]] == ["child"]
    # The thread row caches the latest values for GET /threads/{id} and search.
    assert client.threads.get(thread_id)["values"] == {"count": 5, "log": ["seed", "more"]}

    at_first = client.threads.get_state(thread_id, checkpoint_id=first_id)
    assert at_first["values"] == {"count": 1, "log": ["seed"]}
    by_object = client.threads.get_state(thread_id, checkpoint=_checkpoint(thread_id, first_id))
    assert by_object["values"] == at_first["values"]

    history = client.threads.get_history(thread_id)
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert ids[:2] == [second_id, first_id]
    assert client.threads.get_history(thread_id, limit=1)[0]["checkpoint"]["checkpoint_id"] == (
        second_id
    )
    before = client.threads.get_history(thread_id, before=_checkpoint(thread_id, second_id))
    assert before[0]["checkpoint"]["checkpoint_id"] == first_id
    from_first = client.threads.get_history(thread_id, checkpoint=_checkpoint(thread_id, first_id))
    assert from_first[0]["checkpoint"]["checkpoint_id"] == first_id
    assert second_id not in {h["checkpoint"]["checkpoint_id"] for h in from_first}
    updates = client.threads.get_history(thread_id, metadata={"source": "update"})
    assert {h["checkpoint"]["checkpoint_id"] for h in updates} == {first_id, second_id}

    # `__copy__` writes the latest checkpoint again, unchanged.
    copied = client.threads.update_state(thread_id, None, as_node="__copy__")
    assert copied["checkpoint"]["checkpoint_id"] not in {first_id, second_id}
    copy_state: Any = client.threads.get_state(thread_id)
    assert copy_state["values"] == {"count": 5, "log": ["seed", "more"]}

    # Fork from the first checkpoint: the new checkpoint's parent is the first one.
    forked = client.threads.update_state(
        thread_id, {"count": 100}, as_node="start", checkpoint_id=first_id
    )
    fork_state: Any = client.threads.get_state(
        thread_id, checkpoint_id=forked["checkpoint"]["checkpoint_id"]
    )
    assert fork_state["values"]["count"] == 100
    assert fork_state["parent_checkpoint"] is not None
    assert fork_state["parent_checkpoint"]["checkpoint_id"] == first_id


def test_history_before_as_a_config_as_the_js_client_sends_it(
    client: SyncLangGraphClient, api: httpx.Client
) -> None:
    """`@langchain/langgraph-sdk` sends `before` as a config (`{"configurable":
    {"checkpoint_id": ...}}`): the history starts below that checkpoint (it was ignored, and
    the history started at the latest)."""
    thread_id = _counter_thread(client)
    for count in (1, 2, 3):
        client.threads.update_state(thread_id, {"count": count}, as_node="start")
    ids = [h["checkpoint"]["checkpoint_id"] for h in client.threads.get_history(thread_id)]
    body = {"limit": 2, "before": {"configurable": {"checkpoint_id": ids[0]}}}
    below = api.post(f"/threads/{thread_id}/history", json=body)
    assert below.status_code == 200
    assert [h["checkpoint"]["checkpoint_id"] for h in below.json()] == ids[1:3]


def test_state_is_read_with_the_graph_of_the_latest_run(client: SyncLangGraphClient) -> None:
    """A thread whose runs switched graphs shows its state as its latest run's graph sees it
    (`metadata.graph_id`), as langgraph-api does: the next node of an `interrupt_before`, not
    `[]` from the first graph, which has no such node."""
    thread_id = str(client.threads.create()["thread_id"])
    client.runs.wait(thread_id, "steps", input={})
    client.runs.wait(thread_id, "counter", input={"count": 0}, interrupt_before=["finish"])
    metadata: Any = client.threads.get(thread_id)["metadata"]
    assert metadata["graph_id"] == "counter"
    state = client.threads.get_state(thread_id)
    assert (state["next"], [task["name"] for task in state["tasks"]]) == (["finish"], ["finish"])


def test_state_bad_input(client: SyncLangGraphClient, api: httpx.Client) -> None:
    thread_id = _counter_thread(client)
    with pytest.raises(UnprocessableEntityError) as bad_node:
        client.threads.update_state(thread_id, {"count": 1}, as_node="nowhere")
    assert bad_node.value.response.json()["field"] == "as_node"
    with pytest.raises(UnprocessableEntityError) as not_a_dict:
        client.threads.update_state(thread_id, "not a dict", as_node="start")  # type: ignore[arg-type]
    assert not_a_dict.value.response.json()["field"] == "values"
    with pytest.raises(NotFoundError):
        client.threads.get_state(thread_id, checkpoint_id="1f0-no-such-checkpoint")
    with pytest.raises(NotFoundError):
        client.threads.get_state(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        client.threads.get_history(str(uuid.uuid4()))
    no_graph = client.threads.create()
    with pytest.raises(ConflictError) as graphless:  # the body is fine; the thread is not ready
        client.threads.update_state(no_graph["thread_id"], {"count": 1})
    assert graphless.value.response.status_code == 409
    bad_limit = api.post(f"/threads/{thread_id}/history", json={"limit": 0})
    assert bad_limit.status_code == 422
    assert "limit" in bad_limit.text
    bad_id = api.get("/threads/not-a-uuid")
    assert bad_id.status_code == 422
    assert "thread_id" in bad_id.text
    bad_status = api.post("/threads/search", json={"status": "sleeping"})
    assert bad_status.status_code == 422
    assert "status" in bad_status.text
    unknown_graph = api.post("/threads", json={"metadata": {"graph_id": "nope"}})
    assert unknown_graph.status_code == 422
    assert unknown_graph.json()["field"] == "metadata.graph_id"
    for bad_ttl in ({"ttl": 0}, {"ttl": 5, "strategy": "archive"}, {"strategy": "delete"}):
        ttl = api.post("/threads", json={"ttl": bad_ttl})
        assert ttl.status_code == 422
        assert "ttl" in ttl.text


def test_create_with_supersteps_seeds_the_state(client: SyncLangGraphClient) -> None:
    thread = client.threads.create(
        graph_id="counter",
        supersteps=[
            {"updates": [{"values": {"count": 2, "log": ["a"]}, "as_node": "start"}]},
            {"updates": [{"values": {"count": 3, "log": ["b"]}, "as_node": "child"}]},
        ],
    )
    state = client.threads.get_state(thread["thread_id"])
    assert state["values"] == {"count": 3, "log": ["a", "b"]}
    assert state["next"] == ["finish"]
    assert thread["values"] == {"count": 3, "log": ["a", "b"]}


def test_copy_keeps_checkpoints_and_prune_keeps_latest_or_deletes(
    client: SyncLangGraphClient,
) -> None:
    source = _counter_thread(client, kind="copy-source")
    for n in range(3):
        client.threads.update_state(source, {"count": n, "log": [str(n)]}, as_node="start")
    copy_thread: Callable[[str], Any] = client.threads.copy  # typed `None`; returns the thread
    copied = copy_thread(source)
    assert copied["thread_id"] != source
    assert copied["metadata"]["kind"] == "copy-source"
    source_history = client.threads.get_history(source)
    copy_history = client.threads.get_history(copied["thread_id"])
    assert [h["values"] for h in copy_history] == [h["values"] for h in source_history]
    assert [h["checkpoint"]["checkpoint_id"] for h in copy_history] == [
        h["checkpoint"]["checkpoint_id"] for h in source_history
    ]
    assert {h["checkpoint"]["thread_id"] for h in copy_history} == {copied["thread_id"]}
    # The copy is independent: writing to it leaves the source as it was.
    client.threads.update_state(copied["thread_id"], {"count": 42}, as_node="start")
    source_state: Any = client.threads.get_state(source)
    assert source_state["values"]["count"] == 2

    assert client.threads.prune([copied["thread_id"]], strategy="keep_latest") == {
        "pruned_count": 1
    }
    kept: list[Any] = list(client.threads.get_history(copied["thread_id"]))
    assert len(kept) == 1
    assert kept[0]["values"]["count"] == 42

    assert client.threads.prune([source, str(uuid.uuid4())]) == {"pruned_count": 1}
    with pytest.raises(NotFoundError):
        client.threads.get(source)
    with pytest.raises(NotFoundError):
        client.threads.copy(source)


def test_run_on_a_thread_is_visible_in_state_and_history(client: SyncLangGraphClient) -> None:
    thread = client.threads.create()
    result: Any = client.runs.wait(thread["thread_id"], "counter", input={"count": 0})
    assert result["count"] == 111
    assert result["log"][-2:] == ["inner_step", "finish"]
    state: Any = client.threads.get_state(thread["thread_id"], subgraphs=True)
    assert state["values"]["count"] == 111
    assert state["next"] == []
    history: list[Any] = list(client.threads.get_history(thread["thread_id"]))
    steps = [h["metadata"]["step"] for h in history]
    assert steps == sorted(steps, reverse=True)
    assert len(steps) >= 4
    assert client.threads.get(thread["thread_id"])["status"] == "idle"


def test_chat_conversations_are_threads(client: SyncLangGraphClient, api: httpx.Client) -> None:
    user = api.post("/users", json={"email": f"{uuid.uuid4().hex}@example.com", "name": "Ana"})
    agent = api.post("/agents", json={"name": "Helper"})
    assert user.status_code == 201, user.text
    assert agent.status_code == 201, agent.text
    turn = api.post(
        "/chat/invoke",
        json={"user_id": user.json()["id"], "agent_id": agent.json()["id"], "message": "Hello!"},
    )
    assert turn.status_code == 200, turn.text
    conversation_id = turn.json()["conversation_id"]

    thread: Any = client.threads.get(conversation_id)
    assert thread["status"] == "idle"
    found = client.threads.search(ids=[conversation_id])
    assert [t["thread_id"] for t in found] == [conversation_id]
    state: Any = client.threads.get_state(conversation_id)
    contents = [m["content"] for m in state["values"]["messages"]]
    assert "Hello!" in contents
    assert state["values"]["answer"] == contents[-1]


def test_rejected_supersteps_leave_no_thread(
    client: SyncLangGraphClient, api: httpx.Client
) -> None:
    thread_id = str(uuid.uuid4())
    bad_node = api.post(
        "/threads",
        json={
            "thread_id": thread_id,
            "metadata": {"graph_id": "counter"},
            "supersteps": [{"updates": [{"values": {"count": 1}, "as_node": "nowhere"}]}],
        },
    )
    assert bad_node.status_code == 422
    assert bad_node.json()["field"] == "supersteps"
    no_graph = api.post(
        "/threads",
        json={
            "thread_id": thread_id,
            "supersteps": [{"updates": [{"values": {"count": 1}, "as_node": "start"}]}],
        },
    )
    assert no_graph.status_code == 422
    assert no_graph.json()["field"] == "supersteps"
    with_command = api.post(
        "/threads",
        json={
            "thread_id": thread_id,
            "metadata": {"graph_id": "counter"},
            "supersteps": [
                {"updates": [{"values": None, "command": {"resume": 1}, "as_node": "start"}]}
            ],
        },
    )
    assert with_command.status_code == 422
    with pytest.raises(NotFoundError):
        client.threads.get(thread_id)


async def test_concurrent_creates_of_one_id_make_one_thread(server_url: str) -> None:
    client = get_client(url=server_url)
    try:
        thread_id = str(uuid.uuid4())
        made = await asyncio.gather(
            *(client.threads.create(thread_id=thread_id, if_exists="do_nothing") for _ in range(8))
        )
        assert {t["thread_id"] for t in made} == {thread_id}

        other = str(uuid.uuid4())
        outcomes = await asyncio.gather(
            *(client.threads.create(thread_id=other, if_exists="raise") for _ in range(8)),
            return_exceptions=True,
        )
        assert sum(isinstance(o, dict) for o in outcomes) == 1
        assert all(isinstance(o, (dict, ConflictError)) for o in outcomes)

        assistant_id = str(uuid.uuid4())
        assistants = await asyncio.gather(
            *(
                client.assistants.create(
                    "counter", assistant_id=assistant_id, if_exists="do_nothing"
                )
                for _ in range(8)
            )
        )
        assert {a["assistant_id"] for a in assistants} == {assistant_id}
    finally:
        await client.aclose()


async def test_deleting_a_busy_thread_cancels_its_run_first(server_url: str) -> None:
    client = get_client(url=server_url)
    try:
        thread = await client.threads.create()
        events: list[str] = []

        async def watch() -> None:
            async for part in client.runs.stream(
                thread["thread_id"], "sleeper", input={"count": 0}, stream_mode="updates"
            ):
                events.append(part.event)
                if part.event == "updates" and "start" in part.data:
                    started.set()

        started = asyncio.Event()
        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(started.wait(), timeout=30)
        assert (await client.threads.get(thread["thread_id"]))["status"] == "busy"

        await client.threads.delete(thread["thread_id"])
        # The nap takes a minute: the stream ends this soon only because the run was cancelled.
        await asyncio.wait_for(watcher, timeout=20)
        assert events[0] == "metadata"
        assert "nap" not in str(events)
        with pytest.raises(NotFoundError):
            await client.threads.get(thread["thread_id"])
    finally:
        await client.aclose()
