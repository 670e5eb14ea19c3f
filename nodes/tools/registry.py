"""The tool registry: tool-callable functions with JSON-schema arguments, enabled per agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from langgraph.store.base import BaseStore

from nodes.context import AgentContext
from nodes.tools.errors import ToolError

__all__ = ["ToolEnv", "ToolError", "ToolFn", "ToolSpec", "enabled_tools", "validate_args"]


@dataclass(frozen=True, slots=True)
class ToolEnv:
    """What a tool may use: the run's context, the long-term memory store, and the
    conversation and run it is called in (the source of what it remembers)."""

    context: AgentContext
    store: BaseStore | None
    conversation_id: str | None = None
    run_id: str | None = None


ToolFn = Callable[[Mapping[str, Any], ToolEnv], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: its name, what it does, the JSON schema of its arguments, and its function.

    A tool either waits (`run`: an async function doing I/O, awaited on the event loop and
    cancelled at its time limit) or computes (`compute`: "module:function" of a pure, light
    function `(args) -> str`, run in a worker process, killed at its time limit, within a
    memory limit). CPU-bound work is always `compute`: a thread cannot be stopped, and holds
    the event loop while it computes.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    run: ToolFn | None = None
    compute: str | None = None
    cacheable: bool = False

    def __post_init__(self) -> None:
        if (self.run is None) == (self.compute is None):
            raise ValueError(f"tool {self.name!r} needs exactly one of run and compute")

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the OpenAI function-calling format that `bind_tools` accepts."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def validate_args(spec: ToolSpec, args: Mapping[str, Any]) -> dict[str, Any]:
    """Check `args` against the tool's (flat) JSON schema; `ToolError` names what is wrong."""
    properties: Mapping[str, Any] = spec.parameters.get("properties", {})
    for name in spec.parameters.get("required", []):
        if name not in args:
            raise ToolError(f"missing required argument {name!r}")
    checked: dict[str, Any] = {}
    for name, value in args.items():
        schema = properties.get(name)
        if schema is None:
            raise ToolError(f"unknown argument {name!r}; expected one of {sorted(properties)}")
        expected = _JSON_TYPES.get(schema.get("type", ""), (object,))
        is_bool = isinstance(value, bool)
        if not isinstance(value, expected) or (is_bool and bool not in expected):
            raise ToolError(f"argument {name!r} must be of type {schema.get('type')}")
        if "enum" in schema and value not in schema["enum"]:
            raise ToolError(f"argument {name!r} must be one of {schema['enum']}")
        if isinstance(value, str) and len(value) > schema.get("maxLength", 10_000):
            raise ToolError(f"argument {name!r} is longer than {schema.get('maxLength')} chars")
        checked[name] = value
    return checked


def tool_registry() -> dict[str, ToolSpec]:
    """Every built-in tool by name."""
    from nodes.tools.builtin import BUILTIN_TOOLS

    return {spec.name: spec for spec in BUILTIN_TOOLS}


def enabled_tools(names: Iterable[str]) -> list[ToolSpec]:
    """The built-in tools called `names`, in that order; unknown names raise `ValueError`."""
    registry = tool_registry()
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ValueError(f"unknown tools {unknown}; available: {sorted(registry)}")
    return [registry[name] for name in names]
