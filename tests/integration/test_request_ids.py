"""Request ids over real HTTP: every answer carries an `X-Request-ID` (the client's own when it
is sane, else a new one), every error body names it, and an unhandled exception answers a
generic 500 with it while its text goes only to the log."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from server.app import create_app
from tests.integration.auth_support import BUILTIN_PROJECT
from tests.support import make_settings, running_server

NOBODY = "00000000-0000-0000-0000-000000000000"
GENERATED = re.compile(r"[0-9a-f]{32}")
STUDIO = "https://smith.langchain.com"
SECRET_TEXT = "pg://admin:hunter2@db.internal failed at step 7"


def _same_id(response: httpx.Response) -> str:
    """The request id of an error answer: in its header and in its JSON body alike."""
    request_id = response.headers["x-request-id"]
    assert response.json()["request_id"] == request_id, response.text
    return request_id


@pytest.fixture(scope="module")
def boom_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server with one extra route that fails with an unexpected exception."""
    settings = make_settings(database_url, tmp_path_factory.mktemp("boom"), migrate_on_start=False)
    app = create_app(settings)
    extra = APIRouter()

    @extra.get("/test-only/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET_TEXT)

    app.include_router(extra)
    with running_server(settings, app=app) as url:
        yield url


def test_every_answer_carries_a_request_id_and_each_is_new(api: httpx.Client) -> None:
    ids = set()
    for response in (api.get("/ok"), api.get("/ok"), api.post("/threads", json={})):
        assert response.status_code == 200
        assert GENERATED.fullmatch(response.headers["x-request-id"])
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 3


def test_a_sane_client_request_id_is_kept_and_any_other_replaced(api: httpx.Client) -> None:
    for sane in ("abc-123", "0b3f6c1e-7d2a-4a55-9c3e-1f0e2d3c4b5a", "trace:1.2_3", "x" * 128):
        assert api.get("/ok", headers={"X-Request-ID": sane}).headers["x-request-id"] == sane
    for bad in ("x" * 129, "two words", "<script>", "a\tb", "naïve", ""):
        answered = api.get("/ok", headers={b"X-Request-ID": bad.encode()}).headers["x-request-id"]
        assert GENERATED.fullmatch(answered), bad
    missing = api.get(f"/threads/{NOBODY}", headers={"X-Request-ID": "t-1"})
    assert missing.status_code == 404
    assert _same_id(missing) == "t-1"


def test_every_kind_of_client_error_names_the_request_id(api: httpx.Client) -> None:
    unknown_route = api.get("/no/such/route")
    assert unknown_route.status_code == 404
    _same_id(unknown_route)
    wrong_method = api.put("/ok")
    assert wrong_method.status_code == 405
    _same_id(wrong_method)
    not_found = api.get(f"/threads/{NOBODY}")
    assert not_found.status_code == 404
    assert "thread" in not_found.json()["detail"].lower()
    _same_id(not_found)
    invalid = api.post("/threads/search", json={"limit": "many"})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"][-1] == "limit"  # says what was wrong
    _same_id(invalid)
    bad_json = api.post(
        "/threads", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 422
    _same_id(bad_json)
    host = api.get("/ok", headers={"Host": "evil.example"})
    assert host.status_code == 400
    _same_id(host)
    origin = api.post("/threads", json={}, headers={"Origin": "https://evil.example"})
    assert origin.status_code == 403
    _same_id(origin)
    preflight = {"Access-Control-Request-Method": "POST"}
    refused = api.options("/threads", headers={**preflight, "Origin": "https://evil.example"})
    assert refused.status_code == 400
    assert refused.json()["field"] == "origin"
    assert "Disallowed CORS origin" in refused.json()["detail"]
    _same_id(refused)
    studio = api.options("/threads", headers={**preflight, "Origin": STUDIO})
    assert studio.status_code == 200
    assert studio.headers["access-control-allow-origin"] == STUDIO
    assert "x-request-id" in studio.headers
    too_large = api.post("/threads", content=b"x" * (3 * 1024 * 1024))
    assert too_large.status_code == 413
    _same_id(too_large)


def test_an_unhandled_exception_is_a_generic_500_and_its_text_only_logged(
    boom_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), httpx.Client(base_url=boom_url) as http:
        failed = http.get("/test-only/boom", headers={"X-Request-ID": "boom-1"})
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/json"
        assert _same_id(failed) == "boom-1"
        assert "hunter2" not in failed.text
        assert "RuntimeError" not in failed.text
        assert "boom-1" in failed.json()["detail"]
        assert http.get("/ok").status_code == 200  # the server carries on
    logged = [r for r in caplog.records if "boom-1" in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    assert logged[0].exc_info is not None
    assert SECRET_TEXT in str(logged[0].exc_info[1])


def test_an_authentication_failure_names_the_request_id(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=BUILTIN_PROJECT,
        auth="builtin",
    )
    with running_server(settings) as url, httpx.Client(base_url=url) as http:
        refused = http.post("/threads/search", json={}, headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        assert json.loads(refused.text)["detail"]
        _same_id(refused)
