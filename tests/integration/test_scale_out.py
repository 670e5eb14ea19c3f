"""Scale-out on real PostgreSQL: three `switchboard serve` processes on one database.

200 runs submitted at once all finish, each node executing once (every execution is a row of
`node_executions`, written by the node itself); a process killed with SIGKILL mid-load has its
runs finished by the others once their leases lapse; a stream joined on a process that does not
run it replays with no gap and no duplicate, checked by event id against the stored log. The
processes share one PROMETHEUS_MULTIPROC_DIR, so any one's /metrics counts every one's runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, SWITCHBOARD, free_port, served_by

PROJECT = ROOT / "tests" / "projects" / "scale" / "langgraph.json"
NODES = ["n1", "n2", "n3", "n4"]
LEASE_S = 10.0  # short enough for the kill test, long enough for renewals on a busy machine
FINAL = ("success", "error", "timeout", "interrupted")


@dataclass
class Server:
    """One `switchboard serve` process of the test."""

    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def servers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Three server processes on the module's database, each with its own data folder, a short
    lease, and one shared metrics directory."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE node_executions (run_id text, node text NOT NULL, pid int NOT NULL, "
            "at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    root = tmp_path_factory.mktemp("scale")
    shared_metrics = root / "metrics"
    shared_metrics.mkdir()
    base_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NODE_EXECUTIONS_URL": database_url,
        "MIGRATE_ON_START": "false",
        "INGEST_SAMPLES_ON_START": "false",
        "LOG_LEVEL": "warning",
        "RUN_LEASE_S": str(LEASE_S),
        "RUN_WORKERS": "8",
        # The test PostgreSQL is shared (max_connections 100): about 15 connections each.
        "DB_POOL_SIZE": "5",
        "DB_MAX_OVERFLOW": "3",
        "DB_POOL_TIMEOUT": "60",
        "CHECKPOINT_POOL_SIZE": "3",
        "RUN_POLL_S": "0.5",
        "RUNS_PER_MINUTE": "0",
        "RUNS_IN_FLIGHT_PER_USER": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(shared_metrics),
    }
    with ExitStack() as stack:
        started = []
        for n in range(3):
            port = free_port()
            env = {**base_env, "PORT": str(port), "DATA_DIR": str(root / f"data{n}")}
            url = f"http://127.0.0.1:{port}"
            command = [str(SWITCHBOARD), "serve", "--config", str(PROJECT)]
            process = stack.enter_context(
                served_by(command, cwd=PROJECT.parent, env=env, log=root / f"server{n}.log",
                          url=url, timeout_s=120)
            )  # fmt: skip
            started.append(Server(url, process))
        yield started


def _final_statuses(database_url: str, run_ids: list[str], *, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT id::text, status FROM runs WHERE id = ANY(%s::uuid[])", (run_ids,)
            ).fetchall()
            statuses = {run_id: status for run_id, status in rows}
            if len(statuses) == len(run_ids) and all(s in FINAL for s in statuses.values()):
                return statuses
            if time.monotonic() > deadline:
                left = Counter(statuses.values())
                raise AssertionError(f"runs not final after {timeout_s} s: {left}")
            time.sleep(0.25)


def _executions(database_url: str, run_ids: list[str]) -> list[tuple[str, str, int]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT run_id, node, pid FROM node_executions WHERE run_id = ANY(%s)", (run_ids,)
        ).fetchall()
    return [(str(r), str(n), int(p)) for r, n, p in rows]


async def _submit(servers: list[Server], count: int, *, delay: float) -> list[str]:
    """`count` runs on new threads, all at once, spread over the servers; their ids."""
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(n: int) -> str:
            url = servers[n % len(servers)].url
            response = await client.post(
                f"{url}/threads/{uuid.uuid4()}/runs",
                json={"assistant_id": "relay", "input": {"log": []}, "if_not_exists": "create",
                      "config": {"configurable": {"delay": delay}}},
            )  # fmt: skip
            assert response.status_code == 200, response.text
            return str(response.json()["run_id"])

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    wanted = set(labels.items())
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and wanted <= set(sample.labels.items())
    )


def test_200_runs_at_once_all_finish_each_node_executing_once(
    servers: list[Server], database_url: str
) -> None:
    run_ids = asyncio.run(_submit(servers, 200, delay=0.02))
    statuses = _final_statuses(database_url, run_ids, timeout_s=60)
    assert Counter(statuses.values()) == {"success": 200}
    executions = _executions(database_url, run_ids)
    per_node = Counter((run_id, node) for run_id, node, _ in executions)
    assert set(per_node) == {(run_id, node) for run_id in run_ids for node in NODES}
    twice = sorted(key for key, n in per_node.items() if n > 1)
    assert not twice, f"nodes executed more than once: {_explain(database_url, twice)}"
    assert len({pid for _, _, pid in executions}) == 3  # every process took a share
    # One shared metrics directory: any process answers for all three.
    for server in servers:
        finished = _metric(server.url, "switchboard_runs_finished_total", graph="relay")
        assert finished == 200


def test_a_process_killed_mid_load_has_its_runs_finished_by_the_others(
    servers: list[Server], database_url: str
) -> None:
    run_ids = asyncio.run(_submit(servers, 60, delay=0.3))
    victim = servers[1]
    pid = victim.process.pid
    # Wait until the victim is running some of them, then kill it outright.
    deadline = time.monotonic() + 30
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            held = [
                str(r)
                for (r,) in conn.execute(
                    "SELECT id FROM runs WHERE id = ANY(%s::uuid[]) AND status = 'running' "
                    "AND split_part(lease_owner, ':', 2) = %s",
                    (run_ids, str(pid)),
                ).fetchall()
            ]
            if held:
                break
            assert time.monotonic() < deadline, "the victim never ran any of the runs"
            time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)
    killed_at = time.time()
    victim.process.wait(10)
    survivors = [s for s in servers if s is not victim]

    statuses = _final_statuses(database_url, run_ids, timeout_s=60)
    assert Counter(statuses.values()) == {"success": len(run_ids)}
    executions = _executions(database_url, run_ids)
    per_node = Counter((run_id, node) for run_id, node, _ in executions)
    assert set(per_node) == {(run_id, node) for run_id in run_ids for node in NODES}
    repeated = {run_id for (run_id, _), n in per_node.items() if n > 1}
    # At least once from the last checkpoint: only the victim's runs repeat a node, and only
    # the node(s) in flight when it died.
    assert repeated <= set(held)
    assert all(n <= 2 for n in per_node.values())
    for run_id in held:
        finishers = {p for r, node, p in executions if r == run_id and node == "n4"}
        assert pid not in finishers or len(finishers) > 1
    with psycopg.connect(database_url, autocommit=True) as conn:
        owners = conn.execute(
            "SELECT split_part(lease_owner, ':', 2), attempt FROM runs WHERE id = ANY(%s::uuid[])",
            (held,),
        ).fetchall()
    assert all(owner != str(pid) and attempt >= 2 for owner, attempt in owners)
    # Every thread ends with the four steps exactly once, read on a surviving process.
    with httpx.Client(base_url=survivors[0].url, timeout=30) as client:
        for run_id in held:
            thread_id = _thread_of(database_url, run_id)
            state = client.get(f"/threads/{thread_id}/state").json()
            assert state["values"]["log"] == NODES
    assert time.time() - killed_at < 60


def _explain(database_url: str, keys: list[tuple[str, str]]) -> list[Any]:
    """The executions, attempts and events of the runs behind `keys` (for a failure message)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [
            (
                key,
                conn.execute(
                    "SELECT pid, at FROM node_executions WHERE run_id = %s AND node = %s",
                    key,
                ).fetchall(),
                conn.execute(
                    "SELECT attempt, status FROM runs WHERE id = %s::uuid", (key[0],)
                ).fetchone(),
                conn.execute(
                    "SELECT seq, event FROM run_events WHERE run_id = %s::uuid ORDER BY seq",
                    (key[0],),
                ).fetchall(),
            )
            for key in keys[:3]
        ]


def _thread_of(database_url: str, run_id: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT thread_id::text FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _read_stream(url: str, *, last_event_id: str | None, stop_after: int | None) -> list[int]:
    """The event ids of a run stream read from `url`, up to `stop_after` events."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    ids: list[int] = []
    with (
        httpx.Client(timeout=60) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("id:"):
                ids.append(int(line[3:].strip()))
            if line.startswith("event:") and line[6:].strip() in ("end", "error"):
                break
            if stop_after is not None and len(ids) >= stop_after:
                break
    return ids


def test_a_stream_joined_on_another_process_replays_without_gaps_or_duplicates(
    servers: list[Server], database_url: str
) -> None:
    alive = [s for s in servers if s.process.poll() is None]
    assert len(alive) >= 2
    thread_id = str(uuid.uuid4())
    created = httpx.post(
        f"{alive[0].url}/threads/{thread_id}/runs",
        json={"assistant_id": "relay", "input": {"log": []}, "if_not_exists": "create",
              "stream_mode": ["values", "updates"],
              "config": {"configurable": {"delay": 0.4}}},
        timeout=30,
    ).json()  # fmt: skip
    run_id = created["run_id"]
    # Join on a process that does not execute the run.
    deadline = time.monotonic() + 20
    owner = None
    with psycopg.connect(database_url, autocommit=True) as conn:
        while owner is None:
            row = conn.execute(
                "SELECT split_part(lease_owner, ':', 2) FROM runs WHERE id = %s AND "
                "status = 'running'",
                (run_id,),
            ).fetchone()
            owner = row[0] if row else None
            assert time.monotonic() < deadline
            time.sleep(0.02)
    others = [s for s in alive if str(s.process.pid) != owner]
    assert others, "every live process runs it?"
    path = f"/threads/{thread_id}/runs/{run_id}/stream"
    first = _read_stream(others[0].url + path, last_event_id=None, stop_after=3)
    rest = _read_stream(others[-1].url + path, last_event_id=str(first[-1]), stop_after=None)
    seen = first + rest
    with psycopg.connect(database_url, autocommit=True) as conn:
        stored = [
            int(seq)
            for (seq,) in conn.execute(
                "SELECT seq FROM run_events WHERE run_id = %s ORDER BY seq", (run_id,)
            ).fetchall()
        ]
    assert len(seen) == len(set(seen)), f"duplicated events: {seen}"
    assert seen == stored == list(range(1, len(stored) + 1))
    assert len(stored) >= 6  # metadata, the values and updates of four nodes, end
