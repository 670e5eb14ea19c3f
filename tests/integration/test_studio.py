"""`langgraph dev` loads the declared graphs from langgraph.json; langgraph-sdk streams a run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).parent / "langgraph"


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`langgraph dev --no-browser` on a free port, from the repository (graph paths are
    relative to the working directory; its `.langgraph_api/` state folder is git-ignored)."""
    if not LANGGRAPH.exists():
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[dev]')")
    port = free_port()
    workdir = tmp_path_factory.mktemp("langgraph-dev")
    env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    log = (workdir / "dev.log").open("w")
    process = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--port", str(port),
         "--config", str(ROOT / "langgraph.json")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"langgraph dev exited: {(workdir / 'dev.log').read_text()}")
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("langgraph dev did not start in 120 s")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


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
