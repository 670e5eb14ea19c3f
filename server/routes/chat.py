"""`/chat`: one user turn, run by the run engine, answered as an SSE stream of typed events or
as JSON."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from server.agent_api.threads import thread_access
from server.auth.caller import Caller, CallerDep
from server.auth.limits import run_creator
from server.chat_api.turns import TurnAccess, start_turn, turn_answer, turn_events
from server.deps import DatabaseDep, EngineDep, ResourcesDep
from server.errors import error_response
from server.resources import Resources
from server.routes.users import user_access
from server.schemas.common import (
    CONFLICT,
    NOT_FOUND,
    SERVER_SENT_EVENT,
    TOO_MANY,
    ErrorBody,
    Responses,
)
from server.schemas.turns import ChatAnswer, ChatRequest, ToolOut
from server.sse import sse_response
from stores.sql import tools as sql_tools
from stores.sql.assistants import or_system

router = APIRouter(tags=["chat"])

TOO_LARGE: Responses = {413: {"model": ErrorBody, "description": "The message is too long."}}
SSE_DOC: Responses = {
    200: {
        "description": (
            "With `stream=true` (default): `text/event-stream` of events metadata, memories, "
            "sources, plan, tool_call, tool_result, step_limit, warning, token, message, end "
            "(a failure: error, then end). With `stream=false`: the JSON answer."
        ),
        "model": ChatAnswer,
        "content": {"text/event-stream": {"schema": SERVER_SENT_EVENT}},
    }
}


async def turn_access(caller: Caller, resources: Resources, body: ChatRequest) -> TurnAccess:
    """What the caller may do for this turn: start a conversation (`threads.create`, with a
    user they may read and an agent they may use), run on it (`threads.create_run`), within
    their limits (429 when over RUNS_PER_MINUTE)."""
    db = resources.database
    metadata: dict[str, Any] = {}
    user_filter = agent_filter = None
    if body.conversation_id is None:
        created: dict[str, Any] = {"thread_id": None, "metadata": {}}
        await caller.authorize("threads", "create", created)
        metadata = created["metadata"] if isinstance(created["metadata"], dict) else {}
        user_filter = await user_access(caller, "read", body.user_id)
        agent_filter = or_system(
            await caller.authorize("assistants", "read", {"assistant_id": body.agent_id})
        )
    run_value: dict[str, Any] = {
        "thread_id": body.conversation_id,
        "assistant_id": body.agent_id,
        "metadata": {},
        "multitask_strategy": "reject",
        "if_not_exists": "reject",
    }
    access = await thread_access(caller, "create_run", body.conversation_id, **run_value)
    creator = await run_creator(caller, db, resources.settings, access=access)
    return TurnAccess(
        metadata=metadata, user_access=user_filter, agent_access=agent_filter, creator=creator
    )


def _too_long(message: str, limit: int) -> JSONResponse | None:
    if len(message) <= limit:
        return None
    return error_response(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"message is {len(message)} characters; the limit is {limit}",
        field="message",
    )


@router.post("/chat", responses={**SSE_DOC, **NOT_FOUND, **CONFLICT, **TOO_LARGE, **TOO_MANY})
async def chat(
    body: ChatRequest,
    engine: EngineDep,
    resources: ResourcesDep,
    caller: CallerDep,
    stream: Annotated[bool, Query(description="SSE stream (default) or one JSON answer.")] = True,
) -> Any:
    """Send a message to an agent and stream its answer.

    Give `conversation_id`, or `user_id` + `agent_id` to start a new conversation. The turn is
    a run of the run engine: the answer is saved even if the client disconnects mid-stream, or
    if this server dies mid-turn (another process resumes it). Unknown conversation → 404; a
    conversation whose agent was deleted, or that is busy with a run → 409; an empty message →
    422; a too long one → 413.
    """
    refused = _too_long(body.message, resources.settings.chat_max_message_chars)
    if refused is not None:
        return refused
    turn = await start_turn(engine, body, await turn_access(caller, resources, body))
    if not stream:
        return await turn_answer(engine, turn)
    return sse_response(
        turn_events(engine, turn),
        heartbeat_s=resources.settings.chat_ping_s,
        comment="ping",
        headers={"Content-Location": f"/conversations/{turn.conversation_id}/messages"},
    )


@router.post("/chat/invoke", responses={**NOT_FOUND, **CONFLICT, **TOO_LARGE, **TOO_MANY})
async def chat_invoke(
    body: ChatRequest, engine: EngineDep, resources: ResourcesDep, caller: CallerDep
) -> ChatAnswer:
    """Send a message to an agent and wait for the whole answer as JSON."""
    refused = _too_long(body.message, resources.settings.chat_max_message_chars)
    if refused is not None:
        return refused  # type: ignore[return-value]
    access = await turn_access(caller, resources, body)
    return await turn_answer(engine, await start_turn(engine, body, access))


@router.get("/tools", tags=["tools"])
async def list_tools(db: DatabaseDep) -> list[ToolOut]:
    """The tools an agent may enable by name (`enabled` false: switched off on this server)."""
    return [ToolOut.model_validate(row) for row in await sql_tools.list_tools(db)]
