"""The one SSE writer and stream-mode filter, used by every streaming route (runs and /chat)."""

from __future__ import annotations

import asyncio
import re
import signal
import types
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Generator, Mapping
from typing import Any, Final, cast

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

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


_SEP: Final[bytes] = b"\r\n"
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _field(value: str) -> bytes:
    """An `id:`/`event:` value: one line (line breaks removed)."""
    raw = value.encode()
    return _LINE_BREAK.sub(b"", raw) if b"\n" in raw or b"\r" in raw else raw


def encode_event(ident: int | str | None, event: str, data: bytes) -> bytes:
    """One SSE event on the wire: `id:` (when given), `event:`, `data:` (one `data:` line per
    line of `data`), each ended by CRLF, then a blank line — the bytes sse-starlette wrote."""
    if b"\n" in data or b"\r" in data:
        data = b"\r\ndata: ".join(_LINE_BREAK.split(data))
    head = b"" if ident is None else b"id: " + _field(str(ident)) + _SEP
    return b"%bevent: %b\r\ndata: %b\r\n\r\n" % (head, _field(event), data)


def encode_comment(comment: str) -> bytes:
    """A comment (`: <comment>`, one line per line), then a blank line: a heartbeat."""
    lines = _LINE_BREAK.split(comment.encode())
    return b"".join(b": " + line + _SEP for line in lines) + _SEP


_EXIT_POLL_S: Final[float] = 0.5


class _ServerExit:
    """The streams of one event loop, ended when the uvicorn server serving them starts to shut
    down (uvicorn waits for open responses before its lifespan ends: an endless stream would
    hold it forever). One poll task per loop while streams are open; uvicorn's `should_exit`
    is read through its SIGTERM handler (a bound method of the serving `Server`)."""

    def __init__(self) -> None:
        self.streams: set[Callable[[], None]] = set()
        self.poller: asyncio.Task[None] | None = None

    def add(self, end: Callable[[], None]) -> None:
        self.streams.add(end)
        if self.poller is None or self.poller.done():
            self.poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while self.streams:
            if _server_exiting():
                for end in list(self.streams):
                    end()
            await asyncio.sleep(_EXIT_POLL_S)


def _server_exiting() -> bool:
    handler = signal.getsignal(signal.SIGTERM)
    return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))


_EXITS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ServerExit] = (
    weakref.WeakKeyDictionary()
)


def _server_exit() -> _ServerExit:
    loop = asyncio.get_running_loop()
    exits = _EXITS.get(loop)
    if exits is None:
        exits = _EXITS[loop] = _ServerExit()
    return exits


class EventStream(Response):
    """An SSE response on plain ASGI: each `(id, event, data)` as one body message, a comment
    line (`: <comment>`) every heartbeat interval (unless given, the serving app's
    `settings.sse_heartbeat_s`, read when it starts), and the end of the events when the
    client disconnects or the server shuts down (the iterator is cancelled, so its `finally`
    runs: a run's `on_disconnect`).

    One task per stream besides the request's own (the heartbeat), plus one waiting for the
    client's disconnect: sse-starlette ran four in an anyio task group, took a lock and opened
    a cancel scope per event, and formatted each one through a `StringIO`.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[SseEvent],
        *,
        heartbeat_s: float | None,
        comment: str = "heartbeat",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        given = MutableHeaders(headers=dict(headers or {}))
        given.setdefault("Cache-Control", "no-store")
        given["Connection"] = "keep-alive"
        given["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        self.init_headers(given)
        self.heartbeat_s = heartbeat_s
        self.heartbeat = encode_comment(comment)

    def _interval(self, scope: Scope) -> float:
        if self.heartbeat_s is not None:
            return self.heartbeat_s
        state = getattr(scope.get("app"), "state", None)
        settings = getattr(getattr(state, "resources", None), "settings", None)
        interval = getattr(settings, "sse_heartbeat_s", None)
        if isinstance(interval, int | float) and interval > 0:
            return float(interval)
        return DEFAULT_HEARTBEAT_S

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        if scope.get("method") == "HEAD":  # headers only: the stream would never end
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        interval = self._interval(scope)
        task = asyncio.current_task()
        assert task is not None
        ended = False  # by the client leaving or the server exiting: cancels `task`
        finished = False  # the events ran out (or failed): nothing to cancel any more

        def end() -> None:
            nonlocal ended
            if not finished and not ended:
                ended = True
                task.cancel()

        def helper_done(helper: asyncio.Task[None]) -> None:
            # The client left (or its connection or a heartbeat failed): end the events.
            if not helper.cancelled():
                helper.exception()  # retrieved: the stream's end says it
                end()

        exits = _server_exit()
        await send(start)
        watcher = asyncio.create_task(_until_disconnect(receive))
        pinger = asyncio.create_task(_heartbeats(send, self.heartbeat, interval))
        watcher.add_done_callback(helper_done)
        pinger.add_done_callback(helper_done)
        exits.add(end)
        active = metrics().streams_active
        active.inc()
        events = self.events
        gathered: list[bytes] = []

        async def flush() -> None:
            body = b"".join(gathered)
            gathered.clear()
            await send({"type": "http.response.body", "body": body, "more_body": True})

        try:
            while True:
                try:
                    ident, event, data = await _next_flushing(events, flush if gathered else None)
                except StopAsyncIteration:
                    break
                except Exception:
                    if gathered:  # what came before the failure goes out, as it would have
                        await flush()
                    raise
                gathered.append(encode_event(ident, event, dumps(data)))
                if len(gathered) >= _GATHER_MAX:
                    await flush()
            if gathered:
                await flush()
        except asyncio.CancelledError:
            finished = True
            if not ended or task.uncancel() > 0:
                raise  # cancelled from outside (not by the client leaving)
            return  # the client left or the server is going: no end to send
        finally:
            finished = True
            active.dec()
            exits.streams.discard(end)
            watcher.cancel()
            pinger.cancel()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:  # its `finally` runs now (a no-op once it has ended)
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class ResultResponse(Response):
    """A JSON answer that takes a while (`/wait`, `/join`): the headers at once, a newline every
    `keepalive_s` until `result` is done (JSON allows leading whitespace; proxies and clients
    do not time out), then its JSON. A client that leaves is noticed at once (the response
    listens for `http.disconnect`; Starlette's `StreamingResponse` under ASGI spec 2.4 does
    not, so a departure was seen only at the next newline): `result` is cancelled and
    `on_disconnect` runs."""

    media_type = "application/json"

    def __init__(
        self,
        result: Callable[[], Awaitable[Any]],
        *,
        keepalive_s: float,
        headers: Mapping[str, str] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.result = result
        self.keepalive_s = keepalive_s
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        result = asyncio.ensure_future(self.result())
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        keepalive: Message = {"type": "http.response.body", "body": b"\n", "more_body": True}
        try:
            while True:
                done, _ = await asyncio.wait(
                    {result, watcher},
                    timeout=self.keepalive_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if result in done:
                    body = dumps(result.result())
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
                if watcher in done:  # the client left (or its connection failed)
                    if not watcher.cancelled():
                        watcher.exception()  # retrieved: leaving is the answer
                    return
                await send(keepalive)
        finally:
            watcher.cancel()
            if not result.done():
                result.cancel()
                if self.on_disconnect is not None:
                    self.on_disconnect()


_GATHER_MAX: Final[int] = 32
"""At most this many events go out in one body message (each is sent at once otherwise)."""


@types.coroutine
def _next_flushing(
    events: AsyncIterator[SseEvent], flush: Callable[[], Awaitable[None]] | None
) -> Generator[Any, Any, SseEvent]:
    """`await anext(events)`, but when it has to wait (its next event is not there yet), first
    `await flush()`: the events an iterator had ready together go out in one body message, one
    write instead of one each (a run's events reach their followers a writer's batch at a
    time), and none is held back while the stream waits.

    The iterator's step is begun here; when it waits, the flush runs meanwhile and the step is
    then awaited as `yield from` would. A failure of the flush (a cancellation: the client
    left) is thrown into the waiting step, as it would have reached it had the stream been
    waiting there: the iterator unwinds (its `finally` runs) and is done, and the failure is
    raised here."""
    step = events.__anext__().__await__()
    try:
        waiting = step.send(None)
    except StopIteration as done:
        return cast(SseEvent, done.value)  # ready at once
    if flush is not None:
        try:
            yield from flush().__await__()
        except BaseException as error:
            try:
                waiting = step.throw(error)
            except StopIteration:  # it took the failure for an event: the stream ends anyway
                raise error from None
            yield from _awaiting(step, waiting)  # it awaits while it unwinds
            raise error from None
    return cast(SseEvent, (yield from _awaiting(step, waiting)))


def _awaiting(step: Generator[Any, Any, Any], waiting: Any) -> Generator[Any, Any, Any]:
    """Go on awaiting `step`, which last yielded `waiting` (what `yield from step` does)."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            step.close()
            raise
        except BaseException as error:
            try:
                waiting = step.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting = step.send(sent)
            except StopIteration as done:
                return done.value


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _heartbeats(send: Send, heartbeat: bytes, interval: float) -> None:
    if interval <= 0:  # none
        await asyncio.Event().wait()
    message: Message = {"type": "http.response.body", "body": heartbeat, "more_body": True}
    while True:
        await asyncio.sleep(interval)
        await send(message)


def sse_response(
    events: AsyncIterator[SseEvent],
    *,
    headers: Mapping[str, str] | None = None,
    heartbeat_s: float | None = None,
    comment: str = "heartbeat",
) -> EventStream:
    """An SSE response of `(seq, event, data)`: `id: <seq>` per event (none when seq is
    None), JSON data, and a `: <comment>` line every `heartbeat_s` seconds (None: the app's
    `SSE_HEARTBEAT_S`, else 5)."""
    return EventStream(events, heartbeat_s=heartbeat_s, comment=comment, headers=headers)


async def follow_run(
    events: RunEventLog,
    run_id: uuid.UUID,
    *,
    after_seq: int | None = None,
    modes: Collection[str] | None = None,
    on_disconnect: Callable[[], None] | None = None,
    first: tuple[int, str, Any] | None = None,
) -> AsyncIterator[SseEvent]:
    """The stored and live events of a run after `after_seq`, until `end` or `error`; only
    those of `modes` when given. `on_disconnect` runs when the client leaves before the end.

    `first`: the run's first event as the statement that created it stored it (`metadata`),
    sent at once, without waiting for the run's executor; the log is followed after it."""
    finished = False
    try:
        if first is not None:
            after_seq = first[0]
            yield first
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
