"""Fixtures shared by every test: a PostgreSQL server, a database per module, a live server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stores.embedded_postgres import embedded_postgres
from stores.embeddings import default_cache_dir
from tests.support import make_settings, running_server, scratch_database

# Every server and command the tests start shares one ONNX export of the embedding model
# (the first to need it makes it) instead of one per data folder.
os.environ.setdefault("MODELS_DIR", str(default_cache_dir()))


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """TEST_DATABASE_URL when set (CI's PostgreSQL), else an embedded server for the session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="sb-pg-"))
    try:
        with embedded_postgres(folder / "pgdata") as embedded_url:
            yield embedded_url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def database_url(pg_admin_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database of this test module's own, dropped when the module ends."""
    with scratch_database(pg_admin_url, request.module.__name__) as url:
        yield url


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder (qdrant/, mongo/ ...) of this test module's own."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def server_url(database_url: str, data_dir: Path) -> Iterator[str]:
    """A real uvicorn server on a free port, serving this module's database."""
    with running_server(make_settings(database_url, data_dir, migrate_on_start=False)) as url:
        yield url


@pytest.fixture
def api(server_url: str) -> Iterator[httpx.Client]:
    """An HTTP client of the module's server."""
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client
