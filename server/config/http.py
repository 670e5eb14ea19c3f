"""langgraph.json's `http`: the project's custom app beside the API, and CORS.

As under langgraph-api, a custom route wins over an API route with the same path, except the
health and documentation routes (`/ok`, `/docs`, `/openapi.json`). The custom app runs as an
app of its own (its middleware, exception handlers and lifespan), behind the server's CORS
and body-size middleware.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from server.config.schema import HttpConfig
from server.request_context import REQUEST_ID_HEADER, error_body
from server.settings import Settings

# Headers the SDK and Studio read from API responses.
EXPOSED_HEADERS = [
    "Location",
    "Content-Location",
    "X-Pagination-Total",
    "X-Pagination-Next",
    REQUEST_ID_HEADER,
]


class CustomRoutes(BaseRoute):
    """One route standing for every route of the custom app: it matches where one of them
    does, and hands the request to the whole app."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """FULL when a custom route matches path and method, PARTIAL when only the path."""
        if scope["type"] not in ("http", "websocket"):
            return Match.NONE, {}
        best = Match.NONE
        for route in self.app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return Match.FULL, {}
            if match == Match.PARTIAL:
                best = Match.PARTIAL
        return best, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Let the custom app answer."""
        await self.app(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        """Custom routes are reversed by the custom app, not by the server."""
        raise NoMatchFound(name, path_params)


def mount_custom_app(app: FastAPI, custom: Starlette) -> None:
    """Route requests the custom app has a route for to it. Call it after the unshadowable
    routes (FastAPI's docs, `/ok`) and before the API's routers are included."""
    app.router.routes.append(CustomRoutes(custom))


PRIVATE_NETWORK_HEADER = "access-control-allow-private-network"


class CORS(CORSMiddleware):
    """Starlette's CORS, whose refused preflight (400) is the server's JSON error body (with the
    request id) instead of plain text.

    With `allow_private_network`, a preflight asking `Access-Control-Request-Private-Network`
    (Chrome's Private Network Access: a public page such as Studio calling loopback or a
    private address) gets `Access-Control-Allow-Private-Network: true` — only when the rest of
    the preflight passes: a refused origin (or method, or header) never gets it."""

    def preflight_response(self, request_headers: Headers) -> Response:
        """The answer to a preflight; a refusal names what CORS did not allow."""
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type", PRIVATE_NETWORK_HEADER)
        }
        detail = bytes(response.body).decode()  # "Disallowed CORS origin, headers"
        refused = detail.removeprefix("Disallowed CORS ").split(", ")
        if "origin" in refused:
            hint, field = "CORS origins", "origin"
        elif refused[0] == "private-network":
            hint, field = "ALLOW_PRIVATE_NETWORK", "access-control-request-private-network"
        else:
            hint, field = "CORS rules", f"access-control-request-{refused[0]}"
        return JSONResponse(
            error_body(f"{detail} ({hint})", field=field),
            status_code=response.status_code,
            headers=headers,
        )


def cors_options(http: HttpConfig, settings: Settings) -> dict[str, Any]:
    """CORSMiddleware's arguments: `http.cors` when the project sets it (Starlette's defaults
    where it is silent, as langgraph-api passes it), else the CORS_ORIGINS setting; Private
    Network Access as ALLOW_PRIVATE_NETWORK says unless `http.cors` says it."""
    if http.cors is not None:
        options = http.cors.model_dump(exclude_none=True, exclude=set(http.cors.model_extra or {}))
        options.setdefault("allow_private_network", settings.allow_private_network)
        return options
    return {
        "allow_origins": settings.cors_origins,
        "allow_credentials": True,
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": EXPOSED_HEADERS,
        "allow_private_network": settings.allow_private_network,
    }
