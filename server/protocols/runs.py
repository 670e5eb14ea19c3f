"""What the protocol faces share: messages in, a run of the engine, its answer out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from server.runs.engine import RunEngine
from stores.sql.models import Agent, Run
from stores.sql.runs import NOBODY, RunCreator

Role = Literal["user", "assistant", "system"]
# Message types a graph's state may hold for an AI turn (LangChain dicts and role dicts).
_AI_TYPES: Final = frozenset({"ai", "AIMessage", "AIMessageChunk", "assistant"})


def run_input(messages: Sequence[tuple[Role, str, str | None]]) -> dict[str, Any]:
    """The run input of `(role, text, message id)` triples: `{"messages": [...]}`."""
    rows: list[dict[str, Any]] = []
    for role, text, message_id in messages:
        row: dict[str, Any] = {"role": role, "content": text}
        if message_id:
            row["id"] = message_id
        rows.append(row)
    return {"messages": rows}


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message dict: its string content, or its text blocks joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(block.get("text", "")) if isinstance(block, Mapping) else str(block)
            for block in content
        )
    return ""


def is_ai(message: Any) -> bool:
    """Whether a message dict is the model's (an AI message)."""
    if not isinstance(message, Mapping):
        return False
    kind = message.get("type") or message.get("role")
    return kind in _AI_TYPES


def last_ai_text(values: Any) -> str | None:
    """The text of the last AI message in a run's final values (None when there is none)."""
    if not isinstance(values, Mapping):
        return None
    messages = values.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if is_ai(message):
            return message_text(message)
    return None


def run_error(output: Any) -> str | None:
    """What went wrong in a finished run, said safely (the error's type, never its text)."""
    if isinstance(output, Mapping) and isinstance(output.get("__error__"), Mapping):
        kind = str(output["__error__"].get("error") or "Error")
        return f"the agent's run failed ({kind})"
    return None


async def submit_messages(
    engine: RunEngine,
    assistant: Agent,
    messages: Sequence[tuple[Role, str, str | None]],
    *,
    source: str,
    thread_id: uuid.UUID | None = None,
    stream_mode: Sequence[str] = ("values",),
    metadata: Mapping[str, Any] | None = None,
    creator: RunCreator = NOBODY,
) -> Run:
    """Submit a durable run of `assistant` on `messages`, executing as `creator` (whose thread
    filter an existing thread must satisfy).

    With `thread_id` the run continues that thread (created when new); without, it runs on a
    fresh temporary thread that is deleted afterwards, like a stateless `/runs/wait`.
    """
    return await engine.submit(
        thread_id=thread_id or uuid.uuid4(),
        assistant=assistant,
        kwargs={"input": run_input(messages), "stream_mode": list(stream_mode)},
        metadata={**(metadata or {}), "source": source},
        if_not_exists="create",
        temporary=thread_id is None,
        creator=creator,
    )
