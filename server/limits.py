"""ASGI middleware that refuses request bodies over the configured size with 413."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.request_context import send_error


class BodyLimitMiddleware:
    """Reject bodies larger than `default_limit` (or a per-path-prefix limit) before parsing.

    A declared `Content-Length` over the limit is refused at once; a chunked body is counted
    as it arrives and refused the moment it passes the limit, so no handler sees part of it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int,
        limit_for_path: Callable[[str], int | None] | None = None,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limit_for_path = limit_for_path

    def _limit(self, path: str) -> int:
        if self.limit_for_path is not None:
            limit = self.limit_for_path(path)
            if limit is not None:
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        if declared is not None:
            # Trust the declared length (the server enforces it) and stream the body through.
            await self.app(scope, receive, send)
            return
        # No declared length: read it all (at most `limit` bytes), then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    await send_error(
        send,
        413,
        f"request body is larger than the limit of {limit} bytes",
        field="body",
        headers={"Connection": "close"},
    )
