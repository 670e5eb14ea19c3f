"""Crons over langgraph-sdk: create/search/count/update/delete, bad input by field, firing with
webhooks delivered to a local receiver, and two schedulers never taking one firing twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from sqlalchemy import select, update

from server.runs.scheduler import CronScheduler
from stores.sql.assistants import ensure_system_assistants, resolve_assistant
from stores.sql.crons import create_cron
from stores.sql.database import open_database
from stores.sql.models import Cron
from tests.integration.webhook_support import WebhookReceiver, webhook_receiver
from tests.support import make_settings, running_server, scratch_database

RUN_INPUT: Any = {"messages": [{"role": "user", "content": "hello"}]}
RUN_CONTEXT: Any = {"tools": [], "memory_policy": "off"}


@pytest.fixture(scope="module")
def cron_server(database_url: str, data_dir: Path) -> Iterator[str]:
    """A server whose scheduler polls every 0.2 s, whose crons may fire every second, and that
    may call webhooks on 127.0.0.1."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        webhook_allowed_hosts=["127.0.0.1"],
        cron_poll_interval_s=0.2,
        cron_min_interval_s=1,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
def client(cron_server: str) -> SyncLangGraphClient:
    return get_sync_client(url=cron_server)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


def _status_and_body(error: httpx.HTTPStatusError) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = error.response.json()
    return error.response.status_code, body


def test_cron_crud_search_count_in_the_crons_timezone(client: SyncLangGraphClient) -> None:
    thread = client.threads.create()
    tag = uuid.uuid4().hex
    cron = client.crons.create_for_thread(
        thread["thread_id"],
        "chat",
        schedule="0 9 * * *",
        timezone="America/New_York",
        input=RUN_INPUT,
        metadata={"tag": tag},
    )
    cron_body: Any = cron
    assert cron_body["thread_id"] == thread["thread_id"]
    assert cron_body["schedule"] == "0 9 * * *"
    assert cron_body["timezone"] == "America/New_York"
    assert cron_body["enabled"] is True
    assert cron_body["payload"]["input"] == RUN_INPUT
    next_run = datetime.fromisoformat(cron_body["next_run_date"])
    assert next_run.astimezone(UTC).hour in (13, 14)  # 09:00 New York in UTC (DST or not)
    assert next_run > datetime.now(UTC)
    stateless = client.crons.create("chat", schedule="*/5 * * * *", metadata={"tag": tag})
    assert stateless["thread_id"] is None
    assert stateless["on_run_completed"] == "delete"

    found = client.crons.search(metadata={"tag": tag}, sort_by="created_at", sort_order="asc")
    assert [c["cron_id"] for c in found] == [cron_body["cron_id"], stateless["cron_id"]]
    assert client.crons.count(metadata={"tag": tag}) == 2
    assert client.crons.count(thread_id=thread["thread_id"]) == 1
    on_thread = client.crons.search(thread_id=thread["thread_id"], select=["cron_id", "schedule"])
    assert on_thread == [{"cron_id": cron_body["cron_id"], "schedule": "0 9 * * *"}]

    changed = client.crons.update(cron_body["cron_id"], schedule="30 6 * * *", timezone="UTC")
    assert changed["schedule"] == "30 6 * * *"
    assert datetime.fromisoformat(str(changed["next_run_date"])).strftime("%H:%M") == "06:30"
    disabled = client.crons.update(cron_body["cron_id"], enabled=False)
    assert disabled["enabled"] is False
    assert disabled["next_run_date"] is None
    assert client.crons.search(metadata={"tag": tag}, enabled=True) == [stateless]

    client.crons.delete(cron_body["cron_id"])
    assert client.crons.count(metadata={"tag": tag}) == 1
    with pytest.raises(httpx.HTTPStatusError) as missing:
        client.crons.delete(cron_body["cron_id"])
    assert missing.value.response.status_code == 404
    client.crons.delete(stateless["cron_id"])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"schedule": "0 0 30 2 *"}, "schedule"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"webhook": "http://10.0.0.1/hook"}, "webhook"),
        ({"webhook": "http://localhost:9/hook"}, "webhook"),
        ({"webhook": "file:///etc/passwd"}, "webhook"),
    ],
)
def test_bad_cron_bodies_get_422_naming_the_field(
    client: SyncLangGraphClient, fields: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {"schedule": "* * * * *", **fields}
    with pytest.raises(httpx.HTTPStatusError) as error:
        client.crons.create("chat", **body)
    status, detail = _status_and_body(error.value)
    assert status == 422
    assert detail["field"] == field


def test_unknown_ids_get_404(client: SyncLangGraphClient) -> None:
    missing = str(uuid.uuid4())
    for call in (
        lambda: client.crons.create("no-such-graph", schedule="* * * * *"),
        lambda: client.crons.create_for_thread(missing, "chat", schedule="* * * * *"),
        lambda: client.crons.update(missing, schedule="* * * * *"),
        lambda: client.crons.delete(missing),
    ):
        with pytest.raises(httpx.HTTPStatusError) as error:
            call()
        assert error.value.response.status_code == 404


def test_a_cron_given_configurable_and_context_gets_400_naming_context(
    client: SyncLangGraphClient, cron_server: str
) -> None:
    """As a run's request (each of its runs would be refused): on create, thread or stateless,
    and on update."""
    thread = client.threads.create()
    both: Any = {"config": {"configurable": {"tone": "a"}}, "context": {"tone": "a"}}
    for path in ("/runs/crons", f"/threads/{thread['thread_id']}/runs/crons"):
        refused = httpx.post(
            cron_server + path, json={"assistant_id": "chat", "schedule": "0 0 1 1 *", **both}
        )
        assert (refused.status_code, refused.json()["field"]) == (400, "context")
    cron: Any = client.crons.create("chat", schedule="0 0 1 1 *")
    with pytest.raises(httpx.HTTPStatusError) as error:
        client.crons.update(cron["cron_id"], **both)
    status, body = _status_and_body(error.value)
    assert (status, body["field"]) == (400, "context")
    assert client.crons.search(thread_id=thread["thread_id"]) == []
    client.crons.delete(cron["cron_id"])


def test_a_crons_new_context_replaces_its_configurable_and_the_other_way_round(
    client: SyncLangGraphClient,
) -> None:
    """An update's non-empty context or `config.configurable` is the one the runs get: the
    other leaves the payload (the rest of its `config` stays), so that no run is refused."""
    cron: Any = client.crons.create(
        "chat", schedule="0 0 1 1 *", config={"configurable": {"tone": "a"}, "tags": ["t"]}
    )
    by_context: Any = client.crons.update(cron["cron_id"], context={"tone": "b"})
    assert by_context["payload"]["config"] == {"tags": ["t"]}
    assert by_context["payload"]["context"] == {"tone": "b"}
    by_config: Any = client.crons.update(cron["cron_id"], config={"configurable": {"tone": "c"}})
    assert by_config["payload"]["config"] == {"configurable": {"tone": "c"}}
    assert "context" not in by_config["payload"]
    bare: Any = client.crons.create(
        "chat", schedule="0 0 1 1 *", config={"configurable": {"tone": "a"}}
    )
    only_context: Any = client.crons.update(bare["cron_id"], context={"tone": "b"})
    assert "config" not in only_context["payload"]
    for made in (cron, bare):
        client.crons.delete(made["cron_id"])


@pytest.mark.parametrize("given", ["configurable", "context"])
def test_a_crons_runs_mirror_its_configurable_and_context(
    client: SyncLangGraphClient, given: str
) -> None:
    """Each run a cron starts has its payload's `configurable` (with `cron_id`) or context as
    both, as a run's request and langgraph-api's cron runs have; a given context is marked
    (its graph's undeclared keys leave `configurable` when the run starts)."""
    thread = client.threads.create()
    values = {**RUN_CONTEXT, "tone": "warm"}
    sent: Any = {"config": {"configurable": values}} if given == "configurable" else {
        "context": values
    }  # fmt: skip
    cron: Any = client.crons.create_for_thread(
        thread["thread_id"], "chat", schedule="* * * * * */1", input=RUN_INPUT, **sent
    )
    deadline = time.monotonic() + 20
    try:
        while not (runs := client.runs.list(thread["thread_id"])) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        client.crons.delete(cron["cron_id"])
    run: Any = runs[-1]
    kwargs = run["kwargs"]
    cron_id = cron["cron_id"]
    configurable = kwargs["config"]["configurable"]
    if given == "configurable":
        assert kwargs["context"] == {**values, "cron_id": cron_id}
        assert configurable == {**values, "cron_id": cron_id}
    else:
        assert kwargs["context"] == values
        assert configurable == {**values, "cron_id": cron_id, "__context_provided__": True}


def test_thread_cron_fires_runs_and_each_run_calls_the_webhook(
    client: SyncLangGraphClient, receiver: WebhookReceiver
) -> None:
    thread = client.threads.create()
    cron: Any = client.crons.create_for_thread(
        thread["thread_id"],
        "chat",
        schedule="* * * * * */1",  # croniter's 6th field: every second
        input=RUN_INPUT,
        context=RUN_CONTEXT,
        webhook=receiver.url,
        metadata={"source": "cron-test"},
    )
    try:
        first = receiver.wait_for(1)[0]
    finally:
        client.crons.delete(cron["cron_id"])
    assert first["thread_id"] == thread["thread_id"]
    assert first["status"] == "success"
    assert first["metadata"]["cron_id"] == cron["cron_id"]
    assert first["metadata"]["source"] == "cron-test"
    assert first["values"]["messages"][-1]["type"] == "ai"
    runs = client.runs.list(thread["thread_id"], limit=100)
    assert first["run_id"] in {r["run_id"] for r in runs}
    state: Any = client.threads.get_state(thread["thread_id"])
    assert state["values"]["messages"][0]["content"] == "hello"


def test_stateless_cron_fires_on_a_new_thread_until_its_end_time(
    client: SyncLangGraphClient, receiver: WebhookReceiver
) -> None:
    tag = uuid.uuid4().hex
    cron: Any = client.crons.create(
        "chat",
        schedule="* * * * * */1",
        input=RUN_INPUT,
        context=RUN_CONTEXT,
        webhook=receiver.url,
        metadata={"tag": tag},
        end_time=datetime.now(UTC) + timedelta(seconds=5),
    )
    body = receiver.wait_for(1)[0]
    assert body["status"] == "success"
    assert body["metadata"]["cron_id"] == cron["cron_id"]
    # Past its end time the scheduler disables the cron: no event tells when, so poll.
    deadline = time.monotonic() + 20
    while client.crons.count(metadata={"tag": tag}) and time.monotonic() < deadline:
        if not client.crons.search(metadata={"tag": tag}, enabled=True):
            break
        time.sleep(0.2)
    (after,) = client.crons.search(metadata={"tag": tag})
    assert after["enabled"] is False
    assert after["next_run_date"] is None
    fired = len(receiver.bodies)
    assert 1 <= fired <= 6  # one a second for at most 5 s
    client.crons.delete(cron["cron_id"])


async def test_two_schedulers_never_take_the_same_firing(pg_admin_url: str) -> None:
    # A database of its own: the module's server runs a scheduler of its own on the other one.
    with scratch_database(pg_admin_url, "cron_race") as url:
        await _race_schedulers(url)


async def _race_schedulers(database_url: str) -> None:
    async with open_database(database_url) as db:
        await ensure_system_assistants(db, ["chat"])
        assistant = await resolve_assistant(db, "chat")
        ids = []
        for _ in range(20):
            row = await create_cron(
                db,
                assistant_id=assistant.id,
                thread_id=None,
                schedule="0 0 1 1 *",
                timezone="UTC",
                payload={},
                metadata={"race": True},
            )
            ids.append(row.id)
        past = datetime.now(UTC) - timedelta(minutes=1)
        async with db.sessions.begin() as session:
            await session.execute(update(Cron).where(Cron.id.in_(ids)).values(next_run_date=past))
        fired: list[uuid.UUID] = []

        async def submit(cron: Cron) -> None:
            fired.append(cron.id)

        schedulers = [
            CronScheduler(database=db, submit=submit, poll_interval_s=60, batch_size=3)
            for _ in range(4)
        ]
        now = datetime.now(UTC)
        while True:
            counts = await asyncio.gather(*(s.tick(now=now) for s in schedulers))
            if sum(counts) == 0:
                break
        async with db.sessions() as session:
            rows = (await session.scalars(select(Cron).where(Cron.id.in_(ids)))).all()
        assert sorted(fired) == sorted(ids)
        assert {row.next_run_date for row in rows} == {datetime(now.year + 1, 1, 1, tzinfo=UTC)}
