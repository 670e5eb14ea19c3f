"""`reason`: after a tool round, decide on another round or the answer, within the step limit."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import AIMessage
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime

from nodes.context import AgentContext, context_from
from nodes.llm import add_usage, describe_call, prompt, tool_model
from nodes.state import AgentState, emit


async def reason(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Ask the model whether it needs more tools; stop (gracefully) at `max_steps` rounds."""
    ctx = context_from(runtime.context)
    steps = state.get("steps", 0)
    if steps >= ctx.max_steps:
        emit(runtime.stream_writer, "step_limit", {"steps": steps, "max_steps": ctx.max_steps})
        return {"stopped": True}
    reply = await tool_model(ctx).ainvoke(prompt(state, ctx), config={"tags": [TAG_NOSTREAM]})
    changes: dict[str, Any] = {"usage": add_usage(state.get("usage", {}), reply.usage_metadata)}
    if reply.tool_calls:
        more = [describe_call(call) for call in reply.tool_calls]
        plan = state.get("plan", [])
        steps_list = [*plan[:-1], *more, *plan[-1:]] if plan else more
        emit(runtime.stream_writer, "plan", {"steps": steps_list})
        changes["plan"] = steps_list
        changes["scratch"] = [reply]
    return changes


def route_after_reason(state: AgentState) -> Literal["call_tools", "respond"]:
    """Another tool round if the model asked for one (and the limit allows), else answer."""
    if state.get("stopped"):
        return "respond"
    scratch = state.get("scratch", [])
    last = scratch[-1] if scratch else None
    return "call_tools" if isinstance(last, AIMessage) and last.tool_calls else "respond"
