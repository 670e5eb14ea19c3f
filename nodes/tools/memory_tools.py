"""The `remember` and `forget` tools: write and delete facts in the user's long-term memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.store.base import BaseStore

from nodes.memory import forget_memories, remember_said
from nodes.tools.registry import ToolEnv, ToolError, ToolSpec
from stores.memory.facts import Source


def _store(env: ToolEnv) -> BaseStore:
    if env.store is None:
        raise ToolError("long-term memory is not available in this deployment")
    return env.store


async def _remember(args: Mapping[str, Any], env: ToolEnv) -> str:
    fact = str(args["fact"]).strip()
    if not fact:
        raise ToolError("the fact to remember is empty")
    source = Source(origin="tool", conversation_id=env.conversation_id, run_id=env.run_id)
    outcomes, _ = await remember_said(
        _store(env), env.context, fact, source=source, keep_unparsed=True
    )
    done = "; ".join(f"{o.action} {o.text!r}" for o in outcomes) or "nothing new"
    return f"saved: {fact} ({done})"


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
