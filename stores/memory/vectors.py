"""Memory vectors in Qdrant: one point per embedded field of a memory, keyed by its Mongo id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from stores.errors import UnavailableError
from stores.qdrant import is_local, qdrant_call

T = TypeVar("T")

PAYLOAD_DOC_ID = "doc_id"
PAYLOAD_PREFIXES = "ns_prefixes"


def namespace_prefixes(namespace: Sequence[str]) -> list[str]:
    """Every prefix of `namespace` as a joined key: ("u", "m") → ["u", "u.m"]."""
    return [".".join(namespace[:depth]) for depth in range(1, len(namespace) + 1)]


def point_id(doc_id: str, path: str) -> str:
    """The Qdrant point id of field `path` of memory `doc_id` (a uuid5 under the doc's uuid)."""
    return str(uuid.uuid5(uuid.UUID(doc_id), path))


@dataclass(frozen=True, slots=True)
class FieldVector:
    """One embedded text of a memory: the JSON path it came from and its vector."""

    path: str
    vector: list[float]


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A memory that matched a query, with its best cosine similarity."""

    doc_id: str
    score: float


class MemoryVectors:
    """The `memory_vectors` collection on the process's shared Qdrant client.

    MongoDB stays the source of truth: every point carries the Mongo `_id` of its memory, and
    `recreate` + re-embedding (`switchboard memory reindex`) rebuilds the collection from it.
    """

    def __init__(self, client: AsyncQdrantClient, *, collection: str, dimension: int) -> None:
        self.client = client
        self.collection = collection
        self.dimension = dimension
        self._ready = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Create the collection (cosine distance, payload indexes) when it is missing.

        Raises:
            UnavailableError: Qdrant cannot be reached, or the collection holds vectors of
                another size (built by another embedder): reindex to rebuild it.
        """
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            try:
                if not await self._call(lambda c: c.collection_exists(self.collection)):
                    await self._create()
                    size = self.dimension
                else:
                    info = await self._call(lambda c: c.get_collection(self.collection))
                    params = info.config.params.vectors
                    size = params.size if isinstance(params, qm.VectorParams) else -1
            except Exception as error:  # qdrant raises transport-specific errors
                raise UnavailableError(
                    f"Qdrant is unavailable: could not open collection {self.collection}"
                ) from error
            if size != self.dimension:
                raise UnavailableError(
                    f"memory vectors in Qdrant collection {self.collection} have {size} "
                    f"dimensions but the embedder makes {self.dimension}; "
                    "run `switchboard memory reindex` to rebuild them"
                )
            self._ready = True

    async def _call(self, call: Callable[[AsyncQdrantClient], Coroutine[Any, Any, T]]) -> T:
        return await qdrant_call(self.client, call)

    async def _create(self) -> None:
        config = qm.VectorParams(size=self.dimension, distance=qm.Distance.COSINE)
        await self._call(lambda c: c.create_collection(self.collection, vectors_config=config))
        if is_local(self.client):
            return  # local mode scans; payload indexes have no effect there
        for field in (PAYLOAD_DOC_ID, PAYLOAD_PREFIXES):
            await self._call(
                lambda c, field=field: c.create_payload_index(  # type: ignore[misc]
                    self.collection, field, field_schema=qm.PayloadSchemaType.KEYWORD
                )
            )

    async def recreate(self) -> None:
        """Drop the collection and create it empty."""
        async with self._lock:
            if await self._call(lambda c: c.collection_exists(self.collection)):
                await self._call(lambda c: c.delete_collection(self.collection))
            await self._create()
            self._ready = True

    async def upsert(
        self, doc_id: str, namespace: Sequence[str], key: str, fields: Sequence[FieldVector]
    ) -> None:
        """Write the vectors of memory `doc_id` (point ids are stable per field path)."""
        if not fields:
            return
        await self.ensure()
        payload = {
            PAYLOAD_DOC_ID: doc_id,
            PAYLOAD_PREFIXES: namespace_prefixes(namespace),
            "ns_key": ".".join(namespace),
            "key": key,
        }
        points = [
            qm.PointStruct(
                id=point_id(doc_id, field.path),
                vector=field.vector,
                payload={**payload, "path": field.path},
            )
            for field in fields
        ]
        await self._call(lambda c: c.upsert(self.collection, points=points, wait=True))

    async def delete_points(self, point_ids: Sequence[str]) -> None:
        """Delete vectors by point id (cheap: no scan, unlike a payload filter in local mode)."""
        if not point_ids:
            return
        await self.ensure()
        selector = qm.PointIdsList(points=list(point_ids))
        await self._call(lambda c: c.delete(self.collection, points_selector=selector, wait=True))

    async def delete_docs(self, doc_ids: Sequence[str]) -> None:
        """Delete every vector of the memories `doc_ids`, whatever their paths."""
        if not doc_ids:
            return
        await self.ensure()
        selector = qm.FilterSelector(
            filter=qm.Filter(
                must=[qm.FieldCondition(key=PAYLOAD_DOC_ID, match=qm.MatchAny(any=list(doc_ids)))]
            )
        )
        await self._call(lambda c: c.delete(self.collection, points_selector=selector, wait=True))

    async def count(self, *, namespace_prefix: Sequence[str] = ()) -> int:
        """How many vectors lie under `namespace_prefix`."""
        await self.ensure()
        where = self._prefix_filter(namespace_prefix)
        result = await self._call(
            lambda c: c.count(self.collection, count_filter=where, exact=True)
        )
        return result.count

    async def search(
        self, vector: Sequence[float], *, namespace_prefix: Sequence[str], limit: int, offset: int
    ) -> list[VectorHit]:
        """The nearest vectors under `namespace_prefix`, best first (one hit per vector)."""
        await self.ensure()
        where = self._prefix_filter(namespace_prefix)
        response = await self._call(
            lambda c: c.query_points(
                self.collection,
                query=list(vector),
                query_filter=where,
                limit=limit,
                offset=offset,
                with_payload=[PAYLOAD_DOC_ID],
            )
        )
        return [
            VectorHit(doc_id=str((point.payload or {})[PAYLOAD_DOC_ID]), score=float(point.score))
            for point in response.points
        ]

    async def score(self, vector: Sequence[float], point_ids: Sequence[str]) -> dict[str, float]:
        """Cosine similarity of `vector` with each of `point_ids` (missing points are skipped).

        Fetching a bounded set of vectors by id and scoring them here costs the same however
        big the collection is, where local mode evaluates a payload filter on every point.
        """
        if not point_ids:
            return {}
        await self.ensure()
        query = np.asarray(vector, dtype=np.float32)
        query /= np.linalg.norm(query) or 1.0
        out: dict[str, float] = {}
        for start in range(0, len(point_ids), 256):
            chunk = list(point_ids[start : start + 256])
            records = await self._call(
                lambda c, chunk=chunk: c.retrieve(  # type: ignore[misc]
                    self.collection, ids=chunk, with_payload=False, with_vectors=True
                )
            )
            if not records:
                continue
            matrix = np.asarray([record.vector for record in records], dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1)
            norms[norms == 0] = 1.0
            for record, score in zip(records, (matrix @ query) / norms, strict=True):
                out[str(record.id)] = float(score)
        return out

    @staticmethod
    def _prefix_filter(namespace_prefix: Sequence[str]) -> qm.Filter | None:
        if not namespace_prefix:
            return None
        return qm.Filter(
            must=[
                qm.FieldCondition(
                    key=PAYLOAD_PREFIXES, match=qm.MatchValue(value=".".join(namespace_prefix))
                )
            ]
        )
