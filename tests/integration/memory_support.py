"""Memory test helpers: an nx-27017 server per module, an open MongoStore on its own database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from stores.embedded_mongo import EmbeddedMongo
from stores.memory import MongoStore, ToolCache, open_memory_store, open_mongo
from stores.qdrant import open_qdrant
from tests.integration.knowledge_support import shared_embedder

FACTS = [
    "I'm allergic to peanuts",
    "My favourite colour is blue",
    "I live in Lisbon",
    "I work night shifts as a nurse",
    "I have two cats named Miso and Tofu",
    "I play the guitar on weekends",
    "My birthday is on the 3rd of May",
    "I drive a red hatchback",
    "I listen to jazz while working",
    "I'm learning Japanese",
    "I run five kilometres every morning",
]
"""Eleven memories; only the first says anything about food to avoid."""


@contextmanager
def nx_server(folder: Path) -> Iterator[EmbeddedMongo]:
    """A real nx-27017 server on a free loopback port, stopped on exit."""
    server = EmbeddedMongo(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def open_test_store(
    uri: str,
    qdrant_path: Path,
    *,
    semantic: bool = True,
    timeout_ms: int = 2000,
    write_retries: int = 2,
    database: str | None = None,
) -> AsyncIterator[tuple[MongoStore, ToolCache]]:
    """A MongoStore + ToolCache on a database of its own, vectors in local-mode Qdrant."""
    database = database or f"t_{uuid.uuid4().hex[:12]}"
    embedder = shared_embedder() if semantic else None
    async with (
        open_mongo(
            uri, database, timeout_ms=timeout_ms, write_retries=write_retries, retry_backoff_s=0.05
        ) as mongo,
        open_qdrant(url=None, path=qdrant_path) as qdrant,
        open_memory_store(
            mongo,
            qdrant=qdrant if semantic else None,
            embedder=embedder,
            dimension=384,
        ) as (store, cache),
    ):
        yield store, cache
