"""Chat turns: run an agent's graph in a task of its own, stream its events, save what it says."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from langgraph.types import StreamMode
from sqlalchemy.exc import SQLAlchemyError

from graphs.registry import build_graphs
from nodes.context import AgentContext, ToolCache
from nodes.models import ChatModelCache
from nodes.retrieve import public_source
from nodes.tools.builtin import BUILTIN_TOOLS
from server.resources import Resources
from server.runs.context import ContextServices, agent_context
from server.runs.streaming import to_jsonable
from server.schemas.turns import ChatAnswer, ChatRequest
from stores.errors import ConflictError
from stores.sql import repositories as repo
from stores.sql import runs, turns
from stores.sql import tools as sql_tools
from stores.sql.models import Agent, Conversation
from stores.sql.runs import RunToken

log = logging.getLogger(__name__)

STREAM_MODES: list[StreamMode] = ["custom", "values"]


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One typed event of a turn's stream."""

    event: str
    data: dict[str, Any]


@dataclass(slots=True)
class _Progress:
    """What a running turn has produced so far."""

    final: dict[str, Any] = field(default_factory=dict)
    tool_records: list[dict[str, Any]] = field(default_factory=list)
    first_token: float | None = None


@dataclass(slots=True)
class Turn:
    """A turn that was accepted: its rows exist, its graph runs in `task`."""

    run_id: uuid.UUID
    conversation_id: uuid.UUID
    token: RunToken
    queue: asyncio.Queue[ChatEvent | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[ChatAnswer] | None = None

    async def events(self) -> AsyncIterator[ChatEvent]:
        """The turn's events until `end`; leaving early does not stop the turn."""
        while (event := await self.queue.get()) is not None:
            yield event

    async def result(self) -> ChatAnswer:
        """The turn's answer once it has been saved."""
        assert self.task is not None
        return await asyncio.shield(self.task)


class ChatService:
    """Runs turns of every declared graph with the server's checkpointer, store and knowledge."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.settings = resources.settings
        store: BaseStore = resources.memory
        self.tool_cache: ToolCache = resources.tool_cache
        self.graphs: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = build_graphs(
            checkpointer=resources.checkpoints.saver, store=store
        )
        self.models = ChatModelCache()
        self.disabled_tools: frozenset[str] = frozenset()
        self.owner = f"chat:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: set[asyncio.Task[ChatAnswer]] = set()
        self._locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def sync_tools(self) -> None:
        """Write the built-in tools to the `tools` table and note which are switched off there.

        A database that is down is logged, not fatal: every tool then counts as enabled.
        """
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
            await sql_tools.sync_tools(self.resources.database, rows)
            listed = await sql_tools.list_tools(self.resources.database)
        except (SQLAlchemyError, OSError) as error:
            log.warning("could not sync the tools table (all tools stay enabled): %s", error)
            return
        self.disabled_tools = frozenset(row.name for row in listed if not row.enabled)

    def _lock(self, conversation_id: uuid.UUID) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        return lock

    async def start(self, request: ChatRequest) -> Turn:
        """Check the target, write the user message and run row, and start the graph.

        Raises `NotFoundError` (unknown conversation, user or agent) and `ConflictError`
        (the conversation's agent was deleted, or its graph is not declared) before any work.
        """
        db = self.resources.database
        if request.conversation_id is None:
            conversation = await repo.create_conversation(
                db,
                {
                    "user_id": request.user_id,
                    "agent_id": request.agent_id,
                    "title": request.title or request.message[:80],
                },
            )
            conversation_id = conversation.id
        else:
            conversation_id = request.conversation_id

        def prepare(
            conversation: Conversation, agent: Agent
        ) -> tuple[str, CompiledStateGraph[Any, Any, Any, Any], AgentContext]:
            graph = self.graphs.get(agent.graph_id)
            if graph is None:
                raise ConflictError(
                    f"agent {agent.id} uses graph {agent.graph_id!r}, which is not declared; "
                    f"declared graphs: {sorted(self.graphs)}",
                    field="graph_id",
                )
            context = agent_context(
                agent,
                user_id=conversation.user_id,
                settings=self.settings,
                services=ContextServices(
                    knowledge=self.resources.knowledge,
                    tool_cache=self.tool_cache,
                    models=self.models,
                ),
                disabled_tools=self.disabled_tools,
            )
            return agent.graph_id, graph, context

        message_id = uuid.uuid4()
        human = {"type": "human", "content": request.message, "id": str(message_id)}
        (graph_id, graph, context), user_message, run = await turns.begin_turn(
            db,
            conversation_id,
            message_id=message_id,
            content=request.message,
            # What a run worker needs to resume the turn if this process dies mid-way.
            run_kwargs={
                "input": {"messages": [human]},
                "stream_mode": ["values"],
                "durability": self.settings.chat_durability,
            },
            metadata={"source": "chat"},
            owner=self.owner,
            lease_s=self.settings.run_lease_s,
            prepare=prepare,
        )
        turn = Turn(run_id=run.id, conversation_id=conversation_id, token=RunToken(run.id, 1))
        turn.queue.put_nowait(
            ChatEvent(
                "metadata",
                {
                    "run_id": str(run.id),
                    "conversation_id": str(conversation_id),
                    "agent_id": str(run.assistant_id),
                    "graph_id": graph_id,
                    "user_message_id": str(user_message.id),
                    "model": context.model.name,
                },
            )
        )
        task = asyncio.create_task(
            self._run(turn, graph, context, request.message, str(user_message.id)),
            name=f"chat-turn-{run.id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        turn.task = task
        return turn

    async def _stream(
        self,
        turn: Turn,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        context: AgentContext,
        progress: _Progress,
        message: str,
        message_id: str,
    ) -> None:
        """Run the graph, forwarding its custom events; the final values go in `progress`."""
        config: RunnableConfig = {
            "configurable": {"thread_id": str(turn.conversation_id)},
            "run_id": turn.run_id,
            # In checkpoint metadata: a run worker resuming this run after a crash looks for it.
            "metadata": {"run_id": str(turn.run_id), "source": "chat"},
            "recursion_limit": 2 * context.max_steps + 12,
        }
        async for mode, chunk in graph.astream(
            {"messages": [HumanMessage(content=message, id=message_id)]},
            config,
            context=context,
            stream_mode=STREAM_MODES,
            durability=self.settings.chat_durability,
        ):
            payload: Any = chunk
            if mode == "values":
                progress.final = dict(payload)
                continue
            event = ChatEvent(str(payload["event"]), dict(payload["data"]))
            if event.event == "tool_result":
                progress.tool_records.append(event.data)
            elif event.event == "token" and progress.first_token is None:
                progress.first_token = time.perf_counter()
            turn.queue.put_nowait(event)

    async def _hold_lease(self, token: RunToken, work: asyncio.Task[None]) -> str | None:
        """Renew the run's lease until `work` ends; a cancel request (or a lost lease) stops it.

        Returns:
            Why the work was stopped, or None when it ended by itself.
        """
        lease_s = self.settings.run_lease_s
        while True:
            done, _ = await asyncio.wait({work}, timeout=lease_s / 3)
            if done:
                return None
            try:
                renewal = await runs.renew_lease(self.resources.database, token, lease_s=lease_s)
            except SQLAlchemyError as error:  # a blip: the next beat may succeed
                log.warning("could not renew the lease of chat run %s: %s", token.run_id, error)
                continue
            ours, cancel = renewal.held, renewal.cancel_reason
            if ours and cancel is None:
                continue
            reason = cancel or "the run was taken over by another worker"
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return reason

    async def _run(
        self,
        turn: Turn,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        context: AgentContext,
        message: str,
        message_id: str,
    ) -> ChatAnswer:
        started = time.perf_counter()
        progress = _Progress()
        status, error_text = "success", None
        work: asyncio.Task[None] | None = None
        try:
            async with self._lock(turn.conversation_id):
                await self.resources.checkpoints.ready()
                work = asyncio.create_task(
                    self._stream(turn, graph, context, progress, message, message_id)
                )
                stopped = await self._hold_lease(turn.token, work)
                if stopped is not None:
                    status, error_text = "interrupted", f"cancelled: {stopped}"
                else:
                    work.result()  # raises what the graph raised
                    await self._maybe_prune(turn.conversation_id, progress.final)
        except asyncio.CancelledError:
            # Shutdown cancelled the turn: record it (the checkpoint holds its progress).
            if work is not None:
                work.cancel()
            reason = "the server stopped during the turn"
            with contextlib.suppress(Exception):
                await asyncio.shield(self._close_run(turn, "interrupted", reason, None))
            turn.queue.put_nowait(ChatEvent("error", {"message": reason}))
            turn.queue.put_nowait(
                ChatEvent("end", {"run_id": str(turn.run_id), "status": "interrupted"})
            )
            turn.queue.put_nowait(None)
            raise
        except Exception as error:
            log.exception("chat turn %s failed", turn.run_id)
            status, error_text = "error", f"{type(error).__name__}: {error}"
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        answer = self._answer(
            turn, progress.final, progress.tool_records, context, latency_ms, status, error_text
        )
        try:
            rows = await turns.save_messages(
                self.resources.database,
                turn.conversation_id,
                self._transcript(answer, progress.tool_records, progress.first_token, started),
            )
            agent_rows = [row for row in rows if row.sender == "agent"]
            answer.message_id = agent_rows[-1].id if agent_rows else None
            await self._close_run(turn, answer.status, answer.error, progress.final)
        except Exception as error:
            log.exception("could not save chat turn %s", turn.run_id)
            answer.status, answer.error = "error", f"saving the answer failed: {error}"
        put = turn.queue.put_nowait
        if answer.status == "success":
            put(
                ChatEvent(
                    "message",
                    {
                        "id": str(answer.message_id),
                        "content": answer.content,
                        "citations": answer.citations,
                        "usage": answer.usage,
                        "model": answer.model,
                        "latency_ms": answer.latency_ms,
                    },
                )
            )
        else:
            put(ChatEvent("error", {"message": answer.error or "the turn failed"}))
        put(ChatEvent("end", {"run_id": str(turn.run_id), "status": answer.status}))
        put(None)
        return answer

    async def _close_run(
        self, turn: Turn, status: str, error: str | None, final: Mapping[str, Any] | None
    ) -> None:
        """Close the run row and set the conversation (thread) status and values."""
        closed = await runs.finish_run(
            self.resources.database,
            turn.token,
            status=status,
            output={"answer": final.get("answer", "")} if final else None,
            error=error,
            thread_status="error" if status == "error" else "idle",
            thread_values=to_jsonable(final) if final else None,
            thread_interrupts={},
        )
        if not closed:
            log.warning("chat run %s was no longer ours when it ended", turn.run_id)

    async def _maybe_prune(self, conversation_id: uuid.UUID, final: Mapping[str, Any]) -> None:
        every = self.settings.checkpoint_prune_every
        if every and int(final.get("turn", 0)) % every == 0:
            await self.resources.checkpoints.prune(str(conversation_id))

    @staticmethod
    def _answer(
        turn: Turn,
        final: Mapping[str, Any],
        tool_records: list[dict[str, Any]],
        context: AgentContext,
        latency_ms: float,
        status: str,
        error: str | None,
    ) -> ChatAnswer:
        return ChatAnswer(
            run_id=turn.run_id,
            conversation_id=turn.conversation_id,
            message_id=None,
            status=status,
            content=str(final.get("answer", "")) if status == "success" else "",
            citations=[public_source(s) for s in final.get("citations", [])],
            plan=list(final.get("plan", [])),
            tool_calls=tool_records,
            sources=[public_source(s) for s in final.get("sources", [])],
            warnings=list(final.get("warnings", [])),
            usage=dict(final.get("usage", {})),
            model=f"{context.model.provider}:{context.model.name}",
            latency_ms=latency_ms,
            error=error,
        )

    @staticmethod
    def _transcript(
        answer: ChatAnswer,
        tool_records: list[dict[str, Any]],
        first_token: float | None,
        started: float,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {
                "sender": "tool",
                "content": record["content"],
                "metadata": {
                    "run_id": str(answer.run_id),
                    "tool": record["name"],
                    "tool_call_id": record["id"],
                    "args": record["args"],
                    "status": record["status"],
                    "latency_ms": record["latency_ms"],
                    "cached": record["cached"],
                },
            }
            for record in tool_records
        ]
        if answer.status == "success":
            rows.append(
                {
                    "sender": "agent",
                    "content": answer.content,
                    "metadata": {
                        "run_id": str(answer.run_id),
                        "model": answer.model,
                        "usage": answer.usage,
                        "latency_ms": answer.latency_ms,
                        "time_to_first_token_ms": (
                            round((first_token - started) * 1000, 2) if first_token else None
                        ),
                        "tool_calls": [
                            {k: r[k] for k in ("id", "name", "args", "status")}
                            for r in tool_records
                        ],
                        "citations": answer.citations,
                        "plan": answer.plan,
                        "warnings": answer.warnings,
                    },
                }
            )
        return rows

    async def aclose(self, *, grace_s: float = 10.0) -> None:
        """Let running turns finish (up to `grace_s`), then cancel the rest."""
        pending = list(self._tasks)
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@contextlib.asynccontextmanager
async def open_chat(resources: Resources) -> AsyncIterator[ChatService]:
    """The chat service for the lifespan; on exit running turns finish before pools close."""
    service = ChatService(resources)
    await service.sync_tools()
    try:
        yield service
    finally:
        await service.aclose()
