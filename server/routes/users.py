"""`/users`: create, read, list, update and delete users."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from server.deps import DatabaseDep, Limit, Offset, ResourcesDep
from server.schemas.chat import ConversationOut, UserCreate, UserOut, UserUpdate
from server.schemas.common import CONFLICT, NOT_FOUND, Page
from stores.memory.operations import forget_user
from stores.sql import repositories as repo

router = APIRouter(prefix="/users", tags=["users"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def create_user(body: UserCreate, db: DatabaseDep) -> UserOut:
    """Create a user; an email already in use → 409."""
    row = await repo.users.create(db, repo.column_changes(body.model_dump()))
    return UserOut.model_validate(row)


@router.get("")
async def list_users(db: DatabaseDep, limit: Limit = 50, offset: Offset = 0) -> Page[UserOut]:
    """Users, newest first."""
    page = await repo.users.list(db, limit=limit, offset=offset)
    return Page[UserOut].model_validate(page)


@router.get("/{user_id}", responses=NOT_FOUND)
async def get_user(user_id: uuid.UUID, db: DatabaseDep) -> UserOut:
    """One user."""
    return UserOut.model_validate(await repo.users.get(db, user_id))


@router.patch("/{user_id}", responses={**NOT_FOUND, **CONFLICT})
async def update_user(user_id: uuid.UUID, body: UserUpdate, db: DatabaseDep) -> UserOut:
    """Change a user's email, name or metadata."""
    changes = repo.column_changes(body.model_dump(exclude_unset=True))
    return UserOut.model_validate(await repo.users.update(db, user_id, changes))


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_user(user_id: uuid.UUID, resources: ResourcesDep) -> None:
    """Delete a user with their conversations, messages and long-term memories.

    Memories go first: if MongoDB is down the answer is 503 and nothing is deleted.
    """
    await repo.users.get(resources.database, user_id)
    await forget_user(resources.memory, user_id)
    await repo.users.delete(resources.database, user_id)


@router.get("/{user_id}/conversations", responses=NOT_FOUND)
async def list_user_conversations(
    user_id: uuid.UUID, db: DatabaseDep, limit: Limit = 50, offset: Offset = 0
) -> Page[ConversationOut]:
    """A user's conversations, most recently active first."""
    page = await repo.list_conversations(
        db, user_id=user_id, agent_id=None, limit=limit, offset=offset
    )
    return Page[ConversationOut].model_validate(page)
