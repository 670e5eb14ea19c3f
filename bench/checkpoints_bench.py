"""LangGraph checkpoints of one run, in-process: the bench's trivial graph (bench/trivial) on a
fresh thread, streamed in `values` mode and its state read at the end, as the run executor
does, with

- `stock`: LangGraph's AsyncPostgresSaver as it comes (durability "async"),
- `server`: the server's saver (stores/checkpoints.py), the run's writes queued and sent at
  its end (durability "async"),
- `exit`: LangGraph's saver with durability "exit" (one write at the end).

Variants are interleaved run by run; CPU is the process's (threads included). Statements are
counted from PostgreSQL's log (`log_statement=all` on a scratch database) when it is readable;
round trips with `strace -f -c -e trace=sendto` on `--only NAME` at two `--runs` counts.

    python -m bench.checkpoints_bench --url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench.trivial.graph import builder
from stores.checkpoints import Checkpoints, open_checkpoints

PG_LOG = Path("/var/log/postgresql/postgresql-15-main.log")
INPUT = {"messages": [{"role": "user", "content": "hi"}]}


def _admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


async def _stock_pool(url: str) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=5,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=True)
    return pool


def _run_once(graph: Any, durability: str) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        config = {"configurable": {"thread_id": str(uuid.uuid4()), "checkpoint_ns": ""}}
        async for _ in graph.astream(INPUT, config, stream_mode="values", durability=durability):
            pass
        await graph.aget_state(config)

    return run


def _server_run(graph: Any, checkpoints: Checkpoints) -> Callable[[], Awaitable[None]]:
    async def attempt(thread_id: str) -> None:
        writes = checkpoints.run_writes(thread_id)
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}

        async def body() -> None:
            Checkpoints.bind(writes)
            async for _ in graph.astream(INPUT, config, stream_mode="values", durability="async"):
                pass

        try:
            await asyncio.create_task(body())
            await graph.aget_state(config)  # the finish's read (sends the writes with it)
            await checkpoints.flush(writes)
        finally:
            checkpoints.release(writes)

    async def run() -> None:
        await attempt(str(uuid.uuid4()))

    return run


def _log_size() -> int | None:
    try:
        return PG_LOG.stat().st_size
    except OSError:
        return None


def _statements_since(offset: int, database: str) -> int:
    with PG_LOG.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", errors="replace")
    marker = f"@{database} "
    return sum(
        1
        for line in text.splitlines()
        if marker in line and ("statement:" in line or "execute " in line)
    )


async def main(url: str, runs: int, only: str | None) -> None:
    database = f"ckpt_bench_{uuid.uuid4().hex[:8]}"
    _admin(url, f'CREATE DATABASE "{database}"')
    db_url = url.rsplit("/", 1)[0] + "/" + database
    try:
        async with open_checkpoints(db_url, max_size=5) as checkpoints:
            await checkpoints.ready()
            stock_pool = await _stock_pool(db_url)
            stock = AsyncPostgresSaver(stock_pool)
            variants: dict[str, Callable[[], Awaitable[None]]] = {
                "stock": _run_once(builder.compile(checkpointer=stock), "async"),
                "server": _server_run(builder.compile(checkpointer=checkpoints.saver), checkpoints),
                "exit": _run_once(builder.compile(checkpointer=stock), "exit"),
            }
            if only:
                variants = {only: variants[only]}
            for run in variants.values():  # warm up
                for _ in range(5):
                    await run()
            _admin(url, f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
            await stock_pool.close()  # reconnect: the setting applies to new sessions
            await checkpoints.pool.close()
            stock_pool = await _stock_pool(db_url)
            stock.conn = stock_pool
            async with open_checkpoints(db_url, max_size=5) as fresh:
                checkpoints.pool, checkpoints.saver.conn = fresh.pool, fresh.pool
                checkpoints.saver.pool = fresh.pool
                for name, run in variants.items():  # statements: 5 runs each, alone
                    await run()
                    before = _log_size()
                    for _ in range(5):
                        await run()
                    await asyncio.sleep(0.3)  # let the log catch up
                    if before is not None:
                        logged = _statements_since(before, database) / 5
                        print(f"{name}: {logged:.1f} statements per run")
                _admin(url, f'ALTER DATABASE "{database}" RESET log_statement')
                wall: dict[str, list[float]] = {name: [] for name in variants}
                cpu: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(runs):  # interleaved, run by run
                    for name, run in variants.items():
                        w0, c0 = time.perf_counter(), time.process_time()
                        await run()
                        cpu[name].append((time.process_time() - c0) * 1000)
                        wall[name].append((time.perf_counter() - w0) * 1000)
                for name in variants:
                    print(
                        f"{name}: wall p50 {statistics.median(wall[name]):.2f} ms, "
                        f"CPU mean {statistics.fmean(cpu[name]):.2f} ms per run ({runs} runs)"
                    )
            await stock_pool.close()
    finally:
        _admin(url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--only", choices=["stock", "server", "exit"], help="one variant alone")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.runs, args.only))
