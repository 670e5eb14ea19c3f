"""The run event log: append/follow here and across connections, fencing, replay, prune."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text

from server.runs import events as events_module
from server.runs.events import Event, RunEventLog, open_run_event_log
from stores.sql import runs as run_store
from stores.sql.database import Database, Timeouts, connect, open_database
from stores.sql.runs import FinishWrite, RunToken
from tests.integration.run_events_support import (
    collect,
    database,
    first_event,
    log,
    new_run,
    set_status,
)
from tests.integration.test_sql_runs import counting_waits
from tests.support import free_port

__all__ = ["database", "log"]  # fixtures


async def test_seq_counts_from_one_in_each_run(log: RunEventLog, database: Database) -> None:
    first, second = await new_run(database), await new_run(database)
    assert [await log.append(first, "values", {"n": n}) for n in range(3)] == [1, 2, 3]
    assert await log.append(second, "values", {"n": 0}) == 1
    await log.flush()
    assert await log.last_seq(first.run_id) == 3
    assert await log.events_after(first.run_id, 1) == [
        (2, "values", {"n": 1}),
        (3, "values", {"n": 2}),
    ]


async def test_an_event_the_database_refuses_does_not_hold_up_other_runs(
    log: RunEventLog, database: Database
) -> None:
    gone, run = RunToken(uuid.uuid4(), 1), await new_run(database)  # `gone`: no such run (deleted)
    await log.append(gone, "values", {"n": 1})
    await log.append(run, "values", {"n": 1})
    assert await asyncio.wait_for(log.append(run, "end", None), 10) == 2
    assert await log.events_after(gone.run_id) == []
    assert [name for _, name, _ in await log.events_after(run.run_id)] == ["values", "end"]


def _scans(plan: Any) -> list[tuple[str, str]]:
    """Every (node type, relation) of an EXPLAIN (FORMAT JSON) plan."""
    if isinstance(plan, list):
        return [scan for node in plan for scan in _scans(node)]
    if not isinstance(plan, dict):
        return []
    here = [(plan["Node Type"], plan.get("Relation Name", ""))] if "Node Type" in plan else []
    return here + [scan for key in ("Plan", "Plans") for scan in _scans(plan.get(key))]


async def test_a_batch_finds_its_runs_by_key_on_a_young_database(
    database: Database, database_url: str
) -> None:
    """PostgreSQL guesses 100 rows for the batch: joined plainly, a batch of one event hashed
    the whole `runs` table while it held a few thousand rows (every batch of the writer)."""
    async with database.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO runs (status, attempt)"
                " SELECT 'success', 1 FROM generate_series(1, 5000)"
            )
        )
        await conn.execute(text("ANALYZE runs"))
    run = await new_run(database)
    rows = orjson.dumps([{"r": run.run_id.hex, "s": 1, "e": "values", "d": {}, "a": 1}])
    params = {"rows": rows.decode(), "channel": events_module.CHANNEL, "origin": "o"}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for statement in (events_module._STORE, events_module._STORE_QUIET):
            cursor = await conn.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            row = await cursor.fetchone()
            assert row is not None
            scans = _scans(row[0])
            assert ("Index Scan", "runs") in scans or ("Index Only Scan", "runs") in scans
            assert ("Seq Scan", "runs") not in scans


async def test_a_deeply_nested_subgraph_event_name_is_stored_whole(
    log: RunEventLog, database: Database
) -> None:
    run = await new_run(database)
    name = "values|" + "|".join(f"level{n}:{uuid.uuid4()}" for n in range(6))
    assert len(name) > 200
    await log.append(run, name, {"deep": True})
    await log.append(run, "end", None)
    assert (await log.events_after(run.run_id))[0][1] == name


async def test_the_log_recovers_when_its_database_connections_are_cut(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    run = await new_run(database)
    await log.append(run, "values", {"n": 1})
    await log.flush()
    follower = asyncio.create_task(collect(log.follow(run.run_id)))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )  # the writer's, the listener's and the pool's connections all go
    await log.append(run, "values", {"n": 2})
    assert await asyncio.wait_for(log.append(run, "end", None), 20) == 3
    events = await asyncio.wait_for(follower, 20)
    assert [seq for seq, _, _ in events] == [1, 2, 3]


async def test_another_process_taking_over_a_run_continues_its_numbering(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    run = await new_run(database)
    async with open_run_event_log(database, url=database_url) as first:
        assert [await first.append(run, "values", {"n": n}) for n in range(2)] == [1, 2]
    # Closing stored what was queued; a process resuming the run numbers on from there.
    async with open_run_event_log(database, url=database_url) as second:
        assert await second.append(run, "metadata", {"attempt": 2}) == 3
        assert await second.append(run, "end", None) == 4
    assert [seq for seq, _, _ in await log.events_after(run.run_id)] == [1, 2, 3, 4]


async def test_follow_replays_stored_events_then_live_ones_until_end(
    log: RunEventLog, database: Database
) -> None:
    run = await new_run(database)
    await log.append(run, "metadata", {"run_id": str(run.run_id), "attempt": 1})
    follower = asyncio.create_task(collect(log.follow(run.run_id)))
    for n in range(3):
        await log.append(run, "values", {"n": n})
    await log.append(run, "end", None)
    await log.append(run, "values", {"n": "after the end"})
    events = await asyncio.wait_for(follower, 10)
    assert [seq for seq, _, _ in events] == [1, 2, 3, 4, 5]
    assert [name for _, name, _ in events] == ["metadata", "values", "values", "values", "end"]


async def test_a_follower_in_another_process_gets_events_through_notify(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    run = await new_run(database)
    # Another "process": its own pool and LISTEN connection; it polls only every 60 s, so
    # events reaching it in time came through NOTIFY.
    async with (
        open_database(database_url, pool_size=2) as other_db,
        open_run_event_log(other_db, url=database_url, poll_s=60) as other,
    ):
        follower = asyncio.create_task(collect(other.follow(run.run_id)))
        first = asyncio.create_task(first_event(other.follow(run.run_id)))
        await log.append(run, "metadata", {"run_id": str(run.run_id)})
        assert (await asyncio.wait_for(first, 10))[0] == 1
        for n in range(5):
            await log.append(run, "values", {"n": n})
        await log.append(run, "end", None)
        events = await asyncio.wait_for(follower, 10)
    assert [seq for seq, _, _ in events] == list(range(1, 8))
    assert events[3] == (4, "values", {"n": 2})


async def test_follow_after_a_seq_replays_only_later_events(
    log: RunEventLog, database: Database
) -> None:
    run = await new_run(database)
    for n in range(4):
        await log.append(run, "values", {"n": n})
    await log.append(run, "end", None)
    events = await asyncio.wait_for(collect(log.follow(run.run_id, after_seq=3)), 10)
    assert events == [(4, "values", {"n": 3}), (5, "end", None)]


async def test_follow_stops_at_an_error_event(log: RunEventLog, database: Database) -> None:
    run = await new_run(database)
    await log.append(run, "values", {})
    await log.append(run, "error", {"error": "ValueError", "message": "bad input"})
    events = await asyncio.wait_for(collect(log.follow(run.run_id)), 10)
    assert events[-1] == (2, "error", {"error": "ValueError", "message": "bad input"})


async def test_follow_ends_when_the_run_finished_without_an_end_event(
    log: RunEventLog, database: Database
) -> None:
    run = await new_run(database)
    await log.append(run, "values", {"n": 1})
    follower = asyncio.create_task(collect(log.follow(run.run_id)))
    await set_status(database, run, "error")  # e.g. its worker died and it was given up
    events = await asyncio.wait_for(follower, 10)
    assert events == [(1, "values", {"n": 1})]


async def test_prune_deletes_only_finished_runs_events_past_retention(
    log: RunEventLog, database: Database
) -> None:
    finished, running = await new_run(database), await new_run(database)
    for run in (finished, running):
        await log.append(run, "values", {})
        await log.append(run, "end", None)
    await set_status(database, finished, "success")
    assert await log.prune(keep_s=3600) == 0  # too recent
    assert await log.prune(keep_s=0) >= 2  # (other tests' finished runs go too)
    assert await log.events_after(finished.run_id) == []
    assert len(await log.events_after(running.run_id)) == 2  # still running: kept


async def test_the_opened_log_prunes_finished_runs_on_its_own(
    database: Database, database_url: str
) -> None:
    run = await new_run(database, status="success")
    async with open_run_event_log(
        database, url=database_url, retention_s=0, prune_every_s=0.05
    ) as events:
        await events.append(run, "end", None)
        deadline = time.monotonic() + 10
        while await events.events_after(run.run_id):
            assert time.monotonic() < deadline, "the finished run's events were not pruned"
            await asyncio.sleep(0.05)


async def test_a_stale_attempts_events_are_dropped_once_its_run_is_reclaimed(
    log: RunEventLog, database: Database
) -> None:
    first = await new_run(database)
    follower = asyncio.create_task(collect(log.follow(first.run_id)))
    await log.append(first, "values", {"n": 1})
    await log.flush()
    async with database.engine.begin() as conn:  # another worker claims the run: attempt 2
        await conn.execute(text("UPDATE runs SET attempt = 2 WHERE id = :id"), {"id": first.run_id})
    second = RunToken(first.run_id, 2)
    await log.append(first, "values", {"stale": True})
    await log.append(second, "metadata", {"attempt": 2})
    await log.append(first, "end", None)  # the stale attempt's end does not end the stream
    await log.append(second, "end", None)
    stored = [(name, data) for _, name, data in await log.events_after(first.run_id)]
    assert stored == [("values", {"n": 1}), ("metadata", {"attempt": 2}), ("end", None)]
    seen = await asyncio.wait_for(follower, 10)
    assert [(name, data) for _, name, data in seen] == stored


@asynccontextmanager
async def _giving_up_soon(database: Database, database_url: str) -> AsyncIterator[RunEventLog]:
    """A started log whose writer gives a batch it cannot store up after 0.5 s, closed after."""
    log = RunEventLog(database, url=database_url, poll_s=0.2, give_up_s=0.5)
    await log.start()
    try:
        yield log
    finally:
        await log.aclose()


async def _unreachable(log: RunEventLog) -> None:
    """The database stops answering `log`'s writer: its connection is closed and it reconnects
    to a port nothing listens on, as while PostgreSQL restarts (`log.url` back ends it)."""
    log.url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    assert log._write_conn is not None
    await log._write_conn.close()


async def test_the_writer_gives_up_a_batch_it_cannot_store_instead_of_holding_every_run(
    database: Database, database_url: str
) -> None:
    run = await new_run(database)
    async with _giving_up_soon(database, database_url) as log:
        await log.append(run, "values", {"n": 1})
        await log.flush()
        # The batch is retried for `give_up_s`, then dropped and logged.
        await _unreachable(log)
        started = time.monotonic()
        await asyncio.wait_for(log.append(run, "end", None), 30)
        assert time.monotonic() - started >= 0.5
        log.url = database_url  # back: the next events are stored again
        second = await new_run(database)
        await asyncio.wait_for(log.append(second, "end", None), 30)
    assert [name for _, name, _ in await log.events_after(run.run_id)] == ["values"]
    assert [name for _, name, _ in await log.events_after(second.run_id)] == ["end"]


async def test_events_the_writer_gives_up_refuse_their_attempt_as_a_refused_event_does(
    database: Database, database_url: str
) -> None:
    """Events dropped after `give_up_s` of outage leave a hole in their run's stream: their
    attempt is told (`refusal`, as for an event PostgreSQL refused), so it cannot finish as a
    success; the message says why in no words of the database's. Other runs, and the next
    attempt of the same run, are not."""
    run, other = await new_run(database), await new_run(database)
    async with _giving_up_soon(database, database_url) as log:
        log.begin(run)  # attempts executing here, as the queue launches them
        log.begin(other)
        await log.append(other, "values", {"n": 1})
        await log.flush()
        await _unreachable(log)
        await log.append(run, "values", {"n": 1})
        await asyncio.wait_for(log.flush(), 30)
        log.url = database_url
        refusal = log.refusal(run)
        assert refusal == (
            "event 1 (values, 7 bytes of JSON) of the run could not be stored: "
            "the database could not be reached for 0.5 s"
        )
        assert "connection" not in refusal  # psycopg's own words stay in the log
        assert log.refusal(other) is None
        later = RunToken(run.run_id, 2)
        assert log.refusal(later) is None
        # A next attempt of the run (its first's refusal not forgotten yet) is told of its own.
        log.begin(later)
        await _unreachable(log)
        await log.append(later, "values", {"n": 2})
        await asyncio.wait_for(log.flush(), 30)
        log.url = database_url
        assert (log.refusal(later) or "").startswith("event 1 (values, 7 bytes of JSON)")
        log.retire(later)
        assert log.refusal(run) is None
        assert log.refusal(later) is None


async def test_every_attempt_executing_here_is_told_of_its_lost_events_however_many_and_none_after(
    database: Database, database_url: str
) -> None:
    """The refusals a process remembers are those of the attempts executing here, all of
    them: an attempt whose event was lost is told so at its finish even when more than 1024
    other runs lost one since (the map was bounded at 1024, oldest forgotten first: that run
    then finished as a success with a hole in its log). Each is dropped when its attempt
    retires, and an attempt that is not executing here (retired, or never begun here) leaves
    none: nothing stays behind to bound."""
    async with database.engine.begin() as conn:
        ids = (
            await conn.execute(
                text(
                    "INSERT INTO runs (status, attempt)"
                    " SELECT 'running', 1 FROM generate_series(1, 1100) RETURNING id"
                )
            )
        ).scalars()
        runs = [RunToken(run_id, 1) for run_id in ids]
    retired, outsider = await new_run(database), await new_run(database)
    async with _giving_up_soon(database, database_url) as log:
        for run in [*runs, retired]:
            log.begin(run)
        log.retire(retired)  # ended here; its events were handed to the writer
        await log.append(outsider, "values", {"n": 0})
        await log.flush()
        await _unreachable(log)
        await log.append(retired, "values", {"n": 1})
        await log.append(outsider, "values", {"n": 1})
        for run in runs:  # the first run's lost event first, then 1099 others'
            await log.append(run, "values", {"n": 1})
        await asyncio.wait_for(log.flush(), 60)
        log.url = database_url
        lost = "could not be stored: the database could not be reached for 0.5 s"
        assert all(lost in (log.refusal(run) or "") for run in runs)
        assert log.refusal(retired) is None
        assert log.refusal(outsider) is None
        assert set(log._refused) == {run.run_id for run in runs}
        for run in runs:
            log.retire(run)
        assert log._refused == {}
        assert log._live == {}


async def test_a_log_written_here_is_followed_from_memory_and_replayed_the_same_from_the_table(
    log: RunEventLog, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await new_run(database)
    log.begin(run)  # a first attempt executing here: its log starts empty, written here
    reads: list[uuid.UUID] = []
    real_events_after = log.events_after

    async def counted(run_id: uuid.UUID, after_seq: int = 0) -> list[Event]:
        reads.append(run_id)
        return await real_events_after(run_id, after_seq)

    async def asked(run_id: uuid.UUID) -> str | None:
        reads.append(run_id)
        return "running"

    monkeypatch.setattr(log, "events_after", counted)
    monkeypatch.setattr(log, "_run_status", asked)
    live = asyncio.create_task(collect(log.follow(run.run_id)))
    await log.append(run, "metadata", {"attempt": 1})
    await log.flush()
    await asyncio.sleep(3 * log.poll_s)  # a quiet spell: the follower does not ask the table
    late = asyncio.create_task(collect(log.follow(run.run_id, after_seq=0)))  # joins mid-run
    for n in range(3):
        await log.append(run, "values", {"n": n})
    await log.append(run, "end", None)
    log.retire(run)  # the attempt ended: the finished log stays a while
    after_end = await collect(log.follow(run.run_id, after_seq=2))
    seen, joined = await asyncio.wait_for(live, 10), await asyncio.wait_for(late, 10)
    assert reads == []  # none of them read the table
    stored = await real_events_after(run.run_id)
    assert [seq for seq, _, _ in stored] == [1, 2, 3, 4, 5]
    assert seen == stored
    assert joined == stored
    assert after_end == stored[2:]


async def test_a_follower_of_a_run_waiting_in_the_queue_asks_its_status_not_its_events(
    log: RunEventLog, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending run has no attempt writing events: while it waits, its follower's polls ask
    only whether it still waits (one statement, not two); it gets the run's events once an
    attempt writes them, and still ends when the run ended without them."""
    run = await new_run(database, status="pending")
    reads: list[uuid.UUID] = []
    real_events_after = log.events_after

    async def counted(run_id: uuid.UUID, after_seq: int = 0) -> list[Event]:
        reads.append(run_id)
        return await real_events_after(run_id, after_seq)

    monkeypatch.setattr(log, "events_after", counted)
    follower = asyncio.create_task(collect(log.follow(run.run_id)))
    await asyncio.sleep(0.1)
    assert reads == [run.run_id]  # its first read
    await asyncio.sleep(4 * log.poll_s)  # four polls while it waits
    assert reads == [run.run_id]
    await set_status(database, run, "running")  # claimed: its attempt writes its events
    await log.append(run, "metadata", {"attempt": 1})
    await log.append(run, "end", None)
    assert [name for _, name, _ in await asyncio.wait_for(follower, 10)] == ["metadata", "end"]
    gone = await new_run(database, status="pending")
    follower = asyncio.create_task(collect(log.follow(gone.run_id)))
    await asyncio.sleep(2 * log.poll_s)
    await set_status(database, gone, "interrupted")  # ended while waiting, without events
    assert await asyncio.wait_for(follower, 10) == []


@contextmanager
def statements_about(database: Database, run_id: uuid.UUID) -> Iterator[list[str]]:
    """The SQL statements sent through `database` with `run_id` among their parameters."""
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if str(run_id) in repr(params):
            sent.append(statement)

    sa_event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        sa_event.remove(database.engine.sync_engine, "before_cursor_execute", seen)


async def test_a_follower_of_a_run_it_created_pending_sends_nothing_while_the_run_waits(
    log: RunEventLog, database: Database
) -> None:
    """A /chat turn waiting for a slot: the run was just committed pending, so while this
    process is alone its follower neither reads the empty log nor asks the status (it asked
    once a poll); it still sees the run start and end here, and learns at once of a run
    that ended while waiting (`wake_run`, what a "done" does here), or at the slow poll."""
    assert not log.notifying  # alone on the test database
    run = await new_run(database, status="pending")
    with statements_about(database, run.run_id) as sent:
        follower = asyncio.create_task(collect(log.follow(run.run_id, pending=True)))
        await asyncio.sleep(6 * log.poll_s)  # six polls while it waits
        assert sent == []
        await set_status(database, run, "running")  # claimed here: its attempt writes
        sent.clear()
        log.begin(run)
        await log.append(run, "metadata", {"attempt": 1})
        await log.append(run, "end", None)
        seen = await asyncio.wait_for(follower, 10)
    assert [name for _, name, _ in seen] == ["metadata", "end"]
    assert not [statement for statement in sent if "FROM runs" in statement]
    assert seen == await log.events_after(run.run_id)
    log.retire(run)

    # Cancelled while it waits (no event): the "done" wakes the follower, which reads the
    # status then and ends after its idle polls, well before the slow poll.
    gone = await new_run(database, status="pending")
    follower = asyncio.create_task(collect(log.follow(gone.run_id, pending=True)))
    await asyncio.sleep(2 * log.poll_s)
    await set_status(database, gone, "interrupted")
    started = time.monotonic()
    log.wake_run(gone.run_id)
    assert await asyncio.wait_for(follower, 10) == []
    assert time.monotonic() - started < events_module._PENDING_POLLS * log.poll_s
    # Not woken (deleted with its thread, a lost NOTIFY): the slow poll still ends it.
    lost = await new_run(database, status="pending")
    follower = asyncio.create_task(collect(log.follow(lost.run_id, pending=True)))
    await asyncio.sleep(2 * log.poll_s)
    await set_status(database, lost, "interrupted")
    assert await asyncio.wait_for(follower, 10) == []


async def test_a_stale_attempts_refused_events_never_reach_a_follower_served_from_memory(
    log: RunEventLog, database: Database
) -> None:
    first = await new_run(database)
    log.begin(first)
    follower = asyncio.create_task(collect(log.follow(first.run_id)))
    await log.append(first, "values", {"n": 1})
    await log.flush()
    async with database.engine.begin() as conn:  # another worker claims the run: attempt 2
        await conn.execute(text("UPDATE runs SET attempt = 2 WHERE id = :id"), {"id": first.run_id})
    second = RunToken(first.run_id, 2)
    await log.append(first, "values", {"stale": True})  # refused: never shown, never stored
    await log.append(second, "metadata", {"attempt": 2})
    await log.append(first, "end", None)
    await log.append(second, "end", None)
    stored = [(seq, name, data) for seq, name, data in await log.events_after(first.run_id)]
    assert [(name, data) for _, name, data in stored] == [
        ("values", {"n": 1}),
        ("metadata", {"attempt": 2}),
        ("end", None),
    ]
    assert await asyncio.wait_for(follower, 10) == stored
    # Attempt 2 numbered after what was stored once the stale event had been tried (refused):
    # no gap, so the local log is the table's; a new follower reads the same from memory.
    assert [seq for seq, _, _ in stored] == [1, 2, 3]
    assert log.local_log(first.run_id) == stored
    assert await asyncio.wait_for(collect(log.follow(first.run_id)), 10) == stored


async def test_a_log_another_process_writes_to_sends_followers_here_back_to_the_table(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    run = await new_run(database)
    log.begin(run)
    await log.append(run, "metadata", {"attempt": 1})
    await log.flush()
    follower = asyncio.create_task(collect(log.follow(run.run_id)))
    # Another process takes the run over (its lease lapsed here) and writes on.
    async with (
        open_database(database_url, pool_size=2) as other_db,
        open_run_event_log(other_db, url=database_url) as other,
    ):
        assert await other.append(run, "values", {"n": 1}) == 2
        assert await other.append(run, "end", None) == 3
    events = await asyncio.wait_for(follower, 20)
    assert events == await log.events_after(run.run_id)
    assert [seq for seq, _, _ in events] == [1, 2, 3]
    assert log.local_log(run.run_id) is None  # the NOTIFY said another process writes it


async def finish_with(
    database: Database, log: RunEventLog, run: RunToken, last: list[tuple[str, object]]
) -> tuple[bool, list[Event]]:
    """Finish the run as `run`'s attempt, its last events stored by the finish itself."""
    write, numbered = await log.closing(run, last, status="success")
    finished = await finish_success(database, run, write)
    log.closed(run, numbered, stored=finished)
    return finished, numbered


async def finish_success(database: Database, run: RunToken, write: FinishWrite) -> bool:
    """`finish_run` of a successful run with nothing else to write than `write`."""
    return await run_store.finish_run(
        database,
        run,
        status="success",
        output={},
        thread_status="idle",
        thread_values=None,
        thread_interrupts=None,
        also=(write,),
    )


async def test_a_runs_last_events_are_stored_by_its_finish_and_replayed_as_followers_saw_them(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    """`message` and `end` committed with the run's end: followers here (from memory) and in
    another process (woken by the finish's NOTIFY) see exactly what the table replays, and the
    run is ended when they see `end`."""
    run = await new_run(database)
    log.begin(run)
    async with (
        open_database(database_url, pool_size=2) as other_db,
        open_run_event_log(other_db, url=database_url, poll_s=60) as other,
    ):
        here = asyncio.create_task(collect(log.follow(run.run_id)))
        there = asyncio.create_task(collect(other.follow(run.run_id)))
        await log.append(run, "metadata", {"attempt": 1})
        for n in range(3):
            await log.append(run, "values", {"n": n})  # queued, not yet stored
        finished, numbered = await finish_with(
            database, log, run, [("custom", {"event": "message"}), ("end", None)]
        )
        assert finished
        assert [seq for seq, _, _ in numbered] == [5, 6]
        seen_here = await asyncio.wait_for(here, 10)
        seen_there = await asyncio.wait_for(there, 10)
    stored = await log.events_after(run.run_id)
    assert [name for _, name, _ in stored] == [
        "metadata",
        *["values"] * 3,
        "custom",
        "end",
    ]
    assert [seq for seq, _, _ in stored] == [1, 2, 3, 4, 5, 6]
    assert seen_here == stored
    assert seen_there == stored
    async with database.engine.connect() as conn:
        status = (
            await conn.execute(text("SELECT status FROM runs WHERE id = :id"), {"id": run.run_id})
        ).scalar_one()
    assert status == "success"
    log.retire(run)
    assert await collect(log.follow(run.run_id, after_seq=4)) == stored[4:]


async def test_a_finish_that_does_not_end_the_run_stores_none_of_its_last_events(
    log: RunEventLog, database: Database
) -> None:
    """A stale attempt's finish is refused, and so are the events it carried: no `end` in the
    table or to a follower; the run's new attempt numbers on from the table."""
    stale = await new_run(database)
    log.begin(stale)
    await log.append(stale, "metadata", {"attempt": 1})
    await log.flush()
    async with database.engine.begin() as conn:  # another worker claims the run: attempt 2
        await conn.execute(text("UPDATE runs SET attempt = 2 WHERE id = :id"), {"id": stale.run_id})
    follower = asyncio.create_task(collect(log.follow(stale.run_id)))
    finished, _ = await finish_with(database, log, stale, [("end", None)])
    assert not finished
    assert [name for _, name, _ in await log.events_after(stale.run_id)] == ["metadata"]
    current = RunToken(stale.run_id, 2)
    assert await log.append(current, "metadata", {"attempt": 2}) == 2
    assert await log.append(current, "end", None) == 3
    assert [name for _, name, _ in await asyncio.wait_for(follower, 10)] == [
        "metadata",
        "metadata",
        "end",
    ]


async def test_a_finish_retried_after_its_commit_stores_its_last_events_once(
    log: RunEventLog, database: Database
) -> None:
    run = await new_run(database)
    write, numbered = await log.closing(run, [("end", None)], status="success")
    for _ in range(2):  # the second: a retry after a commit whose answer was lost
        assert await finish_success(database, run, write)
    log.closed(run, numbered, stored=True)
    assert await log.events_after(run.run_id) == [(1, "end", None)]


async def test_a_run_nobody_follows_here_stores_its_events_with_its_finish(
    database: Database, database_url: str
) -> None:
    """Held (`hold_s`): no round trip of their own; the finish stores them before its `end`,
    and a follower in another process, woken by the finish, sees them all in order."""
    async with (
        open_run_event_log(database, url=database_url, poll_s=0.2, hold_s=60) as log,
        open_database(database_url, pool_size=2) as other_db,
        open_run_event_log(other_db, url=database_url, poll_s=60) as other,
    ):
        run = await new_run(database)
        log.begin(run)
        there = asyncio.create_task(collect(other.follow(run.run_id)))
        await log.append(run, "metadata", {"attempt": 1})
        for n in range(3):
            await log.append(run, "values", {"n": n})
        await asyncio.sleep(0.3)
        assert await log.events_after(run.run_id) == []  # nothing stored, nothing shown
        finished, numbered = await finish_with(database, log, run, [("end", None)])
        assert finished
        assert [seq for seq, _, _ in numbered] == [1, 2, 3, 4, 5]
        stored = await log.events_after(run.run_id)
        assert [(seq, name) for seq, name, _ in stored] == [
            (1, "metadata"),
            (2, "values"),
            (3, "values"),
            (4, "values"),
            (5, "end"),
        ]
        assert await asyncio.wait_for(there, 10) == stored
        log.retire(run)
        assert await collect(log.follow(run.run_id)) == stored  # from memory, the same


async def test_held_events_are_stored_once_someone_follows_here_or_hold_s_has_passed(
    database: Database, database_url: str
) -> None:
    async with open_run_event_log(database, url=database_url, poll_s=0.2, hold_s=0.3) as log:
        followed, unfollowed = await new_run(database), await new_run(database)
        for run in (followed, unfollowed):
            log.begin(run)
            await log.append(run, "metadata", {"attempt": 1})
            await log.append(run, "values", {"n": 1})
        assert await log.events_after(followed.run_id) == []
        follower = log.follow(followed.run_id)
        assert [name for _, name, _ in [await anext(follower), await anext(follower)]] == [
            "metadata",
            "values",
        ]
        await follower.aclose()  # type: ignore[attr-defined]
        assert len(await log.events_after(followed.run_id)) == 2  # shown once stored
        assert await log.events_after(unfollowed.run_id) == []
        await asyncio.sleep(0.6)
        assert len(await log.events_after(unfollowed.run_id)) == 2


async def test_held_events_of_a_finish_that_did_not_go_through_are_stored_by_the_writer(
    database: Database, database_url: str
) -> None:
    """A finish that was not stored (failed, refused): the events it carried are queued again,
    and the attempt's next finish numbers on after them."""
    async with open_run_event_log(database, url=database_url, poll_s=0.2, hold_s=60) as log:
        run = await new_run(database)
        log.begin(run)
        await log.append(run, "metadata", {"attempt": 1})
        await log.append(run, "values", {"n": 1})
        _, numbered = await log.closing(run, [("end", None)], status="success")
        assert [seq for seq, _, _ in numbered] == [1, 2, 3]
        assert await log.events_after(run.run_id) == []
        log.closed(run, numbered, stored=False)  # its transaction failed
        finished, numbered = await finish_with(database, log, run, [("error", {"e": 1})])
        assert finished
        assert [seq for seq, _, _ in numbered] == [3]
        assert [(s, n) for s, n, _ in await log.events_after(run.run_id)] == [
            (1, "metadata"),
            (2, "values"),
            (3, "error"),
        ]


async def test_pending_events_of_several_runs_are_stored_by_one_statement_of_one_document(
    log: RunEventLog, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything queued when the writer runs goes out in one statement whose events are one
    JSON document (each body spliced in as encoded), not five typed arrays to adapt; what a
    follower is shown and what the table replays is the same, odd text included."""
    first, second = await new_run(database), await new_run(database)
    sent: list[dict[str, object]] = []
    real_execute = psycopg.AsyncCursor.execute

    async def recorded(
        self: psycopg.AsyncCursor[Any], query: str, params: Any = None, **kwargs: Any
    ) -> psycopg.AsyncCursor[Any]:
        if query.startswith("WITH ins AS ( INSERT INTO run_events"):
            assert isinstance(params, dict)
            sent.append(params)
        return await real_execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", recorded)
    log.begin(first)  # first attempts: numbered here from 1, no read in between
    log.begin(second)
    text = 'quote " back \\ line\n tab\t é 🙂 nul\u0000'
    odd = {"text": text, "n": [1, 2.5, None, True]}
    live = asyncio.create_task(collect(log.follow(first.run_id)))
    await asyncio.sleep(0.05)
    for n in range(3):
        await log.append(first, "custom", {"event": "token", "data": {"text": f"t{n} "}})
        await log.append(second, "messages|tools:ü|x", {"n": n})
    await log.append(first, "values", odd)
    await log.append(first, "end", None)
    assert len(sent) == 1
    assert sorted(sent[0]) == ["channel", "origin", "rows"]
    assert len(orjson.loads(str(sent[0]["rows"]))) == 8
    seen = await asyncio.wait_for(live, 10)
    assert seen == await log.events_after(first.run_id)
    assert seen[3] == (4, "values", {**odd, "text": text.replace("\u0000", "\ufffd")})
    assert [(s, e) for s, e, _ in await log.events_after(second.run_id)] == [
        (1, "messages|tools:ü|x"),
        (2, "messages|tools:ü|x"),
        (3, "messages|tools:ü|x"),
    ]


async def test_a_follower_starts_no_task_for_each_event_it_is_shown(
    log: RunEventLog, database: Database
) -> None:
    """Waiting for the next event is a future woken by the writer, not `asyncio.wait_for`
    (which on Python 3.11 starts a task, and costs three more laps of the loop, per event)."""
    run = await new_run(database)
    log.begin(run)
    started: list[object] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
        started.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    follower = asyncio.create_task(collect(log.follow(run.run_id)))
    await asyncio.sleep(0.05)
    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        for n in range(20):
            await log.append(run, "values", {"n": n})
            await log.flush()
            await asyncio.sleep(0)
        await log.append(run, "end", None)
        seen = await asyncio.wait_for(follower, 10)
    finally:
        loop.set_task_factory(previous)
    assert [seq for seq, _, _ in seen] == list(range(1, 22))
    assert started == []


async def test_a_lone_process_stores_events_without_notifying_until_another_one_listens(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    """While no other process listens, a NOTIFY per stored event would only wake this one's
    own listener to be dropped: none is sent. A process that starts says hello, and from
    then on every stored event is NOTIFYed again, as its followers need."""
    heard: list[str] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as spy:
        await spy.execute("LISTEN run_events")  # not a Switchboard process: not a peer

        async def listen() -> None:
            async for note in spy.notifies():
                heard.append(note.payload)

        listening = asyncio.create_task(listen())
        try:
            assert not log.notifying
            run = await new_run(database)
            for n in range(3):
                await log.append(run, "values", {"n": n})
            await log.flush()
            await asyncio.sleep(0.3)
            assert heard == []
            async with (
                open_database(database_url, pool_size=2) as other_db,
                open_run_event_log(other_db, url=database_url, poll_s=60) as other,
            ):
                for _ in range(50):
                    if log.notifying:
                        break
                    await asyncio.sleep(0.02)
                assert log.notifying
                assert other.notifying
                await log.append(run, "values", {"n": 3})
                await log.flush()
                for _ in range(50):
                    if len(heard) > 1:
                        break
                    await asyncio.sleep(0.02)
        finally:
            listening.cancel()
    assert heard == [f"{other.origin}:hello", f"{log.origin}:{run.run_id}:4"]


async def test_events_too_big_together_for_one_json_document_are_each_stored(
    database: Database, database_url: str
) -> None:
    # Each event fits PostgreSQL's jsonb (under 256 MiB); the two together do not: the
    # writer's batch must not put them in one document (once, it failed as a cut connection,
    # was retried for `give_up_s` and dropped whole).
    run = await new_run(database)
    async with _giving_up_soon(database, database_url) as log:
        big = "x" * (150 * 1024 * 1024)
        await log.append(run, "values", {"a": big})
        await log.append(run, "values", {"b": big})
        del big
        await asyncio.wait_for(log.flush(), 120)
        assert await log.last_seq(run.run_id) == 2


async def test_a_lone_process_whose_listener_was_away_when_another_said_hello_notifies_again(
    database: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that stores quietly (alone) and whose listener lost its connection cannot hear
    the hello of a process that starts meanwhile: once listening again, it notifies (until a
    count of the listeners says it is alone), instead of leaving the newcomer's followers of its
    runs to their poll until its next count (`_PEER_CHECK_S`)."""
    reconnect = asyncio.Event()
    listeners: set[str] = set()

    async def gated(url: str, timeouts: Timeouts, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        name = str(kwargs.get("application_name", ""))
        if name in listeners:
            await reconnect.wait()  # the listener is away while the other says hello
        listeners.add(name)
        return await connect(url, timeouts, **kwargs)

    monkeypatch.setattr("server.runs.events.connect", gated)
    heard: list[str] = []
    arrived = asyncio.Event()

    async def hear(payload: str) -> None:
        while payload not in heard:
            arrived.clear()
            await arrived.wait()

    async with (
        open_run_event_log(database, url=database_url, poll_s=60) as log,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as spy,
    ):
        assert not log.notifying
        await spy.execute("LISTEN run_events")  # not a Switchboard process: not a peer

        async def listen() -> None:
            async for note in spy.notifies():
                heard.append(note.payload)
                arrived.set()

        listening = asyncio.create_task(listen())
        try:
            await spy.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (f"switchboard-events {log.origin}",),
            )
            async with (
                open_database(database_url, pool_size=2) as other_db,
                open_run_event_log(other_db, url=database_url, poll_s=60),  # starts, says hello
            ):
                reconnect.set()
                async with asyncio.timeout(10):
                    await hear(f"{log.origin}:hello")  # listening again
                assert log.notifying  # well before its next count of the listeners
                run = await new_run(database)
                await log.append(run, "values", {"n": 1})
                await log.flush()
                async with asyncio.timeout(5):
                    await hear(f"{log.origin}:{run.run_id}:1")
        finally:
            listening.cancel()


async def test_a_read_of_the_log_is_one_round_trip(log: RunEventLog, database: Database) -> None:
    """A follower's read of stored events (and of a waiting run's status) is its statement
    alone: no BEGIN before it, no ROLLBACK after."""
    run = await new_run(database, status="pending")
    await log.append(run, "metadata", {"attempt": 1})
    await log.flush()
    for read in (lambda: log.events_after(run.run_id), lambda: log.last_seq(run.run_id)):
        await read()  # (a pooled connection, checked out once already)
        tries = []
        for _ in range(3):  # the fewest of three: a loaded machine may split an answer
            with counting_waits() as waits:
                await read()
            tries.append(waits[0])
        assert min(tries) == 1, tries


# PostgreSQL's own refusal of a value over one of its limits (`repeat` asks for a 1 GiB string:
# program_limit_exceeded, class 54, a `psycopg.OperationalError`), raised for an event over
# 64 KiB: as an event over 256 MiB is refused by JSONB, without sending 256 MiB.
OVER_LIMIT_BYTES = 64 * 1024


def refusing_over_limit(name: str, before: str, size: str) -> str:
    """SQL installing the trigger `name`, run `before` (e.g. "INSERT ON run_events") for each
    row: PostgreSQL refuses the row with its own program_limit_exceeded when `size` (an SQL
    expression of `NEW` and `OLD`) is over `OVER_LIMIT_BYTES`."""
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF ({size}) > {OVER_LIMIT_BYTES} THEN
    PERFORM repeat('x', 1073741824);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE {before} FOR EACH ROW EXECUTE FUNCTION {name}();
"""


_OVER_LIMIT = refusing_over_limit(
    "sb_event_over_limit", "INSERT ON run_events", "octet_length(NEW.data::text)"
)


@asynccontextmanager
async def events_over_limit_refused(database_url: str) -> AsyncIterator[None]:
    """Within: PostgreSQL refuses to store a run event over `OVER_LIMIT_BYTES`."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(_OVER_LIMIT)  # type: ignore[arg-type]
        try:
            yield
        finally:
            await conn.execute("DROP TRIGGER sb_event_over_limit ON run_events")


async def test_an_event_over_postgresqls_limits_is_dropped_at_once_and_its_run_told_why(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    """A statement error PostgreSQL answers with an OperationalError (an event too large for
    it) is not an outage: the writer does not retry it for `give_up_s` (60 s), it stores the
    other events at once and tells the event's run why (no database text in the message)."""
    run, other = await new_run(database), await new_run(database)
    log.begin(run)  # executing here: its refusals are kept for it (`refusal`)
    async with events_over_limit_refused(database_url):
        await log.append(run, "values", {"n": 1})
        await log.append(run, "values", {"big": "x" * (OVER_LIMIT_BYTES + 1)})
        await log.append(other, "values", {"n": 1})
        await log.append(run, "values", {"n": 3})
        assert await asyncio.wait_for(log.append(run, "end", None), 10) == 4
        assert await asyncio.wait_for(log.append(other, "end", None), 10) == 2
    assert [seq for seq, _, _ in await log.events_after(run.run_id)] == [1, 3, 4]
    assert [seq for seq, _, _ in await log.events_after(other.run_id)] == [1, 2]
    refusal = log.refusal(run)
    assert refusal is not None
    assert refusal.startswith("event 2 (values, 65547 bytes of JSON) of the run could not be")
    assert "size limits" in refusal
    assert "requested length" not in refusal  # PostgreSQL's own words stay in the log
    assert log.refusal(other) is None
    assert log.refusal(RunToken(run.run_id, 2)) is None  # another attempt's
    log.retire(run)
    assert log.refusal(run) is None  # forgotten with the attempt


async def test_a_statement_timeout_in_the_writer_is_retried_as_an_outage_not_refused(
    database: Database, database_url: str
) -> None:
    """A statement timeout (57014: the server's own `DB_STATEMENT_TIMEOUT_S`) is contention or a
    stalled server, not the events: the writer retries the batch for `give_up_s` as after a cut.
    It does not send it again event by event, each waiting the timeout again, nor fail the runs
    behind it with a refusal (`EventRefusedError`)."""
    run, other = await new_run(database), await new_run(database)
    log = RunEventLog(database, url=database_url, poll_s=0.2, timeouts=Timeouts(statement_s=0.2))
    await log.start()
    try:
        log.begin(run)  # executing here: a refusal would be kept for them
        log.begin(other)
        # Another transaction holds the run's row: storing its events (their foreign key's
        # FOR KEY SHARE) waits, and times out, until it ends.
        async with await psycopg.AsyncConnection.connect(database_url) as locker:
            await locker.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run.run_id,))
            for n in range(3):
                await log.append(run, "values", {"n": n})
            await log.append(other, "values", {"n": 0})
            await asyncio.sleep(2)  # many timeouts
            await locker.rollback()
        assert await asyncio.wait_for(log.append(run, "end", None), 20) == 4
        assert await asyncio.wait_for(log.append(other, "end", None), 20) == 2
        assert log.refusal(run) is None
        assert log.refusal(other) is None
    finally:
        await log.aclose()
    assert [seq for seq, _, _ in await log.events_after(run.run_id)] == [1, 2, 3, 4]
    assert [seq for seq, _, _ in await log.events_after(other.run_id)] == [1, 2]


@asynccontextmanager
async def _on_insert_of(
    database_url: str,
    event: str,
    action: str,
    *,
    times: int | None = None,
    when: str = "BEFORE",
) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Within: inserting a run event named `event` does `action` (PL/pgSQL), the first `times`
    tries (every one if None), `when` the row is inserted (BEFORE, or AFTER: its index entries
    are in); yields how many tries there were so far."""
    name = f"sb_on_{uuid.uuid4().hex}"
    install = on_insert_of(name, event, action, times=times, when=when)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:

        async def tries() -> int:
            row = await (await conn.execute(f"SELECT last_value FROM {name}")).fetchone()  # type: ignore[arg-type]
            assert row is not None
            return int(row[0])

        await conn.execute(install)  # type: ignore[arg-type]
        try:
            yield tries
        finally:
            await conn.execute(f"DROP TRIGGER {name} ON run_events")  # type: ignore[arg-type]
            await conn.execute(f"DROP FUNCTION {name}(); DROP SEQUENCE {name}")  # type: ignore[arg-type]


def on_insert_of(
    name: str, event: str, action: str, *, times: int | None = None, when: str = "BEFORE"
) -> str:
    """SQL installing the trigger (and sequence, and function) `name`: inserting a run event
    named `event` does `action` (PL/pgSQL), the first `times` tries (every one if None),
    `when` the row is inserted (BEFORE, or AFTER: its index entries are in)."""
    return f"""
CREATE SEQUENCE {name};
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.event = '{event}' THEN
    IF nextval('{name}') <= {2**62 if times is None else times} THEN
      {action}
    END IF;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER {name} {when} INSERT ON run_events FOR EACH ROW EXECUTE FUNCTION {name}();
"""


async def test_a_cut_while_the_writer_stores_a_refused_batch_event_by_event_is_retried(
    log: RunEventLog, database: Database, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch PostgreSQL refuses (an event over its limits) is stored event by event; a
    connection cut meanwhile is retried like the batch's own, not raised out of the writer
    (whose restart pause doubles up to 30 s, all runs' events waiting)."""
    run = await new_run(database)
    log.begin(run)
    cut = "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);"
    async with _on_insert_of(database_url, "cut-me", cut, times=1) as tries:
        async with events_over_limit_refused(database_url):
            await log.append(run, "values", {"n": 1})
            await log.append(run, "values", {"big": "x" * (OVER_LIMIT_BYTES + 1)})
            await log.append(run, "cut-me", {"n": 3})
            assert await asyncio.wait_for(log.append(run, "end", None), 20) == 4
        assert await tries() == 2  # cut once, then stored
    assert [seq for seq, _, _ in await log.events_after(run.run_id)] == [1, 3, 4]
    assert log.refusal(run) is not None  # the big one only
    assert not [r for r in caplog.records if r.name == "server.background"]  # no restart


async def test_a_lone_event_postgresql_refuses_is_sent_once(
    log: RunEventLog, database: Database, database_url: str
) -> None:
    """The same statement again would be refused the same way: a batch of one refused event is
    not sent again on its own."""
    run = await new_run(database)
    log.begin(run)
    refuse = "RAISE EXCEPTION 'refused' USING ERRCODE = '22023';"
    async with _on_insert_of(database_url, "refuse-me", refuse) as tries:
        await log.append(run, "values", {"n": 1})
        await log.flush()
        await log.append(run, "refuse-me", {"n": 2})
        await log.flush()  # alone in its batch
        sent = await tries()
    assert sent == 1
    refusal = log.refusal(run)
    assert refusal is not None
    assert "SQLSTATE 22023" in refusal
    assert [seq for seq, _, _ in await log.events_after(run.run_id)] == [1]


async def test_held_events_of_a_finish_cancelled_before_it_came_back_are_stored_by_the_writer(
    database: Database, database_url: str
) -> None:
    """A finish cancelled between `closing` and `closed` (a shutdown, say) carried the run's
    held events: when its attempt retires they go to the writer, nothing is kept in memory,
    and the run's log is whole for its next attempt."""
    async with open_run_event_log(database, url=database_url, poll_s=0.2, hold_s=60) as log:
        run = await new_run(database)
        log.begin(run)
        await log.append(run, "metadata", {"attempt": 1})
        await log.append(run, "values", {"n": 1})
        async with await psycopg.AsyncConnection.connect(database_url) as blocker:
            # The finish's UPDATE of the run waits for this lock: it is cut short meanwhile.
            await blocker.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run.run_id,))
            finishing = asyncio.create_task(finish_with(database, log, run, [("end", None)]))
            await asyncio.sleep(0.5)
            assert not finishing.done()
            finishing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await finishing
            await blocker.rollback()
        log.retire(run)  # as the engine does once the attempt ends
        await asyncio.wait_for(log.flush(), 10)
        assert not log._held
        assert not log._carried
        assert [(s, n) for s, n, _ in await log.events_after(run.run_id)] == [
            (1, "metadata"),
            (2, "values"),
        ]


async def test_an_event_over_what_jsonb_holds_is_refused_without_being_sent(
    log: RunEventLog, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event longer than PostgreSQL's JSONB can hold (`_MAX_EVENT_BYTES`, 256 MiB; here
    4 KiB) is refused here: sending it only to be refused held up every run's events."""
    monkeypatch.setattr(events_module, "_MAX_EVENT_BYTES", 4096, raising=False)
    monkeypatch.setattr(events_module, "_MAX_BATCH_BYTES", 1024)
    sent: list[int] = []
    real_execute = psycopg.AsyncCursor.execute

    async def recorded(
        self: psycopg.AsyncCursor[Any], query: str, params: Any = None, **kwargs: Any
    ) -> psycopg.AsyncCursor[Any]:
        if query.startswith("WITH ins AS ( INSERT INTO run_events"):
            sent.append(len(params["rows"]))
        return await real_execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", recorded)
    run = await new_run(database)
    log.begin(run)
    await log.append(run, "values", {"n": 1})
    await log.append(run, "values", {"big": "x" * 5000})
    assert await asyncio.wait_for(log.append(run, "end", None), 10) == 3
    assert [seq for seq, _, _ in await log.events_after(run.run_id)] == [1, 3]
    assert sent
    assert max(sent) < 4096
    refusal = log.refusal(run)
    assert refusal is not None
    assert "event 2 (values, 5010 bytes of JSON)" in refusal
    assert "size limits" in refusal


async def _claim(database: Database, run: RunToken) -> RunToken:
    """Another claim of the run (as `claim_run`'s): running, its attempt + 1."""
    async with database.engine.begin() as conn:
        attempt = (
            await conn.execute(
                text(
                    "UPDATE runs SET status = 'running', attempt = attempt + 1 WHERE id = :id"
                    " RETURNING attempt"
                ),
                {"id": run.run_id},
            )
        ).scalar_one()
    return RunToken(run.run_id, attempt)


def _remembers(log: RunEventLog, run: RunToken) -> list[str]:
    """What `log` still keeps of the run once its attempt retired and its events were stored."""
    kept: dict[str, Container[uuid.UUID]] = {
        "seqs": log._seqs,
        "draining": log._draining,
        "last_ticket": log._last_ticket,
        "held": log._held,
        "carried": log._carried,
        "refused": log._refused,
        "local": log._local,
        "seq_locks": log._seq_locks,
    }
    return [name for name, state in kept.items() if run.run_id in state]


async def test_an_attempt_back_in_a_process_numbers_after_what_another_process_stored_since(
    database: Database, database_url: str
) -> None:
    """Attempt 1 in process A is handed back, attempt 2 in process B stores events, attempt 3
    is back in A: A numbers after B's events (the table), not on from its own count of
    attempt 1, so none of attempt 3's events collides with a stored seq and is dropped."""
    run = await new_run(database)
    async with (
        open_run_event_log(database, url=database_url, poll_s=0.2, hold_s=60) as a,
        open_run_event_log(database, url=database_url, poll_s=0.2) as b,
    ):
        a.begin(run)
        await a.append(run, "metadata", {"attempt": 1})
        await a.append(run, "values", {"n": 1})  # held for the finish: queued as it retires
        assert await run_store.release_runs(database, [run]) == 1  # handed back
        a.retire(run)
        await a.flush()

        second = await _claim(database, run)
        b.begin(second)
        assert [await b.append(second, "metadata", {"attempt": 2})] == [3]
        await b.append(second, "values", {"n": 2})
        await b.append(second, "values", {"n": 3})
        await b.flush()
        b.retire(second)  # its lease lapsed: A takes the run over

        third = await _claim(database, run)
        a.begin(third)
        seqs = [await a.append(third, "metadata", {"attempt": 3})]
        seqs.append(await a.append(third, "values", {"n": 4}))
        finished, last = await finish_with(database, a, third, [("end", None)])
        assert finished
        seqs.append(last[-1][0])  # `last`: the held events its finish carried, then `end`
        a.retire(third)
        assert seqs == [6, 7, 8]
        stored = await a.events_after(run.run_id)
        assert [(seq, name) for seq, name, _ in stored] == [
            (1, "metadata"),
            (2, "values"),
            (3, "metadata"),
            (4, "values"),
            (5, "values"),
            (6, "metadata"),
            (7, "values"),
            (8, "end"),
        ]
        assert stored[5][2] == {"attempt": 3}
        # Replayed whole, in order, in either process, from the start or from a Last-Event-ID.
        assert await asyncio.wait_for(collect(b.follow(run.run_id)), 10) == stored
        assert (
            await asyncio.wait_for(collect(a.follow(run.run_id, after_seq=5)), 10) == (stored[5:])
        )


async def test_an_attempt_handed_back_lost_or_whose_finish_was_cancelled_leaves_nothing_behind(
    database: Database, database_url: str
) -> None:
    """Whatever way an attempt ends without its finish, once it retired and the writer stored
    what it left queued, the log keeps nothing of the run: no counter, no ticket."""
    async with open_run_event_log(database, url=database_url, poll_s=0.2, hold_s=60) as log:
        handed_back = await new_run(database)
        log.begin(handed_back)
        await log.append(handed_back, "metadata", {"attempt": 1})
        await log.append(handed_back, "values", {"n": 1})
        assert await run_store.release_runs(database, [handed_back]) == 1
        log.retire(handed_back)

        lost = await new_run(database)
        log.begin(lost)
        await log.append(lost, "metadata", {"attempt": 1})
        await log.flush()
        await _claim(database, lost)  # its lease lapsed and another process took the run
        await log.append(lost, "values", {"stale": True})
        log.retire(lost)

        cancelled = await new_run(database)
        log.begin(cancelled)
        await log.append(cancelled, "metadata", {"attempt": 1})
        async with await psycopg.AsyncConnection.connect(database_url) as blocker:
            await blocker.execute(
                "SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (cancelled.run_id,)
            )
            finishing = asyncio.create_task(finish_with(database, log, cancelled, [("end", None)]))
            await asyncio.sleep(0.3)
            finishing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await finishing
            await blocker.rollback()
        log.retire(cancelled)

        await asyncio.wait_for(log.flush(), 10)
        for run in (handed_back, lost, cancelled):
            assert _remembers(log, run) == []
        assert [(s, n) for s, n, _ in await log.events_after(handed_back.run_id)] == [
            (1, "metadata"),
            (2, "values"),
        ]
        assert [(s, n) for s, n, _ in await log.events_after(lost.run_id)] == [(1, "metadata")]


async def test_an_attempt_here_after_one_whose_events_are_still_queued_numbers_after_them(
    database: Database, database_url: str
) -> None:
    """Attempt 1's events are still on their way to the table when attempt 2 of the run starts
    in the same process: attempt 2 numbers after whatever of them got stored (none shares its
    seq with an event of attempt 2), and the run's log has no gap."""
    async with open_run_event_log(database, url=database_url, poll_s=0.2, hold_s=60) as log:
        for _ in range(20):
            run = await new_run(database)
            log.begin(run)
            await log.append(run, "metadata", {"attempt": 1})
            for n in range(5):
                await log.append(run, "values", {"n": n})
            log.retire(run)  # handed back: its held events go to the writer now
            second = await _claim(database, run)
            log.begin(second)
            await log.append(second, "metadata", {"attempt": 2})
            await log.append(second, "values", {"n": 5})
            finished, _ = await finish_with(database, log, second, [("end", None)])
            assert finished
            log.retire(second)
            stored = await log.events_after(run.run_id)
            assert [seq for seq, _, _ in stored] == list(range(1, len(stored) + 1))
            assert [(name, data) for _, name, data in stored[-3:]] == [
                ("metadata", {"attempt": 2}),
                ("values", {"n": 5}),
                ("end", None),
            ]
            assert _remembers(log, run) == []


async def test_an_attempt_that_outlives_a_newer_one_here_leaves_the_newer_ones_numbering_alone(
    database: Database, database_url: str
) -> None:
    """A stale attempt (its lease lapsed, this process claimed the run again) that finishes or
    retires after the newer attempt began here takes none of its seqs, does not reset its
    counter and does not retire its state: every event of the newer attempt is stored."""
    async with open_run_event_log(database, url=database_url, poll_s=0.2) as log:
        run = await new_run(database)
        log.begin(run)
        await log.append(run, "metadata", {"attempt": 1})
        await log.flush()
        second = await _claim(database, run)
        log.begin(second)
        assert await log.append(second, "metadata", {"attempt": 2}) == 2
        finished, _ = await finish_with(database, log, run, [("end", None)])  # the stale one
        assert not finished
        await log.append(run, "values", {"stale": True})
        log.retire(run)
        assert await log.append(second, "values", {"n": 1}) == 3
        finished, last = await finish_with(database, log, second, [("end", None)])
        assert finished
        assert [seq for seq, _, _ in last] == [4]
        log.retire(second)
        stored = await log.events_after(run.run_id)
        assert [(seq, name, data) for seq, name, data in stored] == [
            (1, "metadata", {"attempt": 1}),
            (2, "metadata", {"attempt": 2}),
            (3, "values", {"n": 1}),
            (4, "end", None),
        ]
        assert _remembers(log, run) == []


async def test_a_stale_insert_begun_before_a_new_claim_takes_no_seq_the_new_attempt_gives(
    database: Database, database_url: str
) -> None:
    """Two processes: A's writer stores an event of attempt 1, and its statement has read the
    run as attempt 1's (the fence) and inserted its row when B claims the run (attempt 2, its
    lease lapsed) and numbers its first event after the last seq stored. Before, A's insert
    committed after B's read, under the very seq B then gave, and B's event (its `metadata`)
    was dropped by `ON CONFLICT DO NOTHING`. Now B reads where the log ends only once no
    insert into it is in flight (`settled_last_seq`): it numbers after A's event, and both
    are stored."""
    run = await new_run(database)
    key = 7_400_000 + uuid.uuid4().int % 100_000  # an advisory lock held by this test
    held = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with (
        held,
        open_run_event_log(database, url=database_url, poll_s=0.2) as a,
        open_run_event_log(database, url=database_url, poll_s=0.2) as b,
    ):
        await held.execute("SELECT pg_advisory_lock(%s)", (key,))
        wait = f"PERFORM pg_advisory_xact_lock({key});"
        async with _on_insert_of(database_url, "stale", wait, times=1, when="AFTER"):
            a.begin(run)
            assert await a.append(run, "stale", {"attempt": 1}) == 1
            # A's statement has passed its fence, inserted its row and waits (in a trigger).
            for _ in range(500):
                if await _waits_for_advisory_lock(held, key):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("A's insert never reached its trigger")

            async def claim_then_number() -> tuple[RunToken, int]:
                second = await _claim(database, run)  # B's claim
                b.begin(second)
                return second, await b.append(second, "metadata", {"attempt": 2})

            claiming = asyncio.create_task(claim_then_number())
            await asyncio.sleep(1.0)  # (before: B had claimed and numbered by now)
            await held.execute("SELECT pg_advisory_unlock(%s)", (key,))
            async with asyncio.timeout(10):
                second, seq = await claiming
                await a.flush()
                await b.flush()
            a.retire(run)
        stored = await b.events_after(run.run_id)
        assert (seq, "metadata", {"attempt": 2}) in stored
        assert stored == [(1, "stale", {"attempt": 1}), (2, "metadata", {"attempt": 2})]
        b.retire(second)


async def _waits_for_advisory_lock(conn: psycopg.AsyncConnection[Any], key: int) -> bool:
    """Whether a session waits for the advisory lock `key` (held by `conn`)."""
    row = await (
        await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objid = %s",
            (key,),
        )
    ).fetchone()
    return row is not None and int(row[0]) > 0
