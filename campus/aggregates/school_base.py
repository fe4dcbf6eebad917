"""A base: the school's database on a planning (Campus fiche 6, hosting fiches 2–7).

One event stream per base holds its grid, every record change, its annexes and
the connection-mode rules of a timetable transfer. Reading the base at a
version (or an instant) is replaying that stream, from the base's library
snapshot when there is one of the current layout (:class:`Base.Snapshot`,
taken in the background by campus/services/base_snapshots.py).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from importlib.metadata import version as distribution_version
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import event
from eventsourcing.utils import register_topic

from campus.aggregates.core import CampusAggregate
from campus.rules.records import KINDS


class Base(CampusAggregate):
    # The layout of a base's state in a library snapshot. BUMP IT whenever what a Base holds, or what one
    # of its event methods assigns, changes: a snapshot is used only if it was taken with the current
    # layout (its stored topic names it, see `snapshot_topic`), so older ones are ignored (the base is
    # replayed from its events) until the next snapshot replaces them. tests/unit/test_base_layout.py
    # fails when this class's source changes, to ask. See docs/DECISIONS.md, "Library snapshots".
    SNAPSHOT_LAYOUT = 1

    class Snapshot(CampusAggregate.Snapshot):
        """The state of a base at a version, kept to skip the replay of the events up to it. Its topic
        (``TOPIC``, set below) names the layout it was taken with."""

        TOPIC: ClassVar[str]

    @event("Created")
    def __init__(self, account_id: UUID, planning_id: UUID, name: str, grid: dict, origin: str) -> None:
        self.account_id = account_id
        self.planning_id = planning_id
        self.name = name
        self.grid = dict(grid)
        self.origin = origin
        self.records: dict[str, dict[UUID, dict[str, Any]]] = {k: {} for k in KINDS}
        self.last_entry_at: datetime | None = None
        self.annexes: dict[str, dict[str, Any]] = {}
        self.connection_modes: dict[str, dict[str, Any]] = {}
        # The base version at which each record last changed: its ETag.
        self.revisions: dict[UUID, int] = {}

    @event("RecordAdded")
    def add_record(self, kind: str, record_id: UUID, fields: dict, at: datetime) -> None:
        self.records[kind][record_id] = dict(fields)
        self.revisions[record_id] = self.version + 1
        self.last_entry_at = at

    @event("RecordChanged")
    def change_record(self, kind: str, record_id: UUID, changes: dict, at: datetime) -> None:
        record = self.records[kind][record_id]
        record.update(changes)
        for field in [f for f, v in changes.items() if v is None]:
            del record[field]
        self.revisions[record_id] = self.version + 1
        self.last_entry_at = at

    @event("RecordRemoved")
    def remove_record(self, kind: str, record_id: UUID, at: datetime) -> None:
        del self.records[kind][record_id]
        self.revisions.pop(record_id, None)
        self.last_entry_at = at

    @event("RecordsImported")
    def import_records(self, records: tuple, last_entry_at: datetime | None) -> None:
        """A chunk of a load or a transfer: ((kind, record_id, fields), ...)."""
        for kind, record_id, fields in records:
            self.records[kind][record_id] = dict(fields)
            self.revisions[record_id] = self.version + 1
        if last_entry_at is not None:
            self.last_entry_at = last_entry_at

    @event("AnnexAdded")
    def add_annex(self, name: str, content_type: str, sha256: str, data: bytes, at: datetime) -> None:
        self.annexes[name] = {"content_type": content_type, "sha256": sha256, "size": len(data), "data": data,
                              "added_at": at}

    @event("ConnectionModesSet")
    def set_connection_modes(self, modes: dict) -> None:
        self.connection_modes = {k: dict(v) for k, v in modes.items()}

    @event("Renamed")
    def rename(self, name: str) -> None:
        self.name = name

    @event("Restored")
    def restore(self, state: dict, restored_to: datetime, from_version: int) -> None:
        """The base as it was at `restored_to` (its version `from_version`) becomes current.

        The event carries the whole restored state, so the history in between stays
        readable and restoring to the instant before this event undoes it.
        """
        self.name = state["name"]
        self.grid = dict(state["grid"])
        self.records = {kind: {rid: dict(f) for rid, f in state["records"].get(kind, {}).items()} for kind in KINDS}
        self.annexes = {name: dict(a) for name, a in state["annexes"].items()}
        self.connection_modes = {k: dict(v) for k, v in state["connection_modes"].items()}
        self.last_entry_at = state["last_entry_at"]
        self.revisions = {rid: self.version + 1 for records in self.records.values() for rid in records}

    def restorable_state(self) -> dict[str, Any]:
        """What a restore brings back: the grid, the records, annexes and connection modes."""
        return {
            "name": self.name,
            "grid": self.grid,
            "records": {kind: records for kind, records in self.records.items() if records},
            "annexes": self.annexes,
            "connection_modes": self.connection_modes,
            "last_entry_at": self.last_entry_at,
        }

    def counts(self) -> dict[str, int]:
        return {kind: len(records) for kind, records in self.records.items()}

    def find(self, kind: str, record_id: UUID) -> dict[str, Any] | None:
        return self.records.get(kind, {}).get(record_id)


def snapshot_layout() -> str:
    """The layout a snapshot of a base is taken with: :attr:`Base.SNAPSHOT_LAYOUT`, and what replay
    depends on besides Base's own code — the record kinds (a base holds one dict per kind, made when
    it is created) and the library's version (the attributes it keeps on an aggregate)."""
    depends = f"{','.join(KINDS)}|eventsourcing {distribution_version('eventsourcing')}"
    return f"{Base.SNAPSHOT_LAYOUT}-{hashlib.sha256(depends.encode()).hexdigest()[:12]}"


def snapshot_topic() -> str:
    """The stored topic of a snapshot of a base taken now: a snapshot stored under another topic is of
    another layout (or older code), and is never used."""
    return f"{Base.Snapshot.__module__}:{Base.Snapshot.__qualname__}@{snapshot_layout()}"


# The library writes a class's TOPIC attribute as the stored topic (eventsourcing.utils.construct_topic);
# registered, it resolves back to the class. Topics of other layouts are not registered.
Base.Snapshot.TOPIC = snapshot_topic()
register_topic(Base.Snapshot.TOPIC, Base.Snapshot)
