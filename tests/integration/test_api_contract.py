"""The OpenAPI document is the contract: schemathesis' own command line (pinned in
`.venv-contract`, see the Makefile) runs over every operation of the server's /openapi.json,
streams, joins and waits included, and the test fails on any failure, any error and any
"schema validation mismatch" warning (an operation that refuses the data its own schema
calls valid).

Checks: no server error, the status code is documented, the content type is documented, the
body matches the documented schema. Its phases: examples, coverage (boundary values of every
constraint), fuzzing, stateful (the links between operations).

The server is a real one on a scratch PostgreSQL database, with a run timeout of a few seconds
so that every stream, join and wait ends; the client's total per request is bounded too.
Before the run, the test creates an assistant, a thread with a checkpoint, a run, a cron, a
user and a store item, and hands their ids to schemathesis as parameter values (its config
file's `[parameters]`), so generated requests reach the operations' logic instead of a 404.

`CONTRACT_BASE_URL` points the same test at a deployed server (`CONTRACT_API_KEY` is sent as
`X-Api-Key`); `CONTRACT_MAX_EXAMPLES` sets the fuzzing phase's cases per operation (default
10), `CONTRACT_SEED` the seed (default fixed, so a failure reproduces).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from tests.support import ROOT, make_settings, running_server

SCHEMATHESIS = Path(
    os.environ.get("CONTRACT_SCHEMATHESIS", ROOT / ".venv-contract" / "bin" / "schemathesis")
)
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "10"))
SEED = os.environ.get("CONTRACT_SEED", "20261130")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
# The client's total for one request: the test server ends every run within RUN_TIMEOUT_S,
# so a stream, join or wait still open after this is a hang, and fails the run (an error).
REQUEST_TIMEOUT_S = 10
RUN_TIMEOUT_S = 5
# Waits (`/runs/wait`, `/join`, `cancel?wait=true`) keep their connection alive with a newline
# every SSE_HEARTBEAT_S: above the request timeout, a wait for a run that has not ended in
# REQUEST_TIMEOUT_S (one delayed by `after_seconds`, or queued behind one) times out instead.
HEARTBEAT_S = 60
# The whole command line's budget: about three minutes on two quiet cores, twice that when
# the machine is shared.
CLI_TIMEOUT_S = 1000
RUN_INPUT = {"messages": [{"role": "user", "content": "hello"}]}


def _headers() -> dict[str, str]:
    key = os.environ.get("CONTRACT_API_KEY")
    return {"X-Api-Key": key} if key else {}


@pytest.fixture(scope="module")
def contract_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """`CONTRACT_BASE_URL`, else a real server on this module's database. Its per-identity
    run limits are lifted (generated bursts test validation, not the limiter) and a run
    attempt ends within RUN_TIMEOUT_S (as `timeout`), so streams end."""
    deployed = os.environ.get("CONTRACT_BASE_URL")
    if deployed:
        yield deployed.rstrip("/")
        return
    server_settings = make_settings(
        database_url,
        data_dir,
        migrate_on_start=False,
        runs_per_minute=0,
        runs_in_flight_per_user=0,
        run_timeout_s=RUN_TIMEOUT_S,
        sse_heartbeat_s=HEARTBEAT_S,
    )
    with running_server(server_settings) as url:
        yield url


def existing_records(url: str) -> dict[str, str]:
    """Create one record of each kind the path parameters name; their ids by parameter."""
    with httpx.Client(base_url=url, headers=_headers(), timeout=60) as client:

        def made(method: str, path: str, body: Any) -> Any:
            response = client.request(method, path, json=body)
            assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
            return response.json() if response.content.strip() else None

        assistant = made("POST", "/assistants", {"graph_id": "chat", "name": "contract"})
        thread = made("POST", "/threads", {})
        thread_id = thread["thread_id"]
        run_path = f"/threads/{thread_id}/runs"
        made(
            "POST",
            f"{run_path}/wait",
            {"assistant_id": assistant["assistant_id"], "input": RUN_INPUT},
        )
        run = made("GET", run_path, None)[0]
        state = made("GET", f"/threads/{thread_id}/state", None)
        cron = made(
            "POST",
            "/runs/crons",
            {"assistant_id": assistant["assistant_id"], "schedule": "0 0 1 1 *"},
        )
        user = made(
            "POST",
            "/users",
            {"email": f"contract-{uuid.uuid4().hex[:12]}@example.com", "name": "Contract"},
        )
        made("PUT", "/store/items", {"namespace": ["contract"], "key": "k", "value": {"a": 1}})
    return {
        "assistant_id": assistant["assistant_id"],
        "thread_id": thread_id,
        "run_id": run["run_id"],
        "checkpoint_id": state["checkpoint"]["checkpoint_id"],
        "cron_id": cron["cron_id"],
        "user_id": user["id"],
    }


# Operations that get the existing thread: all that read or change it or one of its runs.
# The ones that create runs on it keep generated (absent) ids: a generated run delayed by
# `after_seconds` (up to a day) would hold the thread's queue, and every later run on it.
THREAD_OPERATIONS = r"^/threads/\{thread_id\}(|/copy|/history|/state.*|/stream|/runs/\{run_id\}.*)$"
THREAD_RUNS = r"^/threads/\{thread_id\}/runs$"
# A stream's total: schemathesis stops reading an event stream after its request timeout.
STREAM_OPERATIONS = r"/(stream|join/stream)$"
STREAM_TIMEOUT_S = 6


def config_file(path: Path, records: dict[str, str]) -> Path:
    """schemathesis' config: the records' ids as parameter values, streams read for
    STREAM_TIMEOUT_S at most."""
    thread = records.pop("thread_id")
    lines = [
        "[parameters]",
        *(f'{name} = "{value}"' for name, value in records.items()),
        "",
        "[[operations]]",
        f"include-path-regex = '{THREAD_OPERATIONS}'",
        f'parameters = {{ thread_id = "{thread}" }}',
        "",
        "[[operations]]",
        f"include-path-regex = '{THREAD_RUNS}'",
        'include-method = "GET"',
        f'parameters = {{ thread_id = "{thread}" }}',
        "",
        "[[operations]]",
        f"include-path-regex = '{STREAM_OPERATIONS}'",
        f"request-timeout = {STREAM_TIMEOUT_S}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# The operations that answer once a run has ended, keeping the connection open meanwhile.
WAITS = frozenset(
    {
        "POST /threads/{thread_id}/runs/wait",
        "POST /runs/wait",
        "GET /threads/{thread_id}/runs/{run_id}/join",
        "POST /threads/{thread_id}/runs/{run_id}/cancel",
    }
)
TIMED_OUT = "Read timed out"


def cut_waits_and_errors(junit: str) -> tuple[list[str], list[str]]:
    """The operations whose errors are all the client giving up on a wait (a run that had
    not ended within the request timeout: no verdict), and every other error, from the
    command line's JUnit report."""
    cut, errors = [], []
    for case in ElementTree.fromstring(junit).iter("testcase"):
        texts = [error.text or "" for error in case.iter("error")]
        if not texts:
            continue
        label = case.get("name", "")
        if label in WAITS and all(TIMED_OUT in text for text in texts):
            cut.append(label)
        else:
            errors += [f"{label}: {text[:2000]}" for text in texts]
    return cut, errors


# CPython 3.11's `ast.parse` keeps its recursion depth in state its threads share
# (python/cpython#106905), so hypothesis, describing a lambda while schemathesis' two
# workers run, can fail with this SystemError: a fault of the tool, not of the server.
TOOL_FAULTS = ("AST constructor recursion depth mismatch",)


def tool_fault(problem: str) -> bool:
    """Whether a problem is the tool's own crash, which says nothing of the server."""
    return problem.startswith("error ") and any(fault in problem for fault in TOOL_FAULTS)


def verdict_problems(report: dict[str, Any], errors: list[str]) -> list[str]:
    """What makes a run of the command line fail: an incomplete run, a failure, an error that
    is not a cut wait, a "schema validation mismatch" warning (from its JSON report)."""
    problems = []
    if not report.get("complete"):
        problems.append(f"the run did not complete: stop_reason {report.get('stop_reason')}")
    problems += [
        f"failure {f['code']} {f['title']} x{f['count']}: {f['operations']}"
        for f in report.get("failures", [])
    ]
    problems += [f"error {error}" for error in errors]
    mismatched = report.get("warnings", {}).get("validation_mismatch", [])
    if mismatched:
        problems.append(f"schema validation mismatch (schema looser than validation): {mismatched}")
    return problems


def test_verdict_problems_reads_the_reports() -> None:
    clean = {
        "complete": True,
        "failures": [],
        "errors": [],
        "warnings": {"validation_mismatch": []},
    }
    assert verdict_problems(clean, []) == []
    assert verdict_problems({**clean, "complete": False}, [])
    assert verdict_problems(clean, ["GET /x: Network Error"])
    failure = {
        "code": "ST103",
        "title": "Undocumented status code",
        "count": 1,
        "operations": ["x"],
    }
    assert verdict_problems({**clean, "failures": [failure]}, [])
    assert verdict_problems({**clean, "warnings": {"validation_mismatch": ["GET /x"]}}, [])
    junit = (
        '<testsuites><testsuite name="schemathesis">'
        '<testcase name="POST /runs/wait"><error type="error">Network Error\n\n'
        "Read timed out</error></testcase>"
        '<testcase name="POST /runs"><error type="error">Network Error\n\n'
        "Read timed out</error></testcase>"
        '<testcase name="GET /ok" />'
        "</testsuite></testsuites>"
    )
    assert tool_fault(
        "error GET /documents: Runtime Error\n\nAST constructor recursion depth "
        "mismatch (before=66, after=103)"
    )
    assert not tool_fault("error GET /documents: Server Error 500")
    assert not tool_fault("failure ST101 AST constructor recursion depth mismatch x1: []")
    cut, errors = cut_waits_and_errors(junit)
    assert cut == ["POST /runs/wait"]
    assert len(errors) == 1
    assert errors[0].startswith("POST /runs:")


@pytest.mark.timeout(2 * CLI_TIMEOUT_S + 200)  # a second run after a crash of the tool
def test_every_operation_keeps_its_contract(contract_url: str, tmp_path: Path) -> None:
    """schemathesis 4.32's command line over the whole document: 0 failures, 0 errors,
    0 schema validation mismatches."""
    assert SCHEMATHESIS.exists(), (
        f"{SCHEMATHESIS} is missing: the contract test runs schemathesis' command line from "
        "its own venv; build it with `make .venv-contract/.installed` (`make test` does)"
    )
    config = config_file(tmp_path / "schemathesis.toml", existing_records(contract_url))
    report_path = tmp_path / "report.json"
    junit_path = tmp_path / "junit.xml"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{contract_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--request-timeout",
        str(REQUEST_TIMEOUT_S),
        "--workers",
        "2",
        "--report",
        "json,junit",
        "--report-json-path",
        str(report_path),
        "--report-junit-path",
        str(junit_path),
        "--generation-database",
        "none",
        "--no-color",
    ]
    for name, value in _headers().items():
        command += ["--header", f"{name}: {value}"]
    for attempt in (1, 2):
        report_path.unlink(missing_ok=True)
        finished = subprocess.run(
            command,
            cwd=tmp_path,  # its cache (.schemathesis/) of this run only
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        output = finished.stdout + finished.stderr
        assert report_path.exists(), (
            f"schemathesis wrote no report (exit {finished.returncode}):\n{output}"
        )
        report = json.loads(report_path.read_text())
        cut, errors = cut_waits_and_errors(junit_path.read_text())
        problems = verdict_problems(report, errors)
        if attempt == 1 and problems and all(tool_fault(problem) for problem in problems):
            print(f"schemathesis itself failed (not a finding), run again: {problems}")
            continue
        break
    assert not problems, "\n".join([*problems, "", output[-20000:]])
    if cut:  # said, not hidden: these waits got no verdict
        print(f"waits cut after {REQUEST_TIMEOUT_S} s (their run had not ended): {cut}")
    operations = report["operations"]
    assert operations["tested"] == operations["total"], operations  # every one, streams too
