"""Browser safety and authentication at the edge, over real HTTP: the Host header must be an
allowed one (DNS rebinding), a web page of another origin cannot change anything (a text/plain
"JSON" POST or a form is refused unless its origin is CORS-allowed), and LangGraph Studio's
origin gets in without a key on loopback only when the operator says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.auth.middleware import host_allowed, host_name
from tests.integration.auth_support import BUILTIN_PROJECT, CUSTOM_PROJECT, make_keys
from tests.support import make_settings, running_server

STUDIO = "https://smith.langchain.com"
EVIL = "https://evil.example"
PLAIN = {"Content-Type": "text/plain;charset=UTF-8"}


def test_a_text_plain_json_post_is_accepted_only_from_allowed_origins(api: httpx.Client) -> None:
    body = json.dumps({"metadata": {"from": "a page"}})
    foreign = api.post("/threads", content=body, headers={**PLAIN, "Origin": EVIL})
    assert foreign.status_code == 403
    assert foreign.json()["field"] == "origin"
    studio = api.post("/threads", content=body, headers={**PLAIN, "Origin": STUDIO})
    assert studio.status_code == 200, studio.text
    assert studio.headers["access-control-allow-origin"] == STUDIO
    same_site = api.post("/threads", content=body, headers={**PLAIN, "Origin": str(api.base_url)})
    assert same_site.status_code == 200
    no_browser = api.post("/threads", content=body, headers=PLAIN)  # curl, the SDKs
    assert no_browser.status_code == 200
    sandboxed = api.post("/threads", content=body, headers={**PLAIN, "Origin": "null"})
    assert sandboxed.status_code == 403


def test_no_foreign_page_changes_anything_whatever_the_body(api: httpx.Client) -> None:
    form = api.post(
        "/documents",
        files={"file": ("x.txt", b"planted", "text/plain")},
        headers={"Origin": EVIL},
    )
    assert form.status_code == 403
    urlencoded = api.post(
        "/users",
        content="email=eve%40example.com&name=Eve",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": EVIL},
    )
    assert urlencoded.status_code == 403
    deleting = api.delete("/threads/00000000-0000-0000-0000-000000000000", headers={"Origin": EVIL})
    assert deleting.status_code == 403
    reading = api.get("/assistants/chat", headers={"Origin": EVIL})
    assert reading.status_code == 200  # a read: CORS keeps its answer from the page
    assert "access-control-allow-origin" not in reading.headers
    assert all(u["email"] != "eve@example.com" for u in api.get("/users").json()["items"])


def test_the_host_header_must_be_an_allowed_host(api: httpx.Client) -> None:
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:80"):
        rebound = api.get("/assistants/chat", headers={"Host": host})
        assert rebound.status_code == 400, host
        assert rebound.json()["field"] == "host"
    for host in ("localhost", f"127.0.0.1:{api.base_url.port}", "[::1]:8000"):
        assert api.get("/assistants/chat", headers={"Host": host}).status_code == 200, host


def test_host_names_and_patterns() -> None:
    assert host_name("[::1]:8000") == "::1"
    assert host_name("Example.COM:443") == "example.com"
    assert host_name("::1") == "::1"
    assert host_allowed("api.example.com", ["*.example.com"])
    assert not host_allowed("example.com.evil", ["*.example.com"])
    assert host_allowed("anything", ["*"])
    assert host_allowed("::1", ["[::1]"])
    assert not host_allowed("", ["127.0.0.1"])


@pytest.fixture(scope="module")
def studio_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built-in authenticator on loopback, letting Studio's origin in without a key."""
    make_keys(database_url, {"kim@example.com": False})
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("studio"),
        migrate_on_start=False,
        langgraph_config=BUILTIN_PROJECT,
        auth_studio_on_loopback=True,
    )
    with running_server(settings) as url:
        yield url


def test_studio_on_loopback_gets_in_without_a_key_when_allowed(
    studio_url: str, database_url: str, tmp_path: Path
) -> None:
    with httpx.Client(base_url=studio_url) as http:
        studio = http.post("/threads/search", json={}, headers={"Origin": STUDIO})
        assert studio.status_code == 200, studio.text
        # Studio's own LangSmith credentials are not ours: it still gets in as Studio.
        langsmith = http.post(
            "/assistants/search",
            json={},
            headers={"Origin": STUDIO, "X-Auth-Scheme": "langsmith", "X-Api-Key": "lsv2_x"},
        )
        assert langsmith.status_code == 200
        assert http.post("/threads/search", json={}).status_code == 401  # not Studio
        other = http.post("/threads/search", json={}, headers={"Origin": EVIL})
        assert other.status_code == 403  # refused before authentication: a foreign page
        wrong_key = http.post(
            "/threads/search", json={}, headers={"Origin": STUDIO, "Authorization": "Bearer x"}
        )
        assert wrong_key.status_code == 401  # a key sent is a key checked
    settings = make_settings(
        database_url, tmp_path, migrate_on_start=False, langgraph_config=BUILTIN_PROJECT
    )
    with running_server(settings) as url, httpx.Client(base_url=url) as http:
        refused = http.post("/threads/search", json={}, headers={"Origin": STUDIO})
        assert refused.status_code == 401  # the setting is off by default


def test_an_auth_py_sees_studio_as_langgraphs_studio_user(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        migrate_on_start=False,
        langgraph_config=CUSTOM_PROJECT,
        auth_studio_on_loopback=True,
    )
    with running_server(settings) as url, httpx.Client(base_url=url) as http:
        thread = http.post("/threads", json={}, headers={"Origin": STUDIO})
        assert thread.status_code == 200, thread.text
        assert thread.json()["metadata"]["owner"] == "langgraph-studio-user"


def test_disable_studio_auth_keeps_studio_out_without_credentials(
    database_url: str, tmp_path: Path
) -> None:
    project = json.loads(CUSTOM_PROJECT.read_text(encoding="utf-8"))
    project["auth"]["disable_studio_auth"] = True
    project["dependencies"] = [str(CUSTOM_PROJECT.parent)]
    project["graphs"] = {"whoami": f"{CUSTOM_PROJECT.parent / 'whoami.py'}:graph"}
    project["auth"]["path"] = f"{CUSTOM_PROJECT.parent / 'auth.py'}:auth"
    project["http"]["app"] = f"{CUSTOM_PROJECT.parent / 'routes.py'}:app"
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps(project), encoding="utf-8")
    settings = make_settings(
        database_url,
        tmp_path / "data",
        migrate_on_start=False,
        langgraph_config=config,
        auth_studio_on_loopback=True,  # asked for, but the project says no
    )
    with running_server(settings) as url, httpx.Client(base_url=url) as http:
        studio = http.post("/threads", json={}, headers={"Origin": STUDIO})
        assert studio.status_code == 401
        assert studio.json()["request_id"] == studio.headers["x-request-id"]
        keyed = http.post(
            "/threads",
            json={},
            headers={"Origin": STUDIO, "Authorization": "Bearer user1-token"},
        )
        assert keyed.status_code == 200, keyed.text  # Studio with a key still gets in
        assert keyed.json()["metadata"]["owner"] == "user1"
