"""Exception handlers: every error the server makes on purpose is JSON that names what was wrong."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, InvalidRequestError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.auth.contract import AuthError
from server.request_context import error_body
from stores.errors import (
    ConflictError,
    InvalidInputError,
    LimitError,
    NotFoundError,
    UnavailableError,
)
from stores.extract import DocumentError
from stores.sql.database import is_refusal, is_transient, sqlstate

log = logging.getLogger(__name__)


def error_response(status: int, detail: str, *, field: str | None = None) -> JSONResponse:
    """A JSON error body `{"detail": ..., "field": ..., "request_id": ...}` with `status`."""
    return JSONResponse(error_body(detail, field=field), status_code=status)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own errors (unknown route 404, 405, ...) with the request id."""
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(error_body(exc.detail), status_code=exc.status_code, headers=exc.headers)


_ECHO_DEPTH = 8


def _json_safe(value: Any, depth: int = 0) -> Any:
    """`value` as JSON can always write it: numbers JSON has no room for (NaN, infinities,
    integers past 64 bits) as their text, and nothing echoed deeper than `_ECHO_DEPTH`."""
    if depth > _ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return f"an integer of {len(str(abs(value)))} digits"
    return value


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (`detail`: one entry per bad field, `loc` naming it) with the request id;
    the echoed input is made writable (1e400 parses to infinity, which would make it a 500)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = _json_safe(jsonable_encoder(errors))
    return JSONResponse(error_body(detail, field=_first_field(errors)), status_code=422)


def _first_field(errors: Sequence[Any]) -> str | None:
    """The field the first error is about, as the server's own 422s name it (`loc` without
    its body/query/path/header head, and without the union member pydantic tried): e.g.
    `webhook`, `config.configurable`."""
    loc = list(errors[0].get("loc", ())) if errors else []
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
        loc = loc[1:]
    names = [str(part) for part in loc if isinstance(part, str | int) and not _union_tag(part)]
    return ".".join(names) or None


def _union_tag(part: Any) -> bool:
    # pydantic names the member of a union it tried: `str`, `list[str]`, `function-after[...]`.
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool", "dict", "list", "none")
        or "[" in part
        or part.startswith(("function-", "literal[", "constrained-"))
    )


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFoundError)
    return error_response(404, str(exc), field=exc.field)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConflictError)
    return error_response(409, str(exc), field=exc.field)


async def _bad_document(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DocumentError)
    return error_response(exc.status, str(exc), field=exc.field)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInputError)
    return error_response(getattr(exc, "status", 422), str(exc), field=exc.field)


async def _limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LimitError)
    response = error_response(429, str(exc), field=exc.field)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return response


async def _auth_refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    response = error_response(exc.status, exc.detail)
    response.headers.update(exc.headers)
    return response


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc))


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return error_response(503, "the database is unavailable; try again shortly")


_TOO_LARGE = "a value of the request is too large for the database to store"
_BAD_VALUE = "a value of the request is out of the range the database can hold or compare"
_CONFLICT = "the write conflicts with existing data"


def _refused_answer(exc: BaseException) -> tuple[int, str] | None:
    """The status and fixed message of a statement PostgreSQL refused for what the request
    holds (`is_refusal`), by its SQLSTATE class: 413 over one of its limits (54, or the rest of
    53: a statement's size), 422 a data exception (22, or psycopg refusing a value before
    sending it: a NUL), 409 a constraint (23, as the stores' own conflicts). None for any
    other refusal (a statement of ours PostgreSQL cannot run: a bug, left to the 500)."""
    state = sqlstate(exc)
    if state is None:
        orig = getattr(exc, "orig", exc)
        return (422, _BAD_VALUE) if isinstance(orig, psycopg.DataError) else None
    if state.startswith(("54", "53")):
        return 413, _TOO_LARGE
    if state.startswith("22"):
        return 422, _BAD_VALUE
    if state.startswith("23"):
        return 409, _CONFLICT
    return None


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Only an outage (`is_transient`: a cut, a restart, a timeout, no pooled connection free)
    # is a 503: PostgreSQL refusing the statement for a value of the request (a class-54 error
    # psycopg raises as an OperationalError, say) fails the same way when sent again, so it is
    # the client's 4xx, with a fixed message (the database's own text goes to the log only).
    if is_transient(exc):
        return await _database_down(request, exc)
    answer = _refused_answer(exc) if is_refusal(exc) or isinstance(exc, DataError) else None
    if answer is None:
        raise exc  # not the request's doing: a bug, the server's 500 (its text only logged)
    status, detail = answer
    log.warning("the database refused the request's statement (%d): %s", status, exc)
    return error_response(status, detail)


async def _connection_lost(request: Request, exc: Exception) -> JSONResponse:
    # SQLAlchemy's own "This connection is closed": a checkout found every connection it tried
    # cut (a restart under way). An outage as any other, not a 500; any other misuse of the
    # API is a bug, left to the server's 500 as before.
    if not is_transient(exc):
        raise exc
    return await _database_down(request, exc)


async def _bad_value(_: Request, exc: Exception) -> JSONResponse:
    # The database refused a value of the request (out of range, untranslatable, ...): the
    # client's fault, not an outage. Validation should have named the field first; say what
    # kind of problem it was, and keep the database's own text for the log.
    log.warning("the database refused a value of the request: %s", exc)
    return error_response(422, _BAD_VALUE)


def install_error_handlers(app: FastAPI) -> None:
    """Map store exceptions (and FastAPI's own errors) to JSON error bodies on `app`."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(InvalidInputError, _invalid)
    app.add_exception_handler(UnavailableError, _unavailable)
    app.add_exception_handler(AuthError, _auth_refused)
    app.add_exception_handler(LimitError, _limited)
    app.add_exception_handler(DocumentError, _bad_document)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_down)
    app.add_exception_handler(DBAPIError, _database_error)
    # The driver's own, where a store uses psycopg directly (the checkpoint saver's pool).
    app.add_exception_handler(psycopg.Error, _database_error)
    app.add_exception_handler(InvalidRequestError, _connection_lost)
    # More specific than DBAPIError, so it wins for data errors (SQLSTATE class 22).
    app.add_exception_handler(DataError, _bad_value)
