"""`/conversations`: conversations between a user and an agent, and their messages."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from server.deps import DatabaseDep, Limit, Offset
from server.schemas.chat import (
    ConversationCreate,
    ConversationOut,
    ConversationUpdate,
    MessageCreate,
    MessageOut,
)
from server.schemas.common import NOT_FOUND, Page
from stores.sql import repositories as repo

router = APIRouter(prefix="/conversations", tags=["conversations"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
async def create_conversation(body: ConversationCreate, db: DatabaseDep) -> ConversationOut:
    """Start a conversation; an unknown `user_id` or `agent_id` → 404 naming the field."""
    row = await repo.create_conversation(db, repo.column_changes(body.model_dump()))
    return ConversationOut.model_validate(row)


@router.get("", responses=NOT_FOUND)
async def list_conversations(
    db: DatabaseDep,
    user_id: Annotated[uuid.UUID | None, Query(description="Only this user's.")] = None,
    agent_id: Annotated[uuid.UUID | None, Query(description="Only with this agent.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[ConversationOut]:
    """Conversations, most recently active first."""
    page = await repo.list_conversations(
        db, user_id=user_id, agent_id=agent_id, limit=limit, offset=offset
    )
    return Page[ConversationOut].model_validate(page)


@router.get("/{conversation_id}", responses=NOT_FOUND)
async def get_conversation(conversation_id: uuid.UUID, db: DatabaseDep) -> ConversationOut:
    """One conversation."""
    return ConversationOut.model_validate(await repo.conversations.get(db, conversation_id))


@router.patch("/{conversation_id}", responses=NOT_FOUND)
async def update_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, db: DatabaseDep
) -> ConversationOut:
    """Change a conversation's title or metadata."""
    changes = repo.column_changes(body.model_dump(exclude_unset=True))
    return ConversationOut.model_validate(
        await repo.conversations.update(db, conversation_id, changes)
    )


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_conversation(conversation_id: uuid.UUID, db: DatabaseDep) -> None:
    """Delete a conversation with all its messages."""
    await repo.conversations.delete(db, conversation_id)


@router.get("/{conversation_id}/messages", responses=NOT_FOUND)
async def list_messages(
    conversation_id: uuid.UUID,
    db: DatabaseDep,
    limit: Limit = 50,
    offset: Offset = 0,
    order: Annotated[Literal["asc", "desc"], Query(description="Oldest first (asc).")] = "asc",
) -> Page[MessageOut]:
    """A page of the conversation's transcript, in the order messages were written."""
    page = await repo.list_messages(db, conversation_id, limit=limit, offset=offset, order=order)
    return Page[MessageOut].model_validate(page)


@router.post(
    "/{conversation_id}/messages", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND
)
async def add_message(
    conversation_id: uuid.UUID, body: MessageCreate, db: DatabaseDep
) -> MessageOut:
    """Append a message to the transcript without running the agent (imports, system notes)."""
    row = await repo.add_message(db, conversation_id, repo.column_changes(body.model_dump()))
    return MessageOut.model_validate(row)
