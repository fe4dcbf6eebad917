"""A base: the school's database on a planning (Campus fiche 6, hosting fiches 2–7).

One event stream per base holds its grid, every record change, its annexes and
the connection-mode rules of a timetable transfer. Reading the base at a
version (or an instant) is replaying that stream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate
from campus.rules.records import KINDS


class Base(CampusAggregate):
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
