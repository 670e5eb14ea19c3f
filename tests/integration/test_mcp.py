"""MCP at /mcp (server/protocols/mcp.py), driven by the official `mcp` client over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.integration.helpers import create_agent
from tests.support import make_settings, running_server


@pytest.fixture(scope="module")
def mcp_url(database_url: str, data_dir: Path) -> Iterator[str]:
    with running_server(make_settings(database_url, data_dir, migrate_on_start=False)) as url:
        yield url


def _text(result: Any) -> str:
    return "".join(block.text for block in result.content if block.type == "text")


async def test_every_assistant_is_a_tool_whose_input_is_messages(mcp_url: str) -> None:
    with httpx.Client(base_url=mcp_url) as api:
        helper = create_agent(api, name="Math helper", tools=["calculator"])
    async with Client(f"{mcp_url}/mcp") as client:
        listed = await client.list_tools()
    by_name = {tool.name: tool for tool in listed.tools}
    assert {"chat", "researcher", f"Math_helper-{helper['id'].replace('-', '')[:8]}"} <= set(
        by_name
    )
    schema = by_name["chat"].input_schema
    assert schema["required"] == ["messages"]
    assert schema["properties"]["messages"]["type"] == "array"
    assert by_name["chat"].title == "chat"


async def test_calling_a_tool_runs_the_assistant_and_returns_its_last_ai_message(
    mcp_url: str,
) -> None:
    async with Client(f"{mcp_url}/mcp") as client:
        result = await client.call_tool(
            "chat", {"messages": [{"role": "user", "content": "What is 12 * 12?"}]}
        )
    assert not result.is_error
    assert "144" in _text(result)  # the chat graph ran, with its calculator


async def test_a_user_agent_tool_keeps_its_configuration(mcp_url: str) -> None:
    with httpx.Client(base_url=mcp_url) as api:
        helper = create_agent(api, name="No tools", tools=[])
    name = f"No_tools-{helper['id'].replace('-', '')[:8]}"
    async with Client(f"{mcp_url}/mcp") as client:
        result = await client.call_tool(
            name,
            {
                "messages": [
                    {"role": "user", "content": "Hello there."},
                    {"role": "assistant", "content": "Hi! How can I help?"},
                    {"role": "user", "content": "What is 6 * 7?"},
                ]
            },
        )
    assert not result.is_error
    assert "42" not in _text(result)  # no calculator for this agent


async def test_bad_calls_are_refused_with_the_field_named(mcp_url: str) -> None:
    async with Client(f"{mcp_url}/mcp") as client:
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("no-such-agent", {"messages": []})
        empty = await client.call_tool("chat", {"messages": []})
        wrong_role = await client.call_tool(
            "chat", {"messages": [{"role": "robot", "content": "hi"}]}
        )
    assert empty.is_error
    assert "messages" in _text(empty)
    assert wrong_role.is_error
    assert "messages.0.role" in _text(wrong_role)


def test_a_rebound_host_name_is_refused_on_a_loopback_server(mcp_url: str) -> None:
    """A page on another site that rebinds its name to 127.0.0.1 cannot call the tools."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=mcp_url) as http:
        rebound = http.post("/mcp", json=body, headers={**accept, "Host": "evil.example"})
        foreign = http.post("/mcp", json=body, headers={**accept, "Origin": "https://evil.example"})
        ours = http.post(
            "/mcp",
            json={**body, "method": "initialize", "params": _INITIALIZE},
            headers=accept,
        )
    assert rebound.status_code == 400  # ALLOWED_HOSTS, checked for every route
    assert rebound.json()["field"] == "host"
    assert foreign.status_code == 403
    assert ours.status_code == 200, ours.text


_INITIALIZE: dict[str, Any] = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "1"},
}
