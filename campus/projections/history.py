"""The history: the audit read model, and the catalogue of aggregates per tenant.

A projection of the application's notification log into two tables in the same
database as the events (SQLite file or PostgreSQL schema):

* ``campus_history``: one row per event, with tenant, aggregate, type, actor,
  request id, client address, timestamp and the event's data with secrets
  redacted; indexed for each filter of ``GET /v1/console/history`` within a tenant
  (see :meth:`HistoryView.page_statement`).
* ``campus_catalogue``: which aggregates of which type each tenant has (lists of
  users, for instance, are read from here).
* ``campus_history_scope``: the planning and base each aggregate belongs to, as
  its first event said (``Base.Created`` names its planning, later base events do
  not): the projector reads it to fill the ``planning_id`` and ``base_id`` of
  every history row.

How the view follows the log — one projector at a time, every event exactly once
whatever the commit order of ids, readers waiting for it — is shared with the
timeline: :class:`~campus.projections.follower.ProjectedView`. Readers call
:meth:`HistoryView.catch_up` first, which makes every read consistent with every
write that preceded it. The view can be dropped and rebuilt from the events at
any time (``campus views rebuild history``); when its table layout changes,
:data:`SCHEMA_VERSION` changes and the tables are dropped and projected again
from the first event (see docs/HISTORY.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
import structlog
from psycopg.rows import tuple_row

from campus.infra.redaction import redact
from campus.projections.follower import ProjectedView

if TYPE_CHECKING:
    from eventsourcing.application import Application

# The layout of the view's tables. Change it with the tables: a database whose view was
# built under another version gets its view dropped and rebuilt from the events.
# 1: the first layout (no version row); 2: planning_id and base_id, the scope table;
# 3: an index per filter within a tenant (type, actor, aggregate, timestamp).
SCHEMA_VERSION = 3
SCOPE_LOOKUP_CHUNK = 400  # ids per IN (...) list, under every SQLite's variable limit
log = structlog.get_logger("campus.history")
_HIDDEN_FIELDS = ("originator_id", "originator_version", "timestamp", "meta", "originator_topic")
# The columns of an event as the API shows it, in its keys' order (a row is a tuple of these).
_EVENT_COLUMNS = ("position, timestamp, type, aggregate_id, aggregate_type, version, actor, request_id,"
                  " client_address, reason, data")
# Several types are read as one index seek per type, merged in position order (UNION ALL); more
# than this many (hardly a filter any more) read the tenant's rows in order, checking the type.
TYPE_BRANCHES_MAX = 50


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    raise TypeError(type(value).__name__)


def to_json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


def iso(instant: datetime) -> str:
    """Fixed-width UTC ISO text: sorts as text the way instants sort in time."""
    if instant.tzinfo is not timezone.utc:
        instant = instant.astimezone(timezone.utc)
    # isoformat is C code, several times faster than strftime (the views call this for every event).
    return instant.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True)
class HistoryQuery:
    tenant: str
    types: tuple[str, ...] = ()
    actor: str | None = None
    aggregate_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    limit: int = 100
    # Events of that planning (its own, its bases', their backups', sessions opened on it) / that base.
    planning_id: str | None = None
    base_id: str | None = None
    # Events at or before this position only (an export reads up to where the view was when it began).
    upto: int | None = None


@dataclass(frozen=True)
class Positions:
    """The positions where a time-filtered query's events lie (first and last), read from the time index."""

    low: int
    high: int

    @property
    def empty(self) -> bool:
        return self.low > self.high


NO_POSITIONS = Positions(1, 0)


class HistoryView(ProjectedView):
    name = "history"

    def __init__(self, app: Application) -> None:
        super().__init__(app, "campus_view_tracking")
        self.t_history = self.table("campus_history")
        self.t_catalogue = self.table("campus_catalogue")
        self.t_scope = self.table("campus_history_scope")
        self.t_schema = self.table("campus_view_schema")
        self._create_tables()

    # -- SQL plumbing -----------------------------------------------------
    def _create_tables(self) -> None:
        """Create the view's tables; drop and recreate them first if they have another layout.

        Runs in one transaction. On PostgreSQL an advisory lock (per schema) keeps two
        servers starting together from rebuilding at the same time.
        """
        big = self.big
        with self.datastore.transaction(commit=True) as curs:
            if self.is_postgres:
                curs.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.t_schema,))
            curs.execute(f"CREATE TABLE IF NOT EXISTS {self.t_tracking}"
                         f" (name TEXT PRIMARY KEY, position {big} NOT NULL)")
            curs.execute(f"CREATE TABLE IF NOT EXISTS {self.t_schema}"
                         " (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            curs.execute(self._sql(f"SELECT version FROM {self.t_schema} WHERE name = ?"), ("history",))
            row = curs.fetchone()
            if row is None or int(row["version"]) != SCHEMA_VERSION:
                self._drop_tables(curs, None if row is None else int(row["version"]))
            for statement in self._table_statements(big):
                curs.execute(statement)
            self._ensure_tracking(curs)

    def _drop_tables(self, curs: Any, found: int | None) -> None:
        """Forget the projected view (its rows and its position): the next catch-up rebuilds it."""
        projected = self._tracked(curs)
        if projected:
            log.info("history_view_rebuild", from_version=found or 1, to_version=SCHEMA_VERSION, events=projected)
        for table in (self.t_history, self.t_catalogue, self.t_scope):
            curs.execute(f"DROP TABLE IF EXISTS {table}")
        curs.execute(self._sql(f"DELETE FROM {self.t_tracking} WHERE name = ?"), ("history",))
        curs.execute(self._sql(
            f"INSERT INTO {self.t_schema} (name, version) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET version = excluded.version"), ("history", SCHEMA_VERSION))

    def _table_statements(self, big: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.t_history} ("
            f" position {big} PRIMARY KEY, tenant TEXT, aggregate_id TEXT NOT NULL,"
            " aggregate_type TEXT NOT NULL, type TEXT NOT NULL, version INTEGER NOT NULL,"
            " actor TEXT, request_id TEXT, client_address TEXT, reason TEXT,"
            " timestamp TEXT NOT NULL, data TEXT NOT NULL, planning_id TEXT, base_id TEXT)",
            # Every filter of the API is an index seek within the tenant, in position order; the time
            # is a range of its index giving the positions to read (`positions_statement`).
            f"CREATE INDEX IF NOT EXISTS campus_history_tenant ON {self.t_history} (tenant, position)",
            f"CREATE INDEX IF NOT EXISTS campus_history_type ON {self.t_history} (tenant, type, position)",
            f"CREATE INDEX IF NOT EXISTS campus_history_actor ON {self.t_history} (tenant, actor, position)",
            f"CREATE INDEX IF NOT EXISTS campus_history_tenant_aggregate ON {self.t_history}"
            " (tenant, aggregate_id, position)",
            f"CREATE INDEX IF NOT EXISTS campus_history_planning ON {self.t_history} (tenant, planning_id, position)",
            f"CREATE INDEX IF NOT EXISTS campus_history_base ON {self.t_history} (tenant, base_id, position)",
            f"CREATE INDEX IF NOT EXISTS campus_history_time ON {self.t_history} (tenant, timestamp, position)",
            # `version_at` (an aggregate's past, whatever its tenant).
            f"CREATE INDEX IF NOT EXISTS campus_history_aggregate ON {self.t_history} (aggregate_id, position)",
            f"CREATE TABLE IF NOT EXISTS {self.t_catalogue} ("
            " aggregate_id TEXT PRIMARY KEY, tenant TEXT, aggregate_type TEXT NOT NULL,"
            f" position {big} NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS campus_catalogue_tenant ON {self.t_catalogue} (tenant, aggregate_type)",
            f"CREATE TABLE IF NOT EXISTS {self.t_scope}"
            " (aggregate_id TEXT PRIMARY KEY, planning_id TEXT, base_id TEXT)",
        ]

    def _clear(self, curs: Any) -> None:
        for table in (self.t_history, self.t_catalogue, self.t_scope):
            curs.execute(f"DELETE FROM {table}")

    def _project(self, notifications: Sequence[Any], after: int) -> None:
        rows, catalogue = [], []
        decoded = [(n, self.app.mapper.to_domain_event(n)) for n in notifications]
        scopes = _Scopes(self._known_scopes(decoded))
        for n, event in decoded:
            qualname = n.topic.split(":", 1)[1]
            aggregate_type = qualname.split(".")[0]
            meta = getattr(event, "meta", {}) or {}
            data = _plain({k: v for k, v in vars(event).items() if k not in _HIDDEN_FIELDS})
            planning_id, base_id = scopes.resolve(aggregate_type, str(n.originator_id), data)
            rows.append((
                n.id, meta.get("tenant"), str(n.originator_id), aggregate_type, qualname,
                n.originator_version, meta.get("actor"), meta.get("request_id"),
                meta.get("client_address"), meta.get("reason"), iso(event.timestamp),
                to_json_bytes(redact(data)).decode(), planning_id, base_id,
            ))
            if n.originator_version == 1:
                catalogue.append((str(n.originator_id), meta.get("tenant"), aggregate_type, n.id))
        with self.datastore.transaction(commit=True) as curs:
            self._advance_tracking(curs, after, notifications[-1].id)
            self._insert_rows(curs, f"{self.t_history} (position, tenant, aggregate_id, aggregate_type, type,"
                              " version, actor, request_id, client_address, reason, timestamp, data, planning_id,"
                              " base_id)", rows, "ON CONFLICT (position) DO NOTHING")
            self._insert_rows(curs, f"{self.t_catalogue} (aggregate_id, tenant, aggregate_type, position)",
                              catalogue, "ON CONFLICT (aggregate_id) DO NOTHING")
            self._insert_rows(curs, f"{self.t_scope} (aggregate_id, planning_id, base_id)",
                              [(a, p, b) for a, (p, b) in scopes.new.items()], "ON CONFLICT (aggregate_id) DO NOTHING")

    def _known_scopes(self, decoded: list) -> dict[str, tuple[str | None, str | None]]:
        """The remembered scopes of the batch's aggregates and of the bases its events name."""
        wanted = {str(n.originator_id) for n, _ in decoded}
        wanted |= {str(b) for _, e in decoded if (b := getattr(e, "base_id", None)) is not None}
        ids, known = sorted(wanted), {}
        with self.datastore.transaction(commit=False) as curs:
            for start in range(0, len(ids), SCOPE_LOOKUP_CHUNK):
                chunk = ids[start:start + SCOPE_LOOKUP_CHUNK]
                curs.execute(self._sql(
                    f"SELECT aggregate_id, planning_id, base_id FROM {self.t_scope}"
                    f" WHERE aggregate_id IN ({','.join('?' * len(chunk))})"), chunk)
                for r in curs.fetchall():
                    known[str(r["aggregate_id"])] = (r["planning_id"], r["base_id"])
        return known

    # -- reads ------------------------------------------------------------
    def query(self, q: HistoryQuery) -> tuple[list[dict], int | None]:
        """A page of events (the data decoded), and the position to read the next page after (None: the end)."""
        rows, next_position = self.rows(q)
        return [_event(r, orjson.loads(r[-1])) for r in rows], next_position

    def page(self, q: HistoryQuery) -> tuple[list[dict], int | None]:
        """As :meth:`query`, with each event's data as stored (an ``orjson.Fragment``: encoded as is)."""
        rows, next_position = self.rows(q)
        return [_event(r, orjson.Fragment(r[-1])) for r in rows], next_position

    def rows(self, q: HistoryQuery) -> tuple[list[tuple], int | None]:
        """A page of events as row tuples (the columns of ``_EVENT_COLUMNS``), after catching up."""
        self.catch_up()
        return self._rows(q, self.positions(q))

    def export(self, q: HistoryQuery, page: int) -> Iterator[bytes]:
        """Every event of `q` after ``q.after`` as JSON lines, `page` events per chunk, in position order.

        Consistent: only the events up to the view's position when this is called (events recorded
        meanwhile are not included, and none before it is missed: the view only ever appends). The
        first page is read before this returns, so a store that cannot answer fails here, not in the
        middle of the answer; the later pages are read as the chunks are taken, each in a transaction
        of its own: memory holds one page, whatever the length of the history.
        """
        q = replace(q, upto=self.catch_up(), limit=page)
        positions = self.positions(q)
        rows, next_position = self._rows(q, positions)
        return self._lines(q, positions, rows, next_position)

    def _lines(self, q: HistoryQuery, positions: Positions | None, rows: list[tuple],
               next_position: int | None) -> Iterator[bytes]:
        while True:
            if rows:
                yield b"".join([event_line(r) for r in rows])
            if next_position is None:
                return
            rows, next_position = self._rows(replace(q, after=next_position), positions)

    def _rows(self, q: HistoryQuery, positions: Positions | None) -> tuple[list[tuple], int | None]:
        if positions is not None and positions.empty:
            return [], None
        fetched = self._fetch(*self.page_statement(q, positions))
        more = len(fetched) > q.limit
        rows = fetched[: q.limit]
        return rows, (rows[-1][0] if more and rows else None)

    def positions(self, q: HistoryQuery) -> Positions | None:
        """Where the events of `q`'s time range lie (None without `since`/`until`)."""
        statement = self.positions_statement(q)
        if statement is None:
            return None
        low, high = self._fetch(*statement)[0]
        return NO_POSITIONS if low is None else Positions(int(low), int(high))

    def _fetch(self, statement: str, params: Sequence[Any]) -> list[tuple]:
        with self.datastore.transaction(commit=False) as curs:
            # Plain tuples (the pools make dicts or sqlite3.Row): the cheapest rows to make and to encode
            # (SQLite: the library's cursor wraps sqlite3's, whose row factory is set for this cursor only).
            if self.is_postgres:
                curs.row_factory = tuple_row
            else:
                curs.sqlite_cursor.row_factory = None
            curs.execute(self._sql(statement), params)
            return curs.fetchall()

    # The SQL of the reads, with `?` placeholders (public: the query-plan test reads what runs).
    def positions_statement(self, q: HistoryQuery) -> tuple[str, list] | None:
        """The first and last positions of `q`'s time range: a range of the time index (tenant, timestamp,
        position), read from the index alone. Timestamps follow positions only roughly (several servers'
        clocks), so the range, not a guess from its ends, gives the positions."""
        if not q.since and not q.until:
            return None
        where, params = ["tenant = ?"], [q.tenant]
        if q.since:
            where.append("timestamp >= ?")
            params.append(iso(q.since))
        if q.until:
            where.append("timestamp <= ?")
            params.append(iso(q.until))
        # `+ 0`: PostgreSQL would otherwise answer MIN and MAX by walking the position index until a row
        # of the range turns up, which reads every row before (or after) the range.
        return (f"SELECT MIN(position + 0) AS low, MAX(position + 0) AS high FROM {self.t_history}"
                f" WHERE {' AND '.join(where)}", params)

    def page_statement(self, q: HistoryQuery, positions: Positions | None = None) -> tuple[str, list]:
        """The events of `q` in position order, ``q.limit`` + 1 of them (the one more says a next page exists).

        Each filter has its index within the tenant — (tenant, type | actor | aggregate_id | planning_id |
        base_id, position) — so a page is a seek plus the rows it returns, and ``after`` (and the time
        range's `positions`) bound the position within it. Several types: one seek per type, merged.
        The time itself is checked on each row read (written ``+timestamp`` on SQLite, so that its
        planner keeps to the position order rather than sort the time range).
        """
        where, params = ["tenant = ?"], [q.tenant]
        for column in ("actor", "aggregate_id", "planning_id", "base_id"):
            if value := getattr(q, column):
                where.append(f"{column} = ?")
                params.append(value)
        timestamp = "timestamp" if self.is_postgres else "+timestamp"
        if q.since:
            where.append(f"{timestamp} >= ?")
            params.append(iso(q.since))
        if q.until:
            where.append(f"{timestamp} <= ?")
            params.append(iso(q.until))
        low = max(q.after + 1 if q.after is not None else 0, positions.low if positions else 0)
        if low > 0:
            where.append("position >= ?")
            params.append(low)
        highs = [h for h in (q.upto, positions.high if positions else None) if h is not None]
        if highs:
            where.append("position <= ?")
            params.append(min(highs))
        limit = f"ORDER BY position LIMIT {int(q.limit) + 1}"
        select = f"SELECT {_EVENT_COLUMNS} FROM {self.t_history} WHERE"
        types = list(dict.fromkeys(q.types))
        if len(types) == 1:
            return f"{select} type = ? AND {' AND '.join(where)} {limit}", [types[0], *params]
        if len(types) > TYPE_BRANCHES_MAX:
            column = "type" if self.is_postgres else "+type"
            return (f"{select} {column} IN ({','.join('?' * len(types))}) AND {' AND '.join(where)} {limit}",
                    [*types, *params])
        if types:
            # One seek per type, each in position order. SQLite merges the branches and stops at the limit.
            # PostgreSQL would read every match of every type and sort them: each branch is limited first.
            branch = f"{select} type = ? AND {' AND '.join(where)}"
            if self.is_postgres:
                branches = [f"SELECT * FROM ({branch} {limit}) AS t{i}" for i in range(len(types))]
            else:
                branches = [branch] * len(types)
            return " UNION ALL ".join(branches) + f" {limit}", [v for t in types for v in (t, *params)]
        return f"{select} {' AND '.join(where)} {limit}", params

    def version_at(self, aggregate_id: UUID, instant: datetime) -> tuple[int, int] | None:
        """(version, position) of the aggregate's last event stamped at or before `instant`."""
        self.catch_up()
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(
                f"SELECT version, position FROM {self.t_history} WHERE aggregate_id = ? AND timestamp <= ?"
                " ORDER BY position DESC LIMIT 1"), (str(aggregate_id), iso(instant)))
            row = curs.fetchone()
        return (int(row["version"]), int(row["position"])) if row else None

    def all_aggregate_ids(self, aggregate_type: str) -> list[UUID]:
        """Every tenant's aggregates of a type (for start-up work, never for an API answer)."""
        self.catch_up()
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(
                f"SELECT aggregate_id FROM {self.t_catalogue} WHERE aggregate_type = ? ORDER BY position"),
                (aggregate_type,))
            return [UUID(str(r["aggregate_id"])) for r in curs.fetchall()]

    def aggregate_ids(self, tenant: str, aggregate_type: str) -> list[UUID]:
        self.catch_up()
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(
                f"SELECT aggregate_id FROM {self.t_catalogue} WHERE tenant = ? AND aggregate_type = ?"
                " ORDER BY position"), (tenant, aggregate_type))
            return [UUID(str(r["aggregate_id"])) for r in curs.fetchall()]


def _event(row: Sequence[Any], data: Any) -> dict:
    position, timestamp, type_, aggregate_id, aggregate_type, version, actor, request_id, address, reason, _ = row
    return {"position": position, "timestamp": timestamp, "type": type_, "aggregate_id": aggregate_id,
            "aggregate_type": aggregate_type, "version": version, "actor": actor, "request_id": request_id,
            "client_address": address, "reason": reason, "data": data}


def event_line(row: Sequence[Any]) -> bytes:
    """One event row as a JSON line: the object the list answers, its stored data spliced in as is."""
    return orjson.dumps(_event(row, orjson.Fragment(row[-1])), option=orjson.OPT_APPEND_NEWLINE)


class _Scopes:
    """Which planning and base each event of a batch belongs to.

    An event of a Planning belongs to that planning (and to the base it names, if
    it names one: ``Planning.BaseMounted``). Any other event belongs to the planning
    and base its own fields name, else to those its aggregate's first naming event
    named (a base's later events, a backup's ``Discarded``, a session's ``Closed``);
    an event of a Base belongs to that base; a base's planning is the one its
    ``Base.Created`` named.
    """

    def __init__(self, known: dict[str, tuple[str | None, str | None]]) -> None:
        self.known = known
        self.new: dict[str, tuple[str | None, str | None]] = {}

    def resolve(self, aggregate_type: str, aggregate_id: str, data: dict) -> tuple[str | None, str | None]:
        planning_id, base_id = _text(data.get("planning_id")), _text(data.get("base_id"))
        if aggregate_type == "Planning":
            return aggregate_id, base_id
        remembered = self.known.get(aggregate_id)
        if remembered is not None:
            planning_id, base_id = planning_id or remembered[0], base_id or remembered[1]
        if aggregate_type == "Base":
            base_id = aggregate_id
        if planning_id is None and base_id is not None:
            planning_id = self.known.get(base_id, (None, None))[0]
        if remembered is None and (planning_id or base_id):
            self.known[aggregate_id] = self.new[aggregate_id] = (planning_id, base_id)
        return planning_id, base_id


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _plain(value: Any) -> Any:
    """Event values as JSON-friendly values (enums by value, tuples as lists)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    return value
