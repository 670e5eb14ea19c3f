"""LangGraph's custom-auth contract as Switchboard enforces it: the authenticate function gets the
parameters it asks for, the most specific handler of a resource and action decides, and what a
handler returns allows, denies, changes the value or filters."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph_sdk import Auth
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from server.auth.contract import AuthError, Authorizer, AuthSetupError
from server.auth.users import AuthUser, to_user

ALICE = AuthUser({"identity": "alice", "permissions": ["reader"]})


def _request(path: str = "/threads/t-1", query: bytes = b"limit=2") -> Request:
    app = Starlette(routes=[Route("/threads/{thread_id}", lambda r: PlainTextResponse("x"))])
    scope = {
        "type": "http",
        "method": "PATCH",
        "path": path,
        "query_string": query,
        "headers": [(b"authorization", b"Bearer tok"), (b"x-team", b"red")],
        "app": app,
    }
    return Request(scope)


def _authorizer(auth: Auth) -> Authorizer:
    if auth._authenticate_handler is None:

        @auth.authenticate
        async def anyone() -> str:
            return "alice"

    return Authorizer(auth, name="test auth")


async def test_authenticate_gets_the_parameters_it_asks_for() -> None:
    auth = Auth()
    seen: dict[str, Any] = {}

    @auth.authenticate
    async def who(
        authorization: str | None,
        path: str,
        method: str,
        path_params: dict[str, str],
        query_params: Any,
        headers: dict[bytes, bytes],
        request: Request,
    ) -> Auth.types.MinimalUserDict:
        seen.update(
            authorization=authorization,
            path=path,
            method=method,
            path_params=path_params,
            limit=query_params["limit"],
            team=headers[b"x-team"],
            request=request.url.path,
        )
        return {"identity": "alice", "permissions": ["reader"], "display_name": "Alice"}

    user = await Authorizer(auth, name="t").authenticate(_request())
    assert (user.identity, user.permissions, user.display_name) == ("alice", ["reader"], "Alice")
    assert seen == {
        "authorization": "Bearer tok",
        "path": "/threads/t-1",
        "method": "PATCH",
        "path_params": {"thread_id": "t-1"},
        "limit": "2",
        "team": b"red",
        "request": "/threads/t-1",
    }


async def test_authenticate_may_be_sync_return_a_string_or_refuse() -> None:
    auth = Auth()

    @auth.authenticate  # type: ignore[type-var]
    def who(authorization: str | None) -> str:
        if authorization != "Bearer tok":
            raise Auth.exceptions.HTTPException(status_code=403, detail="no entry")
        return "bob"

    authorizer = Authorizer(auth, name="t")
    assert (await authorizer.authenticate(_request())).identity == "bob"
    refusing = Auth()

    @refusing.authenticate
    async def never() -> str:
        raise Auth.exceptions.HTTPException(status_code=403, detail="no entry")

    with pytest.raises(AuthError) as refused:
        await Authorizer(refusing, name="t").authenticate(_request())
    assert (refused.value.status, refused.value.detail) == (403, "no entry")
    broken = Auth()

    @broken.authenticate
    async def crash() -> str:
        raise RuntimeError("the token service is down: secret-internal-detail")

    with pytest.raises(AuthError) as failed:
        await Authorizer(broken, name="t").authenticate(_request())
    assert failed.value.status == 401
    assert "secret-internal-detail" not in failed.value.detail


def test_an_auth_object_that_cannot_be_enforced_stops_startup() -> None:
    with pytest.raises(AuthSetupError, match=r"no @auth\.authenticate"):
        Authorizer(Auth(), name="auth.path")
    auth = Auth()

    @auth.authenticate
    async def who(token: str) -> str:
        return token

    with pytest.raises(AuthSetupError, match="asks for 'token'"):
        Authorizer(auth, name="auth.path")


async def test_the_most_specific_handler_decides() -> None:
    auth = Auth()
    calls: list[str] = []

    @auth.on
    async def everything(ctx: Auth.types.AuthContext, value: Any) -> bool:
        calls.append("global")
        return False

    @auth.on(actions="create")
    async def any_create(ctx: Auth.types.AuthContext, value: Any) -> None:
        calls.append("*.create")

    @auth.on.threads
    async def threads(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        calls.append("threads.*")
        return {"owner": ctx.user.identity}

    @auth.on.threads.create
    async def thread_create(ctx: Auth.types.AuthContext, value: Any) -> None:
        calls.append(f"threads.create by {ctx.user.identity} with {ctx.permissions}")
        value["metadata"]["owner"] = ctx.user.identity

    authorizer = _authorizer(auth)
    value: dict[str, Any] = {"metadata": {}}
    assert await authorizer.authorize(ALICE, "threads", "create", value) is None
    assert value["metadata"] == {"owner": "alice"}  # changed in place, for the route to use
    assert await authorizer.authorize(ALICE, "threads", "read", {}) == {"owner": "alice"}
    assert await authorizer.authorize(ALICE, "assistants", "create", {}) is None
    with pytest.raises(AuthError) as denied:
        await authorizer.authorize(ALICE, "store", "get", {})
    assert denied.value.status == 403
    assert calls == [
        "threads.create by alice with ['reader']",
        "threads.*",
        "*.create",
        "global",
    ]
    assert authorizer.uncovered() == []


async def test_what_a_handler_returns_allows_denies_or_filters() -> None:
    auth = Auth()
    answers: dict[str, Any] = {
        "read": True,
        "update": {"owner": {"$eq": "alice"}, "$or": [{"a": 1}, {"b": 2}]},
        "delete": {"owner": {"$gt": 1}},
        "search": ["not", "a", "filter"],
    }

    @auth.on.threads
    async def decide(ctx: Auth.types.AuthContext, value: Any) -> Any:
        if ctx.action == "create":
            assert value.get("metadata"), "metadata is required"
        if ctx.action == "create_run":
            raise Auth.exceptions.HTTPException(status_code=429, detail="slow down")
        return answers.get(ctx.action)

    authorizer = _authorizer(auth)
    assert await authorizer.authorize(ALICE, "threads", "read", {}) is None
    assert await authorizer.authorize(ALICE, "threads", "update", {}) == answers["update"]
    for action, status in (("delete", 500), ("search", 500), ("create", 403), ("create_run", 429)):
        with pytest.raises(AuthError) as refused:
            await authorizer.authorize(ALICE, "threads", action, {})
        assert refused.value.status == status, action
    with pytest.raises(AuthError, match="metadata is required"):
        await authorizer.authorize(ALICE, "threads", "create", {})
    assert "threads.read" not in authorizer.uncovered()
    assert "store.put" in authorizer.uncovered()  # no handler: allowed, unfiltered, warned


def test_users_come_back_from_every_shape_an_authenticator_returns() -> None:
    class Account:
        identity = "carol"
        permissions = ("admin",)
        display_name = "Carol"

    assert to_user("dave").identity == "dave"
    assert to_user(Account()).permissions == ["admin"]
    assert to_user((["x"], {"identity": "erin"})).permissions == ["x"]
    user = to_user({"identity": "fay", "email": "f@example.com"})
    assert (user["email"], user.email, user.is_authenticated) == (
        "f@example.com",
        "f@example.com",
        True,
    )
    with pytest.raises(ValueError, match="identity"):
        to_user({"name": "nobody"})
    with pytest.raises(ValueError, match="at most 200"):
        to_user("x" * 201)
