"""The knowledge base: documents in PostgreSQL, their chunks' vectors in Qdrant, semantic search."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from importlib import resources as package_files
from pathlib import Path
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from stores.errors import NotFoundError, StoreError, UnavailableError
from stores.extract import DocumentTooLargeError, extract
from stores.qdrant import is_local, qdrant_call
from stores.sql.database import Database
from stores.sql.models import Document
from stores.sql.repositories import Page

log = logging.getLogger(__name__)

COLLECTION_PREFIX = "kb_"
COLLECTION_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")
# Point ids are uuid5(this namespace, "<document id>:<content hash>:<chunk index>").
POINT_NAMESPACE = uuid.UUID("6f1c3a52-8d4e-4c1b-9a57-3f2b1e0d9c11")
SAMPLE_SOURCE_PREFIX = "switchboard-sample:"
INDEXED_FIELDS = ("document_id", "collection", "source", "doc_type", "content_hash")
UPSERT_BATCH = 256
# Extra hits fetched per collection, so dropping stale ones still leaves k.
OVERFETCH = 8

IngestStatus = Literal["created", "updated", "unchanged"]


class DimensionMismatchError(StoreError):
    """A Qdrant collection holds vectors of another size than the embedder makes."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One chunk that matched a query, with where it came from and how well it matched."""

    document_id: uuid.UUID
    chunk_index: int
    collection: str
    source: str
    doc_type: str
    title: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ingesting one file did: the document row and whether it changed."""

    document: Document
    status: IngestStatus


def check_collection_name(name: str) -> str:
    """Return `name` if it can name a knowledge base (letters, digits, `_`, `-`; 1-100 chars).

    Raises:
        ValueError: Naming the bad name.
    """
    if not COLLECTION_PATTERN.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-100 letters, digits, '_' or '-', "
            "starting with a letter or '_'"
        )
    return name


def document_uuid(collection: str, source: str) -> uuid.UUID:
    """The id a new document gets, derived from (collection, source).

    A retried upload reuses it, so vectors that a failed attempt could not take back stay tied
    to the document and go with its next change or its deletion.
    """
    return uuid.uuid5(POINT_NAMESPACE, f"document:{collection}\n{source}")


def point_id(document_id: uuid.UUID, content_hash: str, chunk_index: int) -> str:
    """The deterministic Qdrant point id of one chunk of one version of a document."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{content_hash}:{chunk_index}"))


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


class KnowledgeBase:
    """Ingest files into named collections and search them.

    Each collection `name` is the Qdrant collection `kb_<name>`; every point's payload holds the
    seed's fields (`source`, `doc_type`, `chunk`, `conversation_context`) plus `document_id`,
    `chunk_index`, `collection`, `title` and `content_hash`.
    """

    def __init__(
        self,
        *,
        client: AsyncQdrantClient,
        embedder: Embeddings,
        database: Database,
        dimension: int,
        chunk_size: int = 1000,
        chunk_overlap: int = 150,
        default_collection: str = "knowledge",
        max_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.database = database
        self.dimension = dimension
        self.default_collection = check_collection_name(default_collection)
        self.max_bytes = max_bytes
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=False
        )
        self._known: set[str] = set()
        self._dimensions_checked = False
        self._create_lock = asyncio.Lock()

    # -- Qdrant plumbing -------------------------------------------------------------------

    async def _q(self, call: Callable[[AsyncQdrantClient], Coroutine[Any, Any, Any]]) -> Any:
        try:
            return await qdrant_call(self.client, call)
        except (UnexpectedResponse, ResponseHandlingException, OSError) as error:
            raise UnavailableError(f"the vector store failed: {error}") from error
        except Exception as error:
            # qdrant-client raises transport errors (httpx, grpc) of many kinds.
            if type(error).__module__.split(".")[0] in {"httpx", "httpcore", "grpc"}:
                raise UnavailableError(f"the vector store is unavailable: {error}") from error
            raise

    async def _collections(self) -> list[str]:
        """The names (without prefix) of the knowledge collections that exist."""
        response = await self._q(lambda c: c.get_collections())
        names = [c.name for c in response.collections]
        return sorted(n[len(COLLECTION_PREFIX) :] for n in names if n.startswith(COLLECTION_PREFIX))

    async def _vector_size(self, qdrant_name: str) -> int | None:
        info = await self._q(lambda c: c.get_collection(qdrant_name))
        vectors = info.config.params.vectors
        if isinstance(vectors, models.VectorParams):
            return int(vectors.size)
        if isinstance(vectors, dict) and "" in vectors:
            return int(vectors[""].size)
        return None

    async def check_dimensions(self) -> None:
        """Verify that every knowledge collection's vectors have the embedder's dimension.

        Raises:
            DimensionMismatchError: Naming the collection and both sizes.
        """
        for name in await self._collections():
            qdrant_name = COLLECTION_PREFIX + name
            size = await self._vector_size(qdrant_name)
            if size is not None and size != self.dimension:
                raise DimensionMismatchError(
                    f"Qdrant collection {qdrant_name!r} holds {size}-d vectors but the embedder "
                    f"makes {self.dimension}-d ones; use the embedder it was built with, or "
                    "delete the collection and ingest again"
                )
            self._known.add(name)
        self._dimensions_checked = True

    async def _ensure_checked(self) -> None:
        """Run the dimension check now if Qdrant could not answer it at startup."""
        if not self._dimensions_checked:
            await self.check_dimensions()

    async def _ensure_collection(self, name: str) -> None:
        if name in self._known:
            return
        async with self._create_lock:
            qdrant_name = COLLECTION_PREFIX + name
            if not await self._q(lambda c: c.collection_exists(qdrant_name)):
                await self._q(
                    lambda c: c.create_collection(
                        qdrant_name,
                        vectors_config=models.VectorParams(
                            size=self.dimension, distance=models.Distance.COSINE
                        ),
                    )
                )
                if not is_local(self.client):  # local mode scans; a server wants indexes
                    for field in INDEXED_FIELDS:
                        await self._q(
                            functools.partial(
                                AsyncQdrantClient.create_payload_index,
                                collection_name=qdrant_name,
                                field_name=field,
                                field_schema=models.PayloadSchemaType.KEYWORD,
                            )
                        )
            else:
                size = await self._vector_size(qdrant_name)
                if size is not None and size != self.dimension:
                    raise DimensionMismatchError(
                        f"Qdrant collection {qdrant_name!r} holds {size}-d vectors but the "
                        f"embedder makes {self.dimension}-d ones"
                    )
            self._known.add(name)

    async def _delete_points(self, collection: str, conditions: models.Filter) -> None:
        qdrant_name = COLLECTION_PREFIX + collection
        if not await self._q(lambda c: c.collection_exists(qdrant_name)):
            return
        await self._q(
            lambda c: c.delete(
                qdrant_name, points_selector=models.FilterSelector(filter=conditions), wait=True
            )
        )

    async def ping(self) -> None:
        """List collections; raises when the vector store cannot answer."""
        await self._q(lambda c: c.get_collections())

    # -- ingestion --------------------------------------------------------------------------

    def _prepare(
        self, data: bytes, filename: str, content_type: str | None
    ) -> tuple[str, str, str, list[str]]:
        extracted = extract(data, filename=filename, content_type=content_type)
        chunks = [c for c in self._splitter.split_text(extracted.text) if c.strip()]
        return extracted.doc_type, extracted.title, extracted.text, chunks

    async def _current(self, collection: str, source: str) -> Document | None:
        async with self.database.sessions() as session:
            found: Document | None = await session.scalar(
                select(Document).where(Document.collection == collection, Document.source == source)
            )
            return found

    async def ingest_bytes(
        self,
        data: bytes,
        *,
        filename: str,
        collection: str | None = None,
        source: str | None = None,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> IngestResult:
        """Ingest one file: extract, split, embed, store; idempotent by content hash.

        The same bytes under the same (collection, source) change nothing; other bytes replace
        the document's chunks. Writes go: new vectors (under ids of the new content hash) →
        the PostgreSQL row (commit) → deletion of the previous version's vectors. A failure
        before the commit deletes the new vectors, so nothing is half-stored.

        Args:
            data: The file's bytes.
            filename: Its name; the extension decides the type (.txt, .md, .html, .pdf).
            collection: Knowledge base to put it in (default: the configured one).
            source: Identity of the document within the collection (default: `filename`).
            content_type: Declared media type, used when `filename` has no extension.
            metadata: Extra JSON stored on the document row.

        Returns:
            The document row and `created`, `updated` or `unchanged`.

        Raises:
            UnsupportedTypeError: Not a supported type (415).
            UnreadableDocumentError: Empty, corrupt, or no text (422).
            DocumentTooLargeError: Over the size limit (413).
            UnavailableError: The vector store failed (503).
        """
        collection = check_collection_name(collection or self.default_collection)
        source = source or filename
        if len(data) > self.max_bytes:
            raise DocumentTooLargeError(
                f"{filename} is {len(data)} bytes, over the limit of {self.max_bytes} bytes"
            )
        content_hash = hashlib.sha256(data).hexdigest()
        current = await self._current(collection, source)
        if current is not None and current.content_hash == content_hash:
            return IngestResult(current, "unchanged")
        doc_type, title, _, chunks = await asyncio.to_thread(
            self._prepare, data, filename, content_type
        )
        await self._ensure_checked()
        vectors = await self.embedder.aembed_documents(chunks)
        await self._ensure_collection(collection)
        document_id: uuid.UUID | None = None
        previous_hash: str | None = None
        try:
            async with self.database.sessions.begin() as session:
                # Serialise writers of one (collection, source); the lock ends with the commit.
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"kb:{collection}:{source}"},
                )
                row = await session.scalar(
                    select(Document).where(
                        Document.collection == collection, Document.source == source
                    )
                )
                if row is not None and row.content_hash == content_hash:
                    return IngestResult(row, "unchanged")
                previous_hash = row.content_hash if row is not None else None
                document_id = row.id if row is not None else document_uuid(collection, source)
                await self._upsert(
                    collection=collection,
                    document_id=document_id,
                    content_hash=content_hash,
                    source=source,
                    doc_type=doc_type,
                    title=title,
                    chunks=chunks,
                    vectors=vectors,
                )
                row = await self._write_row(
                    session,
                    row,
                    document_id=document_id,
                    collection=collection,
                    source=source,
                    doc_type=doc_type,
                    title=title,
                    content_hash=content_hash,
                    size_bytes=len(data),
                    chunk_count=len(chunks),
                    metadata=metadata,
                )
        except BaseException:
            # The row did not commit: take back the vectors written under the new hash.
            if document_id is not None:
                await self._discard_version(collection, document_id, content_hash)
            raise
        if previous_hash is not None:
            await self._drop_stale(collection, document_id, content_hash)
        return IngestResult(row, "created" if previous_hash is None else "updated")

    async def _write_row(
        self,
        session: AsyncSession,
        row: Document | None,
        *,
        document_id: uuid.UUID,
        collection: str,
        source: str,
        doc_type: str,
        title: str,
        content_hash: str,
        size_bytes: int,
        chunk_count: int,
        metadata: dict[str, Any] | None,
    ) -> Document:
        values: dict[str, Any] = {
            "doc_type": doc_type,
            "title": title,
            "content_hash": content_hash,
            "size_bytes": size_bytes,
            "chunk_count": chunk_count,
        }
        if metadata is not None:
            values["metadata_"] = metadata
        if row is None:
            row = Document(id=document_id, collection=collection, source=source, **values)
            session.add(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = func.now()
        await session.flush()
        await session.refresh(row)
        return row

    async def _upsert(
        self,
        *,
        collection: str,
        document_id: uuid.UUID,
        content_hash: str,
        source: str,
        doc_type: str,
        title: str,
        chunks: Sequence[str],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        qdrant_name = COLLECTION_PREFIX + collection
        points = [
            models.PointStruct(
                id=point_id(document_id, content_hash, index),
                vector=list(vector),
                payload={
                    "source": source,
                    "doc_type": doc_type,
                    "chunk": chunk,
                    "conversation_context": None,
                    "document_id": str(document_id),
                    "chunk_index": index,
                    "collection": collection,
                    "title": title,
                    "content_hash": content_hash,
                },
            )
            for index, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True))
        ]
        for start in range(0, len(points), UPSERT_BATCH):
            batch = points[start : start + UPSERT_BATCH]
            await self._q(
                functools.partial(
                    AsyncQdrantClient.upsert, collection_name=qdrant_name, points=batch, wait=True
                )
            )

    async def _discard_version(
        self, collection: str, document_id: uuid.UUID, content_hash: str
    ) -> None:
        """Best-effort removal of the vectors of a version whose row never committed."""
        try:
            await asyncio.shield(
                self._delete_points(
                    collection,
                    models.Filter(
                        must=[
                            _match("document_id", str(document_id)),
                            _match("content_hash", content_hash),
                        ]
                    ),
                )
            )
        except Exception:
            log.exception("could not remove the vectors of failed ingest of %s", document_id)

    async def _drop_stale(self, collection: str, document_id: uuid.UUID, keep_hash: str) -> None:
        """Delete a document's vectors of every version but `keep_hash`."""
        try:
            await self._delete_points(
                collection,
                models.Filter(
                    must=[_match("document_id", str(document_id))],
                    must_not=[_match("content_hash", keep_hash)],
                ),
            )
        except UnavailableError:
            log.warning(
                "old vectors of document %s stay until its next ingest or delete: "
                "the vector store failed",
                document_id,
            )

    def _read_file(self, path: Path) -> tuple[Path, bytes]:
        resolved = path.resolve()
        size = resolved.stat().st_size
        if size > self.max_bytes:
            raise DocumentTooLargeError(
                f"{path} is {size} bytes, over the limit of {self.max_bytes} bytes"
            )
        return resolved, resolved.read_bytes()

    async def ingest_path(
        self, path: Path, *, collection: str | None = None, source: str | None = None
    ) -> IngestResult:
        """Ingest one file from disk; `source` defaults to its absolute path.

        Args:
            path: The file.
            collection: Knowledge base to put it in (default: the configured one).
            source: Identity within the collection (default: the absolute path).

        Returns:
            As `ingest_bytes`.
        """
        resolved, data = await asyncio.to_thread(self._read_file, path)
        return await self.ingest_bytes(
            data,
            filename=resolved.name,
            collection=collection,
            source=source or resolved.as_posix(),
        )

    # -- documents ----------------------------------------------------------------------------

    async def list_documents(
        self, *, collection: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[Document]:
        """A page of documents, newest first, optionally of one collection."""
        stmt = select(Document).order_by(Document.created_at.desc(), Document.id.desc())
        count = select(func.count()).select_from(Document)
        if collection is not None:
            stmt = stmt.where(Document.collection == collection)
            count = count.where(Document.collection == collection)
        async with self.database.sessions() as session:
            total = await session.scalar(count)
            rows = (await session.scalars(stmt.limit(limit).offset(offset))).all()
        return Page(items=rows, total=total or 0, limit=limit, offset=offset)

    async def get_document(self, document_id: uuid.UUID) -> Document:
        """The document with this id, or `NotFoundError`."""
        async with self.database.sessions() as session:
            row = await session.get(Document, document_id)
        if row is None:
            raise NotFoundError("document", document_id)
        return row

    async def delete_document(self, document_id: uuid.UUID) -> None:
        """Delete a document and all its vectors.

        The row is locked, the vectors deleted, then the row deleted in the same transaction:
        if the vector store fails the row stays (retry the delete); no vector outlives its row.
        """
        async with self.database.sessions.begin() as session:
            row = await session.get(Document, document_id, with_for_update=True)
            if row is None:
                raise NotFoundError("document", document_id)
            await self._delete_points(
                row.collection, models.Filter(must=[_match("document_id", str(document_id))])
            )
            await session.delete(row)

    async def count_documents(self) -> int:
        """How many documents the knowledge base holds, in all collections."""
        async with self.database.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Document)) or 0)

    # -- search -------------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        k: int = 4,
        collections: Sequence[str] | None = None,
        source: str | None = None,
        doc_type: str | None = None,
    ) -> list[SearchHit]:
        """The `k` chunks nearest to `query` by cosine similarity, best first.

        Args:
            query: The question or text to match.
            k: How many hits to return at most.
            collections: Collections to search; `None` means all. Unknown ones yield nothing.
            source: Only chunks of documents with this source.
            doc_type: Only chunks of this type (`txt`, `md`, `html`, `pdf`).

        Returns:
            Hits with score (cosine similarity, higher is closer) and where they came from.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        await self._ensure_checked()
        existing = await self._collections()
        targets = existing if collections is None else [c for c in collections if c in existing]
        if not targets or not query.strip():
            return []
        vector = await self.embedder.aembed_query(query)
        must = [_match(key, value) for key, value in (("source", source), ("doc_type", doc_type))
                if value is not None]  # fmt: skip
        condition = models.Filter(must=list(must)) if must else None

        async def one(name: str) -> list[models.ScoredPoint]:
            response = await self._q(
                lambda c: c.query_points(
                    COLLECTION_PREFIX + name,
                    query=vector,
                    query_filter=condition,
                    limit=k + OVERFETCH,
                    with_payload=True,
                )
            )
            points: list[models.ScoredPoint] = response.points
            return points

        results = await asyncio.gather(*(one(name) for name in sorted(set(targets))))
        merged = sorted((p for points in results for p in points), key=lambda p: -p.score)
        current = await self._current_versions(merged)
        if current is not None:
            merged = [p for p in merged if _version(p) in current]
        return [_hit(p) for p in merged[:k]]

    async def _current_versions(
        self, points: Sequence[models.ScoredPoint]
    ) -> set[tuple[str, str]] | None:
        """(document id, content hash) of the rows behind `points`; None when PG is down.

        Hits are kept only when their row exists with their hash, so a search never shows a
        superseded version (between an update's commit and its clean-up) nor a vector whose
        row is gone. Without PostgreSQL the hits are returned unchecked rather than not at all.
        """
        ids = {_uuid_or_none((p.payload or {}).get("document_id")) for p in points} - {None}
        if not ids:
            return set()
        try:
            async with self.database.sessions() as session:
                rows = await session.execute(
                    select(Document.id, Document.content_hash).where(Document.id.in_(ids))
                )
                return {(str(row.id), row.content_hash) for row in rows}
        except DBAPIError as error:
            log.warning("search hits unchecked against PostgreSQL: %s", error)
            return None

    # -- samples ------------------------------------------------------------------------------

    async def ingest_samples(self, *, collection: str | None = None) -> list[IngestResult]:
        """Ingest the bundled documents about Switchboard (idempotent).

        Returns:
            One result per sample document.
        """
        folder = package_files.files("stores").joinpath("sample_knowledge")
        results = []
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".md"):
                continue
            results.append(
                await self.ingest_bytes(
                    entry.read_bytes(),
                    filename=entry.name,
                    collection=collection,
                    source=SAMPLE_SOURCE_PREFIX + entry.name,
                    metadata={"sample": True},
                )
            )
        return results

    async def ingest_samples_if_empty(self) -> int:
        """Ingest the samples when no document exists yet; returns how many were ingested."""
        if await self.count_documents() > 0:
            return 0
        results = await self.ingest_samples()
        log.info("ingested %d sample documents into %r", len(results), self.default_collection)
        return len(results)


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _version(point: models.ScoredPoint) -> tuple[str, str]:
    payload = point.payload or {}
    return str(payload.get("document_id")), str(payload.get("content_hash"))


def _hit(point: models.ScoredPoint) -> SearchHit:
    payload = point.payload or {}
    return SearchHit(
        document_id=uuid.UUID(str(payload["document_id"])),
        chunk_index=int(payload.get("chunk_index", 0)),
        collection=str(payload.get("collection", "")),
        source=str(payload.get("source", "")),
        doc_type=str(payload.get("doc_type", "")),
        title=str(payload.get("title", "")),
        text=str(payload.get("chunk", "")),
        score=float(point.score),
    )


async def open_knowledge(
    *,
    client: AsyncQdrantClient,
    embedder: Embeddings,
    database: Database,
    dimension: int,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    default_collection: str = "knowledge",
    max_bytes: int = 20 * 1024 * 1024,
) -> KnowledgeBase:
    """Build the knowledge base and check its collections' vector size against the embedder.

    When Qdrant cannot be reached the check waits for the first search or ingest, so the
    server still starts.

    Raises:
        DimensionMismatchError: A collection was built with an embedder of another dimension.
    """
    knowledge = KnowledgeBase(
        client=client,
        embedder=embedder,
        database=database,
        dimension=dimension,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        default_collection=default_collection,
        max_bytes=max_bytes,
    )
    try:
        await knowledge.check_dimensions()
    except UnavailableError as error:
        # Serve anyway (a run must still complete without Qdrant); check again on first use.
        log.warning("Qdrant is unavailable at startup (%s); the knowledge base waits for it", error)
    return knowledge
