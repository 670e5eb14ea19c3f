"""Body-size limits, health reporting, and a database outage answered with 503, never 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.integration.helpers import unique_email
from tests.support import free_port, make_settings, running_server


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


def test_database_outage_is_503_not_500(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=1"
    settings = make_settings(dead, tmp_path, migrate_on_start=False, db_pool_timeout=2)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["dependencies"]["postgres"]["status"] == "down"
        listing = client.get("/users")
        assert listing.status_code == 503
        assert "database" in listing.json()["detail"]
        created = client.post("/users", json={"email": unique_email(), "name": "x"})
        assert created.status_code == 503


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
