"""Run rows in SQL: a claim's attempt is its fencing token, and a stale attempt writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from stores.sql import runs as run_store
from stores.sql.database import Database, connect, open_database
from stores.sql.models import Agent, Run
from stores.sql.runs import RunToken


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, pool_size=2) as database:
        yield database


async def claimed_twice(db: Database) -> tuple[RunToken, RunToken]:
    """A run claimed by a first attempt whose lease lapsed, then reclaimed by a second."""
    async with db.sessions.begin() as session:
        agent = Agent(graph_id="chat", name=f"fencing {uuid.uuid4().hex[:6]}")
        session.add(agent)
    run, _ = await run_store.create_run(
        db,
        thread_id=uuid.uuid4(),
        assistant_id=agent.id,
        graph_id="chat",
        kwargs={},
        metadata={},
        multitask_strategy="reject",
        if_not_exists="create",
    )
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
        run, _ = await run_store.create_run(
            db,
            thread_id=uuid.uuid4(),
            assistant_id=agent.id,
            graph_id="chat",
            kwargs={},
            metadata={},
            multitask_strategy="reject",
            if_not_exists="create",
            claim=claim,
        )
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
