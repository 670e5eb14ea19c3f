"""ASGI middleware of identity and browser safety.

`BrowserGuard` (outermost): the `Host` header must be one of ALLOWED_HOSTS (DNS rebinding), and a
request that changes something (any method but GET/HEAD/OPTIONS) from a web page must come from
the server's own origin or a CORS-allowed one — so no other page can drive the server with a
"simple" request (`text/plain` JSON, a form) that CORS never asks about.

`Authentication`: every request except the public ones (`/ok`, `/info`, `/healthz`, the API
docs, the web page's files) is authenticated; its `Caller` goes into the request's state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth.caller import OPEN, Caller
from server.auth.contract import AuthError
from server.auth.setup import STUDIO_ORIGIN, AuthSetup
from server.auth.users import studio_user
from server.request_context import send_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset(
    {"/ok", "/info", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
     "/", "/web"}
)  # fmt: skip
PUBLIC_PREFIXES = ("/web/",)


def host_name(host_header: str) -> str:
    """The host of a `Host` header, without its port (`[::1]:8000` → `::1`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether `host` is one of `allowed` (`*` any, `*.example.com` its subdomains)."""
    for pattern in allowed:
        pattern = pattern.strip().lower().strip("[]")
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BrowserGuard:
    """Refuse unknown `Host` headers (400) and state-changing requests from foreign web pages
    (403)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Sequence[str],
        origin_allowed: Callable[[str], bool],
    ) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)
        self.origin_allowed = origin_allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if not host_allowed(host_name(host), self.allowed_hosts):
            await send_error(
                send, 400, f"host {host!r} is not served here (ALLOWED_HOSTS)", field="host",
                headers={},
            )  # fmt: skip
            return
        origin = _header(scope, b"origin")
        if origin is not None and scope["method"] not in SAFE_METHODS:
            same = urlsplit(origin).netloc.lower() == host.lower() and origin != "null"
            if not same and not self.origin_allowed(origin):
                await send_error(
                    send,
                    403,
                    f"requests from the web page at {origin} are not allowed (CORS origins)",
                    field="origin",
                    headers={},
                )
                return
        await self.app(scope, receive, send)


def is_public(scope: Scope) -> bool:
    """Requests every caller may make: health, server info, API docs, the web page's files."""
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    path: str = scope["path"]
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class Authentication:
    """Authenticate every request but the public ones; put its `Caller` in the request state."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        custom_route: Callable[[Scope], bool],
        public_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.custom_route = custom_route
        self.public_paths = public_paths  # more public GETs (/metrics with METRICS_TOKEN)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        setup: AuthSetup | None = getattr(scope["app"].state, "auth", None)
        if setup is None:
            await send_error(send, 503, "the server is starting", headers={"Retry-After": "1"})
            return
        state = scope.setdefault("state", {})
        if setup.authorizer is None:
            state["caller"] = OPEN
        elif not self._public(scope) and (setup.custom_routes or not self.custom_route(scope)):
            try:
                state["caller"] = await self._caller(scope, setup)
            except AuthError as error:
                await send_error(send, error.status, error.detail, headers=error.headers)
                return
        await self.app(scope, receive, send)

    def _public(self, scope: Scope) -> bool:
        return is_public(scope) or (
            scope.get("method") in ("GET", "HEAD") and scope["path"] in self.public_paths
        )

    @staticmethod
    async def _caller(scope: Scope, setup: AuthSetup) -> Caller:
        assert setup.authorizer is not None
        if setup.studio_without_key and _header(scope, b"origin") == STUDIO_ORIGIN:
            sent_key = _header(scope, b"authorization") or (
                (_header(scope, b"x-api-key") or "") if _header(scope, b"x-auth-scheme") is None
                else ""
            )  # fmt: skip
            if not sent_key:
                return Caller(user=studio_user(), authorizer=setup.authorizer)
        user = await setup.authorizer.authenticate(Request(scope))
        return Caller(user=user, authorizer=setup.authorizer)
