"""Exception handlers: every error the server makes on purpose is JSON that names what was wrong."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server.auth.contract import AuthError
from stores.errors import (
    ConflictError,
    InvalidInputError,
    LimitError,
    NotFoundError,
    UnavailableError,
)
from stores.extract import DocumentError

log = logging.getLogger(__name__)


def error_response(status: int, detail: str, *, field: str | None = None) -> JSONResponse:
    """A JSON error body `{"detail": ..., "field": ...}` with `status`."""
    body: dict[str, str] = {"detail": detail}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


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
    return error_response(422, str(exc), field=exc.field)


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


def install_error_handlers(app: FastAPI) -> None:
    """Map store exceptions to HTTP statuses on `app`."""
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(InvalidInputError, _invalid)
    app.add_exception_handler(UnavailableError, _unavailable)
    app.add_exception_handler(AuthError, _auth_refused)
    app.add_exception_handler(LimitError, _limited)
    app.add_exception_handler(DocumentError, _bad_document)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(PoolTimeoutError, _database_down)
    app.add_exception_handler(DBAPIError, _database_down)
