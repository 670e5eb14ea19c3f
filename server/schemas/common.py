"""Schemas shared by every route: pages, errors, bounded JSON objects."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

T = TypeVar("T")

Identifier = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
]
"""A name used as a key: letters, digits, `_` and `-`, starting with a letter or `_`."""

JsonObject = Annotated[dict[str, Any], Field(default_factory=dict)]


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are an error that names the field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PatchModel(RequestModel):
    """Base of partial updates: omitted fields stay as they are; `null` is not a value."""

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            raise ValueError(f"{info.field_name} may not be null; omit it to keep its value")
        return value


class ResponseModel(BaseModel):
    """Base of responses: built from ORM rows, whose `metadata_` is exposed as `metadata`."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class Page(ResponseModel, Generic[T]):
    """One page of a listing: `items`, the `total` that match, and the window asked for."""

    items: list[T]
    total: int
    limit: int
    offset: int


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer the server makes on purpose."""

    detail: str
    field: str | None = None


Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No record with that id."}}
CONFLICT: Responses = {409: {"model": ErrorBody, "description": "Conflicts with existing data."}}
