"""MCP at `/mcp` (Streamable HTTP, the official `mcp` SDK): every assistant is a tool.

A tool's input is the conversation so far (`messages`); calling it runs the assistant through the
run engine — a durable run on a fresh temporary thread, like a stateless `/runs/wait` — and
returns the last AI message as text. The transport is stateless (no MCP session is kept between
requests), so any server process can answer any request.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from server.auth.caller import Caller, caller_of
from server.auth.contract import AuthError
from server.auth.limits import run_creator
from server.protocols.runs import last_ai_text, run_error, submit_messages
from server.request_context import error_body
from server.runs.engine import RunEngine
from server.settings import Settings
from stores.errors import LimitError, NotFoundError
from stores.sql import assistants as assistant_store
from stores.sql.filters import Filter
from stores.sql.models import Agent

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 100  # tools per tools/list page
MAX_MESSAGES: Final = 200  # messages per tool call
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_SUFFIXED = re.compile(r"^(?P<name>.+)-(?P<id>[0-9a-f]{8})$")
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class ToolMessage(BaseModel):
    """One message of the conversation given to an assistant's tool."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"] = Field(
        description="Who said it: user, assistant or system."
    )
    content: str = Field(min_length=1, description="What was said.")


class ToolInput(BaseModel):
    """The input of every assistant tool: the conversation so far, ending with the question."""

    model_config = ConfigDict(extra="forbid")

    messages: Annotated[list[ToolMessage], Field(min_length=1, max_length=MAX_MESSAGES)]


INPUT_SCHEMA: Final[dict[str, Any]] = ToolInput.model_json_schema()


def tool_name(agent: Agent) -> str:
    """The MCP tool name of an assistant: a system assistant's graph id (`chat`), otherwise its
    name and the start of its id (`helper-1a2b3c4d`), so names are unique and stable."""
    if (agent.metadata_ or {}).get("created_by") == "system":
        return _INVALID_NAME_CHARS.sub("_", agent.graph_id)[:128]
    base = _INVALID_NAME_CHARS.sub("_", agent.name).strip("_.-") or "assistant"
    return f"{base[:119]}-{agent.id.hex[:8]}"


def _tool(agent: Agent) -> types.Tool:
    description = agent.description or (
        f"Ask the {agent.name} agent (graph {agent.graph_id}). Give the conversation as "
        "`messages` (the last one is the question); the answer is its reply."
    )
    return types.Tool(
        name=tool_name(agent),
        title=agent.name,
        description=description,
        input_schema=INPUT_SCHEMA,
        annotations=types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )


def _text(text: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


def _caller(ctx: Any) -> Caller:
    """The caller of the HTTP request that carried this MCP message."""
    scope = getattr(getattr(ctx, "request", None), "scope", None)
    if scope is None:
        raise MCPError(types.INVALID_REQUEST, "MCP requests are served over HTTP only")
    return caller_of(scope)


async def _visible(caller: Caller, action: str) -> Filter | None:
    """The assistants the caller may see as tools: theirs (`assistants.<action>`) and the
    system ones."""
    try:
        access = await caller.authorize("assistants", action, {"assistant_id": None})
    except AuthError as error:
        raise MCPError(types.INVALID_REQUEST, error.detail) from None
    return assistant_store.or_system(access)


@dataclass(slots=True)
class AssistantTools:
    """The tools (assistants) and what calling one does, for the MCP server's handlers."""

    engine: RunEngine
    settings: Settings

    async def find(self, name: str, access: Filter | None = None) -> Agent | None:
        """The assistant whose tool is called `name`, if any (among those `access` lets in)."""
        db = self.engine.db
        with contextlib.suppress(NotFoundError):
            agent = await assistant_store.resolve_assistant(db, name, access)
            if tool_name(agent) == name:
                return agent
        match = _SUFFIXED.match(name)
        if match is None:
            return None
        candidates = await assistant_store.assistants_with_id_prefix(db, match["id"], access=access)
        found = [agent for agent in candidates if tool_name(agent) == name]
        return found[0] if len(found) == 1 else None

    async def list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        """A page of assistants as tools, oldest first (`cursor`: where the page starts)."""
        cursor = params.cursor if params is not None else None
        try:
            offset = int(cursor) if cursor else 0
        except ValueError:
            offset = -1
        if offset < 0:
            raise _invalid(f"cursor must be one this server returned, got {cursor!r}")
        agents, more = await assistant_store.search_assistants(
            self.engine.db,
            graph_id=None,
            name=None,
            metadata=None,
            limit=PAGE_SIZE,
            offset=offset,
            sort_by="created_at",
            sort_order="asc",
            access=await _visible(_caller(ctx), "search"),
        )
        return types.ListToolsResult(
            tools=[_tool(agent) for agent in agents],
            next_cursor=str(offset + PAGE_SIZE) if more else None,
        )

    async def call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """Run the assistant named by the tool on the given messages, as the caller; its answer
        as text."""
        caller = _caller(ctx)
        agent = await self.find(params.name, await _visible(caller, "read"))
        if agent is None:
            raise _invalid(f"unknown tool {params.name!r}: tools/list names the assistants")
        try:
            arguments = ToolInput.model_validate(params.arguments or {})
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "arguments"
            return _text(f"invalid arguments: {where}: {problem['msg']}", error=True)
        limit = self.settings.chat_max_message_chars
        for n, message in enumerate(arguments.messages):
            if len(message.content) > limit:
                return _text(
                    f"invalid arguments: messages.{n}.content is {len(message.content)} "
                    f"characters; the limit is {limit}",
                    error=True,
                )
        value: dict[str, Any] = {"thread_id": None, "assistant_id": agent.id, "metadata": {}}
        try:
            access = await caller.authorize("threads", "create_run", value)
            creator = await run_creator(caller, self.engine.db, self.settings, access=access)
            run = await submit_messages(
                self.engine,
                agent,
                [(m.role, m.content, None) for m in arguments.messages],
                source="mcp",
                metadata=value["metadata"] if isinstance(value["metadata"], dict) else {},
                creator=creator,
            )
        except AuthError as error:
            return _text(f"not allowed: {error.detail}", error=True)
        except LimitError as error:
            return _text(str(error), error=True)
        output = await self.engine.output(run.id)
        failure = run_error(output)
        if failure is not None:
            return _text(failure, error=True)
        answer = last_ai_text(output)
        if answer is None:
            return _text("the agent's run ended without an answer", error=True)
        return _text(answer)


def _invalid(message: str) -> MCPError:
    return MCPError(types.INVALID_PARAMS, message)


def _security(settings: Settings) -> TransportSecuritySettings | None:
    """DNS-rebinding protection when the server listens on loopback only (as the SDK's own
    apps do): browsers on other sites cannot reach the tools through a rebound name."""
    if settings.host not in LOOPBACK_HOSTS:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


def build_mcp_server(tools: AssistantTools) -> Server[Any]:
    """The MCP server: tools/list and tools/call over the assistants."""
    return Server(
        "switchboard",
        version="0.1.0",
        title="Switchboard",
        instructions=(
            "Each tool is an agent of this Switchboard server. Give it the conversation as "
            "`messages`; it answers with its reply."
        ),
        on_list_tools=tools.list_tools,
        on_call_tool=tools.call_tool,
    )


class McpEndpoint:
    """The ASGI endpoint of `/mcp`: hands each request to the manager the lifespan opened."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager: StreamableHTTPSessionManager | None = getattr(scope["app"].state, "mcp", None)
        if manager is None:  # not started (or switched off): nothing answers here
            response = JSONResponse(error_body("MCP is not available"), status_code=404)
            await response(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)


@contextlib.asynccontextmanager
async def open_mcp(
    engine: RunEngine, settings: Settings
) -> AsyncIterator[StreamableHTTPSessionManager]:
    """The running MCP transport for the lifespan (stateless Streamable HTTP, JSON answers)."""
    manager = StreamableHTTPSessionManager(
        app=build_mcp_server(AssistantTools(engine=engine, settings=settings)),
        json_response=True,
        stateless=True,
        security_settings=_security(settings),
        max_request_body_size=settings.max_body_bytes,
    )
    async with manager.run():
        yield manager
