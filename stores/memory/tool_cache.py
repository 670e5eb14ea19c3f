"""`tool_cache`: tool results in MongoDB, keyed by tool name and canonical args, with expiry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

from stores.memory.mongo import Document, MongoGateway, now_us

COLLECTION = "tool_cache"


def canonical_args(args: Mapping[str, Any]) -> str:
    """The arguments as canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(tool: str, args: Mapping[str, Any]) -> str:
    """The cache `_id` of a call: `<tool>:<sha256 of the canonical args>`."""
    digest = hashlib.sha256(canonical_args(args).encode("utf-8")).hexdigest()
    return f"{tool}:{digest}"


class ToolCache:
    """Cached tool results with a time to live, shared by every process on the same MongoDB.

    Results are stored as JSON text (any JSON value, whatever its keys), and an expired entry
    is a miss at once; `sweep` deletes expired entries. Outages raise `UnavailableError`, so a
    caller can fall back to calling the tool.
    """

    def __init__(self, mongo: MongoGateway, *, collection: str = COLLECTION) -> None:
        self.mongo = mongo
        self.entries: AsyncCollection[Document] = mongo.db.get_collection(collection)
        self._indexes_ready = False

    async def _ensure_indexes(self) -> None:
        if self._indexes_ready:
            return
        models = [IndexModel([("expires_at", ASCENDING)]), IndexModel([("tool", ASCENDING)])]
        await self.mongo.write(
            "create the tool cache indexes", lambda: self.entries.create_indexes(models)
        )
        self._indexes_ready = True

    async def get(self, tool: str, args: Mapping[str, Any]) -> Any | None:
        """The cached result of `tool(**args)`, or None when absent or expired."""
        await self._ensure_indexes()
        query = {"_id": cache_key(tool, args), "expires_at": {"$gt": now_us()}}
        doc = await self.mongo.read("read the tool cache", lambda: self.entries.find_one(query))
        if doc is None:
            return None
        return json.loads(doc["result"])

    async def put(
        self, tool: str, args: Mapping[str, Any], result: Any, *, ttl_seconds: float
    ) -> None:
        """Cache `result` (any JSON value) of `tool(**args)` for `ttl_seconds`."""
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        await self._ensure_indexes()
        now = now_us()
        doc = {
            "tool": tool,
            "args": canonical_args(args),
            "result": json.dumps(result, ensure_ascii=False),
            "created_at": now,
            "expires_at": now + int(ttl_seconds * 1_000_000),
        }
        key = cache_key(tool, args)
        await self.mongo.write(
            f"cache a result of {tool}",
            lambda: self.entries.update_one({"_id": key}, {"$set": doc}, upsert=True),
        )

    async def invalidate(self, tool: str, args: Mapping[str, Any] | None = None) -> int:
        """Forget one cached call, or every call of `tool` when `args` is None."""
        await self._ensure_indexes()
        query: Document = {"tool": tool} if args is None else {"_id": cache_key(tool, args)}
        result = await self.mongo.write(
            f"invalidate cached results of {tool}", lambda: self.entries.delete_many(query)
        )
        return int(result.deleted_count)

    async def sweep(self) -> int:
        """Delete expired entries; returns how many."""
        await self._ensure_indexes()
        query = {"expires_at": {"$lte": now_us()}}
        result = await self.mongo.write(
            "purge the tool cache", lambda: self.entries.delete_many(query)
        )
        return int(result.deleted_count)
