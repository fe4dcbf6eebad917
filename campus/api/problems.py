"""Errors as ``application/problem+json`` (RFC 9457), mapped in one place."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
import structlog
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from campus.errors import CampusError

log = structlog.get_logger("campus.api")

PROBLEM = "application/problem+json"


def problem(status: int, detail: str, *, errors: list[dict] | None = None, code: str | None = None,
            headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if code:
        body["code"] = code
    if errors:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict]:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        field = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "body"
        errors.append({"field": field, "message": err["msg"].removeprefix("Value error, ")})
    return errors


def from_campus_error(exc: CampusError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    headers.update(getattr(exc, "headers", None) or {})  # e.g. Retry-After of a 429
    return problem(exc.status, exc.detail, errors=exc.errors, code=exc.code, headers=headers or None)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
    if exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return problem(exc.status_code, str(detail), headers=dict(exc.headers or {}) or None)


async def campus_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CampusError)
    return from_campus_error(exc)


async def store_failed(request: Request, exc: Exception) -> Response:
    from campus.commands import store_unavailable

    return from_campus_error(store_unavailable(exc))


async def unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return problem(500, "internal error; the request id identifies it in the server log")


EXCEPTION_HANDLERS = {
    HTTPException: http_exception,
    CampusError: campus_error,
    PersistenceError: store_failed,  # the store unreachable or refusing: 503, nothing was changed
    Exception: unexpected,
}
