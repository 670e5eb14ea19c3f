"""A2A at `/a2a/{assistant_id}` (JSON-RPC, `a2a-sdk`): each assistant is an agent with a card.

The mapping is langgraph-api's, done with our run engine: an A2A context is a thread (created on
first use; its id is the `contextId`), a task is one run on it (task id `"{context}:{run}"`, so
`tasks/get` needs nothing else), and a task's state is its run's status. Both protocol
versions answer on the same URL: v1.0 (`SendMessage`, `SendStreamingMessage`, `GetTask`,
`CancelTask`) and v0.3 (`message/send`, `message/stream`, `tasks/get`, `tasks/cancel`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from starlette.requests import Request
from starlette.responses import Response

from server.auth.caller import OPEN, Caller, caller_of
from server.auth.contract import AuthError
from server.auth.limits import run_creator
from server.protocols.runs import is_ai, last_ai_text, message_text, run_error, submit_messages
from server.runs.engine import RunEngine
from server.runs.events import RunEventLog
from server.settings import Settings
from stores.errors import LimitError, NotFoundError
from stores.sql import runs as run_store
from stores.sql.assistants import assistant_key, or_system, resolve_assistant
from stores.sql.models import Agent, Conversation, Run

VERSION: Final = "0.1.0"
TEXT: Final = "text/plain"
TERMINAL: Final = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
_STATES: Final[dict[str, TaskState]] = {
    "pending": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "success": TaskState.TASK_STATE_COMPLETED,
    "interrupted": TaskState.TASK_STATE_CANCELED,  # cancelled from outside, as langgraph-api
    "error": TaskState.TASK_STATE_FAILED,
    "timeout": TaskState.TASK_STATE_FAILED,
}


def task_id_of(context_id: uuid.UUID, run_id: uuid.UUID) -> str:
    """The A2A task id of a run: `"{context (thread) id}:{run id}"`."""
    return f"{context_id}:{run_id}"


def parse_task_id(task_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The (thread id, run id) of a task id; `TaskNotFoundError` when it is not one of ours."""
    context, _, run = task_id.partition(":")
    try:
        return uuid.UUID(context), uuid.UUID(run)
    except ValueError:
        raise TaskNotFoundError(message=f"task {task_id!r} not found") from None


def _status(state: TaskState, message: Message | None = None) -> TaskStatus:
    status = TaskStatus(state=state)
    status.timestamp.FromDatetime(datetime.now(UTC))
    if message is not None:
        status.message.CopyFrom(message)
    return status


def _text_message(
    role: Role, text: str, *, context_id: str, task_id: str, message_id: str
) -> Message:
    return Message(
        message_id=message_id,
        context_id=context_id,
        task_id=task_id,
        role=role,
        parts=[Part(text=text, media_type=TEXT)],
    )


def _user_text(message: Message, *, limit: int) -> str:
    """The text of an incoming message (its text parts joined); only text is understood."""
    if not message.message_id:
        raise InvalidParamsError(message="message.messageId is required")
    if not message.parts:
        raise InvalidParamsError(message="message.parts must hold at least one part")
    texts = [part.text for part in message.parts if part.HasField("text")]
    if len(texts) != len(message.parts):
        raise ContentTypeNotSupportedError(
            message="message.parts: only text parts are supported by this agent"
        )
    text = "\n".join(t for t in texts if t).strip()
    if not text:
        raise InvalidParamsError(message="message.parts: the text is empty")
    if len(text) > limit:
        raise InvalidParamsError(
            message=f"message.parts: the text is {len(text)} characters; the limit is {limit}"
        )
    return text


def _context_id(raw: str) -> uuid.UUID | None:
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidParamsError(
            message=f"message.contextId must be a UUID (a thread id), got {raw!r}"
        ) from None


class A2AHandler(RequestHandler):
    """Answers A2A requests for the assistant named in the URL, through the run engine."""

    def __init__(self, engine: RunEngine, events: RunEventLog, settings: Settings) -> None:
        self.engine = engine
        self.events = events
        self.settings = settings

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _caller(context: ServerCallContext) -> Caller:
        caller = context.state.get("caller")
        return caller if isinstance(caller, Caller) else OPEN

    @staticmethod
    async def _authorize(caller: Caller, resource: str, action: str, value: dict[str, Any]) -> Any:
        try:
            return await caller.authorize(resource, action, value)
        except AuthError as error:
            raise InvalidParamsError(message=f"not allowed: {error.detail}") from None

    async def _assistant(self, context: ServerCallContext) -> Agent:
        raw = str(context.state.get("assistant_id") or "")
        caller = self._caller(context)
        access = await self._authorize(
            caller, "assistants", "read", {"assistant_id": assistant_key(raw) if raw else None}
        )
        try:
            return await resolve_assistant(self.engine.db, raw, or_system(access))
        except NotFoundError:
            raise InvalidParamsError(message=f"assistant {raw!r} not found") from None

    async def _run_of(
        self, task_id: str, assistant: Agent, context: ServerCallContext, action: str = "read"
    ) -> Run:
        thread_id, run_id = parse_task_id(task_id)
        access = await self._authorize(
            self._caller(context), "threads", action, {"thread_id": thread_id, "run_id": run_id}
        )
        try:
            run = await run_store.get_run(
                self.engine.db, run_id, thread_id=thread_id, access=access
            )
        except NotFoundError:
            raise TaskNotFoundError(message=f"task {task_id!r} not found") from None
        if run.assistant_id != assistant.id:
            raise TaskNotFoundError(message=f"task {task_id!r} not found")
        return run

    async def _state(self, run: Run) -> TaskState:
        state = _STATES.get(run.status, TaskState.TASK_STATE_SUBMITTED)
        if state == TaskState.TASK_STATE_COMPLETED and run.thread_id is not None:
            async with self.engine.db.sessions() as session:
                thread = await session.get(Conversation, run.thread_id)
            if thread is not None and thread.status == "interrupted":
                return TaskState.TASK_STATE_INPUT_REQUIRED
        return state

    async def _task(self, run: Run, *, history_length: int | None = None) -> Task:
        """The task of a run as it stands: state, answer (artifact and status message), history."""
        assert run.thread_id is not None
        context_id, task_id = str(run.thread_id), task_id_of(run.thread_id, run.id)
        state = await self._state(run)
        reply: str | None = None
        artifacts: list[Artifact] = []
        if state in (TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_INPUT_REQUIRED):
            reply = last_ai_text(run.output)
            if reply is not None:
                artifacts.append(
                    Artifact(
                        artifact_id=f"{run.id}-answer",
                        name="answer",
                        parts=[Part(text=reply, media_type=TEXT)],
                    )
                )
        elif state == TaskState.TASK_STATE_FAILED:
            reply = run_error(run.output) or "the agent's run failed"
        said = (
            None
            if reply is None
            else _text_message(
                Role.ROLE_AGENT,
                reply,
                context_id=context_id,
                task_id=task_id,
                message_id=f"{run.id}-reply",
            )
        )
        task = Task(
            id=task_id, context_id=context_id, status=_status(state, said), artifacts=artifacts
        )
        history = self._asked(run, context_id=context_id, task_id=task_id)
        if said is not None:
            history.append(said)
        if history_length is not None and history_length > 0:
            history = history[-history_length:]
        if history_length != 0:
            task.history.extend(history)
        return task

    @staticmethod
    def _asked(run: Run, *, context_id: str, task_id: str) -> list[Message]:
        """The messages the task was given (from the run's input)."""
        given = run.kwargs.get("input") if isinstance(run.kwargs, Mapping) else None
        rows = given.get("messages") if isinstance(given, Mapping) else None
        messages: list[Message] = []
        for n, row in enumerate(rows if isinstance(rows, list) else []):
            if not isinstance(row, Mapping):
                continue
            role = Role.ROLE_AGENT if is_ai(row) else Role.ROLE_USER
            message_id = str(row.get("id") or f"{run.id}-{n}")
            messages.append(
                _text_message(
                    role,
                    message_text(row),
                    context_id=context_id,
                    task_id=task_id,
                    message_id=message_id,
                )
            )
        return messages

    async def _start(
        self, params: SendMessageRequest, context: ServerCallContext, *, stream: bool
    ) -> Run:
        """Check the message and submit its run on the message's context (a thread)."""
        assistant = await self._assistant(context)
        message = params.message
        text = _user_text(message, limit=self.settings.chat_max_message_chars)
        thread_id = _context_id(message.context_id)
        if message.task_id:
            run = await self._run_of(message.task_id, assistant, context)
            if thread_id is not None and thread_id != run.thread_id:
                raise InvalidParamsError(message="message.taskId belongs to another contextId")
            raise UnsupportedOperationError(
                message=f"task {message.task_id} cannot take another message; send it without "
                "taskId (same contextId) to continue the conversation"
            )
        caller = self._caller(context)
        value: dict[str, Any] = {
            "thread_id": thread_id,
            "assistant_id": assistant.id,
            "metadata": {"a2a_message_id": message.message_id},
            "if_not_exists": "create",
        }
        access = await self._authorize(caller, "threads", "create_run", value)
        try:
            creator = await run_creator(caller, self.engine.db, self.settings, access=access)
            return await submit_messages(
                self.engine,
                assistant,
                [("user", text, message.message_id)],
                source="a2a",
                thread_id=thread_id or uuid.uuid4(),
                stream_mode=("messages-tuple", "values") if stream else ("values",),
                metadata=value["metadata"] if isinstance(value["metadata"], dict) else {},
                creator=creator,
            )
        except NotFoundError:  # the context is a thread the caller may not run on
            raise InvalidParamsError(
                message=f"message.contextId {thread_id} is not a context of yours"
            ) from None
        except LimitError as error:
            raise InvalidParamsError(message=str(error)) from None

    async def _finished(self, run: Run) -> Run:
        final = await self.engine.wait(run.id)
        if final is None:  # rolled back: the run row is gone
            raise TaskNotFoundError(message=f"the task of run {run.id} was rolled back")
        return final

    @staticmethod
    def _history_length(params: SendMessageRequest) -> int | None:
        configuration = params.configuration
        if configuration.HasField("history_length"):
            return configuration.history_length
        return None

    # -- the methods -------------------------------------------------------------------------

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        """message/send: run the assistant on the message and answer with the finished task."""
        run = await self._start(params, context, stream=False)
        final = await self._finished(run)
        return await self._task(final, history_length=self._history_length(params))

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """message/stream: the task, `working`, the answer's tokens as artifact chunks, then
        the final status."""
        run = await self._start(params, context, stream=True)
        assert run.thread_id is not None
        context_id, task_id = str(run.thread_id), task_id_of(run.thread_id, run.id)
        asked = self._asked(run, context_id=context_id, task_id=task_id)
        yield Task(
            id=task_id,
            context_id=context_id,
            status=_status(TaskState.TASK_STATE_SUBMITTED),
            history=asked,
        )
        working = _status(TaskState.TASK_STATE_WORKING)
        yield TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=working)
        artifact_id, streamed = f"{run.id}-answer", False
        async for _, event, data in self.events.follow(run.id):
            if event in ("end", "error"):
                break
            if event != "messages" or not isinstance(data, list) or not data:
                continue
            chunk = data[0]
            text = message_text(chunk) if is_ai(chunk) else ""
            if text:
                yield TaskArtifactUpdateEvent(
                    task_id=task_id,
                    context_id=context_id,
                    artifact=Artifact(
                        artifact_id=artifact_id,
                        name="answer",
                        parts=[Part(text=text, media_type=TEXT)],
                    ),
                    append=streamed,
                )
                streamed = True
        task = await self._task(await self._finished(run))
        if task.artifacts and not streamed:  # the graph streamed no tokens: send it whole
            yield TaskArtifactUpdateEvent(
                task_id=task_id,
                context_id=context_id,
                artifact=task.artifacts[0],
                last_chunk=True,
            )
        yield TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=task.status)

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        """tasks/get: the task of the run named by the task id."""
        run = await self._run_of(params.id, await self._assistant(context), context)
        length = params.history_length if params.HasField("history_length") else None
        return await self._task(run, history_length=length)

    async def on_cancel_task(
        self, params: CancelTaskRequest, context: ServerCallContext
    ) -> Task | None:
        """tasks/cancel: cancel the run (its checkpoints are kept)."""
        run = await self._run_of(params.id, await self._assistant(context), context, "update")
        if run.status in run_store.DONE:
            raise TaskNotCancelableError(message=f"task {params.id} has already ended")
        await self.engine.cancel([run.id], thread_id=run.thread_id, reason="cancelled via A2A")
        return await self._task(await self._finished(run))

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        raise UnsupportedOperationError(message="tasks/list is not supported")

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        raise UnsupportedOperationError(message="tasks/resubscribe is not supported")
        yield  # pragma: no cover  (makes this an async generator)

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise UnsupportedOperationError(message="there is no extended agent card")


class _AssistantContextBuilder(DefaultServerCallContextBuilder):
    """Puts the URL's assistant id in the call context the handler reads."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["assistant_id"] = request.path_params.get("assistant_id")
        context.state["caller"] = caller_of(request.scope)
        return context


def build_dispatcher(engine: RunEngine, events: RunEventLog, settings: Settings) -> Any:
    """The JSON-RPC dispatcher of `/a2a/{assistant_id}` (v1.0 and v0.3 method names)."""
    return JsonRpcDispatcher(
        request_handler=A2AHandler(engine, events, settings),
        context_builder=_AssistantContextBuilder(),
        enable_v0_3_compat=True,
    )


def agent_card(assistant: Agent, *, base_url: str) -> dict[str, Any]:
    """The agent card of an assistant, in the JSON both v1.0 and v0.3 clients read."""
    url = f"{base_url.rstrip('/')}/a2a/{assistant.id}"
    description = assistant.description or f"The {assistant.name} agent ({assistant.graph_id})"
    card = AgentCard(
        name=assistant.name,
        description=description,
        version=f"{VERSION}+v{assistant.version}",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3"),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=[TEXT],
        default_output_modes=[TEXT],
        skills=[
            AgentSkill(
                id=f"{assistant.id}-main",
                name=assistant.name,
                description=description,
                tags=["assistant", assistant.graph_id],
                input_modes=[TEXT],
                output_modes=[TEXT],
            )
        ],
    )
    result: dict[str, Any] = agent_card_to_dict(card)
    return result


async def handle_a2a(dispatcher: Any, request: Request) -> Response:
    """Answer one JSON-RPC request (or stream) for the assistant in the URL."""
    response: Response = await dispatcher.handle_requests(request)
    return response
