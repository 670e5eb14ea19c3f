"""`/documents` (upload, list, read, delete) and `/search` (hybrid search of the chunks)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from pydantic.json_schema import SkipJsonSchema

from server.auth.access import refuse_if_readable
from server.auth.caller import CallerDep
from server.auth.collections import claim_for_upload, collections_for
from server.deps import KnowledgeDep, Limit, Offset
from server.schemas.common import NOT_FOUND, ErrorBody, Identifier, Page, Responses
from server.schemas.knowledge import DocumentOut, IngestOut, SearchHitOut, SearchOut, SearchRequest
from stores.errors import NotFoundError
from stores.extract import DocumentTooLargeError

router = APIRouter(tags=["knowledge"])

READ_CHUNK = 1024 * 1024
UPLOAD_ANSWERS: Responses = {
    200: {
        "model": IngestOut,
        "description": "The source was in the collection: this version replaced it "
        '(`status` "updated"), or was the same (`status` "unchanged").',
    },
    409: {
        "model": ErrorBody,
        "description": "The collection has the old layout: run `switchboard reindex`.",
    },
    413: {"model": ErrorBody, "description": "The file is over MAX_UPLOAD_BYTES."},
    415: {"model": ErrorBody, "description": "Not a .txt, .md, .html or .pdf file."},
    422: {"model": ErrorBody, "description": "Empty, corrupt, or no text; or a bad field."},
    503: {"model": ErrorBody, "description": "The vector store is unavailable."},
}


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while chunk := await upload.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise DocumentTooLargeError(
                f"{upload.filename or 'the file'} is over the limit of {limit} bytes"
            )
        parts.append(chunk)
    return b"".join(parts)


# The file part as the document says it: its types (the filename's extension decides; without
# one, the part's Content-Type does), and its Content-Disposition, which must carry a
# `filename` (RFC 7578 4.2), as browsers, curl -F and HTTP libraries send it: a part without
# one is a text field to the multipart parser, and is refused (422 naming `file`).
UPLOAD_TYPES = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "encoding": {
                    "file": {
                        "contentType": "text/plain, text/markdown, text/html, application/pdf",
                        "headers": {
                            "Content-Disposition": {
                                "required": True,
                                "description": 'form-data; name="file"; filename="…": a file '
                                "part without a filename is a text field, refused.",
                                "schema": {"type": "string", "pattern": ";\\s*filename="},
                            }
                        },
                    }
                }
            }
        }
    }
}


@router.post(
    "/documents",
    status_code=status.HTTP_201_CREATED,
    responses=UPLOAD_ANSWERS,
    openapi_extra=UPLOAD_TYPES,
)
async def upload_document(
    knowledge: KnowledgeDep,
    response: Response,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="A .txt, .md, .html or .pdf file.")],
    collection: Annotated[
        Identifier | SkipJsonSchema[None],
        Form(description="Knowledge base (default: the configured one)."),
    ] = None,
    source: Annotated[
        str | SkipJsonSchema[None],
        Form(min_length=1, max_length=2000, description="Identity in the collection (filename)."),
    ] = None,
) -> IngestOut:
    """Ingest a file: 201 when new, 200 when it replaced an older version or was unchanged.

    A new collection becomes the uploader's; an existing one must be theirs (or they an admin).
    """
    target = collection or knowledge.default_collection
    await claim_for_upload(caller, knowledge.database, target)
    data = await _read_limited(file, knowledge.max_bytes)
    result = await knowledge.ingest_bytes(
        data,
        filename=file.filename or "upload",
        collection=target,
        source=source,
        content_type=file.content_type,
    )
    if result.status != "created":
        response.status_code = status.HTTP_200_OK
    document = DocumentOut.model_validate(result.document)
    return IngestOut(**document.model_dump(), status=result.status)


@router.get("/documents")
async def list_documents(
    knowledge: KnowledgeDep,
    caller: CallerDep,
    limit: Limit = 50,
    offset: Offset = 0,
    collection: Annotated[
        Identifier | None, Query(description="Only documents of this collection.")
    ] = None,
) -> Page[DocumentOut]:
    """Documents, newest first (of the collections the caller may read)."""
    within = await collections_for(caller, knowledge.database, "search")
    page = await knowledge.list_documents(
        collection=collection, limit=limit, offset=offset, within=within
    )
    return Page[DocumentOut].model_validate(page)


@router.get("/documents/{document_id}", responses=NOT_FOUND)
async def get_document(
    document_id: uuid.UUID, knowledge: KnowledgeDep, caller: CallerDep
) -> DocumentOut:
    """One document."""
    within = await collections_for(caller, knowledge.database, "read")
    return DocumentOut.model_validate(await knowledge.get_document(document_id, within=within))


@router.delete(
    "/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND
)
async def delete_document(
    document_id: uuid.UUID, knowledge: KnowledgeDep, caller: CallerDep
) -> None:
    """Delete a document and its vectors (from a collection the caller may change)."""
    within = await collections_for(caller, knowledge.database, "update")
    try:
        await knowledge.delete_document(document_id, within=within)
    except NotFoundError:

        async def readable(_: object) -> object:
            names = await collections_for(caller, knowledge.database, "read")
            return await knowledge.get_document(document_id, within=names)

        await refuse_if_readable(
            caller, "collections", {"collection": None}, readable, what=f"document {document_id}"
        )
        raise


@router.post("/search")
async def search(body: SearchRequest, knowledge: KnowledgeDep, caller: CallerDep) -> SearchOut:
    """The `k` chunks that best match `query` (dense + lexical, fused), optionally filtered;
    only in collections the caller may read."""
    collection = body.filter.collection
    wanted = None if collection is None else [collection]
    within = await collections_for(caller, knowledge.database, "search")
    if within is not None:
        wanted = [name for name in (wanted or within) if name in within]
        if not wanted:
            return SearchOut(query=body.query, hits=[])
    hits = await knowledge.search(
        body.query,
        k=body.k,
        collections=wanted,
        source=body.filter.source,
        doc_type=body.filter.doc_type,
        dedup=body.dedup,
    )
    return SearchOut(query=body.query, hits=[SearchHitOut.model_validate(hit) for hit in hits])
