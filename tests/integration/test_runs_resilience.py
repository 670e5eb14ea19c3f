"""Runs survive PostgreSQL going away under load: every connection cut (pg_terminate_backend),
and the embedded server stopped and started again. Every acknowledged run finishes (resumed
from its last checkpoint where needed), none is lost, none is applied twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph_sdk import get_client, get_sync_client
from psycopg.rows import dict_row

from server.runs import events as events_module
from stores import migrate
from stores.embedded_postgres import embedded_postgres, embedded_server
from stores.sql import runs as run_store
from stores.sql.database import Database
from tests.integration.run_graphs import COMPLETED, TRACE
from tests.integration.test_runs_events import (
    _OVER_LIMIT,
    OVER_LIMIT_BYTES,
    on_insert_of,
    refusing_over_limit,
)
from tests.support import TEST_GRAPHS, installed, make_settings, running_server, scratch_database

STEPS = ["s1", "s2", "s3", "s4"]
RUNS = 16


def sql(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row, connect_timeout=5) as conn:
        return list(conn.execute(query, args).fetchall())


def settings_for(database_url: str, data_dir: Path) -> Any:
    """A server with the test graphs, 16 workers and a short lease (a cut run is reclaimed
    within seconds)."""
    return make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        run_workers=RUNS,
        run_lease_s=3.0,
        run_poll_s=0.3,
        db_pool_size=20,
        checkpoint_pool_size=20,
    )


async def create_runs(url: str) -> list[tuple[str, str, int]]:
    """16 acknowledged runs of the steps graph (each node sleeps 0.3 s): (thread, run, n)."""
    client: Any = get_client(url=url)
    try:
        created = []
        for n in range(RUNS):
            thread_id = str(uuid.uuid4())
            run = await client.runs.create(
                thread_id,
                "steps",
                input={"log": [f"in{n}"]},
                config={"configurable": {"delay": 0.3}},
                if_not_exists="create",
            )
            created.append((thread_id, run["run_id"], n))
        return created
    finally:
        await client.aclose()


async def join_all(url: str, created: list[tuple[str, str, int]]) -> list[Any]:
    client: Any = get_client(url=url)
    try:
        return list(
            await asyncio.gather(*(client.runs.join(thread, run) for thread, run, _ in created))
        )
    finally:
        await client.aclose()


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def some_runs_past_their_first_step(database_url: str) -> bool:
    rows = sql(
        database_url,
        "SELECT count(DISTINCT thread_id) AS n FROM checkpoints WHERE checkpoint_ns = ''"
        " AND (metadata->>'step')::int >= 1",
    )
    return int(rows[0]["n"]) >= 4


def assert_every_run_finished_once(
    database_url: str, created: list[tuple[str, str, int]], results: list[Any]
) -> list[int]:
    """Each run succeeded with each step applied once, and one attempt ended it; the attempts."""
    for (_, _, n), result in zip(created, results, strict=True):
        assert result["log"] == [f"in{n}", *STEPS]  # no input or step applied twice, none lost
    ids = [run for _, run, _ in created]
    rows = sql(
        database_url,
        "SELECT r.status, r.attempt, (SELECT count(*) FROM run_events e WHERE e.run_id = r.id"
        " AND e.event = 'end') AS ends FROM runs r WHERE r.id = ANY(%s::uuid[])",
        ids,
    )
    assert len(rows) == RUNS
    assert {row["status"] for row in rows} == {"success"}
    assert {row["ends"] for row in rows} == {1}  # exactly one attempt finished each run
    return sorted(int(row["attempt"]) for row in rows)


def test_runs_survive_every_database_connection_being_cut_under_load(
    pg_admin_url: str, tmp_path: Path
) -> None:
    with scratch_database(pg_admin_url, "connections_cut") as url:
        with running_server(settings_for(url, tmp_path)) as base:
            created = asyncio.run(create_runs(base))
            wait_until(
                lambda: some_runs_past_their_first_step(url), timeout_s=60, what="runs to start"
            )
            cut = 0
            for _ in range(20):  # for 2 s: idle connections, and statements in flight
                rows = sql(
                    url,
                    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                cut += int(rows[0]["n"])
                time.sleep(0.1)
            results = asyncio.run(join_all(base, created))
        attempts = assert_every_run_finished_once(url, created, results)
    assert cut >= 20  # the server's pools, listeners and event writer were all cut, repeatedly
    print(f"connections cut: {cut}; attempts per run: {attempts}")


def events_over_limit_refused_sync(database_url: str) -> AbstractContextManager[None]:
    """Within: PostgreSQL refuses to store a run event over `OVER_LIMIT_BYTES`."""
    return installed(database_url, _OVER_LIMIT, "DROP TRIGGER sb_event_over_limit ON run_events")


@contextmanager
def embedded_database(folder: Path) -> Iterator[str]:
    """An embedded PostgreSQL of this test's own, with the schema migrated."""
    with embedded_postgres(folder) as url:
        migrate.upgrade(url)
        yield url


def _assert_refused(client: Any, thread: Any, parts: list[Any], *, says: str, hides: str) -> None:
    """`parts`, the stream of the thread's one run, ends with the `EventRefusedError` that
    `says` why, in no words of the database's (`hides`); the run is an error, and its replay
    is the same stream."""
    assert parts[-1].event == "error"
    assert parts[-1].data["error"] == "EventRefusedError"
    assert says in parts[-1].data["message"]
    assert hides not in parts[-1].data["message"]
    [run] = client.runs.list(thread["thread_id"])
    assert run["status"] == "error"
    replayed = list(client.runs.join_stream(thread["thread_id"], run["run_id"]))
    assert [p.event for p in replayed] == [p.event for p in parts]


def test_runs_survive_the_embedded_postgres_stopping_and_starting_under_load(
    tmp_path: Path,
) -> None:
    pgdata = tmp_path / "pgdata"
    with embedded_database(pgdata) as url:
        with running_server(settings_for(url, tmp_path / "data")) as base:
            created = asyncio.run(create_runs(base))
            wait_until(
                lambda: some_runs_past_their_first_step(url), timeout_s=60, what="runs to start"
            )
            server = embedded_server(pgdata)
            server.stop()  # pg_ctl stop (fast): every client is disconnected mid-run
            # Down for longer than a lease (3 s): the server's workers, listeners and streams find
            # it gone; a run that cannot renew stops and is resumed by a later attempt, or, when
            # its finish was already being retried as the database came back (still fenced by
            # its attempt: nobody else had claimed it), it ends as attempt 1.
            time.sleep(4.5)
            server.start()
            restarted = sql(url, "SELECT now() AS t")[0]["t"]
            results = asyncio.run(join_all(base, created))
        attempts = assert_every_run_finished_once(url, created, results)
        # The outage cut runs mid-way: some ended only once the database was back.
        ended_after = sql(
            url,
            "SELECT count(*) AS n FROM run_events WHERE event = 'end'"
            " AND run_id = ANY(%s::uuid[]) AND created_at >= %s",
            [run for _, run, _ in created],
            restarted,
        )[0]["n"]
    assert ended_after >= 1
    print(f"ended after the restart: {ended_after}; attempts per run: {attempts}")


def test_a_run_whose_event_postgresql_refuses_ends_as_an_error_saying_why(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event PostgreSQL will not store (one over its 256 MiB JSONB limit; here, by a trigger
    that makes it refuse one over 64 KiB with the same error) is not retried as an outage for a
    minute and then dropped while the run succeeds: the run ends as an error at once, its stream
    ends with an `error` event saying which event and why, in no words of the database's. So
    does a run nobody follows, whose events wait for its finish (over `_MAX_BATCH_BYTES`, here
    32 KiB, they are stored apart first, as a 256 MiB one would be past 16 MiB)."""
    monkeypatch.setattr(events_module, "_MAX_BATCH_BYTES", 32 * 1024)
    with (
        events_over_limit_refused_sync(database_url),
        running_server(
            make_settings(
                database_url, tmp_path, migrate_on_start=False, langgraph_config=TEST_GRAPHS
            )
        ) as base,
    ):
        client: Any = get_sync_client(url=base)
        big = {"configurable": {"note_bytes": OVER_LIMIT_BYTES + 1000}}
        thread = client.threads.create()
        started = time.monotonic()
        parts = list(
            client.runs.stream(thread["thread_id"], "steps", input={"log": ["in"]}, config=big)
        )
        assert time.monotonic() - started < 20  # not a minute of retries
        _assert_refused(
            client,
            thread,
            parts,
            says="could not be stored: it is over PostgreSQL's size limits",
            hides="requested length",
        )

        waited = client.threads.create()
        result = client.runs.wait(
            waited["thread_id"], "steps", input={"log": ["in"]}, config=big, raise_error=False
        )
        assert result["__error__"]["error"] == "EventRefusedError"
        [run] = client.runs.list(waited["thread_id"])
        assert run["status"] == "error"
        events = [p.event for p in client.runs.join_stream(waited["thread_id"], run["run_id"])]
        assert events[0] == "metadata"
        assert events[-1] == "error"


def test_a_run_whose_events_the_writer_gives_up_ends_as_an_error_not_a_success(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events the writer could not store through an outage longer than `give_up_s` (here 0.5 s
    of lock timeouts, 55P03, on every `values` event; the rest of the database answers) are
    dropped: their run does not finish as a success whose replay misses them, it ends as an
    error saying which event was lost and why, in no words of the database's."""
    defaults = events_module.RunEventLog.__init__.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "give_up_s", 0.5)  # the server's log gives up after 0.5 s
    name = f"sb_on_{uuid.uuid4().hex}"
    stalled = "RAISE EXCEPTION 'stalled on purpose' USING ERRCODE = '55P03';"
    with (
        installed(
            database_url,
            on_insert_of(name, "values", stalled),
            f"DROP TRIGGER {name} ON run_events; DROP FUNCTION {name}(); DROP SEQUENCE {name}",
        ),
        running_server(
            make_settings(
                database_url, tmp_path, migrate_on_start=False, langgraph_config=TEST_GRAPHS
            )
        ) as base,
    ):
        client: Any = get_sync_client(url=base)
        thread = client.threads.create()
        parts = list(client.runs.stream(thread["thread_id"], "steps", input={"log": ["in"]}))
        assert [p.event for p in parts] == ["metadata", "error"]
        _assert_refused(
            client,
            thread,
            parts,
            says="could not be stored: the database could not be reached for 0.5 s",
            hides="stalled on purpose",
        )


# PostgreSQL refusing a thread's values over 64 KiB as it refuses ones over JSONB's 256 MiB
# (program_limit_exceeded), without sending 256 MiB: the finish's thread values are refused.
_VALUES_OVER_LIMIT = refusing_over_limit(
    "sb_values_over_limit",
    "UPDATE ON conversations",
    'CASE WHEN NEW."values" IS DISTINCT FROM OLD."values"'
    ' THEN octet_length(NEW."values"::text) ELSE 0 END',
)


def thread_values_over_limit_refused(database_url: str) -> AbstractContextManager[None]:
    """Within: PostgreSQL refuses to store a thread's values over `OVER_LIMIT_BYTES`."""
    return installed(
        database_url, _VALUES_OVER_LIMIT, "DROP TRIGGER sb_values_over_limit ON conversations"
    )


def _ended(client: Any, thread_id: str, run_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """The run once it is no longer pending or running (or as it is after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run: dict[str, Any] = client.runs.get(thread_id, run_id)
        if run["status"] not in ("pending", "running") or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _attempts(database_url: str, run_id: str) -> int:
    return int(sql(database_url, "SELECT attempt FROM runs WHERE id = %s", run_id)[0]["attempt"])


def _error_of(client: Any, thread_id: str, run_id: str) -> Any:
    """The error a run ended with (its status `error`), as joining it returns it."""
    assert _ended(client, thread_id, run_id)["status"] == "error"
    return client.runs.join(thread_id, run_id)["__error__"]


def test_a_run_whose_error_holds_a_nul_ends_as_that_error_once(
    database_url: str, tmp_path: Path
) -> None:
    """An exception whose message holds a NUL (which PostgreSQL stores neither as text nor as
    JSONB) ends its run as that error, NUL removed, at its first attempt: its finish is not
    refused, the run not left running until its lease lapses and executed again."""
    with running_server(settings_for(database_url, tmp_path)) as base:
        client: Any = get_sync_client(url=base)
        thread = client.threads.create()
        thread_id = thread["thread_id"]
        run = client.runs.create(
            thread_id,
            "steps",
            input={"log": ["in"]},
            config={"configurable": {"fail_at": "s2", "nul_error": True}},
        )
        assert _error_of(client, thread_id, run["run_id"]) == {
            "error": "ValueError",
            "message": "step s2 failed on purpose after a NUL",
        }
        assert client.threads.get(thread_id)["status"] == "error"
        assert _attempts(database_url, run["run_id"]) == 1
    starts = [(a, node) for t, a, node, what in TRACE if t == thread_id and what == "start"]
    assert starts == [(1, "s1"), (1, "s2")]  # not executed again


@pytest.mark.parametrize("stored_before", [False, True])
def test_a_run_whose_thread_values_postgresql_refuses_ends_as_an_error_once(
    database_url: str, tmp_path: Path, stored_before: bool
) -> None:
    """A finish PostgreSQL refuses for the thread's values (over its size limits) is followed
    by one it cannot refuse for them: the run ends as an error at once, in no words of the
    database's, its thread not left busy and its values as last stored, its last checkpoint
    kept; it is not reclaimed and executed again. Whether the values too large came with the
    run's last checkpoint writes, or were in the thread's stored checkpoints before it (an
    earlier run's, their copy in the thread's values not stored)."""
    big = {"note_bytes": OVER_LIMIT_BYTES + 1000}
    with running_server(settings_for(database_url, tmp_path)) as base:
        client: Any = get_sync_client(url=base)
        thread = client.threads.create()
        thread_id = thread["thread_id"]
        log = ["in", *STEPS]
        if stored_before:
            client.runs.wait(
                thread_id, "steps", input={"log": ["in"]}, config={"configurable": big}
            )
            log = [*log, *log]
            # Its checkpoints hold them; the thread's copy not, as if it had been refused.
            sql(
                database_url,
                "UPDATE conversations SET values = '{}' WHERE id = %s RETURNING id",
                thread_id,
            )
        with thread_values_over_limit_refused(database_url):
            run = client.runs.create(
                thread_id,
                "steps",
                input={"log": ["in"]},
                config={"configurable": {} if stored_before else big},
            )
            assert _error_of(client, thread_id, run["run_id"]) == {
                "error": "ProgramLimitExceeded",
                "message": "the database refused to store the run's results (SQLSTATE 54000)",
            }
            stored = client.threads.get(thread_id)
            assert stored["status"] == "error"
            assert "note" not in (stored["values"] or {})  # as last stored
            # The refused finish's checkpoint writes were stored by the one after it.
            assert client.threads.get_state(thread_id)["values"]["log"] == log
            events = [p.event for p in client.runs.join_stream(thread_id, run["run_id"])]
            assert events[-1] == "error"
            assert _attempts(database_url, run["run_id"]) == 1
    runs = 2 if stored_before else 1
    assert [COMPLETED[(thread_id, node)] for node in STEPS] == [runs] * 4  # not executed again


def test_a_run_whose_finish_times_out_each_time_ends_as_an_error_instead_of_retrying_for_ever(
    database_url: str, tmp_path: Path
) -> None:
    """A finish that times out each time (57014: transient, so retried, while the run's lease
    is renewed all along) is not sent for ever: the second timeout in a row is taken for a
    refusal, and the finish after it carries nothing it could time out on (no thread values,
    no recorder), as after any refusal. Here storing the thread's values sleeps past the
    statement timeout: the run ends as an error at its first attempt saying so, in no words of
    the database's, its thread not left busy, its last checkpoint stored."""
    name = f"sb_slow_{uuid.uuid4().hex}"
    install = f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW."values" IS DISTINCT FROM OLD."values" THEN PERFORM pg_sleep(5); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE UPDATE ON conversations FOR EACH ROW EXECUTE FUNCTION {name}();
"""
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        db_statement_timeout_s=0.5,
    )
    drop = f"DROP TRIGGER {name} ON conversations; DROP FUNCTION {name}()"
    with installed(database_url, install, drop), running_server(settings) as base:
        client: Any = get_sync_client(url=base)
        thread = client.threads.create()
        thread_id = thread["thread_id"]
        run = client.runs.create(thread_id, "steps", input={"log": ["in"]})
        assert _error_of(client, thread_id, run["run_id"]) == {
            "error": "QueryCanceled",
            "message": "the database timed out 2 times storing the run's results (SQLSTATE 57014)",
        }
        assert _attempts(database_url, run["run_id"]) == 1
        assert client.threads.get(thread_id)["status"] == "error"
        assert client.threads.get_state(thread_id)["values"]["log"] == ["in", *STEPS]
        events = [p.event for p in client.runs.join_stream(thread_id, run["run_id"])]
        assert events[-1] == "error"


def test_a_run_whose_every_finish_times_out_frees_its_slot_and_is_recovered_once_it_can_end(
    database_url: str, tmp_path: Path
) -> None:
    """A finish whose update of the run's own row times out each time (57014; here a trigger
    sleeps past the statement timeout whenever the run's row would leave `running`), the bare
    finish after the second timeout included, is not retried for ever while the attempt's
    lease is renewed: the second timeout in a row of that bare finish ends the attempt, so its
    slot is free (another run, here behind it in the one slot, runs) and its lease lapses. The
    run stays `running` meanwhile (nothing can write its row); once the row can be written,
    recovery reclaims it and it ends as a success, resumed from its stored checkpoints: each
    step ran once, one `end`."""
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        run_workers=1,
        run_lease_s=3.0,
        run_poll_s=0.3,
        db_statement_timeout_s=0.5,
    )
    name = f"sb_stuck_{uuid.uuid4().hex}"
    with running_server(settings) as base:
        client: Any = get_sync_client(url=base)
        stuck = client.threads.create()["thread_id"]
        install = f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status = 'running' AND NEW.status <> 'running' THEN PERFORM pg_sleep(5); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE UPDATE ON runs FOR EACH ROW
WHEN (OLD.thread_id = '{stuck}') EXECUTE FUNCTION {name}();
"""
        drop = f"DROP TRIGGER {name} ON runs; DROP FUNCTION {name}()"
        with installed(database_url, install, drop):
            run = client.runs.create(stuck, "steps", input={"log": ["in"]})
            other = client.threads.create()["thread_id"]
            behind = client.runs.create(other, "steps", input={"log": ["in"]})
            assert _ended(client, other, behind["run_id"])["status"] == "success"
            assert client.runs.get(stuck, run["run_id"])["status"] == "running"
        ended = _ended(client, stuck, run["run_id"])
        assert ended["status"] == "success"
        assert client.runs.join(stuck, run["run_id"])["log"] == ["in", *STEPS]
        events = [p.event for p in client.runs.join_stream(stuck, run["run_id"])]
        assert events.count("end") == 1
        assert "error" not in events
        assert _attempts(database_url, run["run_id"]) >= 2
    assert [COMPLETED[(stuck, node)] for node in STEPS] == [1] * 4  # resumed, not run again


def test_a_rollback_whose_delete_loses_its_answer_leaves_none_of_the_runs_checkpoints(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """multitask_strategy=rollback: the running run is deleted with the checkpoints it wrote.
    When the delete commits but its answer is lost (the connection cut after it was sent),
    none of them stays behind: they went in the delete's own transaction, which the retry
    finds done. The thread's next run starts from the state before the rolled-back one, not
    from its checkpoints (before: they were deleted after, by a transaction of their own, never
    sent when the delete's answer was lost; the next run, free to start once the row was gone,
    could also start from them before they were deleted)."""
    real = run_store.drop_run
    lost: list[uuid.UUID] = []

    async def drop_run(db: Database, token: Any, **kwargs: Any) -> bool:
        dropped = await real(db, token, **kwargs)
        if not lost:  # it committed; its answer is lost with the connection
            lost.append(token.run_id)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return dropped

    monkeypatch.setattr(run_store, "drop_run", drop_run)
    query = (
        "SELECT count(*) AS n FROM checkpoints WHERE metadata->>'run_id' = %s"
        " AND (metadata->>'step')::int >= 1"
    )
    with running_server(settings_for(database_url, tmp_path)) as base:
        client: Any = get_sync_client(url=base)
        thread_id = client.threads.create()["thread_id"]
        slow = {"configurable": {"delay": 0.3}}
        first = client.runs.create(thread_id, "steps", input={"log": ["a"]}, config=slow)
        wait_until(
            lambda: int(sql(database_url, query, first["run_id"])[0]["n"]) > 0,
            timeout_s=20,
            what="the first run's checkpoint of s1",
        )
        second = client.runs.create(
            thread_id, "steps", input={"log": ["b"]}, multitask_strategy="rollback"
        )
        result = client.runs.join(thread_id, second["run_id"])
        assert lost == [uuid.UUID(first["run_id"])]
        assert result["log"] == ["b", *STEPS]  # nothing of the first run
        left = sql(
            database_url,
            "SELECT count(*) AS n FROM checkpoints WHERE metadata->>'run_id' = %s",
            first["run_id"],
        )
        assert left[0]["n"] == 0
        assert client.threads.get(thread_id)["values"]["log"] == ["b", *STEPS]
        assert [r["run_id"] for r in client.runs.list(thread_id)] == [second["run_id"]]
