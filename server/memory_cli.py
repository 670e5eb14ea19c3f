"""`switchboard memory reindex`: rebuild the memory vectors in Qdrant from MongoDB."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from server.config.project import ProjectError, import_object, read_project
from server.config.store import StoreConfigError, memory_index, store_setup
from server.ingest import local_store_busy
from server.resources import embedder_for, open_memory_for, qdrant_for
from server.settings import Settings, load_settings
from stores.errors import StoreError
from stores.memory import MongoStore


@asynccontextmanager
async def open_memory_only(settings: Settings) -> AsyncIterator[MongoStore]:
    """Open just what the memory store needs: MongoDB, Qdrant and the embedder that
    langgraph.json's `store.index` names (else the server's)."""
    project = read_project(settings.langgraph_config)
    setup = store_setup(
        project.config.store, import_embed=lambda ref: import_object(ref, root=project.root)
    )
    async with AsyncExitStack() as stack:
        qdrant = await stack.enter_async_context(qdrant_for(settings))
        embedder, dimension, model = embedder_for(settings)
        index = memory_index(
            setup,
            settings,
            server_embedder=embedder,
            server_dimension=dimension,
            server_model=model,
        )
        _, store, _ = await open_memory_for(
            settings, stack, qdrant=qdrant, index=index, store=setup
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
    settings = load_settings()
    started = time.perf_counter()
    try:
        total, indexed = asyncio.run(reindex(settings))
    except (StoreError, ProjectError, StoreConfigError) as error:
        raise SystemExit(f"memory reindex failed: {error}") from error
    except RuntimeError as error:  # Qdrant local mode: a running server holds the folder
        raise local_store_busy(settings, error) from error
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
