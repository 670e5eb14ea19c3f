"""A safe arithmetic evaluator over Python's AST (never `eval`), bounded before it computes.

Pure and light (standard library only): the `calculator` tool runs it in a worker process
(`nodes.tools.sandbox`), off the event loop and killed at its time limit. Every operation is
checked *before* it is computed: an integer result that would need more than
`MAX_INTEGER_BITS` bits (e.g. `((9^999)^999)^9`) is refused at once instead of taking minutes.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from nodes.tools.errors import ToolError

MAX_EXPRESSION_CHARS = 300
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e100
MAX_INTEGER_BITS = 10_000  # of any intermediate integer (the result is at most 1e100)

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic `expression`; `ToolError` says why one is refused.

    Numbers, + - * / // % ** (or ^), parentheses, the constants pi/e/tau and a few math
    functions (sqrt, abs, round, min, max, log, log10, exp, sin, cos, tan, floor, ceil).
    """
    text = expression.strip().replace("^", "**").replace("\u00d7", "*").replace("\u00f7", "/")
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as error:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from error
    try:
        value: float | int = _eval(tree.body)
    except ZeroDivisionError as error:
        raise ToolError("division by zero") from error
    except (OverflowError, ValueError, TypeError) as error:
        raise ToolError(f"cannot compute {expression!r}: {error}") from error
    if isinstance(value, float) and (math.isnan(value) or abs(value) > MAX_MAGNITUDE):
        raise ToolError(f"the result of {expression!r} is out of range")
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:
        raise ToolError(f"the result of {expression!r} is out of range")
    return value


def _bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_binary(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse an operation whose integer result would be too large, before computing it."""
    if isinstance(op, ast.Pow):
        if abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponents above {MAX_EXPONENT} are refused")
        integers = isinstance(left, int) and isinstance(right, int)
        if integers and right > 0 and abs(left) > 1 and _bits(left) * right > MAX_INTEGER_BITS:
            raise ToolError(f"the result would have more than {MAX_INTEGER_BITS} bits; refused")
    elif isinstance(op, ast.Mult) and _bits(left) + _bits(right) > MAX_INTEGER_BITS:
        raise ToolError(f"the result would have more than {MAX_INTEGER_BITS} bits; refused")


def _eval(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ToolError("booleans are not numbers here")
        if _bits(node.value) > MAX_INTEGER_BITS:
            raise ToolError(f"numbers above {MAX_INTEGER_BITS} bits are refused")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        _check_binary(node.op, left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        args = [_eval(arg) for arg in node.args]
        if node.func.id == "round" and len(args) > 1 and abs(args[1]) > MAX_EXPONENT:
            raise ToolError(f"round to more than {MAX_EXPONENT} digits is refused")
        return _FUNCTIONS[node.func.id](*args)
    raise ToolError(f"unsupported syntax in the expression: {ast.dump(node)[:80]}")


def format_number(value: float | int) -> str:
    """`value` without a trailing `.0`, and with at most 12 significant digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


def calculate(args: Mapping[str, Any]) -> str:
    """The `calculator` tool: the value of `args["expression"]`, formatted."""
    return format_number(evaluate(str(args["expression"])))
