"""Helpers of routes that apply ownership: 403 for what the caller may read but not change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.auth.caller import Caller
from server.auth.contract import AuthError
from stores.errors import NotFoundError
from stores.sql.filters import Filter


async def refuse_if_readable(
    caller: Caller,
    resource: str,
    value: dict[str, Any],
    read: Callable[[Filter | None], Awaitable[Any]],
    *,
    what: str,
) -> None:
    """After a change found nothing the caller may change: if they may read it (a system
    assistant, a shared collection), refuse with 403; else let the 404 stand.

    Raises:
        AuthError: 403 when `read(read_filter)` finds it.
    """
    if caller.authorizer is None:
        return
    access = await caller.authorize(resource, "read", dict(value))
    try:
        await read(access)
    except NotFoundError:
        return
    raise AuthError(403, f"{what} can be read by you but changed only by its owner or an admin")


def store_search_filter(
    requested: dict[str, Any] | None, granted: Filter | None
) -> tuple[dict[str, Any] | None, bool]:
    """The store search filter of a request with the auth handler's filter added (both must
    hold, as LangGraph's server combines them); False when no item can satisfy both.

    Raises:
        AuthError: 500 when the handler's filter uses what store filters cannot (`$contains`,
            `$or`, `$and`): store items are filtered by equality.
    """
    if not granted:
        return requested, True
    merged = dict(requested or {})
    for key, want in granted.items():
        if key.startswith("$") or (isinstance(want, dict) and "$eq" not in want):
            raise AuthError(500, "the server's store auth filter may only test equality")
        wanted = want["$eq"] if isinstance(want, dict) else want
        if key in merged and merged[key] != wanted:
            return merged, False
        merged[key] = wanted
    return merged, True
