"""SQLAlchemy 2 typed models of the PostgreSQL data model (users, agents, conversations, ...)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MESSAGE_SENDERS = ("user", "agent", "tool", "system")
CONVERSATION_STATUSES = ("idle", "busy", "interrupted", "error")
RUN_STATUSES = ("pending", "running", "success", "error", "timeout", "interrupted")
MULTITASK_STRATEGIES = ("reject", "interrupt", "rollback", "enqueue")
TTL_STRATEGIES = ("delete", "keep_latest")


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations name constraints predictably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB, uuid.UUID: UUID(as_uuid=True)}
    # Fetch server-side defaults (ids, timestamps) with RETURNING instead of a second query.
    __mapper_args__ = {"eager_defaults": True}


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def _jsonb_object() -> Mapped[dict[str, Any]]:
    return mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


def _metadata() -> Mapped[dict[str, Any]]:
    return mapped_column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb"))


def _jsonb_array() -> Mapped[list[Any]]:
    return mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))


class User(Base):
    """A person who talks to agents; owns conversations and (in MongoDB) memories."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _uuid_pk()
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    metadata_: Mapped[dict[str, Any]] = _metadata()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    conversations: Mapped[list[Conversation]] = relationship(
        back_populates="user", passive_deletes=True
    )

    __table_args__ = (UniqueConstraint("email"), Index(None, "created_at", "id"))


class Agent(Base):
    """An agent (= a LangGraph assistant): a graph plus the configuration that makes it distinct."""

    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = _uuid_pk()
    graph_id: Mapped[str] = mapped_column(String(100), nullable=False, server_default="chat")
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    system_prompt: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    model: Mapped[dict[str, Any]] = _jsonb_object()
    tools: Mapped[list[Any]] = _jsonb_array()
    collections: Mapped[list[Any]] = _jsonb_array()
    config: Mapped[dict[str, Any]] = _jsonb_object()
    context: Mapped[dict[str, Any]] = _jsonb_object()
    metadata_: Mapped[dict[str, Any]] = _metadata()
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        Index(None, "graph_id"),
        Index(None, "created_at", "id"),
        Index(
            "ix_agents_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
    )


class AgentVersion(Base):
    """A snapshot of an agent (assistant) at one version, kept for the versions API."""

    __tablename__ = "agent_versions"

    agent_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    graph_id: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    config: Mapped[dict[str, Any]] = _jsonb_object()
    context: Mapped[dict[str, Any]] = _jsonb_object()
    metadata_: Mapped[dict[str, Any]] = _metadata()
    created_at: Mapped[datetime] = _created_at()


class Conversation(Base):
    """A conversation (= a LangGraph thread) between a user and an agent."""

    __tablename__ = "conversations"

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), nullable=True
    )
    title: Mapped[str] = mapped_column(String(300), nullable=False, server_default="")
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="idle")
    metadata_: Mapped[dict[str, Any]] = _metadata()
    # The thread's latest state values and pending interrupts, cached for thread search/get.
    values_: Mapped[dict[str, Any]] = mapped_column(
        "values", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    interrupts: Mapped[dict[str, Any]] = _jsonb_object()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    # Thread TTL: the thread expires `ttl_minutes` after its last update; the sweep then
    # deletes it (`delete`) or prunes it to its latest checkpoint (`keep_latest`, noted in
    # `ttl_swept_at` so an idle thread is pruned once).
    ttl_minutes: Mapped[float | None] = mapped_column(Float, nullable=True)
    ttl_strategy: Mapped[str | None] = mapped_column(String(20), nullable=True)
    ttl_swept_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    user: Mapped[User | None] = relationship(back_populates="conversations")

    __table_args__ = (
        CheckConstraint(f"status IN ({_quoted(CONVERSATION_STATUSES)})", name="status"),
        CheckConstraint(
            f"ttl_strategy IS NULL OR ttl_strategy IN ({_quoted(TTL_STRATEGIES)})",
            name="ttl_strategy",
        ),
        Index(None, "user_id", "updated_at"),
        Index(None, "agent_id"),
        Index(None, "updated_at", "id"),
        Index(
            "ix_conversations_ttl_updated_at",
            "updated_at",
            postgresql_where=text("ttl_minutes IS NOT NULL"),
        ),
        Index(
            "ix_conversations_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
    )


class Message(Base):
    """One message of a conversation: the seed's audit trail of every turn and tool call."""

    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = _uuid_pk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    sender: Mapped[str] = mapped_column(Text, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    metadata_: Mapped[dict[str, Any]] = _metadata()
    created_at: Mapped[datetime] = _created_at()
    # Strict write order: several messages of one turn share a transaction, hence a created_at.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), nullable=False)

    __table_args__ = (
        CheckConstraint(f"sender IN ({_quoted(MESSAGE_SENDERS)})", name="sender"),
        Index(None, "conversation_id", "seq"),
    )


class Run(Base):
    """A run of an agent on a conversation: a row before any work starts, claimed with a lease."""

    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = _uuid_pk()
    thread_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=True
    )
    assistant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="pending")
    multitask_strategy: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="enqueue"
    )
    kwargs: Mapped[dict[str, Any]] = _jsonb_object()
    metadata_: Mapped[dict[str, Any]] = _metadata()
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What `/wait` and `/join` return: final values, `__interrupt__` or `__error__` (0003_b1).
    output: Mapped[Any] = mapped_column(JSONB, nullable=True)
    # The run's place in its thread's stream (GET /threads/{id}/stream), from the
    # `thread_stream_positions` sequence when it is first claimed (0005).
    stream_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Who created the run (it executes as them): the identity, and `auth` = the user as the
    # authenticator returned it, their permissions, the collections they may read (0006).
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    auth: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        CheckConstraint(f"status IN ({_quoted(RUN_STATUSES)})", name="status"),
        CheckConstraint(
            f"multitask_strategy IN ({_quoted(MULTITASK_STRATEGIES)})", name="multitask_strategy"
        ),
        Index(None, "thread_id", "created_at"),
        Index(None, "status", "created_at"),
        Index(None, "status", "lease_expires_at"),
        Index(None, "assistant_id"),
        Index(
            "ix_runs_thread_id_stream_position",
            "thread_id",
            "stream_position",
            postgresql_where=text("stream_position IS NOT NULL"),
        ),
        Index(
            "ix_runs_user_id_in_flight",
            "user_id",
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )


class RunEvent(Base):
    """One streamed event of a run, kept so a client can rejoin with `Last-Event-ID`."""

    __tablename__ = "run_events"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = _created_at()


THREAD_STREAM_POSITIONS = Sequence("thread_stream_positions", metadata=Base.metadata)
"""Places in thread streams: runs (at their first claim) and thread events take one each,
under their thread row's lock, so a thread's places grow in the order they become visible."""


class ThreadEvent(Base):
    """An event of a thread that is not part of a run (a state update), in its thread's stream."""

    __tablename__ = "thread_events"

    thread_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (Index(None, "created_at"),)


class Cron(Base):
    """A scheduled run: a cron expression in a timezone, creating runs of an assistant."""

    __tablename__ = "crons"

    id: Mapped[uuid.UUID] = _uuid_pk()
    assistant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), nullable=False
    )
    thread_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=True
    )
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    auth: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)  # as `runs.auth`
    schedule: Mapped[str] = mapped_column(String(200), nullable=False)
    timezone: Mapped[str] = mapped_column(String(100), nullable=False, server_default="UTC")
    payload: Mapped[dict[str, Any]] = _jsonb_object()
    metadata_: Mapped[dict[str, Any]] = _metadata()
    on_run_completed: Mapped[str | None] = mapped_column(String(20), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_run_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        Index(None, "enabled", "next_run_date"),
        Index(None, "assistant_id"),
        Index(None, "thread_id"),
        Index(None, "user_id"),
        Index(
            "ix_crons_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
    )


class Document(Base):
    """An ingested document; its chunks' vectors live in Qdrant under the same id."""

    __tablename__ = "documents"

    id: Mapped[uuid.UUID] = _uuid_pk()
    collection: Mapped[str] = mapped_column(String(100), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    doc_type: Mapped[str] = mapped_column(String(20), nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    metadata_: Mapped[dict[str, Any]] = _metadata()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    __table_args__ = (
        UniqueConstraint("collection", "source"),
        Index(None, "content_hash"),
        Index(None, "created_at", "id"),
    )


class Tool(Base):
    """A tool an agent may call, with the JSON schema of its arguments."""

    __tablename__ = "tools"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    parameters: Mapped[dict[str, Any]] = _jsonb_object()
    cacheable: Mapped[bool] = mapped_column(nullable=False, server_default=text("false"))
    enabled: Mapped[bool] = mapped_column(nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class ApiKey(Base):
    """An API key of the built-in authenticator: only its SHA-256 is kept; the key is shown once.

    A key reads `sb_<key_id>_<secret>`: `key_id` finds the row, the hash of the whole key is
    compared in constant time.
    """

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    admin: Mapped[bool] = mapped_column(nullable=False, server_default=text("false"))
    name: Mapped[str] = mapped_column(String(200), nullable=False, server_default="")
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "user_id"),)


class Collection(Base):
    """A knowledge collection's owner record: `metadata.owner` (or `created_by: system`)."""

    __tablename__ = "collections"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    metadata_: Mapped[dict[str, Any]] = _metadata()
    created_at: Mapped[datetime] = _created_at()


class RateWindow(Base):
    """How many runs an identity created in its current rate-limit window (one row each)."""

    __tablename__ = "rate_windows"

    identity: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
