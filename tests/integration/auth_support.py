"""Helpers of the identity tests: API keys made in a test database, the `owners` project (a
graph that says who runs it, an auth.py as LangGraph's docs write it), authenticated clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from stores.sql.database import open_database
from stores.sql.keys import create_key
from tests.support import ROOT

OWNERS = ROOT / "tests" / "projects" / "owners"
BUILTIN_PROJECT = OWNERS / "builtin.json"  # whoami + chat, no auth.path: the built-in one
CUSTOM_PROJECT = OWNERS / "langgraph.json"  # whoami, auth.path = ./auth.py:auth


def make_keys(database_url: str, users: Mapping[str, bool]) -> dict[str, str]:
    """An API key for each email of `users` (True: an admin key), made in the database."""

    async def make() -> dict[str, str]:
        async with open_database(database_url, pool_size=1, max_overflow=0) as db:
            return {
                email: (await create_key(db, email=email, admin=admin))[0]
                for email, admin in users.items()
            }

    # In a thread of its own: a test driving a browser has an event loop running already.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, make()).result()


@contextmanager
def client_with_key(url: str, key: str | None, **kwargs: Any) -> Iterator[httpx.Client]:
    """An HTTP client of `url` sending `key` as a bearer token (none when None)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60, **kwargs) as client:
        yield client


def text_file(tmp: Path, name: str, text: str) -> Path:
    """A small text file to upload."""
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path
