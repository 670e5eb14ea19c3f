"""The outermost ASGI middleware of the app, one pass per request: its request id (contextvar,
`X-Request-ID` header, a generic 500 naming it for an unhandled exception), a span carrying it,
and the HTTP metrics by route template (`/threads/{thread_id}/runs`, never the raw path:
bounded labels).

The request id and the telemetry were two middlewares of the same shape; as one, each response
message goes through one `send` wrapper instead of two, and each request through one
coroutine frame less."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Status, StatusCode
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.request_context import (
    REQUEST_ID,
    REQUEST_ID_HEADER_KEY,
    request_id_for,
    send_error,
    sent_request_id,
)
from server.telemetry.metrics import metrics
from server.telemetry.tracing import spans_wanted
from stores.tracing import traced

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope, app: Any) -> str:
    """The template of the route that served `scope` (as the router recorded it, else found
    again by matching): `/threads/{thread_id}`; `unmatched` when none did."""
    route = scope.get("route")
    if route is None and app is not None:
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{scope.get('root_path', '')}{path}" or "/"


class RequestTelemetry:
    """Give each HTTP request an id (contextvar, response header), a span, and a count and
    duration by method, route template and status; answer an unhandled exception with a
    generic 500 carrying the id (its text goes only to the log)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(sent_request_id(scope))
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        header = (REQUEST_ID_HEADER_KEY, request_id.encode("latin-1"))
        method = scope.get("method", "GET")
        method = method if method in METHODS else "OTHER"  # a label: bounded
        status = 500  # what the client gets if the app fails before answering
        answered = False
        started = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                answered = True
                status = int(message["status"])
                headers = [
                    h for h in message.get("headers", ()) if h[0].lower() != REQUEST_ID_HEADER_KEY
                ]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        # The span only when something receives it (an exporter): the metrics are observed
        # here, and a span nobody reads cost ~3 % of a runs.wait's CPU at concurrency 1.
        spanned = (
            traced("http", f"{method} request", **{"http.request.method": method})
            if spans_wanted()
            else nullcontext(INVALID_SPAN)
        )
        try:
            with spanned as span:
                try:
                    await self.app(scope, receive, send_observed)
                finally:
                    route = route_template(scope, scope.get("app"))
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                    m = metrics()
                    m.http_requests.labels(method, route, str(status)).inc()
                    m.http_duration.labels(method, route).observe(time.perf_counter() - started)
        except Exception:
            log.exception(
                "request %s: unhandled error in %s %s", request_id, scope["method"], scope["path"]
            )
            if answered:  # the answer is under way: nothing can be said any more
                raise
            await send_error(send_observed, 500, f"internal server error (request id {request_id})")
        finally:
            REQUEST_ID.reset(token)
