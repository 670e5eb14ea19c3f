"""`/mcp`, `/a2a/{assistant_id}` and the A2A agent card: thin routes over server/protocols."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from server.auth.caller import CallerDep
from server.deps import DatabaseDep
from server.protocols.a2a import agent_card
from server.protocols.mcp import McpEndpoint
from server.schemas.common import NOT_FOUND
from stores.sql.assistants import assistant_key, or_system, resolve_assistant

router = APIRouter(tags=["a2a"])
AssistantId = Annotated[
    str,
    Query(min_length=1, max_length=200, description="The assistant (or a graph id: `chat`)."),
]


@router.post("/a2a/{assistant_id}")
async def a2a(assistant_id: str, request: Request) -> Response:
    """A2A JSON-RPC for one assistant: message/send, message/stream, tasks/get, tasks/cancel
    (and their v1.0 names SendMessage, SendStreamingMessage, GetTask, CancelTask)."""
    dispatcher: Any = request.app.state.a2a
    response: Response = await dispatcher.handle_requests(request)
    return response


@router.get("/.well-known/agent-card.json", responses=NOT_FOUND)
async def agent_card_json(
    request: Request, db: DatabaseDep, caller: CallerDep, assistant_id: AssistantId
) -> JSONResponse:
    """The A2A agent card of an assistant (`?assistant_id=`) the caller may use."""
    key = assistant_key(assistant_id)
    access = await caller.authorize("assistants", "read", {"assistant_id": key})
    assistant = await resolve_assistant(db, assistant_id, or_system(access))
    return JSONResponse(agent_card(assistant, base_url=str(request.base_url)))


def install_protocols(app: FastAPI, *, mcp: bool = True, a2a: bool = True) -> None:
    """Serve MCP and A2A on `app` (their handlers are opened by the lifespan); langgraph.json's
    `http.disable_mcp` / `http.disable_a2a` leave one out."""
    if mcp:
        app.router.routes.append(
            Route("/mcp", McpEndpoint(), methods=["GET", "POST", "DELETE"], include_in_schema=False)
        )
    if a2a:
        app.include_router(router)
