"""Protocol faces benchmark: what MCP and A2A add over the SDK's stateless `/runs/wait`.

One Switchboard server (in-process uvicorn, offline model) answers the same question ("What is
12 * 12?", a calculator round) on the `chat` system assistant three ways, interleaved so load
changes hit all three alike: langgraph-sdk `runs.wait` (the baseline), an MCP `tools/call`
(official `mcp` client, Streamable HTTP) and an A2A `message/send` (`a2a-sdk` client, JSON-RPC).
Each is a durable run through the same engine, so the ratios are the protocols' own overhead.

Run with `python -m bench protocols` (about a minute); results go to bench/results/protocols.md.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest
from langgraph_sdk import get_client
from mcp import Client

from bench.chat_bench import admin_url, scratch
from tests.support import make_settings, running_server

RESULTS = Path(__file__).parent / "results" / "protocols.md"
QUESTION = "What is 12 * 12?"
ROUNDS = 20


async def _measure(url: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"sdk runs.wait": [], "mcp tools/call": [], "a2a send": []}
    messages: Any = [{"role": "user", "content": QUESTION}]
    async with (
        get_client(url=url) as sdk,
        Client(f"{url}/mcp") as mcp,
        httpx.AsyncClient(timeout=60) as http,
    ):
        card = await A2ACardResolver(http, url).get_agent_card(
            relative_card_path="/.well-known/agent-card.json?assistant_id=chat"
        )
        a2a = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)

        async def by_sdk() -> None:
            await sdk.runs.wait(None, "chat", input={"messages": messages})

        async def by_mcp() -> None:
            result = await mcp.call_tool("chat", {"messages": messages})
            assert not result.is_error

        async def by_a2a() -> None:
            ask = Message(
                message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=QUESTION)]
            )
            async for _ in a2a.send_message(SendMessageRequest(message=ask)):
                pass

        calls: dict[str, Callable[[], Awaitable[None]]] = {
            "sdk runs.wait": by_sdk,
            "mcp tools/call": by_mcp,
            "a2a send": by_a2a,
        }
        for call in calls.values():  # warm-up: models, pools, first embeddings
            await call()
        for _ in range(ROUNDS):
            for name, call in calls.items():
                started = time.perf_counter()
                await call()
                times[name].append(time.perf_counter() - started)
    return times


def main() -> None:
    """Measure the three ways in one run and write bench/results/protocols.md."""
    load_before = os.getloadavg()
    with admin_url() as admin, scratch(admin, "protocols") as database:
        settings = make_settings(database, Path(tempfile.mkdtemp(prefix="sb-bench-protocols-")))
        with running_server(settings) as url:
            times = asyncio.run(_measure(url))
    load_after = os.getloadavg()
    base = statistics.median(times["sdk runs.wait"])
    rows = []
    for name, values in times.items():
        p50 = statistics.median(values)
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        rows.append(
            f"| {name} | {len(values)} | {p50 * 1000:.1f} | {p90 * 1000:.1f} | {p50 / base:.2f}x |"
        )
    report = "\n".join(
        [
            "# Protocol faces: MCP and A2A against `runs.wait`",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average "
            f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (other work shares the "
            "cores). One server, the `chat` system assistant, the offline model, "
            f"'{QUESTION}' (a calculator round), {ROUNDS} interleaved rounds after a warm-up.",
            "",
            "| way | calls | p50 ms | p90 ms | p50 vs runs.wait |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    RESULTS.write_text(report)
    print(report)
