"""The MongoDB client of the memory store: acknowledged writes, bounded retries, outages as 503."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, PyMongoError, WriteConcernError

from stores.errors import UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
Document = dict[str, Any]

NEVER_US = 2**62
"""`expires_at` of an item without TTL: numbers compare the same on MongoDB and nx-27017."""


def now_us() -> int:
    """Wall-clock time in integer microseconds since the epoch (how timestamps are stored)."""
    return time.time_ns() // 1000


def is_outage(error: BaseException) -> bool:
    """Whether `error` means MongoDB could not be reached or could not acknowledge a write."""
    return isinstance(error, (ConnectionFailure, WriteConcernError))


class MongoGateway:
    """Runs reads and writes on one database, turning outages into `UnavailableError`.

    Reads fail fast (the client's server-selection timeout); writes are retried `write_retries`
    times with exponential backoff before they are reported, so a write is never dropped
    silently: it either is acknowledged or raises.
    """

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        write_retries: int = 2,
        retry_backoff_s: float = 0.1,
    ) -> None:
        self.client = client
        self.db = client.get_database(database)
        self.write_retries = write_retries
        self.retry_backoff_s = retry_backoff_s

    async def read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one read; an outage raises `UnavailableError` naming `what`."""
        try:
            return await call()
        except PyMongoError as error:
            if is_outage(error):
                raise UnavailableError(
                    f"MongoDB (memory store) is unavailable: could not {what}"
                ) from error
            raise

    async def write(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one idempotent write, retried with backoff on outages, then reported."""
        attempts = self.write_retries + 1
        for attempt in range(attempts):
            try:
                return await call()
            except PyMongoError as error:
                if not is_outage(error):
                    raise
                if attempt + 1 == attempts:
                    raise UnavailableError(
                        f"MongoDB (memory store) is unavailable: could not {what} "
                        f"after {attempts} attempts"
                    ) from error
                delay = self.retry_backoff_s * 2**attempt
                log.warning(
                    "MongoDB write failed (%s); retry %d in %.2fs", error, attempt + 1, delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        """Raise `UnavailableError` unless the server answers `ping`."""
        await self.read("ping", lambda: self.client.admin.command("ping"))


@asynccontextmanager
async def open_mongo(
    uri: str,
    database: str,
    *,
    timeout_ms: int = 2000,
    write_retries: int = 2,
    retry_backoff_s: float = 0.1,
) -> AsyncIterator[MongoGateway]:
    """Open an async pymongo client (w=1, timeouts of `timeout_ms`) and close it on exit.

    The client connects lazily: a server that is down at startup makes requests answer 503
    until it comes back, rather than stopping the process.
    """
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        uri,
        w=1,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 5, 10_000),
        retryWrites=False,  # nx-27017 has no sessions; our own retries are bounded and logged
        appname="switchboard-memory",
    )
    try:
        yield MongoGateway(
            client, database, write_retries=write_retries, retry_backoff_s=retry_backoff_s
        )
    finally:
        await client.close()
