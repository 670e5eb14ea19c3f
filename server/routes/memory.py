"""`/users/{id}/memories`: what the agents remember about a user — list, search, correct, forget."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from nodes.memory_extract import first_fact
from server.deps import DatabaseDep, Limit, Offset, ResourcesDep
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


@router.get("", responses={**NOT_FOUND, **UNAVAILABLE})
async def list_memories(
    user_id: uuid.UUID,
    db: DatabaseDep,
    resources: ResourcesDep,
    q: SearchQuery = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> MemoryPage:
    """A user's memories, most recently updated first; with `q`, the closest in meaning first."""
    await repo.users.get(db, user_id)
    page = await memories.list_user_memories(
        resources.memory, user_id, query=q, limit=limit, offset=offset
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
    user_id: uuid.UUID, key: MemoryKey, body: MemoryPut, db: DatabaseDep, resources: ResourcesDep
) -> MemoryOut:
    """Remember `value` for the user under `key`. A value with `text` is a fact told now: what
    the key held moves to its history, and it supersedes the current fact of the same exclusive
    attribute (a correction counts like a newer statement)."""
    await repo.users.get(db, user_id)
    item = await memories.remember_for_user(
        resources.memory,
        user_id,
        key,
        body.value,
        ttl=body.ttl_minutes,
        parse=first_fact,
        history_limit=resources.settings.memory_history_limit,
    )
    return MemoryOut.of(item)


@router.delete(
    "/{key}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND, **UNAVAILABLE}
)
async def forget_memory(
    user_id: uuid.UUID, key: MemoryKey, db: DatabaseDep, resources: ResourcesDep
) -> None:
    """Forget the user's memory `key` (in every namespace of the user), with its vectors."""
    await repo.users.get(db, user_id)
    await memories.forget_user_memory(resources.memory, user_id, key)


@router.delete("", responses={**NOT_FOUND, **UNAVAILABLE})
async def forget_everything(
    user_id: uuid.UUID, db: DatabaseDep, resources: ResourcesDep
) -> ForgetResult:
    """Forget everything remembered about the user: every memory and every vector."""
    await repo.users.get(db, user_id)
    return ForgetResult(deleted=await memories.forget_user(resources.memory, user_id))
