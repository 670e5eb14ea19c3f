"""`call_tools`: run the tool calls of the model's last message; failures become tool messages."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langgraph.runtime import Runtime
from opentelemetry.trace import Status, StatusCode

from nodes.context import AgentContext, context_from
from nodes.llm import agent_tools
from nodes.state import AgentState, emit
from nodes.tools.registry import ToolEnv, ToolError, ToolSpec, validate_args
from stores.tracing import traced

log = logging.getLogger(__name__)

RESULT_EVENT_CHARS = 2000


async def _cached(ctx: AgentContext, spec: ToolSpec, args: dict[str, Any]) -> str | None:
    if not spec.cacheable or ctx.tool_cache is None:
        return None
    try:
        hit = await ctx.tool_cache.get(spec.name, args)
    except Exception as error:  # a cache outage only costs a recomputation
        log.warning("tool cache read failed: %r", error)
        return None
    return hit if isinstance(hit, str) else None


async def _store_cached(ctx: AgentContext, spec: ToolSpec, args: dict[str, Any], out: str) -> None:
    if not spec.cacheable or ctx.tool_cache is None:
        return
    try:
        await ctx.tool_cache.put(spec.name, args, out, ttl_seconds=ctx.tool_cache_ttl_s)
    except Exception as error:
        log.warning("tool cache write failed: %r", error)


def _imported(spec: str) -> Callable[[Mapping[str, Any]], str]:
    module, _, name = spec.partition(":")
    function: Callable[[Mapping[str, Any]], str] = getattr(importlib.import_module(module), name)
    return function


async def _execute(spec: ToolSpec, args: dict[str, Any], env: ToolEnv) -> str:
    """Run the tool off the event loop, within the agent's time limit.

    A `compute` tool runs in a worker process of the server (killed at the limit); without
    one (`langgraph dev`), in a thread. A `run` tool is awaited, and cancelled at the limit.
    """
    ctx = env.context
    if spec.compute is not None:
        if ctx.compute is not None:
            return await ctx.compute.run(spec.compute, args, timeout_s=ctx.tool_timeout_s)
        work = asyncio.to_thread(_imported(spec.compute), args)
        return await asyncio.wait_for(work, timeout=ctx.tool_timeout_s)
    assert spec.run is not None
    return await asyncio.wait_for(spec.run(args, env), timeout=ctx.tool_timeout_s)


async def run_tool_call(
    call: ToolCall, *, tools: dict[str, ToolSpec], env: ToolEnv
) -> tuple[ToolMessage, dict[str, Any]]:
    """Run one tool call in a `tool` span; returns its tool message and a record of what
    happened."""
    with traced("tool", f"tool {call['name']}", tool=call["name"]) as span:
        message, record = await _run_tool_call(call, tools=tools, env=env)
        span.set_attribute("tool.cached", bool(record["cached"]))
        if record["status"] != "success":
            span.set_status(Status(StatusCode.ERROR, str(record["content"])[:200]))
        return message, record


async def _run_tool_call(
    call: ToolCall, *, tools: dict[str, ToolSpec], env: ToolEnv
) -> tuple[ToolMessage, dict[str, Any]]:
    ctx = env.context
    started = time.perf_counter()
    status = "success"
    cached = False
    name = call["name"]
    try:
        spec = tools.get(name)
        if spec is None:
            raise ToolError(f"the tool {name!r} is not enabled for this agent")
        args = validate_args(spec, call.get("args") or {})
        hit = await _cached(ctx, spec, args)
        if hit is not None:
            content, cached = hit, True
        else:
            content = await _execute(spec, args, env)
            await _store_cached(ctx, spec, args, content)
    except TimeoutError:
        status, content = "error", f"the tool {name} timed out after {ctx.tool_timeout_s:g} s"
    except ToolError as error:
        status, content = "error", str(error)
    except Exception as error:  # a broken tool is reported to the model, never crashes the run
        log.warning("tool %s failed: %r", name, error)
        status, content = "error", f"{type(error).__name__}: {error}"
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    if len(content) > ctx.tool_max_output_chars:
        content = content[: ctx.tool_max_output_chars] + " … (cut: the tool said more)"
    record = {
        "id": call.get("id"),
        "name": name,
        "args": call.get("args") or {},
        "status": status,
        "content": content[:RESULT_EVENT_CHARS],
        "latency_ms": latency_ms,
        "cached": cached,
    }
    message = ToolMessage(
        content=content, tool_call_id=call.get("id") or "", name=name, status=status
    )
    return message, record


async def call_tools(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Run the last message's tool calls concurrently and stream each call and result."""
    ctx = context_from(runtime.context)
    last = state["scratch"][-1]
    calls = last.tool_calls if isinstance(last, AIMessage) else []
    tools = {spec.name: spec for spec in agent_tools(ctx)}
    info = runtime.execution_info
    env = ToolEnv(
        context=ctx,
        store=runtime.store,
        conversation_id=info.thread_id if info is not None else None,
        run_id=info.run_id if info is not None else None,
    )
    for call in calls:
        emit(
            runtime.stream_writer,
            "tool_call",
            {"id": call.get("id"), "name": call["name"], "args": call.get("args") or {}},
        )
    outcomes = await asyncio.gather(*(run_tool_call(c, tools=tools, env=env) for c in calls))
    for _, record in outcomes:
        emit(runtime.stream_writer, "tool_result", record)
    return {
        "scratch": [message for message, _ in outcomes],
        "steps": state.get("steps", 0) + 1,
        "tool_calls": [*state.get("tool_calls", []), *(record for _, record in outcomes)],
    }
