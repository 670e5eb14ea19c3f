"""`plan`: ask the model for its first tool calls and write the turn's steps into state."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import AIMessage
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime

from nodes.context import AgentContext, context_from
from nodes.llm import add_usage, describe_call, prompt, tool_model
from nodes.state import AgentState, emit


async def plan(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Decide the first round of tool calls; the plan lists what the turn will do."""
    ctx = context_from(runtime.context)
    reply = await tool_model(ctx).ainvoke(prompt(state, ctx), config={"tags": [TAG_NOSTREAM]})
    steps: list[str] = []
    memories = state.get("memories", [])
    sources = state.get("sources", [])
    if memories:
        steps.append(
            f"Recall what I know about you ({_count(len(memories), 'memory', 'memories')})"
        )
    if sources:
        steps.append(f"Read {_count(len(sources), 'passage', 'passages')} from the knowledge base")
    steps.extend(describe_call(call) for call in reply.tool_calls)
    steps.append("Answer, citing the sources used" if sources else "Answer")
    emit(runtime.stream_writer, "plan", {"steps": steps})
    changes: dict[str, Any] = {
        "plan": steps,
        "usage": add_usage(state.get("usage", {}), reply.usage_metadata),
    }
    if reply.tool_calls:
        changes["scratch"] = [reply]
    return changes


def route_after_plan(state: AgentState) -> Literal["call_tools", "respond"]:
    """Run tools if the plan calls any, else answer."""
    return "call_tools" if _wants_tools(state) else "respond"


def _wants_tools(state: AgentState) -> bool:
    scratch = state.get("scratch", [])
    return bool(scratch) and isinstance(scratch[-1], AIMessage) and bool(scratch[-1].tool_calls)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
