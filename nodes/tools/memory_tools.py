"""The `remember` and `forget` tools: write and delete facts in the user's long-term memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.store.base import BaseStore

from nodes.memory import forget_memories, save_memory
from nodes.tools.registry import ToolEnv, ToolError, ToolSpec


def _store(env: ToolEnv) -> BaseStore:
    if env.store is None:
        raise ToolError("long-term memory is not available in this deployment")
    return env.store


async def _remember(args: Mapping[str, Any], env: ToolEnv) -> str:
    fact = str(args["fact"]).strip()
    if not fact:
        raise ToolError("the fact to remember is empty")
    await save_memory(_store(env), env.context.user_id, fact, origin="tool")
    return f"saved: {fact}"


async def _forget(args: Mapping[str, Any], env: ToolEnv) -> str:
    fact = str(args["fact"]).strip()
    deleted = await forget_memories(_store(env), env.context.user_id, fact)
    if not deleted:
        return f"nothing matching {fact!r} was remembered"
    return "forgot: " + "; ".join(deleted)


_FACT = {
    "type": "object",
    "properties": {
        "fact": {
            "type": "string",
            "description": "The fact, in the user's words.",
            "maxLength": 2000,
        }
    },
    "required": ["fact"],
    "additionalProperties": False,
}

REMEMBER = ToolSpec(
    name="remember",
    description="Save a fact about the user to long-term memory, recalled in later conversations.",
    parameters=_FACT,
    run=_remember,
)
FORGET = ToolSpec(
    name="forget",
    description="Delete the facts about the user that match the one given from long-term memory.",
    parameters=_FACT,
    run=_forget,
)
