"""The prune of a /chat conversation's checkpoints (`Checkpoints.prune`, every
`CHECKPOINT_PRUNE_EVERY` turns) keeps what LangGraph's own `keep_latest` keeps, in one
statement for a thread with checkpoints in the root namespace only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from graphs.chat import build_chat_graph
from nodes.context import AgentContext
from stores.checkpoints import Checkpoints, open_checkpoints

_TABLES = {
    "checkpoints": "checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata",
    "checkpoint_blobs": "checkpoint_ns, channel, version, type, blob",
    "checkpoint_writes": "checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob",
}
_KEYS = {
    "checkpoints": "checkpoint_ns, checkpoint_id",
    "checkpoint_blobs": "checkpoint_ns, channel, version",
    "checkpoint_writes": "checkpoint_ns, checkpoint_id, task_id, idx",
}


@pytest.fixture
async def checkpoints(database_url: str) -> AsyncIterator[Checkpoints]:
    async with open_checkpoints(database_url, max_size=3, flush_after_s=0.0) as opened:
        await opened.ready()
        yield opened


async def rows(conn: psycopg.AsyncConnection[Any], thread_id: str) -> dict[str, list[Any]]:
    """Every row of the thread in the three tables (without the thread id), sorted."""
    found: dict[str, list[Any]] = {}
    for table, columns in _TABLES.items():
        cursor = await conn.execute(
            f"SELECT {columns} FROM {table} WHERE thread_id = %s ORDER BY {_KEYS[table]}",
            (thread_id,),
        )
        found[table] = [tuple(row) for row in await cursor.fetchall()]
    return found


async def copy_thread(conn: psycopg.AsyncConnection[Any], source: str, target: str) -> None:
    for table, columns in _TABLES.items():
        await conn.execute(
            f"INSERT INTO {table} (thread_id, {columns})"
            f" SELECT %s, {columns} FROM {table} WHERE thread_id = %s",
            (target, source),
        )


async def test_the_prune_keeps_what_langgraphs_keep_latest_keeps_in_one_statement(
    checkpoints: Checkpoints, database_url: str
) -> None:
    graph = build_chat_graph(checkpointer=await checkpoints.ready())
    context = AgentContext(user_id="prune", tools=("calculator",))
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    config: Any = {"configurable": {"thread_id": theirs}}
    for turn in range(4):
        await graph.ainvoke(
            {"messages": [HumanMessage(f"what is {turn} + {turn}?")]},
            config,
            context=context,
            durability="sync",
        )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        before = await rows(conn, theirs)
        assert len(before["checkpoints"]) > 4
        assert before["checkpoint_writes"]
        old = before["checkpoints"][0][1]
        # Writes that outlived their checkpoint, and writes saved before theirs (pending).
        for checkpoint_id in (old, "1ffffffff-pending"):
            await conn.execute(
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
                " idx, channel, type, blob) VALUES (%s, '', %s, 't', 0, 'x', 'json', '1')",
                (theirs, checkpoint_id),
            )
        await copy_thread(conn, theirs, ours)
        assert await rows(conn, ours) == await rows(conn, theirs)

        await AsyncPostgresSaver.aprune(checkpoints.saver, [theirs])  # LangGraph's own
        assert await checkpoints._keep_latest(ours)  # one statement did it
        await checkpoints.prune(ours)  # again: nothing more goes
        kept = await rows(conn, theirs)
        assert len(kept["checkpoints"]) == 1
        assert kept["checkpoint_blobs"]
        assert len(kept["checkpoint_blobs"]) < len(before["checkpoint_blobs"])
        written = {w[1] for w in kept["checkpoint_writes"]}
        assert "1ffffffff-pending" in written
        assert old not in written
        assert written <= {kept["checkpoints"][0][1], "1ffffffff-pending"}
        assert kept["checkpoints"][0][2] is None  # unlinked from its deleted parent
        assert await rows(conn, ours) == kept


async def test_a_thread_with_a_subgraphs_namespace_is_left_to_langgraphs_prune(
    checkpoints: Checkpoints, database_url: str
) -> None:
    graph = build_chat_graph(checkpointer=await checkpoints.ready())
    context = AgentContext(user_id="prune", tools=("calculator",))
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    for turn in range(2):
        await graph.ainvoke(
            {"messages": [HumanMessage(f"turn {turn}")]},
            {"configurable": {"thread_id": theirs}},
            context=context,
            durability="sync",
        )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # A `checkpointer=True` subgraph's namespace: its state outlives each call.
        await conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, checkpoint,"
            " metadata) SELECT thread_id, 'child', checkpoint_id, type, checkpoint, metadata"
            " FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''",
            (theirs,),
        )
        await copy_thread(conn, theirs, ours)
        before = await rows(conn, ours)
        assert not await checkpoints._keep_latest(ours)
        assert await rows(conn, ours) == before  # nothing done
        await AsyncPostgresSaver.aprune(checkpoints.saver, [theirs])
        await checkpoints.prune(ours)
        kept = await rows(conn, theirs)
        assert len(kept["checkpoints"]) == 2  # the latest of each namespace
        assert await rows(conn, ours) == kept
