"""Agent Server API benchmark: Switchboard against Aegra (both modes) and `langgraph dev`,
on the same trivial graph, on the same machine, in the same run.

Every server serves bench/trivial/graph.py (three nodes and a fake chat model; nothing else), each
in subprocesses started here:
- Switchboard, one process (`switchboard serve`) and two (`switchboard serve --workers 2`);
- Aegra, the newest `aegra-cli` (+ `greenlet`) from PyPI in a Python 3.12 venv of its own that
  this bench makes outside the repo (`~/.cache/switchboard-bench/aegra`, or `AEGRA_VENV`), in its
  default mode (runs execute in-process) and in its Redis mode (`REDIS_BROKER_ENABLED`: BLPOP
  workers, Redis pub/sub for SSE; Redis at `BENCH_REDIS_URL`, default 127.0.0.1:6379);
- `langgraph dev` (langgraph-cli[inmem], in-memory), as a reference.
Switchboard and Aegra use the same PostgreSQL (a scratch database each).

Load goes through langgraph-sdk: each client creates a fresh thread per run (not timed), then
either `runs.wait` (latency to the final values) or `runs.stream` (time to the first event, and to
the end), at concurrency 1, 16 and 64; at 16 and 64 the clients run in `CLIENT_PROCESSES` forked
processes (one langgraph-sdk client and event loop each), so that one client loop parsing every
stream does not queue first events behind each other. Servers are all up at once and measured
in turns: every (round, endpoint, concurrency) cell visits every server before the next cell
starts, so a busy moment of the shared machine hits them alike; the load average is reported.

Switchboard's servers keep the exported embedding model in `BENCH_MODELS_DIR` (default
~/.cache/switchboard/models), as the chat bench's do, so that no server exports it (~30 s of
CPU) while the first cells are measured.

Run with `python -m bench agent_api` (about ten minutes); results go to
bench/results/agent_api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from langgraph_sdk import get_client
from sqlalchemy.engine import make_url

from bench import MODELS_DIR
from bench.chat_bench import admin_url, scratch

ROOT = Path(__file__).resolve().parents[1]
PROJECT = Path(__file__).parent / "trivial"
RESULTS = Path(__file__).parent / "results" / "agent_api.md"
GRAPH = "trivial"
CONCURRENCY = (1, 16, 64)
RUNS_PER_CLIENT = {1: 12, 16: 6, 64: 2}  # c=16: 192 streams a round, so p99 is not one sample
# At concurrency 1 a client goes on past its RUNS_PER_CLIENT runs while the cell is younger than
# C1_SECONDS, up to C1_MAX_RUNS runs: 12 runs are ~24 s of Aegra's Redis mode (BLPOP workers,
# ~2 s a run) but ~0.1-0.3 s of the fast servers, whose p50 of 24 samples moved by ±5 % between
# runs. The same rule for every server.
C1_SECONDS = 3.0
C1_MAX_RUNS = 150
ROUNDS = 2
# Before the first cell, every server serves WARM_RUNS runs of each endpoint (16 clients at
# once, not measured): a server is measured warm, as it serves in steady state. Switchboard's
# pooled connections prepare a statement on its fifth use (psycopg's prepare_threshold), so a
# fresh process ran its first ~65 checkouts a pool unprepared, inside the first cell measured
# (runs.wait at concurrency 1). Aegra prepares nothing (PgBouncer compatibility) but opens its
# pools' connections on first use too, and every server's first runs warm its caches.
WARM_RUNS = 128
JOBS = 64  # runs a server process executes at once (RUN_WORKERS / --n-jobs-per-worker): the
# highest concurrency, as Aegra's default mode starts every run at once
ENDPOINTS = ("wait", "stream")
# Clients at concurrency 16 and 64 run in this many processes (forked, one langgraph-sdk client
# and event loop each), as users on machines of their own would: in one process, the client's
# own loop parsing every stream's events queued their first events behind each other, and the
# more runs a server completed per second, the longer that queue (one server at c=16, 288
# streams: first event p99 61.8 ms from one client process, 28.2 ms from four; Aegra's 221 and
# 190 ms).
CLIENT_PROCESSES = 4
# A part of the bench, while working on one figure (the full run is the figure of record):
# AGENT_API_SERVERS names the servers to start (comma-separated, e.g. "switchboard,aegra"),
# AGENT_API_CELLS the cells to measure (endpoint:concurrency, e.g. "stream:16"), AGENT_API_ROUNDS
# how many rounds. A part prints its cells and writes bench/results/agent_api.partial.md.
PART_SERVERS = [n.strip() for n in os.environ.get("AGENT_API_SERVERS", "").split(",") if n.strip()]
PART_CELLS = [
    (cell.split(":")[0].strip(), int(cell.split(":")[1]))
    for cell in os.environ.get("AGENT_API_CELLS", "").split(",")
    if cell.strip()
]
PART = bool(PART_SERVERS or PART_CELLS or os.environ.get("AGENT_API_ROUNDS"))
RUN_INPUT: dict[str, Any] = {"messages": [{"role": "user", "content": "hello there"}]}
AEGRA_VENV = Path(
    os.environ.get("AEGRA_VENV", Path.home() / ".cache" / "switchboard-bench" / "aegra")
)
PYENV_312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python"
PYTHON_312 = Path(os.environ.get("BENCH_PYTHON_312", PYENV_312))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# The machine's PostgreSQL is shared: every server keeps its pools small and alike.
# The same most connections per server (18), all kept open: a pool's overflow connections are
# opened and closed per checkout under load (a backend fork each), which would measure
# connection churn rather than the servers.
SWITCHBOARD_POOLS = {"DB_POOL_SIZE": "13", "DB_MAX_OVERFLOW": "0", "CHECKPOINT_POOL_SIZE": "5"}
SWITCHBOARD_WORKER_POOLS = {  # per process
    "DB_POOL_SIZE": "7",
    "DB_MAX_OVERFLOW": "0",
    "CHECKPOINT_POOL_SIZE": "3",
}
AEGRA_POOLS = {
    "SQLALCHEMY_POOL_SIZE": "13",
    "SQLALCHEMY_MAX_OVERFLOW": "0",
    "LANGGRAPH_MIN_POOL_SIZE": "5",
    "LANGGRAPH_MAX_POOL_SIZE": "5",
    "N_JOBS_PER_WORKER": str(JOBS),  # Redis mode's runs at once per worker (default 10)
}


Run = tuple[float, float, bool]  # latency ms, first event ms, ok


@dataclass(slots=True)
class Samples:
    """What one server did at one endpoint and concurrency, over every round."""

    latencies: list[float] = field(default_factory=list)  # ms, request to final answer
    firsts: list[float] = field(default_factory=list)  # ms, request to first event (stream)
    errors: int = 0
    wall_s: float = 0.0
    loads: list[float] = field(default_factory=list)  # 1-minute load average at each start


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
    load: float


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


# -- servers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A server under test: its name, where it answers, and how it is started."""

    name: str
    args: list[str]
    env: dict[str, str]
    ready_path: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def _process(server: Server, log: Path) -> Iterator[None]:
    """Start `server` in its own process group, wait until it answers, stop it after."""
    with log.open("w") as out:
        process = subprocess.Popen(
            server.args,
            env=server.env,
            cwd=PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{server.name} exited: {log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(server.url + server.ready_path, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{server.name} did not start in 300 s")
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


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def aegra_venv() -> Path:
    """The Aegra venv (Python 3.12, newest aegra-cli + greenlet from PyPI), made if missing."""
    aegra = AEGRA_VENV / "bin" / "aegra"
    if aegra.exists():
        return aegra
    if not PYTHON_312.exists():
        raise SystemExit(f"Aegra needs Python 3.12: {PYTHON_312} is missing (BENCH_PYTHON_312)")
    print(f"making the Aegra venv in {AEGRA_VENV} ...")
    AEGRA_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(PYTHON_312), "-m", "venv", str(AEGRA_VENV)], check=True)
    pip = [str(AEGRA_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--upgrade", "aegra-cli", "greenlet"], check=True)
    return aegra


def _aegra_version() -> str:
    result = subprocess.run(
        [str(AEGRA_VENV / "bin" / "python"), "-m", "pip", "show", "aegra-api"],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "?"


@contextlib.contextmanager
def _empty_database(admin: str, label: str) -> Iterator[str]:
    """A database of its own, empty (Aegra migrates its own), dropped afterwards."""
    name = f"sb_bench_{label}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _switchboard(name: str, url: str, data: Path, workers: int) -> Server:
    port = _free_port()
    pools = SWITCHBOARD_POOLS if workers == 1 else SWITCHBOARD_WORKER_POOLS
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATA_DIR": str(data),
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "INGEST_SAMPLES_ON_START": "false",
        "MODELS_DIR": str(MODELS_DIR),
        "RUN_WORKERS": str(JOBS),
        **pools,
    }
    args = [_bin("switchboard"), "serve", "--config", str(PROJECT / "langgraph.json")]
    if workers > 1:
        args += ["--workers", str(workers)]
    return Server(name, args, env, "/ok", port)


def _aegra(name: str, aegra: Path, url: str, *, redis: bool) -> Server:
    port = _free_port()
    tag = uuid.uuid4().hex[:8]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
        "PATH": f"{aegra.parent}:{os.environ.get('PATH', '')}",
        "DATABASE_URL": url,
        "AUTH_TYPE": "noop",
        "LOG_LEVEL": "WARNING",
        "ENV_MODE": "PRODUCTION",
        "LOG_EXCLUDE_PATHS": "/",
        "REDIS_BROKER_ENABLED": "true" if redis else "false",
        "REDIS_URL": REDIS_URL,
        "REDIS_CHANNEL_PREFIX": f"sbbench-{tag}:run:",
        "WORKER_QUEUE_KEY": f"sbbench-{tag}:jobs",
        **AEGRA_POOLS,
    }
    args = [str(aegra), "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Server(name, [*args, "--config", str(PROJECT / "aegra.json")], env, "/health", port)


def _langgraph_dev() -> Server:
    port = _free_port()
    env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    args = [
        _bin("langgraph"), "dev", "--no-browser", "--no-reload", "--port", str(port),
        "--n-jobs-per-worker", str(JOBS), "--server-log-level", "WARNING",
        "--config", str(PROJECT / "langgraph.json"),
    ]  # fmt: skip
    return Server("langgraph dev", args, env, "/ok", port)


# -- load ---------------------------------------------------------------------------------------


async def _one_run(client: Any, endpoint: str) -> Run:
    """(latency ms, first event ms, ok) of one run on a fresh thread."""
    started = time.perf_counter()
    first: float | None = None
    ok = True
    try:
        thread = await client.threads.create()
        started = time.perf_counter()
        if endpoint == "wait":
            result = await client.runs.wait(thread["thread_id"], GRAPH, input=RUN_INPUT)
            ok = isinstance(result, dict) and len(result.get("messages", ())) == 2
        else:
            async for part in client.runs.stream(
                thread["thread_id"], GRAPH, input=RUN_INPUT, stream_mode="values"
            ):
                if first is None:
                    first = time.perf_counter()
                if part.event == "error":
                    ok = False
    except Exception as error:  # counted, not fatal
        print(f"    run failed: {type(error).__name__}: {str(error)[:200]}")
        ok = False
    ended = time.perf_counter()
    return (ended - started) * 1000, ((first or ended) - started) * 1000, ok


async def _clients(
    server: Server, endpoint: str, workers: int, runs: int, ready: Any = None
) -> tuple[list[Run], float]:
    """`workers` clients of one langgraph-sdk client in this process, each running `runs` runs in
    turn (after one warm-up run: a connection, the graph; then `ready`, a barrier, if given):
    their runs and the seconds they took."""
    client = get_client(url=server.url, timeout=300)
    try:
        await _one_run(client, endpoint)
        if ready is not None:
            await asyncio.to_thread(ready.wait)
        results: list[Run] = []

        began = time.perf_counter()
        more = workers == 1 and ready is None  # concurrency 1: see C1_SECONDS

        async def worker() -> None:
            done = 0
            while done < runs or (
                more and done < C1_MAX_RUNS and time.perf_counter() - began < C1_SECONDS
            ):
                results.append(await _one_run(client, endpoint))
                done += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
        return results, time.perf_counter() - began
    finally:
        await client.aclose()


def _processes(concurrency: int) -> int:
    return CLIENT_PROCESSES if concurrency >= CLIENT_PROCESSES else 1


def _client_process(
    server: Server, endpoint: str, workers: int, runs: int, ready: Any, out: Any
) -> None:  # runs in a forked child
    out.put(asyncio.run(_clients(server, endpoint, workers, runs, ready))[0])


def _measure(server: Server, endpoint: str, concurrency: int, into: Samples) -> None:
    """One cell: `concurrency` clients at once, in `_processes(concurrency)` client processes
    (forked, each with its own langgraph-sdk client and event loop), timed from when every
    client is warm to when the last run ended."""
    processes = _processes(concurrency)
    workers, runs = concurrency // processes, RUNS_PER_CLIENT[concurrency]
    into.loads.append(os.getloadavg()[0])
    if processes == 1:
        results, seconds = asyncio.run(_clients(server, endpoint, workers, runs))
        into.wall_s += seconds
    else:
        context = multiprocessing.get_context("fork")
        ready = context.Barrier(processes + 1)
        out = context.Queue()
        children = [
            context.Process(
                target=_client_process, args=(server, endpoint, workers, runs, ready, out)
            )
            for _ in range(processes)
        ]
        for child in children:
            child.start()
        ready.wait(timeout=120)
        began = time.perf_counter()
        results = [run for _ in children for run in out.get(timeout=1800)]
        into.wall_s += time.perf_counter() - began
        for child in children:
            child.join(timeout=30)
    for latency, first, ok in results:
        if ok:
            into.latencies.append(latency)
            if endpoint == "stream":
                into.firsts.append(first)
        else:
            into.errors += 1


def _level(server: str, endpoint: str, concurrency: int, samples: Samples) -> Level:
    runs = len(samples.latencies) + samples.errors
    firsts = samples.firsts if endpoint == "stream" else samples.latencies
    return Level(
        server=server,
        endpoint=endpoint,
        concurrency=concurrency,
        runs=runs,
        errors=samples.errors,
        runs_per_s=round(len(samples.latencies) / samples.wall_s, 2) if samples.wall_s else 0.0,
        latency_p50_ms=round(_pct(samples.latencies, 0.5), 1),
        latency_p99_ms=round(_pct(samples.latencies, 0.99), 1),
        first_p50_ms=round(_pct(firsts, 0.5), 1),
        first_p99_ms=round(_pct(firsts, 0.99), 1),
        load=round(statistics.mean(samples.loads), 2) if samples.loads else float("nan"),
    )


def measure_all(servers: list[Server]) -> list[Level]:
    """Every cell (round, endpoint, concurrency) visits every server, in a rotating order."""
    for server in servers:
        began = time.perf_counter()
        for endpoint in ENDPOINTS:
            asyncio.run(_clients(server, endpoint, 16, WARM_RUNS // 16))
        print(f"  warm-up {server.name}: {time.perf_counter() - began:.1f} s")
    samples: dict[tuple[str, str, int], Samples] = {}
    turn = 0
    cells = PART_CELLS or [(e, c) for e in ENDPOINTS for c in CONCURRENCY]
    for round_ in range(int(os.environ.get("AGENT_API_ROUNDS", ROUNDS))):
        for endpoint, concurrency in cells:
            order = servers[turn % len(servers) :] + servers[: turn % len(servers)]
            turn += 1
            for server in order:
                cell = samples.setdefault((server.name, endpoint, concurrency), Samples())
                began = time.perf_counter()
                _measure(server, endpoint, concurrency, cell)
                print(
                    f"  round {round_ + 1} {endpoint} c={concurrency} {server.name}: "
                    f"{time.perf_counter() - began:.1f} s"
                )
    return [
        _level(server.name, endpoint, concurrency, samples[(server.name, endpoint, concurrency)])
        for endpoint, concurrency in cells
        for server in servers
    ]


# -- report -------------------------------------------------------------------------------------

SB1, SB2 = "switchboard", "switchboard --workers 2"
AEGRA, AEGRA_REDIS = "aegra", "aegra + redis"


def _find(levels: list[Level], server: str, endpoint: str, concurrency: int) -> Level:
    return next(
        x
        for x in levels
        if (x.server, x.endpoint, x.concurrency) == (server, endpoint, concurrency)
    )


def _targets(levels: list[Level]) -> list[str]:
    """The issue's targets, each against the better Aegra mode for that figure."""

    def best(endpoint: str, c: int, attr: str, higher: bool) -> tuple[float, str]:
        pairs = [(getattr(_find(levels, a, endpoint, c), attr), a) for a in (AEGRA, AEGRA_REDIS)]
        pairs = [p for p in pairs if p[0] == p[0]]  # not NaN
        return max(pairs) if higher else min(pairs)

    rows = []
    checks = [
        ("runs.wait p50, c=1", "wait", 1, "latency_p50_ms", False, "≤ Aegra / 3", 1 / 3),
        ("runs/s (wait), c=16", "wait", 16, "runs_per_s", True, "≥ 2 x Aegra", 2.0),
        ("runs/s (wait), c=64", "wait", 64, "runs_per_s", True, "≥ 2 x Aegra", 2.0),
        ("runs/s (stream), c=16", "stream", 16, "runs_per_s", True, "≥ 2 x Aegra", 2.0),
        ("runs/s (stream), c=64", "stream", 64, "runs_per_s", True, "≥ 2 x Aegra", 2.0),
        ("first event p99, c=16", "stream", 16, "first_p99_ms", False, "≤ Aegra / 4", 0.25),
    ]
    for label, endpoint, c, attr, higher, goal, factor in checks:
        if c not in CONCURRENCY:
            continue
        theirs, which = best(endpoint, c, attr, higher)
        for ours_name in (SB1, SB2):
            ours = getattr(_find(levels, ours_name, endpoint, c), attr)
            ratio = ours / theirs if theirs else float("nan")
            met = ratio >= factor if higher else ratio <= factor
            rows.append(
                f"| {label} | {ours_name} | {ours} | {theirs} ({which}) | {ratio:.2f}x "
                f"| {goal} | {'met' if met else 'not met'} |"
            )
    return rows


def report(levels: list[Level], *, aegra_version: str, started: datetime) -> str:
    servers = list(dict.fromkeys(x.server for x in levels))
    loads = [x.load for x in levels if x.load == x.load]
    per_round = ", ".join(
        f"{RUNS_PER_CLIENT[c]} runs per client at concurrency {c}"
        + (
            f" (more while the cell is under {C1_SECONDS:g} s, up to {C1_MAX_RUNS})"
            if c == 1
            else ""
        )
        for c in CONCURRENCY
    )
    lines = [
        "# Agent Server API benchmark: Switchboard, Aegra, langgraph dev",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {platform.machine()} ({os.cpu_count()} CPUs "
        f"shared with other work; 1-minute load average {min(loads):.1f} to {max(loads):.1f}, "
        f"mean {statistics.mean(loads):.1f}, while measuring). Regenerate with "
        "`python -m bench agent_api`.",
        "",
        "Every server serves the same trivial graph (bench/trivial/graph.py: three nodes, a fake "
        "chat model) and is driven through langgraph-sdk, each run on a fresh thread: "
        "Switchboard (`switchboard serve`, and `--workers 2`; PostgreSQL: run rows, "
        f"checkpoints, run events; {JOBS} runs at once per process), Aegra {aegra_version} "
        "(newest aegra-cli from PyPI, Python 3.12; default mode: runs in-process; Redis mode: "
        "`REDIS_BROKER_ENABLED`, BLPOP workers and pub/sub) on the same PostgreSQL, and "
        f"`langgraph dev` (in-memory, {JOBS} jobs). All were up at once; each cell (round, "
        "endpoint, concurrency) visited every server in a rotating order, "
        f"clients at concurrency 16 and 64 in {CLIENT_PROCESSES} processes (one langgraph-sdk "
        "client and event loop each; in one process, that loop's parsing of every stream "
        "delayed the first events of the fastest server most), "
        f"each server warmed first by {WARM_RUNS} runs of each endpoint (16 clients, not "
        f"measured), {ROUNDS} rounds, {per_round} per round. Latency: request to the final "
        "answer "
        "(wait) or to the stream's end "
        "(stream); first event: the stream's first SSE event (`metadata`). Pools alike and kept "
        "open (18 PostgreSQL connections at most per server, no overflow), and "
        f"{JOBS} runs at once per process for every server.",
        "",
        *_cells(levels),
    ]
    lines += [
        "",
        "## Targets (issue 14), each against the better Aegra mode for that figure",
        "",
        "| figure | ours | value | Aegra's best | ratio | target | |",
        "|---|---|---|---|---|---|---|",
        *_targets(levels),
        "",
        "## Ratios to each server (Switchboard one process / other; runs/s: higher is "
        "better, times: lower is better)",
        "",
        "| endpoint | concurrency | vs | runs/s | latency p50 | first event p50 "
        "| first event p99 |",
        "|---|---|---|---|---|---|---|",
    ]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b and a == a and b == b else "-"

    for endpoint in ENDPOINTS:
        for c in CONCURRENCY:
            ours = _find(levels, SB1, endpoint, c)
            for other in servers:
                if other == SB1:
                    continue
                x = _find(levels, other, endpoint, c)
                lines.append(
                    f"| {endpoint} | {c} | {other} | {ratio(ours.runs_per_s, x.runs_per_s)} "
                    f"| {ratio(ours.latency_p50_ms, x.latency_p50_ms)} "
                    f"| {ratio(ours.first_p50_ms, x.first_p50_ms)} "
                    f"| {ratio(ours.first_p99_ms, x.first_p99_ms)} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Start every server, measure them in turns, write bench/results/agent_api.md."""
    started = datetime.now(UTC)
    aegra = aegra_venv()
    with (
        tempfile.TemporaryDirectory(prefix="sb-bench-agent-api-") as folder,
        admin_url() as admin,
        scratch(admin, "api_sb1") as sb1_url,
        scratch(admin, "api_sb2") as sb2_url,
        _empty_database(admin, "api_aegra") as aegra_url,
        _empty_database(admin, "api_aegra_redis") as aegra_redis_url,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(folder)
        servers = [
            _switchboard(SB1, sb1_url, workdir / "sb1", 1),
            _switchboard(SB2, sb2_url, workdir / "sb2", 2),
            _aegra(AEGRA, aegra, aegra_url, redis=False),
            _aegra(AEGRA_REDIS, aegra, aegra_redis_url, redis=True),
            _langgraph_dev(),
        ]
        if PART_SERVERS:
            servers = [server for server in servers if server.name in PART_SERVERS]
        for server in servers:  # one at a time: their startups do not slow each other
            print(f"starting {server.name} ...")
            stack.enter_context(_process(server, workdir / f"{server.port}.log"))
        levels = measure_all(servers)
    if PART:
        text = _part(levels, started=started)
        RESULTS.with_name("agent_api.partial.md").write_text(text)
    else:
        text = report(levels, aegra_version=_aegra_version(), started=started)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    print(text)


def _cells(levels: list[Level]) -> list[str]:
    """The measured cells as a markdown table."""
    return [
        "| endpoint | concurrency | server | runs | errors | runs/s | latency p50 ms "
        "| latency p99 ms | first event p50 ms | first event p99 ms | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {x.endpoint} | {x.concurrency} | {x.server} | {x.runs} | {x.errors} "
            f"| {x.runs_per_s} | {x.latency_p50_ms} | {x.latency_p99_ms} | {x.first_p50_ms} "
            f"| {x.first_p99_ms} | {x.load} |"
            for x in levels
        ),
    ]


def _part(levels: list[Level], *, started: datetime) -> str:
    """The cells of a part of the bench (AGENT_API_SERVERS / _CELLS / _ROUNDS), no targets."""
    lines = [
        f"# Agent Server API benchmark, a part ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        *_cells(levels),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
