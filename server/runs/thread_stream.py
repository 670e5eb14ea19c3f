"""A thread's stream across its runs (`GET /threads/{id}/stream`): every run's events from the
run event log and the thread's own events (state updates), in the order they became visible,
from any server process."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from server.runs.events import Event, RunEventLog
from stores.sql import thread_events as store
from stores.sql.database import Database

RUN_DONE: Final[str] = "run_done"
PAGE: Final[int] = 100  # places read at a time
# A finished run whose stored events lack their `end` gets it within this time (it is
# appended right after the run's status is committed); past it, nothing more will come.
SETTLE_S: Final[float] = 30.0
_ID = re.compile(r"^(\d{1,19})-(\d{1,19})$")
T = TypeVar("T")


async def _read(query: Awaitable[T]) -> T:
    """A read that a leaving client does not cut: cancelled mid-query, psycopg closes its
    connection; shielded, the query ends and the connection goes back to the pool."""
    return await asyncio.shield(query)


@dataclass(frozen=True, slots=True)
class ThreadCursor:
    """Where a thread stream is: a place (a run, or a thread event) and an event in it.

    `event` is `2 * seq` for the run event `seq` (and `2 * seq + 1` for the `run_done` that
    follows a run's `error`), 0 for a thread event, None when the whole place was sent.
    """

    place: int
    event: int | None

    @property
    def id(self) -> str:
        """The SSE `id:` of the event at this cursor (`<place>-<event>`)."""
        return f"{self.place}-{self.event or 0}"

    @classmethod
    def parse(cls, value: str) -> ThreadCursor | None:
        """The cursor of an SSE id (`<place>-<event>`); None when it is not one."""
        match = _ID.match(value.strip())
        if match is None:
            return None
        return cls(int(match[1]), int(match[2]))


START: Final[ThreadCursor] = ThreadCursor(0, None)
"""Before the first place: `Last-Event-ID: -` replays the thread from its start."""


def run_outputs(run_id: uuid.UUID, event: Event) -> list[tuple[int, str, Any]]:
    """A stored run event as the thread stream shows it, as langgraph-api does: `end` becomes
    `metadata {"status": "run_done", "run_id"}`; an `error` is followed by one. Each with its
    position in the run's place."""
    seq, name, data = event
    done = {"status": RUN_DONE, "run_id": str(run_id)}
    if name == "end":
        return [(2 * seq, "metadata", done)]
    if name == "error":
        return [(2 * seq, "error", data), (2 * seq + 1, "metadata", done)]
    return [(2 * seq, name, data)]


async def _stored(events: Iterable[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def _run_place(
    events: RunEventLog, place: store.Place, after: int | None
) -> AsyncIterator[tuple[int, str, Any]]:
    """The events of a run's place after position `after` (None: all): followed live while
    the run may still add some, read once when it has settled."""
    assert place.run_id is not None
    first = 1 if after is None else max(1, after // 2)
    source: AsyncIterator[Event]
    if place.settled:
        source = _stored(await _read(events.events_after(place.run_id, first - 1)))
    else:
        source = events.follow(place.run_id, after_seq=first - 1)
    async for event in source:
        for position, name, data in run_outputs(place.run_id, event):
            if after is None or position > after:
                yield position, name, data


async def _live_cursor(events: RunEventLog, db: Database, thread_id: uuid.UUID) -> ThreadCursor:
    """Where a join without `Last-Event-ID` starts: after what the thread already streamed."""
    last = await _read(store.last_place(db, thread_id))
    if last is None:
        return START
    if last.run_id is not None and last.active:
        return ThreadCursor(last.position, 2 * await _read(events.last_seq(last.run_id)) + 1)
    return ThreadCursor(last.position, None)


async def follow_thread(
    events: RunEventLog,
    db: Database,
    thread_id: uuid.UUID,
    *,
    after: ThreadCursor | None,
    settle_s: float = SETTLE_S,
) -> AsyncIterator[tuple[ThreadCursor, str, Any]]:
    """Yield `(cursor, event, data)` of the thread's stream after `after` (None: only what
    comes from now on; `START`: everything kept), until the thread is deleted.

    Places come in the order the database gave them (a run's at its first claim, a thread
    event's when stored, both under the thread row's lock), so a join on any process sees
    the same events in the same order: with the last id it saw, it misses none and gets
    none twice. A run's place is followed to its end (runs of a thread never overlap).
    """
    poll_s = events.poll_s
    with events.watching(thread_id) as woken:
        cursor = after if after is not None else await _live_cursor(events, db, thread_id)
        while True:
            woken.clear()
            since = cursor.place - 1 if cursor.event is not None else cursor.place
            places = await _read(
                store.places_after(db, thread_id, since, limit=PAGE, settle_s=settle_s)
            )
            for place in places:
                partly = place.position == cursor.place
                if partly and cursor.event is None:
                    continue
                if place.run_id is None:
                    if not partly:
                        cursor = ThreadCursor(place.position, 0)
                        yield cursor, place.event, place.data
                else:
                    async for position, name, data in _run_place(
                        events, place, cursor.event if partly else None
                    ):
                        cursor = ThreadCursor(place.position, position)
                        yield cursor, name, data
                cursor = ThreadCursor(place.position, None)
            if len(places) == PAGE:
                continue
            if not await _read(store.thread_exists(db, thread_id)):
                return
            with contextlib.suppress(TimeoutError):  # a lost notification only delays us
                await asyncio.wait_for(woken.wait(), poll_s)
