"""The `http_get` tool: GET a URL on an allow-listed host, never a loopback or private address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from nodes.tools.registry import ToolEnv, ToolError, ToolSpec


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether `host` is listed, exactly or under a `*.domain` entry."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
            return True
        if host == entry:
            return True
    return False


def address_refused(address: str) -> str | None:
    """Why connecting to IP `address` is refused (loopback, private, ...), or None if public."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_unspecified, "unspecified"),
        (not ip.is_global, "non-global"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


async def resolve_public(host: str, port: int) -> list[str]:
    """Every address `host` resolves to; `ToolError` if any is not a public address."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ToolError(f"cannot resolve host {host!r}: {error}") from error
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        reason = address_refused(address)
        if reason is not None:
            raise ToolError(f"refusing {host!r}: it resolves to a {reason} address ({address})")
    return addresses


async def check_url(url: str, allowed: Sequence[str]) -> tuple[str, int]:
    """Validate `url` for `http_get`; returns its (host, port) or raises `ToolError`."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise ToolError(f"only http and https URLs are fetched, not {parts.scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise ToolError(f"the URL {url!r} has no host")
    if parts.username or parts.password:
        raise ToolError("URLs with credentials are refused")
    if not host_allowed(host, allowed):
        raise ToolError(f"host {host!r} is not on the allow-list of this server")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await resolve_public(host, port)
    return host, port


async def _http_get(args: Mapping[str, Any], env: ToolEnv) -> str:
    url = str(args["url"])
    await check_url(url, env.context.http_allowed_hosts)
    limit = env.context.http_max_bytes
    async with (
        httpx.AsyncClient(timeout=env.context.tool_timeout_s, follow_redirects=False) as client,
        client.stream("GET", url, headers={"User-Agent": "switchboard-agent"}) as response,
    ):
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body.extend(chunk)
            if len(body) >= limit:
                break
    text = bytes(body[:limit]).decode(response.encoding or "utf-8", errors="replace")
    if response.is_redirect:
        return f"HTTP {response.status_code} redirect to {response.headers.get('location')}"
    return f"HTTP {response.status_code}\n{text}"


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
