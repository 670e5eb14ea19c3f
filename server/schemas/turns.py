"""Schemas of `/chat`: the request, and the JSON answer of its non-streaming form."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Field, Tag

from server.schemas.common import RequestModel, ResponseModel


class _Turn(RequestModel):
    """What both forms of a turn hold."""

    message: Annotated[
        str, Field(min_length=1, pattern=r"\S", description="What the user says (not blank).")
    ]
    title: Annotated[
        str,
        Field(
            max_length=300,
            description="The title of a conversation the turn starts (default: the message's "
            "start).",
        ),
    ] = ""


class ChatToConversation(_Turn):
    """A user turn in an existing conversation."""

    conversation_id: uuid.UUID

    @property
    def user_id(self) -> None:
        """Not part of this form (the conversation has its user)."""
        return None

    @property
    def agent_id(self) -> None:
        """Not part of this form (the conversation has its agent)."""
        return None


class ChatToNewConversation(_Turn):
    """The first user turn of a new conversation of `user_id` with `agent_id`."""

    user_id: uuid.UUID
    agent_id: uuid.UUID

    @property
    def conversation_id(self) -> None:
        """Not part of this form (the turn creates the conversation)."""
        return None


def _chat_form(body: Any) -> str | None:
    # The form is the one whose fields the body has: with `conversation_id`, the first (where
    # `user_id` or `agent_id` are then extra fields, refused by name); else the second.
    if isinstance(body, dict):
        return "conversation" if "conversation_id" in body else "new_conversation"
    if isinstance(body, ChatToConversation | ChatToNewConversation):
        return "conversation" if isinstance(body, ChatToConversation) else "new_conversation"
    return None


ChatRequest = Annotated[
    Annotated[ChatToConversation, Tag("conversation")]
    | Annotated[ChatToNewConversation, Tag("new_conversation")],
    Discriminator(
        _chat_form,
        custom_error_type="chat_body",
        custom_error_message="the body is a JSON object with conversation_id, or with user_id "
        "and agent_id",
    ),
]
"""One user turn: to a `conversation_id`, or to a new conversation of `user_id`+`agent_id`.
The document says it as `oneOf` the two forms, each an object of its own fields only; an
error's `loc` names the form, then the field."""


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
