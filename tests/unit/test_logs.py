"""Structured logs: one JSON object per line carrying the context's request, run and thread ids."""

from __future__ import annotations

import json
import logging
import sys

from server.request_context import REQUEST_ID
from server.telemetry.context import bound_run, ids
from server.telemetry.logs import JsonFormatter


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("switchboard.test").makeRecord(
        "switchboard.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )
    return record


def test_a_json_line_carries_the_ids_of_its_context_and_the_extras() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        with bound_run("run-7", "thread-9"):
            line = JsonFormatter().format(_record("run %s slowed", "run-7", lag_ms=12))
    finally:
        REQUEST_ID.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "run run-7 slowed"
    assert entry["level"] == "warning"
    assert entry["logger"] == "switchboard.test"
    assert (entry["request_id"], entry["run_id"], entry["thread_id"]) == (
        "req-1",
        "run-7",
        "thread-9",
    )
    assert entry["lag_ms"] == 12
    assert ids() == {}  # the context is restored after the run


def test_a_line_outside_any_request_or_run_has_no_ids_and_keeps_tracebacks() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert "run_id" not in entry
    assert "request_id" not in entry
    assert "ValueError: boom" in entry["exception"]
    assert "\n" not in JsonFormatter().format(record)
