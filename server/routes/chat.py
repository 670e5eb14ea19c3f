"""`/chat`: one user turn, run by the run engine, answered as an SSE stream of typed events or
as JSON."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from server.chat_api.turns import start_turn, turn_answer, turn_events
from server.deps import DatabaseDep, EngineDep, ResourcesDep
from server.errors import error_response
from server.schemas.common import CONFLICT, NOT_FOUND, ErrorBody, Responses
from server.schemas.turns import ChatAnswer, ChatRequest, ToolOut
from server.sse import sse_response
from stores.sql import tools as sql_tools

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
    }
}


def _too_long(message: str, limit: int) -> JSONResponse | None:
    if len(message) <= limit:
        return None
    return error_response(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"message is {len(message)} characters; the limit is {limit}",
        field="message",
    )


@router.post("/chat", responses={**SSE_DOC, **NOT_FOUND, **CONFLICT, **TOO_LARGE})
async def chat(
    body: ChatRequest,
    engine: EngineDep,
    resources: ResourcesDep,
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
    turn = await start_turn(engine, body)
    if not stream:
        return await turn_answer(engine, turn)
    return sse_response(
        turn_events(engine, turn),
        heartbeat_s=resources.settings.chat_ping_s,
        comment="ping",
        headers={"Content-Location": f"/conversations/{turn.conversation_id}/messages"},
    )


@router.post("/chat/invoke", responses={**NOT_FOUND, **CONFLICT, **TOO_LARGE})
async def chat_invoke(body: ChatRequest, engine: EngineDep, resources: ResourcesDep) -> ChatAnswer:
    """Send a message to an agent and wait for the whole answer as JSON."""
    refused = _too_long(body.message, resources.settings.chat_max_message_chars)
    if refused is not None:
        return refused  # type: ignore[return-value]
    return await turn_answer(engine, await start_turn(engine, body))


@router.get("/tools", tags=["tools"])
async def list_tools(db: DatabaseDep) -> list[ToolOut]:
    """The tools an agent may enable by name (`enabled` false: switched off on this server)."""
    return [ToolOut.model_validate(row) for row in await sql_tools.list_tools(db)]
