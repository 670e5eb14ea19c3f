"""The run event log: every streamed event in `run_events`, followed live from any process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.background import supervise, sweep_forever
from server.resources import Resources
from server.runs.streaming import TERMINAL_EVENTS, dumps
from server.telemetry.metrics import metrics
from stores.sql.database import (
    Database,
    Timeouts,
    connect,
    is_refusal,
    is_transient,
    libpq_url,
    sqlstate,
)
from stores.sql.runs import FinishWrite, RunToken
from stores.sql.thread_events import CHANNEL as THREAD_CHANNEL
from stores.sql.thread_events import prune_thread_events

log = logging.getLogger(__name__)


class EventRefusedError(Exception):
    """PostgreSQL refused to store an event of the run (too large for it, say): the event is
    lost, so the run cannot go on (its stream would have a hole) and ends as an error. Its
    message is meant for the run's client: no database text in it."""


CHANNEL: Final[str] = "run_events"
ACTIVE_RUN_STATUSES: Final[frozenset[str]] = frozenset({"pending", "running"})
Event = tuple[int, str, Any]


def _notify(payload: str, *, quiet: bool) -> str:
    """`pg_notify(%(channel)s, <payload>)` for a statement's SELECT list, or, `quiet` (no other
    process listens), an expression of the same parameters that sends nothing: one parameter
    set serves both forms of a statement (what the expression gives is not read)."""
    return f"(%(channel)s || {payload})" if quiet else f"pg_notify(%(channel)s, {payload})"


# One statement, so one round trip in autocommit: store the events whose attempt still holds
# its run (the fencing token: a reclaimed run refuses its stale attempt's events, a deleted
# run all of them), then NOTIFY once per run with its last seq (delivered at commit). The
# batch is one JSON array parameter (`_rows`: each event's body is spliced in as it was
# encoded): five typed arrays cost psycopg ~60 us more per statement to adapt and PostgreSQL
# ~150 us more to parse (uuid[], and text[] cast to jsonb[]), and a /chat token at
# concurrency 1 is a statement of its own.
# The run each event belongs to is looked up by its key, one probe an event (`LATERAL ...
# OFFSET 0`: the subquery is not pulled up into a join): PostgreSQL guesses 100 rows for
# `jsonb_to_recordset`, so a plain join hashed the whole `runs` table on every batch while it
# held fewer than ~20-40k rows (a young database: 4 ms of PostgreSQL's CPU a batch at 12k).
# Quiet (`_STORE_QUIET`), while no other process listens (`_PEERS`), it sends no NOTIFY: this
# process's own listener would be the only one woken, to drop it (~65 us of CPU a statement
# here, and PostgreSQL's signalling), once for each token of a /chat answer at concurrency 1.
def _store(*, quiet: bool) -> str:
    notify = _notify("%(origin)s || ':' || run_id::text || ':' || max(seq)::text", quiet=quiet)
    return (
        "WITH ins AS ("
        " INSERT INTO run_events (run_id, seq, event, data)"
        " SELECT u.r, u.s, u.e, u.d FROM jsonb_to_recordset(%(rows)s::jsonb)"
        " AS u(r uuid, s integer, e text, d jsonb, a integer)"
        " CROSS JOIN LATERAL (SELECT FROM runs r WHERE r.id = u.r AND r.attempt = u.a OFFSET 0)"
        " AS held"
        " ON CONFLICT DO NOTHING RETURNING run_id, seq"
        f") SELECT run_id, array_agg(seq), {notify}::text"
        " FROM ins GROUP BY run_id"
    )


_STORE = _store(quiet=False)
_STORE_QUIET = _store(quiet=True)
# Each process's listener says who it is (`application_name`); the others in this database
# are the processes whose followers NOTIFYs wake. A new one announces itself (`hello`).
_LISTENER_NAME: Final = "switchboard-events "
_PEERS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND application_name LIKE 'switchboard-events %' AND application_name <> :mine"
)
_PEER_CHECK_S: Final = 5.0
# The bodies' bytes one batch (one JSON document) carries, past its first event: PostgreSQL's
# jsonb refuses a document whose elements total over 256 MiB (stored, a body may take several
# times its text's bytes: an array of small numbers), as the batch's statement would be refused.
# Held events weighing more than this are not carried by a run's finish either (`closing`):
# the writer stores them first, so one PostgreSQL refuses costs that event, not the finish.
_MAX_BATCH_BYTES: Final = 16 * 1024 * 1024
# An event whose JSON is longer is refused without being sent: PostgreSQL's JSONB cannot hold
# it (a string or a document over 256 MiB), and parsing that much only to refuse it held up
# every run's events for ~13 s a try here.
_MAX_EVENT_BYTES: Final = 256 * 1024 * 1024


# A run's last events (e.g. /chat's `message`, then `end`), stored by the transaction that
# finishes the run, right after the finish (`finish_run(also=...)`): only when that finish
# ended the run with this attempt (its new status), never twice (a finish retried after a
# lost commit answer inserts nothing), with the NOTIFY of other processes' followers.
# Quiet (`_CLOSE_QUIET`), while no other process listens (`notifying`), it sends none: a
# NOTIFYing commit holds PostgreSQL's notification-queue lock through its WAL flush, so every
# such commit of the database (each run's finish, which carries this) waited for the one
# before it.
def _close(*, quiet: bool) -> str:
    notify = _notify("%(origin)s || ':' || %(key)s || ':' || max(seq)::text", quiet=quiet)
    return (
        "WITH ins AS ("
        " INSERT INTO run_events (run_id, seq, event, data)"
        " SELECT %(run_id)s, u.seq, u.event, u.data FROM unnest(%(seqs)s::integer[],"
        " %(events)s::text[], %(data)s::text[]::jsonb[]) AS u(seq, event, data)"
        " WHERE EXISTS (SELECT 1 FROM runs WHERE id = %(run_id)s AND attempt = %(attempt)s"
        " AND status = %(status)s)"
        " ON CONFLICT DO NOTHING RETURNING seq"
        f") SELECT {notify} FROM ins HAVING count(*) > 0"
    )


_CLOSE = _close(quiet=False)
_CLOSE_QUIET = _close(quiet=True)
_AFTER = text(
    "SELECT seq, event, data FROM run_events WHERE run_id = :run_id AND seq > :after ORDER BY seq"
)
_STATUS = text("SELECT status FROM runs WHERE id = :run_id")
_READ_ATTEMPTS: Final = 3
# How many finished runs' local logs a process keeps (a stream that starts right after its run
# ended here is served from memory too); older ones are read from the table.
_DONE_LOCAL: Final = 256
# A follower of a run waiting in the queue reads its status only every this many polls: it
# is woken when the run starts (its first stored event, here or by NOTIFY) or ends pending
# (`wake_run`, a "done" here or by NOTIFY); the read is the safety net for a lost wake-up.
_PENDING_POLLS: Final = 10
_LAST = text("SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = :run_id")
# A later attempt's first read of `_LAST` (`settled_last_seq`): in a transaction holding
# run_events in SHARE mode, which waits for every insert into it in flight (any process's
# writer, a finish) to commit or fail. An insert takes its ROW EXCLUSIVE lock before the
# snapshot its fence (the run's attempt) is read with: one whose fence still saw the earlier
# attempt, read before the new claim committed, is stored before this read, never after it
# under a seq the new attempt then gives (and loses to `ON CONFLICT DO NOTHING`). An insert
# that comes later reads the new attempt and is fenced out. The lock is asked for a short
# while at a time (inserts queue behind a waiting SHARE request), a few times, then the read
# is made without it (logged).
_SETTLE_TIMEOUT = text("SET LOCAL lock_timeout = '200ms'")
_SETTLE_LOCK = text("LOCK TABLE run_events IN SHARE MODE")
_SETTLE_TRIES: Final = 10
_PRUNE = text(
    "DELETE FROM run_events e USING ("
    " SELECT ev.run_id FROM run_events ev JOIN runs r ON r.id = ev.run_id"
    " WHERE r.status NOT IN ('pending', 'running')"
    " GROUP BY ev.run_id HAVING MAX(ev.created_at) < now() - make_interval(secs => :keep)"
    ") old WHERE e.run_id = old.run_id"
)


@dataclass(frozen=True, slots=True)
class _Queued:
    """An event numbered and waiting for the writer."""

    ticket: int
    run_id: uuid.UUID
    attempt: int
    seq: int
    event: str
    body: bytes  # the data's JSON, as stored


@dataclass(slots=True)
class _Numbering:
    """How the attempt of a run executing here numbers its events: the last seq it gave, or
    None until it has read where the stored log ends (`_next_seq`)."""

    attempt: int
    seq: int | None


@dataclass(slots=True)
class _Held:
    """Events of a run nobody follows here, numbered and waiting (at most `hold_s`) to be
    stored by the run's finish, or by the writer once someone follows or time is up."""

    attempt: int
    events: list[tuple[int, str, bytes]]  # (seq, event, JSON body)
    timer: asyncio.TimerHandle


@dataclass(eq=False, slots=True)
class _Subscriber:
    """One open `follow()` (or `watching()`): local events land in `items`, remote ones set
    `stale`; either wakes the follower's `wait` (and sets `signal`, which `watching` hands out).

    A follower waits on a bare future, its poll timer armed once and moved on only when it
    fires, not through `asyncio.wait_for` (on Python 3.11: a task, a timer and three more laps
    of the event loop for every event a stream is shown)."""

    items: deque[Event] = field(default_factory=deque)
    stale: bool = False
    signal: asyncio.Event = field(default_factory=asyncio.Event)
    waiter: asyncio.Future[bool] | None = None
    timer: asyncio.TimerHandle | None = None
    waiting_since: float = 0.0
    poll_s: float = 1.0

    def push(self, item: Event) -> None:
        self.items.append(item)
        self._wake()

    def poke(self) -> None:
        self.stale = True
        self._wake()

    def _wake(self) -> None:
        self.signal.set()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _polled(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait arms the timer again
        due = self.waiting_since + self.poll_s
        loop = waiter.get_loop()
        if loop.time() >= due:
            waiter.set_result(False)
        else:  # armed by an earlier wait: this one times out `poll_s` after it began
            self.timer = loop.call_at(due, self._polled)

    async def wait(self, poll_s: float) -> bool:
        """Until an event is pushed or the key poked (True), or `poll_s` passed (False)."""
        loop = asyncio.get_running_loop()
        self.waiting_since, self.poll_s = loop.time(), poll_s
        if self.timer is None:
            self.timer = loop.call_at(self.waiting_since + poll_s, self._polled)
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiter = waiter
        try:
            return await waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class RunEventLog:
    """Appends run events to PostgreSQL and follows them, here or in another process.

    `append` numbers an event and queues it; one writer task stores whatever is queued in a
    single INSERT and NOTIFYs `run_events` with `origin:run_id:seq` per run in the same
    transaction, then hands the stored events to this process's followers. Followers
    elsewhere are woken by the NOTIFY and read the rows; every follower also re-reads every
    `poll_s`, so a lost notification only delays it. A follower only ever sees stored events,
    so a replay from the table never misses what a live follower was shown.

    With `hold_s` > 0, the events of a run that nobody follows in this process (a
    `runs.wait`, a background run) are not queued at once: they wait, numbered, for the
    run's finish, which stores them with its last events in its own transaction (no round
    trip of their own), or for the writer once a follower here subscribes, the run has
    `max_held` of them, `hold_s` has passed, or the attempt ends without its finish.
    Followers in other processes see them that much later; nobody sees them unstored.
    """

    def __init__(
        self,
        database: Database,
        *,
        url: str,
        poll_s: float = 1.0,
        max_batch: int = 500,
        max_queued: int = 5000,
        timeouts: Timeouts = Timeouts(),
        give_up_s: float = 60.0,
        hold_s: float = 0.0,
        max_held: int = 64,
    ) -> None:
        self.database = database
        self.hold_s = hold_s
        self.max_held = max_held
        self.url = libpq_url(url)
        self.timeouts = timeouts
        self.give_up_s = give_up_s
        self.poll_s = poll_s
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.origin = uuid.uuid4().hex[:12]
        # Whether another process listens (so NOTIFYs are sent): until checked, and whenever a
        # check fails, yes; a notification from another origin says yes at once.
        self._peers = True
        self._peers_seen = 0  # notifications from other origins so far
        self._peer_watch: asyncio.Task[None] | None = None
        self._subscribers: dict[uuid.UUID, set[_Subscriber]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        # Numbering (see `_next_seq`): the attempt of each run executing here and the last seq
        # it gave (None: read from the table at its next event). Dropped when the attempt
        # retires; a run whose attempt retired with events still queued keeps the ticket of
        # the last (`_draining`) until the writer is past it, for a next attempt here to wait on.
        self._seqs: dict[uuid.UUID, _Numbering] = {}
        self._seq_locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._draining: dict[uuid.UUID, int] = {}
        self._queue: deque[_Queued] = deque()
        self._last_ticket: dict[uuid.UUID, int] = {}  # of each run's last queued event
        self._queued_ticket = 0
        self._stored_ticket = 0
        self._wake_writer = asyncio.Event()
        self._stored_changed = asyncio.Event()  # set (and replaced) after each batch
        self._writer: asyncio.Task[None] | None = None
        self._write_conn: psycopg.AsyncConnection[Any] | None = None
        self._write_cursor: psycopg.AsyncCursor[Any] | None = None  # kept: ~15 us a statement
        # Local logs: the stored events of runs executing here whose whole log this process
        # wrote (from seq 1, `_local[run][i]` is seq i + 1), so a follower here reads them
        # from memory instead of the table; `_done_local` keeps the last finished ones.
        self._local: dict[uuid.UUID, list[Event]] = {}
        self._done_local: OrderedDict[uuid.UUID, list[Event]] = OrderedDict()
        # Events of runs nobody follows here, waiting for their finish (`hold_s`); and those
        # a finish under way carries (queued again if it does not go through).
        self._held: dict[uuid.UUID, _Held] = {}
        self._carried: dict[uuid.UUID, _Held] = {}
        # The newest attempt of each run executing here: begun (`begin`), not retired yet.
        self._live: dict[uuid.UUID, int] = {}
        # Attempts executing here (attempt, message) with an event the writer could not store
        # (`refusal`): one entry at most per `_live` one, dropped when its attempt retires, so
        # none is ever forgotten while its attempt can still finish, and none outlives it.
        self._refused: dict[uuid.UUID, tuple[int, str]] = {}

    async def start(self) -> None:
        """Start the writer and listen for other processes' events (returns once listening)."""
        if self._writer is None:
            self._writer = asyncio.create_task(
                supervise("run event writer", self._write_forever), name="run-events-writer"
            )
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="run-events-listener")
        waiter = asyncio.create_task(self._listening.wait())
        done, _ = await asyncio.wait({waiter, self._listener}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            self._listener.result()  # raises why listening failed
        if self._peer_watch is None:
            await self._check_peers()
            self._peer_watch = asyncio.create_task(self._watch_peers(), name="run-events-peers")

    @property
    def notifying(self) -> bool:
        """Whether stored events are NOTIFYed: only while another process listens."""
        return self._peers

    async def _check_peers(self) -> None:
        seen = self._peers_seen
        try:
            rows = await self._read(_PEERS, {"mine": _LISTENER_NAME + self.origin})
            alone = int(rows[0][0]) == 0
        except Exception as error:
            if not is_transient(error):
                log.warning("counting the other listening processes failed (%s)", error)
            alone = False
        # A process that said hello while the count was under way is a peer all the same.
        self._peers = not alone or self._peers_seen != seen

    async def _watch_peers(self) -> None:
        while True:
            await asyncio.sleep(_PEER_CHECK_S)
            await self._check_peers()

    async def aclose(self, *, flush_timeout_s: float = 10.0) -> None:
        """Store what is queued (up to `flush_timeout_s`), then stop writing and listening."""
        for run_id in list(self._held):
            self._release(run_id)
        for run_id in list(self._carried):  # finishes cut short by the shutdown
            self._requeue(run_id, self._carried.pop(run_id))
        if self._writer is not None and self._queue:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), flush_timeout_s)
        for task in (self._writer, self._listener, self._peer_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._writer = self._listener = self._peer_watch = None
        if self._write_conn is not None:
            await self._write_conn.close()
            self._write_conn = self._write_cursor = None

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with await connect(
                    self.url, self.timeouts, application_name=_LISTENER_NAME + self.origin
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {THREAD_CHANNEL}")
                    # A process that said hello while this listener was away went unheard:
                    # notify until a count of the listeners says alone (a count under way
                    # too: as a hello heard during it).
                    self._peers_seen += 1
                    self._peers = True
                    # Processes that store events quietly while alone notify from now on.
                    await conn.execute(
                        "SELECT pg_notify(%s, %s)", (CHANNEL, f"{self.origin}:hello")
                    )
                    self._listening.set()
                    backoff = 0.2
                    self._poke_all()  # whatever was sent while not listening is re-read
                    async for note in conn.notifies():
                        if note.channel == THREAD_CHANNEL:
                            self._poke(note.payload)  # a thread id
                        else:
                            self._dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not self._listening.is_set():
                    raise
                log.warning("run event listener lost its connection (%s); reconnecting", error)
                self._poke_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _dispatch(self, payload: str) -> None:
        origin, _, rest = payload.partition(":")
        if origin == self.origin:
            return  # appended here: local followers already have it
        self._peers_seen += 1
        self._peers = True  # another process is here: it may follow runs of this one
        key = rest.partition(":")[0]
        with contextlib.suppress(ValueError):
            self._forget_local(uuid.UUID(key))  # another process writes its log now
        self._poke(key)

    def _forget_local(self, run_id: uuid.UUID) -> None:
        self._local.pop(run_id, None)
        self._done_local.pop(run_id, None)

    def local_log(self, run_id: uuid.UUID) -> list[Event] | None:
        """The stored events of `run_id` as this process wrote them, when it wrote the whole
        log (a run it executes, or finished lately, from its first attempt); None otherwise."""
        local = self._local.get(run_id)
        return local if local is not None else self._done_local.get(run_id)

    def retire(self, token: RunToken) -> None:
        """`token`'s attempt, executing here, ended: keep its local log a while if the run
        ended (its log is complete), forget it otherwise (another attempt may continue it).
        Events it still held (an attempt that ended without its finish) go to the writer, and
        so do those a finish that never came back carried (cancelled between `closing` and
        `closed`, e.g. by a shutdown): its commit may or may not have stored them, and the
        writer stores them at most once (fenced by their attempt, a stored seq kept).

        Its numbering is forgotten (nothing of the run stays in memory but a finished local
        log): a later attempt here numbers after the stored log (`_next_seq`), once the events
        this one left queued are stored or dropped. An attempt that retires after a newer one
        of the same run began here (its finish outlived its lease) leaves the newer one's
        state alone."""
        run_id = token.run_id
        held = self._held.get(run_id)
        if held is not None and held.attempt <= token.attempt:
            self._release(run_id)
        carried = self._carried.get(run_id)
        if carried is not None and carried.attempt <= token.attempt:
            self._requeue(run_id, self._carried.pop(run_id))
        if self._live.get(run_id, 0) <= token.attempt:
            self._live.pop(run_id, None)
        refused = self._refused.get(run_id)
        if refused is not None and refused[0] <= token.attempt:
            del self._refused[run_id]
        numbering = self._seqs.get(run_id)
        if numbering is not None and numbering.attempt > token.attempt:
            return  # the run's numbering, queued events and log are the newer attempt's
        self._seqs.pop(run_id, None)
        ticket = self._last_ticket.pop(run_id, 0)
        if ticket > self._stored_ticket:  # dropped by `_publish` once the writer is past it
            self._draining[run_id] = ticket
        local = self._local.pop(run_id, None)
        if local and local[-1][1] in TERMINAL_EVENTS:
            self._done_local[run_id] = local
            while len(self._done_local) > _DONE_LOCAL:
                self._done_local.popitem(last=False)

    def _poke(self, key: str) -> None:
        """Wake whoever follows the run, or watches the thread's stream, of id `key`."""
        try:
            subscribers = self._subscribers.get(uuid.UUID(key), ())
        except ValueError:
            return
        for subscriber in subscribers:
            subscriber.poke()

    @contextlib.contextmanager
    def _subscribed(self, key: uuid.UUID) -> Iterator[_Subscriber]:
        """A subscriber of `key` (a run, or a thread's stream) for the duration."""
        subscriber = _Subscriber()
        self._subscribers.setdefault(key, set()).add(subscriber)
        self._release(key)  # someone follows the run here: what it held is stored now
        try:
            yield subscriber
        finally:
            subscriber.close()
            subscribers = self._subscribers.get(key)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._subscribers[key]

    @contextlib.contextmanager
    def watching(self, thread_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when `thread_id`'s stream gets a new place (a run claimed for the first
        time, or a thread event), in any process; clear it before looking for new places."""
        with self._subscribed(thread_id) as subscriber:
            yield subscriber.signal

    def wake_thread(self, thread_id: uuid.UUID) -> None:
        """Wake this process's watchers of `thread_id`'s stream (`watching`), as a NOTIFY on the
        thread-stream channel would: for a place given without one (`notifying` false)."""
        for subscriber in self._subscribers.get(thread_id, ()):
            subscriber.poke()

    def wake_run(self, run_id: uuid.UUID) -> None:
        """Wake this process's followers of `run_id`: its status changed without an event (a
        pending run cancelled, or announced done), so they read it again at once."""
        for subscriber in self._subscribers.get(run_id, ()):
            subscriber.poke()

    def followers(self, key: uuid.UUID) -> int:
        """How many open follows (of a run) or watches (of a thread stream) `key` has here."""
        return len(self._subscribers.get(key, ()))

    def _poke_all(self) -> None:
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.poke()

    def begin(self, token: RunToken, *, stored: Event | None = None) -> None:
        """Note that `token`'s attempt starts here. A first attempt's log is empty (no read), or
        holds only `stored`, its first event written with the run's row (seq 1), and this
        process writes the rest, so its followers here read it from memory. A later attempt
        reads where the stored log ends at its first event (`_next_seq`)."""
        run_id = token.run_id
        if self._live.get(run_id, 0) < token.attempt:
            self._live[run_id] = token.attempt
        numbering = self._seqs.get(run_id)
        if numbering is None or numbering.attempt < token.attempt:
            first = token.attempt == 1
            numbering = self._seqs[run_id] = _Numbering(token.attempt, 0 if first else None)
        if token.attempt != 1 or numbering.attempt != 1:
            return
        if stored is None:
            self._local.setdefault(run_id, [])
            return
        numbering.seq = max(numbering.seq or 0, stored[0])
        if not self._local.get(run_id):
            self._local[run_id] = [stored]
            for subscriber in self._subscribers.get(run_id, ()):
                subscriber.push(stored)

    async def append(self, token: RunToken, event: str, data: Any) -> int:
        """Queue one event of the attempt `token` for storing and publishing; returns its seq
        (1, 2, ... per run). Returns at once, except for `end`/`error`, which return once every
        event of the run queued before them is stored or dropped.

        The event is stored only while `token`'s attempt still holds its run (it is dropped
        once another worker has reclaimed the run, or the run was deleted). The event of an
        attempt older than one of the same run that began here since is dropped at once
        (0: the newer claim fenced it out), without taking a seq of the newer one."""
        run_id = token.run_id
        body = dumps(data)
        seq = await self._next_seq(token)
        if seq is None:
            return 0
        if self._hold(token, seq, event, body):
            return seq
        self._release(run_id)  # what it held goes first
        ticket = self._enqueue(run_id, token.attempt, seq, event, body)
        if event in TERMINAL_EVENTS or len(self._queue) > self.max_queued:
            await self._wait_stored(ticket)
            numbering = self._seqs.get(run_id)
            if (
                event in TERMINAL_EVENTS
                and numbering is not None
                and numbering.attempt == token.attempt
                and numbering.seq == seq
            ):
                del self._seqs[run_id]  # nothing came after it: forget the counter
                self._last_ticket.pop(run_id, None)
        return seq

    def _hold(self, token: RunToken, seq: int, event: str, body: bytes) -> bool:
        """Keep a run's event for its finish when nobody follows the run here (`hold_s`)."""
        run_id = token.run_id
        if self.hold_s <= 0 or event in TERMINAL_EVENTS or self._subscribers.get(run_id):
            return False
        held = self._held.get(run_id)
        if held is not None and held.attempt != token.attempt:
            self._release(run_id)
            held = None
        if held is None:
            timer = asyncio.get_running_loop().call_later(self.hold_s, self._release, run_id)
            held = self._held[run_id] = _Held(token.attempt, [], timer)
        held.events.append((seq, event, body))
        if len(held.events) >= self.max_held:
            self._release(run_id)
        return True

    def _release(self, run_id: uuid.UUID) -> None:
        """Queue the events `run_id` held, in order, for the writer."""
        held = self._held.pop(run_id, None)
        if held is not None:
            held.timer.cancel()
            self._requeue(run_id, held)

    def _requeue(self, run_id: uuid.UUID, held: _Held) -> None:
        """Queue `held`'s events, in order, for the writer (fenced there by their attempt)."""
        for seq, event, body in held.events:
            self._enqueue(run_id, held.attempt, seq, event, body)

    def _enqueue(self, run_id: uuid.UUID, attempt: int, seq: int, event: str, body: bytes) -> int:
        """Queue one numbered event for the writer; its ticket."""
        self._queued_ticket += 1
        self._queue.append(_Queued(self._queued_ticket, run_id, attempt, seq, event, body))
        self._last_ticket[run_id] = self._queued_ticket
        self._wake_writer.set()
        return self._queued_ticket

    async def closing(
        self, token: RunToken, events: Sequence[tuple[str, Any]], *, status: str
    ) -> tuple[FinishWrite, list[Event]]:
        """Number the last events of `token`'s attempt (ending with `end` or `error`) to be
        stored by the transaction that finishes its run with `status`: the statement for
        `finish_run(also=...)` and the numbered events, for `closed` once it committed. The
        events the run held (nobody followed it here) go first, in the same statement.

        Returns once every event of the run queued before them is stored, so the table never
        holds these before those (a follower reading it sees no gap).
        """
        run_id = token.run_id
        # Taken before any wait: a follower that comes meanwhile gets them from `closed`.
        carried = self._held.pop(run_id, None)
        if carried is not None:
            carried.timer.cancel()
            if (
                carried.attempt != token.attempt
                or sum(len(body) for _, _, body in carried.events) > _MAX_BATCH_BYTES
            ):
                self._requeue(run_id, carried)  # the writer stores them (or refuses one) first
                carried = None
            else:
                self._carried[run_id] = carried
        numbering = self._seqs.get(run_id)
        if numbering is None or numbering.attempt <= token.attempt:
            await self._wait_stored(self._last_ticket.pop(run_id, 0))
        else:  # a newer attempt of the run began here: its queued events are not this one's
            await self._wait_stored(self._last_ticket.get(run_id, 0))
        numbered: list[tuple[int, str, bytes]] = list(carried.events) if carried else []
        for event, data in events:
            body = dumps(data)
            # A stale attempt's (None): its finish, fenced out, stores none of them.
            numbered.append(((await self._next_seq(token)) or 0, event, body))
        write = FinishWrite(
            _CLOSE if self._peers else _CLOSE_QUIET,
            {
                "run_id": run_id,
                "key": str(run_id),
                "attempt": token.attempt,
                "status": status,
                "seqs": [seq for seq, _, _ in numbered],
                "events": [event for _, event, _ in numbered],
                "data": [body.decode() for _, _, body in numbered],
                "channel": CHANNEL,
                "origin": self.origin,
            },
        )
        return write, [(seq, event, orjson.loads(body)) for seq, event, body in numbered]

    def closed(self, token: RunToken, events: Sequence[Event], *, stored: bool) -> None:
        """The finish that carried `closing`'s events committed (`stored`): hand them to this
        process's followers. Either way the run's counter here is forgotten (a later attempt
        continues from the table). Held events it carried that were not stored go to the
        writer (fenced: a stale attempt's are dropped there). A newer attempt of the run that
        began here meanwhile keeps its own counter and carried events."""
        numbering = self._seqs.get(token.run_id)
        if numbering is not None and numbering.attempt <= token.attempt:
            del self._seqs[token.run_id]
        carried = self._carried.get(token.run_id)
        if carried is not None and carried.attempt == token.attempt:
            del self._carried[token.run_id]
            if not stored:
                self._requeue(token.run_id, carried)
        if stored:
            for event in events:
                self._deliver(token.run_id, event)
            metrics().events_written.inc(len(events))

    def refusal(self, token: RunToken) -> str | None:
        """Why an event of `token`'s attempt was not stored, when PostgreSQL refused it or the
        writer gave it up (a message for the run's client); None when none was. Known once the
        writer tried it: after `closing` returned, for every event appended before. Only for an
        attempt executing here (from `begin` to `retire`): nobody else asks."""
        refused = self._refused.get(token.run_id)
        return refused[1] if refused is not None and refused[0] == token.attempt else None

    @property
    def _unreachable(self) -> str:
        """Why events the writer gave up are lost, for their runs' clients (no database text)."""
        return f"the database could not be reached for {self.give_up_s:g} s"

    def _refuse(self, item: _Queued, state: str | None, *, why: str | None = None) -> None:
        """Note that PostgreSQL refused `item` with SQLSTATE `state`, or that it was dropped
        for `why` (its run must not go on as if it were stored). Kept only while its attempt
        executes here (`_live`): an attempt that retired (its events handed to the writer as it
        ended) or never began here is never asked, and an entry for it would never be dropped."""
        if self._live.get(item.run_id) != item.attempt:
            return
        known = self._refused.get(item.run_id)
        if known is not None and known[0] == item.attempt:
            return  # the first says why (an older attempt's, retired, says nothing of this one)
        if why is None and state is not None and state.startswith("54"):
            why = "it is over PostgreSQL's size limits"
        elif why is None:
            why = "the database refused it" + (f" (SQLSTATE {state})" if state else "")
        message = (
            f"event {item.seq} ({item.event[:64]}, {len(item.body)} bytes of JSON) of the run "
            f"could not be stored: {why}"
        )
        self._refused[item.run_id] = (item.attempt, message)

    async def flush(self) -> None:
        """Return once every event appended so far is stored (held ones too)."""
        for run_id in list(self._held):
            self._release(run_id)
        await self._wait_stored(self._queued_ticket)

    async def _wait_stored(self, ticket: int) -> None:
        if self._writer is None:
            raise RuntimeError("the run event log is not started")
        while self._stored_ticket < ticket:
            if self._writer.done():
                raise RuntimeError("the run event writer has stopped")
            await self._stored_changed.wait()

    async def _next_seq(self, token: RunToken) -> int | None:
        """The next seq of `token`'s attempt; None for an attempt older than one of the same run
        that began here since (the newer claim fenced it out: none of its events is stored).

        An attempt numbers on from where the run's stored log ends, read at its first event
        (a first attempt starts at 0 without reading, `begin`: nothing was stored before it),
        once every event of the run this process queued before (an earlier attempt's, handed
        to the writer as it retired) is stored or dropped: none of those is still on its way
        to the table when the new attempt reads it, so none shares a seq with the new
        attempt's. Never from what an earlier attempt counted here: another process may have
        taken the run over since and stored events past that."""
        run_id = token.run_id
        numbering = self._seqs.get(run_id)
        if numbering is None or numbering.attempt < token.attempt:
            numbering = self._seqs[run_id] = _Numbering(token.attempt, None)
        elif numbering.attempt > token.attempt:
            return None
        if numbering.seq is None:
            lock = self._seq_locks.setdefault(run_id, asyncio.Lock())
            try:
                async with lock:
                    if numbering.seq is None:
                        ticket = max(
                            self._last_ticket.get(run_id, 0), self._draining.get(run_id, 0)
                        )
                        if ticket > self._stored_ticket:
                            await self._wait_stored(ticket)
                        last = await self.settled_last_seq(run_id)
                        if numbering.seq is None:
                            numbering.seq = last
            finally:
                self._seq_locks.pop(run_id, None)
        seq = (numbering.seq or 0) + 1
        numbering.seq = seq
        return seq

    async def _write_forever(self) -> None:
        """Store queued batches until cancelled; no batch is retried forever.

        A batch the database refuses is written event by event, dropping the refused ones. A
        cut connection (or a statement or lock timeout), for the batch or during that, is
        reopened and the batch retried with a growing pause for up to `give_up_s` (a restart
        of PostgreSQL, a lock held); past that its events are dropped (logged) so
        the runs behind them are not held up for ever. Either way the attempt of each
        dropped event is told (`refusal`): it ends as an error, never as a success whose
        stream misses an event.
        """
        backoff, failing_since = 0.1, None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake_writer.clear()
                await self._wake_writer.wait()
                continue
            batch: list[_Queued] = []
            size = 0
            for item in self._queue:
                size += len(item.body)
                if batch and (len(batch) >= self.max_batch or size > _MAX_BATCH_BYTES):
                    break
                batch.append(item)
            if len(batch[0].body) > _MAX_EVENT_BYTES:  # alone: over `_MAX_BATCH_BYTES`
                item = batch[0]
                log.warning(
                    "dropped event %d (%s, %d bytes) of run %s: over the %d bytes PostgreSQL's "
                    "JSONB holds",
                    item.seq,
                    item.event,
                    len(item.body),
                    item.run_id,
                    _MAX_EVENT_BYTES,
                )
                self._refuse(item, "54000")  # program_limit_exceeded, as PostgreSQL says
                self._publish(batch, set())
                continue
            try:
                try:
                    stored = await self._write(batch)
                except Exception as error:
                    if not is_refusal(error) or len(batch) == 1:
                        raise
                    # Not the connection: some event of the batch is at fault. Keep the good
                    # ones; a cut meanwhile is retried below like the batch's own.
                    log.warning(
                        "storing %d run events failed (%s: %s); those that can be are stored",
                        len(batch),
                        type(error).__name__,
                        error,
                    )
                    stored = await self._write_each(batch)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_refusal(error):  # a lone event: the same statement again would fail alike
                    log.warning(
                        "dropped event %d (%s, %d bytes) of run %s: %s: %s",
                        batch[0].seq,
                        batch[0].event,
                        len(batch[0].body),
                        batch[0].run_id,
                        type(error).__name__,
                        error,
                    )
                    for item in batch:  # one (`_write_each` tolerates all but cuts)
                        self._refuse(item, sqlstate(error))
                    backoff, failing_since = 0.1, None
                    self._publish(batch, set())
                    continue
                failing_since = failing_since or loop.time()
                if loop.time() - failing_since < self.give_up_s:
                    log.warning("storing %d run events failed (%s); retrying", len(batch), error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                log.error(
                    "dropped %d run events: the database refused them for %g s (%s)",
                    len(batch),
                    self.give_up_s,
                    error,
                )
                # Their runs' streams have a hole now: each attempt is told (`refusal`), so
                # it ends as an error instead of a success whose replay misses them.
                for item in batch:
                    self._refuse(item, None, why=self._unreachable)
                stored = set()
            backoff, failing_since = 0.1, None
            self._publish(batch, stored)

    def _publish(self, batch: list[_Queued], stored: set[tuple[uuid.UUID, int]]) -> None:
        """Take `batch` off the queue, hand what was stored to local followers, wake waiters."""
        for _ in batch:
            self._queue.popleft()
        for item in batch:
            if (item.run_id, item.seq) in stored:
                self._deliver(item.run_id, (item.seq, item.event, orjson.loads(item.body)))
        metrics().events_written.inc(len(stored))
        self._stored_ticket = batch[-1].ticket
        if self._draining:  # runs whose attempt retired with events queued: now past them
            for run_id in [r for r, t in self._draining.items() if t <= self._stored_ticket]:
                del self._draining[run_id]
        self._stored_changed.set()
        self._stored_changed = asyncio.Event()

    def _deliver(self, run_id: uuid.UUID, event: Event) -> None:
        """A stored event: into the run's local log, and to its followers here."""
        local = self._local.get(run_id)
        if local is not None:
            if event[0] == len(local) + 1:
                local.append(event)
            else:  # a gap (an event dropped): the table is the log from now on
                del self._local[run_id]
        for subscriber in self._subscribers.get(run_id, ()):
            subscriber.push(event)

    async def _write_each(self, batch: list[_Queued]) -> set[tuple[uuid.UUID, int]]:
        """Store events one by one, dropping those PostgreSQL refuses (`is_refusal`; any other
        error, a cut, is raised: the caller retries), so one bad event cannot hold up every
        run's stream; its run is told (`refusal`). (An event of a run deleted meanwhile, or
        reclaimed by another attempt, is not refused: it stores nothing.)"""
        stored: set[tuple[uuid.UUID, int]] = set()
        for item in batch:
            try:
                stored |= await self._write([item])
            except Exception as error:
                if not is_refusal(error):
                    raise
                log.warning(
                    "dropped event %d (%s, %d bytes) of run %s: %s: %s",
                    item.seq,
                    item.event,
                    len(item.body),
                    item.run_id,
                    type(error).__name__,
                    error,
                )
                self._refuse(item, sqlstate(error))
        return stored

    async def _write(self, batch: list[_Queued]) -> set[tuple[uuid.UUID, int]]:
        """Store `batch` in one statement; the (run, seq) pairs actually stored."""
        if self._write_conn is None or self._write_conn.closed or self._write_cursor is None:
            if self._write_conn is not None:
                await self._write_conn.close()
            self._write_conn = await connect(self.url, self.timeouts)
            self._write_cursor = self._write_conn.cursor()
        cursor = self._write_cursor
        try:
            await cursor.execute(
                _STORE if self._peers else _STORE_QUIET,
                {"rows": _rows(batch), "channel": CHANNEL, "origin": self.origin},
            )
            rows = await cursor.fetchall()
        except Exception as error:
            if not is_refusal(error):
                await self._write_conn.close()  # reconnect on the next try
                self._write_cursor = None
            raise
        stored = {(run_id, seq) for run_id, seqs, _ in rows for seq in seqs}
        if len(stored) != len(batch):
            log.info(
                "%d of %d run events were not stored: their attempt no longer holds the run",
                len(batch) - len(stored),
                len(batch),
            )
        return stored

    async def _read(self, query: Any, params: dict[str, Any]) -> list[Any]:
        """Run a read (one statement, in autocommit: no BEGIN before it, no ROLLBACK after,
        and no task to close the connection), retrying on a fresh connection when the pooled
        one was cut under it.

        The pool's pre-ping catches connections that died while idle, not one whose server
        process is terminated between the ping and the query.
        """
        for attempt in range(_READ_ATTEMPTS):
            try:
                async with self.database.connection(autocommit=True) as conn:
                    return list(await conn.execute(query, params))
            except DBAPIError as error:
                if not error.connection_invalidated or attempt == _READ_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def events_after(self, run_id: uuid.UUID, after_seq: int = 0) -> list[Event]:
        """The stored events of `run_id` with seq > `after_seq`, in order."""
        rows = await self._read(_AFTER, {"run_id": run_id, "after": after_seq})
        return [(int(r.seq), str(r.event), r.data) for r in rows]

    async def last_seq(self, run_id: uuid.UUID) -> int:
        """The seq of the last stored event of `run_id` (0 when none)."""
        return int((await self._read(_LAST, {"run_id": run_id}))[0][0])

    async def settled_last_seq(self, run_id: uuid.UUID) -> int:
        """`last_seq`, read once no insert into the log is in flight (`_SETTLE_LOCK`): where a
        later attempt of `run_id`, whose claim has committed, numbers on from. No event of an
        earlier attempt, in any process, is stored after this read (each is either read here
        or fenced out by the new claim). Without the lock after `_SETTLE_TRIES` tries (a long
        transaction writes the log), a plain read (logged)."""
        for _ in range(_SETTLE_TRIES):
            try:
                async with self.database.engine.begin() as conn:
                    await conn.execute(_SETTLE_TIMEOUT)
                    await conn.execute(_SETTLE_LOCK)
                    return int((await conn.execute(_LAST, {"run_id": run_id})).scalar_one())
            except DBAPIError as error:
                if sqlstate(error) != "55P03":  # lock_not_available: try again
                    raise
        log.warning("run %s: numbering on from its log without waiting for inserts", run_id)
        return await self.last_seq(run_id)

    async def _run_status(self, run_id: uuid.UUID) -> str | None:
        """The run's status (None: no such run; "running" while the database is down)."""
        try:
            rows = await self._read(_STATUS, {"run_id": run_id})
        except Exception as error:
            if not is_transient(error):
                raise
            return "running"
        return str(rows[0][0]) if rows else None

    async def follow(
        self, run_id: uuid.UUID, *, after_seq: int | None = None, pending: bool = False
    ) -> AsyncIterator[Event]:
        """Yield `(seq, event, data)` of `run_id` after `after_seq` (None: from the first),
        stored ones first, then live ones, until `end` or `error`.

        Also stops when the run is no longer pending/running and nothing new came for three
        polls (a run that died without its `end`, or a log already pruned).

        `pending`: the caller committed the run pending (nothing stored) just before. Its
        status is then not read until `_PENDING_POLLS` polls have passed or something woke the
        follower, and, while no other process listens and none claimed it here yet, neither is
        its log (empty: an attempt here pushes what it stores; one elsewhere would NOTIFY it).
        """
        last = after_seq or 0
        with self._subscribed(run_id) as subscriber:
            fresh = pending and not self._peers and self.local_log(run_id) is None
            stale, idle_polls = not fresh, 0
            # Polls left before a pending run's status is read again (0: read at the next).
            quiet_polls = _PENDING_POLLS if pending else 0
            while True:
                if stale:
                    stale = False
                    local = self.local_log(run_id)
                    try:
                        # A log written here is read from memory (it holds only stored
                        # events, so the table replays the same).
                        stored = local[last:] if local is not None else None
                        if stored is None:
                            stored = await self.events_after(run_id, last)
                    except Exception as error:
                        if not is_transient(error):
                            raise
                        # PostgreSQL is restarting: the stream waits (its heartbeats go on).
                        log.warning("reading events of run %s failed (%s); retrying", run_id, error)
                        await asyncio.sleep(self.poll_s)
                        stale = True
                        continue
                    for item in stored:
                        idle_polls = 0
                        last = item[0]
                        yield item
                        if item[1] in TERMINAL_EVENTS:
                            return
                while subscriber.items:
                    item = subscriber.items.popleft()
                    if item[0] <= last:
                        continue
                    if item[0] > last + 1:
                        stale = True  # a gap: someone else's rows come first
                        subscriber.items.clear()
                        break
                    idle_polls = 0
                    last = item[0]
                    yield item
                    if item[1] in TERMINAL_EVENTS:
                        return
                if stale:
                    continue
                if subscriber.items:
                    continue
                if not subscriber.stale and not await subscriber.wait(self.poll_s):
                    # A run whose log is written here (executing here, or just ended
                    # here: its log is whole in memory) needs no question to the table.
                    status: str | None
                    if self.local_log(run_id) is not None:
                        status = "running"
                    elif quiet_polls > 0:
                        # Still pending as far as this process knows: its start comes as an
                        # event (pushed here, or with its NOTIFY) and its end without a start
                        # as a wake-up (`wake_run`), so the table is asked only every
                        # `_PENDING_POLLS` polls (a /chat turn waiting for a slot asked once
                        # a second).
                        quiet_polls -= 1
                        status = "pending"
                    else:
                        status = await self._run_status(run_id)
                        quiet_polls = _PENDING_POLLS - 1 if status == "pending" else 0
                    # A run waiting in the queue has no attempt writing events: its next
                    # ones reach `items` (claimed here) or come with their NOTIFY, so its
                    # rows are not read again meanwhile (a /chat turn waiting for a slot
                    # asked twice a second).
                    stale = status != "pending"
                    if status in ACTIVE_RUN_STATUSES:
                        idle_polls = 0
                    else:
                        idle_polls += 1
                        if idle_polls > 2:
                            return
                if subscriber.stale:
                    subscriber.stale = False
                    stale, quiet_polls = True, 0

    async def prune(self, *, keep_s: float) -> int:
        """Delete the events of finished runs whose last event is older than `keep_s`, and
        thread events (state updates) older than that."""
        async with self.database.engine.begin() as conn:
            result = await conn.execute(_PRUNE, {"keep": keep_s})
        pruned = int(getattr(result, "rowcount", 0) or 0)
        return pruned + await prune_thread_events(self.database, keep_s=keep_s)


def _rows(batch: Sequence[_Queued]) -> str:
    """`_STORE`'s parameter: the events of `batch` as one JSON array of
    `{"r": run, "s": seq, "e": event, "d": data, "a": attempt}`, each body spliced in."""
    rows = b",".join(
        b'{"r":"%b","s":%d,"e":%b,"d":%b,"a":%d}'
        % (item.run_id.hex.encode(), item.seq, orjson.dumps(item.event), item.body, item.attempt)
        for item in batch
    )
    return (b"[%b]" % rows).decode()


@asynccontextmanager
async def open_run_event_log(
    database: Database,
    *,
    url: str,
    poll_s: float = 1.0,
    retention_s: float = 3600.0,
    prune_every_s: float = 300.0,
    timeouts: Timeouts = Timeouts(),
    hold_s: float = 0.0,
) -> AsyncIterator[RunEventLog]:
    """A listening `RunEventLog`, pruning finished runs' events older than `retention_s`
    (`hold_s`: how long the events of a run nobody follows here may wait for its finish)."""
    events = RunEventLog(database, url=url, poll_s=poll_s, timeouts=timeouts, hold_s=hold_s)
    await events.start()

    async def prune() -> str | None:
        deleted = await events.prune(keep_s=retention_s)
        return f"{deleted} run events of finished runs pruned" if deleted else None

    pruner = asyncio.create_task(
        sweep_forever("run event prune", prune_every_s, prune), name="run-events-pruner"
    )
    try:
        yield events
    finally:
        pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruner
        await events.aclose()


@asynccontextmanager
async def open_run_events(resources: Resources) -> AsyncIterator[RunEventLog]:
    """The lifespan's run event log, configured from the settings."""
    settings = resources.settings
    async with open_run_event_log(
        resources.database,
        url=resources.database_url,
        poll_s=settings.run_events_poll_s,
        retention_s=settings.run_events_retention_s,
        prune_every_s=settings.run_events_prune_every_s,
        timeouts=resources.timeouts,
        hold_s=settings.run_events_hold_s,
    ) as events:
        yield events
