"""A save or an archive of a base (hosting guide fiches 6, 10, 12).

The aggregate records that a file was taken (where, its SHA-256, its size, the
base's state it holds: version, log position, counts), that a check found the
file missing or damaged, and, later, that retention discarded it. Retention
deletes the file, never these events.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate

KINDS = ("save", "archive")


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
        """A check (download, restore) found the file missing or not as it was written."""
        self.damaged = True
        self.damage = {"problem": problem, "detail": detail}
