"""Search filters on item values: LangGraph's semantics, with a safe subset pushed to MongoDB."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
_PUSHABLE = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte"})
# The field names pushed down to MongoDB: letters, digits, `_` and `-`, not starting with `$`.
_PLAIN_FIELD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")


def check_filter(filter: Mapping[str, Any]) -> None:
    """Raise `ValueError` naming the first unsupported operator in `filter`."""
    for field, wanted in filter.items():
        if isinstance(wanted, Mapping) and any(str(k).startswith("$") for k in wanted):
            for operator in wanted:
                if operator not in OPERATORS:
                    raise ValueError(
                        f"unsupported filter operator {operator!r} on {field!r}; "
                        f"use one of {', '.join(sorted(OPERATORS))}"
                    )


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _ordered(have: Any, operator: str, want: Any) -> bool:
    numbers = _scalar(have) and _scalar(want) and not isinstance(have, str)
    numbers = numbers and not isinstance(want, str)
    strings = isinstance(have, str) and isinstance(want, str)
    if not (numbers or strings):
        return False
    if operator == "$gt":
        return bool(have > want)
    if operator == "$gte":
        return bool(have >= want)
    if operator == "$lt":
        return bool(have < want)
    return bool(have <= want)


def _apply(have: Any, operator: str, want: Any) -> bool:
    if operator == "$eq":
        return bool(have == want)
    if operator == "$ne":
        return bool(have != want)
    if operator in {"$gt", "$gte", "$lt", "$lte"}:
        return _ordered(have, operator, want)
    raise ValueError(f"unsupported filter operator {operator!r}")


def _compare(have: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        if any(str(k).startswith("$") for k in want):
            return all(_apply(have, op, v) for op, v in want.items())
        if not isinstance(have, Mapping):
            return False
        return all(_compare(have.get(k), v) for k, v in want.items())
    if isinstance(want, (list, tuple)):
        return (
            isinstance(have, (list, tuple))
            and len(have) == len(want)
            and all(_compare(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)


def matches_filter(value: Any, filter: Mapping[str, Any] | None) -> bool:
    """Whether an item value satisfies `filter` (exact match, nested objects, operators).

    Comparison operators compare numbers with numbers and strings with strings; anything
    else does not match.
    """
    if not filter:
        return True
    if not isinstance(value, Mapping):
        return False
    return all(_compare(value.get(field), wanted) for field, wanted in filter.items())


def mongo_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of `filter` MongoDB can pre-select on, as a query on `value.<field>`.

    Only scalar equality and ordering on plain field names are pushed down: they select a
    superset of the matches on MongoDB (which also matches array elements) and exactly the
    matches on nx-27017, which cannot compare arrays or objects. `matches_filter` then checks
    every candidate, so the results are the same on both.
    """
    query: dict[str, Any] = {}
    for field, wanted in (filter or {}).items():
        if not _PLAIN_FIELD.fullmatch(field):
            # Any other name is matched by `matches_filter` alone: nx-27017 writes a pushed
            # name into its SQL, and one with a quote was a syntax error there (a 500).
            continue
        if _scalar(wanted):
            query[f"value.{field}"] = wanted
        elif isinstance(wanted, Mapping) and any(str(k).startswith("$") for k in wanted):
            pushed = {op: v for op, v in wanted.items() if op in _PUSHABLE and _scalar(v)}
            if pushed:
                query[f"value.{field}"] = pushed
    return query
