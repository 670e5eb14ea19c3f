"""Prometheus metrics of a server, correct across the processes of one `switchboard serve`:
with several processes they share a multiprocess directory (PROMETHEUS_MULTIPROC_DIR) that the
parent creates empty at start and removes at exit; each process marks itself dead on exit."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import prometheus_client.values
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a fast tool call (ms) to a long agent run (minutes).
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def multiprocess_dir() -> str | None:
    """The shared directory of this server's processes (None: one process, in memory)."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Every metric the server exports (created once per process by `metrics()`)."""

    def __init__(self) -> None:
        self.runs_created = Counter(
            "switchboard_runs_created_total", "Runs submitted, by graph.", ["graph"]
        )
        self.runs_finished = Counter(
            "switchboard_runs_finished_total",
            "Runs finished by this process, by graph and final status.",
            ["graph", "status"],
        )
        self.runs_running = Gauge(
            "switchboard_runs_executing",
            "Run attempts executing now.",
            ["graph"],
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "switchboard_run_queue_wait_seconds",
            "Time from a run's creation to its first claim by a worker.",
            ["graph"],
            buckets=_SLOW,
        )
        self.run_duration = Histogram(
            "switchboard_run_duration_seconds",
            "Time one run attempt took, claim to final status.",
            ["graph", "status"],
            buckets=_SLOW,
        )
        self.node_duration = Histogram(
            "switchboard_node_duration_seconds",
            "Time a graph node took.",
            ["graph", "node"],
            buckets=_SLOW,
        )
        self.streams_active = Gauge(
            "switchboard_streams_active",
            "SSE streams open now.",
            multiprocess_mode="livesum",
        )
        self.events_written = Counter(
            "switchboard_run_events_written_total", "Run events stored in the event log."
        )
        self.checkpoint_write = Histogram(
            "switchboard_checkpoint_write_seconds",
            "Time to write a LangGraph checkpoint (put), its pending writes (put_writes), or a "
            "run's queued checkpoint writes together (flush).",
            ["op"],
            buckets=_FAST,
        )
        self.model_call = Histogram(
            "switchboard_model_call_seconds",
            "Time of one chat model call.",
            ["model", "status"],
            buckets=_SLOW,
        )
        self.tool_call = Histogram(
            "switchboard_tool_call_seconds",
            "Time of one tool call.",
            ["tool", "status"],
            buckets=_FAST,
        )
        self.embedding = Histogram(
            "switchboard_embedding_seconds",
            "Time to embed a query or a batch of documents.",
            ["kind"],
            buckets=_FAST,
        )
        self.retrieval = Histogram(
            "switchboard_retrieval_seconds",
            "Time of a knowledge-base search.",
            ["status"],
            buckets=_FAST,
        )
        self.memory_op = Histogram(
            "switchboard_memory_operation_seconds",
            "Time of a long-term memory operation (get, search, put, list, batch).",
            ["op", "status"],
            buckets=_FAST,
        )
        self.http_requests = Counter(
            "switchboard_http_requests_total",
            "HTTP requests answered, by route template (not raw path) and status.",
            ["method", "route", "status"],
        )
        self.http_duration = Histogram(
            "switchboard_http_request_duration_seconds",
            "Time to answer an HTTP request (a stream: until it closes).",
            ["method", "route"],
            buckets=_SLOW,
        )
        self.pool = Gauge(
            "switchboard_db_pool_connections",
            "Database pool connections by pool (sql, checkpoints) and state (in_use, idle, max).",
            ["pool", "state"],
            multiprocess_mode="livesum",
        )


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """This process's metrics; the first call decides, from PROMETHEUS_MULTIPROC_DIR, whether
    their values live in memory or in the shared directory."""
    global _metrics
    if _metrics is None:
        # prometheus_client picks its value store at import time; the directory may have been
        # set after that (by `switchboard serve` before it started its workers).
        prometheus_client.values.ValueClass = prometheus_client.values.get_value_class()  # type: ignore[no-untyped-call]
        _metrics = Metrics()
    return _metrics


def render(extra: Iterable[Metric] = ()) -> bytes:
    """The exposition text: every process's metrics (merged from the shared directory when
    there is one), then `extra` (metrics computed at scrape time)."""
    metrics()
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    families = list(extra)
    if families:
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_Fixed(families))
        body += generate_latest(scrape)
    return body


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def runs_gauge(counts: Iterable[tuple[str, str, int]]) -> GaugeMetricFamily:
    """`switchboard_runs{status,graph}`: runs in the database now (every process's), from
    `(status, graph, count)` rows."""
    family = GaugeMetricFamily(
        "switchboard_runs",
        "Runs in the database by status and graph (the whole deployment's).",
        labels=["status", "graph"],
    )
    for status, graph, count in counts:
        family.add_metric([status, graph], count)
    return family


def process_exited() -> None:
    """Drop this process's live gauges from the shared directory (at shutdown)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@contextmanager
def shared_metrics_dir(processes: int) -> Iterator[Path | None]:
    """Around a server of `processes` processes: when more than one, a multiprocess directory
    for their metrics, set in PROMETHEUS_MULTIPROC_DIR for the workers to inherit.

    An operator's PROMETHEUS_MULTIPROC_DIR is used (emptied first: files of an earlier start
    would be counted again); else a temporary one is made and removed at exit. One process
    keeps its metrics in memory (an inherited directory is used as it is).
    """
    given = multiprocess_dir()
    if processes <= 1:
        yield Path(given) if given else None
        return
    if given is not None:
        path, made = Path(given), False
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path, made = Path(tempfile.mkdtemp(prefix="switchboard-metrics-")), True
        os.environ[MULTIPROC_ENV] = str(path)
    log.info("metrics of %d processes shared in %s", processes, path)
    try:
        yield path
    finally:
        if made:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(path, ignore_errors=True)
