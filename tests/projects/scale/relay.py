"""The scale-out test's graph: n1 → n2 → n3 → n4. Each node first records that it executes (run,
node, process) in the `node_executions` table of NODE_EXECUTIONS_URL, then sleeps
`configurable.delay` seconds and appends its name to `log`."""

from __future__ import annotations

import asyncio
import operator
import os
from typing import Annotated, Any, TypedDict

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

NODES = ("n1", "n2", "n3", "n4")


class RelayState(TypedDict, total=False):
    """A log every node appends its name to."""

    log: Annotated[list[str], operator.add]


_connection: psycopg.AsyncConnection[Any] | None = None
_lock: asyncio.Lock | None = None


async def _record(run_id: str | None, node: str) -> None:
    """One row per execution, on one connection per process (the test's database has few)."""
    global _connection, _lock
    _lock = _lock or asyncio.Lock()
    async with _lock:
        if _connection is None or _connection.closed:
            url = os.environ["NODE_EXECUTIONS_URL"]
            _connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await _connection.execute(
            "INSERT INTO node_executions (run_id, node, pid) VALUES (%s, %s, %s)",
            (run_id, node, os.getpid()),
        )


def _step(name: str) -> Any:
    async def node(state: RelayState, config: RunnableConfig) -> dict[str, Any]:
        await _record((config.get("metadata") or {}).get("run_id"), name)
        await asyncio.sleep(float((config.get("configurable") or {}).get("delay", 0.0)))
        return {"log": [name]}

    node.__name__ = name
    return node


def build_relay() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The four nodes in a line."""
    builder = StateGraph(RelayState)
    previous = START
    for name in NODES:
        builder.add_node(name, _step(name))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile()


graph = build_relay()
