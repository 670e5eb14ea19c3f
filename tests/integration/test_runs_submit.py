"""Submitting runs: the one-round-trip creation on an idle thread, cancelled at any point, and
who it wakes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from sqlalchemy import text

from server.runs.engine import RunEngine
from server.runs.events import CHANNEL as EVENTS_CHANNEL
from server.runs.queue import CHANNEL as RUNS_CHANNEL
from server.runs.queue import Attempt, RunQueue
from stores.sql import runs as run_store
from stores.sql.database import Database, libpq_url, open_database
from stores.sql.models import Agent, Conversation
from stores.sql.thread_events import CHANNEL as THREAD_CHANNEL
from tests.support import TEST_GRAPHS, make_settings, running_server


async def _idle_thread(db: Database, agent: Agent) -> uuid.UUID:
    thread_id = uuid.uuid4()
    async with db.sessions.begin() as session:
        session.add(Conversation(id=thread_id, agent_id=agent.id, status="idle"))
    return thread_id


async def test_a_creation_cancelled_at_any_point_starts_the_run_it_wrote_or_frees_its_slot(
    database_url: str, tmp_path: Path
) -> None:
    """A request cancelled while its run's statement may have gone through: the run it wrote
    claimed still starts here (once), and a slot taken for one it did not write is given back."""
    settings = make_settings(database_url, tmp_path, run_workers=4, run_poll_s=30)
    async with open_database(database_url, pool_size=4) as db:
        async with db.sessions.begin() as session:
            agent = Agent(graph_id="chat", name=f"cancelled {uuid.uuid4().hex[:6]}")
            session.add(agent)
        queue = RunQueue(db, settings, database_url=database_url)
        executed: list[uuid.UUID] = []

        async def execute(attempt: Attempt) -> None:
            executed.append(attempt.token.run_id)

        await queue.start(execute)
        outcomes = set()
        try:
            for laps in range(48):
                thread_id = await _idle_thread(db, agent)
                submit = asyncio.create_task(
                    queue.create_at_once(
                        thread_id=thread_id,
                        assistant_id=agent.id,
                        graph_ids=["chat"],
                        kwargs={},
                        metadata={},
                    )
                )
                for _ in range(laps % 16):
                    await asyncio.sleep(0)
                submit.cancel()
                try:
                    await submit
                    outcomes.add("written")
                except asyncio.CancelledError:
                    outcomes.add("cancelled")
                async with db.engine.connect() as conn:
                    runs = [
                        run_id
                        for (run_id,) in await conn.execute(
                            text("SELECT id FROM runs WHERE thread_id = :id"), {"id": thread_id}
                        )
                    ]
                for _ in range(200):  # the settling, and the run's (empty) execution
                    if queue._busy == 0 and all(run_id in executed for run_id in runs):
                        break
                    await asyncio.sleep(0.02)
                assert len(runs) <= 1
                assert [run_id for run_id in executed if run_id in runs] == runs
                assert queue._busy == 0
        finally:
            await queue.aclose()
        assert "cancelled" in outcomes


@contextlib.asynccontextmanager
async def _alone(
    database_url: str, tmp_path: Path, *channels: str, **overrides: Any
) -> AsyncIterator[tuple[Any, str, psycopg.AsyncConnection[Any]]]:
    """One server alone on its database, its polls 30 s (so only a wake-up is quick): a
    langgraph-sdk client of it, a new thread, and a connection LISTENing on `channels`
    (`overrides`: more settings)."""
    settings = make_settings(
        database_url,
        tmp_path,
        langgraph_config=TEST_GRAPHS,
        run_poll_s=30,
        run_events_poll_s=30,
        **overrides,
    )
    with running_server(settings) as url:
        client: Any = get_client(url=url)
        thread_id = str((await client.threads.create())["thread_id"])
        conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
        async with conn:
            for channel in channels:
                await conn.execute(f"LISTEN {channel}")
            yield client, thread_id, conn


async def _told(conn: psycopg.AsyncConnection[Any], seconds: float = 0.5) -> list[str]:
    """The payloads `conn` (LISTENing) receives over the next `seconds`."""
    told: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for note in conn.notifies():
                told.append(note.payload)
    return told


async def test_a_stream_on_an_idle_thread_writes_its_run_in_the_requests_own_task(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-round-trip creation runs in the request's own task, not in a task of its own:
    starting one and hearing back from it took two laps of the event loop on the way to the
    stream's first event, each as long as the ready work of every run executing."""
    entered: list[asyncio.Task[Any] | None] = []
    written: list[asyncio.Task[Any] | None] = []
    submit_at_once, create_run_at_once = RunEngine.submit_at_once, run_store.create_run_at_once

    async def submitting(self: RunEngine, **kwargs: Any) -> Any:
        entered.append(asyncio.current_task())
        return await submit_at_once(self, **kwargs)

    async def writing(db: Database, **kwargs: Any) -> Any:
        written.append(asyncio.current_task())
        return await create_run_at_once(db, **kwargs)

    monkeypatch.setattr(RunEngine, "submit_at_once", submitting)
    monkeypatch.setattr(run_store, "create_run_at_once", writing)
    async with _alone(database_url, tmp_path) as (client, thread_id, _):
        async with asyncio.timeout(10):
            parts = [
                part
                async for part in client.runs.stream(
                    thread_id, "counter", input={"count": 1}, stream_mode="values"
                )
            ]
    assert parts[0].event == "metadata"
    assert [p.data["count"] for p in parts if p.event == "values"][-1] == 112
    assert len(written) == 1
    assert written == entered


async def test_a_stop_that_comes_before_its_attempts_graph_task_exists_is_kept(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run claimed at creation starts in a task of its own, which creates the graph's task
    when it first runs: a cancel in between (a stream's client that left right after its first
    event, with `on_disconnect=cancel`) stops the graph as soon as its task exists; it used to
    be dropped, and the run went on to the end."""
    launch = RunQueue._launch

    def launched_then_stopped(self: RunQueue, run: Any, sent: float) -> None:
        launch(self, run, sent)
        attempt = self.attempts[run.id]
        assert attempt.task is None  # the attempt's own task has not run yet
        attempt.stop("interrupt")

    monkeypatch.setattr(RunQueue, "_launch", launched_then_stopped)
    async with _alone(database_url, tmp_path) as (client, thread_id, _):
        slow = {"configurable": {"delay": 0.3}}
        run = await client.runs.create(thread_id, "steps", input={"log": []}, config=slow)
        async with asyncio.timeout(10):
            await client.runs.join(thread_id, run["run_id"])
        assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"


async def _first_start(client: Any, thread_id: str) -> str:
    """The run id of the first run attempt the thread's stream (joined from its start) shows."""
    joining = await client.threads.join_stream(thread_id, last_event_id="-")
    stream = cast(AsyncGenerator[Any, None], joining)
    async with aclosing(stream) as parts:
        async for part in parts:
            if part.event == "metadata" and "attempt" in part.data:
                return str(part.data["run_id"])
    raise AssertionError("the thread stream ended")


async def test_a_run_created_while_no_other_process_listens_wakes_thread_followers_here_itself(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a run's creation commits no NOTIFY (which would wait
    for PostgreSQL's notification-queue lock, held by every NOTIFYing commit through its WAL
    flush), and this process's followers of the thread's stream are woken all the same, long
    before their poll (30 s here) would find the run."""
    async with _alone(database_url, tmp_path, THREAD_CHANNEL) as (client, thread_id, conn):
        followed = asyncio.create_task(_first_start(client, thread_id))
        await asyncio.sleep(1.0)  # the follower has read the (empty) stream and waits
        run = await client.runs.create(thread_id, "sleeper", input={"count": 0})
        async with asyncio.timeout(10):
            assert await followed == run["run_id"]
        told = await _told(conn)
        assert thread_id not in told
        await client.runs.cancel(thread_id, run["run_id"])
        async with asyncio.timeout(10):  # ended here, not handed back to the module's next server
            await client.runs.join(thread_id, run["run_id"])


async def test_a_run_finished_while_no_other_process_listens_commits_no_notify(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a run's finish (its "done", its last events) commits
    no NOTIFY, and its waiters here get its result all the same."""
    channels = (RUNS_CHANNEL, EVENTS_CHANNEL)
    async with _alone(database_url, tmp_path, *channels) as (client, thread_id, conn):
        async with asyncio.timeout(10):
            values = await client.runs.wait(thread_id, "counter", input={"count": 1})
        assert values["count"] == 112  # 1 + 1 + 10 + 100
        told = await _told(conn)
        (run,) = await client.runs.list(thread_id)
        assert [p for p in told if run["run_id"] in p] == []


async def test_chat_turns_and_claims_while_no_other_process_listens_commit_no_notify(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a /chat turn's creation (claimed at once, or left
    pending) and the dispatcher's claim of a pending run commit no NOTIFY (each would take
    PostgreSQL's notification-queue lock through its WAL flush), and this process's followers of
    the conversation's stream are woken all the same, long before their poll (30 s) would."""
    settings = make_settings(
        database_url,
        tmp_path,
        langgraph_config=TEST_GRAPHS,
        run_workers=1,
        run_poll_s=30,
        run_events_poll_s=30,
    )
    with running_server(settings) as url:
        client: Any = get_client(url=url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            user = await api.post(
                "/users", json={"email": f"{uuid.uuid4().hex}@ex.com", "name": "q"}
            )
            agent = await api.post("/agents", json={"name": "quiet"})
            conversations = [
                (
                    await api.post(
                        "/conversations",
                        json={"user_id": user.json()["id"], "agent_id": agent.json()["id"]},
                    )
                ).json()["id"]
                for _ in range(2)
            ]
            conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
            async with conn:
                for channel in (RUNS_CHANNEL, EVENTS_CHANNEL, THREAD_CHANNEL):
                    await conn.execute(f"LISTEN {channel}")

                async def turn(conversation_id: str) -> dict[str, Any]:
                    body = {"conversation_id": conversation_id, "message": "hello"}
                    response = await api.post("/chat/invoke", json=body)
                    assert response.status_code == 200, response.text
                    answer: dict[str, Any] = response.json()
                    return answer

                # Claimed at creation (the slot is free).
                followed = asyncio.create_task(_first_start(client, conversations[0]))
                await asyncio.sleep(1.0)  # the follower has read the (empty) stream and waits
                async with asyncio.timeout(10):
                    answer = await turn(conversations[0])
                    assert await followed == str(answer["run_id"])
                # Left pending (a sleeper holds the one slot), then claimed by the dispatcher.
                sleeper_thread = str((await client.threads.create())["thread_id"])
                sleeper = await client.runs.create(sleeper_thread, "sleeper", input={"count": 0})
                await asyncio.sleep(0.5)
                followed = asyncio.create_task(_first_start(client, conversations[1]))
                pending = asyncio.create_task(turn(conversations[1]))
                await asyncio.sleep(1.0)
                assert not followed.done()
                await client.runs.cancel(sleeper_thread, sleeper["run_id"])
                async with asyncio.timeout(10):
                    answer = await pending
                    assert await followed == str(answer["run_id"])
                told = await _told(conn)
                assert [p for p in told if p.startswith("new") or p in conversations] == []


async def _behind_a_sleeper(
    client: Any, thread_id: str, strategy: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sleeper run on the thread, then a counter run sent with multitask `strategy` while it
    runs; the counter's run ended as it should within 10 s. Both runs."""
    first = await client.runs.create(thread_id, "sleeper", input={"count": 0})
    await asyncio.sleep(0.5)
    second = await client.runs.create(
        thread_id, "counter", input={"count": 1}, multitask_strategy=strategy
    )
    async with asyncio.timeout(10):
        values = await client.runs.join(thread_id, second["run_id"])
    assert values["count"] == 112
    return first, second


async def test_a_run_submitted_on_a_busy_thread_while_alone_commits_no_notify(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a run created by the full path (here `interrupt` on
    a thread whose run is running) commits no NOTIFY, neither its cancel nor its "new", and is
    run all the same: the cancel and the wake-up are this process's own."""
    channels = (RUNS_CHANNEL, THREAD_CHANNEL)
    async with _alone(database_url, tmp_path, *channels) as (client, thread_id, conn):
        first, _ = await _behind_a_sleeper(client, thread_id, "interrupt")
        assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "interrupted"
        told = await _told(conn)
        # Nor does the interrupted run's finish ("new freed": another run of its thread waits).
        assert told == []


async def test_a_run_queued_behind_another_of_its_thread_starts_at_its_finish_while_alone(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: the finish of a run whose thread has another run
    queued commits no "new freed" NOTIFY (each NOTIFYing commit holds PostgreSQL's
    notification-queue lock through its WAL flush), and the queued run starts at once all the
    same: the finishing process wakes its own dispatcher, long before its poll (30 s)."""
    async with _alone(database_url, tmp_path, RUNS_CHANNEL) as (client, thread_id, conn):
        slow = {"configurable": {"delay": 0.2}}
        first = await client.runs.create(thread_id, "steps", input={"log": []}, config=slow)
        second = await client.runs.create(
            thread_id, "counter", input={"count": 1}, multitask_strategy="enqueue"
        )
        assert (await client.runs.get(thread_id, second["run_id"]))["status"] == "pending"
        async with asyncio.timeout(10):
            values = await client.runs.join(thread_id, second["run_id"])
        assert values["count"] == 112
        assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "success"
        assert await _told(conn) == []


async def _pending_behind_a_busy_slot(client: Any, thread_id: str) -> tuple[str, str]:
    """With one slot: a slow run on `thread_id` takes it, then a run on a new (idle) thread is
    created by the one-round-trip path and left pending. Their run ids."""
    slow = {"configurable": {"delay": 0.4}}  # four steps: ~1.6 s
    first = await client.runs.create(thread_id, "steps", input={"log": []}, config=slow)
    other_thread = str((await client.threads.create())["thread_id"])
    second = await client.runs.create(other_thread, "counter", input={"count": 1})
    assert (await client.runs.get(other_thread, second["run_id"]))["status"] == "pending"
    async with asyncio.timeout(10):  # its poll is 30 s: only a wake-up starts it in time
        values = await client.runs.join(other_thread, second["run_id"])
    assert values["count"] == 112
    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "success"
    return first["run_id"], second["run_id"]


async def test_a_run_created_pending_while_alone_commits_no_new_and_starts_when_a_slot_frees(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database, its one slot busy: a run created on an idle thread
    (`create_at_once`) is left pending and its commit NOTIFYs no "new" (only this process's
    own listener would hear it, and drop it; the commit would take PostgreSQL's notification-
    queue lock through its WAL flush). It starts as soon as the slot frees all the same, long
    before the dispatcher's poll (30 s)."""
    async with _alone(database_url, tmp_path, RUNS_CHANNEL, run_workers=1) as (
        client,
        thread_id,
        conn,
    ):
        await _pending_behind_a_busy_slot(client, thread_id)
        assert await _told(conn) == []


async def test_a_run_created_pending_while_another_process_listens_notifies_new(
    database_url: str, tmp_path: Path
) -> None:
    """The same with another process listening (a connection named as a Switchboard process's
    event listener, that said hello): the pending run's creation NOTIFYs "new" for it."""
    async with _alone(database_url, tmp_path, RUNS_CHANNEL, run_workers=1) as (
        client,
        thread_id,
        conn,
    ):
        peer = await psycopg.AsyncConnection.connect(
            libpq_url(database_url),
            autocommit=True,
            application_name=f"switchboard-events peer-{uuid.uuid4().hex[:8]}",
        )
        async with peer:
            await peer.execute(f"LISTEN {EVENTS_CHANNEL}")
            await peer.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, "peer:hello"))
            await asyncio.sleep(0.5)  # the server has heard the hello
            await _pending_behind_a_busy_slot(client, thread_id)
            told = await _told(conn)
        # Its "new" (the slow run's finish frees no other run of its thread: no "new freed").
        assert [p.rpartition("|")[0] for p in told if p.startswith("new")] == ["new"]


@pytest.mark.parametrize("retries", ["fail until the lease deadline", "fail for good"])
async def test_a_run_queued_behind_another_starts_when_its_finish_loses_its_answer_while_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retries: str
) -> None:
    """One process alone on its database: the finish of a run whose thread has another run
    queued commits, but its answer is lost (the connection cut under it), and no retry gets
    an answer (they fail until the attempt's lease deadline, or with an error not worth a
    retry): the run is given up here, not knowing whether it ended. The queued run starts all
    the same, long before the dispatcher's poll (30 s): the finishing task wakes its own
    dispatcher when its finish ends without an answer."""
    real = run_store.finish_run
    lost: set[uuid.UUID] = set()
    first_id: list[uuid.UUID] = []

    async def finish_run(db: Database, token: Any, **kwargs: Any) -> bool:
        if not first_id or token.run_id != first_id[0]:
            return await real(db, token, **kwargs)
        if token.run_id not in lost:
            lost.add(token.run_id)
            # It commits, but its answer (whether another run of the thread waits) is lost.
            notify = kwargs["notify"]
            await real(db, token, **{**kwargs, "notify": dataclasses.replace(notify, on_busy=None)})
        if retries == "fail for good":
            raise RuntimeError("the finish's connection is in an unknown state")
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(run_store, "finish_run", finish_run)
    async with _alone(database_url, tmp_path, RUNS_CHANNEL, run_lease_s=3.0) as (
        client,
        thread_id,
        conn,
    ):
        slow = {"configurable": {"delay": 0.2}}
        first = await client.runs.create(thread_id, "steps", input={"log": []}, config=slow)
        first_id.append(uuid.UUID(first["run_id"]))
        second = await client.runs.create(
            thread_id, "counter", input={"count": 1}, multitask_strategy="enqueue"
        )
        assert (await client.runs.get(thread_id, second["run_id"]))["status"] == "pending"
        async with asyncio.timeout(15):  # its poll is 30 s: only a wake-up starts it in time
            values = await client.runs.join(thread_id, second["run_id"])
        assert values["count"] == 112
        assert lost == set(first_id)
        assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "success"
        assert await _told(conn) == []


async def test_a_run_queued_behind_one_rolled_back_starts_at_once_while_alone(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a run created with `rollback` on a thread whose run
    is running waits for that run to be rolled back (deleted), and starts as soon as it is,
    long before the dispatcher's poll (30 s): nothing NOTIFYs "new" for it alone, so the
    process that deleted the run wakes its own dispatcher."""
    async with _alone(database_url, tmp_path, RUNS_CHANNEL) as (client, thread_id, conn):
        _, second = await _behind_a_sleeper(client, thread_id, "rollback")
        assert [r["run_id"] for r in await client.runs.list(thread_id)] == [second["run_id"]]
        assert await _told(conn) == []


async def test_a_client_cancel_while_alone_commits_no_notify_and_is_acted_on_here_at_once(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a client's cancel of a run waiting in the queue and
    of one executing here commits no NOTIFY ("cancel", "done": only this process's own
    listener would hear them, and drop them), and is acted on here all the same: the waiter of
    the pending run is woken, the executing run is stopped at once (not at its next lease
    renewal)."""
    async with _alone(database_url, tmp_path, RUNS_CHANNEL) as (client, thread_id, conn):
        running = await client.runs.create(thread_id, "sleeper", input={"count": 0})
        await asyncio.sleep(0.5)
        pending = await client.runs.create(
            thread_id, "counter", input={"count": 1}, multitask_strategy="enqueue"
        )
        assert (await client.runs.get(thread_id, pending["run_id"]))["status"] == "pending"
        joined = asyncio.create_task(client.runs.join(thread_id, pending["run_id"]))
        await asyncio.sleep(0.5)  # the waiter waits
        async with asyncio.timeout(10):
            await client.runs.cancel(thread_id, pending["run_id"])
            await joined
            await client.runs.cancel(thread_id, running["run_id"])
            await client.runs.join(thread_id, running["run_id"])
        for run in (pending, running):
            status = (await client.runs.get(thread_id, run["run_id"]))["status"]
            assert status == "interrupted", (run["run_id"], status)
        assert await _told(conn) == []
