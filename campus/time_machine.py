"""Reading the past and restoring it (a part of :class:`CampusApplication`).

The state of a base "as of" an instant T is its stream replayed up to its last
event stamped at or before T (inclusive), found through the history view's
index of (aggregate, version, timestamp); the library's snapshots make the
replay short. A restore is itself an event (`Base.Restored`) that carries the
restored state: nothing is overwritten, the history in between stays
readable, and restoring to the instant just before a restore undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from campus.aggregates.planning import Planning
from campus.aggregates.school_base import Base
from campus.context import current_context, reset_context, set_context
from campus.errors import Conflict, Invalid, NotFound
from campus.records import KINDS

if TYPE_CHECKING:
    from campus.application import CampusApplication

RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class PastBase:
    planning: Planning
    base: Base
    as_of: datetime
    position: int


class TimeMachineUseCases:
    """Mixed into CampusApplication."""

    def _at(self: CampusApplication, aggregate_id: UUID, instant: datetime, what: str) -> tuple[Any, int]:
        found = self.history.version_at(aggregate_id, instant)
        if found is None:
            raise NotFound(f"{what} did not exist at {instant.isoformat()}")
        version, position = found
        return self.repository.get(aggregate_id, version=version), position

    def base_as_of(self: CampusApplication, account_id: UUID, planning_id: UUID, instant: datetime) -> PastBase:
        """The planning's base as it was at `instant` (inclusive)."""
        if instant > self.now():
            raise Invalid.field("as_of", "is in the future")
        self.get_planning(account_id, planning_id)  # 404 for another tenant's planning
        planning, planning_position = self._at(planning_id, instant, "the planning")
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} had no base at {instant.isoformat()}")
        base, base_position = self._at(planning.base_id, instant, "the base")
        return PastBase(planning, base, instant, max(planning_position, base_position))

    def restore_window(self: CampusApplication, account_id: UUID, planning_id: UUID) -> tuple[datetime, datetime]:
        """From 30 days ago (or the base's creation, if later) to now."""
        planning = self.get_planning(account_id, planning_id)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet")
        base = self.get_base(account_id, planning.base_id)
        now = self.now()
        return max(now - RETENTION, base.created_on), now

    def restore_base(self: CampusApplication, account_id: UUID, planning_id: UUID, *, as_of: datetime,
                     confirm: bool, reason: str | None = None) -> tuple[Base, datetime]:
        """Bring the planning's current base back to its state at `as_of`."""
        if not confirm:
            raise Invalid.field("confirm", "the restore replaces the base's current state: send \"confirm\": true")
        earliest, latest = self.restore_window(account_id, planning_id)
        if not earliest <= as_of <= latest:
            raise Invalid.field("as_of", f"must be between {earliest.isoformat()} and {latest.isoformat()} "
                                         "(the last 30 days, not before the base existed)")
        token = set_context(_with_reason(reason))
        try:
            if self.get_planning(account_id, planning_id).in_service:
                raise Conflict("stop the server before restoring its base (PUT …/server {\"state\": \"stopped\"})",
                               code="server_in_service")
            self.take_backup(account_id, planning_id, before="restore")  # the way back, whatever happens

            def body() -> tuple[Base, datetime]:
                planning = self.get_planning(account_id, planning_id)
                if planning.in_service:
                    raise Conflict(f"stop the server of {planning.name!r} before restoring its base "
                                   "(PUT …/server {\"state\": \"stopped\"})", code="server_in_service")
                current = self.get_base(account_id, planning.base_id)
                found = self.history.version_at(current.id, as_of)
                if found is None:
                    raise Invalid.field("as_of", "the base did not exist yet at that instant")
                past = self.repository.get(current.id, version=found[0])
                current.restore(state=past.restorable_state(), restored_to=as_of, from_version=found[0])
                self.save(current)
                return current, self.now()

            return self._run(account_id, body)
        finally:
            reset_context(token)

    def diff_base(self: CampusApplication, account_id: UUID, planning_id: UUID, start: datetime,
                  end: datetime) -> dict[str, Any]:
        """Records added, changed and removed between two instants."""
        if end < start:
            raise Invalid.field("to", "must not be before from")
        before = self.base_as_of(account_id, planning_id, start)
        after = self.base_as_of(account_id, planning_id, end)
        added, changed, removed = [], [], []
        for kind in KINDS:
            old, new = before.base.records[kind], after.base.records[kind]
            added += [(kind, rid, new[rid]) for rid in new if rid not in old]
            removed += [(kind, rid, old[rid]) for rid in old if rid not in new]
            changed += [(kind, rid, old[rid], new[rid]) for rid in new if rid in old and old[rid] != new[rid]]
        return {"from": before, "to": after, "added": added, "changed": changed, "removed": removed}


def _with_reason(reason: str | None):  # noqa: ANN202
    from dataclasses import replace

    return replace(current_context(), reason=reason)
