"""`recall`: start the turn and fetch what long-term memory holds about the user."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from langchain_core.messages import RemoveMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.runtime import Runtime

from nodes.context import AgentContext, context_from
from nodes.memory import RecallPolicy, recall_memories
from nodes.remember import start_remembering
from nodes.state import AgentState, Memory, changed, emit, last_user_text

log = logging.getLogger(__name__)


async def recall(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Reset the per-turn keys and recall the few memories relevant to the new message: a
    small top-k, cut relative to the best match (`nodes.memory.select_memories`)."""
    ctx = context_from(runtime.context)
    memories: list[Memory] = []
    warnings: list[str] = []
    if runtime.store is not None and ctx.memory_policy != "off":
        try:
            memories = await asyncio.wait_for(
                recall_memories(
                    runtime.store,
                    ctx.user_id,
                    last_user_text(state),
                    policy=RecallPolicy(
                        k=ctx.memory_limit,
                        relative=ctx.memory_relative_score,
                        min_score=ctx.memory_min_score,
                    ),
                ),
                timeout=ctx.tool_timeout_s,
            )
        except Exception as error:  # an outage degrades the answer, never fails the run
            log.warning("memory recall failed: %r", error)
            warnings.append(f"I could not consult long-term memory ({type(error).__name__})")
            emit(runtime.stream_writer, "warning", {"node": "recall", "message": warnings[-1]})
    if memories:
        emit(runtime.stream_writer, "memories", {"memories": [m["text"] for m in memories]})
    memory_task = start_remembering(state, runtime)
    changes: dict[str, Any] = {}
    if state.get("scratch"):  # left over by a turn that failed half-way
        changes["scratch"] = [RemoveMessage(id=REMOVE_ALL_MESSAGES)]
    return changed(
        state,
        {
            **changes,
            "memories": memories,
            "warnings": warnings,
            "plan": [],
            "steps": 0,
            "answer": "",
            "citations": [],
            "usage": {},
            "stopped": False,
            "tool_calls": [],
            "turn": state.get("turn", 0) + 1,
            "memory_task": memory_task,
        },
    )
