"""Telemetry overhead: what the spans, callbacks and metrics cost per graph run and per request.

Two measurements of CPU time (`time.process_time`: on a shared machine wall time mostly
measures the neighbours), each against a baseline without telemetry in the same run, in
alternating rounds:
- a graph of 4 async nodes (plus LangGraph's in-memory checkpointer) invoked with and without
  the run's telemetry (run span, run/thread ids in context, the LangChain callbacks that open a
  span per node, span-to-metric processor);
- an HTTP request to a FastAPI route with a path parameter, through the ASGI transport, with
  and without the `RequestTelemetry` middleware (request id, request span, HTTP metrics).

Run with `python -m bench telemetry`; results go to bench/results/telemetry.md.
"""

from __future__ import annotations

import asyncio
import operator
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

import httpx
from fastapi import FastAPI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from server.app import _NO_NATIVE_TELEMETRY
from server.telemetry.http import RequestTelemetry
from server.telemetry.runs import observed_run
from server.telemetry.tracing import install_tracing
from stores.sql.models import Run

RESULTS = Path(__file__).parent / "results" / "telemetry.md"
ROUNDS = 7
RUNS_PER_ROUND = 100
REQUESTS_PER_ROUND = 400


class _State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _graph() -> Any:
    builder = StateGraph(_State)
    previous = START
    for name in ("a", "b", "c", "d"):

        async def node(state: _State, name: str = name) -> dict[str, Any]:
            return {"log": [name]}

        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=InMemorySaver())


async def _runs(graph: Any, *, traced: bool) -> float:
    """CPU seconds per run over RUNS_PER_ROUND runs."""
    started = time.process_time()
    for _ in range(RUNS_PER_ROUND):
        thread_id = str(uuid.uuid4())
        config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
        if traced:
            run = Run(id=uuid.uuid4(), thread_id=uuid.UUID(thread_id))
            with observed_run(run, 1) as telemetry:
                telemetry.started("bench", config)
                await graph.ainvoke({"log": []}, config)
                telemetry.finished("success")
        else:
            await graph.ainvoke({"log": []}, config)
    return (time.process_time() - started) / RUNS_PER_ROUND


def _app(*, traced: bool) -> FastAPI:
    app = FastAPI(**_NO_NATIVE_TELEMETRY)  # as the server makes it: FastAPI's own spans off

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    if traced:
        app.add_middleware(RequestTelemetry)
    return app


async def _requests(app: FastAPI) -> float:
    """CPU seconds per request (client and server: one process) over REQUESTS_PER_ROUND."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        started = time.process_time()
        for n in range(REQUESTS_PER_ROUND):
            response = await client.get(f"/things/{n}")
            assert response.status_code == 200
        return (time.process_time() - started) / REQUESTS_PER_ROUND


async def _ab(
    base: Callable[[], Awaitable[float]], traced: Callable[[], Awaitable[float]]
) -> tuple[float, float]:
    await base()
    await traced()  # warm up both
    a: list[float] = []
    b: list[float] = []
    for _ in range(ROUNDS):
        a.append(await base())
        b.append(await traced())
    return statistics.median(a), statistics.median(b)


def main() -> None:
    """Measure and write bench/results/telemetry.md."""
    install_tracing(service_name="bench", otlp_endpoint=None)
    graph = _graph()
    plain_app, traced_app = _app(traced=False), _app(traced=True)
    run_base, run_traced = asyncio.run(
        _ab(lambda: _runs(graph, traced=False), lambda: _runs(graph, traced=True))
    )
    req_base, req_traced = asyncio.run(
        _ab(lambda: _requests(plain_app), lambda: _requests(traced_app))
    )
    rows = [
        ("graph run (4 nodes, in-memory checkpoints)", run_base, run_traced),
        (
            "HTTP request (FastAPI route with a path parameter, ASGI transport)",
            req_base,
            req_traced,
        ),
    ]
    lines = [
        "# Telemetry overhead",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} (CPython "
        f"{platform.python_version()}, {os.cpu_count()} CPUs shared with other work). "
        "Regenerate with `python -m bench telemetry`.",
        "",
        "CPU time per operation (`time.process_time`: wall time on this shared machine "
        "measures the neighbours more than the code). "
        f"Medians of {ROUNDS} alternating rounds ({RUNS_PER_ROUND} runs / {REQUESTS_PER_ROUND} "
        "requests each), with and without telemetry in the same run. With it: the run's span, "
        "ids in context, a span per node from LangChain callbacks, span-to-metric processing "
        "(graph); request id, request span, route-template metrics (HTTP). Nothing is exported "
        "(no OTLP endpoint), as by default.",
        "",
        "| what | without | with telemetry | added | ratio |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {base * 1e6:.0f} µs | {traced * 1e6:.0f} µs | "
            f"{(traced - base) * 1e6:+.0f} µs | {traced / base:.2f}x |"
            for name, base, traced in rows
        ),
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
