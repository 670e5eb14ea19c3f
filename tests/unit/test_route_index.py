"""The app's routes skipped by the first segment of a request's path (server/route_index.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute, Match, Mount

from server.app import create_app
from server.route_index import first_segments, index_routes, route_paths
from tests.support import make_settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ODD_PATHS = ("/", "", "//", "/threads/", "/threadsx", "/nope", "/web/", "/runs//wait", "/ok/")


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def _chosen(routes: list[BaseRoute], scope: dict[str, Any], *, indexed: bool) -> tuple[int, Match]:
    """The route the router takes for `scope` (the first full match, else the first partial),
    asking each route through the index or past it (its class's own `matches`)."""
    partial: int | None = None
    for i, route in enumerate(routes):
        matches = route.matches if indexed else type(route).matches.__get__(route)
        match, _ = matches(dict(scope))
        if match == Match.FULL:
            return i, match
        if match == Match.PARTIAL and partial is None:
            partial = i
    return (partial, Match.PARTIAL) if partial is not None else (-1, Match.NONE)


def _filled(template: str) -> str:
    return re.sub(r"\{[^}:]+(:path)?\}", "00000000-0000-4000-8000-000000000001", template)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # Built, not started: no connection is opened.
    settings = make_settings("postgresql://nobody@127.0.0.1:1/none", tmp_path_factory.mktemp("d"))
    return create_app(settings)


def test_every_route_of_the_app_is_chosen_as_without_the_index(app: FastAPI) -> None:
    routes = list(app.router.routes)
    paths = {p for route in routes for p in route_paths(route) or ()}
    assert "/threads/{thread_id}/runs/wait" in paths
    assert "/chat" in paths
    candidates = {_filled(p) for p in paths} | {p + "/" for p in paths} | set(ODD_PATHS)
    for path in sorted(candidates):
        for method in METHODS:
            scope = _scope(method, _filled(path))
            assert _chosen(routes, scope, indexed=True) == _chosen(routes, scope, indexed=False), (
                method,
                path,
            )


def test_a_request_asks_only_the_routes_whose_paths_can_start_with_its_first_segment(
    app: FastAPI,
) -> None:
    asked: list[str] = []
    for route in app.router.routes:
        heads = first_segments(route_paths(route) or ["/{any}"])
        original = type(route).matches.__get__(route)

        def counted(scope: Any, original: Any = original, heads: Any = heads) -> Any:
            asked.append(",".join(sorted(heads or ["*"])))
            return original(scope)

        object.__setattr__(route, "matches", counted)
    try:
        index_routes(app)
        asked.clear()  # its own check of each route's paths
        _chosen(
            list(app.router.routes),
            _scope("POST", _filled("/threads/{id}/runs/wait")),
            indexed=True,
        )
    finally:
        for route in app.router.routes:
            object.__delattr__(route, "matches")
        index_routes(app)
    assert asked
    assert all("threads" in heads.split(",") or heads == "*" for heads in asked), asked


def test_routes_with_a_parameter_or_a_mount_first_are_always_asked() -> None:
    app = FastAPI()
    any_first = APIRouter()

    @any_first.get("/{name}/x")
    async def anything(name: str) -> None: ...

    app.include_router(any_first)
    app.router.routes.append(Mount("/files", app=FastAPI()))
    assert route_paths(app.router.routes[-1]) is None
    assert first_segments(["/{name}/x"]) is None
    assert first_segments(["/threads/{id}", "/runs"]) == frozenset({"threads", "runs"})
    index_routes(app)
    guarded = ["matches" in vars(route) for route in app.router.routes]
    assert guarded[-2:] == [False, False]  # the `/{name}/x` router and the mount
    assert any(guarded)  # FastAPI's docs routes


def test_a_route_added_after_the_index_is_asked_as_before() -> None:
    app = FastAPI()
    first = APIRouter()

    @first.get("/a")
    async def a() -> None: ...

    app.include_router(first)
    index_routes(app)
    later = APIRouter()

    @later.get("/b")
    async def b() -> None: ...

    app.include_router(later)
    assert _chosen(list(app.router.routes), _scope("GET", "/b"), indexed=True) == (
        len(app.router.routes) - 1,
        Match.FULL,
    )


def test_a_route_whose_paths_read_off_it_do_not_describe_it_is_not_guarded() -> None:
    """Should FastAPI's internals give an included router's paths otherwise (here: without
    its prefix), the route is asked for every request as before, not answered "no match"
    for the paths it serves."""
    router = APIRouter()

    @router.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    app = FastAPI()
    app.include_router(router, prefix="/shop")
    (included,) = [r for r in app.router.routes if route_paths(r) == ["/shop/items/{item_id}"]]
    contexts = included.effective_route_contexts  # type: ignore[attr-defined]

    class Unprefixed:
        def __init__(self, context: Any) -> None:
            self.original_route = context.original_route
            self.path = context.path.removeprefix("/shop")

    object.__setattr__(
        included, "effective_route_contexts", lambda: [Unprefixed(c) for c in contexts()]
    )
    assert route_paths(included) == ["/items/{item_id}"]
    index_routes(app)
    assert "matches" not in vars(included)  # asked as before
    match, _ = included.matches(_scope("GET", "/shop/items/1"))
    assert match == Match.FULL


def test_a_route_added_later_to_an_included_router_is_matched() -> None:
    """FastAPI keeps an included router as one route that reads its router's routes at each
    request: one added there after the index (a new first segment, in the router or in one
    included in it) is matched, not answered "no match" by the first segments read before."""
    app = FastAPI()
    outer, inner = APIRouter(), APIRouter()

    @outer.get("/a")
    async def a() -> None: ...

    @inner.get("/b")
    async def b() -> None: ...

    outer.include_router(inner)
    app.include_router(outer)
    assert index_routes(app) >= 1
    (included,) = [r for r in app.router.routes if route_paths(r) == ["/a", "/b"]]
    assert "matches" in vars(included)
    assert included.matches(_scope("GET", "/c"))[0] == Match.NONE

    @outer.get("/c")
    async def c() -> None: ...

    @inner.get("/d/{x}")
    async def d(x: str) -> None: ...

    for path in ("/a", "/b", "/c", "/d/1"):
        assert _chosen(list(app.router.routes), _scope("GET", path), indexed=True) == (
            app.router.routes.index(included),
            Match.FULL,
        ), path
    assert included.matches(_scope("GET", "/e"))[0] == Match.NONE  # guarded still
