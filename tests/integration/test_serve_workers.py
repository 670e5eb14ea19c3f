"""`switchboard serve --workers N`: N processes on one port sharing the PostgreSQL run queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from langgraph_sdk import get_client
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from tests.support import TEST_GRAPHS, free_port

REPO = Path(__file__).resolve().parents[2]


def _parent_of(pid: int) -> int:
    """The parent process id of `pid` (from /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


async def _runs(url: str, assistant_id: str, count: int) -> list[dict[str, Any]]:
    """`count` runs at once, each on a thread of its own; their final values."""
    client: Any = get_client(url=url)
    try:

        async def one(n: int) -> dict[str, Any]:
            result: dict[str, Any] = await client.runs.wait(
                str(uuid.uuid4()),
                assistant_id,
                input={"log": [f"in{n}"]},
                config={"configurable": {"delay": 0.2}},
                if_not_exists="create",
            )
            return result

        return list(await asyncio.gather(*(one(n) for n in range(count))))
    finally:
        await client.aclose()


def _finished(url: str, graph: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "switchboard_runs_finished_total" and sample.labels["graph"] == graph
    )


def test_serve_with_two_workers_runs_in_both_processes(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute(
            "INSERT INTO agents (graph_id, name) VALUES ('steps', 'steps workers') RETURNING id"
        ).fetchone()
    assert row is not None
    assistant_id = str(row["id"])
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "MIGRATE_ON_START": "false",
        "INGEST_SAMPLES_ON_START": "false",
        "LOG_LEVEL": "warning",
        "RUN_WORKERS": "2",  # 8 runs at once need both processes
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "2",
        "CHECKPOINT_POOL_SIZE": "3",
    }
    args = [sys.executable, "-m", "server.cli", "serve", "--workers", "2", "--port", str(port)]
    process = subprocess.Popen(
        [*args, "--config", str(TEST_GRAPHS)], cwd=REPO, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        ready = 0
        while ready < 3:  # a few answers in a row: both workers are up by then, usually
            assert process.poll() is None, f"serve --workers 2 exited with {process.returncode}"
            assert time.monotonic() < deadline, "serve --workers 2 did not start in 180 s"
            try:
                ready = ready + 1 if httpx.get(f"{url}/ok", timeout=2).status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.5)
        results: list[dict[str, Any]] = []
        owners: set[int] = set()
        for _ in range(5):  # until both processes have taken runs (each round: 8 at once)
            results += asyncio.run(_runs(url, assistant_id, 8))
            with psycopg.connect(database_url, row_factory=dict_row) as conn:
                rows = conn.execute(
                    "SELECT status, lease_owner FROM runs WHERE assistant_id = %s",
                    (assistant_id,),
                ).fetchall()
            owners = {int(r["lease_owner"].split(":")[1]) for r in rows}
            if len(owners) == 2:
                break
        assert {r["status"] for r in rows} == {"success"}
        assert all(r["log"][1:] == ["s1", "s2", "s3", "s4"] for r in results)
        assert len(owners) == 2, owners  # both processes executed runs
        assert process.pid not in owners
        assert {_parent_of(pid) for pid in owners} == {process.pid}  # the two workers of serve
        # One multiprocess metrics directory: whichever worker answers /metrics counts the
        # runs both finished.
        for _ in range(6):
            assert _finished(url, "steps") == len(rows)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
