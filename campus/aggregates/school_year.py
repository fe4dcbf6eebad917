"""One planning's passage to a school year (hosting guide fiches 2, 6 and 12).

A :class:`YearChange` exists per planning and per school year being prepared
(``"2027-2028"``): it records the archive of the ending year, the new empty
base prepared for the coming one (or why none was), the pre-release and the
version change. Its id is a uuid5 of (planning, year), so two schedulers can
never both start the same year, and each step is recorded once: that is what
makes the scheduled operations run exactly once however often the clock asks.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id


def year_change_id(planning_id: UUID, year: str) -> UUID:
    return natural_id("year-change", planning_id, year)


class YearChange(CampusAggregate):
    @staticmethod
    def create_id(planning_id: UUID, year: str) -> UUID:
        return year_change_id(planning_id, year)

    @event("Created")
    def __init__(self, account_id: UUID, planning_id: UUID, year: str) -> None:
        self.account_id = account_id
        self.planning_id = planning_id
        self.year = year  # the school year being prepared, e.g. "2027-2028"
        self.archives: tuple[dict, ...] = ()  # {"backup_id", "base_id", "taken_at", "scheduled"}
        self.next_base_id: UUID | None = None
        self.next_base_skipped: str | None = None  # why the August base was not created
        self.pre_release: dict | None = None
        self.version_change: dict | None = None

    @event("YearArchived")
    def record_archive(self, backup_id: UUID, base_id: UUID, taken_at: datetime, scheduled: bool) -> None:
        """An archive of the ending year was taken (by the July schedule, or on request)."""
        self.archives = (*self.archives, {"backup_id": backup_id, "base_id": base_id, "taken_at": taken_at,
                                          "scheduled": scheduled})

    @event("NextBasePrepared")
    def record_next_base(self, base_id: UUID, source_base_id: UUID, scheduled: bool,
                         due_at: datetime | None = None) -> None:
        """A new empty base for the year, with the grid of `source_base_id` moved to it; `due_at`:
        the scheduled instant (the event's own timestamp says when it ran)."""
        self.next_base_id = base_id

    @event("NextBaseSkipped")
    def skip_next_base(self, reason: str, due_at: datetime | None = None) -> None:
        """The August base was not created (the account opted out, or a base of the year exists)."""
        self.next_base_skipped = reason

    @event("PreReleaseInstalled")
    def install_pre_release(self, version: str, base_id: UUID, previous_base_id: UUID, replaced: bool,
                            server_stopped: bool, due_at: datetime | None = None) -> None:
        self.pre_release = {"version": version, "base_id": base_id, "previous_base_id": previous_base_id,
                            "replaced": replaced, "server_stopped": server_stopped}

    @event("VersionChanged")
    def change_version(self, version: str, choice: str, base_id: UUID, previous_base_id: UUID, replaced: bool,
                       server_stopped: bool, due_at: datetime | None = None) -> None:
        """The planning runs `version`; `base_id` is its base from now on (the previous one kept)."""
        self.version_change = {"version": version, "choice": choice, "base_id": base_id,
                               "previous_base_id": previous_base_id, "replaced": replaced,
                               "server_stopped": server_stopped}

    @property
    def scheduled_archive(self) -> dict | None:
        return next((a for a in self.archives if a["scheduled"]), None)
