"""The `http_get` tool: GET a URL on an allow-listed host, never a loopback or private address."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from nodes.context import AgentContext
from nodes.outbound import OutboundPolicy, OutboundRefusedError, fetch
from nodes.tools.registry import ToolEnv, ToolError, ToolSpec


def tool_policy(context: AgentContext) -> OutboundPolicy:
    """Where `http_get` may go: only allow-listed hosts, only on public addresses, only on
    the allowed ports (settings HTTP_TOOL_ALLOWED_HOSTS, OUTBOUND_ALLOWED_PORTS)."""
    return OutboundPolicy(
        allowed_hosts=tuple(context.http_allowed_hosts),
        ports=frozenset(context.http_allowed_ports),
    )


async def get_page(
    url: str,
    *,
    policy: OutboundPolicy,
    timeout_s: float,
    max_bytes: int,
    max_redirects: int,
    verify: ssl.SSLContext | bool = True,
) -> str:
    """GET `url` under `policy` and say what came back, as the model reads it.

    Raises:
        ToolError: the URL, a redirect or an address is refused, or the request failed.
    """
    try:
        response = await fetch(
            "GET",
            url,
            policy=policy,
            timeout_s=timeout_s,
            max_bytes=max_bytes,
            max_redirects=max_redirects,
            headers={"User-Agent": "switchboard-agent"},
            verify=verify,
        )
    except OutboundRefusedError as error:
        raise ToolError(f"refused: {error}") from error
    except TimeoutError as error:
        raise ToolError(f"no complete answer from {url} within {timeout_s} s") from error
    except httpx.TooManyRedirects as error:
        raise ToolError(f"more than {max_redirects} redirects from {url}") from error
    except httpx.HTTPError as error:
        raise ToolError(f"the request to {url} failed ({type(error).__name__})") from error
    if 300 <= response.status < 400:
        return f"HTTP {response.status} redirect to {response.headers.get('location')}"
    note = f"\n[truncated to {max_bytes} bytes]" if response.truncated else ""
    return f"HTTP {response.status}\n{response.text()}{note}"


async def _http_get(args: Mapping[str, Any], env: ToolEnv) -> str:
    context = env.context
    return await get_page(
        str(args["url"]),
        policy=tool_policy(context),
        timeout_s=context.tool_timeout_s,
        max_bytes=context.http_max_bytes,
        max_redirects=context.http_max_redirects,
    )


HTTP_GET = ToolSpec(
    name="http_get",
    description=(
        "Fetch a web page or API response with HTTP GET. Only hosts on the server's allow-list "
        "are reachable; the body is truncated."
    ),
    parameters={
        "type": "object",
        "properties": {"url": {"type": "string", "description": "http(s) URL.", "maxLength": 2000}},
        "required": ["url"],
        "additionalProperties": False,
    },
    run=_http_get,
    cacheable=True,
)
