"""Submitting runs: the one-round-trip creation on an idle thread, cancelled at any point, and
who it wakes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import psycopg
from langgraph_sdk import get_client
from sqlalchemy import text

from server.runs.events import CHANNEL as EVENTS_CHANNEL
from server.runs.queue import CHANNEL as RUNS_CHANNEL
from server.runs.queue import Attempt, RunQueue
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


async def test_a_run_created_while_no_other_process_listens_wakes_thread_followers_here_itself(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a run's creation commits no NOTIFY (which would wait
    for PostgreSQL's notification-queue lock, held by every NOTIFYing commit through its WAL
    flush), and this process's followers of the thread's stream are woken all the same, long
    before their poll (30 s here) would find the run."""
    settings = make_settings(
        database_url, tmp_path, langgraph_config=TEST_GRAPHS, run_events_poll_s=30
    )
    with running_server(settings) as url:
        client: Any = get_client(url=url)
        thread_id = str((await client.threads.create())["thread_id"])
        conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {THREAD_CHANNEL}")

            async def first_start() -> str:
                joining = await client.threads.join_stream(thread_id, last_event_id="-")
                stream = cast(AsyncGenerator[Any, None], joining)
                async with aclosing(stream) as parts:
                    async for part in parts:
                        if part.event == "metadata" and "attempt" in part.data:
                            return str(part.data["run_id"])
                raise AssertionError("the thread stream ended")

            followed = asyncio.create_task(first_start())
            await asyncio.sleep(1.0)  # the follower has read the (empty) stream and waits
            run = await client.runs.create(thread_id, "sleeper", input={"count": 0})
            async with asyncio.timeout(10):
                assert await followed == run["run_id"]
            told: list[str] = []
            try:
                async with asyncio.timeout(0.5):
                    async for note in conn.notifies():
                        told.append(note.payload)
            except TimeoutError:
                pass
            assert thread_id not in told
            await client.runs.cancel(thread_id, run["run_id"])


async def test_a_run_finished_while_no_other_process_listens_commits_no_notify(
    database_url: str, tmp_path: Path
) -> None:
    """One process alone on its database: a run's finish (its "done", its last events) commits
    no NOTIFY, and its waiters here get its result all the same."""
    settings = make_settings(
        database_url, tmp_path, langgraph_config=TEST_GRAPHS, run_poll_s=30, run_events_poll_s=30
    )
    with running_server(settings) as url:
        client: Any = get_client(url=url)
        thread_id = str((await client.threads.create())["thread_id"])
        conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {RUNS_CHANNEL}")
            await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            async with asyncio.timeout(10):
                values = await client.runs.wait(thread_id, "counter", input={"count": 1})
            assert values["count"] == 112  # 1 + 1 + 10 + 100
            told: list[str] = []
            try:
                async with asyncio.timeout(0.5):
                    async for note in conn.notifies():
                        told.append(note.payload)
            except TimeoutError:
                pass
            (run,) = await client.runs.list(thread_id)
            assert [p for p in told if run["run_id"] in p] == []
