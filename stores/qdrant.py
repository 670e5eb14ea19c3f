"""The one Qdrant client of a process: a Qdrant server at QDRANT_URL, or local mode on disk."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import AsyncQdrantClient
from qdrant_client.local.async_qdrant_local import AsyncQdrantLocal

T = TypeVar("T")
# Local mode is plain Python under `async def`s and not thread-safe: one call at a time.
_LOCAL_LOCK = threading.Lock()


class _KeptLoop:
    """A worker thread's own event loop for local mode's calls, kept from one call to the next
    and shut down with the thread (its thread-local slot), as `asyncio.run` would."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()

    def __del__(self) -> None:
        # The slot is emptied when its thread ends, in that thread, as the interpreter clears
        # the thread's state (after `threading` forgot the thread: `current_thread()` would
        # make a dummy one there): no loop runs there any more, so the runner's loop may run
        # to shut down. `Runner.close` cancels the loop's tasks, closes its open async
        # generators (their `finally`), shuts down its default executor and closes it. Only
        # that executor's shutdown starts a thread, which would register a dummy thread for
        # the ending one; local mode never makes one (no `run_in_executor`, no `to_thread`).
        # The slots of threads still alive are emptied at interpreter exit, where a failure
        # (modules torn down) is let go.
        with contextlib.suppress(Exception):
            self.runner.close()


_LOOPS = threading.local()


@asynccontextmanager
async def open_qdrant(
    *, url: str | None, path: Path, api_key: str | None = None
) -> AsyncIterator[AsyncQdrantClient]:
    """Open the Qdrant client: the server at `url`, else local mode storing under `path`.

    Local mode locks its folder: one process holds it, so the server shares this one client
    between the knowledge base and memory vectors.
    """
    if url:
        client = AsyncQdrantClient(url=url, api_key=api_key)
    else:
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        client = AsyncQdrantClient(path=str(path))
    try:
        yield client
    finally:
        await client.close()


def is_local(client: AsyncQdrantClient) -> bool:
    """True when `client` is qdrant-client local mode (in-process, on disk) rather than a server."""
    return isinstance(client._client, AsyncQdrantLocal)


def _run_locked(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine `call()` builds on this worker thread's event loop, made on its first
    call and kept: `asyncio.run` would make and close a loop (a selector, a socket pair, the
    shutdown of its executor) per call, several a /chat turn. In the caller's context, as
    `asyncio.to_thread` hands it over."""
    with _LOCAL_LOCK:
        kept: _KeptLoop | None = getattr(_LOOPS, "kept", None)
        if kept is None:
            kept = _LOOPS.kept = _KeptLoop()
        return kept.runner.run(call(), context=contextvars.copy_context())


async def qdrant_call(
    client: AsyncQdrantClient,
    call: Callable[[AsyncQdrantClient], Coroutine[Any, Any, T]],
    *,
    light: bool = False,
) -> T:
    """Await `call(client)` without blocking the event loop.

    A server client is awaited as is. Local mode computes synchronously inside its coroutines
    (brute-force search, SQLite writes), so its calls run one at a time in a worker thread;
    a `light` one (known to cost next to nothing, e.g. `get_collections`: a dictionary's keys)
    runs on the event loop when no other call is running, without the thread hand-off.

    Args:
        client: The process's Qdrant client.
        call: Builds the coroutine to run, e.g. `lambda c: c.query_points(...)`.
        light: The call is cheap (see above).

    Returns:
        What the coroutine returns.
    """
    if not is_local(client):
        return await call(client)
    if light and _LOCAL_LOCK.acquire(blocking=False):
        try:
            return await call(client)
        finally:
            _LOCAL_LOCK.release()
    return await asyncio.to_thread(_run_locked, lambda: call(client))
