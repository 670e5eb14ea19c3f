"""Request, run and store telemetry (server/telemetry/http.py `RequestTelemetry`,
server/telemetry/runs.py `observed_run`, stores/tracing.py `traced`): their metrics are
observed either way; their spans are made only when something receives spans beyond the
metrics (an exporter, a test's processor)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from server.telemetry import tracing
from server.telemetry.http import RequestTelemetry
from server.telemetry.runs import observed_run
from server.telemetry.tracing import install_tracing, spans_wanted
from stores import tracing as stores_tracing
from stores.sql.models import Run
from stores.tracing import traced


@pytest.fixture
def nothing_receives_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process has an SDK provider (spans would be recorded), but no exporter."""
    install_tracing(service_name="switchboard", otlp_endpoint=None)
    provider = tracing._Provider()
    provider.add_span_processor(tracing.ContextIds())
    provider.add_span_processor(tracing.SpanMetrics())
    monkeypatch.setattr(tracing, "_provider", provider)
    assert not spans_wanted()


def requests_of(path: str) -> float:
    labels = {"method": "GET", "route": path, "status": "200"}
    return REGISTRY.get_sample_value("switchboard_http_requests_total", labels) or 0.0


async def test_a_request_makes_no_span_when_nothing_receives_spans(
    nothing_receives_spans: None,
) -> None:
    recording: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        recording.append(trace.get_current_span().is_recording())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    before = requests_of("unmatched")
    await RequestTelemetry(app)(scope, receive, send)
    assert recording == [False]
    assert requests_of("unmatched") == before + 1  # the metrics are observed all the same
    assert any(k == b"x-request-id" for k, _ in sent[0]["headers"])


def test_a_run_makes_no_span_when_nothing_receives_spans(nothing_receives_spans: None) -> None:
    run = Run(id=uuid.uuid4(), thread_id=uuid.uuid4())
    with observed_run(run, 1) as telemetry:
        assert not telemetry.span.is_recording()
        assert not trace.get_current_span().is_recording()


def memory_ops(op: str, status: str) -> float:
    labels = {"op": op, "status": status}
    return REGISTRY.get_sample_value("switchboard_memory_operation_seconds_count", labels) or 0.0


def test_a_stores_block_is_timed_without_a_span_until_spans_are_received(
    nothing_receives_spans: None,
) -> None:
    op = f"op{uuid.uuid4().hex[:6]}"  # a label of this test's own
    with traced("memory", f"memory {op}", **{"memory.op": op}) as span:
        assert not span.is_recording()
        assert not trace.get_current_span().is_recording()
    assert memory_ops(op, "ok") == 1
    with (
        pytest.raises(ValueError, match="refused"),
        traced("memory", f"memory {op}", **{"memory.op": op}),
    ):
        raise ValueError("refused")
    assert memory_ops(op, "error") == 1
    with traced("memory", "memory later", **{"memory.op": "get"}) as span:
        span.set_attribute("memory.op", op)  # set inside the block: read by the metric too
        span.set_status(Status(StatusCode.ERROR))
    assert memory_ops(op, "error") == 2

    provider = tracing._provider
    assert provider is not None
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert spans_wanted()
    with pytest.MonkeyPatch.context() as patch:  # the test's provider makes the spans
        patch.setattr(stores_tracing, "_tracer", provider.get_tracer("test"))
        with traced("memory", f"memory {op}", **{"memory.op": op}) as span:
            assert span.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == [f"memory {op}"]
    assert memory_ops(op, "ok") == 2  # through the span's processor, as before
