"""The one SSE writer and stream-mode filter, used by every streaming route (runs and /chat)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any, Final

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from server.runs.events import RunEventLog
from server.runs.streaming import TERMINAL_EVENTS, dumps
from server.runs.thread_stream import RUN_DONE, START, ThreadCursor, follow_thread
from server.telemetry.metrics import metrics
from stores.errors import InvalidInputError
from stores.sql.database import Database

DEFAULT_HEARTBEAT_S: Final[float] = 5.0
SseEvent = tuple[int | str | None, str, Any]
"""`(id, event, data)`: `id: <id>` (none when None), `event:`, JSON `data:`."""


REPLAY_ALL: Final[frozenset[str]] = frozenset({"-", "-1"})
"""`Last-Event-ID` values that ask for every event from the first, as langgraph-api takes
them: `-` (a Redis stream's start) and `-1` (what useStream's `joinStream` sends)."""


def parse_last_event_id(value: str | None) -> int | None:
    """The seq in a `Last-Event-ID` header (None when absent or empty; 0, replay everything,
    for `-` and `-1`).

    Raises `InvalidInputError` (422) naming the header when it is not a whole number ≥ 0.
    """
    if value is None or not value.strip():
        return None
    if value.strip() in REPLAY_ALL:
        return 0
    try:
        seq = int(value.strip())
    except ValueError:
        raise InvalidInputError(
            f"Last-Event-ID must be the id of an event of this run, got {value!r}",
            field="Last-Event-ID",
        ) from None
    if seq < 0:
        raise InvalidInputError(
            f"Last-Event-ID must be ≥ 0, got {seq}", field="Last-Event-ID"
        ) from None
    return seq


def parse_thread_event_id(value: str | None) -> ThreadCursor | None:
    """Where a thread stream's `Last-Event-ID` says to resume (None when absent: only new
    events; the start for `-`).

    Raises `InvalidInputError` (422) naming the header when it is not an id of the stream.
    """
    if value is None or not value.strip():
        return None
    if value.strip() in REPLAY_ALL:
        return START
    cursor = ThreadCursor.parse(value)
    if cursor is None:
        raise InvalidInputError(
            f"Last-Event-ID must be the id of an event of this thread's stream "
            f"(<place>-<event>) or '-', got {value[:100]!r}",
            field="Last-Event-ID",
        )
    return cursor


def thread_event_in_modes(event: str, data: Any, modes: Collection[str]) -> bool:
    """Whether an event of a thread's stream belongs to one of its stream `modes`, as
    langgraph-api filters them: `state_update` events to `state_update`; every run event to
    `run_modes`; a run's start (`metadata` with its `run_id` and `attempt`) and end
    (`metadata` with status `run_done`) to `lifecycle` too."""
    if event == "state_update":
        return "state_update" in modes
    if "run_modes" in modes:
        return True
    if "lifecycle" not in modes or event != "metadata" or not isinstance(data, dict):
        return False
    return data.get("status") == RUN_DONE or ("run_id" in data and "attempt" in data)


def event_in_modes(event: str, modes: Collection[str]) -> bool:
    """Whether an event of the run log belongs to one of the stream `modes` (a join's filter).

    `metadata`, `end` and `error` always do; `messages` (tuples) belongs to
    `messages-tuple`, `messages/partial` and the like to `messages`; a subgraph's
    `mode|ns...` to its mode.
    """
    if event in ("metadata", "end", "error"):
        return True
    mode = event.split("|", 1)[0]
    if mode == "messages":
        return "messages-tuple" in modes
    if mode.startswith("messages/"):
        return "messages" in modes
    return mode in modes


def run_headers(run_id: uuid.UUID, *, thread_id: uuid.UUID | None) -> dict[str, str]:
    """`Location` (where to rejoin the stream) and `Content-Location` (the run) of a run."""
    base = f"/threads/{thread_id}/runs/{run_id}" if thread_id else f"/runs/{run_id}"
    return {"Location": f"{base}/stream", "Content-Location": base}


async def _encode(events: AsyncIterator[SseEvent]) -> AsyncIterator[ServerSentEvent]:
    active = metrics().streams_active
    active.inc()
    try:
        async for ident, event, data in events:
            yield ServerSentEvent(
                data=dumps(data).decode(), event=event, id=None if ident is None else str(ident)
            )
    finally:
        active.dec()


class EventStream(EventSourceResponse):
    """An SSE response with a comment line (`: <comment>`) every heartbeat interval; unless
    given, the interval is the serving app's `settings.sse_heartbeat_s` (read when it starts)."""

    def __init__(
        self, content: Any, *, heartbeat_s: float | None, comment: str, **options: Any
    ) -> None:
        super().__init__(
            content,
            ping=DEFAULT_HEARTBEAT_S if heartbeat_s is None else heartbeat_s,
            ping_message_factory=lambda: ServerSentEvent(comment=comment),
            **options,
        )
        self.heartbeat_from_app = heartbeat_s is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.heartbeat_from_app:
            state = getattr(scope.get("app"), "state", None)
            settings = getattr(getattr(state, "resources", None), "settings", None)
            interval = getattr(settings, "sse_heartbeat_s", None)
            if isinstance(interval, int | float) and interval > 0:
                self.ping_interval = interval
        await super().__call__(scope, receive, send)


def sse_response(
    events: AsyncIterator[SseEvent],
    *,
    headers: Mapping[str, str] | None = None,
    heartbeat_s: float | None = None,
    comment: str = "heartbeat",
) -> EventSourceResponse:
    """An SSE response of `(seq, event, data)`: `id: <seq>` per event (none when seq is
    None), JSON data, and a `: <comment>` line every `heartbeat_s` seconds (None: the app's
    `SSE_HEARTBEAT_S`, else 5)."""
    return EventStream(
        _encode(events), heartbeat_s=heartbeat_s, comment=comment, headers=dict(headers or {})
    )


async def follow_run(
    events: RunEventLog,
    run_id: uuid.UUID,
    *,
    after_seq: int | None = None,
    modes: Collection[str] | None = None,
    on_disconnect: Callable[[], None] | None = None,
) -> AsyncIterator[SseEvent]:
    """The stored and live events of a run after `after_seq`, until `end` or `error`; only
    those of `modes` when given. `on_disconnect` runs when the client leaves before the end."""
    finished = False
    try:
        async for seq, event, data in events.follow(run_id, after_seq=after_seq):
            finished = event in TERMINAL_EVENTS
            if modes and not event_in_modes(event, modes):
                continue
            yield seq, event, data
    finally:
        if on_disconnect is not None and not finished:
            on_disconnect()


async def follow_thread_stream(
    events: RunEventLog,
    db: Database,
    thread_id: uuid.UUID,
    *,
    after: ThreadCursor | None,
    modes: Collection[str],
) -> AsyncIterator[SseEvent]:
    """A thread's stream across its runs after `after` (None: from now on), only the events
    of its stream `modes`, each with its id (`<place>-<event>`), until the thread is deleted
    or the client leaves."""
    async for cursor, event, data in follow_thread(events, db, thread_id, after=after):
        if thread_event_in_modes(event, data, modes):
            yield cursor.id, event, data
