"""Skip the app's top-level routes that cannot match a request's path, by its first segment.

Starlette (and FastAPI's router) try every top-level route in order until one matches: FastAPI
0.16x keeps each included router as one route that scans its own routes, so a request for
`/threads/{id}/runs/wait` first walked every route of the chat API (~40 regex matches and
scope bookkeeping: ~60 µs a request; ~110 µs for `POST /threads`). Each top-level route here
answers "no match" at once for a path whose first segment none of its paths can start with;
any other request is matched as before, so the order of the routes, partial matches (405),
slash redirects and the 404 are unchanged. A route whose paths are not all known (a mount, a
parameter in the first segment, a route type not listed here) is always asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

Matcher = Callable[[Scope], tuple[Match, Scope]]


def first_segments(paths: Iterable[str]) -> frozenset[str] | None:
    """The literal first segments of route `paths` (`/threads/{id}` → `threads`); None when
    one of them has a parameter there (it could start any path)."""
    heads = set()
    for path in paths:
        head = path[1:].split("/", 1)[0] if path.startswith("/") else None
        if head is None or "{" in head:
            return None
        heads.add(head)
    return frozenset(heads)


def route_paths(route: BaseRoute) -> list[str] | None:
    """The paths `route` may match (None: not known)."""
    if type(route) in (Route, APIRoute):
        return [route.path]  # type: ignore[attr-defined]
    contexts = getattr(route, "effective_route_contexts", None)  # FastAPI's included router
    if contexts is None:
        return None
    paths = []
    for context in contexts():
        if type(getattr(context, "original_route", None)) is not APIRoute:
            return None
        paths.append(context.path)
    return paths


def _routers(route: BaseRoute) -> list[Any] | None:
    """The routers whose routes make up `route`'s paths: an included router's own and those
    included in it ([] for a single route; None when one has no change hook to watch)."""
    top = getattr(route, "original_router", None)
    if top is None:
        return []
    routers, todo = [], [top]
    while todo:
        router = todo.pop()
        if not callable(getattr(router, "_mark_routes_changed", None)):
            return None
        routers.append(router)
        todo.extend(r.original_router for r in router.routes if hasattr(r, "original_router"))
    return routers


def _heads(route: BaseRoute, matches: Matcher) -> frozenset[str] | None:
    """The first segments `route` can match, checked against its `matches` (None: any)."""
    paths = route_paths(route)
    heads = first_segments(paths) if paths else None
    if heads is None or not _answers_for(matches, paths or []):
        return None
    return heads


def _starts(heads: frozenset[str] | None) -> re.Pattern[str]:
    """`/<head>` then `/` or the end: the path's first segment is one of `heads` (any path
    when None)."""
    if heads is None:
        return _ANY
    return re.compile(f"/(?:{'|'.join(re.escape(h) for h in sorted(heads))})(?:/|$)")


_ANY = re.compile("")
_STALE: Any = object()


def _guarded(route: BaseRoute, matches: Matcher, heads: frozenset[str]) -> Matcher:
    """`matches`, answering "no match" at once for a path outside `heads`. FastAPI marks a
    router's routes changed when one is added (and reads them again at the next request):
    the guard hears it from each router it reads, and reads the route's paths again too
    before the next request is answered, at no cost to requests until then."""
    no_match: tuple[Match, Scope] = (Match.NONE, {})
    starts: Any = _starts(heads)
    watched: set[int] = set()

    def stale() -> None:
        nonlocal starts
        starts = _STALE

    def watch() -> bool:
        routers = _routers(route)
        for router in routers or ():
            if id(router) not in watched:
                watched.add(id(router))
                changed = router._mark_routes_changed

                def marked(changed: Callable[[], None] = changed) -> None:
                    changed()
                    stale()

                router._mark_routes_changed = marked
        return routers is not None

    watch()

    def guarded(scope: Scope) -> tuple[Match, Scope]:
        nonlocal starts
        if starts is _STALE:
            starts = _starts(_heads(route, matches)) if watch() else None
        http = scope["type"] == "http" and not scope.get("root_path")
        if http and starts.match(scope["path"]) is None:
            return no_match
        return matches(scope)

    return guarded


def _answers_for(matches: Matcher, paths: list[str]) -> bool:
    """Whether a route's `matches` matches (fully or by path only) a request for each of
    `paths`, its parameters filled in: the paths read off it describe it. A FastAPI whose
    internals give other paths (say, without their router's prefix) leaves the route
    unguarded, as before, rather than answering "no match" for the paths it serves."""
    for path in paths:
        sample = _PARAMETER.sub("00000000-0000-4000-8000-000000000001", path)
        scope = {"type": "http", "method": "GET", "path": sample, "root_path": "", "headers": []}
        try:
            match, _ = matches(scope)
        except Exception:  # a route that needs more of a request to tell: asked as before
            return False
        if match == Match.NONE:
            return False
    return True


_PARAMETER = re.compile(r"\{[^}]*\}")


def index_routes(app: FastAPI) -> int:
    """Guard each top-level route of `app` whose paths are known; call it once every route is
    in. A top-level route added later is asked for every request, as before; a route added
    later to an included router is seen by that router's guard. How many are guarded."""
    guarded = 0
    for route in app.router.routes:
        heads = _heads(route, route.matches) if _routers(route) is not None else None
        if heads is None:
            continue
        instance: Any = route
        try:
            instance.matches = _guarded(route, route.matches, heads)
        except AttributeError:  # a route type that takes no attributes: asked as before
            continue
        guarded += 1
    return guarded
