"""Benchmarks: figures reported as ratios against a baseline measured in the same run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Where benchmarked Switchboard servers keep the exported embedding model, shared between runs:
# a server with a new MODELS_DIR exports it (~30 s of CPU in a child process) after it is
# ready, which would compete with the first measurements of every server in the run.
MODELS_DIR = Path(
    os.environ.get("BENCH_MODELS_DIR")
    or os.environ.get("CHAT_BENCH_MODELS_DIR")
    or Path.home() / ".cache/switchboard/models"
)


def publish(report: str, path: Path) -> None:
    """Write a benchmark's Markdown report to `path` (bench/results/...) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {path}", file=sys.stderr)
