"""langgraph.json's `http`: custom routes beside the API (winning over API routes but not over
/ok and the docs), the project's CORS rules, and the switches that remove route groups."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.webhook_support import webhook_receiver
from tests.support import make_settings, running_server

CUSTOM_APP = """
from contextlib import asynccontextmanager
from fastapi import FastAPI

started = []

@asynccontextmanager
async def lifespan(app):
    started.append(True)
    yield

app = FastAPI(lifespan=lifespan)

@app.get("/hello")
async def hello():
    return {"hello": "world", "lifespan_ran": bool(started)}

@app.get("/ok")
async def not_ok():
    return {"ok": "shadowed"}

@app.post("/assistants/count")
async def count():
    return 42
"""


def write_project(folder: Path, http: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "custom.py").write_text(CUSTOM_APP, encoding="utf-8")
    config = {"graphs": {"chat": "graphs.chat:graph"}, "http": http}
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def custom(database_url: str, data_dir: Path) -> Iterator[httpx.Client]:
    """A server with custom routes, its own CORS rules, and no /threads or /store routes."""
    project = write_project(
        data_dir / "custom-project",
        {
            "app": "./custom.py:app",
            "cors": {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"]},
            "disable_threads": True,
            "disable_store": True,
            "disable_webhooks": True,
        },
    )
    settings = make_settings(
        database_url,
        data_dir / "custom",
        migrate_on_start=False,
        langgraph_config=project,
        run_workers=1,  # runs one after the other: a run's webhook goes before the next starts
        webhook_allowed_hosts=["127.0.0.1"],
    )
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def bare(database_url: str, data_dir: Path) -> Iterator[httpx.Client]:
    """A server without meta routes, assistants or runs, nor Private Network Access."""
    project = write_project(
        data_dir / "bare-project",
        {
            "disable_meta": True,
            "disable_assistants": True,
            "disable_runs": True,
            "disable_mcp": True,
            "disable_a2a": True,
            "disable_ui": True,
        },
    )
    settings = make_settings(
        database_url,
        data_dir / "bare",
        migrate_on_start=False,
        langgraph_config=project,
        allow_private_network=False,
    )
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_custom_routes_are_served_beside_the_api_with_their_lifespan(
    custom: httpx.Client,
) -> None:
    assert custom.get("/hello").json() == {"hello": "world", "lifespan_ran": True}
    assert custom.post("/assistants/search", json={}).status_code == 200  # the API is there


def test_a_custom_route_wins_over_an_api_route_but_not_over_ok(custom: httpx.Client) -> None:
    assert custom.post("/assistants/count", json={}).json() == 42
    assert custom.get("/ok").json() == {"ok": True}
    assert custom.put("/hello").status_code == 405  # the path is the custom app's


def test_the_projects_cors_rules_replace_the_default_ones(custom: httpx.Client) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = custom.options("/hello", headers={"Origin": "https://app.example", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    studio = custom.options(
        "/hello", headers={"Origin": "https://smith.langchain.com", **preflight}
    )
    assert "access-control-allow-origin" not in studio.headers


def test_private_network_access_follows_the_cors_rules_and_the_setting(
    custom: httpx.Client, bare: httpx.Client
) -> None:
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Private-Network": "true",
    }
    allowed = custom.options("/hello", headers={"Origin": "https://app.example", **asked})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-private-network"] == "true"
    studio = custom.options("/hello", headers={"Origin": "https://smith.langchain.com", **asked})
    assert studio.status_code == 400  # the project's CORS rules leave Studio out
    assert "access-control-allow-private-network" not in studio.headers
    # ALLOW_PRIVATE_NETWORK=false: Starlette's refusal, naming what it refused.
    off = bare.options(
        "/threads/search", headers={"Origin": "https://smith.langchain.com", **asked}
    )
    assert off.status_code == 400
    assert off.json()["field"] == "access-control-request-private-network"
    assert "ALLOW_PRIVATE_NETWORK" in off.json()["detail"]
    assert "access-control-allow-private-network" not in off.headers


def test_disabled_route_groups_are_gone_and_the_rest_stay(
    custom: httpx.Client, bare: httpx.Client
) -> None:
    assert custom.post("/threads/search", json={}).status_code == 404
    assert custom.post("/store/items/search", json={}).status_code == 404
    assert custom.post("/runs/crons/search", json={}).status_code == 200
    assert bare.post("/assistants/search", json={}).status_code == 404
    assert bare.post("/runs/crons/search", json={}).status_code == 404
    assert bare.post("/threads/search", json={}).status_code == 200
    assert bare.post("/mcp", json={}).status_code == 404
    assert bare.post("/a2a/chat", json={}).status_code == 404
    assert custom.post("/a2a/chat", json={}).status_code != 404  # (an empty JSON-RPC call)
    assert bare.get("/users").status_code == 200  # the chat API is not a route group of theirs


def test_disable_ui_removes_the_web_page_and_its_files(
    custom: httpx.Client, bare: httpx.Client
) -> None:
    for path in ("/", "/web", "/web/app.js", "/web/app.css", "/web/favicon.svg"):
        assert bare.get(path).status_code == 404, path
    page = custom.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert custom.get("/web/app.js").status_code == 200
    assert bare.get("/users").status_code == 200  # the API the page used stays


def test_disable_meta_removes_docs_and_info_but_keeps_ok(
    custom: httpx.Client, bare: httpx.Client
) -> None:
    for path in ("/openapi.json", "/docs", "/info"):
        assert bare.get(path).status_code == 404, path
    assert bare.get("/ok").json() == {"ok": True}
    flags = custom.get("/info").json()["flags"]
    assert flags["assistants"] is True
    assert custom.get("/openapi.json").status_code == 200


def test_with_webhooks_disabled_runs_still_run_and_send_none(custom: httpx.Client) -> None:
    body = {
        "assistant_id": "chat",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "context": {"tools": [], "memory_policy": "off"},
    }
    with webhook_receiver() as receiver:
        hooked = custom.post("/runs/wait", json={**body, "webhook": receiver.url})
        assert hooked.status_code == 200
        assert hooked.json()["answer"]
        # One worker: the first run's webhook would have been sent before this run started.
        assert custom.post("/runs/wait", json=body).status_code == 200
        assert receiver.bodies == []
