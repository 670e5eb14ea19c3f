"""One attempt of a run: its graph and context, its events into the log, then its final status
(written before the `end` or `error` event, so a client that saw the stream end reads it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from opentelemetry.util.types import AttributeValue
from sqlalchemy import select, true

from nodes.context import AgentContext, reads_agent_context
from server.auth.users import AuthUser, from_json
from server.config import Graph, ProjectGraphs
from server.redact import mask_secrets
from server.resources import Resources
from server.runs.admission import RunAdmission
from server.runs.context import ContextServices, agent_context
from server.runs.events import EventRefusedError, RunEventLog
from server.runs.queue import Attempt, CancelAction, RunQueue, cancel_action
from server.runs.schema_context import CONTEXT_GIVEN, drop_undeclared, schema_context
from server.runs.streaming import error_data, stream_graph, to_jsonable
from server.runs.webhooks import send_webhook, webhook_payload, webhook_policy
from server.telemetry.runs import RunTelemetry, observed_run
from stores.checkpoints import Checkpoints, RunWrites
from stores.errors import ConflictError, NotFoundError
from stores.sql import runs as run_store
from stores.sql import tools as sql_tools
from stores.sql.database import is_refusal, is_transient, sqlstate
from stores.sql.models import Agent, Conversation, Run
from stores.tracing import traced

log = logging.getLogger(__name__)


def _error_data(error: BaseException) -> dict[str, str]:
    """The data of a failed run's `error` event: the exception's type and message (the graph's
    own), but none of the database's text for an error PostgreSQL answered with."""
    state = sqlstate(error)
    if state is None and isinstance(error.__cause__, psycopg.Error):
        state = sqlstate(error.__cause__)
    if state is None:
        return error_data(error)
    return {
        "error": type(error).__name__,
        "message": f"the database refused to store the run's results (SQLSTATE {state})",
    }


_STATEMENT_TIMEOUT = "57014"  # query_canceled: `DB_STATEMENT_TIMEOUT_S` (transient)
# A finish timing out this many times in a row is refused (`_retrying`): tried, then once more;
# a write with no refusal to fall back on (the bare finish after one, a release, a cancel's
# finish) is given up then, its attempt ended (the run's lease lapses: recovery takes it).
_TIMEOUTS_REFUSED = 2
TOOLS_REFRESH_S = 30.0  # how soon a tool switched off in the `tools` table applies to runs
# Where a run's creator reaches its graph, as LangGraph's server passes it; never from a client.
AUTH_CONFIGURABLE = ("langgraph_auth_user", "langgraph_auth_user_id", "langgraph_auth_permissions")


def run_creator(run: Run) -> AuthUser | None:
    """The user who created the run (it executes as them); None on an open server."""
    auth = run.auth if isinstance(run.auth, Mapping) else None
    user = auth.get("user") if auth else None
    return from_json(user) if isinstance(user, Mapping) else None


def run_json(run: Run) -> dict[str, Any]:
    """A run as the Agent Server API shows it (langgraph-sdk `Run`), secret-looking values of
    its kwargs and metadata masked (the run itself reads the real ones from its row)."""
    return {
        "run_id": str(run.id),
        "thread_id": str(run.thread_id) if run.thread_id else None,
        "assistant_id": str(run.assistant_id) if run.assistant_id else None,
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
        "status": run.status,
        "metadata": mask_secrets(run.metadata_),
        "kwargs": mask_secrets(run.kwargs),
        "multitask_strategy": run.multitask_strategy,
        "cancel_reason": run.cancel_reason,
    }


@dataclass(frozen=True, slots=True)
class RunResult:
    """What an attempt that ran to its end produced, as the run is being finished."""

    run: Run
    status: str  # success, error, timeout
    values: Mapping[str, Any]  # the thread's values after the run (full state)
    error: str | None
    context: AgentContext | None
    started: float  # `time.perf_counter()` when this attempt began


@dataclass(frozen=True, slots=True)
class FinishRecord:
    """What a recorder writes with a run's end: statements sent in the transaction that
    finishes the run (in its round trip), and events appended once it committed, before the
    run's `end`."""

    writes: tuple[run_store.FinishWrite, ...] = ()
    events: tuple[tuple[str, Any], ...] = ()


class RunRecorder(Protocol):
    """Extra work for the runs of one source (`metadata.source`, e.g. /chat's transcript),
    made for each attempt that executes such a run."""

    def on_event(self, event: str, data: Any) -> None:
        """See each event the attempt appends (cheap: called on the event loop)."""

    def reads_checkpoints(self, values: Mapping[str, Any]) -> bool:
        """Whether `on_finish` of a successful attempt whose thread ends with `values` reads
        the thread's checkpoints (e.g. prunes them): the attempt's last checkpoint writes are
        then stored before it, else with the finish's transaction (`finish_run(before=...)`)."""

    async def on_finish(self, result: RunResult, token: run_store.RunToken) -> FinishRecord:
        """What to write with the run's end, as the attempt `token` finishes it: called once
        per finish, once the run's checkpoints are stored and before the transaction that
        ends the run (and stores its `end`), so housekeeping done here (e.g. pruning old
        checkpoints) is over when a client sees the end. The writes are sent again if that
        transaction is retried, so they must be idempotent (see `FinishWrite`)."""


RecorderFactory = Callable[[Run], RunRecorder]


class RunAbandonedError(Exception):
    """A run was claimed more often than `RUN_MAX_ATTEMPTS` without finishing."""


async def _released(count: Awaitable[int]) -> bool:
    return bool(await count)


@dataclass(slots=True)
class _Prepared:
    """What an attempt resolved before running its graph."""

    agent: Agent | None = None
    thread: Conversation | None = None
    run_context: dict[str, Any] = field(default_factory=dict)  # the assistant's and the run's
    context: AgentContext | None = None  # the agent context, for graphs that read one
    temporary: bool = False
    context_given: bool = False  # its `configurable` mirrors the context its client gave
    preloaded: bool = False  # agent (and thread, if not None) given by the run's creator
    fresh: bool = False  # its creator found the thread without any checkpoint
    latest: dict[str, Any] | None = None  # the thread's latest checkpoint its creator read
    started: float = field(default_factory=time.perf_counter)
    timer: asyncio.Timeout | None = None  # RUN_TIMEOUT_S on the graph
    telemetry: RunTelemetry | None = None  # its span, callbacks and metrics
    outcome: str | None = None  # the status this attempt ended the run with
    writes: RunWrites | None = None  # its checkpoint writes not sent yet

    def timed_out(self) -> bool:
        """Whether the run's time limit stopped it."""
        return self.timer is not None and self.timer.expired()


def _checkpoint_during(kwargs: Mapping[str, Any]) -> bool | None:
    """`checkpoint_during` from the request, or from `durability` (exit: only at the end)."""
    during = kwargs.get("checkpoint_during")
    if during is not None:
        return bool(during)
    durability = kwargs.get("durability")
    return None if durability is None else durability != "exit"


def merge_config(*configs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Configs merged left to right (nested mappings such as `configurable` key by key)."""
    merged: dict[str, Any] = {}
    for config in configs:
        for key, value in (config or {}).items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _user_of(thread: Conversation | None) -> uuid.UUID | None:
    assert thread is not None  # read above when the run has no creator
    return thread.user_id


def thread_config(thread_id: uuid.UUID) -> RunnableConfig:
    """The config that reads a thread's latest checkpoint."""
    return {"configurable": {"thread_id": str(thread_id), "checkpoint_ns": ""}}


class RunExecutor:
    """Executes the attempts the queue's workers claim, with the server's graphs and limits."""

    def __init__(
        self,
        resources: Resources,
        *,
        queue: RunQueue,
        events: RunEventLog,
        graphs: ProjectGraphs,
        services: ContextServices,
        recorders: Mapping[str, RecorderFactory] | None = None,
        send_webhooks: bool = True,
        admission: RunAdmission | None = None,
    ) -> None:
        self.resources = resources
        self.admission = admission or RunAdmission(capacity=1, target_lag_s=0)
        self.settings = resources.settings
        self.db = resources.database
        self.queue = queue
        self.events = events
        self.graphs = graphs
        self.send_webhooks = send_webhooks  # off: `http.disable_webhooks` in langgraph.json
        self.services = services
        self.recorders: dict[str, RecorderFactory] = dict(recorders or {})
        self._disabled: frozenset[str] = frozenset()
        self._disabled_at = -TOOLS_REFRESH_S - 1.0
        # Agent and thread rows a run's creator has just read, for its first attempt here.
        self._preloaded: dict[
            uuid.UUID, tuple[Agent, Conversation | None, bool, dict[str, Any] | None]
        ] = {}

    def preload(
        self,
        run_id: uuid.UUID,
        agent: Agent,
        thread: Conversation | None,
        *,
        fresh: bool = False,
        latest: dict[str, Any] | None = None,
    ) -> None:
        """Hand a run claimed at creation in this process (`RunQueue.adopt`) the agent and
        thread rows its creator read in the transaction that wrote it: its attempt here does not
        read them again. Only for a run `adopt` launches (its attempt takes them back).

        `thread` None: its creator did not keep the row; the thread existed when the run was
        written (a deleted thread takes its runs with it), so it is read only if the graph
        needs it (the agent context's user).

        `fresh`: the transaction that wrote the run found its thread without any checkpoint
        (under the thread row's lock): the attempt does not read the thread's latest checkpoint
        before it puts its own (`RunWrites.unstored`).

        `latest`: the thread's latest checkpoint as the transaction that wrote the run read it
        (under the thread row's lock, a row of `LATEST_CHECKPOINT_SQL`): the attempt's first
        read of it loads this row instead of reading it again (`RunWrites.latest`)."""
        self._preloaded[run_id] = (agent, thread, fresh, latest)

    # -- the seam where a run gets its graph -------------------------------------------------

    @contextlib.asynccontextmanager
    async def _state_graph(self, agent: Agent | None) -> AsyncIterator[Graph | None]:
        """The graph that reads a finished run's thread state (None: no graph to read with).

        The run itself acquires its graph in its own task (`_run_graph`); a factory is called
        again here for the read, as langgraph-api does for every state read.
        """
        if agent is None or agent.graph_id not in self.graphs:
            yield None
            return
        async with contextlib.AsyncExitStack() as scope:
            graph: Graph | None = None
            try:
                graph = await scope.enter_async_context(
                    self.graphs.acquire(agent.graph_id, agent.config, access="threads.read")
                )
            except Exception as error:  # a failing factory: finish without the state
                log.warning("graph %r unavailable to read state: %r", agent.graph_id, error)
            yield graph

    async def disabled_tools(self) -> frozenset[str]:
        """Tools switched off in the `tools` table (re-read at most every `TOOLS_REFRESH_S`)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._disabled_at > TOOLS_REFRESH_S:
            try:
                rows = await sql_tools.list_tools(self.db)
            except Exception as error:  # keep the last known switches
                log.warning("could not read the tools table: %r", error)
            else:
                self._disabled = frozenset(row.name for row in rows if not row.enabled)
            self._disabled_at = loop.time()
        return self._disabled

    # -- one attempt ---------------------------------------------------------------------------

    async def execute(self, attempt: Attempt) -> None:
        """`_execute` inside the attempt's span, with its run and thread ids in context."""
        prepared = _Prepared()
        preloaded = self._preloaded.pop(attempt.run.id, None)
        if preloaded is not None and attempt.token.attempt == 1:
            prepared.agent, prepared.thread, prepared.fresh, prepared.latest = preloaded
            prepared.preloaded = True
        with observed_run(attempt.run, attempt.token.attempt) as telemetry:
            prepared.telemetry = telemetry
            try:
                await self._execute(attempt, prepared)
            finally:
                telemetry.finished(prepared.outcome)

    async def _execute(self, attempt: Attempt, prepared: _Prepared) -> None:
        """Run one claimed attempt to its end, holding its lease meanwhile.

        The run ends here (its status written, then its last event) unless its claim is lost
        (another worker finishes it), or PostgreSQL failed under it: then it is handed back to
        the queue, and the next attempt continues from its last checkpoint. A run claimed more
        than `RUN_MAX_ATTEMPTS` times ends as an error.
        """
        run = attempt.run
        started = datetime.now(UTC)
        source = str((run.metadata_ or {}).get("source", ""))
        factory = self.recorders.get(source)
        recorder = factory(run) if factory is not None else None
        limit = self.settings.run_max_attempts
        if attempt.token.attempt > limit:
            gave_up = RunAbandonedError(
                f"run {run.id} was started {limit} times without finishing; given up"
            )
            finished = await self._finish(attempt, prepared, recorder, error=gave_up)
        else:
            finished = await self._attempt(attempt, prepared, recorder)
        await self.queue.announce_done(run.id)
        if finished and run.kwargs.get("webhook") and self.send_webhooks:
            await self._send_webhook(run.id, started)

    async def _attempt(
        self, attempt: Attempt, prepared: _Prepared, recorder: RunRecorder | None
    ) -> bool:
        """Run the graph in a task of its own while holding the lease; whether it finished."""
        run = attempt.run
        assert run.thread_id is not None
        checkpoints = self.resources.checkpoints
        prepared.writes = checkpoints.run_writes(str(run.thread_id))
        prepared.writes.unstored = prepared.fresh
        prepared.writes.latest = prepared.latest
        prepared.latest = None
        attempt.task = asyncio.create_task(
            self._run_graph(attempt, prepared, recorder), name=f"run-{run.id}"
        )
        lease = asyncio.create_task(self.queue.hold(attempt), name=f"lease-{run.id}")
        try:
            if run.cancel_reason:  # cancelled while its previous holder died
                attempt.stop(cancel_action(run.cancel_reason))
            elif attempt.stop_reason is not None:  # stopped before its task existed
                attempt.task.cancel()
            try:
                await asyncio.shield(attempt.task)
            except asyncio.CancelledError:
                if not attempt.task.done():
                    # The worker itself is being cancelled (shutdown): stop the run, leave it.
                    attempt.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await attempt.task
                    raise
                reason = attempt.stop_reason
                if reason == "lost":  # another worker holds (or will hold) the run now
                    return False
                if reason is None:
                    raise
                return await self._finish_cancelled(attempt, prepared, reason)
            except Exception as error:
                if is_transient(error) and not prepared.timed_out():
                    await self._hand_back(attempt, error)
                    return False
                return await self._finish_or_hand_back(attempt, prepared, recorder, error)
            return await self._finish_or_hand_back(attempt, prepared, recorder, None)
        finally:
            checkpoints.release(prepared.writes)
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await lease

    async def _finish_or_hand_back(
        self,
        attempt: Attempt,
        prepared: _Prepared,
        recorder: RunRecorder | None,
        error: BaseException | None,
    ) -> bool:
        try:
            return await self._finish(attempt, prepared, recorder, error=error)
        except Exception as failure:
            if not is_transient(failure):
                raise
            await self._hand_back(attempt, failure)
            return False

    async def _hand_back(self, attempt: Attempt, error: BaseException) -> None:
        """Give the run back to the queue after PostgreSQL failed under it (a restart, a cut
        connection): the next attempt continues from its last checkpoint. If even that write
        fails, the run's lease lapses and another worker reclaims it."""
        log.warning(
            "run %s (attempt %d): the database failed under it (%s: %s); handing it back",
            attempt.run.id,
            attempt.token.attempt,
            type(error).__name__,
            error,
        )
        with contextlib.suppress(Exception):
            await self._retrying(
                attempt, lambda: _released(run_store.release_runs(self.db, [attempt.token]))
            )

    async def _prepare(self, attempt: Attempt, prepared: _Prepared) -> dict[str, Any]:
        """Resolve the run's assistant and thread; its config (what a graph factory gets)."""
        run = attempt.run
        kwargs = run.kwargs
        assert run.thread_id is not None
        thread_id = run.thread_id
        agent, thread = prepared.agent, prepared.thread  # given by its creator (`preload`)
        if agent is None and run.assistant_id is not None:  # one statement, in autocommit
            async with self.db.reading() as session:
                row = (
                    await session.execute(
                        select(Agent, Conversation)
                        .join_from(Agent, Conversation, true())
                        .where(Agent.id == run.assistant_id, Conversation.id == thread_id)
                    )
                ).first()
            if row is not None:
                agent, thread = row
        prepared.agent, prepared.thread = agent, thread
        prepared.temporary = bool(kwargs.get("temporary")) and kwargs.get("on_completion") != "keep"
        if (
            agent is None
            or agent.graph_id not in self.graphs
            or (thread is None and not prepared.preloaded)
        ):
            raise ConflictError(
                f"run {run.id}: its assistant, graph or thread no longer exists",
                field="assistant_id",
            )
        prepared.run_context = {**agent.context, **(kwargs.get("context") or {})}
        config = merge_config(agent.config, kwargs.get("config"))
        configurable = dict(config.get("configurable") or {})
        configurable.update(thread_id=str(thread_id), checkpoint_ns="")
        prepared.context_given = bool(configurable.pop(CONTEXT_GIVEN, False))
        for key in AUTH_CONFIGURABLE:
            configurable.pop(key, None)
        creator = run_creator(run)
        if creator is not None:
            configurable["langgraph_auth_user"] = creator
            configurable["langgraph_auth_user_id"] = creator.identity
            configurable["langgraph_auth_permissions"] = creator.permissions
        config["configurable"] = configurable
        if attempt.token.attempt == 1:
            # The graph's root run is the run, as langgraph-api has it (`runtime.execution_info
            # .run_id`, a memory's source); a later attempt's callbacks get a fresh id (a
            # tracer would refuse a second root run of the same id).
            config["run_id"] = run.id
        config["metadata"] = {
            **(config.get("metadata") or {}),
            **(run.metadata_ or {}),
            "run_id": str(run.id),
            "run_attempt": attempt.token.attempt,
            "thread_id": str(thread_id),
            "assistant_id": str(agent.id),
            "graph_id": agent.graph_id,
        }
        if prepared.telemetry is not None:
            prepared.telemetry.started(agent.graph_id, config)
        return config

    async def _start(
        self, attempt: Attempt, prepared: _Prepared, graph: Graph, config: dict[str, Any]
    ) -> tuple[Any, Any]:
        """The run's input (None when resuming; a `Command`) and the context its graph reads:
        the agent context for Switchboard's graphs, else the `context` given, as langgraph-api
        passes it."""
        run = attempt.run
        kwargs = run.kwargs
        assert run.thread_id is not None
        assert prepared.agent is not None
        thread_id = run.thread_id
        context: Any = prepared.run_context
        if not reads_agent_context(graph):
            # Only the keys the graph's context schema declares, as langgraph-api passes them
            # (a dataclass schema would refuse the others, a mirrored `configurable` among them);
            # they leave a `configurable` mirrored from a context the client gave, as there.
            kept = schema_context(graph, context)
            if prepared.context_given and kept is not context:
                drop_undeclared(config["configurable"], context, kept)
            context = kept
        else:
            creator = run_creator(run)
            if prepared.thread is None and creator is None:  # preloaded without it
                async with self.db.reading() as session:
                    prepared.thread = await session.get(Conversation, thread_id)
                if prepared.thread is None:
                    raise ConflictError(
                        f"run {run.id}: its thread no longer exists", field="thread_id"
                    )
            readable = (run.auth or {}).get("collections") if creator is not None else None
            prepared.context = agent_context(
                prepared.agent,
                # Runs execute as their creator; an open server's as the conversation's user.
                user_id=creator.identity if creator is not None else _user_of(prepared.thread),
                settings=self.settings,
                services=self.services,
                run_context=kwargs.get("context"),
                disabled_tools=await self.disabled_tools(),
                readable_collections=readable if isinstance(readable, list) else None,
            )
            context = prepared.context
            config.setdefault("recursion_limit", 2 * prepared.context.max_steps + 12)
        configurable = config["configurable"]
        graph_input: Any = kwargs.get("input")
        await self.resources.checkpoints.ready()
        resuming = False
        if attempt.token.attempt > 1:  # a first attempt has no checkpoint of its own to resume
            latest = await self.resources.checkpoints.saver.aget_tuple(thread_config(thread_id))
            resuming = latest is not None and latest.metadata.get("run_id") == str(run.id)
        if resuming:
            graph_input = None  # continue from our last checkpoint
        else:
            if kwargs.get("checkpoint_id"):
                configurable["checkpoint_id"] = kwargs["checkpoint_id"]
            command = kwargs.get("command")
            if command:
                graph_input = await self._command(graph, thread_id, command)
        return graph_input, context

    async def _append(
        self, attempt: Attempt, recorder: RunRecorder | None, event: str, data: Any
    ) -> None:
        refused = self.events.refusal(attempt.token)
        if refused is not None:  # its stream has a hole: the run stops, as an error
            raise EventRefusedError(refused)
        await self.events.append(attempt.token, event, data)
        if recorder is not None:
            recorder.on_event(event, data)

    async def _run_graph(
        self, attempt: Attempt, prepared: _Prepared, recorder: RunRecorder | None
    ) -> None:
        """The cancellable part of an attempt: prepare, acquire the run's graph (a factory's is
        made for this run, in this task), then stream the graph's events."""
        run = attempt.run
        if prepared.writes is not None:
            Checkpoints.bind(prepared.writes)  # this task's checkpoint writes wait in it
        # A run claimed at creation had its first `metadata` stored with its row (a stream
        # of it sent it already); any other attempt appends its own.
        stored = run_store.stored_first_event(run) if attempt.token.attempt == 1 else None
        self.events.begin(attempt.token, stored=stored)
        if stored is None:
            await self._append(
                attempt, recorder, "metadata", run_store.first_metadata(run.id, run.attempt)
            )
        elif recorder is not None:
            recorder.on_event(stored[1], stored[2])
        config = await self._prepare(attempt, prepared)
        assert prepared.agent is not None
        kwargs = run.kwargs
        # Its graph executes once admitted (the loop's lag bounds how many short runs execute
        # at once); its first event is out already.
        async with (
            self.admission.admitted(prepared.agent.graph_id),
            self.graphs.acquire(
                prepared.agent.graph_id,
                config,
                context=prepared.run_context,
                user=run_creator(run),
                field="assistant_id",
            ) as graph,
        ):
            graph_input, context = await self._start(attempt, prepared, graph, config)
            prepared.timer = asyncio.timeout(self.settings.run_timeout_s)
            async with prepared.timer:
                async for event, data in stream_graph(
                    graph,
                    graph_input,
                    config=config,  # type: ignore[arg-type]
                    context=context,
                    stream_modes=kwargs.get("stream_mode") or ["values"],
                    subgraphs=bool(kwargs.get("stream_subgraphs")),
                    interrupt_before=kwargs.get("interrupt_before"),
                    interrupt_after=kwargs.get("interrupt_after"),
                    checkpoint_during=_checkpoint_during(kwargs),
                ):
                    await self._append(attempt, recorder, event, data)

    async def _state(
        self, graph: Graph, thread_id: uuid.UUID
    ) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """The thread's values, interrupts by task, and whether it stopped before a node."""
        state = await graph.aget_state(thread_config(thread_id))
        values = to_jsonable(state.values) if isinstance(state.values, Mapping) else {}
        interrupts: dict[str, Any] = {
            task.id: to_jsonable(list(task.interrupts)) for task in state.tasks if task.interrupts
        }
        return values, interrupts, bool(state.next)

    async def _command(self, graph: Graph, thread_id: uuid.UUID, command: Mapping[str, Any]) -> Any:
        """A `Command` from the request's `command`; a resume needs a pending interrupt."""
        if "resume" in command and command["resume"] is not None:
            _, interrupts, stopped = await self._state(graph, thread_id)
            if not interrupts and not stopped:
                raise ConflictError(
                    f"thread {thread_id} has no pending interrupt to resume (another run may "
                    "have resumed it already)",
                    field="command",
                )
        goto = command.get("goto")
        return Command(
            resume=command.get("resume"),
            update=command.get("update"),
            goto=goto if goto is not None else (),
        )

    # -- finishing: the status first, then `end` / `error` ----------------------------------------

    async def _retrying(
        self,
        attempt: Attempt,
        work: Callable[[], Awaitable[bool]],
        *,
        refused: list[Exception] | None = None,
    ) -> bool:
        """`work()` (a fenced write), retried while the database is restarting and the claim
        still holds; False when it did not go through (and PostgreSQL's refusal of the data put
        into `refused`, when given).

        A statement timeout is transient (contention, a stall), but the claim is renewed while
        this retries: a write that times out each time (one too slow for the database, say a
        thread's values it takes longer to store than `DB_STATEMENT_TIMEOUT_S`) would be sent
        for ever. Where a refusal has a way out (`refused`), the `_TIMEOUTS_REFUSED`th timeout
        in a row is taken for one: the finish after it carries nothing it could time out on.
        Elsewhere (that bare finish itself, say, whose update of the run's own row times out
        each time: a lock held on it, a trigger), the write is given up then (False): the
        attempt ends and frees its slot, its lease is no longer renewed, and once it lapses
        recovery reclaims the run (its next attempt resumes from the stored checkpoints)."""
        loop = asyncio.get_running_loop()
        backoff = 0.1
        timeouts = 0
        while True:
            try:
                return await work()
            except Exception as error:
                timeouts = timeouts + 1 if sqlstate(error) == _STATEMENT_TIMEOUT else 0
                if refused is not None and (is_refusal(error) or timeouts >= _TIMEOUTS_REFUSED):
                    refused.append(error)
                    return False
                if (
                    not is_transient(error)
                    or timeouts >= _TIMEOUTS_REFUSED
                    or loop.time() >= attempt.lease_deadline
                ):
                    log.error("run %s could not be finished here: %r", attempt.run.id, error)
                    return False
                log.warning("finishing run %s failed (%r); retrying", attempt.run.id, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _finish(
        self,
        attempt: Attempt,
        prepared: _Prepared,
        recorder: RunRecorder | None,
        *,
        error: BaseException | None,
    ) -> bool:
        """Write the run's final status and its thread's state, then its last event; False
        when the attempt no longer held the run (nothing written)."""
        async with self._state_graph(prepared.agent) as graph:
            return await self._finish_with(attempt, prepared, recorder, graph, error=error)

    async def _finish_with(
        self,
        attempt: Attempt,
        prepared: _Prepared,
        recorder: RunRecorder | None,
        graph: Graph | None,
        *,
        error: BaseException | None,
        last_try: bool = False,
        refused_by: BaseException | None = None,
    ) -> bool:
        # `refused_by`: PostgreSQL refused the run's finish (for its values, its error's text, a
        # recorder's write, ...): this one ends it as an error with nothing that could be refused
        # for what it holds: no thread values (the thread keeps what is stored), no recorder,
        # a fixed message (the error's type kept), only its `error` event.
        bare = refused_by is not None
        run = attempt.run
        assert run.thread_id is not None
        thread_id = run.thread_id
        values: dict[str, Any] = {}
        interrupts: dict[str, Any] = {}
        stopped = False
        data: dict[str, Any] | None = None
        status = "success"
        if error is None and graph is not None:
            try:  # the run's own last checkpoint, from memory (no read back)
                with Checkpoints.own_head(prepared.writes):
                    values, interrupts, stopped = await self._state(graph, thread_id)
            except Exception as state_error:  # the run's work is saved: it ends as an error
                if is_transient(state_error):
                    raise  # the database is down: the run is handed back, not failed
                error = state_error
        # Its last checkpoint writes, sent by its finish; stored first when a recorder reads
        # the thread's checkpoints before the finish (/chat's prune keeps only the latest).
        carried: list[run_store.FinishWrite] = []
        if prepared.writes is not None:
            if (
                error is None
                and not prepared.temporary
                and (recorder is None or not recorder.reads_checkpoints(values))
            ):
                ops = await self.resources.checkpoints.take(prepared.writes)
                carried = [run_store.FinishWrite(sql, params, many) for sql, params, many in ops]
            else:
                try:
                    await self.resources.checkpoints.flush(prepared.writes)
                except Exception as flush_error:
                    if is_transient(flush_error):
                        raise  # handed back: the next attempt resumes from what is stored
                    error = error or flush_error
        if error is not None:
            log.warning("run %s failed: %s: %s", run.id, type(error).__name__, error)
            data = _error_data(error)
            status = "error"
            if prepared.timed_out():
                status = "timeout"
                limit = self.settings.run_timeout_s
                data = {"error": "TimeoutError", "message": f"the run took over {limit} s"}
            if refused_by is not None:
                state = sqlstate(refused_by)
                why = (
                    f"timed out {_TIMEOUTS_REFUSED} times storing the run's results"
                    if state == _STATEMENT_TIMEOUT
                    else "refused to store the run's results"
                )
                data = {
                    "error": data["error"],
                    "message": f"the database {why}" + (f" (SQLSTATE {state})" if state else ""),
                }
            elif graph is not None:
                with contextlib.suppress(Exception):
                    values, _, _ = await self._state(graph, thread_id)
        output: dict[str, Any]
        if data is not None:
            output = {"__error__": data}
        else:
            output = dict(values)
            if interrupts:
                output["__interrupt__"] = [i for group in interrupts.values() for i in group]
        result = RunResult(
            run=run,
            status=status,
            values=values,
            error=f"{data['error']}: {data['message']}" if data else None,
            context=prepared.context,
            started=prepared.started,
        )
        record = FinishRecord()
        if recorder is not None and not bare:
            record = await recorder.on_finish(result, attempt.token)
        # The run's last events (the recorder's, then `end` or `error`) are stored by the
        # transaction that ends it: a client that sees the end sees the run ended, with one
        # round trip fewer than appending them after it.
        closing, last = await self.events.closing(
            attempt.token, [*record.events, ("error" if data else "end", data)], status=status
        )
        refusal = self.events.refusal(attempt.token)
        if refusal is not None and data is None and not last_try:
            # PostgreSQL refused an event of the run (too large for it, say): the run ends as
            # an error saying so, its last checkpoint writes sent by that finish's flush.
            self.events.closed(attempt.token, last, stored=False)
            if carried and prepared.writes is not None:
                self.resources.checkpoints.give_back(
                    prepared.writes, [(w.sql, w.params, w.many) for w in carried]
                )
            return await self._finish_with(
                attempt, prepared, recorder, graph, error=EventRefusedError(refusal), last_try=True
            )
        if data is not None:
            thread_status = "error"
            thread_values: dict[str, Any] | None = (
                values if graph is not None and not bare else None
            )
            thread_interrupts: dict[str, Any] = {}
        else:
            thread_status = "interrupted" if interrupts or stopped else "idle"
            thread_values, thread_interrupts = values, interrupts
        refused: list[Exception] = []
        # Its last checkpoint writes are stored by the finish: their span (and the checkpoint
        # write metric) is the finish's transaction, as a flush of their own would have had.
        flush: dict[str, AttributeValue] = {
            "checkpoint.op": "finish",
            "checkpoint.statements": len(carried),
        }
        carrying = (
            traced("checkpoint", "checkpoint flush", **flush)
            if carried
            else contextlib.nullcontext()
        )
        with carrying:
            finished = await self._retrying(
                attempt,
                lambda: run_store.finish_run(
                    self.db,
                    attempt.token,
                    status=status,
                    output=output,
                    error=result.error,
                    thread_status=thread_status,
                    thread_values=thread_values,
                    thread_interrupts=thread_interrupts,
                    delete_thread=prepared.temporary,
                    notify=self.queue.finish_notify(run.id),
                    also=(*record.writes, closing),
                    before=carried,
                ),
                refused=None if bare else refused,
            )
        self.events.closed(attempt.token, last, stored=finished)
        if refused:
            # PostgreSQL refused the transaction (its checkpoint writes, its values, say):
            # nothing of it was written, its checkpoint writes included: they go back, for the
            # bare finish's flush to store (or to fail as they did); the run ends as an error.
            log.warning("finishing run %s was refused: %r", run.id, refused[0])
            if carried and prepared.writes is not None:
                self.resources.checkpoints.give_back(
                    prepared.writes, [(w.sql, w.params, w.many) for w in carried]
                )
            return await self._finish_with(
                attempt,
                prepared,
                recorder,
                graph,
                error=error or refused[0],
                last_try=True,
                refused_by=refused[0],
            )
        if not finished:
            return False  # not ours any more: whoever holds the run finishes it
        prepared.outcome = status
        self.queue.announced(run.id)
        run.status, run.output, run.error = status, output, result.error
        if prepared.temporary:
            run.thread_id = None
        self.queue.finished(run)  # the waiters here get it without reading it back
        if prepared.temporary:
            await self._drop_checkpoints(thread_id)
        return True

    async def _finish_cancelled(
        self, attempt: Attempt, prepared: _Prepared, action: CancelAction
    ) -> bool:
        """Finish a run stopped by a cancel request: interrupted (its checkpoints kept), or
        rolled back (deleted with what it wrote)."""
        run = attempt.run
        assert run.thread_id is not None
        error = {
            "error": "UserInterrupt" if action == "interrupt" else "UserRollback",
            "message": f"run {action} requested",
        }
        temporary = bool(run.kwargs.get("temporary")) and run.kwargs.get("on_completion") != "keep"
        agent = prepared.agent
        if agent is None:
            async with self.db.sessions() as session:
                agent = await session.get(Agent, run.assistant_id) if run.assistant_id else None
        if action == "interrupt" and prepared.writes is not None:
            # Its steps so far are kept; if PostgreSQL is failing, the thread shows what is stored.
            with contextlib.suppress(Exception):
                await self.resources.checkpoints.flush(prepared.writes)
        async with self._state_graph(agent) as graph:
            settled = await self._settle_cancelled(attempt, action, error, temporary, graph)
        if settled:
            prepared.outcome = "interrupted" if action == "interrupt" else "rolled_back"
        return settled

    async def _settle_cancelled(
        self,
        attempt: Attempt,
        action: CancelAction,
        error: dict[str, str],
        temporary: bool,
        graph: Graph | None,
    ) -> bool:
        run = attempt.run
        assert run.thread_id is not None
        thread_id = run.thread_id
        if action == "rollback":
            # The stream ends first: once the run is deleted, its events are refused.
            await self.events.append(attempt.token, "error", error)
            # The run's checkpoints go with its row, in its transaction: none stays behind a
            # delete whose answer was lost (retried whole here, or by the run's next attempt
            # when this one gives up), and the thread's next run, which can start once the row
            # is gone, never starts from them.
            deletes = (
                []
                if temporary
                else await self.resources.checkpoints.run_deletes(str(thread_id), str(run.id))
            )
            tries = [0]

            async def drop() -> bool:
                tries[0] += 1  # a try after one that failed may find the run gone by it
                return await run_store.drop_run(
                    self.db, attempt.token, also=deletes, retried=tries[0] > 1
                )

            if not await self._retrying(attempt, drop):
                return False
            if temporary:
                await self._drop_checkpoints(thread_id)

            async def settle_thread() -> bool:  # idempotent: retried while PostgreSQL restarts
                async with self.db.sessions.begin() as session:
                    thread = await session.get(Conversation, thread_id, with_for_update=True)
                    if thread is not None and temporary:
                        await session.delete(thread)
                    elif thread is not None and graph is not None:
                        values, interrupts, _ = await self._state(graph, thread_id)
                        thread.values_, thread.interrupts = values, interrupts
                        if interrupts and thread.status == "idle":
                            thread.status = "interrupted"
                return True

            await self._retrying(attempt, settle_thread)
            return True
        values_now: dict[str, Any] | None = None
        interrupts_now: dict[str, Any] | None = None
        if graph is not None:
            with contextlib.suppress(Exception):
                values_now, interrupts_now, _ = await self._state(graph, thread_id)
        finished = await self._retrying(
            attempt,
            lambda: run_store.finish_run(
                self.db,
                attempt.token,
                status="interrupted",
                output=values_now or {},
                thread_status="interrupted" if interrupts_now else "idle",
                thread_values=values_now,
                thread_interrupts=interrupts_now,
                delete_thread=temporary,
                notify=self.queue.finish_notify(run.id),
            ),
        )
        if not finished:
            return False
        self.queue.announced(run.id)
        await self.events.append(attempt.token, "error", error)
        if temporary:
            await self._drop_checkpoints(thread_id)
        return True

    async def _drop_checkpoints(self, thread_id: uuid.UUID) -> None:
        """Delete a (temporary) thread's checkpoints."""
        try:
            await self.resources.checkpoints.delete_thread(str(thread_id))
        except Exception as error:  # housekeeping: the run's outcome stands
            log.warning("deleting checkpoints of thread %s failed: %r", thread_id, error)

    async def _send_webhook(self, run_id: uuid.UUID, started: datetime) -> None:
        try:
            run = await run_store.get_run(self.db, run_id)
        except NotFoundError:
            return
        output = run.output if isinstance(run.output, dict) else {}
        payload = webhook_payload(
            run_json(run),
            values=None if "__error__" in output else output,
            error=run.error,
            run_started_at=started,
            run_ended_at=datetime.now(UTC),
        )
        await send_webhook(
            str(run.kwargs["webhook"]),
            payload,
            policy=webhook_policy(self.settings),
            timeout_s=self.settings.webhook_timeout_s,
            attempts=self.settings.webhook_attempts,
        )
