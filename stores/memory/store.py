"""`MongoStore`: LangGraph's `BaseStore` with items in MongoDB and memory vectors in Qdrant."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)
from pymongo import ASCENDING, DESCENDING, DeleteOne, IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from stores.errors import UnavailableError
from stores.memory.filters import check_filter, matches_filter, mongo_filter
from stores.memory.mongo import NEVER_US, Document, MongoGateway, now_us
from stores.memory.vectors import FieldVector, MemoryVectors, point_id
from stores.tracing import traced

log = logging.getLogger(__name__)

COLLECTION = "agent_memory"
_ID_NAMESPACE = uuid.UUID("5b0f8f3e-5d0c-4c57-9a55-7e1f3a2c6d10")
_SORT_RECENT = [("updated_at", DESCENDING), ("_id", ASCENDING)]
_FETCH_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ValueLimits:
    """Bounds of a value written through the HTTP API: JSON size in bytes, nesting depth."""

    max_bytes: int = 65_536
    max_depth: int = 16


_OP_NAMES: dict[type, str] = {
    GetOp: "get",
    SearchOp: "search",
    PutOp: "put",
    ListNamespacesOp: "list",
}


def join_namespace(namespace: Sequence[str]) -> str:
    """The namespace as one string, labels joined by `.` (labels may not contain `.`)."""
    return ".".join(namespace)


def document_id(namespace: Sequence[str], key: str) -> str:
    """The Mongo `_id` of item (namespace, key): a uuid5, also the root of its vector ids."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{join_namespace(namespace)}\x00{key}"))


def prefix_condition(namespace_prefix: Sequence[str]) -> Document:
    """A Mongo condition on `ns_path` matching `namespace_prefix` and every namespace under it.

    Namespaces are matched as strings (nx-27017 cannot compare arrays): `ns_path` is the joined
    namespace plus a trailing ".", so the namespaces under ("a", "b") are exactly the paths in
    ["a.b.", "a.b/"), "/" being the character after ".". One range, no `$or` (which nx-27017
    evaluates by scanning the collection).
    """
    if not namespace_prefix:
        return {}
    path = join_namespace(namespace_prefix) + "."
    return {"ns_path": {"$gte": path, "$lt": path[:-1] + "/"}}


def _when(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


def _item(doc: Document) -> Item:
    return Item(
        value=doc["value"],
        key=doc["key"],
        namespace=tuple(doc["ns"]),
        created_at=_when(doc["created_at"]),
        updated_at=_when(doc["updated_at"]),
    )


def _search_item(doc: Document, score: float | None = None) -> SearchItem:
    return SearchItem(
        namespace=tuple(doc["ns"]),
        key=doc["key"],
        value=doc["value"],
        created_at=_when(doc["created_at"]),
        updated_at=_when(doc["updated_at"]),
        score=score,
    )


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    pairs = (
        zip(namespace, path, strict=False)
        if condition.match_type == "prefix"
        else zip(reversed(namespace), reversed(path), strict=False)
    )
    return all(want == "*" or have == want for have, want in pairs)


def _literal_prefix(condition: MatchCondition) -> tuple[str, ...]:
    if condition.match_type != "prefix":
        return ()
    literal: list[str] = []
    for label in condition.path:
        if label == "*":
            break
        literal.append(label)
    return tuple(literal)


def _check_put_namespace(namespace: tuple[str, ...]) -> None:
    if not namespace:
        raise InvalidNamespaceError("Namespace cannot be empty.")
    if namespace[0] == "langgraph":
        raise InvalidNamespaceError(
            f'Root label for namespace cannot be "langgraph". Got: {namespace}'
        )


class MongoStore(BaseStore):
    """A LangGraph store: one MongoDB document per (namespace, key), vectors in Qdrant.

    Documents live in collection `agent_memory`: `_id` (uuid5 of namespace and key), `ns`
    (labels), `ns_key` (labels joined by `.`, unique with `key`), `ns_path` (`ns_key` + "."
    for prefix ranges), `key`, `value`, `index` (the put's index argument), `vector_paths`
    (the fields that have vectors), `created_at`/`updated_at`/`expires_at` (integer
    microseconds; `expires_at` is 2**62 without TTL) and `ttl_minutes`. Expired items are
    invisible at once and purged by `asweep_ttl`. With an embedder, text at the index paths of
    each value is embedded into `vectors`, and `search(query=...)` ranks by cosine similarity:
    when at most `exact_scan_limit` items match the prefix and filter (a user's memories), their
    vectors are fetched by id and scored exactly, so the cost follows the user's memories and not
    the whole store; larger scopes use Qdrant's filtered nearest-neighbour search.

    The async methods are the real ones; the sync ones hand the work to the event loop the
    store was opened on, so they must be called from another thread.
    """

    supports_ttl = True

    def __init__(
        self,
        *,
        mongo: MongoGateway,
        collection: str = COLLECTION,
        vectors: MemoryVectors | None = None,
        embedder: Embeddings | None = None,
        index_fields: Sequence[str] = ("text", "content"),
        ttl: TTLConfig | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        exact_scan_limit: int = 1000,
        value_limits: ValueLimits | None = None,
    ) -> None:
        if (vectors is None) != (embedder is None):
            raise ValueError("vectors and embedder go together: pass both or neither")
        self.mongo = mongo
        self.items: AsyncCollection[Document] = mongo.db.get_collection(collection)
        self.vectors = vectors
        self.embedder = embedder
        self.index_fields = list(index_fields)
        self.ttl_config = ttl or {"refresh_on_read": True, "omit_expired": True}
        self.loop = loop
        self.exact_scan_limit = exact_scan_limit
        self.value_limits = value_limits or ValueLimits()
        self._indexes_ready = False
        self._index_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def ensure_indexes(self) -> None:
        """Create the collection's indexes once; raises `UnavailableError` while Mongo is down."""
        if self._indexes_ready:
            return
        async with self._index_lock:
            if self._indexes_ready:
                return
            models = [
                IndexModel([("ns_key", ASCENDING), ("key", ASCENDING)], unique=True),
                IndexModel([("ns_path", ASCENDING), ("updated_at", DESCENDING)]),
                IndexModel([("expires_at", ASCENDING)]),
            ]
            await self.mongo.write(
                "create the memory indexes", lambda: self.items.create_indexes(models)
            )
            self._indexes_ready = True

    @property
    def semantic(self) -> bool:
        """Whether `search(query=...)` ranks by meaning (an embedder is configured)."""
        return self.vectors is not None and self.embedder is not None

    # -- BaseStore ---------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run `abatch` on the store's event loop from another thread."""
        loop = self.loop
        if loop is None:
            raise RuntimeError("MongoStore.batch needs the event loop the store was opened on")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise asyncio.InvalidStateError(
                "MongoStore.batch was called on the event loop thread; use abatch/aget/asearch"
            )
        return asyncio.run_coroutine_threadsafe(self.abatch(list(ops)), loop).result()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run gets, searches and namespace listings, then puts (last put of a key wins), in a
        `memory` span named for the operations (get, search, put, list, or batch when mixed)."""
        ops = list(ops)
        kinds = {_OP_NAMES.get(type(op), "other") for op in ops}
        op = kinds.pop() if len(kinds) == 1 else "batch"
        with traced("memory", f"memory {op}", **{"memory.op": op}, **{"memory.ops": len(ops)}):
            return await self._abatch(ops)

    async def _abatch(self, ops: list[Op]) -> list[Result]:
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                _check_put_namespace(op.namespace)
            elif isinstance(op, SearchOp):
                check_filter(op.filter or {})
            elif not isinstance(op, (GetOp, ListNamespacesOp)):
                raise ValueError(f"unknown store operation {type(op).__name__}")
        await self.ensure_indexes()
        results: list[Result] = [None] * len(ops)
        gets = [(i, op) for i, op in enumerate(ops) if isinstance(op, GetOp)]
        if gets:
            items = await self._get([op for _, op in gets])
            for (i, _), item in zip(gets, items, strict=True):
                results[i] = item
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[i] = await self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = await self._list_namespaces(op)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op
        if puts:
            await self._put(list(puts.values()))
        return results

    # -- reads -------------------------------------------------------------------------------

    def _alive(self, now: int) -> Document:
        return {"expires_at": {"$gt": now}}

    async def _find(
        self, query: Document, *, sort: list[tuple[str, int]] | None = None, limit: int = 0
    ) -> list[Document]:
        async def run() -> list[Document]:
            cursor = self.items.find(query)
            if sort:
                cursor = cursor.sort(sort)
            if limit:
                cursor = cursor.limit(limit)
            return await cursor.to_list(None)

        return await self.mongo.read("read memories", run)

    async def _get(self, ops: Sequence[GetOp]) -> list[Item | None]:
        now = now_us()
        ids = list({document_id(op.namespace, op.key) for op in ops})
        docs = await self._find({"_id": {"$in": ids}, **self._alive(now)})
        by_id = {doc["_id"]: doc for doc in docs}
        refresh = [
            by_id[doc_id]
            for doc_id in {document_id(op.namespace, op.key) for op in ops if op.refresh_ttl}
            if doc_id in by_id
        ]
        await self._refresh_ttl(refresh)
        return [
            _item(by_id[doc_id]) if (doc_id := document_id(op.namespace, op.key)) in by_id else None
            for op in ops
        ]

    async def _refresh_ttl(self, docs: Sequence[Document]) -> None:
        groups: dict[float, list[str]] = defaultdict(list)
        for doc in docs:
            minutes = doc.get("ttl_minutes")
            if minutes is not None:
                groups[float(minutes)].append(doc["_id"])
        now = now_us()
        for minutes, ids in groups.items():
            expires = now + int(minutes * 60_000_000)
            await self.mongo.write(
                "refresh memory TTLs",
                lambda ids=ids, expires=expires: self.items.update_many(  # type: ignore[misc]
                    {"_id": {"$in": ids}}, {"$set": {"expires_at": expires}}
                ),
            )

    async def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.limit <= 0:
            return []
        offset = max(op.offset, 0)
        if op.query and self.semantic:
            found = await self._semantic_search(op, offset)
        else:
            found = [(doc, None) for doc in await self._filtered_recent(op, offset)]
        if op.refresh_ttl:
            await self._refresh_ttl([doc for doc, _ in found])
        return [_search_item(doc, score) for doc, score in found]

    async def _filtered_recent(self, op: SearchOp, offset: int) -> list[Document]:
        query = {
            **prefix_condition(op.namespace_prefix),
            **self._alive(now_us()),
            **mongo_filter(op.filter),
        }
        if not op.filter:

            async def page() -> list[Document]:
                cursor = self.items.find(query).sort(_SORT_RECENT).skip(offset).limit(op.limit)
                return await cursor.to_list(None)

            return await self.mongo.read("search memories", page)

        async def scan() -> list[Document]:
            kept: list[Document] = []
            skipped = 0
            cursor = (
                self.items.find(query)
                .sort(_SORT_RECENT)
                .batch_size(max(100, 2 * (offset + op.limit)))
            )
            try:
                async for doc in cursor:
                    if not matches_filter(doc.get("value"), op.filter):
                        continue
                    if skipped < offset:
                        skipped += 1
                        continue
                    kept.append(doc)
                    if len(kept) >= op.limit:
                        break
            finally:
                await cursor.close()
            return kept

        return await self.mongo.read("search memories", scan)

    async def _semantic_search(
        self, op: SearchOp, offset: int
    ) -> list[tuple[Document, float | None]]:
        if self.vectors is None or not op.query:
            return []
        scope = {
            **prefix_condition(op.namespace_prefix),
            **self._alive(now_us()),
            **mongo_filter(op.filter),
        }
        fields = {"_id": 1, "vector_paths": 1, **({"value": 1} if op.filter else {})}
        limit = self.exact_scan_limit + 1
        vector, candidates = await asyncio.gather(
            self._embed_query(op.query),
            self.mongo.read(
                "search memories",
                lambda: self.items.find(scope, fields).limit(limit).to_list(None),
            ),
        )
        if len(candidates) <= self.exact_scan_limit:
            return await self._exact_search(op, offset, vector, candidates)
        need = offset + op.limit
        page = max(2 * need, 20)
        seen: set[str] = set()
        ranked: list[tuple[Document, float | None]] = []
        scanned = 0
        while True:
            hits = await self._vector_call(
                "search memory vectors",
                self.vectors.search(
                    vector, namespace_prefix=op.namespace_prefix, limit=page, offset=scanned
                ),
            )
            scanned += len(hits)
            fresh = []
            for hit in hits:  # max-pooling: a memory's best vector comes first
                if hit.doc_id not in seen:
                    seen.add(hit.doc_id)
                    fresh.append(hit)
            if fresh:
                docs = await self._find(
                    {
                        "_id": {"$in": [hit.doc_id for hit in fresh]},
                        **self._alive(now_us()),
                        **mongo_filter(op.filter),
                    }
                )
                by_id = {doc["_id"]: doc for doc in docs}
                for hit in fresh:
                    doc = by_id.get(hit.doc_id)  # a missing doc: vector of a purged memory
                    if doc is not None and matches_filter(doc.get("value"), op.filter):
                        ranked.append((doc, hit.score))
            if len(ranked) >= need or len(hits) < page:
                break
            page = min(page * 2, 2000)
        return ranked[offset:need]

    async def _exact_search(
        self, op: SearchOp, offset: int, vector: list[float], candidates: list[Document]
    ) -> list[tuple[Document, float | None]]:
        """Score every candidate's vectors (fetched by id) and keep the best per memory."""
        assert self.vectors is not None
        owner: dict[str, str] = {}
        for doc in candidates:
            if matches_filter(doc.get("value"), op.filter):
                for path in doc.get("vector_paths") or []:
                    owner[point_id(doc["_id"], path)] = doc["_id"]
        scores = await self._vector_call(
            "score memory vectors", self.vectors.score(vector, list(owner))
        )
        best: dict[str, float] = {}
        for pid, score in scores.items():
            doc_id = owner[pid]
            best[doc_id] = max(score, best.get(doc_id, -2.0))
        ranked = sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))[
            offset : offset + op.limit
        ]
        if not ranked:
            return []
        docs = await self._find({"_id": {"$in": [doc_id for doc_id, _ in ranked]}})
        by_id = {doc["_id"]: doc for doc in docs}
        return [(by_id[doc_id], score) for doc_id, score in ranked if doc_id in by_id]

    async def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = [c for c in op.match_conditions or () if c.path]
        clauses: list[Document] = [self._alive(now_us())]
        clauses.extend(prefix_condition(p) for c in conditions if (p := _literal_prefix(c)))
        query: Document = {"$and": clauses} if len(clauses) > 1 else clauses[0]
        keys = await self.mongo.read(
            "list memory namespaces", lambda: self.items.distinct("ns_key", query)
        )
        found: set[tuple[str, ...]] = set()
        for joined in keys:
            namespace = tuple(str(joined).split("."))
            if all(_matches(c, namespace) for c in conditions):
                found.add(namespace[: op.max_depth] if op.max_depth is not None else namespace)
        start = max(op.offset, 0)
        return sorted(found)[start : start + max(op.limit, 0)]

    # -- writes ------------------------------------------------------------------------------

    async def _put(self, ops: Sequence[PutOp]) -> None:
        now = now_us()
        writes: list[UpdateOne | DeleteOne] = []
        indexed: list[tuple[str, PutOp, list[tuple[str, str]]]] = []
        for op in ops:
            if op.value is not None and self.semantic:
                doc_id = document_id(op.namespace, op.key)
                indexed.append((doc_id, op, self._texts(op.value, op.index)))
        vectors = await self._embed_fields(indexed)  # before writing: a failure leaves no trace
        paths = {
            doc_id: [f.path for f in fields]
            for (doc_id, _, _), fields in zip(indexed, vectors, strict=True)
        }
        old_paths = await self._vector_paths([document_id(op.namespace, op.key) for op in ops])
        stale: list[str] = []
        for op in ops:
            doc_id = document_id(op.namespace, op.key)
            new_paths = paths.get(doc_id, [])
            stale.extend(
                point_id(doc_id, p) for p in old_paths.get(doc_id, []) if p not in new_paths
            )
            if op.value is None:
                writes.append(DeleteOne({"_id": doc_id}))
                continue
            expires = NEVER_US if op.ttl is None else now + int(float(op.ttl) * 60_000_000)
            writes.append(
                UpdateOne(
                    {"_id": doc_id},
                    {
                        "$set": {
                            "ns": list(op.namespace),
                            "ns_key": join_namespace(op.namespace),
                            "ns_path": join_namespace(op.namespace) + ".",
                            "key": op.key,
                            "value": dict(op.value),
                            "index": op.index if op.index is False else (op.index or None),
                            "vector_paths": new_paths,
                            "updated_at": now,
                            "expires_at": expires,
                            "ttl_minutes": None if op.ttl is None else float(op.ttl),
                        },
                        "$setOnInsert": {"created_at": now},
                    },
                    upsert=True,
                )
            )
        await self.mongo.write(
            f"write {len(writes)} memories", lambda: self.items.bulk_write(writes, ordered=True)
        )
        if self.vectors is None:
            return
        store = self.vectors
        await self._vector_call("delete memory vectors", store.delete_points(stale))
        for (doc_id, op, _), fields in zip(indexed, vectors, strict=True):
            await self._vector_call(
                "index a memory", store.upsert(doc_id, op.namespace, op.key, fields)
            )

    async def _vector_paths(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """The field paths that have vectors, per memory id (as recorded in MongoDB)."""
        if self.vectors is None or not ids:
            return {}
        docs = await self.mongo.read(
            "read the memories being written",
            lambda: self.items.find({"_id": {"$in": list(ids)}}, {"vector_paths": 1}).to_list(None),
        )
        return {doc["_id"]: list(doc.get("vector_paths") or []) for doc in docs}

    async def _drop_vectors(self, docs: Sequence[Document]) -> None:
        if self.vectors is None:
            return
        ids = [point_id(doc["_id"], p) for doc in docs for p in doc.get("vector_paths") or []]
        await self._vector_call("delete memory vectors", self.vectors.delete_points(ids))

    def _texts(self, value: Mapping[str, Any], index: Any) -> list[tuple[str, str]]:
        """(path, text) pairs to embed for `value`, per the put's `index` or the store default.

        With the store default, a value none of whose default paths holds text is embedded
        whole (path `$`), so every item stays findable by meaning.
        """
        if index is False:
            return []
        paths = list(index) if index else self.index_fields
        out: list[tuple[str, str]] = []
        for path in paths:
            texts = get_text_at_path(value, "$" if path == "$" else tokenize_path(path))
            if len(texts) == 1:
                out.append((path, texts[0]))
            else:
                out.extend((f"{path}.{i}", text) for i, text in enumerate(texts))
        kept = [(path, text) for path, text in out if text.strip()]
        if not kept and not index and value:
            kept = [("$", get_text_at_path(value, "$")[0])]
        return kept

    async def _embed_fields(
        self, indexed: Sequence[tuple[str, Any, list[tuple[str, str]]]]
    ) -> list[list[FieldVector]]:
        texts = [text for _, _, pairs in indexed for _, text in pairs]
        if not texts:
            return [[] for _ in indexed]
        assert self.embedder is not None
        try:
            embedded = await self.embedder.aembed_documents(texts)
        except Exception as error:  # provider errors vary; the write has not happened yet
            raise UnavailableError(f"the embedder failed: {error}") from error
        out: list[list[FieldVector]] = []
        position = 0
        for _, _, pairs in indexed:
            fields = []
            for path, _ in pairs:
                fields.append(FieldVector(path=path, vector=list(embedded[position])))
                position += 1
            out.append(fields)
        return out

    async def _embed_query(self, query: str) -> list[float]:
        assert self.embedder is not None
        try:
            return list(await self.embedder.aembed_query(query))
        except Exception as error:  # provider errors vary
            raise UnavailableError(f"the embedder failed: {error}") from error

    @staticmethod
    async def _vector_call(what: str, call: Any) -> Any:
        try:
            return await call
        except UnavailableError:
            raise
        except Exception as error:  # qdrant raises transport-specific errors
            raise UnavailableError(
                f"Qdrant is unavailable: could not {what}; MongoDB holds the memories, "
                "run `switchboard memory reindex` once Qdrant is back"
            ) from error

    # -- beyond BaseStore --------------------------------------------------------------------

    async def adelete_where(
        self, namespace_prefix: Sequence[str], *, key: str | None = None
    ) -> int:
        """Delete every item under `namespace_prefix` (only those named `key`, if given).

        Returns:
            How many items were deleted; their vectors go too.
        """
        await self.ensure_indexes()
        query = {**prefix_condition(namespace_prefix)}
        if key is not None:
            query["key"] = key
        docs = await self.mongo.read(
            "find memories to delete",
            lambda: self.items.find(query, {"_id": 1, "vector_paths": 1}).to_list(None),
        )
        for start in range(0, len(docs), _FETCH_CHUNK):
            chunk = docs[start : start + _FETCH_CHUNK]
            ids = [doc["_id"] for doc in chunk]
            await self.mongo.write(
                "delete memories",
                lambda ids=ids: self.items.delete_many({"_id": {"$in": ids}}),  # type: ignore[misc]
            )
            await self._drop_vectors(chunk)
        return len(docs)

    async def acount(self, namespace_prefix: Sequence[str] = ()) -> int:
        """How many live (unexpired) items lie under `namespace_prefix`."""
        await self.ensure_indexes()
        query = {**prefix_condition(namespace_prefix), **self._alive(now_us())}
        return await self.mongo.read("count memories", lambda: self.items.count_documents(query))

    async def asweep_ttl(self) -> int:
        """Delete expired items and their vectors; returns how many were purged."""
        await self.ensure_indexes()
        now = now_us()
        docs = await self.mongo.read(
            "find expired memories",
            lambda: self.items.find(
                {"expires_at": {"$lte": now}}, {"_id": 1, "vector_paths": 1}
            ).to_list(None),
        )
        for start in range(0, len(docs), _FETCH_CHUNK):
            chunk = docs[start : start + _FETCH_CHUNK]
            ids = [doc["_id"] for doc in chunk]
            await self.mongo.write(
                "purge expired memories",
                lambda ids=ids: self.items.delete_many(  # type: ignore[misc]
                    {"_id": {"$in": ids}, "expires_at": {"$lte": now}}
                ),
            )
            await self._drop_vectors(chunk)
        return len(docs)

    async def areindex(self, *, batch_size: int = 256) -> int:
        """Rebuild the vector collection from MongoDB (drop, recreate, re-embed every item).

        Returns:
            How many items were indexed (items put with `index=False` are skipped).
        """
        if self.vectors is None or self.embedder is None:
            raise ValueError("this store has no embedder; there is nothing to reindex")
        await self.ensure_indexes()
        await self._vector_call("recreate the memory vectors", self.vectors.recreate())
        indexed = 0
        last_id = ""
        while True:
            query = {"_id": {"$gt": last_id}, **self._alive(now_us())}
            docs = await self._find(query, sort=[("_id", ASCENDING)], limit=batch_size)
            if not docs:
                return indexed
            last_id = docs[-1]["_id"]
            batch = [(doc["_id"], doc, self._texts(doc["value"], doc.get("index"))) for doc in docs]
            vectors = await self._embed_fields(batch)
            updates: list[UpdateOne] = []
            for (doc_id, doc, _), fields in zip(batch, vectors, strict=True):
                paths = [field.path for field in fields]
                if paths != list(doc.get("vector_paths") or []):
                    updates.append(UpdateOne({"_id": doc_id}, {"$set": {"vector_paths": paths}}))
                if fields:
                    await self._vector_call(
                        "index a memory",
                        self.vectors.upsert(doc_id, tuple(doc["ns"]), doc["key"], fields),
                    )
                    indexed += 1
            if updates:
                await self.mongo.write(
                    "record memory vector paths",
                    lambda updates=updates: self.items.bulk_write(updates),  # type: ignore[misc]
                )
