"""Bounds of JSON that a request may ask a store to keep: what PostgreSQL JSONB, MongoDB and
LangGraph's checkpoint serialiser can all hold, checked before any of them sees it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from stores.errors import InvalidInputError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_FIELD_NAME = 1024


def check_json(
    value: Any,
    *,
    field: str,
    max_depth: int,
    max_bytes: int,
    operators: bool = False,
    nul_in_strings: bool = True,
) -> None:
    """Raise `InvalidInputError` naming the first part of `value` a store cannot hold or the
    limits refuse: nesting deeper than `max_depth`, integers beyond 64 bits, NaN or infinite
    numbers, field names that start with "$" (unless `operators`: a search filter's), hold NUL
    or are too long, NUL in strings (unless `nul_in_strings`: PostgreSQL's JSONB cannot hold it),
    more than `max_bytes` of JSON. Walks without recursion, so a hostile depth costs nothing."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (Mapping, list)):
            if depth >= max_depth:
                raise InvalidInputError(
                    f"{path} is nested deeper than {max_depth} levels", field=path
                )
            if isinstance(node, list):
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node))
                continue
            for name, item in node.items():
                if not isinstance(name, str):
                    raise InvalidInputError(
                        f"{path} has a field name that is not a string", field=path
                    )
                dollar = name.startswith("$") and not operators
                if dollar or "\x00" in name or len(name) > MAX_FIELD_NAME:
                    raise InvalidInputError(
                        f"{path} has a field name {name[:40]!r} that starts with '$', holds NUL "
                        f"or is longer than {MAX_FIELD_NAME} characters",
                        field=path,
                    )
                stack.append((item, f"{path}.{name}", depth + 1))
        elif isinstance(node, str):
            if not nul_in_strings and "\x00" in node:
                raise InvalidInputError(f"{path} holds a NUL character", field=path)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= INT64_MAX:
                raise InvalidInputError(
                    f"{path} is an integer beyond 64 bits, which the stores cannot hold", field=path
                )
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidInputError(f"{path} must be a finite number", field=path)
        else:
            raise InvalidInputError(f"{path} holds a {type(node).__name__}, not JSON", field=path)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > max_bytes:
        raise InvalidInputError(
            f"{field} is {size} bytes of JSON; the limit is {max_bytes}", field=field
        )
