"""LangGraph's custom-auth contract (`langgraph_sdk.Auth`), enforced the way LangGraph's server
enforces it, for a user's auth.py and the built-in authenticator alike.

`authenticate` calls the `@auth.authenticate` function with the request parameters it asks
for; `authorize` calls the most specific `@auth.on...` handler of a resource and action, which
may allow (None/True), deny (False: 403), change the value it was given in place, or return a
filter that the caller applies in SQL.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langgraph_sdk import Auth
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.routing import Match

from server.auth.users import AuthUser, to_user
from stores.sql.filters import Filter, FilterError, check_filter

log = logging.getLogger(__name__)

# The parameters an `@auth.authenticate` function may ask for, by name.
AUTHENTICATE_PARAMETERS = frozenset(
    {"request", "headers", "authorization", "path", "method", "path_params", "query_params",
     "scope"}
)  # fmt: skip

# What LangGraph's handlers are registered for, and what Switchboard adds for its chat API
# (`@auth.on(resources="users")`, `@auth.on(resources="collections")`; `@auth.on` covers them).
RESOURCE_ACTIONS: dict[str, tuple[str, ...]] = {
    "assistants": ("create", "read", "update", "delete", "search"),
    "threads": ("create", "read", "update", "delete", "search", "create_run"),
    "crons": ("create", "read", "update", "delete", "search"),
    "store": ("put", "get", "search", "delete", "list_namespaces"),
    "users": ("create", "read", "update", "delete", "search"),
    "collections": ("create", "read", "update", "search"),
}


class AuthError(Exception):
    """A request refused by authentication or authorization: its status, detail, headers."""

    def __init__(
        self, status: int, detail: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {detail}")


class AuthSetupError(Exception):
    """The auth object cannot be enforced (no authenticate function, a bad parameter...)."""


def _parameters(fn: Callable[..., Any]) -> frozenset[str]:
    wanted = set()
    for name, parameter in inspect.signature(fn).parameters.items():
        if name in AUTHENTICATE_PARAMETERS:
            wanted.add(name)
        elif parameter.default is inspect.Parameter.empty and parameter.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise AuthSetupError(
                f"@auth.authenticate function {getattr(fn, '__name__', fn)!r} asks for "
                f"{name!r}; it may ask for {', '.join(sorted(AUTHENTICATE_PARAMETERS))}"
            )
    return frozenset(wanted)


def _path_params(request: Request) -> dict[str, Any]:
    """The path parameters of the route the request will reach (resolved before routing)."""
    app = request.scope.get("app")
    router = getattr(app, "router", None)
    partial: dict[str, Any] | None = None
    for route in getattr(router, "routes", ()):
        try:
            # FastAPI's included routers say what matched through `_match` (their `matches`
            # keeps the path parameters to itself); every other route through `matches`.
            matcher = getattr(route, "_match", None)
            if callable(matcher):
                match, child, *_ = matcher(dict(request.scope))
            else:
                match, child = route.matches(request.scope)
        except Exception:  # a route that cannot judge this scope does not match it
            continue
        if match == Match.FULL:
            return dict(child.get("path_params", {}))
        if match == Match.PARTIAL and partial is None:  # the path, for another method
            partial = dict(child.get("path_params", {}))
    return partial or {}


def _arguments(request: Request, wanted: frozenset[str]) -> dict[str, Any]:
    scope = request.scope
    args: dict[str, Any] = {}
    if "request" in wanted:
        args["request"] = request
    if "scope" in wanted:
        args["scope"] = scope
    if "headers" in wanted:
        args["headers"] = dict(scope.get("headers", []))
    if "authorization" in wanted:
        args["authorization"] = request.headers.get("authorization")
    if "path" in wanted:
        args["path"] = scope["path"]
    if "method" in wanted:
        args["method"] = scope.get("method", "GET")
    if "path_params" in wanted:
        args["path_params"] = _path_params(request)
    if "query_params" in wanted:
        args["query_params"] = QueryParams(scope.get("query_string", b""))
    return args


class Authorizer:
    """Enforces one `langgraph_sdk.Auth` object: a user's auth.py, or the built-in one."""

    def __init__(self, auth: Auth, *, name: str) -> None:
        authenticate = auth._authenticate_handler
        if authenticate is None:
            raise AuthSetupError(
                f"{name} has no @auth.authenticate function: add one that returns the "
                "caller's identity"
            )
        self.auth = auth
        self.name = name
        self._wanted = _parameters(authenticate)
        self._authenticate: Callable[..., Awaitable[Any]]
        if inspect.iscoroutinefunction(authenticate):
            self._authenticate = authenticate
        else:

            async def in_thread(**kwargs: Any) -> Any:
                return await run_in_threadpool(authenticate, **kwargs)

            self._authenticate = in_thread
        self._handlers: dict[tuple[str, str], Callable[..., Awaitable[Any]] | None] = {}

    def uncovered(self) -> list[str]:
        """`resource.action` pairs no handler covers (requests to them are allowed, unfiltered:
        LangGraph's rule); empty when a global handler covers everything."""
        if self.auth._global_handlers or ("*", "*") in self.auth._handlers:
            return []
        return [
            f"{resource}.{action}"
            for resource, actions in RESOURCE_ACTIONS.items()
            for action in actions
            if self.handler(resource, action) is None
        ]

    async def authenticate(self, request: Request) -> AuthUser:
        """The caller of `request`.

        Raises:
            AuthError: the authenticator refused (its status and detail), or failed (401).
        """
        try:
            result = await self._authenticate(**_arguments(request, self._wanted))
        except Auth.exceptions.HTTPException as error:
            raise AuthError(error.status_code, str(error.detail), headers=error.headers) from None
        except AuthError:
            raise
        except Exception:
            log.exception("%s: the authenticate function failed", self.name)
            raise AuthError(401, "the request could not be authenticated") from None
        try:
            return to_user(result)
        except ValueError as error:
            log.error("%s: %s", self.name, error)
            raise AuthError(401, "the request could not be authenticated") from None

    def handler(self, resource: str, action: str) -> Callable[..., Awaitable[Any]] | None:
        """The most specific handler of `resource.action` (as LangGraph picks it), or None."""
        key = (resource, action)
        if key not in self._handlers:
            found: Callable[..., Awaitable[Any]] | None = None
            for candidate in (key, (resource, "*"), ("*", action), ("*", "*")):
                handlers = self.auth._handlers.get(candidate)
                if handlers:
                    found = handlers[-1]
                    break
            if found is None and self.auth._global_handlers:
                found = self.auth._global_handlers[-1]
            self._handlers[key] = found
        return self._handlers[key]

    async def authorize(
        self, user: AuthUser, resource: str, action: str, value: dict[str, Any]
    ) -> Filter | None:
        """Run the handler of `resource.action` for `user` on `value` (which it may change).

        Returns:
            The filter the handler returned (to apply in SQL), or None.

        Raises:
            AuthError: the handler denied (403, or its own status), or returned something that
                is not a filter (500; the handler's bug is logged).
        """
        handler = self.handler(resource, action)
        if handler is None:
            return None
        ctx = Auth.types.AuthContext(
            user=user,  # type: ignore[arg-type]
            permissions=user.permissions,
            resource=resource,  # type: ignore[arg-type]
            action=action,  # type: ignore[arg-type]
        )
        try:
            result = await handler(ctx=ctx, value=value)
        except Auth.exceptions.HTTPException as error:
            raise AuthError(error.status_code, str(error.detail), headers=error.headers) from None
        except AssertionError as error:
            raise AuthError(403, str(error) or "Forbidden") from None
        if result is None or result is True:
            return None
        if result is False:
            raise AuthError(403, f"not allowed to {action} {resource}")
        try:
            return check_filter(result)
        except FilterError as error:
            log.error("%s: the %s.%s handler returned %r: %s", self.name, resource, action,
                      result, error)  # fmt: skip
            raise AuthError(500, "the server's auth handler returned an invalid filter") from None
