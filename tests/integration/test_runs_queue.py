"""The run queue across workers and processes: fenced leases, resume after `kill -9`, hand-back
on SIGTERM, two servers sharing one database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from psycopg.rows import dict_row

from stores.sql import runs as run_store
from stores.sql.runs import RunToken
from tests.integration.run_graphs import COMPLETED, TRACE
from tests.support import TEST_GRAPHS, free_port, make_settings, running_server

REPO = Path(__file__).resolve().parents[2]
STEPS = ["s1", "s2", "s3", "s4"]
# The servers' lease. On a loaded 2-core machine (load ~10) a renewal can take over a second
# to go through, and a 2 s lease (stopped after 1.67 s without one) was lost mid-run, so runs
# were reclaimed that no test meant to reclaim (attempt 2 or 3 where 1 or 2 was asserted).
# 10 s: renewals every 3.3 s, a run stopped only after 8.3 s without any. Only the kill test
# waits for a lease to lapse.
LEASE_S = 10.0
# Waits for an observable condition (a server up, a checkpoint written, a process gone): the
# bound only says when to give up, so it is generous; a pass never waits for it.
PATIENCE_S = 300.0


def sql(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of a query on the module's database."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return list(conn.execute(query, args).fetchall())


@contextmanager
def server_process(
    database_url: str, data_dir: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m server.cli serve` on the database, with the test graphs and `LEASE_S`."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MIGRATE_ON_START": "false",
        "INGEST_SAMPLES_ON_START": "false",
        "LOG_LEVEL": "warning",
        "LANGGRAPH_CONFIG": str(TEST_GRAPHS),
        "RUN_LEASE_S": str(LEASE_S),
        "RUN_POLL_S": "0.3",
    }
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code < 600:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start within {PATIENCE_S} s")
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=PATIENCE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def steps(database_url: str) -> str:
    rows = sql(
        database_url,
        "INSERT INTO agents (graph_id, name) VALUES ('steps', 'steps') RETURNING id",
    )
    return str(rows[0]["id"])


def run_checkpoints(database_url: str, run_id: str) -> list[dict[str, Any]]:
    return sql(
        database_url,
        "SELECT metadata FROM checkpoints WHERE checkpoint_ns = '' "
        "AND metadata->>'run_id' = %s ORDER BY checkpoint_id",
        run_id,
    )


def start_slow_run_past_step_one(url: str, database_url: str, thread_id: str, steps: str) -> str:
    """Create a background run whose steps sleep 1 s; return its id once s1 is checkpointed."""
    response = httpx.post(
        f"{url}/threads/{thread_id}/runs",
        json={
            "assistant_id": steps,
            "input": {"log": ["in"]},
            "config": {"configurable": {"delay": 1.0}},
            "if_not_exists": "create",
        },
        timeout=10,
    )
    response.raise_for_status()
    run_id: str = response.json()["run_id"]
    # Claimed at creation by the server that created it (it had a free slot, the thread none
    # other): the row says so at once, as a claim by a worker would.
    assert response.json()["status"] == "running"
    [row] = sql(database_url, "SELECT status, attempt, lease_owner FROM runs WHERE id = %s", run_id)
    assert (row["status"], row["attempt"]) == ("running", 1)
    assert row["lease_owner"] is not None
    deadline = time.monotonic() + PATIENCE_S
    while not any(
        c["metadata"].get("step", -1) >= 1 for c in run_checkpoints(database_url, run_id)
    ):
        assert time.monotonic() < deadline, "the run never got past s1"
        time.sleep(0.1)
    return run_id


def test_resume_after_kill_continues_from_the_last_checkpoint(
    database_url: str, tmp_path: Path, steps: str
) -> None:
    thread_id = str(uuid.uuid4())
    with server_process(database_url, tmp_path / "a") as (url, process):
        run_id = start_slow_run_past_step_one(url, database_url, thread_id, steps)
        os.kill(process.pid, signal.SIGKILL)  # mid-run: s2 is sleeping
        process.wait()
    [row] = sql(database_url, "SELECT status, attempt, lease_owner FROM runs WHERE id = %s", run_id)
    assert row["status"] == "running"
    assert row["attempt"] == 1  # claimed at creation by the killed process, never by a worker
    assert int(row["lease_owner"].split(":")[1]) == process.pid
    with server_process(database_url, tmp_path / "b") as (url, _):
        result = asyncio.run(_join(url, thread_id, run_id))
    assert result["log"] == ["in", *STEPS]  # s1 ran once, the input was not applied twice
    [row] = sql(database_url, "SELECT status, attempt FROM runs WHERE id = %s", run_id)
    assert row["status"] == "success"
    assert row["attempt"] == 2
    checkpoints = [c["metadata"] for c in run_checkpoints(database_url, run_id)]
    assert [c["source"] for c in checkpoints].count("input") == 1
    step_numbers = [c["step"] for c in checkpoints]
    assert step_numbers == sorted(set(step_numbers))  # no step written twice
    attempts = {c["step"]: c["run_attempt"] for c in checkpoints}
    assert attempts[-1] == 1
    assert attempts[1] == 1  # s1's checkpoint came from the killed process
    assert attempts[max(attempts)] == 2  # the rest from the second one


def test_a_server_stopped_gracefully_hands_its_run_back_at_once(
    database_url: str, tmp_path: Path, steps: str
) -> None:
    thread_id = str(uuid.uuid4())
    with server_process(database_url, tmp_path / "c") as (url, process):
        run_id = start_slow_run_past_step_one(url, database_url, thread_id, steps)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=PATIENCE_S)
    [row] = sql(database_url, "SELECT status, lease_owner, attempt FROM runs WHERE id = %s", run_id)
    assert row["status"] == "pending"  # released, not left to its lease
    assert row["lease_owner"] is None
    with server_process(database_url, tmp_path / "d") as (url, _):
        result = asyncio.run(_join(url, thread_id, run_id))
    assert result["log"] == ["in", *STEPS]
    [row] = sql(database_url, "SELECT status, attempt FROM runs WHERE id = %s", run_id)
    assert row["status"] == "success"
    assert row["attempt"] == 2


async def _join(url: str, thread_id: str, run_id: str) -> Any:
    client = get_client(url=url)
    try:
        return await client.runs.join(thread_id, run_id)
    finally:
        await client.aclose()


async def _share(urls: list[str], assistant: str, count: int) -> list[tuple[str, str, Any]]:
    clients: list[Any] = [get_client(url=url) for url in urls]
    try:
        created = []
        for n in range(count):
            thread_id = str(uuid.uuid4())
            run = await clients[n % 2].runs.create(
                thread_id,
                assistant,
                input={"log": [f"in{n}"]},
                config={"configurable": {"delay": 0.05}},
                if_not_exists="create",
            )
            created.append((thread_id, run["run_id"], n))
        results = await asyncio.gather(*(clients[n % 2 - 1].runs.join(t, r) for t, r, n in created))
        return [(t, r, result) for (t, r, _), result in zip(created, results, strict=True)]
    finally:
        for client in clients:
            await client.aclose()


async def _cancel_across(database_url: str, urls: dict[int, str], assistant: str) -> Any:
    """Start a slow run, cancel it through the server that does not run it; the run's row."""
    clients: dict[int, Any] = {pid: get_client(url=url) for pid, url in urls.items()}
    try:
        some = next(iter(clients.values()))
        thread_id = str(uuid.uuid4())
        run = await some.runs.create(
            thread_id,
            assistant,
            input={"log": []},
            # 4 steps of 5 s: the cancel lands mid-run however slowly it travels (it ends
            # the run at once, so the test does not wait for them).
            config={"configurable": {"delay": 5.0}},
            if_not_exists="create",
        )
        deadline = time.monotonic() + PATIENCE_S
        while (await some.runs.get(thread_id, run["run_id"]))["status"] != "running":
            assert time.monotonic() < deadline, "the run never started"
            await asyncio.sleep(0.05)
        [row] = sql(database_url, "SELECT lease_owner FROM runs WHERE id = %s", run["run_id"])
        owner_pid = int(row["lease_owner"].split(":")[1])
        other = next(client for pid, client in clients.items() if pid != owner_pid)
        await other.runs.cancel(thread_id, run["run_id"], wait=True)
        result = await other.runs.join(thread_id, run["run_id"])
        assert len(result.get("log", [])) < len(STEPS)  # the owner stopped it mid-way
        return await other.runs.get(thread_id, run["run_id"])
    finally:
        for client in clients.values():
            await client.aclose()


def test_two_servers_share_the_runs_and_never_run_one_twice(
    database_url: str, tmp_path: Path, steps: str
) -> None:
    with (
        server_process(database_url, tmp_path / "one") as (one, first),
        server_process(database_url, tmp_path / "two") as (two, second),
    ):
        outcomes = asyncio.run(_share([one, two], steps, 20))
        urls = {first.pid: one, second.pid: two}
        cancelled = asyncio.run(_cancel_across(database_url, urls, steps))
    assert cancelled["status"] == "interrupted"
    for n, (_, _, result) in enumerate(outcomes):
        assert result["log"] == [f"in{n}", *STEPS]  # every node ran exactly once
    ids = [run_id for _, run_id, _ in outcomes]
    rows = sql(
        database_url,
        "SELECT status, attempt, lease_owner FROM runs WHERE id = ANY(%s::uuid[])",
        ids,
    )
    assert len(rows) == 20
    assert {r["status"] for r in rows} == {"success"}
    assert {r["attempt"] for r in rows} == {1}  # claimed once each
    owners = {r["lease_owner"] for r in rows}
    assert len(owners) == 2  # both processes took a share
    for run_id in ids:
        inputs = [
            c for c in run_checkpoints(database_url, run_id) if c["metadata"]["source"] == "input"
        ]
        assert len(inputs) == 1


async def _stalled_renewals_scenario(url: str, steps: str, thread_id: str) -> tuple[Any, str]:
    client: Any = get_client(url=url)
    try:
        run = await client.runs.create(
            thread_id,
            steps,
            input={"log": ["in"]},
            # The first attempt stalls in s3 (after s1's and s2's checkpoints), so its worker
            # stops it mid-node however long the machine takes to get there; the second
            # attempt runs s3 and s4.
            config={"configurable": {"delay": 0.1, "stall_at": "s3"}},
            durability="sync",  # each node's checkpoint is saved before the next one starts
            if_not_exists="create",
        )
        return await client.runs.join(thread_id, run["run_id"]), run["run_id"]
    finally:
        await client.aclose()


def test_a_worker_that_cannot_renew_its_lease_stops_its_run_before_another_takes_it(
    database_url: str, tmp_path: Path, steps: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewals of the first attempt hang once it is in s3: its worker stops the run itself
    before the lease lapses, another worker of the same process reclaims it, and no node runs
    twice (nor do the two attempts ever run at once)."""
    thread_id = str(uuid.uuid4())
    real_renew = run_store.renew_leases
    stalled: list[RunToken] = []

    async def renew_or_hang(conn: Any, tokens: list[RunToken], *, lease_s: float) -> Any:
        if (thread_id, 1, "s3", "start") in TRACE and any(t.attempt == 1 for t in tokens):
            stalled.extend(tokens)
            await asyncio.sleep(3600)  # the database never answers this attempt any more
        return await real_renew(conn, tokens, lease_s=lease_s)

    monkeypatch.setattr(run_store, "renew_leases", renew_or_hang)
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        # The second attempt renews for real: a lease long enough that a loaded machine
        # does not starve its renewals (the first one is stopped 5 s after its last renewal).
        run_lease_s=6.0,
        run_poll_s=0.2,
        run_workers=2,
    )
    with running_server(settings) as url:
        result, run_id = asyncio.run(_stalled_renewals_scenario(url, steps, thread_id))
    assert stalled  # the first attempt did try to renew
    assert result["log"] == ["in", *STEPS]
    assert [COMPLETED[(thread_id, node)] for node in STEPS] == [1, 1, 1, 1]  # each node once
    trace = [(attempt, node, what) for t, attempt, node, what in TRACE if t == thread_id]
    assert trace == [
        (1, "s1", "start"),
        (1, "s1", "end"),
        (1, "s2", "start"),
        (1, "s2", "end"),
        (1, "s3", "start"),
        (1, "s3", "stopped"),  # by its own worker, before the second attempt began
        (2, "s3", "start"),
        (2, "s3", "end"),
        (2, "s4", "start"),
        (2, "s4", "end"),
    ]
    [row] = sql(database_url, "SELECT status, attempt FROM runs WHERE id = %s", run_id)
    assert (row["status"], row["attempt"]) == ("success", 2)
    events = sql(
        database_url, "SELECT event, data FROM run_events WHERE run_id = %s ORDER BY seq", run_id
    )
    assert [e["data"]["attempt"] for e in events if e["event"] == "metadata"] == [1, 2]
    assert [e["event"] for e in events].count("end") == 1  # exactly one attempt finished
    attempts = [c["metadata"]["run_attempt"] for c in run_checkpoints(database_url, run_id)]
    assert attempts == sorted(attempts)  # nothing of attempt 1 after attempt 2 began


async def _run_through_a_saturated_pool(
    url: str, database_url: str, steps: str, thread_id: str, hold_s: float
) -> tuple[dict[str, Any], str, int]:
    """Run the steps graph (1 s a node) on `thread_id` while the server's only pooled
    connection is stuck behind a row lock for `hold_s` with more requests queued behind it.
    Returns the run's result, its id, and how many server backends waited on the lock."""
    client: Any = get_client(url=url)
    try:
        blocker = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread_id,
            steps,
            input={"log": ["in"]},
            config={"configurable": {"delay": 1.0}},
            if_not_exists="create",
        )
        for _ in range(600):  # until claimed: from then on it must renew its lease
            if (await client.runs.get(thread_id, run["run_id"]))["status"] == "running":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the run was never claimed")
        async with await psycopg.AsyncConnection.connect(database_url) as lock:
            await lock.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (blocker,))
            # Slow requests: the first takes the pool's only connection and waits on the lock,
            # the others wait for the pool.
            patches = [
                asyncio.create_task(client.threads.update(blocker, metadata={"n": n}))
                for n in range(5)
            ]
            await asyncio.sleep(hold_s / 2)
            cursor = await lock.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            row = await cursor.fetchone()
            waiting = int(row[0]) if row else 0
            await asyncio.sleep(hold_s / 2)
            await lock.commit()  # the lock goes: the requests go through
        await asyncio.gather(*patches, return_exceptions=True)
        return await client.runs.join(thread_id, run["run_id"]), run["run_id"], waiting
    finally:
        await client.aclose()


def test_lease_renewals_do_not_wait_behind_request_traffic_for_a_pooled_connection(
    database_url: str, tmp_path: Path, steps: str
) -> None:
    """The request pool (1 connection, no overflow) is held by a slow request for three
    lease periods while a run holds a 2 s lease: its renewals still go through (the renewer
    has a connection of its own), so the run is never stopped nor reclaimed: attempt 1 runs
    each node once."""
    thread_id = str(uuid.uuid4())
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        run_lease_s=2.0,
        run_poll_s=0.2,
        run_workers=2,
        db_pool_size=1,
        db_max_overflow=0,
    )
    with running_server(settings) as url:
        result, run_id, waiting = asyncio.run(
            _run_through_a_saturated_pool(url, database_url, steps, thread_id, hold_s=6.0)
        )
    assert waiting == 1  # the pool's only connection was stuck on the lock
    assert result["log"] == ["in", *STEPS]
    assert [COMPLETED[(thread_id, node)] for node in STEPS] == [1, 1, 1, 1]  # each node once
    [row] = sql(database_url, "SELECT status, attempt FROM runs WHERE id = %s", run_id)
    assert (row["status"], row["attempt"]) == ("success", 1)  # never reclaimed
    events = sql(
        database_url, "SELECT event, data FROM run_events WHERE run_id = %s ORDER BY seq", run_id
    )
    assert [e["data"]["attempt"] for e in events if e["event"] == "metadata"] == [1]


async def _inline_and_queued(url: str, steps: str, thread_id: str) -> dict[str, Any]:
    client: Any = get_client(url=url)
    try:
        first = await client.runs.create(
            thread_id,
            steps,
            input={"log": ["first"]},
            config={"configurable": {"delay": 0.3}},
            if_not_exists="create",
        )
        # The thread is busy with `first`: this one waits its turn in the queue.
        second = await client.runs.create(thread_id, steps, input={"log": ["second"]})
        # Nothing else on its thread and nothing delayed: claimed at creation too.
        other = await client.runs.create(
            str(uuid.uuid4()), steps, input={"log": ["other"]}, if_not_exists="create"
        )
        results = {
            name: await client.runs.join(run["thread_id"], run["run_id"])
            for name, run in (("first", first), ("second", second), ("other", other))
        }
        return {"created": {"first": first, "second": second, "other": other}, **results}
    finally:
        await client.aclose()


def test_a_run_with_a_free_slot_starts_at_creation_and_one_on_a_busy_thread_queues(
    database_url: str, tmp_path: Path, steps: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run created while the process has a free slot and its thread no other run is written
    already claimed (running, attempt 1, this process's lease, its place in the thread's
    stream) and executes here without going through the queue: no worker claims it. A run
    on a busy thread is written pending and a worker claims it once the thread is free."""
    claimed: list[str] = []
    real_claim = run_store.claim_run

    async def recording_claim(*args: Any, **kwargs: Any) -> Any:
        claim = await real_claim(*args, **kwargs)
        if claim is not None:
            claimed.append(str(claim.run.id))
        return claim

    monkeypatch.setattr(run_store, "claim_run", recording_claim)
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        run_lease_s=LEASE_S,
        run_poll_s=0.2,
        run_workers=4,
    )
    thread_id = str(uuid.uuid4())
    with running_server(settings) as url:
        outcome = asyncio.run(_inline_and_queued(url, steps, thread_id))
    created = outcome["created"]
    assert created["first"]["status"] == "running"  # as written by the creation
    assert created["other"]["status"] == "running"
    assert created["second"]["status"] == "pending"
    assert outcome["first"]["log"] == ["first", *STEPS]
    assert outcome["second"]["log"] == ["first", *STEPS, "second", *STEPS]
    assert outcome["other"]["log"] == ["other", *STEPS]
    ids = {name: run["run_id"] for name, run in created.items()}
    assert claimed == [ids["second"]]  # only the queued run went through a claim
    rows = {
        str(r["id"]): r
        for r in sql(
            database_url,
            "SELECT id, status, attempt, lease_owner, stream_position FROM runs"
            " WHERE id = ANY(%s::uuid[])",
            list(ids.values()),
        )
    }
    for run_id in ids.values():
        row = rows[run_id]
        assert (row["status"], row["attempt"]) == ("success", 1)
        assert row["stream_position"] is not None  # the thread stream's place, as a claim sets
    owners = {rows[run_id]["lease_owner"] for run_id in ids.values()}
    assert len(owners) == 1  # the one process
    # The thread stream orders them as they ran.
    first, second = rows[ids["first"]], rows[ids["second"]]
    assert first["stream_position"] < second["stream_position"]
