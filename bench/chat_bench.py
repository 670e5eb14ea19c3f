"""Chat benchmarks: per-turn cost at turns 1/100/1000 of one conversation, and /chat overhead.

Part 1 runs the chat graph in-process on AsyncPostgresSaver and measures, at chosen turns of
one conversation, the turn's latency and the checkpoint bytes it wrote, against a baseline in
the same run: the same graph keeping the whole history in state (window = unlimited).

Part 2 serves Switchboard in a subprocess with the offline model streaming its answer at a
fixed pace, drives `/chat` at concurrency 1, 16 and 64, and reports overhead = measured time -
N tokens x pace, against a baseline server (a bare sse-starlette endpoint streaming the same N
tokens at the same pace) measured in the same run.

Environment knobs (for profiling and quick A/B runs; the default runs everything):
`CHAT_BENCH_PARTS` (`turns,overhead`), `CHAT_BENCH_LEVELS` (concurrencies, e.g. `1,64`),
`CHAT_BENCH_VARIANTS` (`on,off,exit`: memory on, memory off, memory off with durability exit),
`CHAT_BENCH_BASE` (another source tree, e.g. `git archive main` unpacked: its server runs
each variant just before this tree's, rows labelled "base"), `CHAT_BENCH_PYSPY` (a folder:
py-spy samples each Switchboard server there, a flame graph and raw stacks per server),
`CHAT_BENCH_LOGS` (a folder: each server's output is kept there, one file per server;
`CHAT_BENCH_LOG_LEVEL` sets their LOG_LEVEL, default warning), `BENCH_MODELS_DIR` (where the
servers of both this bench and agent_api keep the exported embedding model; default
~/.cache/switchboard/models), `CHAT_BENCH_OUT` (write the report there instead of
bench/results/chat.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from langchain_core.messages import HumanMessage

from bench import MODELS_DIR
from graphs.chat import build_chat_graph
from nodes.context import AgentContext
from stores import migrate
from stores.checkpoints import open_checkpoints
from stores.embedded_postgres import embedded_postgres

RESULTS = Path(__file__).parent / "results" / "chat.md"
SAMPLE_TURNS = (1, 10, 100, 500, 1000)
BASELINE_TURNS = (1, 10, 100, 200)
MESSAGE_BYTES = 1000
PACE_S = 0.02
CONCURRENCY = tuple(int(c) for c in os.environ.get("CHAT_BENCH_LEVELS", "1,16,64").split(","))
PARTS = set(os.environ.get("CHAT_BENCH_PARTS", "turns,overhead").split(","))
VARIANTS = os.environ.get("CHAT_BENCH_VARIANTS", "on,off,exit").split(",")
PYSPY = os.environ.get("CHAT_BENCH_PYSPY")
BASE_TREE = os.environ.get("CHAT_BENCH_BASE")  # a source tree to compare with, in the same run
TURNS_PER_CLIENT = {1: 20, 16: 3, 64: 2}

_BYTES_SQL = """
SELECT
  (SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)
     FROM checkpoints WHERE thread_id = %(t)s)
+ (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %(t)s)
+ (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %(t)s)
"""


@contextlib.contextmanager
def admin_url() -> Iterator[str]:
    """BENCH_DATABASE_URL / TEST_DATABASE_URL when set, else an embedded PostgreSQL."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="sb-bench-pg-") as folder,
        embedded_postgres(Path(folder) / "pgdata") as embedded,
    ):
        yield embedded


@contextlib.contextmanager
def scratch(admin: str, label: str) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards."""
    from sqlalchemy.engine import make_url

    name = f"sb_bench_{label}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- part 1: one long conversation -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnSample:
    """One measured turn."""

    turn: int
    latency_ms: float
    bytes_written: int
    window: int


def _message(turn: int) -> str:
    filler = f"Turn {turn}: what is {turn} + {turn}? "
    return (filler * (MESSAGE_BYTES // len(filler) + 1))[:MESSAGE_BYTES]


async def _conversation(
    url: str, *, window: int, turns: tuple[int, ...], prune_every: int
) -> list[TurnSample]:
    samples: list[TurnSample] = []
    latencies: list[float] = []
    async with open_checkpoints(url, max_size=4) as checkpoints:
        graph = build_chat_graph(checkpointer=await checkpoints.ready())
        ctx = AgentContext(user_id="bench", tools=("calculator",), history_window=window)
        thread = str(uuid.uuid4())
        config: Any = {"configurable": {"thread_id": thread}}
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

            async def total() -> int:
                row = await (await conn.execute(_BYTES_SQL, {"t": thread})).fetchone()
                return int(row[0]) if row else 0

            for turn in range(1, max(turns) + 1):
                measured = turn in turns
                before = await total() if measured else 0
                started = time.perf_counter()
                await graph.ainvoke(
                    {"messages": [HumanMessage(_message(turn))]},
                    config,
                    context=ctx,
                    durability="sync",
                )
                latencies.append((time.perf_counter() - started) * 1000)
                if measured:
                    written = await total() - before
                    state = await graph.aget_state(config)
                    samples.append(
                        TurnSample(
                            turn=turn,
                            # Median of the last (up to) 10 turns: one turn is too noisy.
                            latency_ms=round(statistics.median(latencies[-10:]), 2),
                            bytes_written=written,
                            window=len(state.values["messages"]),
                        )
                    )
                if prune_every and turn % prune_every == 0:  # what the server does
                    await checkpoints.prune(thread)
    return samples


# -- part 2: /chat overhead ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LevelResult:
    """Figures of one concurrency level."""

    concurrency: int
    turns: int
    runs_per_s: float
    tokens: int
    overhead_p50_ms: float
    overhead_p99_ms: float
    first_event_p50_ms: float
    first_event_p99_ms: float
    first_token_p50_ms: float
    rss_per_stream_kb: float | None
    cpu_ms_per_turn: float  # the server process's CPU time (all threads) per turn


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) process `pid` has used, in seconds (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    """Resident memory of process `pid` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """What the client saw of one streamed turn."""

    total_ms: float
    first_event_ms: float
    first_token_ms: float
    tokens: int


async def _one_turn(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> TurnTiming:
    started = time.perf_counter()
    first: float | None = None
    first_token: float | None = None
    tokens = 0
    async with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("event:"):
                first = time.perf_counter()
            if line == "event: token":
                tokens += 1
                first_token = first_token or time.perf_counter()
            if line.startswith("event: error"):
                raise RuntimeError("the turn failed")
    end = time.perf_counter()
    return TurnTiming(
        total_ms=(end - started) * 1000,
        first_event_ms=((first or end) - started) * 1000,
        first_token_ms=((first_token or end) - started) * 1000,
        tokens=tokens,
    )


async def _level(
    base_url: str, path: str, bodies: list[dict[str, Any]], turns_each: int, *, pid: int
) -> LevelResult:
    limits = httpx.Limits(max_connections=len(bodies) + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        await _one_turn(client, path, bodies[0])  # warm up
        results: list[TurnTiming] = []
        idle_rss = _rss_kb(pid)
        peak_rss = idle_rss
        running = True

        async def sample_rss() -> None:
            nonlocal peak_rss
            while running:
                peak_rss = max(peak_rss, _rss_kb(pid))
                await asyncio.sleep(0.05)

        async def worker(body: dict[str, Any]) -> None:
            for _ in range(turns_each):
                results.append(await _one_turn(client, path, body))

        sampler = asyncio.create_task(sample_rss())
        started, cpu_before = time.perf_counter(), _cpu_s(pid)
        await asyncio.gather(*(worker(body) for body in bodies))
        wall, cpu = time.perf_counter() - started, _cpu_s(pid) - cpu_before
        running = False
        await sampler
    overheads = [r.total_ms - r.tokens * PACE_S * 1000 for r in results]
    firsts = [r.first_event_ms for r in results]
    return LevelResult(
        concurrency=len(bodies),
        turns=len(results),
        runs_per_s=round(len(results) / wall, 2),
        tokens=round(statistics.mean(r.tokens for r in results)),
        overhead_p50_ms=round(_pct(overheads, 0.5), 1),
        overhead_p99_ms=round(_pct(overheads, 0.99), 1),
        first_event_p50_ms=round(_pct(firsts, 0.5), 1),
        first_event_p99_ms=round(_pct(firsts, 0.99), 1),
        first_token_p50_ms=round(_pct([r.first_token_ms for r in results], 0.5), 1),
        rss_per_stream_kb=round((peak_rss - idle_rss) / len(bodies), 1),
        cpu_ms_per_turn=round(cpu * 1000 / len(results), 1),
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _process(
    args: list[str], env: dict[str, str], url: str, *, cwd: str | None = None
) -> Iterator[int]:
    logs = os.environ.get("CHAT_BENCH_LOGS")  # a folder: each server's output goes there
    output: Any = subprocess.DEVNULL
    if logs:
        Path(logs).mkdir(parents=True, exist_ok=True)
        name = f"{Path(args[0]).name}-{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:4]}.log"
        output = (Path(logs) / name).open("ab")
    process = subprocess.Popen(
        args,
        env=env,
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT if logs else subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args} exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args} did not start")
            time.sleep(0.5)
        yield process.pid
    finally:
        if process.poll() is not None:  # it died while measured: say so, not just the cut
            print(f"{args} exited with {process.returncode} while measured", file=sys.stderr)
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        if logs:
            output.close()


@contextlib.contextmanager
def _profiled(pid: int, memory_policy: str, durability: str) -> Iterator[None]:
    """With `CHAT_BENCH_PYSPY`, py-spy samples the server (and its threads) meanwhile."""
    if not PYSPY:
        yield
        return
    folder = Path(PYSPY)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"chat-{memory_policy}-{durability}-{pid}"
    spy = str(Path(sys.executable).parent / "py-spy")
    common = ["record", "--pid", str(pid), "--nonblocking", "-r", "250"]
    svg = [spy, *common, "-f", "flamegraph", "-o", f"{stem}.svg"]
    raw = [spy, *common, "--threads", "-f", "raw", "-o", f"{stem}.txt"]
    spies = [
        subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for args in (svg, raw)
    ]
    try:
        yield
    finally:
        for process in spies:
            process.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for process in spies:
            process.wait(timeout=60)


async def _baseline_app(tokens: int) -> Any:
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    async def stream(request: Request) -> EventSourceResponse:
        await request.body()

        async def events() -> AsyncIterator[dict[str, str]]:
            yield {"event": "metadata", "data": "{}"}
            for i in range(tokens):
                await asyncio.sleep(PACE_S)
                yield {"event": "token", "data": json.dumps({"text": f"t{i} "})}
            yield {"event": "end", "data": "{}"}

        return EventSourceResponse(events())

    return Starlette(routes=[Route("/chat", stream, methods=["POST"])])


def serve_baseline(port: int, tokens: int) -> None:
    """Serve the baseline SSE endpoint (run in a subprocess by `main`)."""
    import uvicorn

    app = asyncio.run(_baseline_app(tokens))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def _overhead(
    admin: str, *, memory_policy: str, durability: str = "async", tree: str | None = None
) -> tuple[list[LevelResult], int]:
    """The levels against a Switchboard server; from the source tree `tree` when given (an
    A/B run against another checkout, e.g. `git archive main`), else this one."""
    bin_dir = Path(sys.executable).parent
    with scratch(admin, "chat") as url, tempfile.TemporaryDirectory(prefix="sb-bench-") as data:
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "DATA_DIR": data,
            "PORT": str(port),
            "LOG_LEVEL": os.environ.get("CHAT_BENCH_LOG_LEVEL", "warning"),
            "OFFLINE_TOKEN_DELAY_S": str(PACE_S),
            "INGEST_SAMPLES_ON_START": "false",
            "DB_POOL_SIZE": "20",
            "CHECKPOINT_POOL_SIZE": "20",
            "CHAT_DURABILITY": durability,
            # A server keeps its exported embedding model across restarts (DATA_DIR/models):
            # share one folder, so no server exports it again while it is measured.
            "MODELS_DIR": str(MODELS_DIR),
        }
        if tree:
            env["PYTHONPATH"] = tree
        base = f"http://127.0.0.1:{port}"
        args = [str(bin_dir / "switchboard"), "serve"]
        with (
            _process(args, env, f"{base}/healthz", cwd=tree) as pid,
            _profiled(pid, memory_policy, durability),
        ):
            async with httpx.AsyncClient(base_url=base, timeout=60) as api:
                agent = (
                    await api.post(
                        "/agents",
                        json={"name": "bench", "config": {"memory_policy": memory_policy}},
                    )
                ).json()
                bodies: list[dict[str, Any]] = []
                for i in range(max(CONCURRENCY)):
                    user = (
                        await api.post(
                            "/users", json={"email": f"b{i}-{uuid.uuid4().hex[:6]}@ex.com",
                                            "name": "b"}
                        )
                    ).json()  # fmt: skip
                    conv = (
                        await api.post(
                            "/conversations", json={"user_id": user["id"], "agent_id": agent["id"]}
                        )
                    ).json()
                    bodies.append({"conversation_id": conv["id"], "message": "hello"})
            levels = [
                await _level(base, "/chat", bodies[:c], TURNS_PER_CLIENT[c], pid=pid)
                for c in CONCURRENCY
            ]
    return levels, levels[0].tokens


async def _baseline(tokens: int) -> list[LevelResult]:
    port = _free_port()
    args = [sys.executable, "-m", "bench.chat_bench", "--baseline-server", str(port), str(tokens)]
    base = f"http://127.0.0.1:{port}"
    with _process(args, dict(os.environ), f"{base}/") as pid:
        bodies = [{"message": "hello"} for _ in range(max(CONCURRENCY))]
        return [
            await _level(base, "/chat", bodies[:c], TURNS_PER_CLIENT[c], pid=pid)
            for c in CONCURRENCY
        ]


# -- report ----------------------------------------------------------------------------------


def _turns_report(flat: list[TurnSample], full: list[TurnSample]) -> list[str]:
    first_flat, first_full = flat[0], full[0]
    lines = [
        "",
        "## One conversation: cost of turn N",
        "",
        f"Each turn sends a {MESSAGE_BYTES}-byte message through the full chat graph (recall, "
        "retrieve, plan, calculator tool, reason, respond, remember). *Bytes* are the checkpoint "
        "bytes the turn wrote (checkpoints + checkpoint_blobs + checkpoint_writes rows of the "
        "thread). Latency is the median of the 10 turns up to turn N (turn 1: itself). "
        "Switchboard keeps a window of 12 messages plus a running summary in state and, as the "
        "server does, keeps only the latest checkpoint of the thread every 10 turns (without "
        "that, reading the latest checkpoint joins all the thread's blobs and slows down as the "
        "thread grows). The baseline is the same graph keeping every message (window unlimited, "
        "no pruning), in the same run. Ratios compare with turn 1.",
        "",
        "| graph | turn | latency ms | bytes written | messages in state | latency ratio "
        "| bytes ratio |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for label, rows, first in (("windowed", flat, first_flat), ("baseline", full, first_full)):
        for s in rows:
            lines.append(
                f"| {label} | {s.turn} | {s.latency_ms:.1f} | {s.bytes_written:,} | {s.window} | "
                f"{s.latency_ms / first.latency_ms:.2f}x | "
                f"{s.bytes_written / first.bytes_written:.2f}x |"
            )
    return lines


def _report(
    flat: list[TurnSample] | None,
    full: list[TurnSample] | None,
    levels: dict[str, list[LevelResult]],
    baseline: list[LevelResult],
) -> str:
    lines = [
        "# Chat benchmarks",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared with other work); offline model; PostgreSQL "
        "checkpoints: in-process turns on LangGraph's AsyncPostgresSaver (durability=sync), "
        "the served /chat on the server's checkpointer (durability async: a run's writes go "
        "out together, CHECKPOINT_FLUSH_S). Regenerate with `python -m bench chat`.",
    ]
    if flat and full:
        lines += _turns_report(flat, full)
    lines += [
        "",
        "## /chat server overhead",
        "",
        f"Switchboard serves in a subprocess; the offline model streams its answer at one token "
        f"per {PACE_S * 1000:.0f} ms, so *overhead* = measured turn time - N tokens x "
        f"{PACE_S * 1000:.0f} ms (N ≈ {baseline[0].tokens} tokens per answer here). Each client "
        "has its own conversation and sends its turns one after another. The baseline is a bare "
        "sse-starlette endpoint streaming the same tokens at the same pace, measured in the same "
        "run; *vs baseline* compares overhead p50. Time to first event is the `metadata` event; "
        "first token includes recall, retrieval, planning and checkpoint writes. *RSS per open "
        "stream* = (peak resident memory of the server during the level - its RSS before) / "
        "concurrency (a rough figure: it includes allocator growth). *Server CPU per turn*: "
        "the CPU time (user + system, all its threads) the server process used during the level "
        "/ turns: the figure least disturbed by other load on the machine. *memory on/off*: the "
        "agent's `memory_policy` (recall embeds the message and searches the memory store every "
        "turn). *durability exit*: `CHAT_DURABILITY=exit`, one checkpoint write per turn "
        "instead of one per step."
        + (
            f" *base* rows: the server from another source tree ({BASE_TREE}), each variant run "
            "just before this tree's, in the same run."
            if BASE_TREE
            else ""
        ),
        "",
        "| server | concurrency | turns | runs/s | overhead p50 ms | overhead p99 ms "
        "| first event p50 ms | first event p99 ms | first token p50 ms | RSS per open stream KiB "
        "| server CPU ms per turn | vs baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for server, results in [*levels.items(), ("baseline SSE", baseline)]:
        for level, base in zip(results, baseline, strict=True):
            ratio = (
                f"+{level.overhead_p50_ms - base.overhead_p50_ms:.1f} ms"
                if server != "baseline SSE"
                else "-"
            )
            lines.append(
                f"| {server} | {level.concurrency} | {level.turns} | {level.runs_per_s} | "
                f"{level.overhead_p50_ms} | {level.overhead_p99_ms} | {level.first_event_p50_ms} | "
                f"{level.first_event_p99_ms} | {level.first_token_p50_ms} | "
                f"{level.rss_per_stream_kb} | {level.cpu_ms_per_turn} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


VARIANT_LABELS = {
    "on": ("switchboard (memory on)", "auto", "async"),
    "off": ("switchboard (memory off)", "off", "async"),
    "exit": ("switchboard (memory off, durability exit)", "off", "exit"),
}


async def _run() -> str:
    flat: list[TurnSample] | None = None
    full: list[TurnSample] | None = None
    with admin_url() as admin:
        if "turns" in PARTS:
            with scratch(admin, "turns") as url:
                print("part 1: one conversation, windowed state ...")
                flat = await _conversation(url, window=12, turns=SAMPLE_TURNS, prune_every=10)
                print("part 1: baseline, whole history in state ...")
                full = await _conversation(url, window=100_000, turns=BASELINE_TURNS, prune_every=0)
        print("part 2: /chat overhead ...")
        levels: dict[str, list[LevelResult]] = {}
        tokens = 0
        for variant in VARIANTS:
            label, policy, durability = VARIANT_LABELS[variant]
            if BASE_TREE:  # interleaved: the other tree, then this one, variant by variant
                levels[label.replace("switchboard", "base")], _ = await _overhead(
                    admin, memory_policy=policy, durability=durability, tree=BASE_TREE
                )
            levels[label], tokens = await _overhead(
                admin, memory_policy=policy, durability=durability
            )
        baseline = await _baseline(tokens)
    return _report(flat, full, levels, baseline)


def main() -> None:
    """Run both parts and write bench/results/chat.md."""
    report = asyncio.run(_run())
    out = Path(os.environ.get("CHAT_BENCH_OUT") or RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline-server":
        serve_baseline(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
