"""`switchboard memory reindex`: rebuild the memory vectors in Qdrant from MongoDB."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio.to_thread
from pydantic import ValidationError

from server.resources import mongodb_uri
from server.settings import Settings
from stores.embeddings import open_embedder
from stores.errors import StoreError
from stores.memory import MongoStore, open_memory_store, open_mongo
from stores.qdrant import open_qdrant


@asynccontextmanager
async def open_memory_only(settings: Settings) -> AsyncIterator[MongoStore]:
    """Open just what the memory store needs: MongoDB, Qdrant and the embedder."""
    async with AsyncExitStack() as stack:
        manager = mongodb_uri(settings)
        uri = await anyio.to_thread.run_sync(manager.__enter__)

        async def _exit() -> None:
            await anyio.to_thread.run_sync(manager.__exit__, None, None, None)

        stack.push_async_callback(_exit)
        qdrant = await stack.enter_async_context(
            open_qdrant(
                url=settings.qdrant_url,
                path=settings.data_dir / "qdrant",
                api_key=settings.qdrant_api_key,
            )
        )
        embedder, dimension, _ = open_embedder(
            provider=settings.embeddings_provider,
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            openai_model=settings.embeddings_model,
            openai_dimension=settings.embeddings_dimension,
        )
        mongo = await stack.enter_async_context(
            open_mongo(
                uri,
                settings.memory_database,
                timeout_ms=settings.mongodb_timeout_ms,
                write_retries=settings.mongodb_write_retries,
                retry_backoff_s=settings.mongodb_retry_backoff_s,
            )
        )
        store, _ = await stack.enter_async_context(
            open_memory_store(
                mongo,
                qdrant=qdrant,
                embedder=embedder,
                dimension=dimension,
                vector_collection=settings.memory_vector_collection,
                index_fields=tuple(settings.memory_index_fields),
                sweep_interval_s=None,
            )
        )
        yield store


async def reindex(settings: Settings) -> tuple[int, int]:
    """Drop and rebuild the memory vectors; returns (items in MongoDB, items indexed)."""
    async with open_memory_only(settings) as store:
        indexed = await store.areindex()
        return await store.acount(), indexed


def cmd_memory_reindex(args: argparse.Namespace) -> int:
    """Rebuild the memory vectors from MongoDB (the source of truth): drop, recreate, re-embed.

    With local-mode Qdrant (no QDRANT_URL) stop the server first: one process holds the folder.
    """
    try:
        settings = Settings()
    except ValidationError as error:
        raise SystemExit(f"invalid settings:\n{error}") from error
    started = time.perf_counter()
    try:
        total, indexed = asyncio.run(reindex(settings))
    except StoreError as error:
        raise SystemExit(f"memory reindex failed: {error}") from error
    took = time.perf_counter() - started
    print(f"reindexed {indexed} of {total} memories in {took:.1f}s")
    return 0


def add_memory_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `memory reindex` to the `switchboard` command."""
    memory = sub.add_parser("memory", help="manage long-term memory")
    actions = memory.add_subparsers(dest="memory_command", required=True)
    rebuild = actions.add_parser(
        "reindex",
        help="rebuild the memory vectors from MongoDB",
        description=cmd_memory_reindex.__doc__,
    )
    rebuild.set_defaults(func=cmd_memory_reindex)
