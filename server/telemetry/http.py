"""ASGI middleware (just inside `RequestIdMiddleware`): a span per request, carrying its request
id, and the HTTP metrics by route template (`/threads/{thread_id}/runs`, never the raw path:
bounded labels)."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.trace import Status, StatusCode
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.telemetry.metrics import metrics
from stores.tracing import traced

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


class Telemetry:
    """Give each HTTP request a span, and a count and duration by method, route template and
    status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        method = method if method in METHODS else "OTHER"  # a label: bounded
        status = 500  # what the client gets if the app fails before answering
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with traced("http", f"{method} request", **{"http.request.method": method}) as span:
            try:
                await self.app(scope, receive, send_status)
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
