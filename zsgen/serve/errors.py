"""How every failure leaves the service: a status and ``{"error": {"type", "message"}}`` with one line, no traceback.

Only the caller's mistakes are 4xx, each with a ``type`` a client can branch on; they come from zsgen's typed errors
(:class:`~zsgen.errors.UnknownItemError` with its suggestions, :class:`~zsgen.errors.EmptyHistoryError`,
:class:`~zsgen.errors.InvalidKError`, a rerank option's :class:`~zsgen.errors.ConfigError`), from request validation,
and from the envelope (body too large, token missing). An LLM fault is not an error at all here: the reranker turns it
into a first-stage ranking flagged ``fallback``. Anything else is logged with its traceback and answered 500 with
no detail, so internals never reach a client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from zsgen.configbase import error_location, error_message
from zsgen.errors import (
    ConfigError,
    DataError,
    EmptyHistoryError,
    InvalidKError,
    TemplateError,
    UnknownItemError,
    ZsgenError,
)
from zsgen.serve.schemas import ErrorResponse

__all__ = ["ERROR_RESPONSES", "ApiError", "error_response", "install_handlers", "one_line"]

logger = logging.getLogger(__name__)

#: Longest message sent; a long one (a whole pydantic report) is cut, never spread over lines.
MAX_MESSAGE = 500

#: The error statuses every route documents (OpenAPI), with their meaning.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "body that cannot be read (not UTF-8 JSON)"},
    401: {"model": ErrorResponse, "description": "missing or wrong bearer token"},
    413: {"model": ErrorResponse, "description": "body larger than the service's max_body_bytes"},
    422: {"model": ErrorResponse, "description": "invalid request: unknown item, empty user, k out of range, ..."},
    500: {"model": ErrorResponse, "description": "internal error (logged; no details sent)"},
}


class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, a machine-readable ``kind`` and a one-line message."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        suggestions: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.suggestions = list(suggestions) if suggestions is not None else None
        self.headers = headers


def one_line(text: str) -> str:
    """``text`` on one line, at most :data:`MAX_MESSAGE` characters."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def error_response(
    status: int,
    kind: str,
    message: str,
    *,
    request_id: str | None = None,
    suggestions: Sequence[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": kind, "message": one_line(message)}
    if suggestions is not None:
        body["suggestions"] = list(suggestions)
    return JSONResponse({"error": body, "request_id": request_id}, status_code=status, headers=headers)


def from_zsgen(exc: ZsgenError, *, where: str = "") -> ApiError:
    """The caller's mistake ``exc`` (raised while reading their request) as a 422 of the right kind; ``where``
    prefixes the message (``users[3]: ``)."""
    message = f"{where}{exc}"
    if isinstance(exc, UnknownItemError):
        return ApiError(422, "unknown_item", message, suggestions=exc.suggestions)
    if isinstance(exc, EmptyHistoryError):
        return ApiError(422, "empty_user", message)
    if isinstance(exc, InvalidKError):
        return ApiError(422, "invalid_k", message)
    if isinstance(exc, ConfigError | TemplateError):
        return ApiError(422, "invalid_rerank_option", message)
    if isinstance(exc, DataError):
        return ApiError(422, "invalid_input", message)
    raise exc


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        parts = [str(p) for p in error.get("loc", ()) if p != "body"]
        if error.get("type") == "json_invalid":  # the location is a character position
            problems.append(f"body is not valid JSON (at character {', '.join(parts) or '0'})")
            continue
        where = error_location({"loc": parts})
        message = error_message(error)
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems) or "invalid request"


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    """Route every failure through :func:`error_response` (module docstring)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status,
            exc.kind,
            exc.message,
            request_id=_request_id(request),
            suggestions=exc.suggestions,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc), request_id=_request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:  # Starlette names the methods of the first route of this path only
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(exc.status_code, kind, detail, request_id=_request_id(request), headers=headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.error("request %s failed: %s", _request_id(request), type(exc).__name__, exc_info=exc)
        return error_response(500, "internal", "internal error (see the service log)", request_id=_request_id(request))
