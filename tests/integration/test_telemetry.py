"""Operations over real HTTP: /metrics (what a run and a stream move, who may scrape), and the
spans of a real run read through the SDK's in-memory exporter."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from server.telemetry.tracing import install_tracing
from tests.integration.auth_support import BUILTIN_PROJECT, client_with_key, make_keys
from tests.support import TEST_GRAPHS, make_settings, running_server

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")
ASK = {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}
CHAT_CONTEXT = {"tools": ["calculator"]}


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """An open server (loopback) serving the test graphs and the chat graph."""
    settings = make_settings(
        database_url, data_dir, migrate_on_start=False, langgraph_config=TEST_GRAPHS
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the process ends while the test runs."""
    exporter = InMemorySpanExporter()
    install_tracing(service_name="switchboard", otlp_endpoint=None).add_span_processor(
        SimpleSpanProcessor(exporter)
    )
    yield exporter
    exporter.shutdown()  # it keeps nothing more (the provider cannot drop a processor)


def samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as {(sample name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and wanted <= ls)


def chat_run(client: httpx.Client) -> tuple[str, str, httpx.Response]:
    """A chat run to its end on a new thread: (thread id, run id, the response)."""
    thread_id = str(uuid.uuid4())
    response = client.post(
        f"/threads/{thread_id}/runs/wait",
        json={"assistant_id": "chat", "input": ASK, "context": CHAT_CONTEXT,
              "if_not_exists": "create"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert "42" in response.json()["answer"]
    runs = client.get(f"/threads/{thread_id}/runs").json()
    return thread_id, runs[0]["run_id"], response


def test_a_run_moves_the_run_call_and_http_metrics(api: httpx.Client) -> None:
    before = samples(api)
    chat_run(api)
    after = samples(api)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("switchboard_runs_created_total", graph="chat") == 1
    assert moved("switchboard_runs_finished_total", graph="chat", status="success") == 1
    assert moved("switchboard_run_duration_seconds_count", graph="chat", status="success") == 1
    assert moved("switchboard_run_queue_wait_seconds_count", graph="chat") == 1
    assert moved("switchboard_node_duration_seconds_count", graph="chat", node="respond") == 1
    assert moved("switchboard_model_call_seconds_count") >= 2  # plan and respond at least
    assert moved("switchboard_tool_call_seconds_count", tool="calculator", status="ok") == 1
    assert moved("switchboard_retrieval_seconds_count") == 1
    assert moved("switchboard_memory_operation_seconds_count") >= 1
    assert moved("switchboard_embedding_seconds_count") >= 1
    # A run's checkpoint writes go out together (stores/checkpoints.py), at least at its finish.
    assert moved("switchboard_checkpoint_write_seconds_count", op="flush") >= 1
    assert moved("switchboard_run_events_written_total") >= 3  # metadata ... end
    # Route templates, never raw paths: bounded labels.
    route = "/threads/{thread_id}/runs/wait"
    assert moved("switchboard_http_requests_total", route=route, status="200") == 1
    routes = {dict(ls)["route"] for (n, ls) in after if n == "switchboard_http_requests_total"}
    assert not [r for r in routes if UUID.search(r)], "a raw path became a label"
    assert total(after, "switchboard_db_pool_connections", pool="sql", state="max") >= 1
    assert total(after, "switchboard_db_pool_connections", pool="checkpoints", state="max") >= 2
    assert moved("switchboard_http_requests_total", route="unmatched", status="404") == 0
    api.get("/no/such/route")
    assert (
        total(samples(api), "switchboard_http_requests_total", route="unmatched", status="404") >= 1
    )


def test_an_open_stream_counts_as_active_until_it_closes(api: httpx.Client) -> None:
    thread_id = str(uuid.uuid4())
    base = total(samples(api), "switchboard_streams_active")
    opened = threading.Event()
    received: list[str] = []

    def stream() -> None:
        with (
            httpx.Client(base_url=str(api.base_url), timeout=30) as client,
            client.stream(
                "POST",
                f"/threads/{thread_id}/runs/stream",
                json={"assistant_id": "steps", "input": {"log": []}, "if_not_exists": "create",
                      "config": {"configurable": {"delay": 0.4}}},
            ) as response,
        ):  # fmt: skip
            for line in response.iter_lines():
                opened.set()
                received.append(line)

    reader = threading.Thread(target=stream)
    reader.start()
    assert opened.wait(20)
    assert total(samples(api), "switchboard_streams_active") == base + 1
    reader.join(30)
    assert any(line == "event: end" for line in received)
    assert total(samples(api), "switchboard_streams_active") == base
    runs = samples(api)
    assert total(runs, "switchboard_runs_finished_total", graph="steps", status="success") >= 1


def test_the_runs_gauge_counts_pending_and_running_runs_by_graph(api: httpx.Client) -> None:
    thread_id = str(uuid.uuid4())
    run = api.post(
        f"/threads/{thread_id}/runs",
        json={"assistant_id": "sleeper", "input": {}, "if_not_exists": "create"},
    ).json()
    deadline = time.monotonic() + 20
    while total(samples(api), "switchboard_runs", graph="sleeper", status="running") < 1:
        assert time.monotonic() < deadline, "the sleeper run never showed as running"
        time.sleep(0.2)
    api.post(f"/threads/{thread_id}/runs/{run['run_id']}/cancel?wait=true")
    assert total(samples(api), "switchboard_runs", graph="sleeper") == 0


def _by_kind(spans: tuple[ReadableSpan, ...], kind: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("switchboard.kind") == kind]


def test_a_run_is_traced_per_request_run_node_model_tool_retrieval_and_memory(
    api: httpx.Client, spans: InMemorySpanExporter
) -> None:
    thread_id, run_id, response = chat_run(api)
    deadline = time.monotonic() + 10
    while not [s for s in _by_kind(spans.get_finished_spans(), "run")
               if (s.attributes or {}).get("run_id") == run_id]:  # fmt: skip
        assert time.monotonic() < deadline, "the run's span never ended"
        time.sleep(0.05)
    finished = spans.get_finished_spans()
    ours = [s for s in finished if (s.attributes or {}).get("run_id") == run_id]
    (run,) = _by_kind(tuple(ours), "run")
    assert run.name == "run chat"
    assert (run.attributes or {})["thread_id"] == thread_id
    assert (run.attributes or {})["run.status"] == "success"
    nodes = {str((s.attributes or {})["node"]) for s in _by_kind(tuple(ours), "node")}
    assert {"recall", "retrieve", "plan", "call_tools", "respond", "remember"} <= nodes
    for kind in ("model", "tool", "retrieval", "memory", "checkpoint", "embedding"):
        made = _by_kind(tuple(ours), kind)
        assert made, f"no {kind} span carries the run's id"
        assert all((s.attributes or {}).get("thread_id") == thread_id for s in made)
    (tool,) = _by_kind(tuple(ours), "tool")
    assert tool.name == "tool calculator"
    # Nodes are children of the run; models are children of their node.
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id
               for s in _by_kind(tuple(ours), "node"))  # fmt: skip
    node_ids = {s.context.span_id for s in _by_kind(tuple(ours), "node")}
    assert all(s.parent is not None and s.parent.span_id in node_ids
               for s in _by_kind(tuple(ours), "model"))  # fmt: skip
    assert len({s.context.trace_id for s in ours}) == 1
    # The request: one span, named by its route template, with the id the client was given.
    request_id = response.headers["x-request-id"]
    (request,) = [
        s
        for s in _by_kind(finished, "http")
        if (s.attributes or {}).get("request_id") == request_id
    ]
    assert request.name == "POST /threads/{thread_id}/runs/wait"
    assert (request.attributes or {})["http.response.status_code"] == 200


@pytest.fixture(scope="module")
def keys(database_url: str) -> dict[str, str]:
    return make_keys(database_url, {"ops@example.com": True, "user@example.com": False})


def _serve_builtin(database_url: str, data_dir: Path, **overrides: Any) -> Any:
    settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        langgraph_config=BUILTIN_PROJECT,
        auth="builtin",
        **overrides,
    )
    return running_server(settings)


def test_metrics_ask_for_an_admin_when_auth_is_on(
    database_url: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    with _serve_builtin(database_url, tmp_path) as url:
        with client_with_key(url, None) as anonymous:
            assert anonymous.get("/metrics").status_code == 401
        with client_with_key(url, keys["user@example.com"]) as user:
            refused = user.get("/metrics")
            assert refused.status_code == 403
            assert "METRICS_TOKEN" in refused.json()["detail"]
        with client_with_key(url, keys["ops@example.com"]) as admin:
            assert "switchboard_http_requests_total" in admin.get("/metrics").text


def test_a_scraper_token_opens_metrics_and_nothing_else(
    database_url: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    with _serve_builtin(database_url, tmp_path, metrics_token="s3cret-scrape") as url:
        with client_with_key(url, "s3cret-scrape") as scraper:
            assert scraper.get("/metrics").status_code == 200
            assert scraper.get("/threads/search").status_code in (401, 405)
            assert scraper.post("/threads/search", json={}).status_code == 401
        with client_with_key(url, "wrong") as guess:
            assert guess.get("/metrics").status_code == 401
        with client_with_key(url, keys["ops@example.com"]) as admin:
            assert admin.get("/metrics").status_code == 401  # the token, not a user's key
        with client_with_key(url, None) as anonymous:
            assert anonymous.get("/metrics").status_code == 401


def test_a_runs_last_checkpoint_writes_stored_by_its_finish_have_their_span(
    api: httpx.Client, spans: InMemorySpanExporter
) -> None:
    # They ride in the finish's transaction: that is their span (and checkpoint write metric),
    # whether or not the run lasted long enough for a flush of its own on the way.
    _, run_id, _ = chat_run(api)
    deadline = time.monotonic() + 10
    while True:
        ours = [s for s in _by_kind(spans.get_finished_spans(), "checkpoint")
                if (s.attributes or {}).get("run_id") == run_id
                and (s.attributes or {}).get("checkpoint.op") == "finish"]  # fmt: skip
        if ours:
            break
        assert time.monotonic() < deadline, "the finish's checkpoint span never ended"
        time.sleep(0.05)
    assert all(str((s.attributes or {})["checkpoint.statements"]) != "0" for s in ours)
