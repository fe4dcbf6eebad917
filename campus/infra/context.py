"""Who is acting, from where, in which request.

A pure-ASGI middleware (:mod:`campus.api.middleware`) sets the request id and
client address; authentication sets the actor. Every event recorded during the
request carries them (see :class:`campus.aggregates.core.CampusAggregate`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RequestContext:
    actor: str = "system"
    request_id: str | None = None
    client_address: str | None = None
    reason: str | None = None


_context: ContextVar[RequestContext] = ContextVar("campus_request", default=RequestContext())


def current_context() -> RequestContext:
    return _context.get()


def set_context(ctx: RequestContext):  # noqa: ANN201
    return _context.set(ctx)


def reset_context(token) -> None:  # noqa: ANN001
    _context.reset(token)


def set_actor(actor: str) -> None:
    """Name the authenticated actor for the rest of this request."""
    _context.set(replace(_context.get(), actor=actor))


@contextmanager
def context_changed(**changes: str | None) -> Iterator[RequestContext]:
    """Run a block with some fields of the context changed (a scheduler's actor, a restore's reason)."""
    token = _context.set(replace(_context.get(), **changes))
    try:
        yield _context.get()
    finally:
        _context.reset(token)
