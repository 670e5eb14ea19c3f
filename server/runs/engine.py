"""The run engine: one queue, one executor and one compiled graph set for every run, whichever
API created it (the Agent Server API, /chat, crons)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from nodes.models import ChatModelCache
from nodes.tools.builtin import BUILTIN_TOOLS
from server.config import Graph, ProjectGraphs
from server.resources import Resources
from server.runs.admission import RunAdmission
from server.runs.context import ContextServices
from server.runs.events import RunEventLog
from server.runs.execute import RecorderFactory, RunExecutor, run_json
from server.runs.queue import Attempt, CancelAction, RunQueue
from server.telemetry.metrics import metrics
from stores.errors import InvalidInputError
from stores.sql import runs as run_store
from stores.sql import tools as sql_tools
from stores.sql.filters import Filter
from stores.sql.models import Agent, Run
from stores.sql.runs import NOBODY, RunCreator
from stores.sql.threads import ThreadTTL

log = logging.getLogger(__name__)

__all__ = ["Graph", "RunEngine", "open_run_engine", "run_json"]


class RunEngine:
    """Runs every graph run of this server: the queue (rows, fenced leases, NOTIFY), the
    executor (one attempt, its events, its final status) and the project's graphs (langgraph.json),
    each acquired per run."""

    def __init__(
        self,
        resources: Resources,
        *,
        events: RunEventLog,
        graphs: ProjectGraphs,
        models: ChatModelCache | None = None,
        recorders: Mapping[str, RecorderFactory] | None = None,
        send_webhooks: bool = True,
        default_thread_ttl: ThreadTTL | None = None,
    ) -> None:
        settings = resources.settings
        self.resources = resources
        self.settings = settings
        self.db = resources.database
        self.events = events
        self.graphs = graphs
        self.default_thread_ttl = default_thread_ttl  # `checkpointer.ttl` of new threads
        self.models = models or ChatModelCache()
        self.queue = RunQueue(
            resources.database,
            settings,
            database_url=resources.database_url,
            timeouts=resources.timeouts,
        )
        self.admission = RunAdmission(
            capacity=settings.run_workers, target_lag_s=settings.run_admit_lag_s
        )
        self.executor = RunExecutor(
            resources,
            queue=self.queue,
            events=events,
            graphs=self.graphs,
            services=ContextServices(
                knowledge=resources.knowledge,
                tool_cache=resources.tool_cache,
                models=self.models,
                compute=resources.compute,
            ),
            recorders=recorders,
            send_webhooks=send_webhooks,
            admission=self.admission,
        )
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Sync the `tools` table, then start the listener and the workers."""
        rows = [
            {
                "name": spec.name,
                "description": spec.description,
                "parameters": dict(spec.parameters),
                "cacheable": spec.cacheable,
            }
            for spec in BUILTIN_TOOLS
        ]
        try:
            await sql_tools.sync_tools(self.db, rows)
        except Exception as error:  # the table is re-read on use
            log.warning("could not sync the tools table: %s", error)
        # A first attempt starting here (claimed at creation or by the dispatcher) has an
        # empty log, written here: streams of it in this process follow it from memory.
        # Alone on the database, its claims, creations and finishes NOTIFY nobody (the queue
        # decides, `RunQueue.telling`): the event log wakes this process's followers of a
        # thread's stream instead.
        await self.queue.start(
            self._execute,
            launched=self.events.begin,
            others=lambda: self.events.notifying,
            wake_thread=self.events.wake_thread,
            wake_run=self.events.wake_run,
        )
        self._watch = asyncio.create_task(self.admission.watch(), name="runs-admission")

    async def _execute(self, attempt: Attempt) -> None:
        """Execute one attempt claimed here; then retire its local event log."""
        try:
            await self.executor.execute(attempt)
        finally:
            self.events.retire(attempt.token)

    async def aclose(self) -> None:
        """Stop the workers; runs still executing go back to pending for another process."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.queue.aclose()

    async def submit(
        self,
        *,
        thread_id: uuid.UUID,
        assistant: Agent,
        kwargs: Mapping[str, Any],
        metadata: Mapping[str, Any],
        multitask_strategy: str = "enqueue",
        if_not_exists: Literal["create", "reject"] = "reject",
        temporary: bool = False,
        creator: RunCreator = NOBODY,
    ) -> Run:
        """Write the run row (applying the multitask strategy) and wake a worker; the run
        executes as `creator` (identity, thread filter, cap of runs in flight).

        Raises `NotFoundError` (unknown thread, or not the creator's), `ConflictError`
        (`reject` on a busy thread), `LimitError` (the creator's runs in flight are at their
        cap) and `InvalidInputError` (the assistant's graph is not declared).
        """
        if assistant.graph_id not in self.graphs:
            raise InvalidInputError(
                f"assistant {assistant.id} uses graph {assistant.graph_id!r}, which is not "
                f"declared; declared graphs: {self.graphs.declared()}",
                field="assistant_id",
            )
        run = await self.queue.submit(
            thread_id=thread_id,
            assistant=assistant,
            kwargs=kwargs,
            metadata=metadata,
            multitask_strategy=multitask_strategy,
            if_not_exists=if_not_exists,
            temporary=temporary,
            thread_ttl=None if temporary else self.default_thread_ttl,
            creator=creator,
            # Started here at once: its attempt takes the assistant just read (no second read).
            starting=lambda run: self.executor.preload(run.id, assistant, None),
        )
        metrics().runs_created.labels(assistant.graph_id).inc()
        return run

    async def submit_at_once(
        self,
        *,
        thread_id: uuid.UUID,
        assistant_id: uuid.UUID,
        kwargs: Mapping[str, Any],
        metadata: Mapping[str, Any],
        multitask_strategy: str = "enqueue",
        creator: RunCreator = NOBODY,
    ) -> Run | None:
        """`submit`'s common case in one round trip, the assistant read with the run's row: a run
        on an existing thread with no run in flight, by an assistant of a declared graph, for a
        creator with no thread filter and no cap. None when nothing was written: read the
        assistant and take `submit`, which says what is wrong (unknown assistant or thread, an
        undeclared graph) or applies the multitask strategy."""
        # In the caller's own task: a task of its own (`shielded`) cost two laps of the event
        # loop on the way to a stream's first event (one to start it, one to hear back), each
        # as long as every executing run's ready work. A caller cancelled meanwhile leaves it
        # to `create_at_once` to settle what was written. (A stream whose client left right
        # after its first event used to miss its cancel here: the run's task had not started
        # its graph yet, and `Attempt.stop` dropped a stop that came before it; it keeps it now.)
        written = await self.queue.create_at_once(
            thread_id=thread_id,
            assistant_id=assistant_id,
            graph_ids=list(self.graphs),
            kwargs=kwargs,
            metadata=metadata,
            multitask_strategy=multitask_strategy,
            creator=creator,
            # Started here at once: its attempt takes the assistant the statement read,
            # and whether the thread had a checkpoint.
            starting=self._preload_read_agent,
            ask_fresh=self.resources.checkpoints.is_ready,
        )
        if written is None:
            return None
        run, graph_id = written
        metrics().runs_created.labels(graph_id).inc()
        return run

    def _preload_read_agent(self, run: Run) -> None:
        """Hand a run written by `submit_at_once` the assistant its statement read."""
        agent = run_store.agent_of(run)
        if agent is not None:
            self.executor.preload(run.id, agent, None, fresh=run_store.thread_was_fresh(run))

    async def cancel(
        self,
        run_ids: list[uuid.UUID],
        *,
        action: CancelAction = "interrupt",
        thread_id: uuid.UUID | None = None,
        reason: str = "cancelled by a client",
        access: Filter | None = None,
    ) -> None:
        """Cancel runs: pending ones at once, running ones by the process that holds them;
        with `access`, only runs on threads that satisfy it (`NotFoundError` for the others)."""
        await self.queue.cancel(
            run_ids, action=action, thread_id=thread_id, reason=reason, access=access
        )

    def cancel_soon(self, run_id: uuid.UUID, *, reason: str) -> None:
        """`cancel` in a task of its own: for callers that are being cancelled (disconnects)."""
        self.queue.cancel_soon(run_id, reason=reason)

    async def wait(
        self, run_id: uuid.UUID, *, timeout_s: float | None = None, fresh: bool = False
    ) -> Run | None:
        """Wait until the run is finished; the final row (None if it was deleted: rollback).
        `fresh`: the run was just created here (it is read once it is announced done)."""
        return await self.queue.wait(run_id, timeout_s=timeout_s, fresh=fresh)

    async def output(self, run_id: uuid.UUID, *, fresh: bool = False) -> Any:
        """What `/wait` and `/join` return once the run is done (thread values as fallback)."""
        run = await self.wait(run_id, fresh=fresh)
        if run is None:
            return {}
        if run.output is not None:
            return run.output
        if run.thread_id is not None:
            thread = await run_store.require_thread(self.db, run.thread_id)
            return thread.values_
        return {}


@contextlib.asynccontextmanager
async def open_run_engine(
    resources: Resources,
    *,
    events: RunEventLog,
    graphs: ProjectGraphs,
    models: ChatModelCache | None = None,
    recorders: Mapping[str, RecorderFactory] | None = None,
    send_webhooks: bool = True,
    default_thread_ttl: ThreadTTL | None = None,
) -> AsyncIterator[RunEngine]:
    """A started engine for the lifespan; on exit its running runs go back to the queue.

    `recorders` by `metadata.source`: extra work for the runs of that source (e.g. /chat's
    transcript), done by whichever process finishes the run, so every process has them.
    """
    engine = RunEngine(
        resources,
        events=events,
        graphs=graphs,
        models=models,
        recorders=recorders,
        send_webhooks=send_webhooks,
        default_thread_ttl=default_thread_ttl,
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()
