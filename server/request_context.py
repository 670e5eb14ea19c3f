"""The request id: one per HTTP request, in a contextvar, on every response and error body.

`RequestIdMiddleware` (the outermost middleware) takes a sane `X-Request-ID` from the client
(1-128 characters of `A-Z a-z 0-9 . _ : -`) or makes one, puts it in `REQUEST_ID` for the
request's whole life (handlers, logs, metrics read `current_request_id()`), sends it back as the
`X-Request-ID` response header, and turns an unhandled exception into a generic 500 that names
the request id; the exception's text goes only to the log, with the same id.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
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


def _sent_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == _HEADER_KEY:
            return str(value.decode("latin-1"))
    return None


class RequestIdMiddleware:
    """Give each HTTP request an id (contextvar, response header) and answer an unhandled
    exception with a generic 500 carrying it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(_sent_id(scope))
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        started = False
        header = (_HEADER_KEY, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() != _HEADER_KEY]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "request %s: unhandled error in %s %s", request_id, scope["method"], scope["path"]
            )
            if started:  # the answer is under way: nothing can be said any more
                raise
            payload = json.dumps(
                error_body(f"internal server error (request id {request_id})")
            ).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": payload})
        finally:
            REQUEST_ID.reset(token)
