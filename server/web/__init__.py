"""The chat page for people: static files at `/` and `/web/*`, under a strict CSP."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC: Final[Path] = Path(__file__).parent / "static"
ASSETS: Final[dict[str, str]] = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Only our own files run and load; the page talks to this origin only; no inline script or
# style, no eval, no plugins, no framing, no <base> tricks.
CONTENT_SECURITY_POLICY: Final[str] = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The chat page."""
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


@router.get("/web")
async def web_root() -> RedirectResponse:
    """`/web` is the page too."""
    return RedirectResponse("/")


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    """One of the page's files (a fixed list: nothing else on disk is reachable)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no file {name!r} in the web page")
    return FileResponse(STATIC / name, media_type=media_type, headers=SECURITY_HEADERS)


def install_web(app: FastAPI) -> None:
    """Serve the page on `app`."""
    app.include_router(router)
