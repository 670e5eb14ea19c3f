"""The resources a running server owns, opened in the lifespan and handed to routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass

import anyio.to_thread
from qdrant_client import AsyncQdrantClient

from nodes.tools.sandbox import ComputePool, open_compute_pool
from server.config.store import MemoryIndex, StoreSetup, memory_index
from server.settings import Settings
from stores import migrate
from stores.checkpoints import Checkpoints, open_checkpoints
from stores.embedded_mongo import embedded_mongo
from stores.embedded_postgres import embedded_postgres
from stores.embeddings import SharedEmbeddings, open_embedder
from stores.knowledge import KnowledgeBase, open_knowledge
from stores.memory import (
    MongoGateway,
    MongoStore,
    ToolCache,
    ValueLimits,
    open_memory_store,
    open_mongo,
)
from stores.qdrant import open_qdrant
from stores.sql.database import Database, Timeouts, open_database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    """Everything a request may use; built once per process by `open_resources`."""

    settings: Settings
    database: Database
    database_url: str
    database_kind: str  # "external" or "embedded"
    qdrant: AsyncQdrantClient
    embedder: SharedEmbeddings  # one per process: query cache and shared forward passes
    embedding_dimension: int
    embedding_model: str
    knowledge: KnowledgeBase
    memory: MongoStore  # LangGraph store: long-term memory (MongoDB + Qdrant vectors)
    tool_cache: ToolCache
    mongo: MongoGateway
    mongo_kind: str  # "external" or "embedded"
    checkpoints: Checkpoints
    timeouts: Timeouts  # of every PostgreSQL connection: connect and statement
    compute: ComputePool  # worker processes of the tools that compute


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """`DATABASE_URL` when set; else the URL of the embedded PostgreSQL, running until exit."""
    if settings.database_url:
        yield settings.database_url
        return
    with embedded_postgres(
        settings.data_dir / "postgres", start_s=settings.embedded_postgres_start_s
    ) as url:
        yield url


async def _enter_in_thread(manager: AbstractContextManager[str], stack: AsyncExitStack) -> str:
    """Enter a blocking context manager (an embedded server's start) off the event loop."""
    value = await anyio.to_thread.run_sync(manager.__enter__)

    async def _exit() -> None:
        await anyio.to_thread.run_sync(manager.__exit__, None, None, None)

    stack.push_async_callback(_exit)
    return value


@contextmanager
def mongodb_uri(settings: Settings) -> Iterator[str]:
    """`MONGODB_URI` when set; else the URI of an embedded nx-27017, running until exit."""
    if settings.mongodb_uri:
        yield settings.mongodb_uri
        return
    with embedded_mongo(settings.data_dir / "mongo") as uri:
        yield uri


def qdrant_for(settings: Settings) -> AbstractAsyncContextManager[AsyncQdrantClient]:
    """The Qdrant client the settings ask for (server at QDRANT_URL, else local mode)."""
    return open_qdrant(
        url=settings.qdrant_url,
        path=settings.data_dir / "qdrant",
        api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
    )


def embedder_for(settings: Settings) -> tuple[SharedEmbeddings, int, str]:
    """The embedder the settings ask for: (embedder, dimension, model name).

    Close it (`close()`) when done: it owns a worker thread.
    """
    return open_embedder(
        provider=settings.embeddings_provider,
        openai_api_key=settings.openai_api_key,
        openai_base_url=settings.openai_base_url,
        openai_model=settings.embeddings_model,
        openai_dimension=settings.embeddings_dimension,
        backend=settings.embeddings_backend,
        quantize=settings.embeddings_quantize,
        cache_dir=settings.models_dir or settings.data_dir / "models",
        cache_size=settings.embeddings_cache_size,
        max_batch=settings.embeddings_max_batch,
    )


async def open_memory_for(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    qdrant: AsyncQdrantClient,
    index: MemoryIndex,
    store: StoreSetup,
) -> tuple[MongoGateway, MongoStore, ToolCache]:
    """MongoDB (MONGODB_URI or an embedded nx-27017) and the memory store on it, closed by `stack`.

    Items live in MongoDB, their vectors in Qdrant, embedded as `index` says (langgraph.json's
    `store.index`, else the server's embedder); `store.ttl` (else the MEMORY_* settings) sets
    their default TTL. The lifespan sweeps expired items (`server.retention`).
    """
    mongo = await stack.enter_async_context(
        open_mongo(
            await _enter_in_thread(mongodb_uri(settings), stack),
            settings.memory_database,
            timeout_ms=settings.mongodb_timeout_ms,
            write_retries=settings.mongodb_write_retries,
            retry_backoff_s=settings.mongodb_retry_backoff_s,
        )
    )
    memory, tool_cache = await stack.enter_async_context(
        open_memory_store(
            mongo,
            qdrant=qdrant,
            embedder=index.embedder,
            dimension=index.dimension,
            vector_collection=settings.memory_vector_collection,
            index_fields=index.fields,
            default_ttl_minutes=(
                store.default_ttl_minutes
                if store.default_ttl_minutes is not None
                else settings.memory_default_ttl_minutes
            ),
            refresh_on_read=store.refresh_on_read,
            value_limits=ValueLimits(
                max_bytes=settings.memory_max_value_bytes,
                max_depth=settings.memory_max_value_depth,
            ),
        )
    )
    return mongo, memory, tool_cache


# Where a `serve --workers` process that does not hold the Qdrant local folder points its
# client: nothing listens on port 1, so every Qdrant call fails at once as "unavailable".
NO_QDRANT_URL = "http://127.0.0.1:1"


async def _open_qdrant(
    settings: Settings, stack: AsyncExitStack
) -> tuple[AsyncQdrantClient, Settings]:
    """The process's Qdrant client, and its settings.

    Qdrant local mode lets one process hold its folder. Under `serve --workers N` the first
    worker to open it holds it; the others run without Qdrant (their knowledge and memory
    vectors answer as Qdrant being unavailable, and they ingest no samples).
    """
    try:
        return await stack.enter_async_context(qdrant_for(settings)), settings
    except RuntimeError as error:
        if settings.qdrant_url or settings.workers < 2 or "already accessed" not in str(error):
            raise
    log.warning(
        "Qdrant local mode: another worker holds %s; this process runs without Qdrant "
        "(set QDRANT_URL to share a Qdrant server between workers)",
        settings.data_dir / "qdrant",
    )
    client = await stack.enter_async_context(
        open_qdrant(url=NO_QDRANT_URL, path=settings.data_dir / "qdrant")
    )
    return client, settings.model_copy(update={"ingest_samples_on_start": False})


@asynccontextmanager
async def open_resources(
    settings: Settings, *, store: StoreSetup | None = None
) -> AsyncIterator[Resources]:
    """Open the database (embedded or not), migrate it if asked, and close all on exit.

    `store` is what the project's langgraph.json asks of the memory store (default: the
    settings).
    """
    async with AsyncExitStack() as stack:
        url = await _enter_in_thread(database_url(settings), stack)
        kind = "external" if settings.database_url else "embedded"
        if settings.migrate_on_start:
            await anyio.to_thread.run_sync(migrate.upgrade, url)
        timeouts = Timeouts(
            connect_s=settings.db_connect_timeout_s, statement_s=settings.db_statement_timeout_s
        )
        database = await stack.enter_async_context(
            open_database(
                url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout,
                timeouts=timeouts,
            )
        )
        qdrant, settings = await _open_qdrant(settings, stack)
        embedder, dimension, model_name = embedder_for(settings)
        stack.callback(embedder.close)
        # A new MODELS_DIR: the model's export (~30 s of CPU, in a child process) starts now,
        # not at the first recall; nothing waits for it here.
        embedder.prepare_in_background()
        # Raises DimensionMismatchError when a collection was built by another embedder.
        knowledge = await open_knowledge(
            client=qdrant,
            embedder=embedder,
            database=database,
            dimension=dimension,
            chunk_size=settings.chunk_size,
            default_collection=settings.knowledge_default_collection,
            max_bytes=settings.max_upload_bytes,
        )
        # LangGraph's checkpoint tables live in the same database, on a psycopg pool of their own.
        checkpoints = await stack.enter_async_context(
            open_checkpoints(
                url,
                max_size=settings.checkpoint_pool_size,
                timeout_s=settings.db_pool_timeout,
                timeouts=timeouts,
                flush_after_s=settings.checkpoint_flush_s,
            )
        )
        # Long-term memory: items in MongoDB (MONGODB_URI or embedded nx-27017), vectors in Qdrant.
        store = store or StoreSetup()
        index = memory_index(
            store,
            settings,
            server_embedder=embedder,
            server_dimension=dimension,
            server_model=model_name,
        )
        mongo, memory, tool_cache = await open_memory_for(
            settings, stack, qdrant=qdrant, index=index, store=store
        )
        compute = await stack.enter_async_context(
            open_compute_pool(
                processes=settings.tool_processes,
                memory_mb=settings.tool_memory_mb,
                max_output_chars=settings.tool_max_output_chars,
            )
        )
        yield Resources(
            settings=settings,
            database=database,
            database_url=url,
            database_kind=kind,
            qdrant=qdrant,
            embedder=embedder,
            embedding_dimension=dimension,
            embedding_model=model_name,
            knowledge=knowledge,
            memory=memory,
            tool_cache=tool_cache,
            mongo=mongo,
            mongo_kind="external" if settings.mongodb_uri else "embedded",
            checkpoints=checkpoints,
            timeouts=timeouts,
            compute=compute,
        )
