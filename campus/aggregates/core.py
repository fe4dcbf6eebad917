"""What every campus aggregate shares.

Each event carries, besides the library's id, version and timestamp:
``meta`` = ``{"actor", "request_id", "client_address", "tenant", "reason"?}``.
The timestamp comes from the one clock (:mod:`campus.infra.clock`); the rest from the
request context (:mod:`campus.infra.context`); the tenant from the aggregate itself.

Decorated ``@event`` methods only assign state: they run again on every replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, Snapshot

from campus.infra.clock import FrozenClock, InstantTooEarly, current_clock
from campus.infra.context import current_context

# Natural keys become uuid5 ids in this namespace, so a duplicate fails atomically.
CAMPUS_NS = uuid5(NAMESPACE_URL, "urn:campus:ids")


def natural_id(*parts: object) -> UUID:
    return uuid5(CAMPUS_NS, ":".join(str(p) for p in parts))


def _meta(tenant: Any) -> dict[str, Any]:
    ctx = current_context()
    meta: dict[str, Any] = {
        "actor": ctx.actor,
        "request_id": ctx.request_id,
        "client_address": ctx.client_address,
        "tenant": str(tenant) if tenant is not None else None,
    }
    if ctx.reason:
        meta["reason"] = ctx.reason
    return meta


class CampusAggregate(Aggregate):
    account_id: UUID

    class Event(Aggregate.Event):
        meta: dict

        @staticmethod
        def create_timestamp() -> datetime:
            return current_clock().now()

    class Created(Event, Aggregate.Created):
        pass

    class Snapshot(Snapshot):
        """The library's snapshot (a private speed-up), stamped by the one clock too."""

        @staticmethod
        def create_timestamp() -> datetime:
            return current_clock().now()

    @classmethod
    def _create(cls, event_class, *, id=None, **kwargs):  # noqa: A002, ANN001, ANN206
        kwargs.setdefault("meta", _meta(kwargs.get("account_id")))
        return super()._create(event_class, id=id, **kwargs)

    def trigger_event(self, event_class, **kwargs) -> None:  # noqa: ANN001
        clock = current_clock()
        if isinstance(clock, FrozenClock) and clock.now() < self.modified_on:
            # Timestamps never go backwards along an aggregate's versions: the command is run
            # again with an instant no earlier than this aggregate's last event.
            raise InstantTooEarly(self.modified_on)
        kwargs.setdefault("meta", _meta(kwargs.get("account_id", self.account_id)))
        super().trigger_event(event_class, **kwargs)

    @property
    def etag(self) -> str:
        return f'"{self.version}"'
