"""A save or an archive of a base (hosting guide fiches 6, 10, 12).

The aggregate records that a file was taken (where, its SHA-256, its size, the
base's state it holds: version, log position, counts), that a check found the
file damaged, and, later, that retention discarded it. Retention deletes the
file, never these events.

A scheduled save or archive has the natural id of its (planning, kind, slot)
(:func:`campus.services.backup_schedule.scheduled_backup_id`): a slot is recorded once, whichever
server takes it. Saves on request and school-year archives have random ids; so
do scheduled backups taken before issue 9, which stay valid as they are.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate

KINDS = ("save", "archive")
# The problem code of a file absent from a server's snapshot storage: reported there, never recorded
# (until issue 9 it was recorded as FoundDamaged; such events are read as saying nothing of the file).
MISSING = "backup_file_missing"


class Backup(CampusAggregate):
    @event("Taken")
    def __init__(self, account_id: UUID, planning_id: UUID, base_id: UUID, kind: str, name: str,
                 taken_at: datetime, version: int, position: int, file: str, sha256: str, size: int,
                 counts: dict, scheduled: bool = False, kept: bool = False) -> None:
        self.account_id = account_id
        self.planning_id = planning_id
        self.base_id = base_id
        self.kind = kind
        self.name = name
        self.taken_at = taken_at  # the instant whose state the file holds
        self.base_version = version
        self.position = position
        self.file = file  # relative to the snapshots folder
        self.sha256 = sha256  # of the whole file
        self.size = size
        self.counts = dict(counts)
        self.scheduled = scheduled  # taken by the clock at a boundary (taken_at), not on request
        self.kept = kept  # out of retention (the archive of a school year, kept for the next one)
        self.discarded = False
        self.discard_reason: str | None = None
        self.damaged = False
        self.damage: dict | None = None  # {"problem": code, "detail": what the check found}

    @event("Discarded")
    def discard(self, reason: str) -> None:
        self.discarded = True
        self.discard_reason = reason

    @event("FoundDamaged")
    def mark_damaged(self, problem: str, detail: str) -> None:
        """A check (download, restore) found the file not as it was written (its size or SHA-256).

        A file missing from one server's snapshot storage is not recorded any more (another server
        may have it); such an event recorded earlier leaves the backup as it was."""
        if problem == MISSING:
            return
        self.damaged = True
        self.damage = {"problem": problem, "detail": detail}
