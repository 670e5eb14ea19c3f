"""The ids a request or a run carries (request id, run id, thread id), in contextvars that
logs and spans read. The request id is `server.request_context`'s (set by its middleware); the
run and thread ids are set by the run executor around each attempt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from server.request_context import REQUEST_ID

run_id_var: ContextVar[str | None] = ContextVar("switchboard_run_id", default=None)
thread_id_var: ContextVar[str | None] = ContextVar("switchboard_thread_id", default=None)


def ids() -> dict[str, str]:
    """The ids set in this context, by name (`request_id`, `run_id`, `thread_id`)."""
    out: dict[str, str] = {}
    for name, var in (
        ("request_id", REQUEST_ID),
        ("run_id", run_id_var),
        ("thread_id", thread_id_var),
    ):
        value = var.get()
        if value is not None:
            out[name] = value
    return out


@contextmanager
def bound_run(run_id: str, thread_id: str | None) -> Iterator[None]:
    """Mark the work inside (and the tasks it starts) as done for this run and thread."""
    run_token = run_id_var.set(run_id)
    thread_token = thread_id_var.set(thread_id)
    try:
        yield
    finally:
        thread_id_var.reset(thread_token)
        run_id_var.reset(run_token)
