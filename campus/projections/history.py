"""The history: the audit read model, and the catalogue of aggregates per tenant.

A projection of the application's notification log into two tables in the same
database as the events (SQLite file or PostgreSQL schema):

* ``campus_history``: one row per event, with tenant, aggregate, type, actor,
  request id, client address, timestamp and the event's data with secrets
  redacted; indexed for the filters of ``GET /v1/console/history``.
* ``campus_catalogue``: which aggregates of which type each tenant has (lists of
  users, for instance, are read from here).

Rows are written in the same transaction as the tracking position, so the view
never skips or repeats an event. Readers call :meth:`HistoryView.catch_up` first,
which makes every read consistent with every write that preceded it. The view
can be dropped and rebuilt from the events at any time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
import structlog

from campus.redaction import redact

if TYPE_CHECKING:
    from eventsourcing.application import Application

BATCH = 500
log = structlog.get_logger("campus.history")
_HIDDEN_FIELDS = ("originator_id", "originator_version", "timestamp", "meta", "originator_topic")


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
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


class HistoryView:
    def __init__(self, app: Application) -> None:
        self.app = app
        self.datastore = app.recorder.datastore  # type: ignore[attr-defined]
        self.is_postgres = type(self.datastore).__name__.startswith("Postgres")
        schema = getattr(self.datastore, "schema", "")
        prefix = f'"{schema}".' if self.is_postgres and schema else ""
        self.t_history = f"{prefix}campus_history"
        self.t_catalogue = f"{prefix}campus_catalogue"
        self.t_tracking = f"{prefix}campus_view_tracking"
        self._lock = threading.Lock()
        self._create_tables()

    # -- SQL plumbing -----------------------------------------------------
    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.is_postgres else statement

    def _create_tables(self) -> None:
        big = "BIGINT" if self.is_postgres else "INTEGER"
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self.t_history} ("
            f" position {big} PRIMARY KEY, tenant TEXT, aggregate_id TEXT NOT NULL,"
            " aggregate_type TEXT NOT NULL, type TEXT NOT NULL, version INTEGER NOT NULL,"
            " actor TEXT, request_id TEXT, client_address TEXT, reason TEXT,"
            " timestamp TEXT NOT NULL, data TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS campus_history_tenant ON {self.t_history} (tenant, position)",
            f"CREATE INDEX IF NOT EXISTS campus_history_aggregate ON {self.t_history} (aggregate_id, position)",
            f"CREATE TABLE IF NOT EXISTS {self.t_catalogue} ("
            " aggregate_id TEXT PRIMARY KEY, tenant TEXT, aggregate_type TEXT NOT NULL,"
            f" position {big} NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS campus_catalogue_tenant ON {self.t_catalogue} (tenant, aggregate_type)",
            f"CREATE TABLE IF NOT EXISTS {self.t_tracking} (name TEXT PRIMARY KEY, position {big} NOT NULL)",
        ]
        with self.datastore.transaction(commit=True) as curs:
            for statement in statements:
                curs.execute(statement)

    def _position(self, curs: Any) -> int:
        curs.execute(self._sql(f"SELECT position FROM {self.t_tracking} WHERE name = ?"), ("history",))
        row = curs.fetchone()
        return int(row["position"]) if row else 0

    # -- projection -------------------------------------------------------
    def catch_up(self) -> int:
        """Project every event recorded so far; return the last position.

        The lock is taken one batch at a time, so a long catch-up (after a big
        load) never holds another reader for more than one batch.
        """
        while True:
            with self._lock:
                with self.datastore.transaction(commit=False) as curs:
                    position = self._position(curs)
                notifications = self.app.recorder.select_notifications(
                    start=position + 1, limit=BATCH
                )
                if not notifications:
                    return position
                self._project(notifications)

    def follow(self, stop: threading.Event, interval: float = 0.5) -> threading.Thread:
        """Keep the view caught up in the background until `stop` is set."""

        def run() -> None:
            while not stop.wait(interval):
                try:
                    self.catch_up()
                except Exception:  # noqa: BLE001 - a reader's catch_up will retry and report
                    log.warning("history_follow_failed", exc_info=True)

        thread = threading.Thread(target=run, name="campus-history-follower", daemon=True)
        thread.start()
        return thread

    def _project(self, notifications: list) -> None:
        rows, catalogue = [], []
        for n in notifications:
            event = self.app.mapper.to_domain_event(n)
            qualname = n.topic.split(":", 1)[1]
            aggregate_type = qualname.split(".")[0]
            meta = getattr(event, "meta", {}) or {}
            data = {k: v for k, v in vars(event).items() if k not in _HIDDEN_FIELDS}
            rows.append((
                n.id, meta.get("tenant"), str(n.originator_id), aggregate_type, qualname,
                n.originator_version, meta.get("actor"), meta.get("request_id"),
                meta.get("client_address"), meta.get("reason"), iso(event.timestamp),
                to_json_bytes(redact(_plain(data))).decode(),
            ))
            if n.originator_version == 1:
                catalogue.append((str(n.originator_id), meta.get("tenant"), aggregate_type, n.id))
        last = notifications[-1].id
        with self.datastore.transaction(commit=True) as curs:
            for row in rows:
                curs.execute(self._sql(
                    f"INSERT INTO {self.t_history} (position, tenant, aggregate_id, aggregate_type,"
                    " type, version, actor, request_id, client_address, reason, timestamp, data)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (position) DO NOTHING"), row)
            for row in catalogue:
                curs.execute(self._sql(
                    f"INSERT INTO {self.t_catalogue} (aggregate_id, tenant, aggregate_type, position)"
                    " VALUES (?,?,?,?) ON CONFLICT (aggregate_id) DO NOTHING"), row)
            curs.execute(self._sql(
                f"INSERT INTO {self.t_tracking} (name, position) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET position = excluded.position"), ("history", last))

    # -- reads ------------------------------------------------------------
    def query(self, q: HistoryQuery) -> tuple[list[dict], int | None]:
        self.catch_up()
        where, params = ["tenant = ?"], [q.tenant]
        if q.types:
            where.append(f"type IN ({','.join('?' * len(q.types))})")
            params += list(q.types)
        if q.actor:
            where.append("actor = ?")
            params.append(q.actor)
        if q.aggregate_id:
            where.append("aggregate_id = ?")
            params.append(q.aggregate_id)
        if q.since:
            where.append("timestamp >= ?")
            params.append(iso(q.since))
        if q.until:
            where.append("timestamp <= ?")
            params.append(iso(q.until))
        if q.after is not None:
            where.append("position > ?")
            params.append(q.after)
        statement = (
            f"SELECT * FROM {self.t_history} WHERE {' AND '.join(where)}"
            f" ORDER BY position LIMIT {int(q.limit) + 1}"
        )
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(statement), params)
            fetched = curs.fetchall()
        more = len(fetched) > q.limit
        events = [self._row_to_event(r) for r in fetched[: q.limit]]
        return events, (events[-1]["position"] if more and events else None)

    @staticmethod
    def _row_to_event(r: Any) -> dict:
        return {
            "position": int(r["position"]),
            "timestamp": r["timestamp"],
            "type": r["type"],
            "aggregate_id": r["aggregate_id"],
            "aggregate_type": r["aggregate_type"],
            "version": int(r["version"]),
            "actor": r["actor"],
            "request_id": r["request_id"],
            "client_address": r["client_address"],
            "reason": r["reason"],
            "data": orjson.loads(r["data"]),
        }

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
