"""A run's checkpoint writes wait in memory (stores/checkpoints.py `RunWrites`) and go out
together: before any read of the thread, on a timer, and before the run's finish commits.
What a thread shows (state, history, interrupts, a resume) is what LangGraph's own saver shows."""

from __future__ import annotations

import asyncio
import operator
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from langgraph_sdk import get_sync_client
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from stores import checkpoints as checkpoints_module
from stores.checkpoints import (
    INLINE_BUDGET,
    Checkpoints,
    _light,
    batched,
    in_one,
    open_checkpoints,
)
from stores.sql.database import ASYNC_COMMIT
from tests.integration.run_graphs import build_review_graph, build_steps_graph
from tests.support import TEST_GRAPHS, make_settings, running_server


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def stored(database_url: str, thread_id: str) -> int:
    """The checkpoints of the thread in PostgreSQL, read on a connection of its own."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def config_of(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


@pytest.fixture
async def checkpoints(database_url: str) -> AsyncIterator[Checkpoints]:
    """The server's checkpoints, writes kept for a minute unless something sends them."""
    async with open_checkpoints(database_url, max_size=3, flush_after_s=60.0) as opened:
        await opened.ready()
        yield opened


@pytest.fixture
async def stock(database_url: str) -> AsyncIterator[AsyncPostgresSaver]:
    """LangGraph's saver as it comes, for comparison."""
    async with AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=2,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    ) as pool:
        yield AsyncPostgresSaver(pool)  # type: ignore[arg-type]


async def attempt(checkpoints: Checkpoints, graph: Any, thread_id: str, graph_input: Any) -> Any:
    """One run attempt as the executor makes it: its writes queued, bound to its task."""
    writes = checkpoints.run_writes(thread_id)

    async def run() -> None:
        Checkpoints.bind(writes)
        async for _ in graph.astream(graph_input, config_of(thread_id), durability="async"):
            pass

    await asyncio.create_task(run())
    return writes


async def _steps_on(stock: AsyncPostgresSaver) -> tuple[Any, str]:
    """The steps graph on LangGraph's own saver, run once on a new thread: the graph and the
    thread, to compare with what ours stored."""
    plain = build_steps_graph().copy(update={"checkpointer": stock})
    other = str(uuid.uuid4())
    async for _ in plain.astream({"log": ["in"]}, config_of(other), durability="async"):
        pass
    return plain, other


async def test_a_runs_writes_wait_until_a_read_of_its_thread_sends_them(
    checkpoints: Checkpoints, stock: AsyncPostgresSaver, database_url: str
) -> None:
    graph = build_steps_graph().copy(update={"checkpointer": checkpoints.saver})
    thread_id = str(uuid.uuid4())
    writes = await attempt(checkpoints, graph, thread_id, {"log": ["in"]})
    try:
        assert stored(database_url, thread_id) == 0  # every step still in memory
        state = await graph.aget_state(config_of(thread_id))  # sends them, then reads
        assert state.values["log"] == ["in", "s1", "s2", "s3", "s4"]
        assert stored(database_url, thread_id) == 6  # the input, its start and the 4 steps
        assert not writes.busy()
    finally:
        checkpoints.release(writes)

    plain, other = await _steps_on(stock)
    expected = await plain.aget_state(config_of(other))
    assert (state.values, state.next, state.tasks) == (
        expected.values,
        expected.next,
        expected.tasks,
    )
    assert state.metadata is not None
    assert expected.metadata is not None
    assert state.metadata["step"] == expected.metadata["step"]
    ours = [s async for s in graph.aget_state_history(config_of(thread_id))]
    theirs = [s async for s in plain.aget_state_history(config_of(other))]
    assert [(s.values, s.next) for s in ours] == [(s.values, s.next) for s in theirs]


async def test_a_runs_writes_go_out_on_their_own_after_the_flush_delay(
    database_url: str,
) -> None:
    async with open_checkpoints(database_url, max_size=2, flush_after_s=0.05) as checkpoints:
        await checkpoints.ready()
        graph = build_steps_graph().copy(update={"checkpointer": checkpoints.saver})
        thread_id = str(uuid.uuid4())
        writes = await attempt(checkpoints, graph, thread_id, {"log": ["in"]})
        try:
            deadline = time.monotonic() + 30
            while stored(database_url, thread_id) < 6:  # nothing reads the thread meanwhile
                assert time.monotonic() < deadline, "the queued writes were never sent"
                await asyncio.sleep(0.05)
        finally:
            checkpoints.release(writes)


async def test_writes_not_sent_when_an_attempt_ends_are_dropped_and_the_next_starts_over(
    checkpoints: Checkpoints, database_url: str
) -> None:
    graph = build_steps_graph().copy(update={"checkpointer": checkpoints.saver})
    thread_id = str(uuid.uuid4())
    lost = await attempt(checkpoints, graph, thread_id, {"log": ["in"]})
    checkpoints.release(lost)  # handed back or stopped before anything was sent
    assert stored(database_url, thread_id) == 0
    assert (await graph.aget_state(config_of(thread_id))).values == {}
    again = await attempt(checkpoints, graph, thread_id, {"log": ["in"]})
    try:
        await checkpoints.flush(again)
        state = await graph.aget_state(config_of(thread_id))
        assert state.values["log"] == ["in", "s1", "s2", "s3", "s4"]  # the input applied once
    finally:
        checkpoints.release(again)


async def test_a_runs_queued_writes_go_out_as_one_statement_a_table(
    checkpoints: Checkpoints, stock: AsyncPostgresSaver, database_url: str
) -> None:
    """What a run's finish carries (`take`): its checkpoints, their blobs and pending writes
    as one statement per table, not two or three a step; stored, the thread reads as LangGraph's
    own saver leaves it."""
    graph = build_steps_graph().copy(update={"checkpointer": checkpoints.saver})
    thread_id = str(uuid.uuid4())
    writes = await attempt(checkpoints, graph, thread_id, {"log": ["in"]})
    try:
        ops = await checkpoints.take(writes)
        tables = [sql.split()[2] for sql, _, _ in ops]
        assert sorted(tables) == ["checkpoint_blobs", "checkpoint_writes", "checkpoints"]
        async with (
            await psycopg.AsyncConnection.connect(database_url) as conn,
            conn.transaction(),
            conn.cursor(binary=True) as cur,
        ):
            for sql, params, many in ops:
                assert not many
                await cur.execute(sql, params)
        state = await graph.aget_state(config_of(thread_id))
    finally:
        checkpoints.release(writes)
    plain, other = await _steps_on(stock)
    expected = await plain.aget_state(config_of(other))
    assert (state.values, state.next) == (expected.values, expected.next)
    ours = [s async for s in graph.aget_state_history(config_of(thread_id))]
    theirs = [s async for s in plain.aget_state_history(config_of(other))]
    assert [(s.values, s.next, s.metadata) for s in ours] == [
        (s.values, s.next, s.metadata) for s in theirs
    ]
    assert [len(s.tasks) for s in ours] == [len(s.tasks) for s in theirs]


def _repeated_keys(thread_id: str) -> list[tuple[str, Any, bool]]:
    """Queued writes of one thread whose keys come again, of every kind and conflict rule."""
    saver = AsyncPostgresSaver
    t, ns = thread_id, ""

    def blob(channel: str, version: str, data: bytes | None) -> tuple[Any, ...]:
        return (t, ns, channel, version, "bytes" if data is not None else "empty", data)

    def checkpoint(cid: str, parent: str | None, note: str) -> tuple[Any, ...]:
        return (t, ns, cid, parent, Jsonb({"id": cid, "note": note}), Jsonb({"note": note}))

    def write(task: str, path: str, idx: int, channel: str, data: bytes) -> tuple[Any, ...]:
        return (t, ns, "c1", task, path, idx, channel, "bytes", data)

    blobs, points = saver.UPSERT_CHECKPOINT_BLOBS_SQL, saver.UPSERT_CHECKPOINTS_SQL
    upsert, insert = saver.UPSERT_CHECKPOINT_WRITES_SQL, saver.INSERT_CHECKPOINT_WRITES_SQL
    return [
        (blobs, [blob("a", "1", b"\x00first"), blob("b", "1", None)], True),
        (points, checkpoint("c1", None, "first"), False),
        (blobs, [blob("a", "1", b"\xffsecond"), blob("s", "1", b"")], True),
        (insert, [write("t1", "p1", 0, "x", b"\x01"),
                  write("t1", "p1", -1, "__error__", b"e1")], True),
        (points, checkpoint("c1", "c0", "second"), False),
        (points, checkpoint("c2", "c1", "third"), False),
        (upsert, [write("t1", "p2", -1, "__error__", b"e2")], True),
        (insert, [write("t1", "p3", 0, "y", b"\x02"), write("t2", "p1", 0, "z", b"\x03")], True),
        (upsert, [write("t3", "p1", -3, "__interrupt__", b"i1")], True),
        (insert, [write("t3", "p2", -3, "__interrupt__", b"i2")], True),
        (upsert, [write("t4", "p1", -2, "__scheduled__", b"s1")], True),
        (upsert, [write("t4", "p2", -2, "__scheduled__", b"s2")], True),
        (points, checkpoint("c3", None, "was stored"), False),
        (upsert, [write("t5", "p9", -4, "__resume__", b"r2")], True),
    ]  # fmt: skip


async def test_a_batch_with_repeated_keys_stores_what_its_statements_in_order_store(
    checkpoints: Checkpoints, database_url: str
) -> None:
    """One statement a table may not update a row twice: a key that comes again is merged as
    its conflict clause would have it, over rows already stored too."""
    one, other = str(uuid.uuid4()), str(uuid.uuid4())
    saver = AsyncPostgresSaver
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for thread_id in (one, other):  # stored before: c3 (with a parent) and one write
            await conn.execute(
                saver.UPSERT_CHECKPOINTS_SQL,
                (thread_id, "", "c3", "c2", Jsonb({"id": "c3"}), Jsonb({})),
            )
            await conn.execute(
                saver.UPSERT_CHECKPOINT_WRITES_SQL,
                (thread_id, "", "c1", "t5", "p0", -4, "__resume__", "bytes", b"r1"),
            )
        async with conn.transaction(), conn.cursor(binary=True) as cur:
            for sql, params, many in _repeated_keys(one):  # as LangGraph sends them
                if many:
                    await cur.executemany(sql, params)
                else:
                    await cur.execute(sql, params)
        batch = batched(_repeated_keys(other))
        assert [sql.split()[2] for sql, _, _ in batch] == [
            "checkpoint_blobs",
            "checkpoints",
            "checkpoint_writes",
            "checkpoint_writes",
        ]
        async with conn.transaction(), conn.cursor(binary=True) as cur:
            for sql, params, _ in batch:
                await cur.execute(sql, params)
        tables = {
            "checkpoint_blobs": "checkpoint_ns, channel, version, type, blob",
            "checkpoints": "checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint,"
            " metadata",
            "checkpoint_writes": "checkpoint_ns, checkpoint_id, task_id, task_path, idx,"
            " channel, type, blob",
        }
        # And as one statement (`in_one`, a mid-run flush), committed without the WAL flush.
        third = str(uuid.uuid4())
        await conn.execute(
            saver.UPSERT_CHECKPOINTS_SQL, (third, "", "c3", "c2", Jsonb({"id": "c3"}), Jsonb({}))
        )
        await conn.execute(
            saver.UPSERT_CHECKPOINT_WRITES_SQL,
            (third, "", "c1", "t5", "p0", -4, "__resume__", "bytes", b"r1"),
        )
        single = in_one(_repeated_keys(third))
        assert single is not None
        assert single[0].startswith("WITH ")
        assert single[0].endswith(ASYNC_COMMIT)
        async with conn.cursor(binary=True) as cur:
            await cur.execute(single[0], single[1])
            assert await cur.fetchone() == ("off",)
        for table, columns in tables.items():
            rows = {}
            for thread_id in (one, other, third):
                cur = await conn.execute(
                    f"SELECT {columns} FROM {table} WHERE thread_id = %s ORDER BY {columns}",
                    (thread_id,),
                )
                rows[thread_id] = await cur.fetchall()
            assert rows[one] == rows[other], table
            assert rows[one] == rows[third], table
            assert rows[one]


async def test_a_mid_run_flush_is_one_statement_only_within_the_byte_cap_of_one(
    checkpoints: Checkpoints, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's writes sent on their own (the flush timer, no read after them) go out as one
    statement for the three tables, not set_config and one statement a table in a pipeline;
    past `BATCH_BYTES` in all they are several, in a pipeline, as before."""
    sent: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return await execute(self, query, *args, **kwargs)

    graph = build_steps_graph().copy(update={"checkpointer": checkpoints.saver})
    thread_id = str(uuid.uuid4())
    writes = await attempt(checkpoints, graph, thread_id, {"log": ["in"]})
    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted)
    try:
        await checkpoints.saver.flush_writes(writes)
    finally:
        monkeypatch.undo()
        checkpoints.release(writes)
    [statement] = sent
    for table in ("checkpoint_blobs", "checkpoints", "checkpoint_writes"):
        assert f"INSERT INTO {table} " in statement
    assert stored(database_url, thread_id) == 6  # the input, its start and four steps
    assert in_one(_repeated_keys(thread_id)) is not None
    assert in_one(_repeated_keys(thread_id), max_bytes=200) is None
    assert in_one([("SELECT 1", (), False)]) is None


async def test_an_interrupt_and_its_resume_read_and_write_through_the_queue(
    checkpoints: Checkpoints, stock: AsyncPostgresSaver
) -> None:
    graph = build_review_graph().copy(update={"checkpointer": checkpoints.saver})
    plain = build_review_graph().copy(update={"checkpointer": stock})
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    first = await attempt(checkpoints, graph, ours, {"log": ["start"]})
    async for _ in plain.astream({"log": ["start"]}, config_of(theirs), durability="async"):
        pass
    try:
        state = await graph.aget_state(config_of(ours))
        expected = await plain.aget_state(config_of(theirs))
        assert state.next == expected.next == ("review",)
        assert [t.interrupts[0].value for t in state.tasks] == [
            t.interrupts[0].value for t in expected.tasks
        ]
    finally:
        checkpoints.release(first)
    second = await attempt(checkpoints, graph, ours, Command(resume=True))
    async for _ in plain.astream(Command(resume=True), config_of(theirs), durability="async"):
        pass
    try:
        await checkpoints.flush(second)
        state = await graph.aget_state(config_of(ours))
        expected = await plain.aget_state(config_of(theirs))
        assert state.values == expected.values
        assert state.values["log"] == ["start", "draft", "review:True", "published"]
        history = [s.next async for s in graph.aget_state_history(config_of(ours))]
        assert history == [s.next async for s in plain.aget_state_history(config_of(theirs))]
    finally:
        checkpoints.release(second)


@pytest.fixture
def selects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SELECTs psycopg's async cursors send from now on (observed, sent as they are)."""
    seen: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def observed(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if "select" in str(query).lower():
            seen.append(str(query))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", observed)
    return seen


class _Parallel(TypedDict):
    log: Annotated[list[str], operator.add]
    messages: Annotated[list[AnyMessage], add_messages]


def _build_parallel_graph() -> Any:
    """Two branches from START: `answer` writes a message, `ask` interrupts (so the last
    checkpoint of the first run holds one task's writes and the other's interrupt)."""

    def answer(state: _Parallel) -> dict[str, Any]:
        return {"log": ["answer"], "messages": [AIMessage("an answer", id="m-answer")]}

    def ask(state: _Parallel) -> dict[str, Any]:
        reply = interrupt({"question": "go on?"})
        return {"log": [f"ask:{reply}"]}

    builder = StateGraph(_Parallel)
    builder.add_node("answer", answer)
    builder.add_node("ask", ask)
    builder.add_edge(START, "answer")
    builder.add_edge(START, "ask")
    builder.add_edge("answer", END)
    builder.add_edge("ask", END)
    return builder.compile()


@pytest.mark.parametrize(
    ("build", "inputs"),
    [
        (build_steps_graph, [{"log": ["in"]}]),
        (build_review_graph, [{"log": ["start"]}, Command(resume=True)]),
        (
            _build_parallel_graph,
            [{"log": ["in"], "messages": [HumanMessage("hi", id="m-hi")]}, Command(resume="yes")],
        ),
    ],
)
async def test_a_finished_runs_state_from_its_own_head_is_the_state_read_back(
    checkpoints: Checkpoints, build: Any, inputs: list[Any], selects: list[str]
) -> None:
    """What a run's finish reads from the checkpoint it put (`Checkpoints.own_head`: values,
    next nodes, tasks and their interrupts, metadata...) is what PostgreSQL gives back once the
    writes are stored, after each attempt (an interrupt, then its resume), and it reads no
    checkpoint to get it (nor sends the run's writes)."""
    graph = build().copy(update={"checkpointer": checkpoints.saver})
    thread_id = str(uuid.uuid4())
    for graph_input in inputs:
        writes = await attempt(checkpoints, graph, thread_id, graph_input)
        try:
            assert writes.busy()  # nothing stored yet (the flush waits a minute)
            selects.clear()
            with Checkpoints.own_head(writes):
                own = await graph.aget_state(config_of(thread_id))
            assert selects == []  # not read back
            assert writes.busy()  # nor sent: the finish's transaction carries them (`take`)
            await checkpoints.flush(writes)
            back = await graph.aget_state(config_of(thread_id))  # from PostgreSQL
            assert selects
            assert own == back
        finally:
            checkpoints.release(writes)
    assert own.next == ()
    assert own.values["log"][-1] in {"s4", "published", "ask:yes"}


async def test_a_write_from_outside_the_run_makes_its_finish_read_the_thread_back(
    checkpoints: Checkpoints,
) -> None:
    """Once anything but the run writes its thread here (an update of its state), the run's
    own head is no longer the thread's latest checkpoint: the finish reads it back."""
    graph = build_steps_graph().copy(update={"checkpointer": checkpoints.saver})
    thread_id = str(uuid.uuid4())
    writes = await attempt(checkpoints, graph, thread_id, {"log": ["in"]})
    try:
        await graph.aupdate_state(config_of(thread_id), {"log": ["edited"]})
        assert writes.head is None
        assert writes.shared
        with Checkpoints.own_head(writes):
            state = await graph.aget_state(config_of(thread_id))
        assert state.values["log"][-2:] == ["s4", "edited"]
    finally:
        checkpoints.release(writes)


async def test_writes_sent_before_their_checkpoint_are_kept_for_it(
    checkpoints: Checkpoints, selects: list[str]
) -> None:
    """LangGraph sends a step's writes and the next checkpoint in the background: a write on
    the next checkpoint may come before it, one on the last after the next. The run's own head
    has the pending writes PostgreSQL has for the latest checkpoint, whatever the order."""
    saver = checkpoints.saver
    thread_id = str(uuid.uuid4())
    writes = checkpoints.run_writes(thread_id)

    async def run() -> None:
        Checkpoints.bind(writes)
        first, second = empty_checkpoint(), empty_checkpoint()  # ids in time order
        assert first["id"] < second["id"]
        stored = await saver.aput(config_of(thread_id), first, {"source": "input", "step": -1}, {})
        on_second: Any = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": "",
                "checkpoint_id": second["id"],
            }
        }
        await saver.aput_writes(on_second, [("log", "early")], "task-b")
        await saver.aput_writes(stored, [("log", "late")], "task-a")
        await saver.aput(stored, second, {"source": "loop", "step": 0}, {})
        await saver.aput_writes(on_second, [("log", "after")], "task-c")

    try:
        await asyncio.create_task(run())
        selects.clear()
        with Checkpoints.own_head(writes):
            own = await saver.aget_tuple(config_of(thread_id))
        assert selects == []  # the run's own head
        back = await saver.aget_tuple(config_of(thread_id))  # from PostgreSQL
        assert own is not None
        assert back is not None
        assert own.pending_writes == back.pending_writes
        assert [w[2] for w in own.pending_writes or []] == ["early", "after"]
        assert (own.config, own.parent_config, own.checkpoint["id"]) == (
            back.config,
            back.parent_config,
            back.checkpoint["id"],
        )
        assert own.checkpoint["channel_versions"] == back.checkpoint["channel_versions"]
    finally:
        checkpoints.release(writes)


# -- through the server: the finish commits only once the run's checkpoints are stored --------

# Every run that turns `success` records, in the same transaction, how many checkpoints of its
# run its thread had stored at that moment.
_RECORD_AT_FINISH = """
CREATE TABLE IF NOT EXISTS finish_seen (run_id uuid PRIMARY KEY, checkpoints int NOT NULL);
CREATE OR REPLACE FUNCTION record_finish_seen() RETURNS trigger AS $$
BEGIN
    INSERT INTO finish_seen VALUES (NEW.id, (SELECT count(*) FROM checkpoints
        WHERE thread_id = NEW.thread_id::text AND metadata->>'run_id' = NEW.id::text));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS record_finish_seen ON runs;
CREATE TRIGGER record_finish_seen BEFORE UPDATE OF status ON runs FOR EACH ROW
    WHEN (NEW.status = 'success' AND OLD.status <> 'success') EXECUTE FUNCTION record_finish_seen();
"""


@pytest.fixture
def slow_flush_server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A server whose runs' writes would wait a minute: only the finish can send them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_RECORD_AT_FINISH)  # type: ignore[arg-type]
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        checkpoint_flush_s=60.0,
    )
    try:
        with running_server(settings) as url:
            yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS record_finish_seen ON runs")


def test_a_run_is_finished_only_after_its_checkpoints_are_stored(
    slow_flush_server: str, database_url: str
) -> None:
    client: Any = get_sync_client(url=slow_flush_server)
    thread = client.threads.create()
    run = client.runs.create(thread["thread_id"], "steps", input={"log": ["in"]})
    result = client.runs.join(thread["thread_id"], run["run_id"])
    assert result["log"] == ["in", "s1", "s2", "s3", "s4"]
    with psycopg.connect(database_url) as conn:
        seen = conn.execute(
            "SELECT checkpoints FROM finish_seen WHERE run_id = %s", (run["run_id"],)
        ).fetchone()
    assert seen == (6,)  # all of them, inside the transaction that set `success`
    state = client.threads.get_state(thread["thread_id"])
    assert state["values"]["log"] == ["in", "s1", "s2", "s3", "s4"]
    assert len(client.threads.get_history(thread["thread_id"])) == 6


def test_light_values_are_plain_data_within_the_budget() -> None:
    message = AIMessage("Hello from the fake model.", id="m1")
    assert _light([None, 1, 2.5, True, "turns", {"a": [1, 2]}, (b"x",), message])
    assert not _light(["x" * (INLINE_BUDGET + 1)])
    assert not _light([[0] * INLINE_BUDGET])  # many small values weigh too
    assert not _light([object()])  # not known to be cheap to serialise


def _thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions handed to `asyncio.to_thread` from now on, in order."""
    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", ""))
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return hops


async def test_light_checkpoints_are_serialised_on_the_loop_and_heavy_ones_in_a_thread(
    checkpoints: Checkpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = _thread_hops(monkeypatch)

    async def say(state: ChatState) -> dict[str, Any]:
        return {"messages": [AIMessage(str(state["messages"][-1].content).upper())]}

    builder = StateGraph(ChatState)
    builder.add_node("say", say)
    builder.add_edge(START, "say")
    builder.add_edge("say", END)
    graph = builder.compile(checkpointer=checkpoints.saver)
    for text, light in (("hello", True), ("x" * 3 * INLINE_BUDGET, False)):
        hops.clear()
        thread_id = str(uuid.uuid4())
        writes = await attempt(checkpoints, graph, thread_id, {"messages": [HumanMessage(text)]})
        try:
            await checkpoints.flush(writes)
        finally:
            checkpoints.release(writes)
        dumps = [h for h in hops if h in ("_dump_blobs", "_dump_writes")]
        assert (dumps == []) is light, dumps
        state = await graph.aget_state(config_of(thread_id))  # read back from PostgreSQL
        assert [m.content for m in state.values["messages"]] == [text, text.upper()]


async def test_light_pending_writes_are_loaded_on_the_loop_and_heavy_ones_in_a_thread(
    checkpoints: Checkpoints, stock: AsyncPostgresSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint read back loads its pending writes itself when they are light (LangGraph's
    saver always hands them to a thread) and reads the same tuple as LangGraph's."""
    await stock.setup()
    hops = _thread_hops(monkeypatch)
    for pending, light in (([], True), (["hi"], True), (["x" * 3 * INLINE_BUDGET], False)):
        thread_id = str(uuid.uuid4())
        checkpoint = empty_checkpoint()
        config = await stock.aput(config_of(thread_id), checkpoint, {"step": 1}, {})
        if pending:
            await stock.aput_writes(config, [("messages", v) for v in pending], "task-1")
        hops.clear()
        ours = await checkpoints.saver.aget_tuple(config_of(thread_id))
        assert ours is not None
        assert ("_load_writes" not in hops) is light, hops
        theirs = await stock.aget_tuple(config_of(thread_id))
        assert theirs is not None
        assert (ours.config, ours.checkpoint, ours.parent_config, ours.pending_writes) == (
            theirs.config,
            theirs.checkpoint,
            theirs.parent_config,
            theirs.pending_writes,
        )
        assert [value for _, _, value in ours.pending_writes or []] == pending


# -- through the server: which commits wait for the WAL flush --------------------------------

# Every row written to these tables records the `synchronous_commit` of its transaction.
_RECORD_COMMIT_MODE = """
CREATE TABLE IF NOT EXISTS commit_modes (
    tbl text NOT NULL, op text NOT NULL, run_id text, thread_id text, event text, status text,
    mode text NOT NULL, tx bigint NOT NULL
);
CREATE OR REPLACE FUNCTION record_commit_mode() RETURNS trigger AS $$
DECLARE j jsonb := to_jsonb(NEW);
BEGIN
    INSERT INTO commit_modes VALUES (TG_TABLE_NAME, TG_OP,
        COALESCE(j->>'run_id', CASE WHEN TG_TABLE_NAME = 'runs' THEN j->>'id' END,
                 j#>>'{metadata,run_id}'),
        j->>'thread_id', j->>'event', CASE WHEN TG_TABLE_NAME = 'runs' THEN j->>'status' END,
        current_setting('synchronous_commit'), txid_current());
    RETURN NEW;
END $$ LANGUAGE plpgsql;
"""
_MODE_TABLES = ("runs", "run_events", "checkpoints", "checkpoint_blobs", "checkpoint_writes")


@pytest.fixture
def commit_mode_server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A server whose writes to the run and checkpoint tables record their commit mode (the
    checkpoint tables exist once it has started)."""
    settings = make_settings(
        database_url, tmp_path, migrate_on_start=False, langgraph_config=TEST_GRAPHS
    )
    try:
        with running_server(settings) as url:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(_RECORD_COMMIT_MODE)  # type: ignore[arg-type]
                for table in _MODE_TABLES:
                    conn.execute(
                        f"CREATE TRIGGER record_commit_mode AFTER INSERT OR UPDATE ON {table}"  # type: ignore[arg-type]
                        " FOR EACH ROW EXECUTE FUNCTION record_commit_mode()"
                    )
            yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for table in _MODE_TABLES:
                conn.execute(f"DROP TRIGGER IF EXISTS record_commit_mode ON {table}")  # type: ignore[arg-type]


def _modes(
    database_url: str, run: dict[str, Any]
) -> set[tuple[str, str, str | None, str | None, str, bool | None]]:
    """(table, operation, event, run status, synchronous_commit, in the run's finishing
    transaction) of the run's writes, and of its thread's checkpoints (their blobs and pending
    writes name only the thread)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT tbl, op, event, status, mode, tx = (SELECT tx FROM commit_modes"
            " WHERE run_id = %(r)s AND tbl = 'runs' AND op = 'UPDATE' AND status = 'success')"
            " FROM commit_modes WHERE run_id = %(r)s"
            " OR (tbl LIKE 'checkpoint%%' AND thread_id = %(t)s)",
            {"r": run["run_id"], "t": run["thread_id"]},
        ).fetchall()
    return {tuple(row) for row in rows}  # type: ignore[misc]


def test_a_runs_checkpoints_mid_run_commit_without_waiting_for_the_wal_and_the_rest_with(
    commit_mode_server: str, database_url: str
) -> None:
    client: Any = get_sync_client(url=commit_mode_server)
    thread = client.threads.create()
    run = client.runs.create(  # steps slower than the flush delay: checkpoints go out mid-run
        thread["thread_id"],
        "steps",
        input={"log": ["in"]},
        stream_mode=["values", "updates"],
        config={"configurable": {"delay": 0.2}},
    )
    result = client.runs.join(thread["thread_id"], run["run_id"])
    assert result["log"] == ["in", "s1", "s2", "s3", "s4"]
    modes = _modes(database_url, run)
    # What the client is told: the run created (claimed at once, its `metadata` with it), and
    # its end, stored with its finish. Both wait for the WAL flush, which makes every commit
    # before them durable too.
    assert ("runs", "INSERT", None, "running", "on", False) in modes
    assert ("run_events", "INSERT", "metadata", None, "on", False) in modes
    assert ("runs", "UPDATE", None, "success", "on", True) in modes
    assert ("run_events", "INSERT", "end", None, "on", True) in modes
    # Its events on the way wait too: a follower is shown only what a replay will show, even
    # after a crash of PostgreSQL. Its checkpoints mid-run do not wait; its last checkpoint
    # writes are stored by the transaction that finishes it.
    progress = {(tbl, event, mode, end) for tbl, _, event, _, mode, end in modes if tbl != "runs"}
    assert {("run_events", "values", "on", False), ("run_events", "updates", "on", False)} <= (
        progress
    )
    checkpoints = {(tbl, mode, end) for tbl, event, mode, end in progress if tbl != "run_events"}
    assert {("checkpoints", "off", False), ("checkpoint_writes", "off", False)} <= checkpoints
    assert {("checkpoints", "on", True), ("checkpoint_writes", "on", True)} <= checkpoints
    assert ("checkpoints", "on", False) not in checkpoints
    assert ("checkpoint_writes", "on", False) not in checkpoints
    # All of it is there once the client has the result.
    assert len(client.threads.get_history(thread["thread_id"])) == 6
    events = [part.event for part in client.runs.join_stream(thread["thread_id"], run["run_id"])]
    assert (events[0], events[-1]) == ("metadata", "end")
    assert (events.count("values"), events.count("updates")) == (5, 4)


def test_the_last_event_of_a_cancelled_run_commits_waiting_for_the_wal(
    commit_mode_server: str, database_url: str
) -> None:
    client: Any = get_sync_client(url=commit_mode_server)
    thread = client.threads.create()
    run = client.runs.create(
        thread["thread_id"], "steps", input={"log": ["in"]}, config={"configurable": {"delay": 1}}
    )
    time.sleep(0.5)
    client.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
    modes = _modes(database_url, run)
    assert ("runs", "UPDATE", None, "interrupted", "on", None) in modes
    assert ("run_events", "INSERT", "error", None, "on", None) in modes


def test_a_run_whose_last_checkpoint_postgresql_refuses_ends_as_an_error(
    slow_flush_server: str,
) -> None:
    """The finish's transaction carries the run's last checkpoint writes: when PostgreSQL
    refuses one (a NUL in a string it stores as JSONB), nothing of it is written and the run
    ends as an error at once, its thread as last stored, as when they were sent apart."""
    client: Any = get_sync_client(url=slow_flush_server)
    thread = client.threads.create()
    run = client.runs.create(
        thread["thread_id"],
        "steps",
        input={"log": ["in"]},
        config={"configurable": {"nul_note": True}},
    )
    started = time.monotonic()
    result = client.runs.join(thread["thread_id"], run["run_id"])
    assert time.monotonic() - started < 10  # not left running until its lease lapses
    assert "__error__" in result
    assert client.runs.get(thread["thread_id"], run["run_id"])["status"] == "error"
    assert client.threads.get(thread["thread_id"])["status"] == "error"
    assert client.threads.get_history(thread["thread_id"]) == []  # none stored
    events = [part.event for part in client.runs.join_stream(thread["thread_id"], run["run_id"])]
    assert events[-1] == "error"


def test_the_events_of_a_run_nobody_follows_are_stored_by_its_finish(
    commit_mode_server: str, database_url: str
) -> None:
    """A `runs.wait` has no follower: its events wait for its finish (RUN_EVENTS_HOLD_S) and
    are stored by the finish's transaction, with its `end`, not one round trip each; a
    streamed run's events are stored as they come (its follower sees each once stored)."""
    client: Any = get_sync_client(url=commit_mode_server)
    thread = client.threads.create()
    waited: dict[str, Any] = {}
    result = client.runs.wait(
        thread["thread_id"],
        "steps",
        input={"log": ["in"]},
        on_run_created=lambda meta: waited.update(meta, thread_id=thread["thread_id"]),
    )
    assert result["log"] == ["in", "s1", "s2", "s3", "s4"]
    events = {(event, end) for tbl, _, event, _, _, end in _modes(database_url, waited)
              if tbl == "run_events"}  # fmt: skip
    assert events == {
        ("metadata", False),  # stored by the creating statement
        ("values", True),
        ("end", True),
    }
    replayed = [p.event for p in client.runs.join_stream(thread["thread_id"], waited["run_id"])]
    assert replayed == ["metadata", *["values"] * 5, "end"]

    streamed = client.threads.create()
    parts = list(
        client.runs.stream(
            streamed["thread_id"], "steps", input={"log": ["in"]}, stream_mode="values"
        )
    )
    run = next(p.data for p in parts if p.event == "metadata")
    events = {(event, end) for tbl, _, event, _, _, end in
              _modes(database_url, {**run, "thread_id": streamed["thread_id"]})
              if tbl == "run_events"}  # fmt: skip
    assert ("values", True) not in events
    assert ("values", False) in events


class PagesState(TypedDict):
    pages: Annotated[list[str], operator.add]


def build_pages_graph(size: int) -> Any:
    """Four steps, each adding a page of `size` characters: large blobs and pending writes."""
    builder = StateGraph(PagesState)
    previous = START
    for name in ("p1", "p2", "p3", "p4"):

        def page(state: PagesState, *, _name: str = name) -> dict[str, Any]:
            return {"pages": [_name * (size // len(_name))]}

        builder.add_node(name, page)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


async def test_a_batch_of_writes_over_the_byte_cap_goes_out_in_several_statements_all_stored(
    checkpoints: Checkpoints,
    stock: AsyncPostgresSaver,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run's queued writes weighing more than `BATCH_BYTES` are not one statement a table
    (a JSONB array and a bytea array PostgreSQL would refuse past 256 MiB / 1 GiB): they go
    out in several, in the one transaction, and every row lands as LangGraph's saver stores
    it."""
    cap = 256 * 1024
    monkeypatch.setattr(checkpoints_module, "BATCH_BYTES", cap, raising=False)
    sent: list[list[Any]] = []
    send = checkpoints.saver._send

    async def recorded(ops: list[Any], select: Any) -> Any:
        sent.append(ops)
        return await send(ops, select)

    monkeypatch.setattr(checkpoints.saver, "_send", recorded)
    builder = build_pages_graph(100_000)  # blobs of 0.1, 0.2, 0.3 and 0.4 MB; writes of 0.1 MB
    graph = builder.compile(checkpointer=checkpoints.saver)
    thread_id = str(uuid.uuid4())
    writes = await attempt(checkpoints, graph, thread_id, {"pages": []})
    try:
        assert stored(database_url, thread_id) == 0  # all of it queued: one batch
        await checkpoints.flush(writes)
    finally:
        checkpoints.release(writes)
    [ops] = sent
    blob_statements = [params for statement, params, _ in ops if "checkpoint_blobs" in statement]
    write_statements = [params for statement, params, _ in ops if "checkpoint_writes" in statement]
    assert len(blob_statements) > 1
    assert len(write_statements) > 1
    for _, binary in blob_statements + write_statements:
        assert len(binary) == 1 or sum(len(b or b"") for b in binary) <= cap

    plain = builder.compile(checkpointer=stock)
    other = str(uuid.uuid4())
    async for _ in plain.astream({"pages": []}, config_of(other), durability="async"):
        pass
    ours = [s async for s in graph.aget_state_history(config_of(thread_id))]
    theirs = [s async for s in plain.aget_state_history(config_of(other))]
    assert len(ours) == 6
    assert [(s.values, s.next) for s in ours] == [(s.values, s.next) for s in theirs]
    with psycopg.connect(database_url) as conn:
        counts = [
            conn.execute(
                f"SELECT count(*), coalesce(sum(length(blob)), 0) FROM {table}"
                " WHERE thread_id = %s",
                (thread,),
            ).fetchone()
            for table in ("checkpoint_blobs", "checkpoint_writes")
            for thread in (thread_id, other)
        ]
    assert counts[0] == counts[1]  # blobs: ours, LangGraph's
    assert counts[2] == counts[3]  # pending writes: ours, LangGraph's
