"""Test helpers: throwaway databases, settings, and a real uvicorn server on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from server.app import create_app
from server.settings import Settings
from stores import migrate

ROOT = Path(__file__).resolve().parents[1]
REPO_PROJECT = ROOT / "langgraph.json"
# The graphs the API tests run (counter, sleeper, steps, review, and the repo's chat, researcher).
TEST_GRAPHS = ROOT / "tests" / "projects" / "test_graphs" / "langgraph.json"


def database_url_named(admin_url: str, name: str) -> str:
    """`admin_url` pointed at database `name` (keeps host, socket dir and credentials)."""
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def scratch_database(admin_url: str, label: str, *, migrated: bool = True) -> Iterator[str]:
    """Create a database of its own for one test module, migrate it, drop it afterwards."""
    safe = "".join(c if c.isalnum() else "_" for c in label.lower())[-30:]
    name = f"sb_{safe}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url_named(admin_url, name)
    try:
        if migrated:
            migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test server: no `.env`, its own data folder, a free port, the repo's
    langgraph.json (whatever the working directory)."""
    values: dict[str, Any] = {
        "langgraph_config": REPO_PROJECT,
        "database_url": database_url,
        "data_dir": data_dir,
        "port": free_port(),
        "log_level": "warning",
        # Seeding loads the embedding model (seconds of CPU): tests that want it turn it on.
        "ingest_samples_on_start": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running_server(settings: Settings, *, app: FastAPI | None = None) -> Iterator[str]:
    """Serve `app` (default `create_app(settings)`) with uvicorn in a thread on the settings'
    port; yield its base URL."""
    config = uvicorn.Config(
        app or create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    # Generous: an embedded PostgreSQL alone may take its EMBEDDED_POSTGRES_START_S under load.
    deadline = time.monotonic() + 240
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("test server failed to start; see the log above")
        if time.monotonic() > deadline:
            raise TimeoutError("test server did not start within 240 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


LANGGRAPH = Path(sys.executable).parent / "langgraph"  # langgraph-cli[inmem], a dev extra
SWITCHBOARD = Path(sys.executable).parent / "switchboard"


@contextmanager
def served_by(
    command: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    url: str,
    timeout_s: float = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command in a process group of its own (output appended to `log`) until
    `url`/ok answers 200; yield the process; stop the whole group afterwards (SIGTERM, then
    SIGKILL)."""
    with log.open("a") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited: {log.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{command[0]} did not start in {timeout_s} s")
                time.sleep(0.3)
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def langgraph_dev(config: Path, *, log: Path) -> Iterator[str]:
    """`langgraph dev` (in-memory, offline) serving the project of `config` on a free port, run
    from the project folder as its users run it (graph paths are relative to the working
    directory there); its `.langgraph_api/` state folder is git-ignored."""
    port = free_port()
    env = {
        **os.environ,
        "LANGSMITH_TRACING": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "CRON_SCHEDULER_SLEEP_TIME": "1",  # its crons fire within a second or so (5 s by default)
    }
    command = [
        str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--port", str(port),
        "--config", str(config),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with served_by(command, cwd=config.parent, env=env, log=log, url=url):
        yield url


@contextmanager
def installed(database_url: str, create: str, drop: str) -> Iterator[None]:
    """Within: what the SQL `create` installs (a trigger, say) is in the database at
    `database_url`; the SQL `drop` removes it after."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(create)  # type: ignore[arg-type]
        try:
            yield
        finally:
            conn.execute(drop)  # type: ignore[arg-type]
