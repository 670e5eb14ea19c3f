"""LangGraph's PostgreSQL checkpointer on a psycopg pool of its own, tables set up on first use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, Final

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    copy_checkpoint,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from opentelemetry.util.types import AttributeValue
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel

from stores.errors import UnavailableError
from stores.sql.database import ASYNC_COMMIT, Timeouts, is_cut, is_transient, libpq_url
from stores.tracing import traced

log = logging.getLogger(__name__)

# Any constant works; it only keeps two processes from creating the tables at once.
_SETUP_LOCK_KEY = 5_318_008_001


_LATEST = "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"
LATEST_CHECKPOINT_SQL: Final = AsyncPostgresSaver.SELECT_SQL + _LATEST
"""The saver's read of a thread's latest checkpoint in the root namespace (parameters: the
thread id, then ''), as LangGraph's `aget_tuple` sends it: for a statement that writes a run
to read it in the same round trip (`RunWrites.latest`). Read it with a binary cursor, as the
saver does."""
_DELETE_RUN_WRITES = (
    "DELETE FROM checkpoint_writes w USING checkpoints c "
    "WHERE c.thread_id = %(t)s AND c.metadata->>'run_id' = %(r)s "
    "AND w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns "
    "AND w.checkpoint_id = c.checkpoint_id"
)
_DELETE_RUN_CHECKPOINTS = (
    "DELETE FROM checkpoints WHERE thread_id = %(t)s AND metadata->>'run_id' = %(r)s"
)
# A batch of queued writes as one statement per table (`batched`): LangGraph's UPSERT_* /
# INSERT_* statements with the same conflict clauses, their rows' text columns in one JSON
# array (a row an array) and their bytea column in one binary array, zipped by `ROWS FROM`
# (one `json.dumps` and two parameters a table: cheaper to send than an array a column).
_BLOBS_BATCH = (
    "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)"
    " SELECT r->>0, r->>1, r->>2, r->>3, r->>4, b"
    " FROM ROWS FROM (jsonb_array_elements(%b::jsonb), unnest(%b::bytea[])) AS x(r, b)"
    " ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING"
)
_CHECKPOINTS_BATCH = (
    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,"
    " checkpoint, metadata) SELECT r->>0, r->>1, r->>2, r->>3, r->4, r->5"
    " FROM jsonb_array_elements(%b::jsonb) AS r"
    " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)"
    " DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata"
)
_WRITES_BATCH = (
    "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
    " task_path, idx, channel, type, blob)"
    " SELECT r->>0, r->>1, r->>2, r->>3, r->>4, (r->>5)::integer, r->>6, r->>7, b"
    " FROM ROWS FROM (jsonb_array_elements(%b::jsonb), unnest(%b::bytea[])) AS x(r, b)"
    " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) "
)
_WRITES_UPSERT_BATCH = (
    _WRITES_BATCH + "DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type,"
    " blob = EXCLUDED.blob"
)
_WRITES_INSERT_BATCH = _WRITES_BATCH + "DO NOTHING"

_UPSERT_BLOBS = AsyncPostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL
_UPSERT_CHECKPOINTS = AsyncPostgresSaver.UPSERT_CHECKPOINTS_SQL
_UPSERT_WRITES = AsyncPostgresSaver.UPSERT_CHECKPOINT_WRITES_SQL
_INSERT_WRITES = AsyncPostgresSaver.INSERT_CHECKPOINT_WRITES_SQL

_DELETE_LEFT_WRITES = (
    "DELETE FROM checkpoint_writes WHERE thread_id = %(t)s AND checkpoint_id = "
    "(SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = '')"
)


FLUSH_AFTER_S = 0.05
"""How long a run's checkpoint writes may wait in memory before they are sent (all of them in
one pipelined round trip), by default (`CHECKPOINT_FLUSH_S`). A run that ends, or a read of its
thread, sends them at once."""

INLINE_BUDGET = 2048
"""The most a run's checkpoint values may weigh (`_weight`: 8 a value, 1 a character) to be
serialised on the event loop instead of in a worker thread. The trivial graph's two messages
weigh ~350; serialising 2048 takes ~50 µs here, weighing them about as long, against ~50 µs of
CPU and ~80 µs of wall time for the thread hand-off alone."""
_SCALARS = (bool, int, float, type(None))

BATCH_BYTES = 16 * 1024 * 1024
"""The most one statement of a batch (`batched`) carries, in its rows' bytes (blobs, and the
strings a checkpoint keeps inline): more rows go in another statement of the same transaction.
One statement of a run's many large writes would otherwise be refused by PostgreSQL (a JSONB
array over 256 MiB, a parameter over 1 GiB) or cost it that much memory at once; a single row
over it goes alone."""

_BACKGROUND: set[asyncio.Task[None]] = set()  # flushes started by a timer, kept referenced
_RUN_WRITES: ContextVar[RunWrites | None] = ContextVar("switchboard_run_writes", default=None)
# A finished run reading its thread's latest checkpoint: from its own `RunWrites.head`.
_OWN_HEAD: ContextVar[RunWrites | None] = ContextVar("switchboard_own_head", default=None)


Op = tuple[str, Any, bool]
"""A queued write: a statement, its parameters and whether they are many sets (`executemany`)."""


class RunWrites:
    """The checkpoint writes of one run attempt on one thread not yet sent to PostgreSQL.

    Made by `Checkpoints.run_writes` and bound to the run's task (`Checkpoints.bind`): the
    saver queues that task's `aput`/`aput_writes` of the thread here instead of writing each
    at once. They are sent `flush_after_s` after the first one queued and before any read of
    the thread in this process (committed without waiting for the WAL flush: `ASYNC_COMMIT`),
    and when the run ends, by its finish's transaction (`Checkpoints.take`) or on their own
    (`Checkpoints.flush`). A crash loses what was not sent yet: what LangGraph's
    `durability="async"` allows (the next attempt resumes from the last stored checkpoint).
    """

    __slots__ = (
        "closed",
        "head",
        "head_writes",
        "latest",
        "lock",
        "ops",
        "shared",
        "thread_id",
        "timer",
        "unstored",
    )

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.ops: list[Op] = []  # (statement, params, executemany)
        self.lock = asyncio.Lock()  # held while a batch is being sent
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        # The thread's latest checkpoint as this run put it (config, checkpoint, metadata,
        # parent config), and the pending writes the run put, by checkpoint id, then by
        # (task id, idx): what a read of the thread's latest checkpoint returns once they are
        # stored. None until the run puts one, and once anything else writes the thread here.
        self.head: (
            tuple[RunnableConfig, Checkpoint, CheckpointMetadata, RunnableConfig | None] | None
        ) = None
        self.head_writes: dict[str, dict[tuple[str, int], tuple[str, str, Any]]] = {}
        self.shared = False  # something else wrote the thread here: no head from then on
        # The thread had no checkpoint stored when the run was written (its creating statement
        # read so under the thread row's lock): the run's own first read of the latest
        # checkpoint, before it puts one, finds none without a query.
        self.unstored = False
        # The thread's latest checkpoint as the statement that wrote the run read it, under
        # the thread row's lock, in the same round trip (a row of `LATEST_CHECKPOINT_SQL`):
        # the run's own first read of the latest checkpoint, before it puts one, loads it
        # instead of reading it again. Taken once.
        self.latest: DictRow | None = None

    def busy(self) -> bool:
        """Whether writes are queued or being sent (a read must wait for them)."""
        return bool(self.ops) or self.lock.locked()

    def pop(self) -> list[Op]:
        """The queued writes, out of the queue, its timer cancelled (under `lock`)."""
        ops, self.ops = self.ops, []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return ops


def batched(ops: Sequence[Op], *, max_bytes: int | None = None) -> list[Op]:
    """The queued writes as one statement per table (two for pending writes when both of
    LangGraph's kinds are queued), storing what the statements would store sent one by one in
    order. A row whose key comes again in the batch is merged as its conflict clause would
    have it, since one statement may not update a row twice: blobs and
    `INSERT_CHECKPOINT_WRITES_SQL` keep the first; checkpoints take the last's checkpoint and
    metadata, the first's parent; `UPSERT_CHECKPOINT_WRITES_SQL` the last's channel, type and
    blob, the first's task path. The tables have no constraint between them, so their order
    within a transaction does not matter. Anything else queued: `ops` as they are. (The bench's
    trivial run: 15 statements, 3 now; ~28 % less client CPU to send, ~10 % less of
    PostgreSQL's.) A table's rows weighing more than `max_bytes` (`_row_bytes`) are split over
    several statements, sent in the same transaction as one would be (default `BATCH_BYTES`)."""
    cap = BATCH_BYTES if max_bytes is None else max_bytes
    blobs: dict[tuple[Any, ...], Sequence[Any]] = {}
    checkpoints: dict[tuple[Any, ...], Sequence[Any]] = {}
    writes: dict[tuple[Any, ...], tuple[Sequence[Any], bool]] = {}
    for statement, params, many in ops:
        rows: Sequence[Sequence[Any]] = params if many else (params,)
        if statement == _UPSERT_BLOBS:
            for row in rows:
                blobs.setdefault((row[0], row[1], row[2], row[3]), row)
        elif statement == _UPSERT_CHECKPOINTS:
            for row in rows:
                at = (row[0], row[1], row[2])
                first = checkpoints.get(at)
                checkpoints[at] = row if first is None else (*first[:4], row[4], row[5])
        elif statement in (_UPSERT_WRITES, _INSERT_WRITES):
            upsert = statement == _UPSERT_WRITES
            for row in rows:
                key = (row[0], row[1], row[2], row[3], row[5])
                earlier = writes.get(key)
                if earlier is None:
                    writes[key] = (row, upsert)
                elif upsert:
                    writes[key] = ((*earlier[0][:6], *row[6:]), True)
        else:
            return list(ops)
    out: list[Op] = []
    for rows in _split(list(blobs.values()), cap):
        params = (Jsonb([row[:5] for row in rows]), [row[5] for row in rows])
        out.append((_BLOBS_BATCH, params, False))
    for rows in _split(list(checkpoints.values()), cap):
        points = [[*row[:4], _obj(row[4]), _obj(row[5])] for row in rows]
        out.append((_CHECKPOINTS_BATCH, (Jsonb(points),), False))
    for upsert, statement in ((False, _WRITES_INSERT_BATCH), (True, _WRITES_UPSERT_BATCH)):
        kind = [row for row, is_upsert in writes.values() if is_upsert is upsert]
        for rows in _split(kind, cap):
            params = (Jsonb([row[:8] for row in rows]), [row[8] for row in rows])
            out.append((statement, params, False))
    return out


_BATCHES = frozenset((_BLOBS_BATCH, _CHECKPOINTS_BATCH, _WRITES_INSERT_BATCH, _WRITES_UPSERT_BATCH))


def in_one(ops: Sequence[Op], *, max_bytes: int | None = None) -> Op | None:
    """The queued writes as one statement committed without waiting for the WAL flush (for a
    run's progress, as `ASYNC_COMMIT`): `batched`'s statements, one a table, as data-modifying
    `WITH` queries, `set_config('synchronous_commit', 'off', true)` its main query (its
    transaction is the statement's). None when the rows weigh more than `max_bytes` in all
    (default `BATCH_BYTES`: they are split over several statements, `batched`) or something
    else is queued: a pipeline of `batched` then. (In-process, a 3-table batch: ~half the
    client CPU of the pipeline of set_config and one statement a table, chat3's figures.)"""
    cap = BATCH_BYTES if max_bytes is None else max_bytes
    weight = 0
    for _, params, many in ops:
        for row in params if many else (params,):
            weight += _row_bytes(row)
    if not ops or weight > cap:
        return None
    batch = batched(ops, max_bytes=cap)
    if any(statement not in _BATCHES or many for statement, _, many in batch):
        return None
    parts = ", ".join(f"w{n} AS ({statement})" for n, (statement, _, _) in enumerate(batch))
    params = tuple(value for _, values, _ in batch for value in values)
    return (f"WITH {parts} {ASYNC_COMMIT}", params, False)


def _split(rows: list[Sequence[Any]], max_bytes: int) -> Iterator[list[Sequence[Any]]]:
    """`rows` in runs of at most `max_bytes` (`_row_bytes`), each at least one row, in order."""
    start, size = 0, 0
    for at, row in enumerate(rows):
        weight = _row_bytes(row)
        if at > start and size + weight > max_bytes:
            yield rows[start:at]
            start, size = at, 0
        size += weight
    if start < len(rows):
        yield rows[start:]


def _row_bytes(row: Sequence[Any]) -> int:
    """About what a queued row weighs in its statement: its text and binary columns, and the
    strings a checkpoint keeps inline among its channel values (LangGraph keeps scalars in the
    checkpoint, everything else in blobs); 64 for the rest."""
    weight = 64
    for value in row:
        if isinstance(value, str | bytes):
            weight += len(value)
        elif isinstance(value, Jsonb) and isinstance(value.obj, dict):
            channels = value.obj.get("channel_values")
            if isinstance(channels, dict):
                weight += sum(len(v) for v in channels.values() if isinstance(v, str | bytes))
    return weight


def _obj(value: Any) -> Any:
    """A JSONB parameter's value (`Jsonb` wraps what LangGraph's statements send)."""
    return value.obj if isinstance(value, Jsonb) else value


def _light(values: Any, budget: int = INLINE_BUDGET) -> bool:
    """Whether `values` are plain data (scalars, strings, containers, pydantic models such as
    messages) weighing at most `budget`: cheap enough to serialise on the event loop. Stops
    at the first value of another kind or once over the budget, so it costs at most about
    what serialising `budget` would."""
    stack = [values]
    while stack:
        item = stack.pop()
        budget -= 8
        if isinstance(item, str | bytes):
            budget -= len(item)
        elif isinstance(item, _SCALARS):
            pass
        elif isinstance(item, dict):
            budget -= 8 * len(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, BaseModel):
            stack.extend(item.__dict__.values())
        else:
            return False
        if budget < 0:
            return False
    return True


def _thread_of(config: RunnableConfig) -> str:
    return str(config["configurable"]["thread_id"])


class TimedSaver(AsyncPostgresSaver):
    """LangGraph's PostgreSQL saver, with three changes for the server's runs.

    - A run's writes (a checkpoint, a step's pending writes) wait in its `RunWrites` and go
      out in one pipelined round trip (`flush`, traced as a `checkpoint` span, so the
      checkpoint-write-time metric); reads and writes of the thread from elsewhere in this
      process send them first, and a read sends them in the same round trip as its SELECT.
    - No process-wide lock around each statement: LangGraph's saver holds one `asyncio.Lock`
      for every checkout, statement and row decoding, which a pool does not need (each call
      gets a connection of its own), so one run's checkpoints waited for every other run's.
    - The writes of any other caller are sent at once, as before.
    """

    def __init__(
        self, pool: AsyncConnectionPool[AsyncConnection[Any]], *, flush_after_s: float
    ) -> None:
        super().__init__(pool)  # type: ignore[arg-type]
        self.pool = pool
        self.flush_after_s = flush_after_s
        self.pending: dict[str, RunWrites] = {}  # thread id -> the writes of its run here

    # -- connections ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        async with _connection(self.pool) as conn:
            if pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur

    # -- a run's queued writes ------------------------------------------------------------------

    def _queue_of(self, config: RunnableConfig) -> RunWrites | None:
        """The calling run's queue, if the write is for its thread."""
        writes = _RUN_WRITES.get()
        if writes is None or writes.closed or writes.thread_id != _thread_of(config):
            return None
        return writes

    def _queue(self, writes: RunWrites, ops: list[Op]) -> None:
        writes.ops.extend(ops)
        if writes.timer is None:
            loop = asyncio.get_running_loop()
            writes.timer = loop.call_later(self.flush_after_s, self._flush_later, writes)

    def _flush_later(self, writes: RunWrites) -> None:
        writes.timer = None
        if not writes.closed and writes.ops:
            task = asyncio.get_running_loop().create_task(self._flush_quietly(writes))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    async def _flush_quietly(self, writes: RunWrites) -> None:
        try:
            await self.flush_writes(writes)
        except Exception as error:  # kept (or dropped if never storable); the run's end retries
            log.info("sending checkpoints of thread %s failed: %r", writes.thread_id, error)

    async def flush_writes(
        self, writes: RunWrites, select: tuple[str, tuple[Any, ...]] | None = None
    ) -> DictRow | None:
        """Send the queued writes in one pipelined round trip, with `select` (a query whose
        first row is returned) at its end; writes that failed on a connection error stay
        queued (to be sent again: every statement is an upsert), others are dropped."""
        async with writes.lock:
            ops = writes.pop()
            if not ops and select is None:
                return None
            try:
                # A flush without a read after it: one statement when it can be.
                one = in_one(ops) if select is None else None
                batch = [one] if one is not None else batched(ops)
                attributes: dict[str, AttributeValue] = {
                    "checkpoint.op": "flush",
                    "checkpoint.statements": len(batch),
                }
                with traced("checkpoint", "checkpoint flush", **attributes):
                    if one is not None:
                        await self._send_one(one)
                        return None
                    return await self._send(batch, select)
            except BaseException as error:
                if not isinstance(error, Exception) or is_transient(error):
                    writes.ops[:0] = ops
                raise

    async def _send_one(self, op: Op) -> None:
        """Send one statement (`in_one`), its own transaction, outside a pipeline."""
        async with _connection(self.pool) as conn, conn.cursor(binary=True) as cur:
            await cur.execute(op[0], op[1])

    async def _send(
        self, ops: list[Op], select: tuple[str, tuple[Any, ...]] | None
    ) -> DictRow | None:
        async with _connection(self.pool) as conn, conn.pipeline():
            async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                if ops:  # a run's progress: its commit need not wait for the WAL flush
                    await cur.execute(ASYNC_COMMIT)
                for statement, params, many in ops:
                    if many:
                        await cur.executemany(statement, params)
                    else:
                        await cur.execute(statement, params)
            if select is None:
                return None
            async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                await cur.execute(select[0], select[1], binary=True)
                return await cur.fetchone()

    async def settle(self, thread_id: str) -> None:
        """Send the thread's queued writes, if a run of this process has any (waiting for a
        batch being sent), so what follows sees them."""
        writes = self.pending.get(thread_id)
        if writes is not None and writes.busy():
            await self.flush_writes(writes)

    async def discard(self, thread_id: str) -> None:
        """Drop the thread's queued writes (its checkpoints are being deleted), once a batch
        being sent has gone out."""
        writes = self.pending.get(thread_id)
        if writes is not None:
            writes.head, writes.shared = None, True
            async with writes.lock:
                writes.ops.clear()

    def _foreign_write(self, config: RunnableConfig) -> None:
        """A write of the thread from outside its run's task: the run's head is no longer
        known to be the thread's latest checkpoint."""
        writes = self.pending.get(_thread_of(config))
        if writes is not None:
            writes.head, writes.shared = None, True

    # -- LangGraph's saver interface --------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        writes = self._queue_of(config)
        if writes is None:
            self._foreign_write(config)
            await self.settle(_thread_of(config))
            with traced("checkpoint", "checkpoint put", **{"checkpoint.op": "put"}):
                return await super().aput(config, checkpoint, metadata, new_versions)
        # What LangGraph's `aput` writes, queued (its statements, in its order).
        writes.unstored, writes.latest = False, None
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable["checkpoint_ns"]
        copy = checkpoint.copy()
        copy["channel_values"] = copy["channel_values"].copy()
        blob_values = {}
        for key, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blob_values[key] = copy["channel_values"].pop(key)
                copy["channel_values"][key] = True
            elif value is None or isinstance(value, str | int | float | bool):
                pass
            else:
                blob_values[key] = copy["channel_values"].pop(key)
        ops: list[Op] = []
        if blob_versions := {k: v for k, v in new_versions.items() if k in blob_values}:
            dumped = [blob_values[k] for k in blob_versions if k in blob_values]
            if _light(dumped):  # serialised here: less than the thread hand-off would cost
                blobs = self._dump_blobs(thread_id, checkpoint_ns, blob_values, blob_versions)
            else:
                blobs = await asyncio.to_thread(
                    self._dump_blobs, thread_id, checkpoint_ns, blob_values, blob_versions
                )
            ops.append((self.UPSERT_CHECKPOINT_BLOBS_SQL, blobs, True))
        row = (
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            Jsonb(copy),
            Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
        )
        ops.append((self.UPSERT_CHECKPOINTS_SQL, row, False))
        self._queue(writes, ops)
        stored: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        if checkpoint_ns == "":
            newest = checkpoint["id"]  # writes on older checkpoints are of no use any more
            writes.head_writes = {k: v for k, v in writes.head_writes.items() if k >= newest}
            if writes.shared or any(
                isinstance(v, _DeltaSnapshot) for v in checkpoint["channel_values"].values()
            ):
                writes.head = None  # read the thread back instead
            else:
                parent_id = configurable.get("checkpoint_id")
                parent: RunnableConfig | None = None
                if parent_id:
                    parent = {
                        "configurable": {
                            "thread_id": thread_id,
                            "checkpoint_ns": checkpoint_ns,
                            "checkpoint_id": parent_id,
                        }
                    }
                meta = get_serializable_checkpoint_metadata(config, metadata)
                writes.head = (stored, checkpoint, meta, parent)
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        queue = self._queue_of(config)
        if queue is None:
            self._foreign_write(config)
            await self.settle(_thread_of(config))
            with traced("checkpoint", "checkpoint put_writes", **{"checkpoint.op": "put_writes"}):
                await super().aput_writes(config, writes, task_id, task_path)
            return
        query = (
            self.UPSERT_CHECKPOINT_WRITES_SQL
            if all(w[0] in WRITES_IDX_MAP for w in writes)
            else self.INSERT_CHECKPOINT_WRITES_SQL
        )
        configurable = config["configurable"]
        args = (
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        if _light([value for _, value in writes]):
            params = self._dump_writes(*args)
        else:
            params = await asyncio.to_thread(self._dump_writes, *args)
        self._queue(queue, [(query, params, True)])
        if configurable["checkpoint_ns"] == "":
            # Kept by checkpoint: LangGraph sends a step's writes and the next checkpoint in
            # the background, so either may come first.
            checkpoint_id = configurable["checkpoint_id"]
            head = queue.head
            if head is not None and checkpoint_id < head[0]["configurable"]["checkpoint_id"]:
                return  # on a checkpoint older than the latest: never read as the latest
            kept = queue.head_writes.setdefault(checkpoint_id, {})
            upsert = query is self.UPSERT_CHECKPOINT_WRITES_SQL
            for idx, (channel, value) in enumerate(writes):
                key = (task_id, WRITES_IDX_MAP.get(channel, idx))
                if upsert or key not in kept:  # as the statement stores it
                    kept[key] = (task_path, channel, value)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = _thread_of(config)
        writes = self.pending.get(thread_id)
        first = writes is not None and _runs_first_read(writes, config)
        if first and writes is not None and writes.unstored:
            writes.unstored = False  # once: what the run puts from now on is read as before
            return None
        if first and writes is not None and writes.latest is not None:
            latest, writes.latest = writes.latest, None  # once, as `unstored`
            if latest["checkpoint"]["v"] >= 4 or not latest["parent_checkpoint_id"]:
                return await self._load_checkpoint_tuple(latest)
        own = _OWN_HEAD.get()
        if (
            own is not None
            and own is writes
            and not get_checkpoint_id(config)
            and config["configurable"].get("checkpoint_ns", "") == ""
            and own.head is not None
            and not own.closed
        ):
            return _head_tuple(own)  # its writes are sent by the finish (`take`)
        if writes is None or not writes.busy():
            return await super().aget_tuple(config)
        # The queued writes and the read in one round trip.
        checkpoint_id = get_checkpoint_id(config)
        checkpoint_ns = config["configurable"].get("checkpoint_ns", "")
        if checkpoint_id:
            args: tuple[Any, ...] = (thread_id, checkpoint_ns, checkpoint_id)
            where = "WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s"
        else:
            args = (thread_id, checkpoint_ns)
            where = (
                "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"
            )
        value = await self.flush_writes(writes, (self.SELECT_SQL + where, args))
        if value is None:
            return None
        if value["checkpoint"]["v"] < 4 and value["parent_checkpoint_id"]:
            return await super().aget_tuple(config)  # an old checkpoint: LangGraph migrates it
        return await self._load_checkpoint_tuple(value)

    async def _load_checkpoint_tuple(self, value: DictRow) -> CheckpointTuple:
        """LangGraph's, but the checkpoint's pending writes are loaded here when they weigh at
        most `INLINE_BUDGET` (a turn's start reads none, or a few small ones), not always in a
        worker thread: the hand-off costs more. Its blobs LangGraph loads here too."""
        pending = value["pending_writes"]
        if pending and sum(8 + len(w[3] or b"") for w in pending) > INLINE_BUDGET:
            return await super()._load_checkpoint_tuple(value)
        configurable = {
            "thread_id": value["thread_id"],
            "checkpoint_ns": value["checkpoint_ns"],
        }
        parent_id = value["parent_checkpoint_id"]
        return CheckpointTuple(
            {"configurable": {**configurable, "checkpoint_id": value["checkpoint_id"]}},
            {  # type: ignore[typeddict-item]  # the stored checkpoint has every key
                **value["checkpoint"],
                "channel_values": {
                    **(value["checkpoint"].get("channel_values") or {}),
                    **self._load_blobs(value["channel_values"]),
                },
            },
            value["metadata"],
            {"configurable": {**configurable, "checkpoint_id": parent_id}} if parent_id else None,
            self._load_writes(pending),
        )

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if config is not None:
            await self.settle(_thread_of(config))
        else:
            for thread_id in list(self.pending):
                await self.settle(thread_id)
        async for item in super().alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        await self.settle(_thread_of(config))
        return await super().aget_delta_channel_history(config=config, channels=channels)

    async def adelete_thread(self, thread_id: str) -> None:
        await self.discard(str(thread_id))
        await super().adelete_thread(thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if not isinstance(thread_ids, str):
            for thread_id in thread_ids:
                await self.settle(str(thread_id))
        await super().aprune(thread_ids, strategy=strategy)


# LangGraph's `keep_latest` (langgraph.checkpoint.postgres.base `_keep_latest`) for a thread
# whose checkpoints are all in the root namespace, whose latest is of format v4 or later (so
# it keeps no parent for pending sends) and that has no DeltaChannel (LangGraph's own check):
# delete every checkpoint but the latest and the writes of those deleted, unlink the latest
# from its parent, and delete the blobs only deleted checkpoints referenced. One statement:
# its parts read one snapshot (as LangGraph's REPEATABLE READ transaction does), so what a run
# saves meanwhile is neither seen nor deleted. `done` is false (and nothing is deleted) for a
# thread with checkpoints that is not such a one.
_KEEP_LATEST: Final = """
WITH heads AS (
    SELECT DISTINCT ON (checkpoint_ns) checkpoint_ns, checkpoint_id, checkpoint
    FROM checkpoints WHERE thread_id = %(t)s
    ORDER BY checkpoint_ns DESC, checkpoint_id DESC
), head AS (
    SELECT h.checkpoint_id, h.checkpoint FROM heads h
    WHERE h.checkpoint_ns = '' AND (h.checkpoint ->> 'v')::int >= 4
    AND NOT EXISTS (SELECT 1 FROM heads o WHERE o.checkpoint_ns <> '')
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints m WHERE m.thread_id = %(t)s
        AND (m.metadata ? 'counters_since_delta_snapshot' OR m.metadata ? 'delta_writes_versioned')
    )
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints c
        CROSS JOIN LATERAL jsonb_each(c.checkpoint -> 'channel_values') AS v
        WHERE c.thread_id = %(t)s AND v.value = 'true'::jsonb AND EXISTS (
            SELECT 1 FROM checkpoint_blobs b
            WHERE b.thread_id = c.thread_id AND b.checkpoint_ns = c.checkpoint_ns
            AND b.channel = v.key AND b.version = c.checkpoint -> 'channel_versions' ->> v.key
        )
    )
), gone AS (
    DELETE FROM checkpoints c USING head
    WHERE c.thread_id = %(t)s AND c.checkpoint_ns = '' AND c.checkpoint_id <> head.checkpoint_id
    RETURNING c.checkpoint_id, c.checkpoint -> 'channel_versions' AS versions
), writes AS (
    DELETE FROM checkpoint_writes w
    WHERE w.thread_id = %(t)s AND w.checkpoint_ns = ''
    AND w.checkpoint_id IN (SELECT checkpoint_id FROM gone)
), unlinked AS (
    UPDATE checkpoints c SET parent_checkpoint_id = NULL FROM head
    WHERE c.thread_id = %(t)s AND c.checkpoint_ns = '' AND c.checkpoint_id = head.checkpoint_id
    AND c.parent_checkpoint_id <> head.checkpoint_id
), garbage AS (
    SELECT v.key AS channel, v.value AS version
    FROM gone CROSS JOIN LATERAL jsonb_each_text(gone.versions) AS v
    EXCEPT
    SELECT v.key, v.value
    FROM head CROSS JOIN LATERAL jsonb_each_text(head.checkpoint -> 'channel_versions') AS v
), blobs AS (
    DELETE FROM checkpoint_blobs b USING garbage g
    WHERE b.thread_id = %(t)s AND b.checkpoint_ns = ''
    AND b.channel = g.channel AND b.version = g.version
)
SELECT EXISTS (SELECT 1 FROM head) OR NOT EXISTS (SELECT 1 FROM heads) AS done
"""


class Checkpoints:
    """The checkpointer and its pool; `ready()` creates the tables once per process."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        *,
        flush_after_s: float = FLUSH_AFTER_S,
    ) -> None:
        self.pool = pool
        self.saver = TimedSaver(pool, flush_after_s=flush_after_s)
        self._ready = False
        self._lock = asyncio.Lock()

    @property
    def is_ready(self) -> bool:
        """Whether the saver's tables are known to exist (`ready` has set them up)."""
        return self._ready

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
            if not await self._keep_latest(thread_id):
                await saver.aprune([thread_id], strategy="keep_latest")
        except psycopg.Error as error:
            log.warning("pruning checkpoints of thread %s failed: %s", thread_id, error)

    async def _keep_latest(self, thread_id: str) -> bool:
        """LangGraph's `keep_latest` for a thread with checkpoints in the root namespace only,
        of format v4 or later, without a DeltaChannel (a /chat conversation's), as one
        statement (`_KEEP_LATEST`; LangGraph's sends a dozen, one after the other). False when
        the thread is not such a one (nothing done: LangGraph's prune handles it)."""
        await self.saver.settle(thread_id)  # the run's queued writes first, as `aprune` does
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_KEEP_LATEST, {"t": thread_id})).fetchone()
        return bool(row and row["done"])

    def run_writes(self, thread_id: str) -> RunWrites:
        """A queue for the checkpoint writes of a run attempt on the thread (see `RunWrites`),
        registered so that reads of the thread in this process send them first. It replaces
        the queue of an earlier attempt here (one whose claim was lost), whose writes are
        dropped: the thread is the new attempt's."""
        writes = RunWrites(thread_id)
        earlier = self.saver.pending.get(thread_id)
        if earlier is not None:
            _close(earlier)
        self.saver.pending[thread_id] = writes
        return writes

    @staticmethod
    def bind(writes: RunWrites) -> None:
        """Queue the writes the calling task (and the tasks it starts) makes for the thread."""
        _RUN_WRITES.set(writes)

    @staticmethod
    @contextmanager
    def own_head(writes: RunWrites | None) -> Iterator[None]:
        """Within: a read of the thread's latest checkpoint (LangGraph's `aget_state`) takes
        the checkpoint and its pending writes from what the run put (`RunWrites.head`) instead
        of reading them back: the same checkpoint, without the SELECT and the decoding of its
        blobs, and without sending the run's queued writes (the finish sends them: `take`).
        Without a head (see `RunWrites`) the read sends them first, as any read does. For a
        run's finish, once its graph is done (nothing changes the values it put since)."""
        token = _OWN_HEAD.set(writes)
        try:
            yield
        finally:
            _OWN_HEAD.reset(token)

    async def flush(self, writes: RunWrites) -> None:
        """Send the queued writes now (the run is ending or being handed on). Raises what
        PostgreSQL raised; writes lost to a connection error stay queued."""
        if writes.busy():
            await self.saver.flush_writes(writes)

    async def take(self, writes: RunWrites) -> list[Op]:
        """The queued writes, out of the queue, for the caller to send in a transaction of its
        own (a run's finish: they commit with it); once a batch being sent has gone out (or
        come back to the queue, if the connection failed under it). Each is a statement, its
        parameters and whether they are many sets (`executemany`): one a table (`batched`)."""
        async with writes.lock:
            return batched(writes.pop())

    @staticmethod
    def give_back(writes: RunWrites, ops: Sequence[Op]) -> None:
        """Put writes `take` handed out back at the head of the queue, to be sent by `flush` (a
        finish that will not carry them after all)."""
        if not writes.closed:
            writes.ops[:0] = ops

    def release(self, writes: RunWrites) -> None:
        """Forget the queue at the end of its attempt; writes still in it are dropped (an
        attempt handed back or stopped: the next one resumes from the last stored)."""
        if writes.ops:
            log.info(
                "dropping %d unsent checkpoint writes of thread %s",
                len(writes.ops),
                writes.thread_id,
            )
        _close(writes)
        if self.saver.pending.get(writes.thread_id) is writes:
            del self.saver.pending[writes.thread_id]

    async def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint (and pending write) of the thread."""
        await self.saver.adelete_thread(thread_id)

    async def run_deletes(self, thread_id: str, run_id: str) -> list[tuple[str, dict[str, str]]]:
        """The statements (psycopg SQL and parameters) that delete the checkpoints one run wrote
        on the thread (a rollback), with their pending writes and those the run left on the
        checkpoint it started from; for the transaction that deletes the run
        (`drop_run(also=...)`): it commits both or neither, so a lost answer is retried whole
        and no next run of the thread starts from the rolled-back run's checkpoints (until
        2026-12-01 they were deleted after it, by a transaction of their own: left behind when
        that failed). The thread's writes queued here are dropped first.
        They must run in this order, in one transaction, while no other run of the thread
        writes (under the thread row's lock): the last deletes the pending writes of the
        thread's latest checkpoint once the run's own are gone."""
        await self.saver.discard(thread_id)
        params = {"t": thread_id, "r": run_id}
        return [
            (_DELETE_RUN_WRITES, params),
            (_DELETE_RUN_CHECKPOINTS, params),
            (_DELETE_LEFT_WRITES, params),
        ]


@asynccontextmanager
async def _connection(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection of the pool (checked on checkout by `_check`)."""
    async with pool.connection() as conn:
        yield conn


async def _check(conn: AsyncConnection[Any]) -> None:
    """The pool's check on checkout, without a round trip: a connection found cut (`is_cut`:
    the server closed it, e.g. across a restart of PostgreSQL) gets the `;` check, which fails
    and has the pool discard it and hand out another. One cut after this check fails its
    statement with a transient error: a run is handed back and resumed."""
    if is_cut(conn):
        await AsyncConnectionPool.check_connection(conn)


def _runs_first_read(writes: RunWrites, config: RunnableConfig) -> bool:
    """Whether this read of the latest root checkpoint is the run's own (LangGraph's, at its
    start), nothing put yet and its writes not shared with another run."""
    return (
        writes.head is None
        and not writes.shared
        and not writes.closed
        and _RUN_WRITES.get() is writes
        and not get_checkpoint_id(config)
        and config["configurable"].get("checkpoint_ns", "") == ""
    )


def _head_tuple(writes: RunWrites) -> CheckpointTuple:
    """The run's head as a read of PostgreSQL returns it: a copy of the checkpoint (a state
    read changes the versions of the one it gets), its pending writes in the read's order."""
    assert writes.head is not None
    config, checkpoint, metadata, parent = writes.head
    kept = writes.head_writes.get(checkpoint["id"], {})
    ordered = sorted(kept.items(), key=lambda kv: (kv[1][0], kv[0][0], kv[0][1]))
    pending: list[PendingWrite] = [
        (task_id, channel, value) for (task_id, _), (_, channel, value) in ordered
    ]
    return CheckpointTuple(config, copy_checkpoint(checkpoint), metadata, parent, pending)


def _close(writes: RunWrites) -> None:
    writes.closed = True
    writes.head = None
    writes.ops.clear()
    if writes.timer is not None:
        writes.timer.cancel()
        writes.timer = None


@asynccontextmanager
async def open_checkpoints(
    url: str,
    *,
    max_size: int = 10,
    timeout_s: float = 10.0,
    timeouts: Timeouts = Timeouts(),
    flush_after_s: float = FLUSH_AFTER_S,
) -> AsyncIterator[Checkpoints]:
    """Checkpoints on a pool of up to `max_size` connections; tables are set up at open if the
    database answers, else on first use (a database that is down does not stop the server).

    Args:
        url: PostgreSQL URL of the database that also holds the chat tables.
        max_size: Connections the pool may open (at least 2: setup holds a lock on one).
        timeout_s: Seconds to wait for a free connection.
        timeouts: Connect and statement timeouts of its connections.
        flush_after_s: How long a run's checkpoint writes may wait to be sent together.

    Connections are checked when taken from the pool, without a round trip (`_check`: one
    cut by a restart of PostgreSQL is replaced instead of failing the run that took it).
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
        check=_check,
    )
    await pool.open(wait=False)
    checkpoints = Checkpoints(pool, flush_after_s=flush_after_s)
    try:
        try:
            await checkpoints.ready()
        except UnavailableError as error:
            log.warning("checkpoint tables not set up at startup (will retry on use): %s", error)
        yield checkpoints
    finally:
        await pool.close()
