"""Errors over HTTP: every failure is an RFC 9457 ``application/problem+json`` response."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from layers.errors import (
    BlueprintError,
    CatalogueError,
    DatabaseUnavailable,
    InputTooLarge,
    InvalidInput,
    NotFound,
    SetupError,
)

PROBLEM = "application/problem+json"
log = logging.getLogger("blueprint.api")

# The one map from domain error to HTTP status (most specific first).
STATUS: list[tuple[type[BlueprintError], int]] = [
    (InputTooLarge, 413),
    (InvalidInput, 422),
    (NotFound, 404),
    (CatalogueError, 500),
    (DatabaseUnavailable, 503),
    (SetupError, 503),
    (BlueprintError, 400),
]


def problem(status: int, title: str, detail: str, **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def status_of(exc: BlueprintError) -> int:
    return next(code for cls, code in STATUS if isinstance(exc, cls))


def register_error_handlers(app: FastAPI) -> None:
    """Install the handlers that turn every error into problem+json (and never a bare 500)."""

    @app.exception_handler(BlueprintError)
    async def _domain(request: Request, exc: BlueprintError) -> JSONResponse:
        return problem(status_of(exc), exc.title, exc.message, instance=request.url.path, **exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return problem(422, "Invalid request", detail, instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail), instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged",
                       instance=request.url.path)
