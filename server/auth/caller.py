"""The one request-scoped way to know who is calling: `CallerDep` in a route, `caller_of(scope)`
elsewhere (MCP, A2A). The authentication middleware puts it in the request's state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.types import Scope

from server.auth.contract import AuthError, Authorizer
from server.auth.users import AuthUser, from_json, is_studio
from stores.sql.filters import Filter

ADMIN = "admin"
"""The permission of the built-in authenticator's admins (and of admins in an auth.py)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: their user (None while the server runs open, without auth) and the
    authorizer whose handlers decide what they may do."""

    user: AuthUser | None = None
    authorizer: Authorizer | None = None

    @property
    def identity(self) -> str | None:
        """The caller's identity (None when the server is open)."""
        return self.user.identity if self.user is not None else None

    @property
    def permissions(self) -> list[str]:
        """The caller's permissions."""
        return self.user.permissions if self.user is not None else []

    @property
    def is_admin(self) -> bool:
        """An admin (permission `admin`), or anyone on an open server."""
        return self.user is None or ADMIN in self.user.permissions or is_studio(self.user)

    async def authorize(self, resource: str, action: str, value: dict[str, Any]) -> Filter | None:
        """Ask the auth handler of `resource.action` about `value` (which it may change in
        place); the filter to apply in SQL, or None. Open servers allow everything.

        Raises:
            AuthError: denied (403, or the handler's status).
        """
        if self.authorizer is None or self.user is None:
            return None
        return await self.authorizer.authorize(self.user, resource, action, value)

    def run_auth(self, *, collections: Sequence[str] | None = None) -> dict[str, Any] | None:
        """What a run keeps of its creator, to execute as them: the user (JSON), and the
        knowledge collections they may read (None: no restriction)."""
        if self.user is None:
            return None
        return {
            "user": self.user.to_json(),
            "collections": list(collections) if collections is not None else None,
        }

    @classmethod
    def of_run(cls, auth: Mapping[str, Any] | None, authorizer: Authorizer | None) -> Caller:
        """The creator of a run (or cron) from what it kept (`run_auth`)."""
        if not auth or not isinstance(auth.get("user"), Mapping):
            return OPEN
        return cls(user=from_json(auth["user"]), authorizer=authorizer)


OPEN = Caller()
"""The caller of an open server (no auth configured): allowed everything, no identity."""


def caller_of(scope: Scope) -> Caller:
    """The caller the authentication middleware found for this request.

    Raises:
        AuthError: 401 when no caller was found (a route the middleware let through without
            authentication has no caller to ask for).
    """
    state = scope.get("state")
    caller = state.get("caller") if isinstance(state, Mapping) else None
    if not isinstance(caller, Caller):
        raise AuthError(401, "this request was not authenticated")
    return caller


def get_caller(request: Request) -> Caller:
    """The caller of the request."""
    return caller_of(request.scope)


async def _caller_dependency(request: Request) -> Caller:
    # async: FastAPI would run a plain `def` dependency in a worker thread.
    return caller_of(request.scope)


CallerDep = Annotated[Caller, Depends(_caller_dependency)]
