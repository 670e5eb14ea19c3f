"""The request id: one per HTTP request, in a contextvar, on every response and error body.

`server.telemetry.http.RequestTelemetry` (the outermost middleware) takes a sane `X-Request-ID`
from the client (1-128 characters of `A-Z a-z 0-9 . _ : -`) or makes one, puts it in
`REQUEST_ID` for the request's whole life (handlers, logs, metrics read
`current_request_id()`), sends it back as the `X-Request-ID` response header, and turns an
unhandled exception into a generic 500 that names the request id; the exception's text goes
only to the log, with the same id.
"""

from __future__ import annotations

import json
import re
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.types import Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

REQUEST_ID: ContextVar[str | None] = ContextVar("switchboard_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served here, or None outside a request."""
    return REQUEST_ID.get()


def request_id_for(sent: str | None) -> str:
    """The client's `X-Request-ID` when it is sane (bounded length, safe charset), else a new
    random one (32 hex digits)."""
    if sent is not None and _SANE_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def error_body(detail: Any, *, field: str | None = None) -> dict[str, Any]:
    """The server's JSON error body: `{"detail", "field"?, "request_id"}`."""
    body: dict[str, Any] = {"detail": detail}
    if field is not None:
        body["field"] = field
    request_id = current_request_id()
    if request_id is not None:
        body["request_id"] = request_id
    return body


async def send_error(
    send: Send,
    status: int,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer with the server's JSON error body (with the request id)."""
    payload = json.dumps(error_body(detail, field=field)).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def sent_request_id(scope: Scope) -> str | None:
    """The `X-Request-ID` header the client sent, if any."""
    for key, value in scope.get("headers", []):
        if key == REQUEST_ID_HEADER_KEY:
            return str(value.decode("latin-1"))
    return None
