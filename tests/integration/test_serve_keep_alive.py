"""`switchboard serve` keeps idle keep-alive connections open longer than clients do.

A server that closes an idle connection at the moment a client sends its next request on it
cuts that request: the client reads a reset (`httpx.ReadError` while waiting for the headers).
uvicorn's default (5 s) equals httpx's own `keepalive_expiry` (5 s), so at concurrency 64 the
/chat bench hit that race in about one run of three. With HTTP_KEEP_ALIVE_S above the clients'
idle timeout, the client always closes an idle connection first.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from tests.support import ROOT, TEST_GRAPHS, free_port, served_by

HTTPX_KEEPALIVE_EXPIRY_S = 5.0  # httpx.Limits' default


def _get_ok(sock: socket.socket) -> bytes:
    """GET /ok on an open connection; the response's head and body (read until the body's
    length is in), or b"" if the server closed the connection."""
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_idle_connection_outlives_the_clients_keepalive(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "MIGRATE_ON_START": "false",
        "INGEST_SAMPLES_ON_START": "false",
        "LOG_LEVEL": "warning",
        "DB_POOL_SIZE": "2",
        "CHECKPOINT_POOL_SIZE": "2",
    }
    # From the repository's root: the test graphs import `tests`.
    command = [sys.executable, "-m", "server.cli", "serve", "--config", str(TEST_GRAPHS)]
    with (
        served_by(command, cwd=ROOT, env=env, log=tmp_path / "server.log", url=url),
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
    ):
        assert _get_ok(sock).startswith(b"HTTP/1.1 200")
        # Idle past httpx's keep-alive expiry (and uvicorn's default): a client may still reuse
        # the connection up to then, so the server must not have closed it.
        time.sleep(HTTPX_KEEPALIVE_EXPIRY_S + 1.0)
        again = _get_ok(sock)
        assert again.startswith(b"HTTP/1.1 200"), again
