"""The zero-config MongoDB: an `nx-27017` wire-protocol server over SQLite, run as a subprocess."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

# Runs nx-27017 in a child Python that stops itself (SIGTERM, a clean shutdown) once its parent
# is gone, even if the parent was killed with SIGKILL: no orphaned server holds the data folder.
_LAUNCH = """
import os, signal, sys, threading, time
parent = os.getppid()
def _watch():
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=_watch, daemon=True).start()
from nx_27017.nx_27017 import main
sys.argv[0] = "nx-27017"
sys.exit(main())
"""


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedMongo:
    """One `nx-27017` process serving `data_dir` on a loopback port; restartable on that port.

    Args:
        data_dir: Folder of the SQLite files (one per logical database), the log and pid file.
        port: Port to listen on; a free one is picked when omitted.
        startup_timeout_s: How long `start` waits for the server to answer `ping`.
    """

    def __init__(
        self, data_dir: Path, *, port: int | None = None, startup_timeout_s: float = 30.0
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port or free_loopback_port()
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The `mongodb://` URI of the server."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def pid_file(self) -> Path:
        """Holds the server's process id while it runs (`data_dir/nx-27017.pid`)."""
        return self.data_dir / "nx-27017.pid"

    @property
    def pid(self) -> int | None:
        """The process id while the server runs."""
        return self._process.pid if self._process and self._process.poll() is None else None

    def start(self) -> str:
        """Spawn the server and wait until it answers `ping`; returns its URI."""
        if self.pid is not None:
            return self.uri
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-c",
            _LAUNCH,
            "--host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-file",
            str(self.data_dir / "nx-27017.log"),
            "--pid-file",
            str(self.data_dir / "nx-27017.pid"),
        ]
        with (self.data_dir / "nx-27017.out").open("ab") as output:
            self._process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_until_ready()
        self.pid_file.write_text(f"{self._process.pid}\n", encoding="utf-8")
        log.info("embedded MongoDB (nx-27017) on port %s with data in %s", self.port, self.data_dir)
        return self.uri

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        client: MongoClient[dict[str, object]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
        )
        try:
            while True:
                process = self._process
                if process is None or process.poll() is not None:
                    code = process.returncode if process else None
                    raise RuntimeError(
                        f"nx-27017 exited with code {code} on start; "
                        f"see {self.data_dir / 'nx-27017.out'}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(
                            f"nx-27017 did not answer ping on port {self.port} "
                            f"within {self.startup_timeout_s} s"
                        ) from None
                    time.sleep(0.1)
        finally:
            client.close()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        process = self._process
        self.pid_file.unlink(missing_ok=True)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.info("embedded MongoDB (nx-27017) stopped")


@contextmanager
def embedded_mongo(data_dir: Path, *, port: int | None = None) -> Iterator[str]:
    """Run `nx-27017` on `data_dir` until exit; yield its URI."""
    server = EmbeddedMongo(data_dir, port=port)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()
