"""`respond`: stream the final answer, citing the sources it used; close the turn when
`remember` has nothing left to do."""

from __future__ import annotations

import re
import uuid
from typing import Any

from langgraph.runtime import Runtime

from nodes.context import AgentContext, context_from
from nodes.llm import add_usage, prompt
from nodes.models import chat_model_for
from nodes.remember import close_turn, nothing_to_remember
from nodes.state import AgentState, Source, emit

_CITATION = re.compile(r"\[(\d+)\]")


def cited_sources(text: str, sources: list[Source]) -> list[Source]:
    """The sources whose `[n]` marker appears in `text`, in order of first citation."""
    by_number = {source["n"]: source for source in sources}
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        number = int(match.group(1))
        if number in by_number and number not in seen:
            seen.append(number)
    return [by_number[n] for n in seen]


async def respond(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Stream the answer token by token (`token` events) and store it with its citations."""
    ctx = context_from(runtime.context)
    extra: list[str] = []
    if state.get("stopped"):
        extra.append(
            f"I stopped after {ctx.max_steps} tool rounds (this agent's step limit), so this "
            "answer uses only what I found so far"
        )
    model = chat_model_for(ctx)
    text = ""
    usage = state.get("usage", {})
    final_usage = None
    message_id: str | None = None
    async for chunk in model.astream(prompt(state, ctx, extra_warnings=extra)):
        message_id = message_id or chunk.id
        piece = chunk.text
        if piece:
            text += piece
            emit(runtime.stream_writer, "token", {"text": piece})
        if chunk.usage_metadata is not None:
            final_usage = chunk.usage_metadata
    usage = add_usage(usage, final_usage)
    citations = cited_sources(text, state.get("sources", []))
    answer_id = message_id or f"answer-{uuid.uuid4().hex}"
    changes: dict[str, Any] = {
        "answer_id": answer_id,
        "answer": text,
        "citations": citations,
        "usage": usage,
    }
    if nothing_to_remember(state, runtime):  # the turn ends here, without a `remember` step
        changes.update(close_turn(state, ctx, text, answer_id))
    return changes
