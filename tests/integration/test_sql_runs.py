"""Run rows in SQL: a claim's attempt is its fencing token, and a stale attempt writes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
from sqlalchemy import text

from server.runs.queue import Attempt, RunQueue
from stores.sql import runs as run_store
from stores.sql.database import Database, connect, libpq_url, open_database
from stores.sql.models import Agent, Conversation, Run
from stores.sql.runs import RunToken
from stores.sql.thread_events import CHANNEL as THREAD_CHANNEL
from tests.support import make_settings


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, pool_size=2) as database:
        yield database


async def _create(
    db: Database,
    thread_id: uuid.UUID,
    agent: Agent,
    *,
    if_not_exists: Literal["create", "reject"] = "create",
    claim: run_store.InlineClaim | None = None,
) -> Run:
    """A run of `agent` on `thread_id` by the full creation path (`reject` on a busy thread)."""
    run, _ = await run_store.create_run(
        db,
        thread_id=thread_id,
        assistant_id=agent.id,
        graph_id=agent.graph_id,
        kwargs={},
        metadata={},
        multitask_strategy="reject",
        if_not_exists=if_not_exists,
        claim=claim,
    )
    return run


async def claimed_twice(db: Database) -> tuple[RunToken, RunToken]:
    """A run claimed by a first attempt whose lease lapsed, then reclaimed by a second."""
    async with db.sessions.begin() as session:
        agent = Agent(graph_id="chat", name=f"fencing {uuid.uuid4().hex[:6]}")
        session.add(agent)
    run = await _create(db, uuid.uuid4(), agent)
    tokens = []
    for owner in ("worker-a", "worker-b"):
        claim = await run_store.claim_run(db, owner=owner, lease_s=30)
        while claim is not None and claim.run.id != run.id:  # other tests' runs
            claim = await run_store.claim_run(db, owner=owner, lease_s=30)
        assert claim is not None
        tokens.append(RunToken(claim.run.id, claim.run.attempt))
        async with db.engine.begin() as conn:  # the lease lapses
            await conn.execute(
                text("UPDATE runs SET lease_expires_at = now() - interval '1 s' WHERE id = :id"),
                {"id": run.id},
            )
    return tokens[0], tokens[1]


async def finish(db: Database, token: RunToken) -> bool:
    """Finish the run as `token`'s attempt, its output naming that attempt."""
    by = {"by": token.attempt}
    return await run_store.finish_run(
        db,
        token,
        status="success",
        output=by,
        thread_status="idle",
        thread_values=by,
        thread_interrupts={},
    )


async def test_each_claim_is_a_new_attempt(db: Database) -> None:
    first, second = await claimed_twice(db)
    assert first.run_id == second.run_id
    assert (first.attempt, second.attempt) == (1, 2)


async def renew(database_url: str, *tokens: RunToken) -> dict[RunToken, run_store.Renewal]:
    """Renew `tokens`' leases in one statement, as a process's lease renewer does."""
    async with await connect(database_url) as conn:
        return await run_store.renew_leases(conn, tokens, lease_s=30)


async def test_a_stale_attempt_can_neither_renew_nor_finish_nor_drop_nor_release(
    db: Database, database_url: str
) -> None:
    stale, current = await claimed_twice(db)
    assert not (await renew(database_url, stale))[stale].held
    assert not await finish(db, stale)
    assert not await run_store.drop_run(db, stale)
    assert await run_store.release_runs(db, [stale]) == 0
    assert (await renew(database_url, current))[current].held
    assert await finish(db, current)
    row = await run_store.get_run(db, current.run_id)
    assert (row.status, row.output, row.attempt) == ("success", {"by": 2}, 2)


async def test_a_finish_retried_after_its_commit_says_the_run_is_ended_and_writes_nothing(
    db: Database,
) -> None:
    """A finish whose COMMIT went through but whose answer was lost (its connection cut) is
    retried: the same attempt finds the run ended by itself, so it goes on to append `end`;
    a stale attempt and a handed-back run are still refused."""
    stale, current = await claimed_twice(db)
    assert await finish(db, current)
    assert await finish(db, current)  # the retry
    assert not await finish(db, stale)
    row = await run_store.get_run(db, current.run_id)
    assert (row.status, row.output, row.attempt) == ("success", {"by": 2}, 2)
    _, handed = await claimed_twice(db)
    assert await run_store.release_runs(db, [handed]) == 1  # pending again, same attempt
    assert not await finish(db, handed)
    assert (await run_store.get_run(db, handed.run_id)).status == "pending"


async def test_a_renewal_reports_a_cancel_request(db: Database, database_url: str) -> None:
    _, current = await claimed_twice(db)
    await run_store.cancel_runs(db, [current.run_id], action="rollback", reason="test")
    renewal = (await renew(database_url, current))[current]
    assert renewal.held
    assert renewal.cancel_reason == "rollback: test"


async def test_one_renewal_extends_the_leases_its_attempts_hold_and_no_other(
    db: Database, database_url: str
) -> None:
    """Renewing several runs in one statement: each token gets its own answer, the stale one
    and the finished one are refused, and no lease but the held ones' moves."""
    held = []
    for _ in range(3):
        stale, token = await claimed_twice(db)
        held.append(token)
        async with db.engine.begin() as conn:  # live again (so the next claims skip it), short
            await conn.execute(
                text("UPDATE runs SET lease_expires_at = now() + interval '10 s' WHERE id = :id"),
                {"id": token.run_id},
            )
    current, other, done = held
    assert await finish(db, done)
    renewals = await renew(database_url, stale, current, other, done)
    assert {token: r.held for token, r in renewals.items()} == {
        stale: False,
        current: True,
        other: True,
        done: False,
    }
    # What each renewal found: the stale attempt's run (`done`'s) was finished by attempt 2
    # (taken over), `done` ended with its own attempt (not taken over).
    assert (renewals[stale].status, renewals[stale].attempt) == ("success", 2)
    assert (renewals[done].status, renewals[done].attempt) == ("success", done.attempt)
    assert (renewals[current].status, renewals[current].attempt) == ("running", current.attempt)
    gone = RunToken(uuid.uuid4(), 1)
    assert (await renew(database_url, gone))[gone] == run_store.Renewal(held=False)
    async with db.engine.connect() as conn:
        rows: dict[uuid.UUID, bool | None] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT id, lease_expires_at > now() + interval '20 s' FROM runs"
                        " WHERE id = ANY(:ids)"
                    ),
                    {"ids": [current.run_id, other.run_id, done.run_id]},
                )
            ).all()
        )
    assert rows == {current.run_id: True, other.run_id: True, done.run_id: None}
    assert await renew(database_url) == {}


async def test_release_hands_back_only_what_the_token_holds(db: Database) -> None:
    _, current = await claimed_twice(db)
    assert await run_store.release_runs(db, [current]) == 1
    async with db.sessions() as session:
        run = await session.get(Run, current.run_id)
    assert run is not None
    assert (run.status, run.lease_owner) == ("pending", None)


async def test_a_run_claimed_at_creation_has_its_first_metadata_stored_with_its_row(
    db: Database,
) -> None:
    async with db.sessions.begin() as session:
        agent = Agent(graph_id="chat", name=f"first {uuid.uuid4().hex[:6]}")
        session.add(agent)
    created = {}
    for claim in (run_store.InlineClaim("worker-a", 30), None):
        run = await _create(db, uuid.uuid4(), agent, claim=claim)
        created[claim is not None] = run
    claimed, pending = created[True], created[False]
    assert (claimed.status, pending.status) == ("running", "pending")
    async with db.engine.connect() as conn:
        rows = {
            run.id: [
                tuple(r)
                for r in await conn.execute(
                    text("SELECT seq, event, data FROM run_events WHERE run_id = :id"),
                    {"id": run.id},
                )
            ]
            for run in (claimed, pending)
        }
    # Committed with the row, before anyone executes it: what a stream of it sends first.
    first = (1, "metadata", {"run_id": str(claimed.id), "attempt": 1})
    assert rows[claimed.id] == [first]
    assert run_store.stored_first_event(claimed) == first
    # A pending run gets its metadata from whichever attempt claims it.
    assert rows[pending.id] == []
    assert run_store.stored_first_event(pending) is None


@contextlib.contextmanager
def counting_waits() -> Iterator[list[int]]:
    """Count the times the running loop is asked to wake a reader: each is a wait for
    PostgreSQL's answer (psycopg polls a socket it writes to without the loop), so a round
    trip, and a lap of the event loop for the caller."""
    loop = asyncio.get_running_loop()
    waits = [0]
    add_reader = loop.add_reader

    def counted(fd: Any, callback: Any, *args: Any) -> None:
        waits[0] += 1
        add_reader(fd, callback, *args)

    loop.add_reader = counted  # type: ignore[method-assign, assignment]
    try:
        yield waits
    finally:
        loop.add_reader = add_reader  # type: ignore[method-assign]


async def _agent_and_thread(db: Database, graph_id: str = "chat") -> tuple[Agent, uuid.UUID]:
    """An assistant of `graph_id` and an idle thread with some metadata."""
    thread_id = uuid.uuid4()
    async with db.sessions.begin() as session:
        agent = Agent(graph_id=graph_id, name=f"at once {uuid.uuid4().hex[:6]}")
        session.add(agent)
        session.add(Conversation(id=thread_id, status="idle", metadata_={"owner": "ann"}))
    return agent, thread_id


async def _payloads_until(conn: psycopg.AsyncConnection[Any], last: str) -> list[str]:
    """What `conn` (LISTENing) receives, in commit order, up to the payload `last` (10 s at
    most)."""
    payloads: list[str] = []
    async with asyncio.timeout(10):
        async for note in conn.notifies():
            payloads.append(note.payload)
            if note.payload == last:
                return payloads
    return payloads


async def _at_once(
    db: Database, thread_id: uuid.UUID, assistant_id: uuid.UUID, **given: Any
) -> tuple[Run, str] | None:
    args: dict[str, Any] = {
        "run_id": uuid.uuid4(),
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "graph_ids": ["chat", "steps"],
        "kwargs": {"input": {"n": 1}},
        "metadata": {"m": 1},
        "multitask_strategy": "reject",
        "notify": run_store.Notify("switchboard_test", "me"),
        "claim": run_store.InlineClaim("worker-a", 30),
        **given,
    }
    return await run_store.create_run_at_once(db, **args)


async def test_a_run_created_without_the_thread_notify_commits_no_notify(
    database_url: str,
) -> None:
    """`notify_thread=False`: the creating transaction sends no NOTIFY (one would take
    PostgreSQL's notification-queue lock through its commit); by default it tells the
    thread's stream followers in every process."""
    async with (
        open_database(database_url, pool_size=1) as db,
        await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn,
    ):
        await conn.execute(f"LISTEN {THREAD_CHANNEL}")
        agent, quiet = await _agent_and_thread(db)
        _, told = await _agent_and_thread(db)
        assert await _at_once(db, quiet, agent.id, notify_thread=False) is not None
        assert await _at_once(db, told, agent.id) is not None
        payloads = await _payloads_until(conn, str(told))
        # Notifications come in commit order: the first creation's would have come first.
        assert str(quiet) not in payloads


async def test_a_run_on_an_idle_thread_is_created_with_its_assistant_read_in_one_round_trip(
    database_url: str,
) -> None:
    async with open_database(database_url, pool_size=1) as db:
        agent, thread_id = await _agent_and_thread(db)
        with counting_waits() as waits:
            written = await _at_once(db, thread_id, agent.id)
        # The thread row's lock and the statement, sent together and answered at once.
        assert waits[0] == 1
        assert written is not None
        run, graph_id = written
        # create_run after reading the assistant, as before: a round trip each.
        _, other = await _agent_and_thread(db)
        with counting_waits() as waits:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1 FROM agents WHERE id = :id"), {"id": agent.id})
            await _create(db, other, agent, if_not_exists="reject")
        assert waits[0] >= 5
        assert graph_id == "chat"
        assert (run.status, run.attempt, run.lease_owner) == ("running", 1, "worker-a")
        assert (run.thread_id, run.assistant_id, run.multitask_strategy) == (
            thread_id,
            agent.id,
            "reject",
        )
        assert (run.kwargs, run.metadata_) == ({"input": {"n": 1}}, {"m": 1})
        assert run.stream_position is not None
        assert run.lease_expires_at is not None
        first = (1, "metadata", {"run_id": str(run.id), "attempt": 1})
        assert run_store.stored_first_event(run) == first
        async with db.engine.connect() as conn:
            events = [
                tuple(r)
                for r in await conn.execute(
                    text("SELECT seq, event, data FROM run_events WHERE run_id = :id"),
                    {"id": run.id},
                )
            ]
            thread = (
                await conn.execute(
                    text("SELECT status, agent_id, metadata FROM conversations WHERE id = :id"),
                    {"id": thread_id},
                )
            ).one()
        assert events == [first]
        assert tuple(thread) == (
            "busy",
            agent.id,
            {"owner": "ann", "graph_id": "chat", "assistant_id": str(agent.id)},
        )


async def test_a_run_created_at_once_without_a_slot_or_with_a_delay_is_pending(
    db: Database,
) -> None:
    agent, thread_id = await _agent_and_thread(db)
    written = await _at_once(db, thread_id, agent.id, claim=None)
    assert written is not None
    assert (written[0].status, written[0].attempt, written[0].lease_owner) == ("pending", 0, None)
    assert run_store.stored_first_event(written[0]) is None
    agent, thread_id = await _agent_and_thread(db)
    written = await _at_once(db, thread_id, agent.id, kwargs={"after_seconds": 5})
    assert written is not None
    assert written[0].status == "pending"


async def _runs_of(db: Database, thread_id: uuid.UUID) -> list[str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT status FROM runs WHERE thread_id = :id ORDER BY created_at"),
            {"id": thread_id},
        )
        return [str(status) for (status,) in rows]


async def test_creating_at_once_writes_nothing_unless_the_thread_is_idle_and_the_assistant_known(
    db: Database,
) -> None:
    """Each case `create_run` must answer itself (a 404, a 422, a multitask strategy) leaves
    the database as it was."""
    agent, thread_id = await _agent_and_thread(db)
    assert await _at_once(db, uuid.uuid4(), agent.id) is None  # no such thread
    assert await _at_once(db, thread_id, uuid.uuid4()) is None  # no such assistant
    assert await _at_once(db, thread_id, agent.id, graph_ids=["steps"]) is None  # undeclared
    assert await _runs_of(db, thread_id) == []
    async with db.engine.connect() as conn:
        status = (
            await conn.execute(
                text("SELECT status, metadata FROM conversations WHERE id = :id"),
                {"id": thread_id},
            )
        ).one()
    assert tuple(status) == ("idle", {"owner": "ann"})
    assert await _at_once(db, thread_id, agent.id) is not None
    # A run in flight: nothing more (the multitask strategy is create_run's).
    for strategy in ("reject", "enqueue", "interrupt", "rollback"):
        assert await _at_once(db, thread_id, agent.id, multitask_strategy=strategy) is None
    assert await _runs_of(db, thread_id) == ["running"]
    with pytest.raises(ValueError, match="no thread filter"):
        await _at_once(db, thread_id, agent.id, creator=run_store.RunCreator(access={"a": 1}))


async def test_creations_at_once_on_one_thread_write_one_run(database_url: str) -> None:
    """Eight at once on one idle thread: the thread row's lock serialises them, and each later
    one sees the first run in flight (its statement's snapshot is taken under the lock)."""
    async with open_database(database_url, pool_size=8) as db:
        agent, thread_id = await _agent_and_thread(db)
        written = await asyncio.gather(*(_at_once(db, thread_id, agent.id) for _ in range(8)))
        assert sum(w is not None for w in written) == 1
        assert await _runs_of(db, thread_id) == ["running"]


async def test_created_run_tells_what_a_creation_at_once_wrote(db: Database) -> None:
    agent, thread_id = await _agent_and_thread(db)
    assert await run_store.created_run(db, thread_id=thread_id, run_id=uuid.uuid4()) is None
    written = await _at_once(db, thread_id, agent.id)
    assert written is not None
    run = await run_store.created_run(db, thread_id=thread_id, run_id=written[0].id)
    assert run is not None
    assert (run.id, run.status, run.lease_owner) == (written[0].id, "running", "worker-a")
    first = (1, "metadata", {"run_id": str(run.id), "attempt": 1})
    assert run_store.stored_first_event(run) == first


async def test_a_value_postgresql_refuses_makes_a_creation_at_once_write_nothing(
    db: Database,
) -> None:
    """A NUL in a JSON string (PostgreSQL's JSONB refuses it): nothing written, no error; the
    full path then answers as it always did (the unknown assistant first)."""
    agent, thread_id = await _agent_and_thread(db)
    assert await _at_once(db, thread_id, agent.id, kwargs={"feedback_keys": ["a\x00"]}) is None
    assert await _runs_of(db, thread_id) == []
    assert await _at_once(db, thread_id, agent.id) is not None


async def test_the_renewer_lets_a_finished_run_go_and_stops_only_one_taken_over(
    db: Database, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewer's beat snapshots the attempts it holds, then renews them: a run whose finish
    committed in between is not renewed, yet it was not taken over. The renewer lets it go
    (not stopped, no "taken over" warning); it stops the attempt another one took over, and
    renews the one it still holds."""
    queue = RunQueue(db, make_settings(database_url, tmp_path), database_url=database_url)
    loop = asyncio.get_running_loop()
    tokens = []
    for _ in range(2):
        stale, token = await claimed_twice(db)
        tokens.append(token)
        async with db.engine.begin() as conn:  # live again, so no other claim takes it
            await conn.execute(
                text("UPDATE runs SET lease_expires_at = now() + interval '30 s' WHERE id = :id"),
                {"id": token.run_id},
            )
    live_token, finished_token = tokens  # `stale`: the first attempt of the finished one's run
    attempts, graphs = [], []
    for token in (finished_token, stale, live_token):
        graph = asyncio.create_task(asyncio.sleep(3600))  # its graph, still running
        graphs.append(graph)
        attempt = Attempt(
            run=await run_store.get_run(db, token.run_id),
            token=token,
            task=graph,
            lease_deadline=loop.time() + 20,
        )
        queue._held[token] = attempt
        attempts.append(attempt)
    finished, lost, live = attempts
    snapshot = list(queue._held.values())
    sent = loop.time()
    assert await finish(db, finished_token)  # its finish commits after the beat's snapshot
    try:
        with caplog.at_level(logging.DEBUG, logger="server.runs.queue"):
            await queue._renew_held(snapshot, sent)
        assert finished.stop_reason is None
        assert not graphs[0].cancelling()  # never asked to stop
        assert finished.ended
        assert finished_token not in queue._held
        assert lost.stop_reason == "lost"
        assert live.stop_reason is None
        assert live.lease_deadline == sent + 30 - 5
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == [
            f"run {stale.run_id} (attempt 1): its lease was taken over by attempt 2 "
            "(success); stopping it here"
        ]
        # The hold of a finished attempt ends quietly (no "no renewal in time" later).
        await asyncio.wait_for(queue.hold(finished), 1)
    finally:
        for graph in graphs:
            graph.cancel()
        await queue._drop_renewal_connection()


async def test_a_finish_with_what_it_carries_is_one_round_trip_and_one_transaction(
    database_url: str,
) -> None:
    """The run's last writes before it, the lock, the finish and the statements after it go
    out with one Sync: one answer to wait for, and all of it or nothing."""
    async with open_database(database_url, pool_size=1) as db:
        agent, thread_id = await _agent_and_thread(db, "steps")
        written = await _at_once(db, thread_id, agent.id)
        assert written is not None
        token = RunToken(written[0].id, 1)
        note = (
            "INSERT INTO thread_events (thread_id, position, event, data)"
            " VALUES (%(t)s, %(seq)s, 'noted', '{}'::jsonb)"
        )
        before = run_store.FinishWrite(note, [{"t": thread_id, "seq": n} for n in (1, 2)], True)
        with counting_waits() as waits:
            assert await run_store.finish_run(
                db,
                token,
                status="success",
                output={"n": 1},
                thread_status="idle",
                thread_values={"n": 1},
                thread_interrupts={},
                before=(before,),
                also=(run_store.FinishWrite(note, {"t": thread_id, "seq": 3}),),
            )
        assert waits[0] == 1
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT count(*) FROM thread_events WHERE thread_id = :t"), {"t": thread_id}
            )
            assert rows.scalar_one() == 3
        # A statement PostgreSQL refuses undoes the whole finish.
        other_agent, other_thread = await _agent_and_thread(db, "steps")
        other = await _at_once(db, other_thread, other_agent.id)
        assert other is not None
        bad = run_store.FinishWrite("SELECT 1 / 0", {})
        with pytest.raises(psycopg.errors.DivisionByZero):
            await run_store.finish_run(
                db,
                RunToken(other[0].id, 1),
                status="success",
                output={},
                thread_status="idle",
                thread_values={},
                thread_interrupts={},
                also=(bad,),
            )
        async with db.engine.connect() as conn:
            status = await conn.execute(
                text("SELECT status FROM runs WHERE id = :id"), {"id": other[0].id}
            )
            assert status.scalar_one() == "running"


async def test_a_claim_without_the_thread_notify_commits_no_notify(database_url: str) -> None:
    """`claim_run(notify_thread=False)` (no other process listens): the claim's commit sends no
    NOTIFY (one would take PostgreSQL's notification-queue lock through the commit's WAL
    flush); by default it tells the thread's stream followers in every process."""
    async with (
        open_database(database_url, pool_size=1) as db,
        await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn,
    ):
        await conn.execute(f"LISTEN {THREAD_CHANNEL}")
        agent, _ = await _agent_and_thread(db)
        threads = []
        for notify_thread in (False, True):
            thread_id = uuid.uuid4()
            run = await _create(db, thread_id, agent)
            claim = await run_store.claim_run(
                db, owner="worker-a", lease_s=30, notify_thread=notify_thread
            )
            while claim is not None and claim.run.id != run.id:  # other tests' runs
                claim = await run_store.claim_run(
                    db, owner="worker-a", lease_s=30, notify_thread=notify_thread
                )
            assert claim is not None
            threads.append(thread_id)
        quiet, told = threads
        payloads = await _payloads_until(conn, str(told))
        # Notifications come in commit order: the first claim's would have come first.
        assert str(quiet) not in payloads
