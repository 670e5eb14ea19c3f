"""Soak: 64 concurrent streams against one `switchboard serve` for SOAK_DURATION_S (600 s).

Each of 64 clients owns a thread and streams runs of the `chat` graph one after another on
`/threads/{id}/runs/stream` (offline model, one token per 5 ms, no tools, memory and retrieval
off), for the whole duration. The bar:
- no lost or duplicated events: the ids each client saw are exactly the stored event log of the
  run (the final state, read from PostgreSQL after the soak), 1..N with no gap, every run
  `success`;
- no 5xx answer (and no `error` event);
- RSS drift under 5%: the server process's resident memory over the last minute against the
  minute after warm-up (medians of 1 s samples), so start-up allocation is not counted.
/metrics is read at the end too (streams back to 0, runs finished = runs seen).

Run with `python -m bench soak` (SOAK_DURATION_S to shorten it); results go to
bench/results/soak.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench.agent_api_bench import ROOT, _bin, _free_port
from bench.chat_bench import admin_url, scratch
from tests.support import served_by

RESULTS = Path(__file__).parent / "results" / "soak.md"
STREAMS = 64
PACE_S = 0.005
WARMUP_S = 60.0
CONTEXT: dict[str, Any] = {"retrieve_k": 0}
RUN_INPUT: dict[str, Any] = {"messages": [{"role": "user", "content": "hello there"}]}


@dataclass
class Tally:
    """What the clients saw."""

    seen: dict[str, list[int]] = field(default_factory=dict)  # run id -> event ids in order
    statuses: Counter[int] = field(default_factory=Counter)
    error_events: int = 0
    transport_errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _stream_one(
    client: httpx.AsyncClient, thread_id: str, agent_id: str, tally: Tally
) -> None:
    body = {"assistant_id": agent_id, "input": RUN_INPUT, "context": CONTEXT,
            "stream_mode": ["values", "messages-tuple"]}  # fmt: skip
    started = time.perf_counter()
    ids: list[int] = []
    run_id: str | None = None
    event = ""
    async with client.stream("POST", f"/threads/{thread_id}/runs/stream", json=body) as resp:
        tally.statuses[resp.status_code] += 1
        if resp.status_code != 200:
            await resp.aread()
            return
        async for line in resp.aiter_lines():
            if line.startswith("id:"):
                ids.append(int(line[3:].strip()))
            elif line.startswith("event:"):
                event = line[6:].strip()
                if event == "error":
                    tally.error_events += 1
            elif line.startswith("data:") and event == "metadata" and run_id is None:
                run_id = str(httpx.Response(200, content=line[5:].strip()).json()["run_id"])
    tally.latencies_ms.append((time.perf_counter() - started) * 1000)
    if run_id is not None:
        tally.seen[run_id] = ids


async def _client(base: str, agent_id: str, until: float, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        thread_id = (await client.post("/threads", json={})).json()["thread_id"]
        while time.monotonic() < until:
            try:
                await _stream_one(client, thread_id, agent_id, tally)
            except httpx.HTTPError as error:
                tally.transport_errors.append(repr(error))
                await asyncio.sleep(0.5)


async def _sample_rss(pid: int, until: float, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        samples.append((time.monotonic() - start, _rss_kib(pid)))
        await asyncio.sleep(1.0)


async def _soak(base: str, pid: int, duration_s: float) -> tuple[Tally, list[tuple[float, int]]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as api:
        response = await api.post(
            "/agents", json={"name": "soak", "tools": [], "config": {"memory_policy": "off"}}
        )
        response.raise_for_status()
        agent_id = str(response.json()["id"])
    tally = Tally()
    samples: list[tuple[float, int]] = []
    until = time.monotonic() + duration_s
    await asyncio.gather(
        _sample_rss(pid, until, samples),
        *(_client(base, agent_id, until, tally) for _ in range(STREAMS)),
    )
    return tally, samples


def _stored(database_url: str) -> tuple[dict[str, list[int]], Counter[str]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        events = {
            str(run_id): list(seqs)
            for run_id, seqs in conn.execute(
                "SELECT run_id, array_agg(seq ORDER BY seq) FROM run_events GROUP BY run_id"
            ).fetchall()
        }
        statuses = Counter(
            {str(s): int(n) for s, n in conn.execute(
                "SELECT status, count(*) FROM runs GROUP BY status").fetchall()}
        )  # fmt: skip
    return events, statuses


def _metrics(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "switchboard_http_requests_total":
                if sample.labels.get("status", "").startswith("5"):
                    out["http_5xx"] = out.get("http_5xx", 0.0) + sample.value
            elif sample.name in ("switchboard_streams_active", "switchboard_runs_finished_total"):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def main() -> None:
    """Run the soak and write bench/results/soak.md."""
    duration_s = float(os.environ.get("SOAK_DURATION_S", "600"))
    warmup_s = min(WARMUP_S, duration_s / 5)
    with admin_url() as admin, scratch(admin, "soak") as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "DATA_DIR": str(workdir / "data"),
            "PORT": str(port),
            "LOG_LEVEL": "warning",
            "INGEST_SAMPLES_ON_START": "false",
            "OFFLINE_TOKEN_DELAY_S": str(PACE_S),
            "RUN_WORKERS": "16",
            "DB_POOL_SIZE": "10",
            "DB_MAX_OVERFLOW": "20",
            "CHECKPOINT_POOL_SIZE": "10",
            "RUNS_PER_MINUTE": "0",
            "RUNS_IN_FLIGHT_PER_USER": "0",
        }
        log = workdir / "switchboard.log"
        with served_by(
            [_bin("switchboard"), "serve"], cwd=ROOT, env=env, log=log, url=base, timeout_s=180
        ) as process:
            started = time.perf_counter()
            tally, samples = asyncio.run(_soak(base, process.pid, duration_s))
            wall = time.perf_counter() - started
            time.sleep(1.0)
            metrics = _metrics(base)
        # Why the server answered 5xx, if it did (its warnings name the cause).
        causes = Counter(
            line.split(":", 3)[-1].strip()[:160]
            for line in log.read_text(errors="replace").splitlines()
            if "database unavailable" in line or line.startswith("ERROR")
        )
        stored, run_statuses = _stored(url)
    lost = dup = mismatched = 0
    for run_id, ids in tally.seen.items():
        expected = stored.get(run_id, [])
        dup += len(ids) - len(set(ids))
        lost += len(set(expected) - set(ids))
        if ids != expected or expected != list(range(1, len(expected) + 1)):
            mismatched += 1
    start = [kib for t, kib in samples if warmup_s <= t < warmup_s + 60]
    end = [kib for t, kib in samples if t >= samples[-1][0] - 60]
    rss_start, rss_end = statistics.median(start), statistics.median(end)
    drift = (rss_end - rss_start) / rss_start
    fivexx = sum(n for status, n in tally.statuses.items() if status >= 500)
    runs = len(tally.seen)
    bar = {
        "no lost events": lost == 0 and mismatched == 0,
        "no duplicated events": dup == 0,
        "every run success": set(run_statuses) == {"success"},
        "no 5xx": fivexx == 0 and metrics.get("http_5xx", 0) == 0,
        "no error events / transport errors": tally.error_events == 0
        and not tally.transport_errors,
        "RSS drift < 5%": abs(drift) < 0.05,
        "streams back to 0": metrics.get("switchboard_streams_active", -1) == 0,
    }
    lines = [
        "# Soak benchmark",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} (CPython "
        f"{platform.python_version()}, {os.cpu_count()} CPUs shared with other work). "
        "Regenerate with `python -m bench soak` (`SOAK_DURATION_S` to change the duration).",
        "",
        f"One `switchboard serve` (RUN_WORKERS 16, PostgreSQL), {STREAMS} clients each streaming "
        f"runs of the `chat` graph one after another on its own thread for {duration_s:.0f} s "
        f"(offline model, one token per {PACE_S * 1000:.0f} ms, stream modes values + "
        "messages-tuple). After the soak every run's event ids as the client saw them are "
        "compared with the run's stored event log (the final state).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| duration | {wall:.0f} s |",
        f"| runs streamed | {runs} ({runs / wall:.2f} runs/s) |",
        f"| events checked | {sum(len(v) for v in tally.seen.values())} |",
        f"| lost events / duplicated events / runs not matching their log | {lost} / {dup} / "
        f"{mismatched} |",
        f"| run statuses in the database | {dict(run_statuses)} |",
        f"| HTTP statuses seen by clients | {dict(tally.statuses)} |",
        f"| 5xx in /metrics | {metrics.get('http_5xx', 0):.0f} |",
        f"| error events / transport errors | {tally.error_events} / "
        f"{len(tally.transport_errors)} |",
        f"| stream latency p50 / p99 | {_pct(tally.latencies_ms, 0.5):.0f} ms / "
        f"{_pct(tally.latencies_ms, 0.99):.0f} ms |",
        f"| server RSS after warm-up ({warmup_s:.0f}-{warmup_s + 60:.0f} s, median) | "
        f"{rss_start / 1024:.1f} MiB |",
        f"| server RSS over the last minute (median) | {rss_end / 1024:.1f} MiB |",
        f"| RSS drift | {drift * 100:+.2f}% |",
        f"| RSS min / max over the soak | {min(k for _, k in samples) / 1024:.1f} / "
        f"{max(k for _, k in samples) / 1024:.1f} MiB |",
        f"| streams open at the end (/metrics) | "
        f"{metrics.get('switchboard_streams_active', -1):.0f} |",
        "",
        "| bar | met |",
        "|---|---|",
        *(f"| {name} | {'yes' if ok else 'NO'} |" for name, ok in bar.items()),
        "",
    ]
    if causes:
        lines += ["Server log lines behind 5xx / errors (most frequent first):", "",
                  *(f"- {n} x `{cause}`" for cause, n in causes.most_common(5)), ""]  # fmt: skip
    if tally.transport_errors:
        lines += [
            "Transport errors (first 5):",
            "",
            *(f"- {e}" for e in tally.transport_errors[:5]),
        ]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    if not all(bar.values()):
        print("soak: the bar was NOT met", file=sys.stderr)
