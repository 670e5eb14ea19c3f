"""`/users/{id}/memories`: what the agents remember about a user — list, search, correct, forget."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from nodes.memory_extract import first_fact
from server.auth.caller import Caller, CallerDep
from server.deps import DatabaseDep, Limit, Offset, ResourcesDep
from server.routes.users import user_access
from server.schemas.common import NOT_FOUND, ErrorBody, Responses
from server.schemas.memory import ForgetResult, MemoryKey, MemoryOut, MemoryPage, MemoryPut
from stores.memory import operations as memories
from stores.sql import repositories as repo

router = APIRouter(prefix="/users/{user_id}/memories", tags=["memory"])

UNAVAILABLE: Responses = {
    503: {"model": ErrorBody, "description": "MongoDB or Qdrant cannot be reached."}
}
SearchQuery = Annotated[
    str | None,
    Query(alias="q", min_length=1, max_length=2000, description="Rank by meaning for this text."),
]


async def _namespace(
    caller: Caller, db: DatabaseDep, user_id: uuid.UUID, action: str, **value: Any
) -> tuple[str, ...]:
    """The store namespace of the user's memories the caller may `action` (`store.<action>`,
    which may rewrite it), once the user is one they may read (else 404)."""
    await repo.users.get(db, user_id, access=await user_access(caller, "read", user_id))
    namespace = (
        memories.user_memory_namespace(user_id)
        if action == "put"
        else memories.user_namespace(user_id)
    )
    asked: dict[str, Any] = {"namespace": namespace, **value}
    await caller.authorize("store", action, asked)
    return tuple(asked["namespace"])


@router.get("", responses={**NOT_FOUND, **UNAVAILABLE})
async def list_memories(
    user_id: uuid.UUID,
    db: DatabaseDep,
    resources: ResourcesDep,
    caller: CallerDep,
    q: SearchQuery = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> MemoryPage:
    """A user's memories, most recently updated first; with `q`, the closest in meaning first."""
    namespace = await _namespace(
        caller, db, user_id, "search", filter=None, limit=limit, offset=offset, query=q
    )
    page = await memories.list_user_memories(
        resources.memory, user_id, query=q, limit=limit, offset=offset, namespace=namespace
    )
    return MemoryPage(
        items=[MemoryOut.of(item) for item in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        query=page.query,
    )


@router.put("/{key}", responses={**NOT_FOUND, **UNAVAILABLE})
async def put_memory(
    user_id: uuid.UUID,
    key: MemoryKey,
    body: MemoryPut,
    db: DatabaseDep,
    resources: ResourcesDep,
    caller: CallerDep,
) -> MemoryOut:
    """Remember `value` for the user under `key`. A value with `text` is a fact told now: what
    the key held moves to its history, and it supersedes the current fact of the same exclusive
    attribute (a correction counts like a newer statement)."""
    namespace = await _namespace(caller, db, user_id, "put", key=key, value=body.value, index=None)
    item = await memories.remember_for_user(
        resources.memory,
        user_id,
        key,
        body.value,
        ttl=body.ttl_minutes,
        parse=first_fact,
        history_limit=resources.settings.memory_history_limit,
        namespace=namespace,
    )
    return MemoryOut.of(item)


@router.delete(
    "/{key}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND, **UNAVAILABLE}
)
async def forget_memory(
    user_id: uuid.UUID, key: MemoryKey, db: DatabaseDep, resources: ResourcesDep, caller: CallerDep
) -> None:
    """Forget the user's memory `key` (in every namespace of the user), with its vectors."""
    namespace = await _namespace(caller, db, user_id, "delete", key=key)
    await memories.forget_user_memory(resources.memory, user_id, key, namespace=namespace)


@router.delete("", responses={**NOT_FOUND, **UNAVAILABLE})
async def forget_everything(
    user_id: uuid.UUID, db: DatabaseDep, resources: ResourcesDep, caller: CallerDep
) -> ForgetResult:
    """Forget everything remembered about the user: every memory and every vector."""
    namespace = await _namespace(caller, db, user_id, "delete", key=None)
    deleted = await memories.forget_user(resources.memory, user_id, namespace=namespace)
    return ForgetResult(deleted=deleted)
