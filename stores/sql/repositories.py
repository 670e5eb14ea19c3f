"""Repositories: one transaction per operation on the SQL data model, errors named by field."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import Select, String, cast, func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from stores.errors import ConflictError, NotFoundError
from stores.sql.assistants import next_version, record_version
from stores.sql.database import Database
from stores.sql.filters import Filter, filter_clause, visible_row
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


def user_document() -> ColumnElement[Any]:
    """What auth filters test of a user: their metadata, with `owner` always their own id (a
    user row belongs to the identity that is its id)."""
    owner = func.jsonb_build_object("owner", cast(User.id, String))
    return type_coerce(User.metadata_.op("||")(owner), JSONB)


class Repository(Generic[ModelT]):
    """Create, get, list, update and delete rows of one model keyed by a UUID `id`; reads and
    writes take an auth filter (`access`) tested in SQL on the row's metadata."""

    def __init__(
        self,
        model: type[ModelT],
        entity: str,
        *,
        document: Callable[[], ColumnElement[Any]] | None = None,
    ) -> None:
        self.model = model
        self.entity = entity
        self._document = document or (lambda: self.model.__table__.c.metadata)  # type: ignore[attr-defined]

    def visible(self, access: Filter | None) -> ColumnElement[bool]:
        """The condition under which a row satisfies `access`."""
        return filter_clause(self._document(), access)

    async def _get(
        self,
        session: AsyncSession,
        key: uuid.UUID,
        *,
        field: str | None = None,
        access: Filter | None = None,
        for_update: bool = False,
    ) -> ModelT:
        row = await visible_row(
            session, self.model, key, self.visible(access), for_update=for_update
        )
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

    async def get(
        self,
        db: Database,
        key: uuid.UUID,
        *,
        access: Filter | None = None,
        field: str | None = None,
    ) -> ModelT:
        """The row with id `key` if it satisfies `access`, or `NotFoundError`."""
        async with db.sessions() as session:
            return await self._get(session, key, access=access, field=field)

    async def list(
        self,
        db: Database,
        *,
        limit: int,
        offset: int,
        filters: Mapping[str, Any] | None = None,
        order: Literal["asc", "desc"] = "desc",
        access: Filter | None = None,
    ) -> Page[ModelT]:
        """A page of rows matching the equality `filters` (and `access`), newest first unless
        `order="asc"`."""
        created = self.model.__table__.c.created_at  # type: ignore[attr-defined]
        ident = self.model.__table__.c.id  # type: ignore[attr-defined]
        stmt = (
            select(self.model)
            .where(self.visible(access))
            .order_by(
                *(
                    (created.desc(), ident.desc())
                    if order == "desc"
                    else (created.asc(), ident.asc())
                )
            )
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
        access: Filter | None = None,
        keep_metadata: Sequence[str] = (),
    ) -> ModelT:
        """Apply `changes` to the row with id `key` (if it satisfies `access`); `bump_version`
        increments its `version`; new `metadata` keeps the old values of `keep_metadata` keys
        it does not set (the owner a row was stamped with)."""
        try:
            async with db.sessions.begin() as session:
                row = await self._get(session, key, access=access, for_update=True)
                if "metadata_" in changes and keep_metadata:
                    old = getattr(row, "metadata_", None) or {}
                    kept = {k: old[k] for k in keep_metadata if k in old}
                    changes = {**changes, "metadata_": {**kept, **changes["metadata_"]}}
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

    async def delete(self, db: Database, key: uuid.UUID, *, access: Filter | None = None) -> None:
        """Delete the row with id `key` if it satisfies `access` (and, by foreign keys, what
        hangs off it)."""
        async with db.sessions.begin() as session:
            row = await self._get(session, key, access=access, for_update=True)
            await session.delete(row)


users = Repository(User, "user", document=user_document)
agents = Repository(Agent, "agent")
conversations = Repository(Conversation, "conversation")
messages = Repository(Message, "message")


async def create_conversation(
    db: Database,
    values: Mapping[str, Any],
    *,
    user_access: Filter | None = None,
    agent_access: Filter | None = None,
) -> Conversation:
    """Start a conversation; its user and agent must exist and satisfy `user_access` and
    `agent_access` (`NotFoundError` names the field)."""
    async with db.sessions.begin() as session:
        # Lock the parents so a concurrent delete cannot slip between the check and the insert.
        user_id = values["user_id"]
        agent_id = values["agent_id"]
        user = await session.scalar(
            select(User.id)
            .where(User.id == user_id, users.visible(user_access))
            .with_for_update(key_share=True)
        )
        if user is None:
            raise NotFoundError("user", user_id, field="user_id")
        agent = await session.scalar(
            select(Agent.id)
            .where(Agent.id == agent_id, agents.visible(agent_access))
            .with_for_update(key_share=True)
        )
        if agent is None:
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
    access: Filter | None = None,
    user_access: Filter | None = None,
) -> Page[Conversation]:
    """Conversations (satisfying `access`), most recently active first, optionally of one user
    (who must satisfy `user_access`) and/or one agent."""
    stmt = (
        select(Conversation)
        .where(conversations.visible(access))
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    )
    if user_id is not None:
        stmt = stmt.where(Conversation.user_id == user_id)
    if agent_id is not None:
        stmt = stmt.where(Conversation.agent_id == agent_id)
    async with db.sessions() as session:
        if user_id is not None:
            await users._get(session, user_id, field="user_id", access=user_access)
        return await _page(session, stmt, limit=limit, offset=offset)


async def add_message(
    db: Database,
    conversation_id: uuid.UUID,
    values: Mapping[str, Any],
    *,
    access: Filter | None = None,
) -> Message:
    """Append a message to a conversation (that satisfies `access`) and mark the conversation
    as just active."""
    async with db.sessions.begin() as session:
        conversation = await session.scalar(
            select(Conversation)
            .where(Conversation.id == conversation_id, conversations.visible(access))
            .with_for_update(key_share=True)
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
    access: Filter | None = None,
) -> Page[Message]:
    """A page of a conversation's messages (it must satisfy `access`) in write order."""
    stmt = (
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.seq.asc() if order == "asc" else Message.seq.desc())
    )
    async with db.sessions() as session:
        await conversations._get(session, conversation_id, access=access)
        return await _page(session, stmt, limit=limit, offset=offset)
