"""The zero-config start: an embedded PostgreSQL whose data survives a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.helpers import create_agent, create_conversation, create_user
from tests.support import free_port, make_settings, running_server


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
