"""Body-size limits, health reporting, and a database outage answered with 503, never 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import event
from sqlalchemy.engine import make_url

from server.app import create_app
from stores.sql.database import is_cut
from tests.integration.helpers import unique_email
from tests.support import make_settings, running_server, scratch_database


def test_declared_body_over_the_limit_is_413(api: httpx.Client) -> None:
    payload = b'{"email": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    response = api.post("/users", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_chunked_body_over_the_limit_is_413(api: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "'
        for _ in range(20):
            yield b"a" * 65536

    response = api.post("/users", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_chunked_body_under_the_limit_is_accepted(api: httpx.Client) -> None:
    body = f'{{"email": "{unique_email()}", "name": "Chunky"}}'.encode()

    def chunks() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    response = api.post("/users", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text


def test_healthz_reports_postgres(api: httpx.Client) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["dependencies"]["postgres"]["status"] == "ok"
    assert body["dependencies"]["postgres"]["kind"] == "external"


def test_database_outage_is_503_not_500_and_recovers(pg_admin_url: str, tmp_path: Path) -> None:
    with scratch_database(pg_admin_url, "outage") as url:
        name = make_url(url).database
        settings = make_settings(url, tmp_path, db_pool_timeout=2)
        with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/healthz").status_code == 200
            with psycopg.connect(pg_admin_url, autocommit=True) as admin:
                # The database goes away under the running server: no new connections, and
                # every open one (the pools', the listeners') is cut.
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                try:
                    health = client.get("/healthz")
                    assert health.status_code == 503
                    assert health.json()["dependencies"]["postgres"]["status"] == "down"
                    listing = client.get("/users")
                    assert listing.status_code == 503
                    assert "database" in listing.json()["detail"]
                    created = client.post("/users", json={"email": unique_email(), "name": "x"})
                    assert created.status_code == 503
                finally:
                    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert client.get("/healthz").status_code == 200
            assert (
                client.post("/users", json={"email": unique_email(), "name": "back"}).status_code
                == 201
            )


def test_openapi_documents_every_route(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    for path in (
        "/users",
        "/agents",
        "/conversations",
        "/conversations/{conversation_id}/messages",
        "/healthz",
    ):
        assert path in spec["paths"], path
    assert api.get("/docs").status_code == 200


def test_a_checkout_that_finds_every_connection_cut_is_503_not_500(
    database_url: str, tmp_path: Path
) -> None:
    """While every connection is being cut (each new one too), SQLAlchemy's checkout gives up
    with its own "This connection is closed": an outage, answered 503 as the others are."""
    settings = make_settings(database_url, tmp_path, migrate_on_start=False)
    app = create_app(settings)
    with (
        running_server(settings, app=app) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        assert client.get("/users").status_code == 200
        pool = app.state.resources.database.engine.sync_engine.pool

        def cut_at_once(dbapi_connection: Any, record: Any) -> None:
            new = dbapi_connection.driver_connection
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (new.info.backend_pid,))
            deadline = time.monotonic() + 5
            while not is_cut(new):
                assert time.monotonic() < deadline
                time.sleep(0.01)

        event.listen(pool, "connect", cut_at_once)
        try:
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            time.sleep(0.5)  # the pooled connections get their FATAL
            listing = client.get("/users")
            assert listing.status_code == 503, listing.text
            assert "database" in listing.json()["detail"]
        finally:
            event.remove(pool, "connect", cut_at_once)
        assert client.get("/users").status_code == 200
