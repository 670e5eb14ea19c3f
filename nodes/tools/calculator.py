"""The `calculator` tool: exact arithmetic, computed in a worker process (`arithmetic.py`)."""

from __future__ import annotations

from nodes.tools.arithmetic import MAX_EXPRESSION_CHARS, evaluate, format_number
from nodes.tools.registry import ToolSpec

__all__ = ["CALCULATOR", "evaluate", "format_number"]

CALCULATOR = ToolSpec(
    name="calculator",
    description=(
        "Evaluate an arithmetic expression exactly, e.g. '12 * (3 + 4) / 2' or 'sqrt(2) ^ 2'. "
        "Supports + - * / // % ^ ** parentheses, pi, e and sqrt/abs/round/min/max/log/exp/"
        "sin/cos/tan/floor/ceil."
    ),
    parameters={
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The expression to evaluate.",
                "maxLength": MAX_EXPRESSION_CHARS,
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
    compute="nodes.tools.arithmetic:calculate",
)
