"""Schemas of users, agents, conversations and messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, EmailStr, Field, PlainSerializer, field_validator

from nodes.tools.registry import tool_registry
from server.redact import mask_secrets
from server.schemas.common import (
    Identifier,
    JsonObject,
    PatchModel,
    RequestModel,
    ResponseModel,
    StoredObject,
)

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
Metadata = Annotated[
    dict[str, Any],
    Field(validation_alias=AliasChoices("metadata_", "metadata"), serialization_alias="metadata"),
    PlainSerializer(mask_secrets),  # secret-looking values are shown as "***" (server/redact.py)
]
Masked = Annotated[dict[str, Any], PlainSerializer(mask_secrets)]


def _unique(values: list[str], field: str) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError(f"{field} must not repeat a name")
    return values


def _known_tools(values: list[str]) -> list[str]:
    known = tool_registry()
    unknown = [name for name in values if name not in known]
    if unknown:
        raise ValueError(f"unknown tools {unknown}; available: {sorted(known)}")
    return values


class UserCreate(RequestModel):
    """A new user. Emails are unique, compared case-insensitively."""

    email: EmailStr
    name: Name
    metadata: JsonObject

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class UserUpdate(PatchModel):
    """Fields of a user to change; omitted fields stay as they are."""

    email: EmailStr | None = None
    name: Name | None = None
    metadata: StoredObject | None = None

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None


class UserOut(ResponseModel):
    """A user as the API returns it."""

    id: uuid.UUID
    email: str
    name: str
    metadata: Metadata
    created_at: datetime
    updated_at: datetime


class ModelSettings(RequestModel):
    """Which chat model an agent uses; unset fields fall back to the server's settings."""

    provider: Literal["offline", "openai"] | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=200_000)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=600)] | None = None


def _tool_names(schema: dict[str, Any]) -> None:
    schema["uniqueItems"] = True
    schema["items"] = {"type": "string", "enum": sorted(tool_registry())}


ToolNames = Annotated[list[Identifier], Field(max_length=64, json_schema_extra=_tool_names)]
"""Tools an agent may call: names of `GET /tools`, each once."""
CollectionNames = Annotated[
    list[Identifier], Field(max_length=64, json_schema_extra={"uniqueItems": True})
]


class AgentCreate(RequestModel):
    """A new agent: a declared graph plus the configuration that makes this agent distinct."""

    name: Name
    description: Annotated[str, Field(max_length=2000)] = ""
    graph_id: Identifier = "chat"
    system_prompt: Annotated[str, Field(max_length=20_000)] = ""
    model: ModelSettings = Field(default_factory=ModelSettings)
    tools: ToolNames = Field(default_factory=list)
    collections: CollectionNames = Field(default_factory=list)
    config: JsonObject
    metadata: JsonObject

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[str]) -> list[str]:
        return _known_tools(_unique(value, "tools"))

    @field_validator("collections")
    @classmethod
    def _unique_collections(cls, value: list[str]) -> list[str]:
        return _unique(value, "collections")


class AgentUpdate(PatchModel):
    """Fields of an agent to change; every change increments the agent's `version`."""

    name: Name | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    graph_id: Identifier | None = None
    system_prompt: Annotated[str, Field(max_length=20_000)] | None = None
    model: ModelSettings | None = None
    tools: ToolNames | None = None
    collections: CollectionNames | None = None
    config: StoredObject | None = None
    metadata: StoredObject | None = None

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _known_tools(_unique(value, "tools"))

    @field_validator("collections")
    @classmethod
    def _unique_collections(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value, "collections")


class AgentOut(ResponseModel):
    """An agent as the API returns it."""

    id: uuid.UUID
    name: str
    description: str
    graph_id: str
    system_prompt: str
    model: dict[str, Any]
    tools: list[str]
    collections: list[str]
    config: Masked
    metadata: Metadata
    version: int
    created_at: datetime
    updated_at: datetime


class ConversationCreate(RequestModel):
    """A new conversation between a user and an agent."""

    user_id: uuid.UUID
    agent_id: uuid.UUID
    title: Annotated[str, Field(max_length=300)] = ""
    metadata: JsonObject


class ConversationUpdate(PatchModel):
    """Fields of a conversation to change."""

    title: Annotated[str, Field(max_length=300)] | None = None
    metadata: StoredObject | None = None


class ConversationOut(ResponseModel):
    """A conversation as the API returns it."""

    id: uuid.UUID
    user_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    title: str
    status: str
    metadata: Metadata
    created_at: datetime
    updated_at: datetime


class MessageCreate(RequestModel):
    """A message written into a conversation's transcript without running the agent."""

    sender: Literal["user", "agent", "tool", "system"]
    content: Annotated[str, Field(max_length=200_000)]
    metadata: JsonObject


class MessageOut(ResponseModel):
    """A message as the API returns it."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    sender: str
    content: str
    metadata: Metadata
    created_at: datetime
