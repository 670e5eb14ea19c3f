"""Long-term memory: a LangGraph store on MongoDB with semantic recall through Qdrant."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langchain_core.embeddings import Embeddings
from qdrant_client import AsyncQdrantClient

from stores.errors import UnavailableError
from stores.memory.mongo import MongoGateway, open_mongo
from stores.memory.store import MongoStore, ValueLimits
from stores.memory.tool_cache import ToolCache
from stores.memory.vectors import MemoryVectors

log = logging.getLogger(__name__)

__all__ = [
    "MemoryVectors",
    "MongoGateway",
    "MongoStore",
    "ToolCache",
    "ValueLimits",
    "open_memory_store",
    "open_mongo",
]


@asynccontextmanager
async def open_memory_store(
    mongo: MongoGateway,
    *,
    qdrant: AsyncQdrantClient | None,
    embedder: Embeddings | None,
    dimension: int,
    vector_collection: str = "memory_vectors",
    index_fields: tuple[str, ...] = ("text", "content"),
    default_ttl_minutes: float | None = None,
    refresh_on_read: bool = True,
    value_limits: ValueLimits | None = None,
) -> AsyncIterator[tuple[MongoStore, ToolCache]]:
    """Open the memory store and the tool cache on `mongo` (the server's lifespan sweeps
    their expired entries: `asweep_ttl`, `ToolCache.sweep`).

    A MongoDB that is down at startup is logged, not fatal: the indexes are created on first
    use and requests answer 503 until the server is back.
    """
    vectors = (
        MemoryVectors(qdrant, collection=vector_collection, dimension=dimension)
        if qdrant is not None and embedder is not None
        else None
    )
    store = MongoStore(
        mongo=mongo,
        vectors=vectors,
        embedder=embedder if vectors is not None else None,
        index_fields=index_fields,
        ttl={
            "refresh_on_read": refresh_on_read,
            "omit_expired": True,
            "default_ttl": default_ttl_minutes,
        },
        loop=asyncio.get_running_loop(),
        value_limits=value_limits,
    )
    cache = ToolCache(mongo)
    try:
        await store.ensure_indexes()
    except UnavailableError as error:
        log.warning("memory store not ready at startup (will retry on use): %s", error)
    if vectors is not None:
        try:
            await vectors.ensure()
        except UnavailableError as error:
            log.error("memory vectors not ready (semantic recall answers 503): %s", error)
    yield store, cache
