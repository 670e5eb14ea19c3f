"""Run admission in a served process: a run that waits to be admitted has already streamed its
first event, and its graph starts once a place frees (server/runs/admission.py, execute.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from langgraph_sdk import get_client
from langgraph_sdk.schema import Config

from server.app import create_app
from tests.integration.run_graphs import STEPS, TRACE
from tests.support import TEST_GRAPHS, make_settings, running_server


async def _two_runs(url: str) -> dict[str, Any]:
    client = get_client(url=url, timeout=60)
    try:
        first = await client.threads.create()
        second = await client.threads.create()
        slow: Config = {"configurable": {"delay": 0.3}}
        first_input: dict[str, Any] = {"log": ["first"]}
        holder = await client.runs.create(
            first["thread_id"], "steps", input=first_input, config=slow
        )
        events: list[tuple[str, Any]] = []
        second_input: dict[str, Any] = {"log": ["second"]}
        holder_at_first_event = None
        async for part in client.runs.stream(
            second["thread_id"], "steps", input=second_input, stream_mode="values"
        ):
            if not events:
                run = await client.runs.get(first["thread_id"], holder["run_id"])
                holder_at_first_event = run["status"]
            events.append((part.event, part.data))
        done = await client.runs.join(first["thread_id"], holder["run_id"])
        return {
            "threads": (first["thread_id"], second["thread_id"]),
            "events": events,
            "holder_at_first_event": holder_at_first_event,
            "holder": done,
        }
    finally:
        await client.aclose()


def test_a_run_waiting_for_admission_streams_its_first_event_and_starts_once_admitted(
    database_url: str, tmp_path: Path
) -> None:
    """With one place (the loop's lag would set it; fixed here), a second run on another thread
    is claimed and running, its `metadata` streamed at once, while the first executes; its graph
    starts only after the first run's graph ended, and it ends as usual."""
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        run_workers=4,
        run_admit_lag_s=0.005,
    )
    app = create_app(settings)
    with running_server(settings, app=app) as url:
        admission = app.state.runs.admission
        admission.observe = lambda lag_s: None  # the limit stays where the test puts it
        admission.limit = 1
        started = time.monotonic()
        outcome = asyncio.run(_two_runs(url))
    first, second = outcome["threads"]
    events = outcome["events"]
    assert events[0][0] == "metadata"
    assert outcome["holder_at_first_event"] == "running"  # sent while the first one executed
    values = [data for event, data in events if event == "values"]
    assert values[-1] == {"log": ["second", *STEPS]}
    assert outcome["holder"] == {"log": ["first", *STEPS]}
    order = [(thread, node, phase) for thread, _, node, phase in TRACE]
    assert order.index((first, STEPS[-1], "end")) < order.index((second, STEPS[0], "start"))
    assert time.monotonic() - started < 60
