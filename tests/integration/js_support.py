"""Node scripts of tests/js, run against a real server with the official LangGraph JS client
(`@langchain/langgraph-sdk` from npm, installed from tests/js/package-lock.json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.support import ROOT

JS = ROOT / "tests" / "js"
# npm writes this file at the end of every install; it is older than the lock when the lock
# changed since.
INSTALLED = JS / "node_modules" / ".package-lock.json"


def node_project() -> None:
    """Make sure tests/js's packages are installed (`npm ci` when they are missing or older
    than the lock); skip without node, fail in CI."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are missing: .ci/run installs them")
        pytest.skip("no node/npm here: install Node.js 20 to run the JS client tests")
    lock = JS / "package-lock.json"
    if INSTALLED.exists() and INSTALLED.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=JS,
        check=True,
        timeout=600,
    )


def run_node(script: str, *args: str, timeout_s: float = 180) -> dict[str, dict[str, Any]]:
    """Run `tests/js/<script>` with `args`; its report, one JSON object per line keyed by
    `step` (the last of each name wins). A failed script fails the test with its stderr."""
    node_project()
    done = subprocess.run(
        ["node", script, *args],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"node {script} failed ({done.returncode}):\n{done.stderr[-4000:]}\n"
            f"steps so far:\n{done.stdout[-2000:]}"
        )
    steps: dict[str, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            step = json.loads(line)
            steps[str(step["step"])] = step
    return steps
