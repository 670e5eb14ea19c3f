"""Identity benchmark: what authentication and ownership filters cost per request.

Three servers on one database, measured in interleaved rounds so load changes hit all alike:
open (`AUTH=none`, the baseline: no key, no filter), the built-in authenticator with its key
cache (`AUTH_CACHE_S=10`, the default) and without it (`AUTH_CACHE_S=0`: the key is checked in
PostgreSQL on every request). The database holds THREADS threads of USERS users (plus alice's),
so the filtered reads and searches run against other people's rows, as they would in production.

Requests: a thread read (`GET /threads/{id}`, filtered by owner), a search
(`POST /threads/search`, limit 10, filtered), and a run (`POST /runs/wait` of a one-node graph:
the rate window, the in-flight cap and the run's creator on top).

Run with `python -m bench auth`; results go to bench/results/auth.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.chat_bench import admin_url, scratch
from stores.sql.database import open_database
from stores.sql.keys import create_key
from tests.integration.auth_support import BUILTIN_PROJECT
from tests.support import make_settings, running_server

RESULTS = Path(__file__).parent / "results" / "auth.md"
USERS = 50
THREADS = 20_000
ROUNDS = 200
ASK: Any = {"messages": [{"role": "user", "content": "who am I?"}]}


def _seed(database: str) -> str:
    """Other users' threads, and alice's key."""
    with psycopg.connect(database) as conn, conn.cursor() as cursor:
        rows = [
            (str(uuid.uuid4()), json.dumps({"owner": f"user-{n % USERS}", "n": n}))
            for n in range(THREADS)
        ]
        cursor.executemany(
            "INSERT INTO conversations (id, metadata, status) VALUES (%s, %s::jsonb, 'idle')", rows
        )
        conn.execute("ANALYZE conversations")

    async def key() -> str:
        async with open_database(database, pool_size=1, max_overflow=0) as db:
            return (await create_key(db, email="alice@example.com"))[0]

    return asyncio.run(key())


def _measure(urls: dict[str, str], key: str) -> dict[tuple[str, str], list[float]]:
    times: dict[tuple[str, str], list[float]] = {}
    clients = {
        name: httpx.Client(
            base_url=url, timeout=60, headers={} if name == "open" else {"X-Api-Key": key}
        )
        for name, url in urls.items()
    }
    try:
        threads = {
            name: client.post("/threads", json={}).json()["thread_id"]
            for name, client in clients.items()
        }
        work: dict[str, Callable[[httpx.Client, str], httpx.Response]] = {
            "GET /threads/{id}": lambda c, t: c.get(f"/threads/{t}"),
            "POST /threads/search": lambda c, t: c.post("/threads/search", json={"limit": 10}),
            "POST /runs/wait": lambda c, t: c.post(
                "/runs/wait", json={"assistant_id": "whoami", "input": ASK}
            ),
        }
        for _ in range(3):  # warm-up: pools, the key cache, the graph
            for name, client in clients.items():
                for call in work.values():
                    assert call(client, threads[name]).status_code == 200
        for _ in range(ROUNDS):
            for what, call in work.items():
                for name, client in clients.items():
                    started = time.perf_counter()
                    response = call(client, threads[name])
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200, response.text
                    times.setdefault((what, name), []).append(elapsed)
    finally:
        for client in clients.values():
            client.close()
    return times


def main() -> None:
    """Measure the three servers in one run and write bench/results/auth.md."""
    load_before = os.getloadavg()
    common: dict[str, Any] = {
        "langgraph_config": BUILTIN_PROJECT,
        "runs_per_minute": 0,
        "run_workers": 2,
    }
    setups: dict[str, dict[str, Any]] = {
        "open": {"auth": "none"},
        "keys, cached": {"auth": "builtin"},
        "keys, checked": {"auth": "builtin", "auth_cache_s": 0},
    }
    with admin_url() as admin, scratch(admin, "auth") as database:
        key = _seed(database)
        with (
            running_server(_settings(database, setups["open"], common)) as open_url,
            running_server(_settings(database, setups["keys, cached"], common)) as cached_url,
            running_server(_settings(database, setups["keys, checked"], common)) as checked_url,
        ):
            urls = {"open": open_url, "keys, cached": cached_url, "keys, checked": checked_url}
            times = _measure(urls, key)
    load_after = os.getloadavg()
    rows = []
    for what in ("GET /threads/{id}", "POST /threads/search", "POST /runs/wait"):
        base = statistics.median(times[(what, "open")])
        for name in setups:
            values = sorted(times[(what, name)])
            p50 = statistics.median(values)
            p90 = values[int(0.9 * (len(values) - 1))]
            rows.append(
                f"| {what} | {name} | {p50 * 1000:.2f} | {p90 * 1000:.2f} | {p50 / base:.2f}x |"
            )
    report = "\n".join(
        [
            "# Identity: authentication and ownership filters per request",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average "
            f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (other work shares the "
            f"cores). {THREADS} threads of {USERS} other users in the database; {ROUNDS} "
            "interleaved rounds after a warm-up, one request at a time.",
            "",
            "| request | server | p50 ms | p90 ms | p50 vs open |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    RESULTS.write_text(report)
    print(report)


def _settings(database: str, setup: dict[str, Any], common: dict[str, Any]) -> Any:
    folder = Path(tempfile.mkdtemp(prefix="sb-bench-auth-"))
    return make_settings(database, folder, migrate_on_start=False, **common, **setup)
