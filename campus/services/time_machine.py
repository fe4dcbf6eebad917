"""Reading the past and restoring it.

The state of a base "as of" an instant T is the state after its last event
stamped at or before T (inclusive). It is read from the timeline
(:mod:`campus.projections.timeline`), which keeps every version of every record
indexed by log position, so a read costs a few index seeks whatever the length
of the history; the planning, a small aggregate, is replayed to its version
found through the history view. A restore is itself an event (`Base.Restored`)
that carries the restored state: nothing is overwritten, the history in
between stays readable, and restoring to the instant just before a restore
undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from campus.aggregates.planning import Planning
from campus.aggregates.school_base import Base
from campus.errors import Conflict, Invalid, NotFound
from campus.infra.context import context_changed
from campus.projections.timeline import BaseAt
from campus.rules.publication import describe
from campus.rules.records import KINDS
from campus.services.base import Service


RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class PastBase:
    planning: Planning
    base: BaseAt
    as_of: datetime
    position: int


class TimeMachine(Service):
    """The past of a base: as_of reads, diffs, restores to an instant (hosting guide fiche 6)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "backups", "bases", "plannings")

    def _at(self, aggregate_id: UUID, instant: datetime, what: str) -> tuple[Any, int]:
        found = self.history.version_at(aggregate_id, instant)
        if found is None:
            raise NotFound(f"{what} did not exist at {instant.isoformat()}")
        version, position = found
        return self.repository.get(aggregate_id, version=version), position

    def planning_as_of(self, account_id: UUID, planning_id: UUID,
                       instant: datetime) -> tuple[Planning, int]:
        """The planning (servers, profiles, publication…) as it was at `instant`, and the position used."""
        if instant > self.now():
            raise Invalid.field("as_of", "is in the future")
        self.plannings.get_planning(account_id, planning_id)  # 404 for another tenant's planning
        return self._at(planning_id, instant, "the planning")

    def publication_as_of(self, account_id: UUID, planning_id: UUID,
                          instant: datetime) -> tuple[Planning, dict, int]:
        """The planning's publication as it was at `instant` (its spaces' rules from the base then)."""
        planning, position = self.planning_as_of(account_id, planning_id, instant)
        modes: dict = {}
        if planning.base_id is not None and (base := self.timeline.base_at(planning.base_id, instant)) is not None:
            modes, position = base.connection_modes, max(position, base.position)
        account = self.accounts.get_account(account_id)
        return planning, describe(planning, account.edition, account.establishment, modes), position

    def base_as_of(self, account_id: UUID, planning_id: UUID, instant: datetime) -> PastBase:
        """The planning's base as it was at `instant` (inclusive)."""
        planning, planning_position = self.planning_as_of(account_id, planning_id, instant)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} had no base at {instant.isoformat()}")
        base = self.timeline.base_at(planning.base_id, instant)
        if base is None:
            raise NotFound(f"the base did not exist at {instant.isoformat()}")
        return PastBase(planning, base, instant, max(planning_position, base.position))

    def restore_window(self, account_id: UUID, planning_id: UUID) -> tuple[datetime, datetime]:
        """From 30 days ago (or the base's creation, if later) to now."""
        planning = self.plannings.get_planning(account_id, planning_id)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet")
        base = self.bases.get_base(account_id, planning.base_id)
        now = self.now()
        return max(now - RETENTION, base.created_on), now

    def restore_base(self, account_id: UUID, planning_id: UUID, *, as_of: datetime,
                     confirm: bool, reason: str | None = None,
                     kinds: list[str] | None = None) -> tuple[Base, datetime]:
        """Bring the planning's current base back to its state at `as_of` — all of it, or only the
        records of some `kinds` (hosting fiche 6's recovery of chosen data)."""
        if not confirm:
            raise Invalid.field("confirm", "the restore replaces the base's current state: send \"confirm\": true")
        kinds = checked_kinds(kinds)
        earliest, latest = self.restore_window(account_id, planning_id)
        if not earliest <= as_of <= latest:
            raise Invalid.field("as_of", f"must be between {earliest.isoformat()} and {latest.isoformat()} "
                                         "(the last 30 days, not before the base existed)")
        with context_changed(reason=reason_with_kinds(reason, kinds)):
            if self.plannings.get_planning(account_id, planning_id).in_service:
                raise Conflict("stop the server before restoring its base (PUT …/server {\"state\": \"stopped\"})",
                               code="server_in_service")
            self.backups.take_backup(account_id, planning_id, before="restore")  # the way back, whatever happens
            self.timeline.catch_up()  # before the school's lock: inside, only what arrives meanwhile

            def body() -> tuple[Base, datetime]:
                planning = self.plannings.get_planning(account_id, planning_id)
                if planning.in_service:
                    raise Conflict(f"stop the server of {planning.name!r} before restoring its base "
                                   "(PUT …/server {\"state\": \"stopped\"})", code="server_in_service")
                current = self.bases.get_base(account_id, planning.base_id)
                past = self.timeline.base_at(current.id, as_of)
                if past is None:
                    raise Invalid.field("as_of", "the base did not exist yet at that instant")
                state = only_kinds(current, self.timeline.restorable_state(past), kinds)
                current.restore(state=state, restored_to=as_of, from_version=past.version)
                self.save(current)
                return current, self.now()

            return self._run(account_id, body)

    def diff_base(self, account_id: UUID, planning_id: UUID, start: datetime,
                  end: datetime) -> dict[str, Any]:
        """Records added, changed and removed between two instants.

        Only the records written between the two positions are compared (the
        timeline lists them), unless the planning's base itself changed.
        """
        if end < start:
            raise Invalid.field("to", "must not be before from")
        before = self.base_as_of(account_id, planning_id, start)
        after = self.base_as_of(account_id, planning_id, end)
        if before.base.id == after.base.id:
            pairs = [(kind, rid, self.timeline.record_at(before.base, rid), self.timeline.record_at(after.base, rid))
                     for kind, rid in self.timeline.changed_between(after.base.id, before.base.position,
                                                                    after.base.position)]
        else:
            old_all, new_all = self.timeline.records_at(before.base), self.timeline.records_at(after.base)
            pairs = [(kind, rid, old_all[kind].get(rid), new_all[kind].get(rid))
                     for kind in KINDS for rid in {**old_all[kind], **new_all[kind]}]
        added = [(kind, rid, new) for kind, rid, old, new in pairs if old is None and new is not None]
        removed = [(kind, rid, old) for kind, rid, old, new in pairs if old is not None and new is None]
        changed = [(kind, rid, old, new) for kind, rid, old, new in pairs
                   if old is not None and new is not None and old != new]
        return {"from": before, "to": after, "added": added, "changed": changed, "removed": removed}


def checked_kinds(kinds: list[str] | None) -> list[str] | None:
    """None (the whole base) or the distinct record kinds asked for; 422 names a bad one."""
    if kinds is None:
        return None
    if not kinds:
        raise Invalid.field("kinds", "name at least one record kind, or leave kinds out to restore the whole base")
    for index, kind in enumerate(kinds):
        if kind not in KINDS:
            raise Invalid.field(f"kinds[{index}]", f"no record kind {kind!r}; kinds are: {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))


def only_kinds(current: Base, past: dict[str, Any], kinds: list[str] | None) -> dict[str, Any]:
    """The state a restore records: the past one, or the current base with only `kinds` taken from the past."""
    if kinds is None:
        return past
    state = current.restorable_state()
    records = {kind: found for kind, found in state["records"].items() if kind not in kinds}
    records.update({kind: past["records"][kind] for kind in kinds if past["records"].get(kind)})
    return {**state, "records": records}


def reason_with_kinds(reason: str | None, kinds: list[str] | None) -> str | None:
    """The history says which kinds a partial restore brought back (the event carries the whole state)."""
    if kinds is None:
        return reason
    return f"{reason + ' ' if reason else ''}[only: {', '.join(kinds)}]"
