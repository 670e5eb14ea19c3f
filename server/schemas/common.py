"""Schemas shared by every route: pages, errors, bounded JSON objects."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from stores.json_values import INT64_MAX, INT64_MIN, MAX_FIELD_NAME, check_json
from stores.memory.operations import MAX_OFFSET

T = TypeVar("T")

PageOffset = Annotated[
    int, Field(ge=0, le=MAX_OFFSET, description=f"Items to skip (at most {MAX_OFFSET}).")
]
"""`offset` of a search body: bounded, so a huge one is a 422, never a database error."""

MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 1024 * 1024
JSON_RULES = (
    "JSON whose integers fit in 64 bits, whose numbers are finite, without NUL characters "
    f"(in keys or strings), keys of at most 1024 characters, nested at most {MAX_JSON_DEPTH} "
    "deep."
)


def storable(value: T, info: ValidationInfo) -> T:
    """`value` if PostgreSQL's JSONB, MongoDB and the checkpoint serialiser can all hold it;
    else a validation error naming the part that cannot be held."""
    check_json(
        value,
        field=info.field_name or "value",
        max_depth=MAX_JSON_DEPTH,
        max_bytes=MAX_JSON_BYTES,
        operators=True,
        nul_in_strings=False,
    )
    return value


STORED_JSON = "StoredJson"
_STORED_REF = {"$ref": f"#/components/schemas/{STORED_JSON}"}
_NO_NUL = "^[^\\x00]*$"
_KEYS = {"maxLength": MAX_FIELD_NAME, "pattern": _NO_NUL}
STORED_JSON_SCHEMA: dict[str, Any] = {
    "description": f"Any {JSON_RULES}",
    "anyOf": [
        {"type": "string", "pattern": _NO_NUL},
        {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        {"type": "number", "not": {"type": "integer"}},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": _STORED_REF},
        {"type": "object", "additionalProperties": _STORED_REF, "propertyNames": _KEYS},
    ],
}
"""The JSON schema of what `storable` accepts (but the depth), a component of the document
(server/openapi.py adds it) that the stored fields refer to."""

# Pydantic cannot refer to a schema it did not make: the fields carry a marker, which
# server/openapi.py replaces with these (`stored_json_schema`).
STORED_MARK = "x-stored-json"
_STORED_FORMS: dict[str, dict[str, Any]] = {
    "object": {"type": "object", "additionalProperties": _STORED_REF, "propertyNames": _KEYS},
    "value": dict(_STORED_REF),
}


def stored_json_schema(marked: dict[str, Any]) -> dict[str, Any]:
    """The schema of a field marked `STORED_MARK` (its other keywords kept)."""
    rest = {k: v for k, v in marked.items() if k != STORED_MARK}
    return {**rest, **_STORED_FORMS[marked[STORED_MARK]]}


StoredObject = Annotated[
    dict[str, Any],
    AfterValidator(storable),
    WithJsonSchema({"type": "object", STORED_MARK: "object"}),
    Field(description=f"A JSON object: {JSON_RULES}"),
]
"""A JSON object the server stores (metadata, config, context) or matches stored ones with."""
StoredValue = Annotated[
    Any,
    AfterValidator(storable),
    WithJsonSchema({STORED_MARK: "value"}),
    Field(description=f"Any {JSON_RULES}"),
]
"""Any JSON value the server stores (a run's input, a state update's values)."""
JsonObject = Annotated[StoredObject, Field(default_factory=dict)]
"""A stored JSON object of a request that defaults to `{}`."""

Identifier = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
]
"""A name used as a key: letters, digits, `_` and `-`, starting with a letter or `_`."""


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are an error that names the field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _without_null(schema: dict[str, Any]) -> None:
    for field in schema.get("properties", {}).values():
        options = field.get("anyOf")
        if options and {"type": "null"} in options:
            kept = [option for option in options if option != {"type": "null"}]
            del field["anyOf"]
            if len(kept) == 1:
                field.update(kept[0])
            else:
                field["anyOf"] = kept
        if field.get("default", 0) is None:
            del field["default"]


class PatchModel(RequestModel):
    """Base of partial updates: omitted fields stay as they are; `null` is not a value (and
    the schema says so)."""

    model_config = ConfigDict(json_schema_extra=_without_null)

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


class ValidationIssue(BaseModel):
    """One problem of a request that did not validate, as FastAPI reports it."""

    loc: list[str | int] = Field(description="Where: body/query/path/header, then the field.")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer the server makes on purpose: what was wrong and
    (when one field is to blame) which field; a request that did not validate lists its
    issues instead."""

    detail: str | list[ValidationIssue]
    field: str | None = None
    request_id: str | None = Field(
        None, description="The request's X-Request-ID: quote it to find the request in the log."
    )


_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
WEBHOOK_PATTERN = rf"^(?:https?://{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::{_PORT})?(?:[/?#][!-~]*)?)?$"
"""What a webhook URL may look like: http(s), a host name or IPv4 address (no credentials),
a port, a printable path and query; empty means none. Where it may point is the server's
policy, checked at creation (422 naming `webhook`) and no pattern can say it: the host must
resolve to public addresses and the port be in OUTBOUND_ALLOWED_PORTS, unless
WEBHOOK_ALLOWED_HOSTS trusts the host."""

WebhookUrl = Annotated[
    str,
    Field(
        max_length=2000,
        pattern=WEBHOOK_PATTERN,
        description="URL POSTed when the run ends: http or https; its host must resolve to "
        "public addresses and its port be one OUTBOUND_ALLOWED_PORTS lists (80, 443), unless "
        "WEBHOOK_ALLOWED_HOSTS lists the host (checked at creation: 422); empty: none.",
    ),
    AfterValidator(lambda url: url or None),
]


Responses = dict[int | str, dict[str, Any]]

SERVER_SENT_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event (`: heartbeat` comments are not events).",
    "properties": {
        "event": {"type": "string", "description": "Its kind, e.g. metadata, values, end."},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "description": "Its position: send it as Last-Event-ID."},
    },
    "required": ["event", "data"],
}
"""The schema of each event of a `text/event-stream` answer, as OpenAPI tools read one."""


STREAM_ONLY = "x-stream-only"


def event_stream(description: str) -> dict[str, Any]:
    """A documented 200 of server-sent events only (server/openapi.py drops the JSON content
    FastAPI gives every 200, marked by STREAM_ONLY)."""
    return {
        "description": description,
        "content": {"text/event-stream": {"schema": SERVER_SENT_EVENT}},
        STREAM_ONLY: True,
    }


NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No record with that id."}}
CONFLICT: Responses = {409: {"model": ErrorBody, "description": "Conflicts with existing data."}}
TOO_MANY: Responses = {
    429: {"model": ErrorBody, "description": "A per-identity limit is reached; see Retry-After."}
}
COMMON_ERRORS: Responses = {
    400: {
        "model": ErrorBody,
        "description": "The body cannot be parsed, or the Host header is not one the server "
        "answers.",
    },
    401: {"model": ErrorBody, "description": "Authentication is required and failed."},
    403: {"model": ErrorBody, "description": "The caller may not do this."},
    413: {"model": ErrorBody, "description": "The request body is larger than the limit."},
    422: {"model": ErrorBody, "description": "The request did not validate; names the field."},
    503: {"model": ErrorBody, "description": "A backing service is unavailable; try again."},
}
"""Answers any route may give: the Host guard, authentication, validation, an outage."""
