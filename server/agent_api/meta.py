"""Agent Server API meta routes (`/info`, `/ok`) and the text/plain-as-JSON body middleware."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from server.config import Project

router = APIRouter(tags=["meta"])
ok_router = APIRouter(tags=["meta"])  # kept when langgraph.json's http.disable_meta is set


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@router.get("/info")
async def info(request: Request) -> dict[str, Any]:
    """Server version and the feature flags clients (LangGraph Studio) check."""
    project: Project = request.app.state.project
    return {
        "version": _version("switchboard") or "0.1.0",
        "langgraph_py_version": _version("langgraph"),
        "flags": {
            "assistants": not project.http.disable_assistants,
            "crons": not project.http.disable_runs,
            # No LangSmith tracing here: Studio shows no in-Studio traces for these runs.
            "langsmith": False,
            "langsmith_tracing_replicas": False,
            "langsmith_tracing_session_on_runs": False,
        },
        "host": {
            "kind": "self-hosted",
            "project_id": None,
            "host_revision_id": None,
            "revision_id": None,
            "tenant_id": None,
        },
    }


@ok_router.get("/ok")
async def ok() -> dict[str, bool]:
    """Liveness as langgraph-api answers it."""
    return {"ok": True}


class TextPlainJSONMiddleware:
    """Treat request bodies sent as `Content-Type: text/plain` as JSON (LangGraph Studio does)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            for index, (name, value) in enumerate(headers):
                if name == b"content-type" and value.split(b";", 1)[0].strip().lower() == (
                    b"text/plain"
                ):
                    patched = list(headers)
                    patched[index] = (b"content-type", b"application/json")
                    scope = {**scope, "headers": patched}
                    break
        await self.app(scope, receive, send)
