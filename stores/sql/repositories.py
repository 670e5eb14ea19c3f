"""Repositories: one transaction per operation on the SQL data model, errors named by field."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import ConflictError, NotFoundError
from stores.sql.assistants import next_version, record_version
from stores.sql.database import Database
from stores.sql.models import Agent, Base, Conversation, Message, User

ModelT = TypeVar("ModelT", bound=Base)

# Unique constraints → the request field a client should change.
_UNIQUE_FIELDS = {"uq_users_email": "email", "uq_documents_collection_source": "source"}


def column_changes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Map API field names to model attributes (`metadata` is `metadata_` on every model)."""
    return {("metadata_" if name == "metadata" else name): value for name, value in values.items()}


@dataclass(frozen=True, slots=True)
class Page(Generic[ModelT]):
    """One page of a listing and the total number of rows that match."""

    items: Sequence[ModelT]
    total: int
    limit: int
    offset: int


def _conflict_from(error: IntegrityError) -> ConflictError:
    diag = getattr(error.orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or ""
    field = _UNIQUE_FIELDS.get(constraint)
    if field is not None:
        return ConflictError(f"a record with this {field} already exists", field=field)
    return ConflictError(f"the write conflicts with existing data ({constraint or 'constraint'})")


async def _page(session: AsyncSession, stmt: Select[Any], *, limit: int, offset: int) -> Page[Any]:
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.scalars(stmt.limit(limit).offset(offset))).all()
    return Page(items=rows, total=total or 0, limit=limit, offset=offset)


class Repository(Generic[ModelT]):
    """Create, get, list, update and delete rows of one model keyed by a UUID `id`."""

    def __init__(self, model: type[ModelT], entity: str) -> None:
        self.model = model
        self.entity = entity

    async def _get(
        self, session: AsyncSession, key: uuid.UUID, *, field: str | None = None
    ) -> ModelT:
        row = await session.get(self.model, key)
        if row is None:
            raise NotFoundError(self.entity, key, field=field)
        return row

    async def create(self, db: Database, values: Mapping[str, Any]) -> ModelT:
        """Insert one row; a unique violation raises `ConflictError` naming the field."""
        try:
            async with db.sessions.begin() as session:
                row = self.model(**values)
                session.add(row)
                await session.flush()
                if isinstance(row, Agent):  # assistants keep a row per version
                    await record_version(session, row)
                return row
        except IntegrityError as error:
            raise _conflict_from(error) from error

    async def get(self, db: Database, key: uuid.UUID) -> ModelT:
        """The row with id `key`, or `NotFoundError`."""
        async with db.sessions() as session:
            return await self._get(session, key)

    async def list(
        self,
        db: Database,
        *,
        limit: int,
        offset: int,
        filters: Mapping[str, Any] | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> Page[ModelT]:
        """A page of rows matching the equality `filters`, newest first unless `order="asc"`."""
        created = self.model.__table__.c.created_at  # type: ignore[attr-defined]
        ident = self.model.__table__.c.id  # type: ignore[attr-defined]
        stmt = select(self.model).order_by(
            *((created.desc(), ident.desc()) if order == "desc" else (created.asc(), ident.asc()))
        )
        for column, value in (filters or {}).items():
            stmt = stmt.where(self.model.__table__.c[column] == value)  # type: ignore[attr-defined]
        async with db.sessions() as session:
            return await _page(session, stmt, limit=limit, offset=offset)

    async def update(
        self,
        db: Database,
        key: uuid.UUID,
        changes: Mapping[str, Any],
        *,
        bump_version: bool = False,
    ) -> ModelT:
        """Apply `changes` to the row with id `key`; `bump_version` increments its `version`."""
        try:
            async with db.sessions.begin() as session:
                row = await self._get(session, key)
                for name, value in changes.items():
                    setattr(row, name, value)
                if bump_version and isinstance(row, Agent):
                    row.version = await next_version(session, row.id)
                elif bump_version:
                    row.version = row.version + 1  # type: ignore[attr-defined]
                await session.flush()
                if isinstance(row, Agent):  # assistants keep a row per version
                    await record_version(session, row)
                return row
        except IntegrityError as error:
            raise _conflict_from(error) from error

    async def delete(self, db: Database, key: uuid.UUID) -> None:
        """Delete the row with id `key` (and, by foreign keys, what hangs off it)."""
        async with db.sessions.begin() as session:
            row = await self._get(session, key)
            await session.delete(row)


users = Repository(User, "user")
agents = Repository(Agent, "agent")
conversations = Repository(Conversation, "conversation")
messages = Repository(Message, "message")


async def create_conversation(db: Database, values: Mapping[str, Any]) -> Conversation:
    """Start a conversation; its user and agent must exist (`NotFoundError` names the field)."""
    async with db.sessions.begin() as session:
        # Lock the parents so a concurrent delete cannot slip between the check and the insert.
        user_id = values["user_id"]
        agent_id = values["agent_id"]
        if await session.get(User, user_id, with_for_update={"key_share": True}) is None:
            raise NotFoundError("user", user_id, field="user_id")
        if await session.get(Agent, agent_id, with_for_update={"key_share": True}) is None:
            raise NotFoundError("agent", agent_id, field="agent_id")
        row = Conversation(**values)
        session.add(row)
        await session.flush()
        return row


async def list_conversations(
    db: Database,
    *,
    user_id: uuid.UUID | None,
    agent_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> Page[Conversation]:
    """Conversations, most recently active first, optionally of one user and/or one agent."""
    stmt = select(Conversation).order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    if user_id is not None:
        stmt = stmt.where(Conversation.user_id == user_id)
    if agent_id is not None:
        stmt = stmt.where(Conversation.agent_id == agent_id)
    async with db.sessions() as session:
        if user_id is not None and await session.get(User, user_id) is None:
            raise NotFoundError("user", user_id, field="user_id")
        return await _page(session, stmt, limit=limit, offset=offset)


async def add_message(
    db: Database, conversation_id: uuid.UUID, values: Mapping[str, Any]
) -> Message:
    """Append a message to a conversation and mark the conversation as just active."""
    async with db.sessions.begin() as session:
        conversation = await session.get(
            Conversation, conversation_id, with_for_update={"key_share": True}
        )
        if conversation is None:
            raise NotFoundError("conversation", conversation_id)
        row = Message(conversation_id=conversation_id, **values)
        session.add(row)
        conversation.updated_at = func.now()
        await session.flush()
        return row


async def list_messages(
    db: Database,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
    order: Literal["asc", "desc"] = "asc",
) -> Page[Message]:
    """A page of a conversation's messages in the order they were written."""
    stmt = (
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.seq.asc() if order == "asc" else Message.seq.desc())
    )
    async with db.sessions() as session:
        if await session.get(Conversation, conversation_id) is None:
            raise NotFoundError("conversation", conversation_id)
        return await _page(session, stmt, limit=limit, offset=offset)
