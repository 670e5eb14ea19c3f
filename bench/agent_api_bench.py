"""Agent Server API benchmark: Switchboard against `langgraph dev` on the same declared graph.

Both servers run in subprocesses and serve the `chat` graph of langgraph.json. Each client has
a thread of its own and sends runs one after another, on `/threads/{id}/runs/wait` and on
`/threads/{id}/runs/stream`, at concurrency 1, 16 and 64. Figures: runs/s, latency p50/p99
(request to last byte), and time to first event p50/p99 (stream: the first SSE event, i.e.
`metadata`; wait: the first byte of the answer, which is the whole answer). Both runs use the
same context: the offline model streaming at a fixed pace, no tools, no memory, no knowledge,
so the difference is the servers' own overhead (Switchboard: PostgreSQL rows, checkpoints and
run events; langgraph dev: in-memory). Ratios are Switchboard / langgraph dev.

Run with `python -m bench agent_api` (a few minutes); results go to bench/results/agent_api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.chat_bench import admin_url, scratch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "agent_api.md"
PACE_S = 0.005
CONCURRENCY = (1, 16, 64)
RUNS_PER_CLIENT = {1: 10, 16: 2, 64: 1}
JOBS = 16  # concurrent runs each server executes (RUN_WORKERS / --n-jobs-per-worker)
ENDPOINTS = ("wait", "stream")
# langgraph dev builds the agent context from the run's `context`; Switchboard from the
# assistant's row (an agent made with memory off and no tools, the offline model paced by
# OFFLINE_TOKEN_DELAY_S) plus the overridable fields of the run's context (retrieve_k).
DEV_CONTEXT: dict[str, Any] = {
    "user_id": "bench",
    "model": {"provider": "offline", "token_delay_s": PACE_S},
    "tools": [],
    "memory_policy": "off",
    "retrieve_k": 0,
}
SWITCHBOARD_CONTEXT: dict[str, Any] = {"retrieve_k": 0}
RUN_INPUT: dict[str, Any] = {"messages": [{"role": "user", "content": "hello there"}]}


@dataclass(frozen=True, slots=True)
class Level:
    """The figures of one server, endpoint and concurrency."""

    server: str
    endpoint: str
    concurrency: int
    runs: int
    errors: int
    runs_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    first_p50_ms: float
    first_p99_ms: float


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _process(
    args: list[str], *, env: dict[str, str], ready_url: str, cwd: Path, log: Path
) -> Iterator[None]:
    """Start `args` in its own process group, wait until `ready_url` answers, stop it after."""
    with log.open("w") as out:
        process = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{args[:2]} exited: {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{args[:2]} did not start in 180 s")
                time.sleep(0.5)
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
                process.wait(timeout=10)


@dataclass(frozen=True, slots=True)
class Target:
    """A server under test and the run body fields that select the same work on it."""

    name: str
    base_url: str
    assistant_id: str
    context: dict[str, Any]


async def _one_run(
    client: httpx.AsyncClient, target: Target, thread_id: str, endpoint: str
) -> tuple[float, float, bool]:
    """(latency ms, first event ms, ok) of one run."""
    body = {
        "assistant_id": target.assistant_id,
        "input": RUN_INPUT,
        "context": target.context,
        "stream_mode": ["values"],
    }
    started = time.perf_counter()
    first: float | None = None
    ok = True
    async with client.stream("POST", f"/threads/{thread_id}/runs/{endpoint}", json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return (time.perf_counter() - started) * 1000, 0.0, False
        if endpoint == "stream":
            async for line in resp.aiter_lines():
                if first is None and line.startswith("event:"):
                    first = time.perf_counter()
                if line.startswith("event: error"):
                    ok = False
        else:
            async for _chunk in resp.aiter_bytes():
                if first is None:
                    first = time.perf_counter()
    ended = time.perf_counter()
    return (ended - started) * 1000, ((first or ended) - started) * 1000, ok


async def _level(target: Target, endpoint: str, concurrency: int) -> Level:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=target.base_url, timeout=300, limits=limits) as client:
        threads = []
        for _ in range(concurrency):
            response = await client.post("/threads", json={})
            response.raise_for_status()
            threads.append(response.json()["thread_id"])
        await _one_run(client, target, threads[0], endpoint)  # warm up
        results: list[tuple[float, float, bool]] = []

        async def worker(thread_id: str) -> None:
            for _ in range(RUNS_PER_CLIENT[concurrency]):
                results.append(await _one_run(client, target, thread_id, endpoint))

        started = time.perf_counter()
        await asyncio.gather(*(worker(t) for t in threads))
        wall = time.perf_counter() - started
    good = [r for r in results if r[2]]
    latencies = [r[0] for r in good]
    firsts = [r[1] for r in good]
    return Level(
        server=target.name,
        endpoint=endpoint,
        concurrency=concurrency,
        runs=len(results),
        errors=len(results) - len(good),
        runs_per_s=round(len(good) / wall, 2),
        latency_p50_ms=round(_pct(latencies, 0.5), 1),
        latency_p99_ms=round(_pct(latencies, 0.99), 1),
        first_p50_ms=round(_pct(firsts, 0.5), 1),
        first_p99_ms=round(_pct(firsts, 0.99), 1),
    )


async def _measure(target: Target) -> list[Level]:
    levels = []
    for endpoint in ENDPOINTS:
        for concurrency in CONCURRENCY:
            level = await _level(target, endpoint, concurrency)
            print(f"  {target.name} {endpoint} c={concurrency}: {level}")
            levels.append(level)
    return levels


async def _measure_switchboard(base_url: str) -> list[Level]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as api:
        response = await api.post(
            "/agents", json={"name": "bench", "tools": [], "config": {"memory_policy": "off"}}
        )
        response.raise_for_status()
        agent_id = str(response.json()["id"])
    return await _measure(Target("switchboard", base_url, agent_id, SWITCHBOARD_CONTEXT))


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _switchboard(admin: str, workdir: Path) -> list[Level]:
    port = _free_port()
    with scratch(admin, "agent_api") as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "DATA_DIR": str(workdir / "data"),
            "PORT": str(port),
            "LOG_LEVEL": "warning",
            "INGEST_SAMPLES_ON_START": "false",
            "OFFLINE_TOKEN_DELAY_S": str(PACE_S),
            "RUN_WORKERS": str(JOBS),
            "DB_POOL_SIZE": "10",
            "DB_MAX_OVERFLOW": "20",
            "CHECKPOINT_POOL_SIZE": "10",
        }
        base = f"http://127.0.0.1:{port}"
        with _process(
            [_bin("switchboard"), "serve"],
            env=env,
            ready_url=f"{base}/ok",
            cwd=ROOT,
            log=workdir / "switchboard.log",
        ):
            return asyncio.run(_measure_switchboard(base))


def _langgraph_dev(workdir: Path) -> list[Level]:
    port = _free_port()
    env = {
        **os.environ,
        "LANGSMITH_TRACING": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    base = f"http://127.0.0.1:{port}"
    args = [
        _bin("langgraph"), "dev", "--no-browser", "--no-reload", "--port", str(port),
        "--n-jobs-per-worker", str(JOBS), "--server-log-level", "WARNING",
        "--config", str(ROOT / "langgraph.json"),
    ]  # fmt: skip
    with _process(args, env=env, ready_url=f"{base}/ok", cwd=ROOT, log=workdir / "dev.log"):
        return asyncio.run(_measure(Target("langgraph dev", base, "chat", DEV_CONTEXT)))


def _report(ours: list[Level], theirs: list[Level]) -> str:
    lines = [
        "# Agent Server API benchmark",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} "
        "CPUs shared with other work). Regenerate with `python -m bench agent_api`.",
        "",
        "Both servers serve the `chat` graph of langgraph.json in a subprocess: Switchboard "
        "(`switchboard serve`, PostgreSQL: run rows, checkpoints, run events) and the baseline "
        "`langgraph dev` (langgraph-cli[inmem], in-memory), measured in the same run, each with "
        f"{JOBS} concurrent runs allowed. Every run does the same work: offline model streaming "
        f"one token per {PACE_S * 1000:.0f} ms, no tools, memory off, retrieval off "
        "(retrieve_k 0). Each client "
        "owns a thread and sends its runs one after another "
        f"({', '.join(f'{RUNS_PER_CLIENT[c]} at concurrency {c}' for c in CONCURRENCY)}). "
        "Latency is request to last byte; first event is the first SSE event (`metadata`) for "
        "/stream and the first byte of the answer for /wait. Ratios are Switchboard / "
        "langgraph dev (runs/s: higher is better; times: lower is better).",
        "",
        "| endpoint | concurrency | server | runs | errors | runs/s | latency p50 ms "
        "| latency p99 ms | first event p50 ms | first event p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for a, b in zip(ours, theirs, strict=True):
        for level in (a, b):
            lines.append(
                f"| /threads/{{id}}/runs/{level.endpoint} | {level.concurrency} | {level.server} "
                f"| {level.runs} | {level.errors} | {level.runs_per_s} | {level.latency_p50_ms} "
                f"| {level.latency_p99_ms} | {level.first_p50_ms} | {level.first_p99_ms} |"
            )
    lines += [
        "",
        "## Ratios (Switchboard / langgraph dev)",
        "",
        "| endpoint | concurrency | runs/s | latency p50 | first event p50 | first event p99 |",
        "|---|---|---|---|---|---|",
    ]

    def ratio(x: float, y: float) -> str:
        return f"{x / y:.2f}x" if y and x == x and y == y else "-"

    for a, b in zip(ours, theirs, strict=True):
        lines.append(
            f"| {a.endpoint} | {a.concurrency} | {ratio(a.runs_per_s, b.runs_per_s)} "
            f"| {ratio(a.latency_p50_ms, b.latency_p50_ms)} "
            f"| {ratio(a.first_p50_ms, b.first_p50_ms)} | {ratio(a.first_p99_ms, b.first_p99_ms)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure both servers and write bench/results/agent_api.md."""
    with tempfile.TemporaryDirectory(prefix="sb-bench-agent-api-") as folder:
        workdir = Path(folder)
        print("langgraph dev ...")
        theirs = _langgraph_dev(workdir)
        print("switchboard ...")
        with admin_url() as admin:
            ours = _switchboard(admin, workdir)
    report = _report(ours, theirs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    print(report)
    print(f"mean runs/s: switchboard {statistics.mean(level.runs_per_s for level in ours):.2f}")


if __name__ == "__main__":
    main()
