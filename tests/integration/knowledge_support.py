"""Knowledge-base test helpers: one MiniLM model per process, PDFs, an open KnowledgeBase."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from qdrant_client import models

from stores.embeddings import MiniLMEmbeddings, SharedEmbeddings
from stores.knowledge import COLLECTION_PREFIX, KnowledgeBase, open_knowledge
from stores.qdrant import open_qdrant, qdrant_call
from stores.sql.database import open_database


@functools.cache
def shared_embedder() -> SharedEmbeddings:
    """The real all-MiniLM-L6-v2 model as the server runs it, loaded once per test process."""
    model = SharedEmbeddings(MiniLMEmbeddings())
    model.warm_up()
    return model


def make_pdf(pages: Sequence[str], *, title: str | None = None) -> bytes:
    """A well-formed PDF with one page per string, each drawn as lines of Helvetica text."""
    objects: list[bytes] = [b"", b""]  # 1: catalog, 2: page tree; filled in below
    font_id = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    page_ids: list[int] = []
    for text in pages:
        lines = text.split("\n")
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 780 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font_id, content_id)
        )
        page_ids.append(len(objects))
    kids = " ".join(f"{i} 0 R" for i in page_ids).encode()
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    info_id = None
    if title is not None:
        objects.append(b"<< /Title (%s) >>" % title.encode("latin-1"))
        info_id = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = b"trailer\n<< /Size %d /Root 1 0 R" % (len(objects) + 1)
    if info_id is not None:
        trailer += b" /Info %d 0 R" % info_id
    out += trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def unique_collection(label: str) -> str:
    """A collection name no other test uses."""
    return f"{label}_{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def open_kb(
    database_url: str,
    qdrant_path: Path,
    *,
    chunk_size: int = 128,
    max_bytes: int = 1024 * 1024,
) -> AsyncIterator[KnowledgeBase]:
    """A knowledge base on a real database and a local-mode Qdrant at `qdrant_path`."""
    async with (
        open_database(database_url, pool_size=2, max_overflow=2) as database,
        open_qdrant(url=None, path=qdrant_path) as client,
    ):
        yield await open_knowledge(
            client=client,
            embedder=shared_embedder(),
            database=database,
            dimension=shared_embedder().dimension,
            chunk_size=chunk_size,
            max_bytes=max_bytes,
        )


async def all_points(kb: KnowledgeBase, collection: str) -> list[models.Record]:
    """Every point of a knowledge collection, with payloads (empty when it does not exist)."""
    name = COLLECTION_PREFIX + collection
    if not await qdrant_call(kb.client, lambda c: c.collection_exists(name)):
        return []
    records, _ = await qdrant_call(
        kb.client, lambda c: c.scroll(name, limit=10_000, with_payload=True)
    )
    result: list[models.Record] = records
    return result
