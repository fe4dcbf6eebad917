"""Pure-ASGI middleware: request context, security headers and the canonical log line.

For each HTTP request it sets the request id (the client's ``X-Request-ID`` when
it is a sane token, else a new one), the client address, and the default actor
``anonymous`` in :mod:`campus.infra.context`, echoes the request id in the response,
adds the security headers (:data:`SECURITY_HEADERS`) to every answer, and writes
one log line when the response is complete. The log line never holds a body, a
query string or a header value other than the id. A client that goes away before
its request is read (``ClientDisconnect``) is that one line, status 499, without
a traceback.

Security headers, on every answer unless the handler set its own value:
``X-Content-Type-Options: nosniff`` (a served file is never sniffed into HTML or
script), ``Cache-Control: no-store`` (answers show secrets once: a password, a
token, a users file; no cache may keep any answer), and, for every file served
(annexes, exports, backups) as for JSON, ``X-Frame-Options: DENY`` with
``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'; sandbox``
(nothing served may run, load anything or be framed) and ``Referrer-Policy:
no-referrer``.

The client address is the socket's peer, unless that peer is one of the trusted
proxies (``CAMPUS_TRUSTED_PROXIES``): then it is the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy. Everything left of it was
written by the client and is never believed (see :func:`client_address`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from campus.infra.context import RequestContext, reset_context, set_context

log = structlog.get_logger("campus.access")
SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
CLIENT_CLOSED_REQUEST = 499  # the log line's status for a client gone before its request was read
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; sandbox"),
    (b"referrer-policy", b"no-referrer"),
)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


@functools.lru_cache(maxsize=4096)  # the same few peers (a proxy, the schools' addresses) again and again
def normalise_address(text: str | None) -> str | None:
    """An IP address in its canonical text (IPv4-mapped IPv6 as IPv4); other peers as given."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _is_trusted(text: str | None, trusted: Sequence[Network]) -> bool:
    if not text or not trusted:
        return False
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str | None:
    """Who the client is: the socket's peer, or, behind trusted proxies, the right-most untrusted
    hop of X-Forwarded-For. A hop that is not an IP address stops the walk: the last trusted
    proxy's address is used (a proxy writes only addresses, so it is the client's forgery)."""
    current = normalise_address(peer)
    if not _is_trusted(current, trusted):
        return current
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        address = normalise_address(hop)
        try:
            ipaddress.ip_address(address or "")
        except ValueError:
            return current
        current = address
        if not _is_trusted(current, trusted):
            return current
    return current


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = trusted_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and SANE_ID.match(incoming) else uuid.uuid4().hex
        client = scope.get("client")
        forwarded = _headers(scope, b"x-forwarded-for") if self.trusted else []
        address = client_address(client[0] if client else None, forwarded, self.trusted)
        scope.setdefault("state", {})
        token = set_context(RequestContext(actor="anonymous", request_id=request_id, client_address=address))
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            # Gone while its body was read: nothing can be answered and nothing of ours failed.
            status = CLIENT_CLOSED_REQUEST
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


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return value.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover
                return None
    return None


__all__: list[Any] = ["RequestContextMiddleware", "client_address", "normalise_address", "trusted_networks"]
