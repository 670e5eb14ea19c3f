"""Compatibility proof: every langgraph-sdk method group and RemoteGraph against a uvicorn server.

One server per module: offline model, webhooks allowed to 127.0.0.1 only, and two test graphs
from the test project's langgraph.json (`review` with an `interrupt()`, the slow `steps`). Each test
owns its threads, assistants and store namespace.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph.types import Command
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.integration.webhook_support import WebhookReceiver, webhook_receiver
from tests.support import TEST_GRAPHS, make_settings, running_server

RUN_INPUT: Any = {"messages": [{"role": "user", "content": "hello"}]}
RUN_CONTEXT: Any = {"tools": [], "memory_policy": "off"}


@pytest.fixture(scope="module")
def sdk_server(database_url: str, data_dir: Path) -> Iterator[str]:
    """The module's server: webhooks may reach 127.0.0.1; test graphs `review`, `steps`."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        webhook_allowed_hosts=["127.0.0.1"],
        langgraph_config=TEST_GRAPHS,
        cron_poll_interval_s=0.2,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
async def client(sdk_server: str) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=sdk_server) as sdk:
        yield sdk


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


async def _status(call: Any) -> int:
    with pytest.raises(httpx.HTTPStatusError) as error:
        await call
    status: int = error.value.response.status_code
    return status


def _last_ai_text(values: Any) -> str:
    messages = values["messages"]
    assert messages[-1]["type"] == "ai"
    text: str = messages[-1]["content"]
    return text


# -- meta ---------------------------------------------------------------------------------------


async def test_info_and_ok(sdk_server: str) -> None:
    async with httpx.AsyncClient(base_url=sdk_server) as http:
        assert (await http.get("/ok")).json() == {"ok": True}
        info = (await http.get("/info")).json()
    assert "version" in info
    assert isinstance(info.get("flags"), dict)


# -- assistants ---------------------------------------------------------------------------------


async def test_assistants_group(client: LangGraphClient) -> None:
    system = await client.assistants.search(metadata={"created_by": "system"}, limit=50)
    assert {"chat", "researcher"} <= {a["graph_id"] for a in system}
    chat = next(a for a in system if a["graph_id"] == "chat")
    assert (await client.assistants.get(chat["assistant_id"]))["graph_id"] == "chat"
    graph = await client.assistants.get_graph(chat["assistant_id"])
    node_ids = {node["id"] for node in graph["nodes"]}
    assert {"recall", "retrieve", "respond"} <= node_ids
    schemas = await client.assistants.get_schemas(chat["assistant_id"])
    assert schemas["graph_id"] == "chat"
    assert "messages" in (schemas["state_schema"] or {}).get("properties", {})
    assert isinstance(await client.assistants.get_subgraphs(chat["assistant_id"]), dict)

    tag = uuid.uuid4().hex
    created = await client.assistants.create(
        "chat", config={"configurable": {"step": 1}}, metadata={"tag": tag}, name="sdk-test"
    )
    assert created["version"] == 1
    updated = await client.assistants.update(created["assistant_id"], metadata={"tag": tag, "v": 2})
    assert updated["version"] == 2
    versions = await client.assistants.get_versions(created["assistant_id"])
    assert sorted(v["version"] for v in versions) == [1, 2]
    latest = await client.assistants.set_latest(created["assistant_id"], 1)
    assert latest["version"] == 1
    assert await client.assistants.count(metadata={"tag": tag}) == 1
    found = await client.assistants.search(metadata={"tag": tag})
    assert [a["assistant_id"] for a in found] == [created["assistant_id"]]
    await client.assistants.delete(created["assistant_id"])
    assert await _status(client.assistants.get(created["assistant_id"])) == 404


# -- threads ------------------------------------------------------------------------------------


async def test_threads_group(client: LangGraphClient) -> None:
    tag = uuid.uuid4().hex
    thread = await client.threads.create(metadata={"tag": tag})
    thread_id = thread["thread_id"]
    assert thread["status"] == "idle"
    got: Any = await client.threads.get(thread_id)
    assert got["metadata"]["tag"] == tag
    updated: Any = await client.threads.update(thread_id, metadata={"color": "blue"})
    assert updated["metadata"]["color"] == "blue"
    assert [t["thread_id"] for t in await client.threads.search(metadata={"tag": tag})] == [
        thread_id
    ]
    assert await client.threads.count(metadata={"tag": tag}) == 1

    await client.runs.wait(thread_id, "chat", input=RUN_INPUT, context=RUN_CONTEXT)
    state = await client.threads.get_state(thread_id)
    values: Any = state["values"]
    assert values["messages"][0]["content"] == "hello"
    assert _last_ai_text(values)
    history = await client.threads.get_history(thread_id, limit=100)
    assert len(history) >= 2
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    older = history[-1]["checkpoint"]["checkpoint_id"]
    assert older is not None
    past = await client.threads.get_state(thread_id, checkpoint_id=older)
    assert past["checkpoint"]["checkpoint_id"] == older

    fork = await client.threads.update_state(
        thread_id, {"messages": [{"type": "human", "content": "edited"}]}, as_node="respond"
    )
    assert fork["checkpoint"]["checkpoint_id"] != state["checkpoint"]["checkpoint_id"]
    after: Any = (await client.threads.get_state(thread_id))["values"]
    assert after["messages"][-1]["content"] == "edited"

    # The SDK types copy() as None; the server answers with the new thread, as langgraph-api.
    copied: Any = await client.http.post(f"/threads/{thread_id}/copy", json=None)
    copy_state: Any = (await client.threads.get_state(copied["thread_id"]))["values"]
    assert copy_state["messages"][-1]["content"] == "edited"
    pruned = await client.threads.prune([copied["thread_id"]])
    assert pruned["pruned_count"] == 1
    await client.threads.delete(thread_id)
    assert await _status(client.threads.get(thread_id)) == 404


# -- runs ---------------------------------------------------------------------------------------


async def test_runs_group_stream_wait_create_join_list_get_delete(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    events: list[str] = []
    async for part in client.runs.stream(
        thread_id,
        "chat",
        input=RUN_INPUT,
        context=RUN_CONTEXT,
        stream_mode=["values", "updates", "messages-tuple"],
    ):
        events.append(part.event)
    assert events[0] == "metadata"
    assert {"values", "updates", "messages"} <= set(events)
    assert events[-1] != "error"

    waited: Any = await client.runs.wait(thread_id, "chat", input=RUN_INPUT, context=RUN_CONTEXT)
    assert len(waited["messages"]) >= 4

    run = await client.runs.create(thread_id, "chat", input=RUN_INPUT, context=RUN_CONTEXT)
    joined: Any = await client.runs.join(thread_id, run["run_id"])
    assert _last_ai_text(joined)
    got = await client.runs.get(thread_id, run["run_id"])
    assert got["status"] == "success"
    listed = await client.runs.list(thread_id)
    assert run["run_id"] in {r["run_id"] for r in listed}
    assert len(listed) == 3

    replay = [p.event async for p in client.runs.join_stream(thread_id, run["run_id"])]
    assert replay
    assert replay[-1] != "error"

    await client.runs.delete(thread_id, run["run_id"])
    assert await _status(client.runs.get(thread_id, run["run_id"])) == 404


async def test_stateless_and_batch_runs(client: LangGraphClient) -> None:
    waited: Any = await client.runs.wait(None, "chat", input=RUN_INPUT, context=RUN_CONTEXT)
    assert _last_ai_text(waited)
    parts = [p.event async for p in client.runs.stream(None, "chat", input=RUN_INPUT)]
    assert parts[0] == "metadata"
    payload: Any = {"assistant_id": "chat", "input": RUN_INPUT, "context": RUN_CONTEXT}
    batch = await client.runs.create_batch([payload, payload])
    assert len(batch) == 2
    assert len({r["run_id"] for r in batch}) == 2


async def test_cancel_and_cancel_many(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    slow: Any = {"configurable": {"delay": 0.5}}  # 4 steps of 0.5 s each
    first = await client.runs.create(thread_id, "steps", input={"log": []}, config=slow)
    queued = await client.runs.create(thread_id, "steps", input={"log": []}, config=slow)
    await client.runs.cancel(thread_id, queued["run_id"])
    await client.runs.cancel(thread_id, first["run_id"], wait=True)
    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "interrupted"
    assert (await client.runs.get(thread_id, queued["run_id"]))["status"] == "interrupted"
    third = await client.runs.create(thread_id, "steps", input={"log": []}, config=slow)
    await client.runs.cancel_many(thread_id=thread_id, run_ids=[third["run_id"]])
    await client.runs.join(thread_id, third["run_id"])
    assert (await client.runs.get(thread_id, third["run_id"]))["status"] == "interrupted"
    steps: Any = (await client.threads.get_state(thread_id))["values"]
    assert len(steps.get("log", [])) < 8  # neither slow run got to its last step


async def test_run_webhook_is_delivered_on_completion(
    client: LangGraphClient, receiver: WebhookReceiver
) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], "chat", input=RUN_INPUT, context=RUN_CONTEXT, webhook=receiver.url
    )
    (body,) = await asyncio.to_thread(receiver.wait_for, 1)
    assert body["run_id"] == run["run_id"]
    assert body["thread_id"] == thread["thread_id"]
    assert body["status"] == "success"
    assert _last_ai_text(body["values"])
    assert body["run_ended_at"] >= body["run_started_at"]


async def test_run_webhook_reports_a_failed_run(
    client: LangGraphClient, receiver: WebhookReceiver
) -> None:
    thread = await client.threads.create()
    failing: Any = {"configurable": {"fail_at": "s2"}}
    run = await client.runs.create(
        thread["thread_id"], "steps", input={"log": []}, config=failing, webhook=receiver.url
    )
    (body,) = await asyncio.to_thread(receiver.wait_for, 1)
    assert body["run_id"] == run["run_id"]
    assert body["status"] == "error"
    assert "failed on purpose" in str(body["error"])


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://127.0.0.2:9/hook",  # loopback, but not the allow-listed 127.0.0.1
        "http://localhost:9/hook",
        "http://169.254.169.254/",
        "ftp://x/",
    ],
)
async def test_run_webhook_to_private_or_loopback_host_is_422(
    client: LangGraphClient, url: str
) -> None:
    thread = await client.threads.create()
    with pytest.raises(httpx.HTTPStatusError) as error:
        await client.runs.create(thread["thread_id"], "chat", input=RUN_INPUT, webhook=url)
    assert error.value.response.status_code == 422
    assert "webhook" in error.value.response.text
    assert await client.runs.list(thread["thread_id"]) == []


# -- crons --------------------------------------------------------------------------------------


async def test_crons_group(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tag = uuid.uuid4().hex
    cron: Any = await client.crons.create_for_thread(
        thread["thread_id"], "chat", schedule="0 12 * * 1", metadata={"tag": tag}
    )
    stateless: Any = await client.crons.create("chat", schedule="@daily", metadata={"tag": tag})
    assert await client.crons.count(metadata={"tag": tag}) == 2
    found = await client.crons.search(metadata={"tag": tag}, sort_by="created_at")
    assert {c["cron_id"] for c in found} == {cron["cron_id"], stateless["cron_id"]}
    changed = await client.crons.update(stateless["cron_id"], schedule="@hourly")
    assert changed["schedule"] == "@hourly"
    for cron_id in (cron["cron_id"], stateless["cron_id"]):
        await client.crons.delete(cron_id)
    assert await client.crons.count(metadata={"tag": tag}) == 0


# -- store --------------------------------------------------------------------------------------


async def test_store_group(client: LangGraphClient) -> None:
    ns = ["sdk", uuid.uuid4().hex]
    await client.store.put_item(ns, "a", {"text": "apples are red"})
    await client.store.put_item([*ns, "sub"], "b", {"text": "bananas are yellow"})
    item = await client.store.get_item(ns, "a")
    assert item is not None
    assert item["value"] == {"text": "apples are red"}
    found = await client.store.search_items(ns, limit=10)
    assert {i["key"] for i in found["items"]} == {"a", "b"}
    namespaces = await client.store.list_namespaces(prefix=ns)
    assert sorted(tuple(n) for n in namespaces["namespaces"]) == [
        tuple(ns),
        (*ns, "sub"),
    ]
    await client.store.delete_item(ns, "a")
    assert await client.store.get_item(ns, "a") is None  # 200 null, as langgraph-api answers


# -- RemoteGraph --------------------------------------------------------------------------------


def test_remote_graph_invoke_stream_and_get_state(sdk_server: str) -> None:
    remote = RemoteGraph("chat", url=sdk_server)
    thread_id = str(uuid.uuid4())
    config: Any = {"configurable": {"thread_id": thread_id}}
    result = remote.invoke(RUN_INPUT, config=config, context=RUN_CONTEXT)
    assert _last_ai_text(result)
    chunks = list(remote.stream(RUN_INPUT, config=config, stream_mode="updates"))
    assert any("respond" in chunk for chunk in chunks)
    state = remote.get_state(config)
    assert len(state.values["messages"]) >= 4
    assert state.config["configurable"]["thread_id"] == thread_id
    assert state.next == ()


async def test_remote_graph_interrupt_and_resume(sdk_server: str) -> None:
    remote = RemoteGraph("review", url=sdk_server)
    config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
    first = await remote.ainvoke({"log": []}, config=config)
    assert first["log"] == ["draft"]
    interrupts = first["__interrupt__"]
    assert interrupts[0]["value"]["question"] == "publish the draft?"
    paused = await remote.aget_state(config)
    assert paused.next == ("review",)
    assert paused.interrupts
    resumed = await remote.ainvoke(Command(resume=True), config=config)
    assert resumed["log"] == ["draft", "review:True", "published"]
    assert resumed["approved"] is True
    done = await remote.aget_state(config)
    assert done.next == ()
