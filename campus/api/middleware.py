"""Pure-ASGI middleware: request context and the canonical log line.

For each HTTP request it sets the request id (the client's ``X-Request-ID`` when
it is a sane token, else a new one), the client address (from the socket), and
the default actor ``anonymous`` in :mod:`campus.context`, echoes the request id
in the response, and writes one log line when the response is complete. The log
line never holds a body, a query string or a header value other than the id.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from campus.context import RequestContext, reset_context, set_context

log = structlog.get_logger("campus.access")
SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and SANE_ID.match(incoming) else uuid.uuid4().hex
        client = scope.get("client")
        address = client[0] if client else None
        scope.setdefault("state", {})
        token = set_context(RequestContext(actor="anonymous", request_id=request_id, client_address=address))
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            reset_context(token)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                request_id=request_id,
                client=address,
                actor=scope["state"].get("actor", "anonymous"),
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return value.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover
                return None
    return None


__all__: list[Any] = ["RequestContextMiddleware"]
