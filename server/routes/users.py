"""`/users`: create, read, list, update and delete users."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, status

from server.auth.caller import Caller, CallerDep
from server.deps import DatabaseDep, Limit, Offset, ResourcesDep
from server.schemas.chat import ConversationOut, UserCreate, UserOut, UserUpdate
from server.schemas.common import CONFLICT, NOT_FOUND, Page
from stores.memory.operations import forget_user
from stores.sql import repositories as repo
from stores.sql.filters import Filter

router = APIRouter(prefix="/users", tags=["users"])

OWNER_KEYS = ("owner",)
"""Metadata keys a replacing PATCH keeps unless it sets them (who a row belongs to)."""


async def user_access(caller: Caller, action: str, user_id: uuid.UUID | None) -> Filter | None:
    """The filter under which the caller may `action` users (`users.<action>`; with the
    built-in authenticator, a user is only themselves)."""
    return await caller.authorize("users", action, {"user_id": user_id})


@router.post("", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def create_user(body: UserCreate, db: DatabaseDep, caller: CallerDep) -> UserOut:
    """Create a user; an email already in use → 409."""
    value: dict[str, Any] = body.model_dump()
    await caller.authorize("users", "create", value)
    row = await repo.users.create(db, repo.column_changes(value))
    return UserOut.model_validate(row)


@router.get("")
async def list_users(
    db: DatabaseDep, caller: CallerDep, limit: Limit = 50, offset: Offset = 0
) -> Page[UserOut]:
    """Users, newest first (the ones the caller may see)."""
    access = await caller.authorize("users", "search", {"limit": limit, "offset": offset})
    page = await repo.users.list(db, limit=limit, offset=offset, access=access)
    return Page[UserOut].model_validate(page)


@router.get("/{user_id}", responses=NOT_FOUND)
async def get_user(user_id: uuid.UUID, db: DatabaseDep, caller: CallerDep) -> UserOut:
    """One user."""
    access = await user_access(caller, "read", user_id)
    return UserOut.model_validate(await repo.users.get(db, user_id, access=access))


@router.patch("/{user_id}", responses={**NOT_FOUND, **CONFLICT})
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, db: DatabaseDep, caller: CallerDep
) -> UserOut:
    """Change a user's email, name or metadata."""
    value: dict[str, Any] = {"user_id": user_id, **body.model_dump(exclude_unset=True)}
    access = await caller.authorize("users", "update", value)
    value.pop("user_id", None)
    changes = repo.column_changes(value)
    row = await repo.users.update(db, user_id, changes, access=access, keep_metadata=OWNER_KEYS)
    return UserOut.model_validate(row)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_user(user_id: uuid.UUID, resources: ResourcesDep, caller: CallerDep) -> None:
    """Delete a user with their conversations, messages, long-term memories and API keys.

    Memories go first: if MongoDB is down the answer is 503 and nothing is deleted.
    """
    access = await user_access(caller, "delete", user_id)
    await repo.users.get(resources.database, user_id, access=access)
    await forget_user(resources.memory, user_id)
    await repo.users.delete(resources.database, user_id, access=access)


@router.get("/{user_id}/conversations", responses=NOT_FOUND)
async def list_user_conversations(
    user_id: uuid.UUID,
    db: DatabaseDep,
    caller: CallerDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[ConversationOut]:
    """A user's conversations, most recently active first."""
    page = await repo.list_conversations(
        db,
        user_id=user_id,
        agent_id=None,
        limit=limit,
        offset=offset,
        access=await caller.authorize("threads", "search", {"limit": limit, "offset": offset}),
        user_access=await user_access(caller, "read", user_id),
    )
    return Page[ConversationOut].model_validate(page)
