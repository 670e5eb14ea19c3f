"""Benchmarks: figures reported as ratios against a baseline measured in the same run."""

from __future__ import annotations

import sys
from pathlib import Path


def publish(report: str, path: Path) -> None:
    """Write a benchmark's Markdown report to `path` (bench/results/...) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {path}", file=sys.stderr)
