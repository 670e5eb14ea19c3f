"""A turn's transcript in SQL: written by the transaction that ends its run, all or nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from stores.errors import ConflictError, LimitError
from stores.sql import runs as run_store
from stores.sql import turns
from stores.sql.database import Database, libpq_url, open_database
from stores.sql.models import Agent, Conversation, Run, User
from stores.sql.runs import RunToken
from stores.sql.thread_events import CHANNEL as THREAD_CHANNEL
from tests.integration.test_sql_runs import claimed_twice, counting_waits

ROWS: list[dict[str, Any]] = [
    {"sender": "tool", "content": "4", "metadata": {"tool": "calculator", "args": {"x": "2+2"}}},
    {"sender": "agent", "content": "It is 4.", "metadata": {"usage": {"tokens": 3}}},
]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, pool_size=2) as database:
        yield database


async def finish_turn(
    db: Database,
    token: RunToken,
    rows: list[dict[str, Any]],
    *,
    write: run_store.FinishWrite | None = None,
) -> tuple[bool, list[uuid.UUID], run_store.FinishWrite | None]:
    """Finish the run as `token`'s attempt with `rows` as its transcript (or `write`, the
    statement of an earlier try); whether it finished, the rows' ids, the statement."""
    run = await run_store.get_run(db, token.run_id)
    assert run.thread_id is not None
    ids: list[uuid.UUID] = []
    if write is None:
        ids, write = turns.transcript_write(token, run.thread_id, rows, status="success")
    finished = await run_store.finish_run(
        db,
        token,
        status="success",
        output={"by": token.attempt},
        thread_status="idle",
        thread_values={},
        thread_interrupts={},
        also=(write,) if write is not None else (),
    )
    return finished, ids, write


async def transcript(db: Database, run_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """The messages of the run's conversation, in transcript order."""
    async with db.engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT m.id, m.sender, m.content, m.metadata FROM messages m"
                " JOIN runs r ON r.thread_id = m.conversation_id WHERE r.id = :id ORDER BY m.seq"
            ),
            {"id": run_id},
        )
        return [tuple(row) for row in result]


async def test_the_transcript_is_written_in_order_with_the_runs_end(db: Database) -> None:
    _, current = await claimed_twice(db)
    finished, ids, _ = await finish_turn(db, current, ROWS)
    assert finished
    assert await transcript(db, current.run_id) == [
        (ids[0], "tool", "4", ROWS[0]["metadata"]),
        (ids[1], "agent", "It is 4.", ROWS[1]["metadata"]),
    ]
    assert (await run_store.get_run(db, current.run_id)).status == "success"


async def test_a_stale_attempt_writes_no_transcript(db: Database) -> None:
    stale, current = await claimed_twice(db)
    finished, _, _ = await finish_turn(db, stale, ROWS)
    assert not finished
    assert await transcript(db, current.run_id) == []
    assert (await run_store.get_run(db, current.run_id)).status == "running"


async def test_a_finish_retried_after_its_commit_writes_the_transcript_once(
    db: Database,
) -> None:
    """The retry of a finish whose answer was lost sends the same statement (the same ids):
    the run is reported ended by this attempt, and its rows are not written twice."""
    _, current = await claimed_twice(db)
    finished, ids, write = await finish_turn(db, current, ROWS)
    assert finished
    again, _, _ = await finish_turn(db, current, ROWS, write=write)
    assert again
    assert [row[0] for row in await transcript(db, current.run_id)] == ids


async def test_a_refused_transcript_leaves_the_run_unfinished(db: Database) -> None:
    """The transcript and the run's end commit together: a row PostgreSQL refuses (a sender
    its CHECK does not allow) rolls the finish back with it."""
    _, current = await claimed_twice(db)
    bad = [ROWS[0], {"sender": "nobody", "content": "x", "metadata": {}}]
    with pytest.raises(psycopg.errors.CheckViolation):
        await finish_turn(db, current, bad)
    assert await transcript(db, current.run_id) == []
    assert (await run_store.get_run(db, current.run_id)).status == "running"
    finished, ids, _ = await finish_turn(db, current, ROWS)  # the connection is usable again
    assert finished
    assert [row[0] for row in await transcript(db, current.run_id)] == ids


async def test_a_turn_without_rows_finishes_without_a_statement(db: Database) -> None:
    _, current = await claimed_twice(db)
    run = await run_store.get_run(db, current.run_id)
    assert run.thread_id is not None
    assert turns.transcript_write(current, run.thread_id, [], status="error") == ([], None)


async def _conversation(db: Database, graph_id: str = "chat") -> tuple[Agent, Conversation]:
    """An agent of `graph_id` and an idle conversation of a user with it."""
    async with db.sessions.begin() as session:
        user = User(email=f"{uuid.uuid4().hex[:8]}@ex.com", name="u")
        agent = Agent(graph_id=graph_id, name=f"turn {uuid.uuid4().hex[:6]}")
        session.add_all([user, agent])
        await session.flush()
        conversation = Conversation(user_id=user.id, agent_id=agent.id, title="t")
        session.add(conversation)
    return agent, conversation


async def _begin(
    db: Database, conversation_id: uuid.UUID, **given: Any
) -> tuple[Agent, Conversation, Run] | None:
    args: dict[str, Any] = {
        "message_id": uuid.uuid4(),
        "content": "hello",
        "run_kwargs": {"input": {"n": 1}, "stream_mode": ["custom"]},
        "metadata": {"source": "chat"},
        "graph_ids": ["chat", "steps"],
        "notify": run_store.Notify("switchboard_test", "me"),
        "claim": run_store.InlineClaim("worker-a", 30),
        **given,
    }
    return await turns.begin_turn_at_once(db, conversation_id, **args)


async def _written(db: Database, conversation_id: uuid.UUID) -> tuple[Any, ...]:
    """The conversation's status, its messages and the statuses of its runs."""
    async with db.engine.connect() as conn:
        status = await conn.scalar(
            text("SELECT status FROM conversations WHERE id = :id"), {"id": conversation_id}
        )
        messages = [
            tuple(row)
            for row in await conn.execute(
                text("SELECT id, sender, content FROM messages WHERE conversation_id = :id"),
                {"id": conversation_id},
            )
        ]
        runs = [
            str(s)
            for (s,) in await conn.execute(
                text("SELECT status FROM runs WHERE thread_id = :id ORDER BY created_at"),
                {"id": conversation_id},
            )
        ]
    return status, messages, runs


async def test_a_turn_begins_with_its_checks_and_writes_in_one_round_trip(
    database_url: str,
) -> None:
    async with open_database(database_url, pool_size=1) as db:
        agent, conversation = await _conversation(db)
        message_id = uuid.uuid4()
        with counting_waits() as waits:
            written = await _begin(db, conversation.id, message_id=message_id)
        # The conversation row's lock and the statement, sent together and answered at once.
        assert waits[0] == 1
        assert written is not None
        read_agent, read_conversation, run = written
        assert (read_agent.id, read_agent.graph_id) == (agent.id, "chat")
        assert (read_conversation.id, read_conversation.user_id) == (
            conversation.id,
            conversation.user_id,
        )
        assert (run.status, run.attempt, run.lease_owner) == ("running", 1, "worker-a")
        assert (run.thread_id, run.assistant_id, run.multitask_strategy) == (
            conversation.id,
            agent.id,
            "reject",
        )
        assert run.metadata_ == {"source": "chat"}
        assert run.stream_position is not None
        assert await _written(db, conversation.id) == (
            "busy",
            [(message_id, "user", "hello")],
            ["running"],
        )
        # Without a slot, the run is left pending for a worker.
        _, other = await _conversation(db)
        pending = await _begin(db, other.id, claim=None)
        assert pending is not None
        assert (pending[2].status, pending[2].attempt, pending[2].lease_owner) == (
            "pending",
            0,
            None,
        )


async def test_a_turn_begun_at_once_writes_nothing_when_the_full_path_would_refuse_it(
    db: Database,
) -> None:
    """Each refusal `begin_turn` words itself (404, 409, 429) leaves the database as it was."""
    _, conversation = await _conversation(db)
    assert await _begin(db, uuid.uuid4()) is None  # no such conversation
    assert await _begin(db, conversation.id, graph_ids=["steps"]) is None  # undeclared graph
    assert await _written(db, conversation.id) == ("idle", [], [])
    assert await _begin(db, conversation.id) is not None
    assert await _begin(db, conversation.id) is None  # a run in flight
    assert len((await _written(db, conversation.id))[1]) == 1
    with pytest.raises(ConflictError, match="busy"):  # what the full path then says
        await turns.begin_turn(
            db,
            conversation.id,
            message_id=uuid.uuid4(),
            content="again",
            run_kwargs={},
            metadata={},
            graph_ids=["chat"],
        )
    # The agent deleted: the conversation has none any more.
    _, orphan = await _conversation(db)
    async with db.engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM agents WHERE id = (SELECT agent_id FROM conversations"
                 " WHERE id = :id)"),
            {"id": orphan.id},
        )  # fmt: skip
    assert await _begin(db, orphan.id) is None
    assert await _written(db, orphan.id) == ("idle", [], [])


async def test_a_turn_begun_at_once_counts_the_creators_runs_in_flight(db: Database) -> None:
    creator = run_store.RunCreator(user_id="ann", auth={"identity": "ann"}, max_in_flight=1)
    _, first = await _conversation(db)
    _, second = await _conversation(db)
    written = await _begin(db, first.id, creator=creator)
    assert written is not None
    assert (written[2].user_id, written[2].auth) == ("ann", {"identity": "ann"})
    assert await _begin(db, second.id, creator=creator) is None  # at the cap: nothing written
    assert await _written(db, second.id) == ("idle", [], [])
    with pytest.raises(LimitError):  # what the full path then says
        await turns.begin_turn(
            db,
            second.id,
            message_id=uuid.uuid4(),
            content="again",
            run_kwargs={},
            metadata={},
            graph_ids=["chat"],
            creator=creator,
        )
    other = run_store.RunCreator(user_id="bob", max_in_flight=1)
    assert await _begin(db, second.id, creator=other) is not None


async def test_begin_turn_takes_the_one_round_trip_first_and_says_why_when_it_declines(
    database_url: str,
) -> None:
    """One call for /chat: `begin_turn` writes the common case as `begin_turn_at_once` does (one
    wait for PostgreSQL), and words a refusal itself (here, an undeclared graph)."""
    async with open_database(database_url, pool_size=1) as db:
        agent, conversation = await _conversation(db)
        args: dict[str, Any] = {
            "content": "hello",
            "run_kwargs": {"input": {"n": 1}, "stream_mode": ["custom"]},
            "metadata": {"source": "chat"},
            "notify": run_store.Notify("switchboard_test", "me"),
        }
        with pytest.raises(ConflictError, match="which is not declared; declared graphs"):
            await turns.begin_turn(
                db, conversation.id, message_id=uuid.uuid4(), graph_ids=["steps"], **args
            )
        assert await _written(db, conversation.id) == ("idle", [], [])
        message_id = uuid.uuid4()
        with counting_waits() as waits:
            read_agent, read_conversation, run = await turns.begin_turn(
                db, conversation.id, message_id=message_id, graph_ids=["chat"], **args
            )
        assert waits[0] == 1
        assert (read_agent.id, read_conversation.id, run.thread_id) == (
            agent.id,
            conversation.id,
            conversation.id,
        )
        assert await _written(db, conversation.id) == (
            "busy",
            [(message_id, "user", "hello")],
            ["pending"],
        )


async def test_a_turn_begun_without_notify_and_thread_notify_commits_no_notify(
    database_url: str,
) -> None:
    """A process alone on its database passes no `notify` and `notify_thread=False`: the turn's
    commit sends no NOTIFY at all (each would take PostgreSQL's notification-queue lock through
    the commit's WAL flush), claimed or pending, on either path; by default a claimed turn
    tells the conversation's stream followers in every process."""
    async with (
        open_database(database_url, pool_size=1) as db,
        await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn,
    ):
        await conn.execute(f"LISTEN {THREAD_CHANNEL}")
        await conn.execute("LISTEN switchboard_test")
        for claim in (run_store.InlineClaim("worker-a", 30), None):
            _, conversation = await _conversation(db)
            written = await _begin(
                db, conversation.id, notify=None, notify_thread=False, claim=claim
            )
            assert written is not None
        _, conversation = await _conversation(db)  # the full path (a conversation filter)
        await turns.begin_turn(
            db,
            conversation.id,
            message_id=uuid.uuid4(),
            content="hello",
            run_kwargs={},
            metadata={},
            graph_ids=["chat"],
            claim=run_store.InlineClaim("worker-a", 30),
            creator=run_store.RunCreator(access={}),
            notify_thread=False,
        )
        _, told = await _conversation(db)
        assert await _begin(db, told.id) is not None
        payloads: list[str] = []
        async with asyncio.timeout(10):
            async for note in conn.notifies():
                payloads.append(note.payload)
                if note.payload == str(told.id):
                    break
        # Notifications come in commit order: the quiet turns' would have come first.
        assert payloads == [str(told.id)]
