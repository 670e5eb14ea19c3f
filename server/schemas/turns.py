"""Schemas of `/chat`: the request, and the JSON answer of its non-streaming form."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict, JsonValue

from server.schemas.common import RequestModel, ResponseModel

_UUID: JsonDict = {"type": "string", "format": "uuid"}
_TARGETS: list[JsonValue] = [
    {
        "title": "To a conversation",
        "type": "object",
        "required": ["conversation_id"],
        "properties": {"conversation_id": _UUID, "user_id": False, "agent_id": False},
    },
    {
        "title": "To a new conversation",
        "type": "object",
        "required": ["user_id", "agent_id"],
        "properties": {"conversation_id": False, "user_id": _UUID, "agent_id": _UUID},
    },
]


class ChatRequest(RequestModel):
    """One user turn: to a `conversation_id`, or to a new conversation of `user_id`+`agent_id`."""

    # The rule of `_target` below, in the document: exactly one of the two forms.
    model_config = ConfigDict(json_schema_extra={"oneOf": _TARGETS})

    conversation_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    message: Annotated[
        str, Field(min_length=1, pattern=r"\S", description="What the user says (not blank).")
    ]
    title: Annotated[str, Field(max_length=300)] = ""

    @model_validator(mode="after")
    def _target(self) -> ChatRequest:
        if self.conversation_id is not None:
            if self.user_id is not None or self.agent_id is not None:
                raise ValueError("give conversation_id, or user_id and agent_id, not both")
            return self
        if self.user_id is None or self.agent_id is None:
            raise ValueError("give conversation_id, or both user_id and agent_id")
        return self


class ChatAnswer(BaseModel):
    """The result of a turn, as `/chat?stream=false` and `/chat/invoke` return it."""

    run_id: uuid.UUID
    conversation_id: uuid.UUID
    message_id: uuid.UUID | None
    status: str
    content: str
    citations: list[dict[str, Any]]
    plan: list[str]
    tool_calls: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    warnings: list[str]
    usage: dict[str, int]
    model: str
    latency_ms: float
    error: str | None = None


class ToolOut(ResponseModel):
    """A tool agents may list in `tools`, with the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    cacheable: bool
    enabled: bool
