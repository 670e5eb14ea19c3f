"""What the run executor reports of each attempt: its span (current while it executes, with the
run and thread ids in context for logs and child spans), the LangChain callbacks that add node,
model and tool spans, and the run metrics (queue wait, executing, duration, final status)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode

from server.telemetry.context import bound_run
from server.telemetry.metrics import metrics
from server.telemetry.tracing import GraphCallbacks, run_span, spans_wanted
from stores.sql.models import Run

FAILED = frozenset({"error", "timeout"})


class RunTelemetry:
    """The telemetry of one attempt: `started` once its graph is known, `finished` with the
    status it ended with (None: not ended here, e.g. handed back or taken over)."""

    def __init__(self, run: Run, attempt: int, span: Span) -> None:
        self.run = run
        self.attempt = attempt
        self.span = span
        self.graph_id = "unknown"
        self.callbacks: GraphCallbacks | None = None
        self.began = time.perf_counter()
        self.executing = False

    def started(self, graph_id: str, config: dict[str, Any]) -> None:
        """The graph is known: name the span, count the run executing, observe its queue wait
        (first attempt), and add the callbacks that trace its nodes to the run's `config`."""
        m = metrics()
        self.graph_id = graph_id
        self.span.update_name(f"run {graph_id}")
        self.span.set_attribute("graph_id", graph_id)
        if not self.executing:
            m.runs_running.labels(graph_id).inc()
            self.executing = True
        created = self.run.created_at
        if self.attempt == 1 and created is not None:
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            waited = (datetime.now(UTC) - created).total_seconds()
            m.queue_wait.labels(graph_id).observe(max(0.0, waited))
        self.callbacks = GraphCallbacks(graph_id=graph_id, parent=self.span)
        existing = config.get("callbacks")
        if isinstance(existing, list):
            config["callbacks"] = [*existing, self.callbacks]
        elif existing is None:
            config["callbacks"] = [self.callbacks]

    def finished(self, status: str | None) -> None:
        """The attempt is over: close open spans, and count it by its final status."""
        m = metrics()
        if self.callbacks is not None:
            self.callbacks.close()
        if self.executing:
            m.runs_running.labels(self.graph_id).dec()
            self.executing = False
        outcome = status or "handed_back"
        self.span.set_attribute("run.status", outcome)
        if status in FAILED:
            self.span.set_status(Status(StatusCode.ERROR, status))
        seconds = time.perf_counter() - self.began
        m.run_duration.labels(self.graph_id, outcome).observe(seconds)
        if status is not None:
            m.runs_finished.labels(self.graph_id, status).inc()


@contextmanager
def observed_run(run: Run, attempt: int) -> Iterator[RunTelemetry]:
    """Around one attempt: the run's span (current; only when something receives spans: the
    run's metrics are observed here, and its nodes are timed without spans then), the run and
    thread ids in context."""
    thread_id = str(run.thread_id) if run.thread_id is not None else None
    spanned: AbstractContextManager[Span] = (
        run_span(run_id=str(run.id), thread_id=thread_id, graph_id="unknown", attempt=attempt)
        if spans_wanted()
        else nullcontext(INVALID_SPAN)
    )
    with bound_run(str(run.id), thread_id), spanned as span:
        yield RunTelemetry(run, attempt, span)
