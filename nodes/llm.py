"""Helpers shared by the nodes that call the chat model: prompt, tool binding, token usage."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables import Runnable

from nodes.context import AgentContext
from nodes.models import chat_model_for
from nodes.prompts import system_text
from nodes.state import AgentState, turn_warnings
from nodes.tools.registry import ToolSpec, tool_registry

log = logging.getLogger(__name__)


def agent_tools(ctx: AgentContext) -> list[ToolSpec]:
    """The built-in tools enabled for the agent (unknown names are logged and skipped)."""
    registry = tool_registry()
    unknown = [name for name in ctx.tools if name not in registry]
    if unknown:
        log.warning("agent %s lists unknown tools %s; skipping them", ctx.agent_name, unknown)
    return [registry[name] for name in ctx.tools if name in registry]


def tool_model(ctx: AgentContext) -> Runnable[LanguageModelInput, AIMessage]:
    """The agent's chat model bound to its tools (or bare when it has none)."""
    model = chat_model_for(ctx)
    tools = agent_tools(ctx)
    if not tools:
        return model
    return model.bind_tools([spec.openai_schema() for spec in tools])


def prompt(
    state: AgentState, ctx: AgentContext, *, extra_warnings: Sequence[str] = ()
) -> list[BaseMessage]:
    """System message (prompt, summary, memories, sources, warnings) + the message window,
    within `ctx.max_input_chars` (see `capped`)."""
    system = system_text(
        system_prompt=ctx.system_prompt,
        summary=state.get("summary", ""),
        memories=state.get("memories", []),
        sources=state.get("sources", []),
        warnings=[*turn_warnings(state), *extra_warnings],
    )
    window = list(state.get("messages", []))
    return capped(
        [SystemMessage(system), *window, *state.get("scratch", [])],
        max_chars=ctx.max_input_chars,
        droppable=max(0, len(window) - 1),
    )


def _size(message: BaseMessage) -> int:
    return len(message.content) if isinstance(message.content, str) else len(message.text)


def capped(messages: list[BaseMessage], *, max_chars: int, droppable: int = 0) -> list[BaseMessage]:
    """`messages` (the system message first) with at most `max_chars` characters of text.

    The `droppable` messages after the system message (the older part of the window) go
    first, oldest first; then every text longer than a common cap is cut to it, so no single
    message (a 32 000-character paste, a huge tool result) crowds out the rest. A model never
    gets more than the cap, whatever the input (`LLM_MAX_INPUT_CHARS`).
    """
    sizes = [_size(m) for m in messages]
    total = sum(sizes)
    if total <= max_chars:
        return messages
    kept = list(messages)
    while droppable > 0 and total > max_chars and len(kept) > 2:
        total -= _size(kept.pop(1))
        droppable -= 1
    if total <= max_chars:
        return kept
    sizes = [_size(m) for m in kept]
    low, high = 0, max(sizes)  # the largest per-message cap that fits
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(size, middle) for size in sizes) <= max_chars:
            low = middle
        else:
            high = middle - 1
    return [
        m.model_copy(update={"content": m.content[:low]})
        if isinstance(m.content, str) and len(m.content) > low
        else m
        for m in kept
    ]


def add_usage(total: Mapping[str, int], usage: UsageMetadata | None) -> dict[str, int]:
    """`total` plus one model call's token usage."""
    out = dict(total)
    if usage is not None:
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            out[key] = out.get(key, 0) + int(usage.get(key) or 0)  # type: ignore[call-overload]
    out["calls"] = out.get("calls", 0) + 1
    return out


def describe_call(call: Mapping[str, Any]) -> str:
    """A tool call as a plan step: `calculator(expression="2+2")`."""
    args = ", ".join(f"{k}={v!r}" for k, v in dict(call.get("args") or {}).items())
    return f"Call {call.get('name')}({args})"
