"""LangGraph's PostgreSQL checkpointer on a psycopg pool of its own, tables set up on first use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stores.errors import UnavailableError
from stores.sql.database import Timeouts, libpq_url
from stores.tracing import traced

log = logging.getLogger(__name__)

# Any constant works; it only keeps two processes from creating the tables at once.
_SETUP_LOCK_KEY = 5_318_008_001


_DELETE_RUN_WRITES = (
    "DELETE FROM checkpoint_writes w USING checkpoints c "
    "WHERE c.thread_id = %(t)s AND c.metadata->>'run_id' = %(r)s "
    "AND w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns "
    "AND w.checkpoint_id = c.checkpoint_id"
)
_DELETE_RUN_CHECKPOINTS = (
    "DELETE FROM checkpoints WHERE thread_id = %(t)s AND metadata->>'run_id' = %(r)s"
)
_DELETE_LEFT_WRITES = (
    "DELETE FROM checkpoint_writes WHERE thread_id = %(t)s AND checkpoint_id = "
    "(SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = '')"
)


class TimedSaver(AsyncPostgresSaver):
    """LangGraph's PostgreSQL saver whose writes (a checkpoint, a step's pending writes) each
    get a `checkpoint` span (and so the checkpoint-write-time metric)."""

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with traced("checkpoint", "checkpoint put", **{"checkpoint.op": "put"}):
            return await super().aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        with traced("checkpoint", "checkpoint put_writes", **{"checkpoint.op": "put_writes"}):
            await super().aput_writes(config, writes, task_id, task_path)


class Checkpoints:
    """The checkpointer and its pool; `ready()` creates the tables once per process."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self.pool = pool
        self.saver = TimedSaver(pool)  # type: ignore[arg-type]
        self._ready = False
        self._lock = asyncio.Lock()

    async def ready(self) -> AsyncPostgresSaver:
        """The saver, its tables created (under an advisory lock); `UnavailableError` if down."""
        if self._ready:
            return self.saver
        async with self._lock:
            if self._ready:
                return self.saver
            try:
                async with self.pool.connection() as conn:
                    await conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK_KEY,))
                    try:
                        await self.saver.setup()
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))
            except (psycopg.OperationalError, PoolTimeout) as error:
                message = f"the checkpoint database is unavailable: {error}"
                raise UnavailableError(message) from error
            self._ready = True
            return self.saver

    async def prune(self, thread_id: str) -> None:
        """Delete the thread's older checkpoints, keeping the latest (and what it references).

        Without it a thread's rows grow with every step, and reading the latest checkpoint
        (which joins the thread's blobs) slows down as the conversation grows. Failures
        (e.g. a concurrent prune) are logged: pruning is housekeeping, never part of a turn.
        """
        saver = await self.ready()
        try:
            await saver.aprune([thread_id], strategy="keep_latest")
        except psycopg.Error as error:
            log.warning("pruning checkpoints of thread %s failed: %s", thread_id, error)

    async def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint (and pending write) of the thread."""
        await self.saver.adelete_thread(thread_id)

    async def delete_run(self, thread_id: str, run_id: str) -> None:
        """Delete the checkpoints one run wrote on the thread (a rollback), with their pending
        writes and those the run left on the checkpoint it started from."""
        params = {"t": thread_id, "r": run_id}
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_DELETE_RUN_WRITES, params)
            await conn.execute(_DELETE_RUN_CHECKPOINTS, params)
            await conn.execute(_DELETE_LEFT_WRITES, params)


@asynccontextmanager
async def open_checkpoints(
    url: str, *, max_size: int = 10, timeout_s: float = 10.0, timeouts: Timeouts = Timeouts()
) -> AsyncIterator[Checkpoints]:
    """Checkpoints on a pool of up to `max_size` connections; tables are set up at open if the
    database answers, else on first use (a database that is down does not stop the server).

    Args:
        url: PostgreSQL URL of the database that also holds the chat tables.
        max_size: Connections the pool may open (at least 2: setup holds a lock on one).
        timeout_s: Seconds to wait for a free connection.
        timeouts: Connect and statement timeouts of its connections.

    Connections are checked when taken from the pool (one cut by a restart of PostgreSQL is
    replaced instead of failing the run that took it).
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": 0,
        "row_factory": dict_row,
        **timeouts.connect_args(),
    }
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=max(2, max_size),
        timeout=timeout_s,
        kwargs=kwargs,
        open=False,
        name="checkpoints",
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=False)
    checkpoints = Checkpoints(pool)
    try:
        try:
            await checkpoints.ready()
        except UnavailableError as error:
            log.warning("checkpoint tables not set up at startup (will retry on use): %s", error)
        yield checkpoints
    finally:
        await pool.close()
