"""Exceptions the stores raise; the server maps each to one HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error a store raises on purpose."""


class NotFoundError(StoreError):
    """A record that was asked for by id does not exist (HTTP 404)."""

    def __init__(self, entity: str, key: object, *, field: str | None = None) -> None:
        self.entity = entity
        self.key = key
        self.field = field
        super().__init__(f"{entity} {key} not found")


class ConflictError(StoreError):
    """A write would break a uniqueness rule or the state of a record (HTTP 409)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InvalidInputError(StoreError, ValueError):
    """A request value a store cannot accept, named by its field (HTTP 422, or `status`: 400
    where langgraph-api answers 400)."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 422) -> None:
        self.field = field
        self.status = status
        super().__init__(message)


class UnavailableError(StoreError):
    """A backing service (database, vector store, memory store) cannot be reached (HTTP 503)."""


class LimitError(StoreError):
    """A per-identity limit is reached (HTTP 429); `retry_after_s` says when to try again."""

    def __init__(
        self, message: str, *, field: str | None = None, retry_after_s: float | None = None
    ) -> None:
        self.field = field
        self.retry_after_s = retry_after_s
        super().__init__(message)
