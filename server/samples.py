"""Ingest the bundled sample documents in the background when the knowledge base is empty."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from server.resources import Resources

log = logging.getLogger(__name__)


async def _ingest_samples(resources: Resources) -> None:
    try:
        count = await resources.knowledge.ingest_samples_if_empty()
    except Exception:
        log.exception("could not ingest the sample documents; the server runs without them")
        return
    if count:
        log.info("knowledge base seeded with %d sample documents about Switchboard", count)


@contextlib.asynccontextmanager
async def sample_ingest(resources: Resources) -> AsyncIterator[asyncio.Task[None] | None]:
    """While open, seed an empty knowledge base with the samples, off the startup path.

    Loading the embedding model takes seconds, so the server starts answering at once and the
    samples become searchable a few seconds later. Off when `INGEST_SAMPLES_ON_START=false`.

    Args:
        resources: The process's resources.

    Yields:
        The background task, or `None` when sample ingestion is off.
    """
    if not resources.settings.ingest_samples_on_start:
        yield None
        return
    task = asyncio.create_task(_ingest_samples(resources), name="ingest-samples")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
