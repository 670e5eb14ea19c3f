"""`langgraph dev` loads the declared graphs from langgraph.json; langgraph-sdk streams a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from tests.support import LANGGRAPH, langgraph_dev

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`langgraph dev` serving the repository's own langgraph.json."""
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[dev]')")
    log = tmp_path_factory.mktemp("langgraph-dev") / "dev.log"
    with langgraph_dev(ROOT / "langgraph.json", log=log) as url:
        yield url


async def test_langgraph_dev_serves_both_graphs_and_streams_a_run(dev_server: str) -> None:
    client = get_client(url=dev_server)
    graph_ids = {a["graph_id"] for a in await client.assistants.search(limit=20)}
    assert {"chat", "researcher"} <= graph_ids
    thread = await client.threads.create()
    custom: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    run_input: Any = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}
    run_context: Any = {"user_id": "studio-user", "tools": ["calculator"]}
    async for part in client.runs.stream(
        thread["thread_id"],
        "chat",
        input=run_input,
        context=run_context,
        stream_mode=["custom", "values"],
    ):
        if part.event == "custom":
            custom.append(part.data)
        elif part.event == "values":
            values = part.data
    results = [e["data"] for e in custom if e["event"] == "tool_result"]
    assert results
    assert results[0]["content"] == "42"
    assert "42" in values["answer"]
    state: Any = await client.threads.get_state(thread["thread_id"])
    assert len(state["values"]["messages"]) == 2  # the window keeps the turn, not tool traffic
