"""`/conversations`: conversations between a user and an agent, and their messages."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status

from server.agent_api.threads import thread_access
from server.auth.caller import CallerDep
from server.deps import DatabaseDep, Limit, Offset
from server.routes.users import OWNER_KEYS, user_access
from server.schemas.chat import (
    ConversationCreate,
    ConversationOut,
    ConversationUpdate,
    MessageCreate,
    MessageOut,
)
from server.schemas.common import NOT_FOUND, Page
from stores.sql import repositories as repo
from stores.sql.assistants import or_system

router = APIRouter(prefix="/conversations", tags=["conversations"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
async def create_conversation(
    body: ConversationCreate, db: DatabaseDep, caller: CallerDep
) -> ConversationOut:
    """Start a conversation; an unknown `user_id` or `agent_id` → 404 naming the field."""
    values = repo.column_changes(body.model_dump())
    value: dict[str, Any] = {"thread_id": None, "metadata": values["metadata_"]}
    await caller.authorize("threads", "create", value)
    values["metadata_"] = value["metadata"]
    agent_access = await caller.authorize("assistants", "read", {"assistant_id": body.agent_id})
    row = await repo.create_conversation(
        db,
        values,
        user_access=await user_access(caller, "read", body.user_id),
        agent_access=or_system(agent_access),
    )
    return ConversationOut.model_validate(row)


@router.get("", responses=NOT_FOUND)
async def list_conversations(
    db: DatabaseDep,
    caller: CallerDep,
    user_id: Annotated[uuid.UUID | None, Query(description="Only this user's.")] = None,
    agent_id: Annotated[uuid.UUID | None, Query(description="Only with this agent.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[ConversationOut]:
    """Conversations, most recently active first."""
    page = await repo.list_conversations(
        db,
        user_id=user_id,
        agent_id=agent_id,
        limit=limit,
        offset=offset,
        access=await caller.authorize("threads", "search", {"limit": limit, "offset": offset}),
        user_access=await user_access(caller, "read", user_id) if user_id else None,
    )
    return Page[ConversationOut].model_validate(page)


@router.get("/{conversation_id}", responses=NOT_FOUND)
async def get_conversation(
    conversation_id: uuid.UUID, db: DatabaseDep, caller: CallerDep
) -> ConversationOut:
    """One conversation."""
    access = await thread_access(caller, "read", conversation_id)
    return ConversationOut.model_validate(
        await repo.conversations.get(db, conversation_id, access=access)
    )


@router.patch("/{conversation_id}", responses=NOT_FOUND)
async def update_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, db: DatabaseDep, caller: CallerDep
) -> ConversationOut:
    """Change a conversation's title or metadata."""
    changes = repo.column_changes(body.model_dump(exclude_unset=True))
    value: dict[str, Any] = {
        "thread_id": conversation_id,
        "metadata": dict(changes.get("metadata_") or {}),
    }
    access = await caller.authorize("threads", "update", value)
    if "metadata_" in changes and isinstance(value["metadata"], dict):
        changes["metadata_"] = value["metadata"]
    return ConversationOut.model_validate(
        await repo.conversations.update(
            db, conversation_id, changes, access=access, keep_metadata=OWNER_KEYS
        )
    )


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_conversation(
    conversation_id: uuid.UUID, db: DatabaseDep, caller: CallerDep
) -> None:
    """Delete a conversation with all its messages."""
    access = await thread_access(caller, "delete", conversation_id)
    await repo.conversations.delete(db, conversation_id, access=access)


@router.get("/{conversation_id}/messages", responses=NOT_FOUND)
async def list_messages(
    conversation_id: uuid.UUID,
    db: DatabaseDep,
    caller: CallerDep,
    limit: Limit = 50,
    offset: Offset = 0,
    order: Annotated[Literal["asc", "desc"], Query(description="Oldest first (asc).")] = "asc",
) -> Page[MessageOut]:
    """A page of the conversation's transcript, in the order messages were written."""
    page = await repo.list_messages(
        db,
        conversation_id,
        limit=limit,
        offset=offset,
        order=order,
        access=await thread_access(caller, "read", conversation_id),
    )
    return Page[MessageOut].model_validate(page)


@router.post(
    "/{conversation_id}/messages", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND
)
async def add_message(
    conversation_id: uuid.UUID, body: MessageCreate, db: DatabaseDep, caller: CallerDep
) -> MessageOut:
    """Append a message to the transcript without running the agent (imports, system notes)."""
    row = await repo.add_message(
        db,
        conversation_id,
        repo.column_changes(body.model_dump()),
        access=await thread_access(caller, "update", conversation_id),
    )
    return MessageOut.model_validate(row)
