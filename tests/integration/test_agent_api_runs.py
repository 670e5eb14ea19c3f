"""Runs over HTTP with langgraph-sdk: create/wait/join/list/get/delete/cancel, multitask, HITL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from psycopg.rows import dict_row
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.support import TEST_GRAPHS, make_settings, running_server, scratch_database

STEPS = ["s1", "s2", "s3", "s4"]
SLOW = {"configurable": {"delay": 0.6}}


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """A server with the test graphs, short leases and quick polls."""
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=TEST_GRAPHS,
        run_lease_s=3.0,
        run_poll_s=0.3,
        sse_heartbeat_s=0.5,
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[LangGraphClient]:
    """The official async client of the module's server."""
    client = get_client(url=server_url)
    try:
        yield client
    finally:
        await client.aclose()


def sql(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of a query on the module's database."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return list(conn.execute(query, args).fetchall())


def make_assistant(database_url: str, graph_id: str) -> str:
    """An assistant (agents row) of a test graph; its id."""
    rows = sql(
        database_url,
        "INSERT INTO agents (graph_id, name) VALUES (%s, %s) RETURNING id",
        graph_id,
        f"{graph_id} {uuid.uuid4().hex[:6]}",
    )
    return str(rows[0]["id"])


@pytest.fixture(scope="module")
def steps(database_url: str, server_url: str) -> str:
    return make_assistant(database_url, "steps")


@pytest.fixture(scope="module")
def review(database_url: str, server_url: str) -> str:
    return make_assistant(database_url, "review")


def thread_row(database_url: str, thread_id: str) -> dict[str, Any] | None:
    rows = sql(database_url, "SELECT * FROM conversations WHERE id = %s", thread_id)
    return rows[0] if rows else None


async def new_thread(client: Any, assistant: str) -> str:
    """A thread made by a first (quick) run with if_not_exists=create."""
    thread_id = str(uuid.uuid4())
    await client.runs.wait(thread_id, assistant, input={"log": ["start"]}, if_not_exists="create")
    return thread_id


async def running(client: Any, thread_id: str, run_id: str) -> None:
    """Wait until the run is running (claimed by a worker)."""
    for _ in range(200):
        run = await client.runs.get(thread_id, run_id)
        if run["status"] == "running":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never started")


async def past_s1(database_url: str, run_id: str) -> None:
    """Wait until the run has checkpointed its first node (s1)."""
    # Steps go on from the thread's last run: the run's input checkpoint is its first step,
    # the start node's the next, s1's the one after.
    query = (
        "SELECT 1 FROM checkpoints WHERE metadata->>'run_id' = %s "
        "HAVING max((metadata->>'step')::int) - min((metadata->>'step')::int) >= 2"
    )
    for _ in range(400):
        if sql(database_url, query, run_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never got past s1")


async def test_wait_returns_final_values_and_the_run_is_listed_then_deleted(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = str(uuid.uuid4())
    result = await client.runs.wait(thread_id, steps, input={"log": []}, if_not_exists="create")
    assert result == {"log": STEPS}
    runs = await client.runs.list(thread_id)
    assert [r["status"] for r in runs] == ["success"]
    assert await client.runs.list(thread_id, select=["run_id", "status"]) == [
        {"run_id": runs[0]["run_id"], "status": "success"}
    ]
    run = await client.runs.get(thread_id, runs[0]["run_id"])
    assert run["thread_id"] == thread_id
    assert run["assistant_id"] == steps
    assert run["multitask_strategy"] == "enqueue"
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "idle"
    assert thread["values"] == {"log": STEPS}
    assert thread["interrupts"] == {}
    await client.runs.delete(thread_id, run["run_id"])
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await client.runs.get(thread_id, run["run_id"])
    assert missing.value.response.status_code == 404


async def test_background_run_is_a_row_first_and_join_returns_its_values(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = await new_thread(client, steps)
    run = await client.runs.create(thread_id, steps, input={"log": ["x"]}, config=SLOW)
    assert run["status"] in ("pending", "running")
    rows = sql(database_url, "SELECT status, attempt FROM runs WHERE id = %s", run["run_id"])
    assert rows
    assert rows[0]["status"] in ("pending", "running")
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "busy"
    result = await client.runs.join(thread_id, run["run_id"])
    assert result["log"] == ["start", *STEPS, "x", *STEPS]
    done = await client.runs.get(thread_id, run["run_id"])
    assert done["status"] == "success"
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "idle"


async def test_failing_run_returns_error_and_marks_the_thread(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = str(uuid.uuid4())
    result = await client.runs.wait(
        thread_id,
        steps,
        input={"log": []},
        config={"configurable": {"fail_at": "s2"}},
        if_not_exists="create",
        raise_error=False,
    )
    assert result["__error__"]["error"] == "ValueError"
    assert "s2 failed on purpose" in result["__error__"]["message"]
    [run] = await client.runs.list(thread_id)
    assert run["status"] == "error"
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "error"


async def test_reject_answers_409_while_the_thread_is_busy(client: Any, steps: str) -> None:
    thread_id = await new_thread(client, steps)
    first = await client.runs.create(thread_id, steps, input={"log": []}, config=SLOW)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await client.runs.create(thread_id, steps, input={"log": []}, multitask_strategy="reject")
    assert refused.value.response.status_code == 409
    assert "multitask_strategy" in refused.value.response.text
    await client.runs.join(thread_id, first["run_id"])


async def test_interrupt_stops_the_running_run_and_keeps_its_checkpoints(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = await new_thread(client, steps)
    first = await client.runs.create(thread_id, steps, input={"log": ["a"]}, config=SLOW)
    await past_s1(database_url, first["run_id"])  # s1 done, s2 under way
    second = await client.runs.create(
        thread_id, steps, input={"log": ["b"]}, multitask_strategy="interrupt"
    )
    result = await client.runs.join(thread_id, second["run_id"])
    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "interrupted"
    assert (await client.runs.get(thread_id, second["run_id"]))["status"] == "success"
    log = result["log"]
    assert log[5:7] == ["a", "s1"]  # the first run's finished steps are kept...
    assert 1 <= log.index("b") - log.index("a") - 1 < len(STEPS)  # ...it did not finish
    assert log[-5:] == ["b", *STEPS]


async def test_rollback_deletes_the_running_run_and_its_checkpoints(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = await new_thread(client, steps)
    first = await client.runs.create(thread_id, steps, input={"log": ["a"]}, config=SLOW)
    await past_s1(database_url, first["run_id"])
    second = await client.runs.create(
        thread_id, steps, input={"log": ["b"]}, multitask_strategy="rollback"
    )
    result = await client.runs.join(thread_id, second["run_id"])
    assert result["log"] == ["start", *STEPS, "b", *STEPS]  # nothing of the first run
    with pytest.raises(httpx.HTTPStatusError) as gone:
        await client.runs.get(thread_id, first["run_id"])
    assert gone.value.response.status_code == 404


async def test_enqueue_runs_one_after_the_other_in_order(client: Any, steps: str) -> None:
    thread_id = await new_thread(client, steps)
    fast = {"configurable": {"delay": 0.05}}
    first = await client.runs.create(thread_id, steps, input={"log": ["a"]}, config=fast)
    second = await client.runs.create(thread_id, steps, input={"log": ["b"]}, config=fast)
    result = await client.runs.join(thread_id, second["run_id"])
    assert result["log"] == ["start", *STEPS, "a", *STEPS, "b", *STEPS]
    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "success"


async def test_cancel_interrupts_a_running_run_and_cancel_many_a_pending_one(
    client: Any, steps: str
) -> None:
    thread_id = await new_thread(client, steps)
    first = await client.runs.create(thread_id, steps, input={"log": []}, config=SLOW)
    second = await client.runs.create(thread_id, steps, input={"log": []}, config=SLOW)
    await running(client, thread_id, first["run_id"])
    await client.runs.cancel_many(thread_id=thread_id, run_ids=[second["run_id"]])
    await client.runs.cancel(thread_id, first["run_id"], wait=True)
    cancelled = await client.runs.get(thread_id, first["run_id"])
    assert cancelled["status"] == "interrupted"
    assert (await client.runs.get(thread_id, second["run_id"]))["status"] == "interrupted"
    # The thread is free again.
    result = await client.runs.wait(thread_id, steps, input={"log": ["z"]})
    assert result["log"][-5:] == ["z", *STEPS]


async def test_interrupt_in_a_node_then_resume_with_command(
    client: Any, review: str, database_url: str
) -> None:
    thread_id = str(uuid.uuid4())
    paused = await client.runs.wait(thread_id, review, input={"log": []}, if_not_exists="create")
    assert paused["log"] == ["draft"]
    [pending] = paused["__interrupt__"]
    assert pending["value"]["question"] == "publish the draft?"
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "interrupted"
    [listed] = [i for group in thread["interrupts"].values() for i in group]
    assert listed["id"] == pending["id"]
    done = await client.runs.wait(thread_id, review, command={"resume": True})
    assert done["log"] == ["draft", "review:True", "published"]
    assert "__interrupt__" not in done
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "idle"
    assert thread["interrupts"] == {}


async def test_two_concurrent_resumes_cannot_both_consume_the_interrupt(
    client: Any, review: str
) -> None:
    thread_id = str(uuid.uuid4())
    await client.runs.wait(thread_id, review, input={"log": []}, if_not_exists="create")
    results = await asyncio.gather(
        client.runs.wait(thread_id, review, command={"resume": True}, raise_error=False),
        client.runs.wait(thread_id, review, command={"resume": False}, raise_error=False),
    )
    resumed = [r for r in results if "__error__" not in r]
    refused = [r for r in results if "__error__" in r]
    assert len(resumed) == 1
    assert len(refused) == 1
    assert "no pending interrupt" in refused[0]["__error__"]["message"]
    log = resumed[0]["log"]
    assert sum(entry.startswith("review:") for entry in log) == 1

    # Under reject, the second resume is refused at once with 409.
    thread_id = str(uuid.uuid4())
    await client.runs.wait(thread_id, review, input={"log": []}, if_not_exists="create")
    outcomes = await asyncio.gather(
        client.runs.create(thread_id, review, command={"resume": 1}, multitask_strategy="reject"),
        client.runs.create(thread_id, review, command={"resume": 2}, multitask_strategy="reject"),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, httpx.HTTPStatusError)]
    assert [e.response.status_code for e in errors] in ([409], [])
    created = [o for o in outcomes if isinstance(o, dict)]
    joined = [await client.runs.join(thread_id, run["run_id"]) for run in created]
    # Usually the second is refused (409); if the first had already finished when it came,
    # it was accepted and found no interrupt left. Either way one resume ran.
    assert sum("__error__" not in r for r in joined) == 1
    final = await client.runs.wait(thread_id, review, input=None)
    assert sum(entry.startswith("review:") for entry in final["log"]) == 1


async def test_interrupt_before_and_after_stop_the_run_at_a_node(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = str(uuid.uuid4())
    before = await client.runs.wait(
        thread_id, steps, input={"log": []}, interrupt_before=["s3"], if_not_exists="create"
    )
    assert before["log"] == ["s1", "s2"]
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "interrupted"
    rest = await client.runs.wait(thread_id, steps, input=None)
    assert rest["log"] == STEPS
    thread_id = str(uuid.uuid4())
    after = await client.runs.wait(
        thread_id, steps, input={"log": []}, interrupt_after=["s1"], if_not_exists="create"
    )
    assert after["log"] == ["s1"]
    with pytest.raises(httpx.HTTPStatusError) as bad:
        await client.runs.wait(thread_id, steps, input=None, interrupt_before=["nope"])
    assert bad.value.response.status_code == 422
    assert "interrupt_before" in bad.value.response.text


async def test_run_from_a_past_checkpoint_forks_the_thread(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = str(uuid.uuid4())
    await client.runs.wait(thread_id, steps, input={"log": ["one"]}, if_not_exists="create")
    [first_end] = sql(
        database_url,
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
        "ORDER BY checkpoint_id DESC LIMIT 1",
        thread_id,
    )
    second = await client.runs.wait(thread_id, steps, input={"log": ["two"]})
    assert second["log"] == ["one", *STEPS, "two", *STEPS]
    forked = await client.runs.wait(
        thread_id, steps, input={"log": ["fork"]}, checkpoint_id=first_end["checkpoint_id"]
    )
    assert forked["log"] == ["one", *STEPS, "fork", *STEPS]  # "two" is on the other branch
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["values"]["log"] == forked["log"]


async def test_stateless_runs_use_a_temporary_thread(
    client: Any, steps: str, database_url: str
) -> None:
    result = await client.runs.wait(None, steps, input={"log": ["tmp"]})
    assert result == {"log": ["tmp", *STEPS]}
    temporary = sql(
        database_url, "SELECT id FROM conversations WHERE metadata->>'temporary' = 'true'"
    )
    assert temporary == []
    kept = await client.runs.create(None, steps, input={"log": []}, on_completion="keep")
    assert kept["thread_id"]
    assert (await client.runs.join(kept["thread_id"], kept["run_id"]))["log"] == STEPS
    assert thread_row(database_url, kept["thread_id"]) is not None
    batch = await client.runs.create_batch(
        [{"assistant_id": steps, "input": {"log": [str(n)]}} for n in range(3)]
    )
    assert len(batch) == 3
    assert len({r["run_id"] for r in batch}) == 3
    parts = [p async for p in client.runs.stream(None, steps, input={"log": []})]
    assert parts[0].event == "metadata"
    assert parts[-1].event == "end"
    assert [p for p in parts if p.event == "values"][-1].data["log"] == STEPS


async def test_a_stateless_stream_locates_its_run_without_the_temporary_thread(
    server_url: str, steps: str
) -> None:
    """As langgraph-api: `/runs/stream` answers `Content-Location: /runs/{run_id}`, so the JS
    client's `onRunCreated` gets no thread id (it got the temporary thread's, a thread about
    to be deleted); a stream on a thread names its thread."""
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        body = {"assistant_id": steps, "input": {"log": []}}
        async with http.stream("POST", "/runs/stream", json=body) as answer:
            located = answer.headers["Content-Location"], answer.headers["Location"]
            await answer.aread()
        run_id = located[0].rsplit("/", 1)[-1]
        assert located == (f"/runs/{run_id}", f"/runs/{run_id}/stream")
        thread_id = (await http.post("/threads", json={})).json()["thread_id"]
        path = f"/threads/{thread_id}/runs/stream"
        async with http.stream("POST", path, json=body) as answer:
            assert answer.headers["Content-Location"].startswith(f"/threads/{thread_id}/runs/")
            await answer.aread()


async def test_stream_and_join_stream_on_a_thread(client: Any, steps: str) -> None:
    thread_id = await new_thread(client, steps)
    parts = [
        p
        async for p in client.runs.stream(
            thread_id, steps, input={"log": []}, stream_mode=["values", "updates"]
        )
    ]
    assert parts[0].event == "metadata"
    assert [p.event for p in parts].count("updates") == 4
    run = await client.runs.create(thread_id, steps, input={"log": []}, config=SLOW)
    joined = [p async for p in client.runs.join_stream(thread_id, run["run_id"])]
    assert joined[0].event == "metadata"
    assert joined[-1].event == "end"
    assert joined[-2].event == "values"
    assert joined[-2].data["log"][-4:] == STEPS


async def test_bad_requests_name_the_problem(client: Any, steps: str, server_url: str) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(httpx.HTTPStatusError) as no_thread:
        await client.runs.create(unknown, steps, input={})
    assert no_thread.value.response.status_code == 404
    assert "detail" in no_thread.value.response.json()
    with pytest.raises(httpx.HTTPStatusError) as no_assistant:
        await client.runs.wait(None, str(uuid.uuid4()), input={})
    assert no_assistant.value.response.status_code == 404
    async with httpx.AsyncClient(base_url=server_url) as http:
        bad = await http.post(
            "/runs/wait", json={"assistant_id": steps, "multitask_strategy": "sometimes"}
        )
        assert bad.status_code == 422
        assert "multitask_strategy" in bad.text
        # The chat graph reads Switchboard's agent context: unknown tools are refused.
        bad_context = await http.post(
            "/runs", json={"assistant_id": "chat", "context": {"tools": ["teleport"]}}
        )
        assert bad_context.status_code == 422
        assert bad_context.json()["field"] == "context"
        assert "teleport" in bad_context.text
        # The same in `configurable`, which a run mirrors into its context, on a thread too.
        thread = await client.threads.create()
        bad_configurable = await http.post(
            f"/threads/{thread['thread_id']}/runs",
            json={"assistant_id": "chat", "config": {"configurable": {"tools": ["teleport"]}}},
        )
        assert bad_configurable.status_code == 422
        assert bad_configurable.json()["field"] == "config.configurable"
        assert "teleport" in bad_configurable.text
        bad_mode = await http.post("/runs", json={"assistant_id": steps, "stream_mode": "nope"})
        assert bad_mode.status_code == 422
        assert "stream_mode" in bad_mode.text
        missing = await http.get(f"/threads/{unknown}/runs/{unknown}")
        assert missing.status_code == 404


async def test_after_seconds_delays_the_start(client: Any, steps: str) -> None:
    thread_id = await new_thread(client, steps)
    started = asyncio.get_running_loop().time()
    run = await client.runs.create(thread_id, steps, input={"log": []}, after_seconds=1)
    await asyncio.sleep(0.4)
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "pending"
    await client.runs.join(thread_id, run["run_id"])
    assert asyncio.get_running_loop().time() - started >= 1.0


async def test_the_chat_graph_runs_by_graph_id_with_its_agent_context(
    client: Any, database_url: str
) -> None:
    thread_id = str(uuid.uuid4())
    result = await client.runs.wait(
        thread_id,
        "chat",
        input={"messages": [{"role": "user", "content": "What is 6 * 7?"}]},
        context={"tools": ["calculator"], "memory_policy": "off"},
        if_not_exists="create",
    )
    assert "42" in result["answer"]  # the run's context turned the calculator on
    assert [m["type"] for m in result["messages"]] == ["human", "ai"]
    assert result["messages"][-1]["content"] == result["answer"]
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "idle"
    assert thread["values"]["messages"][0]["content"] == "What is 6 * 7?"


async def test_run_creation_answers_with_location_headers(server_url: str, steps: str) -> None:
    thread_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        created = await http.post(
            f"/threads/{thread_id}/runs",
            json={"assistant_id": steps, "input": {"log": []}, "if_not_exists": "create"},
        )
        run_id = created.json()["run_id"]
        assert created.headers["content-location"] == f"/threads/{thread_id}/runs/{run_id}"
        waited = await http.post(
            f"/threads/{thread_id}/runs/wait", json={"assistant_id": steps, "input": {"log": []}}
        )
        location = waited.headers["location"]
        assert location.startswith(f"/threads/{thread_id}/runs/")
        assert location.endswith("/join")
        joined = await http.get(location)
        assert joined.json() == waited.json()
        async with http.stream(
            "POST",
            f"/threads/{thread_id}/runs/stream",
            json={"assistant_id": steps, "input": {"log": []}},
        ) as streamed:
            assert streamed.headers["location"].endswith("/stream")
            assert streamed.headers["content-location"].startswith(f"/threads/{thread_id}/runs/")
            body = (await streamed.aread()).decode()
        assert (
            body.index("event: metadata") < body.index("event: values") < body.index("event: end")
        )


async def test_cancel_with_rollback_removes_the_run_and_what_it_wrote(
    client: Any, steps: str, database_url: str
) -> None:
    thread_id = await new_thread(client, steps)
    run = await client.runs.create(thread_id, steps, input={"log": ["gone"]}, config=SLOW)
    await running(client, thread_id, run["run_id"])
    await client.runs.cancel(thread_id, run["run_id"], action="rollback", wait=True)
    with pytest.raises(httpx.HTTPStatusError) as gone:
        await client.runs.get(thread_id, run["run_id"])
    assert gone.value.response.status_code == 404
    written = sql(
        database_url, "SELECT 1 FROM checkpoints WHERE metadata->>'run_id' = %s", run["run_id"]
    )
    assert written == []
    thread = thread_row(database_url, thread_id)
    assert thread is not None
    assert thread["status"] == "idle"
    assert thread["values"] == {"log": ["start", *STEPS]}


async def test_a_stream_with_on_disconnect_cancel_stops_its_run(
    client: Any, server_url: str, steps: str
) -> None:
    thread_id = await new_thread(client, steps)
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=30) as http,
        http.stream(
            "POST",
            f"/threads/{thread_id}/runs/stream",
            json={
                "assistant_id": steps,
                "input": {"log": []},
                "config": SLOW,
                "on_disconnect": "cancel",
            },
        ) as response,
    ):
        run_id = response.headers["content-location"].rsplit("/", 1)[-1]
        async for line in response.aiter_lines():
            if line.startswith("event: metadata"):
                break
    run = await client.runs.join(thread_id, run_id)
    assert len(run["log"]) < len(["start", *STEPS, *STEPS])
    assert (await client.runs.get(thread_id, run_id))["status"] == "interrupted"


async def test_command_update_and_goto_steer_the_graph(client: Any, steps: str) -> None:
    thread_id = await new_thread(client, steps)
    result = await client.runs.wait(
        thread_id, steps, command={"update": {"log": ["edited"]}, "goto": "s4"}
    )
    assert result["log"] == ["start", *STEPS, "edited", "s4"]
    # As langgraph-api (Agent Chat UI resumes with `input: {}`): a command wins over an input.
    again = await client.runs.wait(
        thread_id, steps, input={"log": ["ignored"]}, command={"goto": "s3"}
    )
    assert again["log"] == [*result["log"], "s3", "s4"]


async def test_wait_keeps_the_connection_alive_until_the_result(
    server_url: str, steps: str
) -> None:
    thread_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        response = await http.post(
            f"/threads/{thread_id}/runs/wait",
            json={
                "assistant_id": steps,
                "input": {"log": []},
                "config": SLOW,
                "if_not_exists": "create",
            },
        )
    assert response.status_code == 200
    assert response.text.startswith("\n")  # a keep-alive newline while the run ran (2.4 s)
    assert json.loads(response.text) == {"log": STEPS}


async def test_a_cancelled_stateless_run_leaves_no_temporary_thread(
    client: Any, steps: str, database_url: str
) -> None:
    run = await client.runs.create(None, steps, input={"log": []}, config=SLOW)
    await running(client, run["thread_id"], run["run_id"])
    await client.runs.cancel(run["thread_id"], run["run_id"], wait=True)
    assert thread_row(database_url, run["thread_id"]) is None
    [row] = sql(database_url, "SELECT status, thread_id FROM runs WHERE id = %s", run["run_id"])
    assert row["status"] == "interrupted"
    assert row["thread_id"] is None
    left = sql(database_url, "SELECT 1 FROM checkpoints WHERE thread_id = %s", run["thread_id"])
    assert left == []


async def test_batch_runs_on_threads_and_stateless_and_all_or_nothing(
    client: Any, steps: str, server_url: str
) -> None:
    thread_id = await new_thread(client, steps)
    batch = await client.runs.create_batch(
        [
            {"assistant_id": steps, "input": {"log": ["on-thread"]}, "thread_id": thread_id},
            {"assistant_id": steps, "input": {"log": ["stateless"]}},
        ]
    )
    assert batch[0]["thread_id"] == thread_id
    assert batch[1]["thread_id"] != thread_id
    result = await client.runs.join(thread_id, batch[0]["run_id"])
    assert result["log"] == ["start", *STEPS, "on-thread", *STEPS]
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        refused = await http.post(
            "/runs/batch",
            json=[
                {"assistant_id": steps, "thread_id": thread_id, "input": {"log": ["no"]}},
                {"assistant_id": str(uuid.uuid4())},
            ],
        )
    assert refused.status_code == 404
    assert len(await client.runs.list(thread_id)) == 2  # the first item was not created either


async def test_join_stream_keeps_only_the_modes_asked_for(client: Any, steps: str) -> None:
    thread_id = await new_thread(client, steps)
    run = await client.runs.create(
        thread_id, steps, input={"log": []}, stream_mode=["values", "updates"]
    )
    parts = [
        p async for p in client.runs.join_stream(thread_id, run["run_id"], stream_mode="updates")
    ]
    assert {p.event for p in parts} == {"metadata", "updates", "end"}
    assert [next(iter(p.data)) for p in parts if p.event == "updates"] == STEPS


def test_a_run_over_run_timeout_s_ends_as_timeout(pg_admin_url: str, tmp_path: Path) -> None:
    thread_id = str(uuid.uuid4())
    # A database of its own: the module's server would claim the run otherwise.
    with scratch_database(pg_admin_url, "run_timeout") as database_url:
        steps = make_assistant(database_url, "steps")
        settings = make_settings(
            database_url,
            tmp_path,
            migrate_on_start=False,
            langgraph_config=TEST_GRAPHS,
            run_timeout_s=1.0,
            run_poll_s=0.3,
        )
        with running_server(settings) as url:
            response = httpx.post(
                f"{url}/threads/{thread_id}/runs/wait",
                json={
                    "assistant_id": steps,
                    "input": {"log": []},
                    "config": SLOW,
                    "if_not_exists": "create",
                },
                timeout=30,
            )
        assert response.json()["__error__"]["error"] == "TimeoutError"
        [row] = sql(database_url, "SELECT status FROM runs WHERE thread_id = %s", thread_id)
        assert row["status"] == "timeout"
        thread = thread_row(database_url, thread_id)
        assert thread is not None
        assert thread["status"] == "error"


async def _status_after_join_stream(client: Any, thread_id: str, run_id: str) -> str:
    async for _ in client.runs.join_stream(thread_id, run_id):
        pass
    status: str = (await client.runs.get(thread_id, run_id))["status"]
    return status


async def test_a_run_is_final_as_soon_as_its_stream_ends(client: Any, steps: str) -> None:
    """Agent Chat UI's flow: join a run's stream, then get the run."""
    for _ in range(3):
        thread_id = str(uuid.uuid4())
        run_id = ""
        async for part in client.runs.stream(
            thread_id, steps, input={"log": []}, if_not_exists="create"
        ):
            if part.event == "metadata":
                run_id = part.data["run_id"]
        assert (await client.runs.get(thread_id, run_id))["status"] == "success"
        run = await client.runs.create(thread_id, steps, input={"log": []})
        assert await _status_after_join_stream(client, thread_id, run["run_id"]) == "success"
    failing = await client.runs.create(
        thread_id, steps, input={"log": []}, config={"configurable": {"fail_at": "s2"}}
    )
    assert await _status_after_join_stream(client, thread_id, failing["run_id"]) == "error"
    slow = await client.runs.create(thread_id, steps, input={"log": []}, config=SLOW)
    await running(client, thread_id, slow["run_id"])
    joined = asyncio.create_task(_status_after_join_stream(client, thread_id, slow["run_id"]))
    await client.runs.cancel(thread_id, slow["run_id"])
    assert await asyncio.wait_for(joined, 30) == "interrupted"


async def test_a_run_claimed_too_often_ends_as_an_error(
    client: Any, steps: str, database_url: str
) -> None:
    """A run that crashed its workers RUN_MAX_ATTEMPTS (5) times is not started a sixth time."""
    thread_id = await new_thread(client, steps)
    [row] = sql(
        database_url,
        "INSERT INTO runs (thread_id, assistant_id, status, attempt, lease_expires_at, kwargs)"
        " VALUES (%s, %s, 'running', 5, now() - interval '1 s', '{}') RETURNING id",
        thread_id,
        steps,
    )
    run_id = str(row["id"])
    result = await client.runs.join(thread_id, run_id)
    assert "started 5 times without finishing" in result["__error__"]["message"]
    run = await client.runs.get(thread_id, run_id)
    assert run["status"] == "error"


async def test_a_run_on_an_existing_thread_names_what_is_wrong_and_writes_nothing(
    client: Any, steps: str, server_url: str, database_url: str
) -> None:
    """An open server creates a run on an idle thread in one statement that reads the
    assistant too; when that writes nothing, the answer still names the field."""
    thread_id = (await client.threads.create(metadata={"k": "v"}))["thread_id"]
    ghost = make_assistant(database_url, "ghost")  # its graph is not declared
    async with httpx.AsyncClient(base_url=server_url) as http:
        for path, assistant, status, field in (
            ("runs/stream", str(uuid.uuid4()), 404, "assistant_id"),
            ("runs/wait", ghost, 422, "assistant_id"),
            ("runs", "no-such-graph", 404, "assistant_id"),
        ):
            answer = await http.post(
                f"/threads/{thread_id}/{path}", json={"assistant_id": assistant}
            )
            assert (answer.status_code, answer.json()["field"]) == (status, field), answer.text
        # A value PostgreSQL cannot hold (a NUL in a string) is refused by name, whichever
        # assistant the run names (it was a 500 with a known one).
        for assistant in (steps, str(uuid.uuid4())):
            answer = await http.post(
                f"/threads/{thread_id}/runs/wait",
                json={"assistant_id": assistant, "feedback_keys": ["\u0000"]},
            )
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"].startswith("feedback_keys"), answer.text
        unknown = await http.post(f"/threads/{uuid.uuid4()}/runs", json={"assistant_id": steps})
        assert (unknown.status_code, unknown.json()["field"]) == (404, "thread_id")
    assert sql(database_url, "SELECT id FROM runs WHERE thread_id = %s", thread_id) == []
    assert thread_row(database_url, thread_id)["status"] == "idle"  # type: ignore[index]
    # Then a run: the thread names the graph and assistant that ran on it, keeps its metadata.
    await client.runs.wait(thread_id, steps, input={"log": ["start"]})
    row = thread_row(database_url, thread_id)
    assert row is not None
    assert row["metadata"] == {"k": "v", "graph_id": "steps", "assistant_id": steps}
    assert (str(row["agent_id"]), row["status"]) == (steps, "idle")


async def test_runs_sent_at_once_to_an_idle_thread_get_one_start_and_their_strategy(
    client: Any, steps: str
) -> None:
    """Eight creations at once on an idle thread: one is written by the one-statement
    creation, the others find it in flight and get their multitask strategy."""
    fast = {"configurable": {"delay": 0.05}}
    thread_id = await new_thread(client, steps)
    answers = await asyncio.gather(
        *(
            client.runs.create(
                thread_id, steps, input={"log": []}, config=fast, multitask_strategy="reject"
            )
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    created = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, httpx.HTTPStatusError)]
    assert (len(created), len(refused)) == (1, 7), answers
    assert {r.response.status_code for r in refused} == {409}
    await client.runs.join(thread_id, created[0]["run_id"])
    thread_id = await new_thread(client, steps)
    queued = await asyncio.gather(
        *(
            client.runs.create(
                thread_id, steps, input={"log": [str(n)]}, config=fast, multitask_strategy="enqueue"
            )
            for n in range(4)
        )
    )
    for run in queued:
        await client.runs.join(thread_id, run["run_id"])
    state = await client.threads.get_state(thread_id)
    # Each ran once, one after the other (in whatever order they were written).
    marks = [entry for entry in state["values"]["log"] if entry in {"0", "1", "2", "3"}]
    assert sorted(marks) == ["0", "1", "2", "3"]
    assert state["values"]["log"].count("s1") == 5


async def test_a_run_started_at_creation_takes_the_assistant_its_request_read(
    client: Any, steps: str
) -> None:
    """The attempt of a run claimed at its creation runs with the assistant the route read and
    the thread the creating transaction wrote: it does not read them again."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    existing = await new_thread(client, steps)
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        # A new thread: the full path (the route reads the assistant, `create_run` writes).
        thread_id = str(uuid.uuid4())
        result = await client.runs.wait(thread_id, steps, input={"log": []}, if_not_exists="create")
        # An idle thread: one statement writes the run and reads the assistant for it.
        again = await client.runs.wait(existing, steps, input={"log": []})
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert result == {"log": STEPS}
    assert again["log"][-len(STEPS) :] == STEPS
    assert any("INSERT INTO runs" in s for s in statements)  # the recorder saw the request
    assert not [s for s in statements if "JOIN conversations ON true" in s]


async def test_an_assistants_bad_context_fails_its_run_naming_the_field(client: Any) -> None:
    """As langgraph-api, an assistant's `context` is not checked against its graph when it is
    created or changed; a value Switchboard's agent graphs refuse fails each run of it when it
    starts, as an error naming the assistant, `context.<key>` and the problem, in plain words."""
    assistant = await client.assistants.create("chat", context={"tools": ["teleport"]})
    aid = assistant["assistant_id"]
    await client.assistants.update(aid, context={"tools": ["teleport"], "max_steps": 0})
    thread = await client.threads.create()
    chunks = [
        chunk
        async for chunk in client.runs.stream(thread["thread_id"], aid, input={"messages": []})
    ]
    assert [chunk.event for chunk in chunks] == ["metadata", "error"]
    message = chunks[-1].data["message"]
    assert message.startswith(f"assistant {aid}: context.tools: unknown tools ['teleport']")
    assert "; context.max_steps: Input should be greater than or equal to 1" in message
    assert "ContextOverrides" not in message
    assert "pydantic" not in message
    (run,) = await client.runs.list(thread["thread_id"])
    assert run["status"] == "error"
    # A run's own context is refused at creation, in the same words (422 naming it).
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await client.runs.create(thread["thread_id"], "chat", context={"max_steps": 0})
    assert refused.value.response.status_code == 422
    assert refused.value.response.json()["field"] == "context"
    assert "context.max_steps: Input should be" in refused.value.response.text
