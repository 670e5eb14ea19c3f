"""The one Qdrant client of a process: a Qdrant server at QDRANT_URL, or local mode on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from qdrant_client import AsyncQdrantClient


@asynccontextmanager
async def open_qdrant(
    *, url: str | None, path: Path, api_key: str | None = None
) -> AsyncIterator[AsyncQdrantClient]:
    """Open the Qdrant client: the server at `url`, else local mode storing under `path`.

    Local mode locks its folder: one process holds it, so the server shares this one client
    between the knowledge base and memory vectors.
    """
    if url:
        client = AsyncQdrantClient(url=url, api_key=api_key)
    else:
        path.mkdir(parents=True, exist_ok=True)
        client = AsyncQdrantClient(path=str(path))
    try:
        yield client
    finally:
        await client.close()
