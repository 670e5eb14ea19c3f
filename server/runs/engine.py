"""The durable run engine: runs are rows first, workers claim them with a lease and execute them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import text

from graphs.registry import build_graphs
from nodes.context import AgentContext
from nodes.models import ChatModelCache
from nodes.tools.registry import enabled_tools
from server.chat import agent_context
from server.resources import Resources
from server.runs.events import RunEventLog
from server.runs.streaming import error_data, stream_graph, to_jsonable
from server.runs.webhooks import send_webhook, webhook_payload
from stores.errors import ConflictError, InvalidInputError, NotFoundError
from stores.sql import runs as run_store
from stores.sql.database import libpq_url
from stores.sql.models import Agent, Conversation, Run

log = logging.getLogger(__name__)

CHANNEL = "switchboard_runs"
Graph = CompiledStateGraph[Any, Any, Any, Any]
CancelAction = Literal["interrupt", "rollback"]


class ContextOverrides(BaseModel):
    """The keys of an assistant's or a run's `context` that change the agent's `AgentContext`.

    Other keys are ignored (graphs with another context schema may use them).
    """

    model_config = ConfigDict(extra="ignore")

    agent_name: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = Field(None, max_length=100_000)
    tools: list[str] | None = Field(None, max_length=50)
    collections: list[str] | None = Field(None, max_length=50)
    max_steps: int | None = Field(None, ge=1, le=50)
    history_window: int | None = Field(None, ge=2, le=200)
    retrieve_k: int | None = Field(None, ge=0, le=20)
    min_score: float | None = Field(None, ge=-1, le=1)
    memory_policy: Literal["auto", "tool", "off"] | None = None

    @field_validator("tools")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            enabled_tools(value)  # raises ValueError naming unknown tools
        return value


def apply_context(context: AgentContext, *layers: Mapping[str, Any] | None) -> AgentContext:
    """`context` with each layer's overrides applied in order; `ValueError` on a bad value."""
    for layer in layers:
        if not layer:
            continue
        try:
            overrides = ContextOverrides.model_validate(layer).model_dump(exclude_none=True)
        except ValidationError as error:
            raise ValueError(str(error)) from error
        for key in ("tools", "collections"):
            if key in overrides:
                overrides[key] = tuple(overrides[key])
        context = dataclasses.replace(context, **overrides)
    return context


def load_extra_graphs(
    specs: Mapping[str, str], *, checkpointer: Any, store: Any
) -> dict[str, Graph]:
    """Build the graphs of setting `EXTRA_GRAPHS` ({"id": "module:builder"})."""
    graphs: dict[str, Graph] = {}
    for graph_id, spec in specs.items():
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise ValueError(f"EXTRA_GRAPHS[{graph_id!r}] must be 'module:builder', got {spec!r}")
        builder = getattr(importlib.import_module(module_name), attr)
        graphs[graph_id] = builder(checkpointer=checkpointer, store=store)
    return graphs


def run_json(run: Run) -> dict[str, Any]:
    """A run as the Agent Server API shows it (langgraph-sdk `Run`)."""
    return {
        "run_id": str(run.id),
        "thread_id": str(run.thread_id) if run.thread_id else None,
        "assistant_id": str(run.assistant_id) if run.assistant_id else None,
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
        "status": run.status,
        "metadata": run.metadata_,
        "kwargs": run.kwargs,
        "multitask_strategy": run.multitask_strategy,
        "cancel_reason": run.cancel_reason,
    }


def _checkpoint_during(kwargs: Mapping[str, Any]) -> bool | None:
    """`checkpoint_during` from the request, or from `durability` (exit: only at the end)."""
    during = kwargs.get("checkpoint_during")
    if during is not None:
        return bool(during)
    durability = kwargs.get("durability")
    return None if durability is None else durability != "exit"


def _merge_config(*configs: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for config in configs:
        for key, value in (config or {}).items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


class RunEngine:
    """Claims runs from PostgreSQL and executes them; shared by every server process.

    A run is claimed with a lease (`runs.lease_owner`, `lease_expires_at`) that a heartbeat
    renews; a process killed mid-run stops renewing, and another process reclaims the run once
    the lease expires and continues it from its last checkpoint. Processes wake each other with
    NOTIFY on `switchboard_runs` ("new", "cancel <run> <action>", "done <run>").
    """

    def __init__(
        self,
        resources: Resources,
        *,
        events: RunEventLog,
        graphs: Mapping[str, Graph] | None = None,
        models: ChatModelCache | None = None,
    ) -> None:
        settings = resources.settings
        self.resources = resources
        self.settings = settings
        self.db = resources.database
        self.events = events
        saver, store = resources.checkpoints.saver, resources.memory
        self.graphs: dict[str, Graph] = dict(
            graphs or build_graphs(checkpointer=saver, store=store)
        )
        self.graphs.update(
            load_extra_graphs(settings.extra_graphs, checkpointer=saver, store=store)
        )
        self.models = models or ChatModelCache()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_s = settings.run_lease_s
        self._idle: list[asyncio.Future[None]] = []  # workers waiting for a run
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._cancels: dict[uuid.UUID, CancelAction] = {}
        self._done: dict[uuid.UUID, set[asyncio.Event]] = {}  # waiters by run
        self._lost: set[uuid.UUID] = set()
        self._announced: set[uuid.UUID] = set()  # finished with their NOTIFY sent
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the NOTIFY listener and `run_workers` workers."""
        self._tasks.append(asyncio.create_task(self._listen(), name="runs-listener"))
        for n in range(self.settings.run_workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"runs-worker-{n}"))

    async def aclose(self) -> None:
        """Stop workers; runs still executing go back to pending so another process resumes."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            if await run_store.release_runs(self.db, owner=self.owner):
                await self._notify("new")

    # -- API -------------------------------------------------------------------------------

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
    ) -> Run:
        """Write the run row (applying the multitask strategy) and wake a worker.

        Raises `NotFoundError` (unknown thread), `ConflictError` (`reject` on a busy thread)
        and `InvalidInputError` (the assistant's graph is not declared).
        """
        if assistant.graph_id not in self.graphs:
            raise InvalidInputError(
                f"assistant {assistant.id} uses graph {assistant.graph_id!r}, which is not "
                f"declared; declared graphs: {sorted(self.graphs)}",
                field="assistant_id",
            )
        run, cancels = await run_store.create_run(
            self.db,
            thread_id=thread_id,
            assistant_id=assistant.id,
            graph_id=assistant.graph_id,
            kwargs={**kwargs, "temporary": temporary},
            metadata=metadata,
            multitask_strategy=multitask_strategy,
            if_not_exists=if_not_exists,
            temporary=temporary,
            notify=run_store.Notify(CHANNEL, self.owner),
        )
        for payload in (*(f"cancel {r.run_id} {r.action}" for r in cancels), "new"):
            self._dispatch(payload)  # the others hear it from the commit
        return run

    async def cancel(
        self,
        run_ids: list[uuid.UUID],
        *,
        action: CancelAction = "interrupt",
        thread_id: uuid.UUID | None = None,
        reason: str = "cancelled by a client",
    ) -> None:
        """Cancel runs: pending ones at once, running ones by their owning process."""
        requests = await run_store.cancel_runs(
            self.db, run_ids, action=action, reason=reason, thread_id=thread_id
        )
        await self._notify(
            *(f"cancel {r.run_id} {r.action}" for r in requests),
            *(f"done {run_id}" for run_id in run_ids),
        )

    def cancel_soon(self, run_id: uuid.UUID, *, reason: str) -> None:
        """`cancel` in a task of its own: for callers that are being cancelled (disconnects)."""
        task = asyncio.create_task(self.cancel([run_id], reason=reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait(self, run_id: uuid.UUID, *, timeout_s: float | None = None) -> Run | None:
        """Wait until the run is finished; the final row (None if it was deleted: rollback)."""
        event = asyncio.Event()
        self._done.setdefault(run_id, set()).add(event)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        try:
            while True:
                try:
                    run = await run_store.get_run(self.db, run_id)
                except NotFoundError:
                    return None
                if run.status in run_store.DONE:
                    return run
                remaining = self.settings.run_poll_s
                if deadline is not None:
                    remaining = min(remaining, deadline - loop.time())
                    if remaining <= 0:
                        raise TimeoutError(f"run {run_id} is still {run.status}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
                event.clear()
        finally:
            waiters = self._done.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._done[run_id]

    async def output(self, run_id: uuid.UUID) -> Any:
        """What `/wait` and `/join` return once the run is done (thread values as fallback)."""
        run = await self.wait(run_id)
        if run is None:
            return {}
        if run.output is not None:
            return run.output
        if run.thread_id is not None:
            thread = await run_store.require_thread(self.db, run.thread_id)
            return thread.values_
        return {}

    # -- NOTIFY ----------------------------------------------------------------------------

    async def _notify(self, *payloads: str) -> None:
        """Act on `payloads` here at once, and tell the other processes (one round trip)."""
        for payload in payloads:
            self._dispatch(payload)
        if not payloads:
            return
        params = {f"p{n}": f"{payload}|{self.owner}" for n, payload in enumerate(payloads)}
        calls = ", ".join(f"pg_notify(:channel, :p{n})" for n in range(len(payloads)))
        async with self.db.engine.begin() as conn:
            await conn.execute(text(f"SELECT {calls}"), {"channel": CHANNEL, **params})

    def _finish_notify(self, run_id: uuid.UUID) -> run_store.Notify:
        """What the commit that finishes `run_id` tells the other processes."""
        return run_store.Notify(CHANNEL, self.owner, (f"done {run_id}", "new"))

    def _signal(self) -> None:
        """Wake one idle worker (if any) to look for a run."""
        while self._idle:
            waiter = self._idle.pop()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _listen(self) -> None:
        url = libpq_url(self.resources.database_url)
        while not self._closing:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._signal()
                    async for notice in conn.notifies():
                        payload, _, sender = notice.payload.rpartition("|")
                        if sender != self.owner:  # ours were handled when sent
                            self._dispatch(payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("run listener lost its connection (%s); retrying", error)
                await asyncio.sleep(self.settings.run_poll_s)

    def _dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        if kind == "new":
            self._signal()
        elif kind == "cancel":
            raw_id, _, action = rest.partition(" ")
            with contextlib.suppress(ValueError):
                self._cancel_local(
                    uuid.UUID(raw_id), "rollback" if action == "rollback" else "interrupt"
                )
        elif kind == "done":
            with contextlib.suppress(ValueError):
                for event in self._done.get(uuid.UUID(rest), ()):
                    event.set()

    def _cancel_local(self, run_id: uuid.UUID, action: CancelAction) -> None:
        task = self._running.get(run_id)
        if task is not None and not task.done():
            self._cancels[run_id] = action
            task.cancel()

    # -- workers ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        while not self._closing:
            try:
                run = await run_store.claim_run(self.db, owner=self.owner, lease_s=self.lease_s)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("claiming a run failed: %s", error)
                run = None
            if run is None:
                waiter = asyncio.get_running_loop().create_future()
                self._idle.append(waiter)
                try:
                    await asyncio.wait_for(waiter, self.settings.run_poll_s)
                except TimeoutError:
                    pass
                finally:
                    if waiter in self._idle:
                        self._idle.remove(waiter)
                continue
            self._signal()  # there may be more: pass the word to another idle worker
            try:
                await self._execute(run)
            except asyncio.CancelledError:
                raise
            except Exception:  # the run's lease expires and another worker takes it over
                log.exception("executing run %s failed", run.id)

    async def _heartbeat(self, run_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                ours, reason = await run_store.renew_lease(
                    self.db, run_id, owner=self.owner, lease_s=self.lease_s
                )
            except Exception as error:
                log.warning("renewing the lease of run %s failed: %s", run_id, error)
                continue
            if not ours:
                log.warning("run %s: lease lost; stopping it here", run_id)
                self._lost.add(run_id)
                task.cancel()
                return
            if reason and not task.done():  # a cancel whose NOTIFY we missed
                self._cancels.setdefault(
                    run_id, "rollback" if reason.startswith("rollback") else "interrupt"
                )
                task.cancel()
                return

    async def _execute(self, run: Run) -> None:
        started = datetime.now(UTC)
        task = asyncio.create_task(self._run_graph(run), name=f"run-{run.id}")
        self._running[run.id] = task
        heartbeat = asyncio.create_task(self._heartbeat(run.id, task))
        try:
            reason = run.cancel_reason
            if reason:  # cancelled while its previous owner died
                task.cancel()
                self._cancels[run.id] = "rollback" if reason.startswith("rollback") else "interrupt"
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    # The worker itself is being cancelled (shutdown): stop the run, leave it.
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    raise
                if run.id in self._lost:  # another process owns it now
                    self._lost.discard(run.id)
                    return
                action = self._cancels.pop(run.id, None)
                if action is None:
                    raise
                await self._finish_cancelled(run, action)
            except Exception:
                log.exception("run %s failed outside its graph", run.id)
        finally:
            heartbeat.cancel()
            self._running.pop(run.id, None)
            self._cancels.pop(run.id, None)
        if run.id in self._announced:  # sent with the commit that finished it
            self._announced.discard(run.id)
            self._dispatch(f"done {run.id}")
            self._dispatch("new")
        else:
            await self._notify(f"done {run.id}", "new")
        if run.kwargs.get("webhook"):
            await self._send_webhook(run.id, started)

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
            allowed_hosts=self.settings.webhook_allowed_hosts,
            timeout_s=self.settings.webhook_timeout_s,
            attempts=self.settings.webhook_attempts,
        )

    async def _thread_config(self, thread_id: uuid.UUID) -> RunnableConfig:
        return {"configurable": {"thread_id": str(thread_id), "checkpoint_ns": ""}}

    async def _state(
        self, graph: Graph, thread_id: uuid.UUID
    ) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """The thread's values, interrupts by task, and whether it stopped before a node."""
        state = await graph.aget_state(await self._thread_config(thread_id))
        values = to_jsonable(state.values) if isinstance(state.values, Mapping) else {}
        interrupts: dict[str, Any] = {
            task.id: to_jsonable(list(task.interrupts)) for task in state.tasks if task.interrupts
        }
        return values, interrupts, bool(state.next)

    async def _run_graph(self, run: Run) -> None:
        kwargs = run.kwargs
        assert run.thread_id is not None
        thread_id = run.thread_id
        async with self.db.sessions() as session:
            agent = await session.get(Agent, run.assistant_id) if run.assistant_id else None
            thread = await session.get(Conversation, thread_id)
        temporary = bool(kwargs.get("temporary")) and kwargs.get("on_completion") != "keep"
        graph = self.graphs.get(agent.graph_id) if agent else None
        timer = asyncio.timeout(self.settings.run_timeout_s)
        await self.resources.checkpoints.ready()
        await self.events.append(
            run.id, "metadata", {"run_id": str(run.id), "attempt": run.attempt}
        )
        try:
            if agent is None or graph is None or thread is None:
                raise ConflictError(
                    f"run {run.id}: its assistant, graph or thread no longer exists",
                    field="assistant_id",
                )
            context = agent_context(
                agent,
                user_id=thread.user_id,
                settings=self.settings,
                knowledge=self.resources.knowledge,
                tool_cache=self.resources.tool_cache,
                models=self.models,
            )
            try:
                context = apply_context(context, agent.context, kwargs.get("context"))
            except ValueError as error:
                raise InvalidInputError(f"context: {error}", field="context") from error
            config = _merge_config(agent.config, kwargs.get("config"))
            configurable = dict(config.get("configurable") or {})
            configurable.update(thread_id=str(thread_id), checkpoint_ns="")
            graph_input: Any = kwargs.get("input")
            latest = await self.resources.checkpoints.saver.aget_tuple(
                await self._thread_config(thread_id)
            )
            resuming = (
                run.attempt > 1
                and latest is not None
                and latest.metadata.get("run_id") == str(run.id)
            )
            if resuming:
                graph_input = None  # continue from our last checkpoint
            else:
                if kwargs.get("checkpoint_id"):
                    configurable["checkpoint_id"] = kwargs["checkpoint_id"]
                command = kwargs.get("command")
                if command:
                    graph_input = await self._command(graph, thread_id, command)
            config["configurable"] = configurable
            config["metadata"] = {
                **(config.get("metadata") or {}),
                **(run.metadata_ or {}),
                "run_id": str(run.id),
                "run_attempt": run.attempt,
                "thread_id": str(thread_id),
                "assistant_id": str(agent.id),
                "graph_id": agent.graph_id,
            }
            config.setdefault("recursion_limit", 2 * context.max_steps + 12)
            async with timer:
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
                    await self.events.append(run.id, event, data)
            values, interrupts, stopped = await self._state(graph, thread_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("run %s failed: %s: %s", run.id, type(error).__name__, error)
            data = error_data(error)
            status = "error"
            if timer.expired():
                status = "timeout"
                limit = self.settings.run_timeout_s
                data = {"error": "TimeoutError", "message": f"the run took over {limit} s"}
            await self.events.append(run.id, "error", data)
            values_after: dict[str, Any] | None = None
            if graph is not None and thread is not None:
                with contextlib.suppress(Exception):
                    values_after, _, _ = await self._state(graph, thread_id)
            if await run_store.finish_run(
                self.db,
                run.id,
                owner=self.owner,
                status=status,
                output={"__error__": data},
                error=f"{data['error']}: {data['message']}",
                thread_status="error",
                thread_values=values_after,
                thread_interrupts={},
                delete_thread=temporary,
                notify=self._finish_notify(run.id),
            ):
                self._announced.add(run.id)
            if temporary:
                await self._drop_checkpoints(thread_id)
            return
        output: dict[str, Any] = dict(values)
        if interrupts:
            output["__interrupt__"] = [i for group in interrupts.values() for i in group]
        await self.events.append(run.id, "end", None)
        if await run_store.finish_run(
            self.db,
            run.id,
            owner=self.owner,
            status="success",
            output=output,
            thread_status="interrupted" if interrupts or stopped else "idle",
            thread_values=values,
            thread_interrupts=interrupts,
            delete_thread=temporary,
            notify=self._finish_notify(run.id),
        ):
            self._announced.add(run.id)
        if temporary:
            await self._drop_checkpoints(thread_id)

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

    async def _finish_cancelled(self, run: Run, action: CancelAction) -> None:
        assert run.thread_id is not None
        thread_id = run.thread_id
        await self.events.append(
            run.id,
            "error",
            {
                "error": "UserInterrupt" if action == "interrupt" else "UserRollback",
                "message": f"run {action} requested",
            },
        )
        async with self.db.sessions() as session:
            agent = await session.get(Agent, run.assistant_id) if run.assistant_id else None
        graph = self.graphs.get(agent.graph_id) if agent else None
        temporary = bool(run.kwargs.get("temporary")) and run.kwargs.get("on_completion") != "keep"
        if action == "rollback":
            await self._drop_checkpoints(thread_id, run_id=None if temporary else run.id)
            await run_store.drop_run(self.db, run.id, owner=self.owner)
            async with self.db.sessions.begin() as session:
                thread = await session.get(Conversation, thread_id, with_for_update=True)
                if thread is not None and temporary:
                    await session.delete(thread)
                elif thread is not None and graph is not None:
                    values, interrupts, _ = await self._state(graph, thread_id)
                    thread.values_, thread.interrupts = values, interrupts
                    if interrupts and thread.status == "idle":
                        thread.status = "interrupted"
            return
        values_now: dict[str, Any] | None = None
        interrupts_now: dict[str, Any] | None = None
        if graph is not None:
            values_now, interrupts_now, _ = await self._state(graph, thread_id)
        await run_store.finish_run(
            self.db,
            run.id,
            owner=self.owner,
            status="interrupted",
            output=values_now or {},
            thread_status="interrupted" if interrupts_now else "idle",
            thread_values=values_now,
            thread_interrupts=interrupts_now,
            delete_thread=temporary,
        )
        if temporary:
            await self._drop_checkpoints(thread_id)

    async def _drop_checkpoints(
        self, thread_id: uuid.UUID, *, run_id: uuid.UUID | None = None
    ) -> None:
        """Delete a thread's checkpoints (only those `run_id` wrote, when given)."""
        saver = self.resources.checkpoints.saver
        if run_id is None:
            await saver.adelete_thread(str(thread_id))
            return
        async with self.resources.checkpoints.pool.connection() as conn:
            await conn.execute(
                "DELETE FROM checkpoint_writes w USING checkpoints c "
                "WHERE c.thread_id = %(t)s AND c.metadata->>'run_id' = %(r)s "
                "AND w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns "
                "AND w.checkpoint_id = c.checkpoint_id",
                {"t": str(thread_id), "r": str(run_id)},
            )
            await conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = %(t)s AND metadata->>'run_id' = %(r)s",
                {"t": str(thread_id), "r": str(run_id)},
            )
            # Pending writes the run left on the checkpoint it started from.
            await conn.execute(
                "DELETE FROM checkpoint_writes WHERE thread_id = %(t)s AND checkpoint_id = "
                "(SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = %(t)s "
                "AND checkpoint_ns = '')",
                {"t": str(thread_id)},
            )


@contextlib.asynccontextmanager
async def open_run_engine(
    resources: Resources, *, events: RunEventLog, models: ChatModelCache | None = None
) -> AsyncIterator[RunEngine]:
    """A started engine for the lifespan; on exit its running runs go back to the queue."""
    engine = RunEngine(resources, events=events, models=models)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()
