"""Schemas of documents and semantic search."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field

from server.schemas.common import Identifier, RequestModel, ResponseModel

DocType = Literal["txt", "md", "html", "pdf"]


class DocumentOut(ResponseModel):
    """An ingested document: where it came from, its content hash and how many chunks it has."""

    id: uuid.UUID
    collection: str
    source: str
    doc_type: str
    title: str
    content_hash: str
    size_bytes: int
    chunk_count: int
    metadata: Annotated[
        dict[str, Any],
        Field(
            validation_alias=AliasChoices("metadata_", "metadata"), serialization_alias="metadata"
        ),
    ]
    created_at: datetime
    updated_at: datetime


class IngestOut(DocumentOut):
    """A document after an upload, with what the upload did to it."""

    status: Literal["created", "updated", "unchanged"]


class SearchFilter(RequestModel):
    """Restrict a search to chunks whose payload matches every field given."""

    source: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    doc_type: DocType | None = None
    collection: Identifier | None = None


class SearchRequest(RequestModel):
    """A hybrid search: the `k` chunks that best match `query`, by meaning and by words."""

    query: Annotated[str, Field(min_length=1, max_length=4000)]
    k: Annotated[int, Field(ge=1, le=50)] = 4
    filter: SearchFilter = Field(default_factory=SearchFilter)
    dedup: bool = Field(False, description="At most one hit (the best) per document.")


class SearchHitOut(ResponseModel):
    """One matching chunk, ordered by `fused`; `score` is cosine similarity (higher is closer)."""

    document_id: uuid.UUID
    chunk_index: int
    collection: str
    source: str
    doc_type: str
    title: str
    heading_path: list[str]
    text: str
    score: float
    fused: float


class SearchOut(ResponseModel):
    """The hits of a search, best first."""

    query: str
    hits: list[SearchHitOut]
