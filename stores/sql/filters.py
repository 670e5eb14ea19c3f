"""Ownership filters in SQL: LangGraph's auth filters (`{"owner": id}`, `$eq`, `$contains`,
`$or`, `$and`) as a condition on a JSONB document (a row's metadata), for the WHERE clause of
the query that reads, searches, updates or deletes.

A filter is what a `langgraph_sdk.Auth` handler returns; `check_filter` refuses anything else
before it reaches SQL. Matching follows LangGraph's in-memory server: a plain value or `$eq` is
equality of the key's JSON value, `$contains` needs an array under the key holding the value
(or every value of a list), `$or`/`$and` take lists of at least two filters, nested at most two
operators deep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import and_, false, func, literal, or_, select, true, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

RowT = TypeVar("RowT")

Filter = Mapping[str, Any]
"""An auth filter: `{"key": value | {"$eq": value} | {"$contains": value | [values]}}`, with
`$or` / `$and` lists of such filters."""

MAX_NESTING = 2
MAX_KEYS = 64


class FilterError(ValueError):
    """An auth handler returned something that is not a filter (a bug of the handler)."""


def _check_value(key: str, want: Any) -> None:
    if isinstance(want, Mapping):
        if len(want) != 1:
            raise FilterError(f"filter on {key!r} must have exactly one operator")
        operator, value = next(iter(want.items()))
        if operator == "$eq":
            _check_scalar(key, value)
        elif operator == "$contains":
            values = value if isinstance(value, list) else [value]
            for item in values:
                _check_scalar(key, item)
        else:
            raise FilterError(f"filter on {key!r} uses {operator!r}; use $eq or $contains")
        return
    _check_scalar(key, want)


def _check_scalar(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise FilterError(
            f"filter value of {key!r} must be a string, number, boolean or null, "
            f"got {type(value).__name__}"
        )


def check_filter(filter: Any, *, depth: int = 0) -> dict[str, Any]:
    """Return `filter` as a dict if it is a valid auth filter.

    Raises:
        FilterError: naming what is wrong (an unknown operator, nesting too deep, ...).
    """
    if depth > MAX_NESTING:
        raise FilterError(f"filter nests operators more than {MAX_NESTING} deep")
    if not isinstance(filter, Mapping):
        raise FilterError(f"a filter is a dict, got {type(filter).__name__}")
    if len(filter) > MAX_KEYS:
        raise FilterError(f"a filter has at most {MAX_KEYS} keys")
    for key, want in filter.items():
        if not isinstance(key, str) or not key:
            raise FilterError("filter keys are non-empty strings")
        if key in ("$or", "$and"):
            if not isinstance(want, list) or len(want) < 2:
                raise FilterError(f"{key} takes a list of at least two filters")
            for group in want:
                check_filter(group, depth=depth + 1)
        elif key.startswith("$"):
            raise FilterError(f"unknown filter operator {key!r}; use $or or $and")
        else:
            _check_value(key, want)
    return dict(filter)


def _json(value: Any) -> ColumnElement[Any]:
    return type_coerce(value, JSONB)


def _equals(document: Any, key: str, value: Any) -> ColumnElement[bool]:
    # Containment lets PostgreSQL use a GIN index; the equality keeps it exact (containment
    # alone would also match an array holding the value).
    return and_(document.op("@>")(_json({key: value})), document[key] == _json(value))


def _contains(document: Any, key: str, value: Any) -> ColumnElement[bool]:
    values = value if isinstance(value, list) else [value]
    return and_(
        document.op("@>")(_json({key: values})),
        func.jsonb_typeof(document[key]) == literal("array"),
    )


def filter_clause(document: Any, filter: Filter | None) -> ColumnElement[bool]:
    """The SQL condition under which the JSONB `document` (a JSONB column or expression)
    satisfies `filter` (true if None)."""
    if not filter:
        return true()
    clauses: list[ColumnElement[bool]] = []
    for key, want in filter.items():
        if key == "$or":
            clauses.append(or_(false(), *(filter_clause(document, group) for group in want)))
        elif key == "$and":
            clauses.append(and_(true(), *(filter_clause(document, group) for group in want)))
        elif isinstance(want, Mapping):
            operator, value = next(iter(want.items()))
            if operator == "$eq":
                clauses.append(_equals(document, key, value))
            else:
                clauses.append(_contains(document, key, value))
        else:
            clauses.append(_equals(document, key, want))
    return and_(true(), *clauses)


async def visible_row(
    session: AsyncSession,
    model: type[RowT],
    key: Any,
    condition: ColumnElement[bool],
    *,
    for_update: bool = False,
) -> RowT | None:
    """The row of `model` with primary key `key` if it satisfies `condition` (an auth filter's
    clause, in the same statement), else None; locked when `for_update`."""
    stmt = select(model).where(model.__table__.primary_key.columns[0] == key, condition)  # type: ignore[attr-defined]
    if for_update:
        stmt = stmt.with_for_update()
    row: RowT | None = await session.scalar(stmt.execution_options(populate_existing=True))
    return row
