"""`/documents` (upload, list, read, delete) and `/search` (hybrid search of the chunks)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from server.auth.access import refuse_if_readable
from server.auth.caller import CallerDep
from server.auth.collections import claim_for_upload, collections_for
from server.deps import KnowledgeDep, Limit, Offset
from server.schemas.common import NOT_FOUND, ErrorBody, Identifier, Page, Responses
from server.schemas.knowledge import DocumentOut, IngestOut, SearchHitOut, SearchOut, SearchRequest
from server.uploads import read_upload_form
from stores.errors import NotFoundError
from stores.extract import upload_media_type

router = APIRouter(tags=["knowledge"])

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


# What `stores.extract` reads as text: no NUL (binary), and something left once whitespace
# (Python's and ECMAScript's \s, \x1c-\x1f, \x85, and a byte-order mark) is trimmed.
TEXT_FILE_PATTERN = r"^[^\x00]*[^\x00\s\x1c-\x1f\x85\ufeff][^\x00]*$"
# No NUL: PostgreSQL text cannot hold one.
Source = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")]
# The form's text fields: their type, and what the document says of them.
UPLOAD_FIELDS: dict[str, tuple[TypeAdapter[str], str]] = {
    "collection": (TypeAdapter(Identifier), "Knowledge base (default: the configured one)."),
    "source": (TypeAdapter(Source), "Identity in the collection (filename)."),
}


def _upload_body() -> dict[str, Any]:
    """The request body as the document says it: a multipart/form-data form with a `file`
    and the optional `collection` and `source`. The file is declared as text, the form every
    client can send and the server always reads; a filename is optional (with an extension it
    decides the type, without one the part's Content-Type does when it is one supported type,
    and the content otherwise), so .md, .html and .pdf files are read too (the description
    says so: a pattern cannot say which PDFs have a text layer)."""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "title": "DocumentUpload",
                    "properties": {
                        "file": {
                            "type": "string",
                            "minLength": 1,
                            "pattern": TEXT_FILE_PATTERN,
                            "contentMediaType": "text/plain",
                            "title": "File",
                            "description": "The document. Declared here as what is always "
                            "accepted: UTF-8 text with at least one character that is not "
                            "whitespace, and no NUL (an empty or blank file is a 422). A .md, "
                            ".html or .pdf file is read as such when the part's filename has "
                            "that extension or its Content-Type is text/markdown, text/html "
                            "or application/pdf (a PDF needs a text layer, an HTML page "
                            "visible text; other types are a 415).",
                        },
                        **{
                            name: {
                                **kind.json_schema(),
                                "title": name.title(),
                                "description": description,
                            }
                            for name, (kind, description) in UPLOAD_FIELDS.items()
                        },
                    },
                    "required": ["file"],
                },
                "encoding": {"file": {"contentType": "text/plain"}},
            }
        },
    }


def _fields(sent: dict[str, str]) -> dict[str, str]:
    """The text fields sent, validated (422 naming each bad one, as `Form` fields were)."""
    errors: list[Any] = []
    for name, value in sent.items():
        kind, _ = UPLOAD_FIELDS[name]
        try:
            kind.validate_python(value)
        except ValidationError as error:
            errors += [
                {**e, "loc": ("body", name, *e["loc"])} for e in error.errors(include_url=False)
            ]
    if errors:
        raise RequestValidationError(errors)
    return sent


@router.post(
    "/documents",
    status_code=status.HTTP_201_CREATED,
    responses=UPLOAD_ANSWERS,
    openapi_extra={"requestBody": _upload_body()},
)
async def upload_document(
    request: Request, knowledge: KnowledgeDep, response: Response, caller: CallerDep
) -> IngestOut:
    """Ingest a file: 201 when new, 200 when it replaced an older version or was unchanged.

    A new collection becomes the uploader's; an existing one must be theirs (or they an admin).
    The `file` part may come with or without a filename; no more than MAX_UPLOAD_BYTES of it is
    read (413 past that).
    """
    form = await read_upload_form(request, knowledge.max_bytes)
    fields = _fields(form.fields)
    target = fields.get("collection") or knowledge.default_collection
    await claim_for_upload(caller, knowledge.database, target)
    upload = form.file
    result = await knowledge.ingest_bytes(
        upload.data,
        filename=upload.filename or "upload",
        collection=target,
        source=fields.get("source"),
        content_type=upload_media_type(upload.filename, upload.content_type, upload.data),
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
