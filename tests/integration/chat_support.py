"""Helpers of the /chat tests: parse an SSE stream, wait for the sample documents."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a finished SSE response, in order (pings skipped)."""
    events: list[tuple[str, dict[str, Any]]] = []
    event, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            events.append((event, json.loads(data)))
            event, data = "message", ""
    return events


def stream_chat(api: httpx.Client, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """POST /chat and collect its events (the response must be a 200 SSE stream)."""
    with api.stream("POST", "/chat", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response)


def wait_for_samples(api: httpx.Client, *, count: int = 4, timeout_s: float = 120) -> None:
    """Block until the sample documents are ingested (the server seeds them at startup)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if api.get("/documents").json().get("total", 0) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError("the sample documents were not ingested in time")
