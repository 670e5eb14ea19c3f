"""Auth filters in SQL: LangGraph's filter language (equality, `$eq`, `$contains`, `$or`, `$and`)
as a condition on a JSONB document, evaluated by PostgreSQL as LangGraph's server matches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select
from sqlalchemy.dialects.postgresql import JSONB

from stores.sql.database import open_database
from stores.sql.filters import FilterError, check_filter, filter_clause

DOCUMENTS: dict[int, dict[str, Any]] = {
    1: {"owner": "ada"},
    2: {"owner": "bob"},
    3: {"owner": ["ada", "bob"]},  # an array is not equal to one of its elements
    4: {"owner": "ada", "team": ["red", "blue"]},
    5: {"team": ["red"], "level": 3},
    6: {"owner": "ada", "nested": {"owner": "bob"}},
    7: {},
    8: {"team": "red"},  # a string under `team` contains nothing
}
CASES: list[tuple[dict[str, Any], set[int]]] = [
    ({"owner": "ada"}, {1, 4, 6}),
    ({"owner": {"$eq": "ada"}}, {1, 4, 6}),
    ({"owner": {"$contains": "ada"}}, {3}),
    ({"owner": {"$contains": ["ada", "bob"]}}, {3}),
    ({"team": {"$contains": "red"}}, {4, 5}),
    ({"team": {"$contains": ["red", "blue"]}}, {4}),
    ({"owner": "ada", "team": {"$contains": "blue"}}, {4}),
    ({"level": 3}, {5}),
    ({"$or": [{"owner": "bob"}, {"level": 3}]}, {2, 5}),
    ({"$and": [{"owner": "ada"}, {"team": {"$contains": "red"}}]}, {4}),
    ({"$or": [{"owner": "carol"}, {"$and": [{"team": "red"}, {"team": "red"}]}]}, {8}),
    ({"owner": "carol"}, set()),
    ({}, set(DOCUMENTS)),
]


def test_filters_select_the_rows_langgraph_would(database_url: str) -> None:
    table = Table("filter_docs", MetaData(), Column("id", Integer, primary_key=True),
                  Column("doc", JSONB, nullable=False))  # fmt: skip

    async def run() -> list[tuple[dict[str, Any], set[int]]]:
        async with open_database(database_url, pool_size=1, max_overflow=0) as db:
            async with db.engine.begin() as conn:
                await conn.run_sync(table.metadata.create_all)
                await conn.execute(
                    table.insert(), [{"id": k, "doc": v} for k, v in DOCUMENTS.items()]
                )
            found = []
            async with db.engine.connect() as conn:
                for wanted, _ in CASES:
                    rows = await conn.scalars(
                        select(table.c.id).where(filter_clause(table.c.doc, check_filter(wanted)))
                    )
                    found.append((wanted, set(rows.all())))
            async with db.engine.begin() as conn:
                await conn.run_sync(table.metadata.drop_all)
            return found

    for (wanted, expected), (_, got) in zip(CASES, asyncio.run(run()), strict=True):
        assert got == expected, wanted


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"owner": {"$ne": "ada"}}, r"use \$eq or \$contains"),
        ({"owner": {"$eq": "a", "$contains": "b"}}, "exactly one operator"),
        ({"$not": [{}, {}]}, "unknown filter operator"),
        ({"$or": [{"owner": "ada"}]}, "at least two"),
        ({"owner": {"nested": "dict"}}, r"use \$eq or \$contains"),
        ({"owner": ["a", "b"]}, "string, number, boolean or null"),
        ({"$or": [{"$or": [{"$or": [{}, {}]}, {}]}, {}]}, "more than 2 deep"),
        ("owner", "a filter is a dict"),
    ],
)
def test_what_is_not_a_filter_is_refused_naming_why(bad: Any, says: str) -> None:
    with pytest.raises(FilterError, match=says):
        check_filter(bad)
