"""The knowledge base: documents in PostgreSQL, their chunks in Qdrant, hybrid search."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from importlib import resources as package_files
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.embeddings import Embeddings
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from stores import sparse
from stores.chunking import CHUNKER_VERSION, Chunk, Chunker, Section
from stores.embeddings import approximate_tokens, describe
from stores.errors import ConflictError, NotFoundError, StoreError, UnavailableError
from stores.extract import DocumentError, DocumentTooLargeError, extract, markdown_sections
from stores.qdrant import is_local, qdrant_call
from stores.sql.database import Database
from stores.sql.models import Document
from stores.sql.repositories import Page
from stores.tracing import traced

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
# With per-document dedup, candidates fetched per hit asked for.
DEDUP_FACTOR = 4
# Candidates each of the dense and the sparse search hands to the fusion.
PREFETCH = 50
# Weighted reciprocal rank fusion, as Qdrant computes it: a point at rank r (1 = first) of a
# list of weight w scores 1 / (r / w + k - 1) there, summed over the lists it is in; with k = 1
# that is w / r. Three lists: the chunk's own tokens (`body`, pooled from the same forward pass
# as `dense`) lead; the chunk behind its title line (`dense`) and the lexical list (`sparse`)
# support them. The title line draws every chunk of a document towards questions about its
# topic, and paraphrased questions share meaning more often than words with their answer.
# Chosen with bench/retrieval_bench.py on its tuning questions, inside a plateau of equal
# results (docs/knowledge.md).
RRF_K = 1
BODY_WEIGHT, DENSE_WEIGHT, SPARSE_WEIGHT = 1.0, 0.5, 0.5
# Collections without body vectors (layouts 1 and 2, until reindexed) keep their old fusion.
OLD_RRF_K, OLD_DENSE_WEIGHT = 2, 1.0
DENSE, BODY, SPARSE = "dense", "body", "sparse"
# The collection layout: 3 = named dense, body and sparse (IDF) vectors; 2 = dense + sparse;
# 1 = one unnamed dense vector.
LAYOUT = 3
HYBRID_LAYOUT = 2
# A reindex builds the new collection under this prefix, then swaps it in.
REBUILD_PREFIX = "kbrebuild_"
SCROLL_BATCH = 512

IngestStatus = Literal["created", "updated", "unchanged"]


class DimensionMismatchError(StoreError):
    """A Qdrant collection holds vectors of another size than the embedder makes."""


class StaleCollectionError(ConflictError):
    """A collection was built the old way (one dense vector) and must be reindexed (HTTP 409)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"collection {name!r} was built by an older Switchboard (dense vectors only); "
            f"run `switchboard reindex {name}` to rebuild it",
            field="collection",
        )


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
    heading_path: tuple[str, ...] = ()
    fused: float = 0.0


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ingesting one file did: the document row and whether it changed."""

    document: Document
    status: IngestStatus


@dataclass(frozen=True, slots=True)
class CollectionState:
    """How a collection was built: its layout and the versions recorded with it."""

    layout: int
    build: dict[str, Any]
    size: int | None

    @property
    def hybrid(self) -> bool:
        """Whether it has dense + sparse vectors (searchable, and writable, by fusion)."""
        return self.layout >= HYBRID_LAYOUT

    @property
    def body(self) -> bool:
        """Whether its points have a body vector too."""
        return self.layout >= 3


@dataclass(slots=True)
class ReindexResult:
    """What `KnowledgeBase.reindex` did to one collection."""

    collection: str
    status: Literal["rebuilt", "current"]
    documents: int = 0
    chunks: int = 0
    missing: list[str] = field(default_factory=list)


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

    Each collection `name` is the Qdrant collection `kb_<name>`, with two dense vectors per
    chunk (`dense`: the chunk behind its title line; `body`: the chunk's own tokens from the
    same pass; cosine) and a sparse lexical one (`sparse`, IDF); every point's payload holds the
    seed's fields (`source`, `doc_type`, `chunk`, `conversation_context`) plus `document_id`,
    `chunk_index`, `collection`, `title`, `heading_path` and `content_hash`. The collection's
    metadata records how it was built (`build`): collections built otherwise are stale.
    """

    def __init__(
        self,
        *,
        client: AsyncQdrantClient,
        embedder: Embeddings,
        database: Database,
        dimension: int,
        chunk_size: int = 128,
        default_collection: str = "knowledge",
        max_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.database = database
        self.dimension = dimension
        self.default_collection = check_collection_name(default_collection)
        self.max_bytes = max_bytes
        counter = getattr(embedder, "count_tokens", None)
        max_tokens = getattr(embedder, "max_tokens", None)
        self.chunker = Chunker(
            size=chunk_size,
            count_tokens=counter if callable(counter) else approximate_tokens,
            # The model's limit counts [CLS] and [SEP]; the chunker counts text only.
            max_tokens=max_tokens - 2 if isinstance(max_tokens, int) else None,
        )
        self.build: dict[str, Any] = {
            "layout": LAYOUT,
            "embedder": describe(embedder)["name"],
            "dimension": dimension,
            "chunker": CHUNKER_VERSION,
            "chunk_size": self.chunker.size,
            "sparse": sparse.SPARSE_VERSION,
        }
        self.stale: dict[str, str] = {}
        self._states: dict[str, CollectionState] = {}
        self._dimensions_checked = False
        self._create_lock = asyncio.Lock()

    # -- Qdrant plumbing -------------------------------------------------------------------

    async def _q(
        self, call: Callable[[AsyncQdrantClient], Coroutine[Any, Any, Any]], *, light: bool = False
    ) -> Any:
        try:
            return await qdrant_call(self.client, call, light=light)
        except (UnexpectedResponse, ResponseHandlingException, OSError) as error:
            raise UnavailableError(f"the vector store failed: {error}") from error
        except Exception as error:
            # qdrant-client raises transport errors (httpx, grpc) of many kinds.
            if type(error).__module__.split(".")[0] in {"httpx", "httpcore", "grpc"}:
                raise UnavailableError(f"the vector store is unavailable: {error}") from error
            raise

    async def _all_collections(self) -> list[str]:
        response = await self._q(lambda c: c.get_collections(), light=True)
        return [c.name for c in response.collections]

    async def _collections(self) -> list[str]:
        """The names (without prefix) of the knowledge collections that exist."""
        names = await self._all_collections()
        return sorted(n[len(COLLECTION_PREFIX) :] for n in names if n.startswith(COLLECTION_PREFIX))

    async def _state(self, qdrant_name: str) -> CollectionState:
        info = await self._q(lambda c: c.get_collection(qdrant_name))
        vectors = info.config.params.vectors
        metadata = info.config.metadata or {}
        build = metadata.get("switchboard") if isinstance(metadata, dict) else None
        build = dict(build) if isinstance(build, dict) else {}
        if isinstance(vectors, models.VectorParams):
            return CollectionState(layout=1, build=build, size=int(vectors.size))
        if isinstance(vectors, dict) and DENSE in vectors:
            layout = LAYOUT if BODY in vectors else HYBRID_LAYOUT
            return CollectionState(layout=layout, build=build, size=int(vectors[DENSE].size))
        if isinstance(vectors, dict) and "" in vectors:
            return CollectionState(layout=1, build=build, size=int(vectors[""].size))
        return CollectionState(layout=1, build=build, size=None)

    def _staleness(self, state: CollectionState) -> str | None:
        """Why a collection in `state` is stale, or None when it is current."""
        if not state.hybrid:
            return "built the old way (dense vectors only)"
        if not state.build:
            return "its build was interrupted (no build record)"
        changed = [
            f"{key} {state.build.get(key)!r} → {value!r}"
            for key, value in self.build.items()
            if state.build.get(key) != value
        ]
        return "built with " + ", ".join(changed) if changed else None

    async def check_dimensions(self) -> None:
        """Check every knowledge collection: vector size against the embedder, and build.

        Collections built by another embedder, chunker or layout are recorded in `stale`
        (name → reason); so is a reindex that was interrupted.

        Raises:
            DimensionMismatchError: Naming the collection and both sizes.
        """
        names = await self._all_collections()
        stale: dict[str, str] = {}
        for name in await self._collections():
            qdrant_name = COLLECTION_PREFIX + name
            state = await self._state(qdrant_name)
            if state.size is not None and state.size != self.dimension:
                raise DimensionMismatchError(
                    f"Qdrant collection {qdrant_name!r} holds {state.size}-d vectors but the "
                    f"embedder makes {self.dimension}-d ones; use the embedder it was built "
                    "with, or delete the collection and ingest again"
                )
            self._states[name] = state
            reason = self._staleness(state)
            if reason is not None:
                stale[name] = reason
        for qdrant_name in names:
            if qdrant_name.startswith(REBUILD_PREFIX):
                stale[qdrant_name[len(REBUILD_PREFIX) :]] = "a reindex was interrupted"
        self.stale = stale
        self._dimensions_checked = True

    async def _ensure_checked(self) -> None:
        """Run the dimension check now if Qdrant could not answer it at startup."""
        if not self._dimensions_checked:
            await self.check_dimensions()

    async def _create(self, qdrant_name: str, *, build: dict[str, Any] | None) -> None:
        """Create a collection of the current layout; `build` None leaves it marked incomplete."""
        await self._q(
            lambda c: c.create_collection(
                qdrant_name,
                vectors_config={
                    name: models.VectorParams(size=self.dimension, distance=models.Distance.COSINE)
                    for name in (DENSE, BODY)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                metadata={"switchboard": build} if build is not None else None,
            )
        )
        if not is_local(self.client):  # local mode scans; a server wants indexes
            for name in INDEXED_FIELDS:
                await self._q(
                    functools.partial(
                        AsyncQdrantClient.create_payload_index,
                        collection_name=qdrant_name,
                        field_name=name,
                        field_schema=models.PayloadSchemaType.KEYWORD,
                    )
                )

    async def _ensure_collection(self, name: str) -> CollectionState:
        """The state of collection `name`, created (current layout) if it does not exist.

        An old-layout state is read again: another process (`switchboard reindex` against a
        Qdrant server) may have rebuilt the collection since.
        """
        if name in self._states and self._states[name].hybrid:
            return self._states[name]
        async with self._create_lock:
            qdrant_name = COLLECTION_PREFIX + name
            if not await self._q(lambda c: c.collection_exists(qdrant_name)):
                await self._create(qdrant_name, build=self.build)
                state = CollectionState(layout=LAYOUT, build=dict(self.build), size=self.dimension)
            else:
                state = await self._state(qdrant_name)
                if state.size is not None and state.size != self.dimension:
                    raise DimensionMismatchError(
                        f"Qdrant collection {qdrant_name!r} holds {state.size}-d vectors but the "
                        f"embedder makes {self.dimension}-d ones"
                    )
            self._states[name] = state
            return state

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
    ) -> tuple[str, str, list[Chunk]]:
        extracted = extract(data, filename=filename, content_type=content_type)
        chunks = self.chunker.split(extracted.sections, title=extracted.title)
        return extracted.doc_type, extracted.title, chunks

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
        doc_type, title, chunks = await asyncio.to_thread(
            self._prepare, data, filename, content_type
        )
        await self._ensure_checked()
        state = await self._ensure_collection(collection)
        if not state.hybrid:
            raise StaleCollectionError(collection)
        vectors, bodies = await self._embed(chunks, bodies=state.body)
        document_id: uuid.UUID | None = None
        previous_hash: str | None = None
        try:
            async with self.database.sessions.begin() as session:
                # A reindex of the collection holds this lock exclusively: wait for it.
                await _collection_lock(session, collection, shared=True)
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
                    bodies=bodies,
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
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
        bodies: Sequence[Sequence[float]] | None,
        qdrant_name: str | None = None,
    ) -> None:
        def named(index: int, chunk: Chunk, vector: Sequence[float]) -> dict[str, Any]:
            out: dict[str, Any] = {
                DENSE: list(vector),
                SPARSE: sparse.document_vector(chunk.embedded),
            }
            if bodies is not None:
                out[BODY] = list(bodies[index])
            return out

        points = [
            models.PointStruct(
                id=point_id(document_id, content_hash, index),
                vector=named(index, chunk, vector),
                payload={
                    "source": source,
                    "doc_type": doc_type,
                    "chunk": chunk.text,
                    "conversation_context": None,
                    "document_id": str(document_id),
                    "chunk_index": index,
                    "collection": collection,
                    "title": title,
                    "heading_path": list(chunk.path),
                    "content_hash": content_hash,
                },
            )
            for index, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True))
        ]
        await self._write_points(qdrant_name or COLLECTION_PREFIX + collection, points)

    async def _embed(
        self, chunks: Sequence[Chunk], *, bodies: bool
    ) -> tuple[list[list[float]], list[list[float]] | None]:
        """The chunks' vectors (title line + chunk), and their bodies' when `bodies`.

        An embedder that can (`SharedEmbeddings.aembed_spans`: MiniLM reads the text once and
        pools the body's tokens apart) gives both from one pass; others embed the bodies as
        texts of their own.
        """
        texts = [c.embedded for c in chunks]
        if not bodies:
            return await self.embedder.aembed_documents(texts), None
        spans = getattr(self.embedder, "aembed_spans", None)
        if callable(spans):
            starts = [len(c.embedded) - len(c.text) for c in chunks]
            whole, tails = await spans(texts, starts)
            return list(whole), list(tails)
        vectors = await self.embedder.aembed_documents(texts + [c.text for c in chunks])
        return vectors[: len(texts)], vectors[len(texts) :]

    async def _write_points(self, qdrant_name: str, points: Sequence[models.PointStruct]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = list(points[start : start + UPSERT_BATCH])
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
        self,
        *,
        collection: str | None = None,
        limit: int = 50,
        offset: int = 0,
        within: Sequence[str] | None = None,
    ) -> Page[Document]:
        """A page of documents, newest first, optionally of one collection (and only of the
        collections `within`, when given: those the caller may read)."""
        stmt = select(Document).order_by(Document.created_at.desc(), Document.id.desc())
        count = select(func.count()).select_from(Document)
        if collection is not None:
            stmt = stmt.where(Document.collection == collection)
            count = count.where(Document.collection == collection)
        if within is not None:
            stmt = stmt.where(Document.collection.in_(list(within)))
            count = count.where(Document.collection.in_(list(within)))
        async with self.database.sessions() as session:
            total = await session.scalar(count)
            rows = (await session.scalars(stmt.limit(limit).offset(offset))).all()
        return Page(items=rows, total=total or 0, limit=limit, offset=offset)

    async def get_document(
        self, document_id: uuid.UUID, *, within: Sequence[str] | None = None
    ) -> Document:
        """The document with this id (in one of the collections `within`, when given), or
        `NotFoundError`."""
        stmt = select(Document).where(Document.id == document_id)
        if within is not None:
            stmt = stmt.where(Document.collection.in_(list(within)))
        async with self.database.sessions() as session:
            row = await session.scalar(stmt)
        if row is None:
            raise NotFoundError("document", document_id)
        return row

    async def delete_document(
        self, document_id: uuid.UUID, *, within: Sequence[str] | None = None
    ) -> None:
        """Delete a document (in one of the collections `within`, when given) and all its
        vectors.

        The row is locked, the vectors deleted, then the row deleted in the same transaction:
        if the vector store fails the row stays (retry the delete); no vector outlives its row.
        """
        async with self.database.sessions.begin() as session:
            stmt = select(Document).where(Document.id == document_id)
            if within is not None:
                stmt = stmt.where(Document.collection.in_(list(within)))
            found = await session.scalar(stmt)
            if found is None:
                raise NotFoundError("document", document_id)
            # The collection lock before the row lock: a reindex takes them in that order.
            await _collection_lock(session, found.collection, shared=True)
            row = await session.get(
                Document, document_id, with_for_update=True, populate_existing=True
            )
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
        dedup: bool = False,
    ) -> list[SearchHit]:
        """`_search` in a `retrieval` span (see there)."""
        with traced("retrieval", "retrieval", **{"retrieval.k": k}) as span:
            hits = await self._search(
                query, k=k, collections=collections, source=source, doc_type=doc_type, dedup=dedup
            )
            span.set_attribute("retrieval.hits", len(hits))
            return hits

    async def _search(
        self,
        query: str,
        *,
        k: int = 4,
        collections: Sequence[str] | None = None,
        source: str | None = None,
        doc_type: str | None = None,
        dedup: bool = False,
    ) -> list[SearchHit]:
        """The `k` chunks that best match `query`, best first: dense and lexical, fused.

        In each collection a dense search (cosine) and a sparse lexical one (BM25-style, IDF)
        each pick candidates, and reciprocal rank fusion orders them (Qdrant's query API, the
        same in local mode and on a server). Collections built the old way are searched
        densely. Hits of several collections are merged by their fused score.

        Args:
            query: The question or text to match.
            k: How many hits to return at most.
            collections: Collections to search; `None` means all. Unknown ones yield nothing.
            source: Only chunks of documents with this source.
            doc_type: Only chunks of this type (`txt`, `md`, `html`, `pdf`).
            dedup: At most one hit (the best) per document.

        Returns:
            Hits with `score` (cosine similarity of query and chunk, higher is closer),
            `fused` (the fusion's score, which orders them) and where they came from.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        await self._ensure_checked()
        existing = await self._collections()
        targets = existing if collections is None else [c for c in collections if c in existing]
        if not targets or not query.strip():
            return []
        vector = np.asarray(await self.embedder.aembed_query(query), dtype=np.float32)
        lexical = sparse.query_vector(query)
        must = [_match(key, value) for key, value in (("source", source), ("doc_type", doc_type))
                if value is not None]  # fmt: skip
        condition = models.Filter(must=list(must)) if must else None
        limit = (k * DEDUP_FACTOR if dedup else k) + OVERFETCH

        async def one(name: str) -> list[tuple[float, float, models.ScoredPoint]]:
            # Read afresh: a reindex by another process may have changed the layout.
            try:
                state = self._states[name] = await self._state(COLLECTION_PREFIX + name)
            except (ValueError, UnavailableError):
                if await self._q(lambda c: c.collection_exists(COLLECTION_PREFIX + name)):
                    raise
                return []  # gone since it was listed (a reindex swapping it in)
            return await self._search_one(
                COLLECTION_PREFIX + name, state, vector, lexical, condition, limit
            )

        results = await asyncio.gather(*(one(name) for name in sorted(set(targets))))
        merged = sorted((hit for hits in results for hit in hits), key=lambda h: (-h[0], -h[1]))
        current = await self._current_versions([point for _, _, point in merged])
        if current is not None:
            merged = [h for h in merged if _version(h[2]) in current]
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for fused, cosine, point in merged:
            document = str((point.payload or {}).get("document_id"))
            if dedup and document in seen:
                continue
            seen.add(document)
            hits.append(_hit(point, score=cosine, fused=fused))
            if len(hits) == k:
                break
        return hits

    async def _search_one(
        self,
        qdrant_name: str,
        state: CollectionState,
        vector: np.ndarray,
        lexical: models.SparseVector,
        condition: models.Filter | None,
        limit: int,
    ) -> list[tuple[float, float, models.ScoredPoint]]:
        """(fused score, cosine, point) of the best `limit` points of one collection."""
        dense = vector.tolist()
        if not state.hybrid:
            response = await self._q(
                lambda c: c.query_points(
                    qdrant_name, query=dense, query_filter=condition, limit=limit,
                    with_payload=True,
                )
            )  # fmt: skip
            return [
                (1 / (rank / OLD_DENSE_WEIGHT + OLD_RRF_K - 1), float(p.score), p)
                for rank, p in enumerate(response.points, start=1)
            ]
        prefetch = [models.Prefetch(query=dense, using=DENSE, limit=max(PREFETCH, limit))]
        weights = [DENSE_WEIGHT if state.body else OLD_DENSE_WEIGHT]
        if state.body:
            prefetch.append(models.Prefetch(query=dense, using=BODY, limit=max(PREFETCH, limit)))
            weights.append(BODY_WEIGHT)
        if lexical.indices:
            prefetch.append(
                models.Prefetch(query=lexical, using=SPARSE, limit=max(PREFETCH, limit))
            )
            weights.append(SPARSE_WEIGHT)
        response = await self._q(
            lambda c: c.query_points(
                qdrant_name,
                prefetch=prefetch,
                query=models.RrfQuery(
                    rrf=models.Rrf(k=RRF_K if state.body else OLD_RRF_K, weights=weights)
                ),
                query_filter=condition,
                limit=limit,
                with_payload=True,
                with_vectors=[DENSE],
            )
        )
        out = []
        for point in response.points:
            stored = point.vector.get(DENSE) if isinstance(point.vector, dict) else None
            cosine = float(np.dot(vector, np.asarray(stored))) if stored is not None else 0.0
            out.append((float(point.score), cosine, point))
        return out

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

    # -- reindex ------------------------------------------------------------------------------

    async def reindex(
        self,
        collection: str,
        *,
        force: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ReindexResult:
        """Rebuild a collection with the current embedder, chunker and layout.

        Each document is re-read from its source file when that file still has the stored
        content hash (files ingested by path), else rebuilt from its stored chunks. The new
        collection is filled under another name (`kbrebuild_<name>`), marked complete, then
        swapped in: the old one is dropped, the new points copied to `kb_<name>`, and the
        documents' chunk counts updated, all under the collection's exclusive lock (uploads
        and deletes into it wait; searches go on). An interrupted reindex leaves the old
        collection or a complete copy, and running it again finishes the job. A collection
        that is current is left alone unless `force`.

        Args:
            collection: The collection's name.
            force: Rebuild even when it is current.
            progress: Called with 1 for every document rebuilt.

        Returns:
            What was done, and the sources that could not be rebuilt (no file, no chunks).
        """
        collection = check_collection_name(collection)
        qdrant_name, rebuild = COLLECTION_PREFIX + collection, REBUILD_PREFIX + collection
        result = ReindexResult(collection, "rebuilt")
        async with self.database.sessions.begin() as session:
            # Looked at under the lock: another reindex may have finished meanwhile.
            await _collection_lock(session, collection, shared=False)
            await self.check_dimensions()
            names = set(await self._all_collections())
            if qdrant_name not in names and rebuild not in names:
                raise NotFoundError("collection", collection, field="collection")
            if collection not in self.stale and not force:
                return ReindexResult(collection, "current")
            rows = list(
                await session.scalars(select(Document).where(Document.collection == collection))
            )
            counts: dict[uuid.UUID, int] | None = None
            if rebuild in names and (await self._state(rebuild)).build == self.build:
                counts = await self._counts(rebuild)  # complete: only the swap is left
            else:
                if rebuild in names:
                    await self._q(lambda c: c.delete_collection(rebuild))
                await self._create(rebuild, build=None)
                counts = await self._fill(collection, rows, result, progress)
                await self._q(
                    lambda c: c.update_collection(rebuild, metadata={"switchboard": self.build})
                )
            await self._swap(rebuild, qdrant_name)
            for row in rows:
                row.chunk_count = counts.get(row.id, 0)
            result.documents = len(rows) - len(result.missing)
            result.chunks = sum(counts.values())
        await self._q(lambda c: c.delete_collection(rebuild))
        self._states.pop(collection, None)
        self.stale.pop(collection, None)
        return result

    async def _fill(
        self,
        collection: str,
        rows: Sequence[Document],
        result: ReindexResult,
        progress: Callable[[int], None] | None,
    ) -> dict[uuid.UUID, int]:
        """Chunk, embed and write every document of `rows` into the rebuild collection."""
        stored = await self._stored_chunks(COLLECTION_PREFIX + collection)
        counts: dict[uuid.UUID, int] = {}
        for row in rows:
            sections = await asyncio.to_thread(_source_sections, row)
            if sections is None:
                sections = _sections_from_chunks(row, stored.get((str(row.id), row.content_hash)))
            if not sections:
                result.missing.append(row.source)
                log.warning("reindex: nothing to rebuild %s from (no file, no chunks)", row.source)
                if progress is not None:
                    progress(1)
                continue
            chunks = await asyncio.to_thread(self.chunker.split, sections, title=row.title)
            vectors, bodies = await self._embed(chunks, bodies=True)
            await self._upsert(
                collection=collection,
                document_id=row.id,
                content_hash=row.content_hash,
                source=row.source,
                doc_type=row.doc_type,
                title=row.title,
                chunks=chunks,
                vectors=vectors,
                bodies=bodies,
                qdrant_name=REBUILD_PREFIX + collection,
            )
            counts[row.id] = len(chunks)
            if progress is not None:
                progress(1)
        return counts

    async def _scroll(self, qdrant_name: str, *, with_vectors: bool) -> list[models.Record]:
        """Every point of a collection (empty when it does not exist)."""
        if not await self._q(lambda c: c.collection_exists(qdrant_name)):
            return []
        records: list[models.Record] = []
        offset: Any = None
        while True:
            batch, offset = await self._q(
                functools.partial(
                    AsyncQdrantClient.scroll,
                    collection_name=qdrant_name,
                    limit=SCROLL_BATCH,
                    offset=offset,
                    with_payload=True,
                    with_vectors=with_vectors,
                )
            )
            records.extend(batch)
            if offset is None:
                return records

    async def _stored_chunks(self, qdrant_name: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Payloads of a collection's points by (document id, content hash), in chunk order."""
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for record in await self._scroll(qdrant_name, with_vectors=False):
            payload = dict(record.payload or {})
            grouped[(str(payload.get("document_id")), str(payload.get("content_hash")))].append(
                payload
            )
        for payloads in grouped.values():
            payloads.sort(key=lambda p: int(p.get("chunk_index", 0)))
        return grouped

    async def _counts(self, qdrant_name: str) -> dict[uuid.UUID, int]:
        counts: dict[uuid.UUID, int] = defaultdict(int)
        for record in await self._scroll(qdrant_name, with_vectors=False):
            document = _uuid_or_none((record.payload or {}).get("document_id"))
            if document is not None:
                counts[document] += 1
        return counts

    async def _swap(self, rebuild: str, qdrant_name: str) -> None:
        """Replace `qdrant_name` by a copy of the complete collection `rebuild`."""
        if await self._q(lambda c: c.collection_exists(qdrant_name)):
            await self._q(lambda c: c.delete_collection(qdrant_name))
        await self._create(qdrant_name, build=None)
        records = await self._scroll(rebuild, with_vectors=True)
        points = [
            models.PointStruct(id=r.id, vector=r.vector or {}, payload=r.payload) for r in records
        ]
        await self._write_points(qdrant_name, points)
        # The build record goes last: a copy cut short stays stale, and a rerun redoes it.
        await self._q(
            lambda c: c.update_collection(qdrant_name, metadata={"switchboard": self.build})
        )

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


def _source_sections(row: Document) -> tuple[Section, ...] | None:
    """The sections of a document read again from its source file, if it still holds them.

    Only an absolute path whose bytes still hash to the row's content hash counts.
    """
    path = Path(row.source)
    try:
        if not path.is_absolute() or not path.is_file():
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != row.content_hash:
        return None
    try:
        return extract(data, filename=path.name).sections
    except DocumentError:
        return None


def _sections_from_chunks(
    row: Document, payloads: Sequence[dict[str, Any]] | None
) -> tuple[Section, ...]:
    """A document's sections put back together from its stored chunks.

    Chunks of the current layout carry their heading path and do not overlap. Older chunks
    (fixed-size, overlapping, no heading path) are joined with their overlaps removed; for
    markdown the headings in the text give the sections back.
    """
    if not payloads:
        return ()
    if all("heading_path" in p for p in payloads):
        sections: list[Section] = []
        for payload in payloads:
            path = tuple(str(h) for h in payload.get("heading_path") or [])
            text = str(payload.get("chunk", ""))
            if sections and sections[-1].path == path:
                sections[-1] = Section(path, sections[-1].text + "\n\n" + text)
            else:
                sections.append(Section(path, text))
        return tuple(sections)
    text = ""
    for payload in payloads:
        text = _join_overlapping(text, str(payload.get("chunk", "")))
    if row.doc_type == "md":
        return markdown_sections(text)[1]
    return (Section((), text),)


def _join_overlapping(left: str, right: str, *, longest: int = 2000) -> str:
    """`left + right` without the text that ends `left` and starts `right` (the overlap)."""
    if not left:
        return right
    for size in range(min(len(left), len(right), longest), 0, -1):
        if left.endswith(right[:size]):
            return left + right[size:]
    return left + "\n\n" + right


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _version(point: models.ScoredPoint) -> tuple[str, str]:
    payload = point.payload or {}
    return str(payload.get("document_id")), str(payload.get("content_hash"))


def _hit(point: models.ScoredPoint, *, score: float, fused: float) -> SearchHit:
    payload = point.payload or {}
    path = payload.get("heading_path")
    return SearchHit(
        document_id=uuid.UUID(str(payload["document_id"])),
        chunk_index=int(payload.get("chunk_index", 0)),
        collection=str(payload.get("collection", "")),
        source=str(payload.get("source", "")),
        doc_type=str(payload.get("doc_type", "")),
        title=str(payload.get("title", "")),
        text=str(payload.get("chunk", "")),
        score=score,
        heading_path=tuple(str(p) for p in path) if isinstance(path, list) else (),
        fused=fused,
    )


async def _collection_lock(session: AsyncSession, collection: str, *, shared: bool) -> None:
    """Take the transaction-scoped lock of a collection: shared by writers, exclusive by reindex."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await session.execute(
        text(f"SELECT {function}(hashtextextended(:key, 0))"),
        {"key": f"kb-collection:{collection}"},
    )


async def open_knowledge(
    *,
    client: AsyncQdrantClient,
    embedder: Embeddings,
    database: Database,
    dimension: int,
    chunk_size: int = 128,
    default_collection: str = "knowledge",
    max_bytes: int = 20 * 1024 * 1024,
) -> KnowledgeBase:
    """Build the knowledge base and check its collections against the embedder and chunker.

    Collections built by another embedder, chunker or layout are logged as stale (rebuild
    them with `switchboard reindex`). When Qdrant cannot be reached the check waits for the
    first search or ingest, so the server still starts.

    Raises:
        DimensionMismatchError: A collection was built with an embedder of another dimension.
    """
    knowledge = KnowledgeBase(
        client=client,
        embedder=embedder,
        database=database,
        dimension=dimension,
        chunk_size=chunk_size,
        default_collection=default_collection,
        max_bytes=max_bytes,
    )
    try:
        await knowledge.check_dimensions()
        for name, reason in sorted(knowledge.stale.items()):
            log.warning(
                "knowledge collection %r is stale (%s): run `switchboard reindex %s`",
                name,
                reason,
                name,
            )
    except UnavailableError as error:
        # Serve anyway (a run must still complete without Qdrant); check again on first use.
        log.warning("Qdrant is unavailable at startup (%s); the knowledge base waits for it", error)
    return knowledge
