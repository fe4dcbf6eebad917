"""The timeline: every version of every base, indexed by position, for point-in-time reads.

A base's stream can hold a million events; replaying it to read the base as of
an instant would take a minute, and a snapshot of a big base takes long to
decode too. So the state of a base *at any position of the log* is kept as
rows, the way a system-versioned table keeps row versions:

* ``campus_tl_events``: one row per base event — its position, version,
  timestamp, the counts per kind and the last entry instant after it; and, for
  the events that change the base's header (grid, name, annexes, connection
  modes…), the header after it.
* ``campus_tl_records``: one row per record version — the record's fields after
  the event (NULL once removed), the position that wrote them, and the record's
  ``birth`` (the position where this life of the record began), which orders a
  base's records the way they were entered.

Reading the base as of T is then a handful of index seeks: the last event row
stamped at or before T (its position P), the last header row at or before P,
and for a page of records the latest row of each record at or before P. The
cost depends on the page, not on the length of the history or the size of the
base (bench/as_of.py measures it against a full replay).

The projection follows the notification log like the history view
(:class:`~campus.projections.follower.ProjectedView`: its own tracking row,
written in the same transaction as its rows, one projector at a time, every
event exactly once whatever the commit order of ids) and can be dropped and
rebuilt from the events (``campus views rebuild timeline``). The projector keeps
each base's running state in memory (``_tips``) only while the tracking position
it reads is the one its own last batch wrote; otherwise it reads it back. Record
events take a fast path; any other base event (creation, restore, annexes, and
any event added later) is applied with the aggregate's own code to the state
read back from these tables, so the timeline can never disagree with a replay.
Values are stored with the event store's transcoder, so they round-trip exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog

from campus.aggregates.school_base import Base
from campus.projections.follower import ProjectedView
from campus.projections.history import iso
from campus.rules.records import KINDS

if TYPE_CHECKING:
    from eventsourcing.application import Application

log = structlog.get_logger("campus.timeline")

_KIND_ORDER = {kind: index for index, kind in enumerate(KINDS)}
_BASE_TOPIC = f"{Base.__module__}:{Base.__qualname__}."
_HEADER_EVENTS = {"AnnexAdded", "ConnectionModesSet", "Renamed"}
_RECORD_EVENTS = {"RecordAdded", "RecordChanged", "RecordRemoved", "RecordsImported"}
# Header fields: everything of a Base but its records and their revisions.
_NOT_HEADER = {"records", "revisions", "last_entry_at", "_pending_events", "_version", "_modified_on"}


@dataclass
class BaseAt:
    """A base as it was at a position of the log: what the base view shows, without its records.

    Records are read page by page through :meth:`TimelineView.records_page`, or
    all at once through :meth:`TimelineView.records_at` (for a restore or a diff).
    """

    id: UUID
    position: int
    version: int
    timestamp: datetime
    header: dict[str, Any]
    kind_counts: dict[str, int]
    last_entry_at: datetime | None

    def __getattr__(self, name: str) -> Any:  # name, grid, origin, planning_id, annexes, connection_modes…
        try:
            return self.__dict__["header"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def created_on(self) -> datetime:
        return self.header["_created_on"]

    def counts(self) -> dict[str, int]:
        return {kind: self.kind_counts.get(kind, 0) for kind in KINDS}


@dataclass
class _Tip:
    """The projector's running state of one base: after its last projected event."""

    position: int
    version: int
    counts: dict[str, int]
    last_entry_at: datetime | None
    header: dict[str, Any] | None = None
    header_at: int = 0  # the position of the event row holding the header in force
    births: dict[UUID, int] = field(default_factory=dict)  # cache of the current birth of records


class TimelineView(ProjectedView):
    name = "timeline"

    def __init__(self, app: Application) -> None:
        super().__init__(app, "campus_tl_tracking")
        self.transcoder = app.mapper.transcoder
        self.t_events = self.table("campus_tl_events")
        self.t_records = self.table("campus_tl_records")
        self.t_annexes = self.table("campus_tl_annexes")
        self.t_lives = self.table("campus_tl_lives")
        self._tips: dict[UUID, _Tip] = {}
        # Rows of the batch being projected, written at once; the latest version of each record
        # written in the batch stays readable from memory until then.
        self._record_rows: list[tuple] = []
        self._births: list[tuple] = []
        self._deaths: list[tuple] = []
        self._event_rows: list[tuple] = []
        self._pending: dict[tuple[UUID, UUID], tuple[int, dict | None]] = {}
        self._create_tables()

    # -- SQL plumbing -----------------------------------------------------
    def _create_tables(self) -> None:
        big, blob = self.big, self.blob
        clustered = "" if self.is_postgres else " WITHOUT ROWID"  # SQLite: the primary key is the table
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self.t_events} ("
            f" base_id {blob} NOT NULL, position {big} NOT NULL, version INTEGER NOT NULL,"
            f" timestamp TEXT NOT NULL, state {blob} NOT NULL, header {blob}, touched {blob} NOT NULL,"
            f" PRIMARY KEY (base_id, position)){clustered}",
            f"CREATE INDEX IF NOT EXISTS campus_tl_events_time ON {self.t_events} (base_id, timestamp, position)",
            f"CREATE TABLE IF NOT EXISTS {self.t_records} ("
            f" base_id {blob} NOT NULL, record_id {blob} NOT NULL, position {big} NOT NULL,"
            f" kind TEXT NOT NULL, birth {big} NOT NULL, fields {blob},"
            f" PRIMARY KEY (base_id, record_id, position)){clustered}",
            # One row per life of a record (born at `birth`, removed at `death`), in entry order per kind:
            # a page of the records alive at P skips the dead ones inside the database.
            f"CREATE TABLE IF NOT EXISTS {self.t_lives} ("
            f" base_id {blob} NOT NULL, kind TEXT NOT NULL, birth {big} NOT NULL, record_id {blob} NOT NULL,"
            f" death {big}, PRIMARY KEY (base_id, kind, birth, record_id)){clustered}",
            f"CREATE TABLE IF NOT EXISTS {self.t_tracking} (name TEXT PRIMARY KEY, position {big} NOT NULL)",
            # Annex contents, once per base and digest (headers keep only their name, type, size, digest).
            f"CREATE TABLE IF NOT EXISTS {self.t_annexes} (base_id {blob} NOT NULL, sha256 TEXT NOT NULL,"
            f" data {blob} NOT NULL, PRIMARY KEY (base_id, sha256)){clustered}",
        ]
        with self.datastore.transaction(commit=True) as curs:
            for statement in statements:
                curs.execute(statement)
            self._ensure_tracking(curs)

    def _encode(self, value: Any) -> bytes:
        return self.transcoder.encode(value)

    def _decode(self, data: Any) -> Any:
        return self.transcoder.decode(bytes(data))

    # -- projection -------------------------------------------------------
    def _forget_running_state(self) -> None:
        self._tips.clear()
        self._clear_batch()

    def _clear_batch(self) -> None:
        self._births.clear()
        self._deaths.clear()
        self._record_rows.clear()
        self._event_rows.clear()
        self._pending.clear()

    def _clear(self, curs: Any) -> None:
        for table in (self.t_events, self.t_records, self.t_lives, self.t_annexes):
            curs.execute(f"DELETE FROM {table}")

    def _project(self, notifications: Sequence[Any], after: int) -> None:
        try:
            with self.datastore.transaction(commit=True) as curs:
                self._advance_tracking(curs, after, notifications[-1].id)
                for n in notifications:
                    if n.topic.startswith(_BASE_TOPIC):
                        self._project_base_event(curs, n)
                self._flush(curs)
        finally:
            self._clear_batch()

    def _flush(self, curs: Any) -> None:
        """Write the batch's rows (before anything reads the tables back)."""
        self._insert_rows(curs, f"{self.t_records} (base_id, record_id, position, kind, birth, fields)",
                          self._record_rows, "ON CONFLICT (base_id, record_id, position) DO NOTHING")
        self._insert_rows(curs, f"{self.t_events} (base_id, position, version, timestamp, state, header, touched)",
                          self._event_rows, "ON CONFLICT (base_id, position) DO NOTHING")
        self._insert_rows(curs, f"{self.t_lives} (base_id, kind, birth, record_id)", self._births,
                          "ON CONFLICT (base_id, kind, birth, record_id) DO NOTHING")
        self._mark_deaths(curs)
        self._clear_batch()

    def _mark_deaths(self, curs: Any) -> None:
        """Close the lives ended in this batch (setting the same death twice changes nothing)."""
        if not self._deaths:
            return
        if not self.is_postgres:
            curs.executemany(
                f"UPDATE {self.t_lives} SET death = ? WHERE base_id = ? AND kind = ? AND birth = ? AND record_id = ?",
                self._deaths)
            return
        one = "(%s::bigint, %s::bytea, %s::text, %s::bigint, %s::bytea)"
        per = 5000
        for start in range(0, len(self._deaths), per):
            chunk = self._deaths[start:start + per]
            curs.execute(
                f"UPDATE {self.t_lives} AS l SET death = d.death FROM (VALUES {','.join([one] * len(chunk))})"
                " AS d (death, base_id, kind, birth, record_id) WHERE l.base_id = d.base_id AND l.kind = d.kind"
                " AND l.birth = d.birth AND l.record_id = d.record_id", [v for row in chunk for v in row])

    def _project_base_event(self, curs: Any, n: Any) -> None:
        event = self.app.mapper.to_domain_event(n)
        name = n.topic[len(_BASE_TOPIC):]
        base_id: UUID = n.originator_id
        if n.originator_version == 1:
            tip = _Tip(position=0, version=0, counts={}, last_entry_at=None, header=None)
        else:
            tip = self._tip(curs, base_id)
            if tip.version != n.originator_version - 1:  # another process projected since: read it back
                self._tips.pop(base_id, None)
                tip = self._tip(curs, base_id)
        rows: list[tuple[UUID, str, int, dict | None]] = []  # (record, kind, birth, fields or None)
        header_changed = False
        if name in _RECORD_EVENTS:
            for kind, record_id, fields in self._record_changes(curs, tip, base_id, name, event):
                # RecordAdded always names a new id (uuid4, bases.add_record): its life begins here, no lookup.
                birth = n.id if name == "RecordAdded" else self._birth(curs, tip, base_id, record_id, n.id, fields)
                rows.append((record_id, kind, birth, fields))
        else:
            self._flush(curs)
            rows, header_changed = self._apply_generic(curs, tip, base_id, event, n.id)
        touched = bytearray()
        for record_id, kind, birth, fields in rows:
            if fields is None:
                tip.counts[kind] = tip.counts.get(kind, 0) - 1
                tip.births.pop(record_id, None)
                self._deaths.append((n.id, base_id.bytes, kind, birth, record_id.bytes))
            else:
                if birth == n.id:
                    tip.counts[kind] = tip.counts.get(kind, 0) + 1
                    self._births.append((base_id.bytes, kind, birth, record_id.bytes))
                tip.births[record_id] = birth
            self._pending[(base_id, record_id)] = (birth, fields)
            touched += bytes((_KIND_ORDER[kind],)) + record_id.bytes
            self._record_rows.append((base_id.bytes, record_id.bytes, n.id, kind, birth,
                                      None if fields is None else self._encode(fields)))
        if name in _RECORD_EVENTS:
            at = getattr(event, "at", None) if name != "RecordsImported" else event.last_entry_at
            if at is not None:
                tip.last_entry_at = at
        tip.position, tip.version = n.id, n.originator_version
        if header_changed:
            tip.header_at = n.id
        self._event_rows.append((
            base_id.bytes, n.id, n.originator_version, iso(event.timestamp),
            self._encode({"counts": {k: tip.counts[k] for k in KINDS if tip.counts.get(k)},
                          "last_entry_at": tip.last_entry_at,
                          "header_at": tip.header_at}),
            self._encode(tip.header) if header_changed else None, bytes(touched)))
        self._tips[base_id] = tip

    def _record_changes(self, curs: Any, tip: _Tip, base_id: UUID, name: str,
                        event: Any) -> Iterator[tuple[str, UUID, dict | None]]:
        """(kind, record, fields after the event or None if removed) for a record event."""
        if name == "RecordAdded":
            yield event.kind, event.record_id, dict(event.fields)
        elif name == "RecordRemoved":
            yield event.kind, event.record_id, None
        elif name == "RecordsImported":
            for kind, record_id, fields in event.records:
                yield kind, record_id, dict(fields)
        else:  # RecordChanged: the fields before, plus the changes, minus the fields set to None
            found = self._current(curs, tip, base_id, event.record_id)
            record = dict(found[1] or {}) if found else {}
            record.update(event.changes)
            for key in [k for k, v in event.changes.items() if v is None]:
                del record[key]
            yield event.kind, event.record_id, record

    def _birth(self, curs: Any, tip: _Tip, base_id: UUID, record_id: UUID, position: int,
               fields: dict | None) -> int:
        """The position where the record's current life began (this one if it is (re)born now)."""
        birth = tip.births.get(record_id)
        if birth is None:
            found = self._current(curs, tip, base_id, record_id)
            birth = found[0] if found and found[1] is not None else None
        if birth is None:
            return position  # new, or back after a removal
        return birth

    def _current(self, curs: Any, tip: _Tip, base_id: UUID, record_id: UUID) -> tuple[int, dict | None] | None:
        """(birth, fields or None) of the record at the projector's tip (this batch's rows included)."""
        found = self._pending.get((base_id, record_id))
        return found if found is not None else self._latest(curs, base_id, record_id, tip.position)

    def _latest(self, curs: Any, base_id: UUID, record_id: UUID, position: int) -> tuple[int, dict | None] | None:
        """(birth, fields or None) of the record's last row at or before `position`."""
        curs.execute(self._sql(
            f"SELECT birth, fields FROM {self.t_records} WHERE base_id = ? AND record_id = ? AND position <= ?"
            " ORDER BY position DESC LIMIT 1"), (base_id.bytes, record_id.bytes, position))
        row = curs.fetchone()
        if row is None:
            return None
        return int(row["birth"]), (None if row["fields"] is None else self._decode(row["fields"]))

    def _apply_generic(self, curs: Any, tip: _Tip, base_id: UUID, event: Any,
                       position: int) -> tuple[list[tuple[UUID, str, int, dict | None]], bool]:
        """Any other base event: run the aggregate's own code on the state read back from the timeline."""
        if tip.version == 0:
            base = event.mutate(None)
            before: dict[str, dict[UUID, dict]] = {kind: {} for kind in KINDS}
        else:
            if type(event).__name__ in _HEADER_EVENTS:  # they never touch records: no need to read them
                before, births = {kind: {} for kind in KINDS}, {}
            else:
                before, births = self._records_at(curs, base_id, tip.position, with_births=True)
            tip.births.update(births)
            base = object.__new__(Base)
            base.__dict__.update(self._header(curs, tip))
            base.__dict__.update(records={kind: {r: dict(f) for r, f in recs.items()} for kind, recs in before.items()},
                                 revisions={}, last_entry_at=tip.last_entry_at, _pending_events=[],
                                 _version=tip.version, _modified_on=None)
            base = event.mutate(base)
        for annex in base.annexes.values():
            if "data" in annex:
                curs.execute(self._sql(
                    f"INSERT INTO {self.t_annexes} (base_id, sha256, data) VALUES (?,?,?)"
                    " ON CONFLICT (base_id, sha256) DO NOTHING"), (base_id.bytes, annex["sha256"], annex["data"]))
        header = {k: v for k, v in base.__dict__.items() if k not in _NOT_HEADER}
        header["annexes"] = {n: {k: v for k, v in a.items() if k != "data"} for n, a in header.get("annexes", {}).items()}
        tip.last_entry_at = base.last_entry_at
        rows = []
        for kind in KINDS:
            old, new = before.get(kind, {}), base.records.get(kind, {})
            for record_id, fields in new.items():
                if old.get(record_id) != fields:
                    rows.append((record_id, kind, tip.births[record_id] if record_id in old else position,
                                 dict(fields)))
            rows += [(record_id, kind, tip.births[record_id], None) for record_id in old if record_id not in new]
        changed = header != tip.header
        tip.header = header
        return rows, changed

    def _header(self, curs: Any, tip: _Tip) -> dict[str, Any]:
        if tip.header is None:
            raise RuntimeError("timeline tip without a header")
        return dict(tip.header)

    def _tip(self, curs: Any, base_id: UUID) -> _Tip:
        tip = self._tips.get(base_id)
        if tip is not None:
            return tip
        self._flush(curs)  # read back this batch's rows too
        curs.execute(self._sql(
            f"SELECT position, version, state FROM {self.t_events} WHERE base_id = ?"
            " ORDER BY position DESC LIMIT 1"), (base_id.bytes,))
        row = curs.fetchone()
        if row is None:
            raise RuntimeError(f"the timeline has no creation for base {base_id}")
        state = self._decode(row["state"])
        tip = _Tip(position=int(row["position"]), version=int(row["version"]), counts=dict(state["counts"]),
                   last_entry_at=state["last_entry_at"], header_at=state["header_at"])
        tip.header = self._header_at(curs, base_id, tip.header_at)
        # Records with a life open at the tip: their births, found lazily by _birth.
        return tip

    def _header_at(self, curs: Any, base_id: UUID, header_at: int) -> dict[str, Any]:
        """The header written by the event row at `header_at` (each row's state names it)."""
        curs.execute(self._sql(f"SELECT header FROM {self.t_events} WHERE base_id = ? AND position = ?"),
                     (base_id.bytes, header_at))
        row = curs.fetchone()
        if row is None or row["header"] is None:
            raise RuntimeError(f"the timeline has no header for base {base_id} at {header_at}")
        return self._decode(row["header"])

    def _records_at(self, curs: Any, base_id: UUID, position: int, kind: str | None = None,
                    with_births: bool = False) -> Any:
        """Every live record of the base (or of one kind) at `position`, in the order they were entered."""
        params: list[Any] = [base_id.bytes, position]
        where = "base_id = ? AND position <= ?"
        if kind is not None:
            where += " AND kind = ?"
            params.append(kind)
        curs.execute(self._sql(
            f"SELECT record_id, kind, birth, fields FROM {self.t_records} WHERE {where}"
            " ORDER BY position"), params)
        latest: dict[bytes, tuple[str, int, Any]] = {}
        for row in curs.fetchall():
            latest[bytes(row["record_id"])] = (row["kind"], int(row["birth"]), row["fields"])
        records: dict[str, dict[UUID, dict]] = {k: {} for k in KINDS}
        births: dict[UUID, int] = {}
        for record_id, (kind_name, birth, fields) in sorted(latest.items(), key=lambda item: (item[1][1], item[0])):
            if fields is not None:
                rid = UUID(bytes=record_id)
                records[kind_name][rid] = self._decode(fields)
                births[rid] = birth
        return (records, births) if with_births else records

    # -- reads ------------------------------------------------------------
    def base_at(self, base_id: UUID, instant: datetime) -> BaseAt | None:
        """The base after every event stamped at or before `instant`, or None if it did not exist yet."""
        self.catch_up()
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(
                f"SELECT position, version, timestamp, state FROM {self.t_events}"
                " WHERE base_id = ? AND timestamp <= ? ORDER BY timestamp DESC, position DESC LIMIT 1"),
                (base_id.bytes, iso(instant)))
            row = curs.fetchone()
            if row is None:
                return None
            position = int(row["position"])
            state = self._decode(row["state"])
            header = self._header_at(curs, base_id, state["header_at"])
        return BaseAt(id=base_id, position=position, version=int(row["version"]),
                      timestamp=datetime.fromisoformat(row["timestamp"]), header=header,
                      kind_counts=dict(state["counts"]), last_entry_at=state["last_entry_at"])

    def records_page(self, base: BaseAt, kind: str, after: UUID | None = None,
                     limit: int = 100) -> tuple[list[tuple[UUID, dict]], UUID | None]:
        """A page of the kind's records at the base's position, in the order they were entered.

        The lives alive at P come from one range scan of ``campus_tl_lives`` in entry
        order; each one's fields at P from one primary-key seek.
        """
        with self.datastore.transaction(commit=False) as curs:
            cursor: tuple[int, bytes] = (-1, b"")
            if after is not None:
                found = self._latest(curs, base.id, after, base.position)
                if found is None or found[1] is None:
                    raise LookupError(after)
                cursor = (found[0], after.bytes)
            curs.execute(self._sql(
                f"SELECT birth, record_id FROM {self.t_lives} WHERE base_id = ? AND kind = ?"
                " AND (birth, record_id) > (?, ?) AND birth <= ? AND (death IS NULL OR death > ?)"
                f" ORDER BY birth, record_id LIMIT {int(limit) + 1}"),
                (base.id.bytes, kind, cursor[0], cursor[1], base.position, base.position))
            lives = [bytes(row["record_id"]) for row in curs.fetchall()]
            page = []
            for record_id in lives[:limit]:
                curs.execute(self._sql(
                    f"SELECT fields FROM {self.t_records} WHERE base_id = ? AND record_id = ? AND position <= ?"
                    " ORDER BY position DESC LIMIT 1"), (base.id.bytes, record_id, base.position))
                page.append((UUID(bytes=record_id), self._decode(curs.fetchone()["fields"])))
        more = len(lives) > limit
        return page, (page[-1][0] if more and page else None)

    def record_at(self, base: BaseAt, record_id: UUID) -> dict | None:
        with self.datastore.transaction(commit=False) as curs:
            found = self._latest(curs, base.id, record_id, base.position)
        return None if found is None else found[1]

    def records_at(self, base: BaseAt) -> dict[str, dict[UUID, dict]]:
        """All the base's records at its position (a restore, a diff of everything)."""
        with self.datastore.transaction(commit=False) as curs:
            return self._records_at(curs, base.id, base.position)

    def changed_between(self, base_id: UUID, start: int, end: int) -> list[tuple[str, UUID]]:
        """(kind, record) of the records written in (start, end]: the only ones a diff compares."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(
                f"SELECT touched FROM {self.t_events} WHERE base_id = ? AND position > ? AND position <= ?"
                " ORDER BY position"), (base_id.bytes, start, end))
            seen: dict[tuple[int, bytes], None] = {}
            for row in curs.fetchall():
                touched = bytes(row["touched"])
                for i in range(0, len(touched), 17):
                    seen.setdefault((touched[i], touched[i + 1:i + 17]), None)
        kinds = list(KINDS)
        return [(kinds[k], UUID(bytes=rid)) for k, rid in sorted(seen, key=lambda key: key[0])]

    def restorable_state(self, base: BaseAt) -> dict[str, Any]:
        """What a restore to this point brings back (the same as Base.restorable_state of a replay)."""
        with self.datastore.transaction(commit=False) as curs:
            records = self._records_at(curs, base.id, base.position)
            annexes = {}
            for name, annex in base.header["annexes"].items():
                curs.execute(self._sql(f"SELECT data FROM {self.t_annexes} WHERE base_id = ? AND sha256 = ?"),
                             (base.id.bytes, annex["sha256"]))
                annexes[name] = {**annex, "data": bytes(curs.fetchone()["data"])}
        return {
            "name": base.header["name"],
            "grid": base.header["grid"],
            "records": {kind: found for kind, found in records.items() if found},
            "annexes": annexes,
            "connection_modes": base.header["connection_modes"],
            "last_entry_at": base.last_entry_at,
        }
