"""The one path every write takes.

A command is a function that reads aggregates, checks rules, calls their
decorated methods and ``save``\\ s them. :meth:`CommandPath.run` gives it, in
this order:

1. **the school's guard** (:mod:`campus.infra.locks`): one command of a school at a
   time, in this process and in every other process on the store;
2. **its instant**, read from the one clock *inside* the guard, raised if need be
   so it is never earlier than the last event of any aggregate it appends to
   (a server whose clock is behind re-runs the command at that instant); every
   event of the command carries it;
3. **the command itself**; ``save`` only collects the events (and keeps the saved
   aggregates, so a later read in the same command sees them);
4. **one append**: every collected event, and any write registered with
   :meth:`CommandPath.in_transaction`, in one database transaction. Nothing is
   acknowledged before it commits (SQLite ``synchronous=FULL``; PostgreSQL's
   commit);
5. **no trace on failure**: whatever fails — the command, the append, the commit
   — the command's aggregates are dropped from every cache, so memory never holds
   a change the store does not; versions stay contiguous. A store that refuses
   (full, unreachable, an error of the database) answers
   :class:`~campus.errors.StoreUnavailable` (503 + ``Retry-After``);
6. **retries**: a version conflict (another school's command claimed the same
   natural key, say) re-runs the command after a random pause, up to
   :data:`ATTEMPTS` times.

On PostgreSQL the guard is a transaction-scoped advisory lock in the command's
own transaction; the command's reads run on that same connection (see
:class:`campus.infra.store.CampusPostgresDatastore`) and its events are inserted in it,
so one commit both stores them and lets the next command of the school in. On
SQLite the guard is a byte-range lock beside the database and the append is one
short write transaction (holding SQLite's single write lock for a whole command
would stop every other school and the views).

A command run inside another command of the same school (recording a failed
authentication while a login is refused, say) is a command of its own: it
commits on its own, whatever becomes of the outer one.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import structlog
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    RecordConflictError,
    StoredEvent,
)

from campus.errors import Conflict, StoreUnavailable
from campus.infra.clock import (
    Clock,
    FrozenClock,
    InstantTooEarly,
    current_clock,
    reset_clock,
    use_clock,
)
from campus.infra.group_commit import GroupCommit
from campus.infra.locks import StoreLocks
from campus.infra.store import LOCK_TIMEOUT_MS, bind_connection

log = structlog.get_logger("campus.commands")

T = TypeVar("T")
ATTEMPTS = 8  # conflicts with other schools' commands: re-run up to this many times
GUARD_LOCK_TIMEOUT_MS = LOCK_TIMEOUT_MS  # PostgreSQL: how long a command waits for its school's advisory lock
# PostgreSQL: commands holding a connection at once; the rest of the pool (20) stays free for reads
# outside commands and for the views' followers, which a command may wait for.
COMMAND_CONNECTIONS = 12
CATCH_UP_ROWS = 10_000  # SQLite: positions read at a time by log_after (the repository catching up)


@dataclass(eq=False)
class Scope:
    """One running command: its school, instant, and what it has done so far."""

    tenant: Any
    instant: datetime
    connection: Any = None  # PostgreSQL: the connection whose transaction holds the school
    saved: dict[UUID, Any] = field(default_factory=dict)  # aggregates saved, by id (read back as they are)
    events: list[Any] = field(default_factory=list)  # collected, in order
    touched: set[UUID] = field(default_factory=set)  # cached aggregates handed out: dropped on failure
    writes: list[Callable[[Any], None]] = field(default_factory=list)  # run in the append transaction
    after: list[Callable[[], None]] = field(default_factory=list)  # run once committed
    positions: list[int] = field(default_factory=list)  # notification ids given to the events
    fresh: bool = False  # the repository's memory was brought up to date for this command


_scope: ContextVar[Scope | None] = ContextVar("campus_command", default=None)


def current_scope() -> Scope | None:
    """The command running in this context, if any."""
    return _scope.get()


class CommandPath:
    def __init__(self, *, clock: Clock, recorder: Any, mapper: Any, locks: StoreLocks) -> None:
        """`recorder` and `mapper`: the library's, of the application whose events this path appends."""
        self.clock, self.recorder, self.mapper, self.locks = clock, recorder, mapper, locks
        self.is_postgres = locks.is_postgres
        self.table = recorder.events_table_name
        if self.is_postgres:
            self.qualified = f'"{recorder.datastore.schema}"."{self.table}"'
        self._forgetters: list[Callable[[set[UUID]], None]] = []
        self._on_commit: list[Callable[[Any], None]] = []
        self.shared: Callable[[Any], bool] = lambda aggregate: False  # the repository's cached object?
        self._connections = threading.BoundedSemaphore(COMMAND_CONNECTIONS)
        self._local = threading.local()
        self._log_reader: sqlite3.Connection | None = None  # SQLite: log_after's own connection
        # SQLite: commands of different schools appending at the same moment share one transaction.
        self.group = None if self.is_postgres else GroupCommit(lambda: recorder.datastore.transaction(commit=True))

    def _held_schools(self) -> set:
        """The schools whose guard this thread holds (a command inside a command of one of them is nested)."""
        held = getattr(self._local, "schools", None)
        if held is None:
            held = self._local.schools = set()
        return held

    def on_failure_forget(self, forget: Callable[[set[UUID]], None]) -> None:
        """Register a cache: `forget(ids)` drops those aggregates when a command fails."""
        self._forgetters.append(forget)

    def on_commit(self, committed: Callable[[Any], None]) -> None:
        """Register `committed(aggregates)`, told the aggregates of each command once they are stored."""
        self._on_commit.append(committed)

    def log_after(self, position: int) -> list[tuple[int, Any]]:
        """SQLite: (position, aggregate id) of the events after `position`, in order, at most CATCH_UP_ROWS.
        Called by one thread at a time (the repository's catch-up), on a connection of its own."""
        if self._log_reader is None:
            pool = self.recorder.datastore.pool
            self._log_reader = sqlite3.connect(pool.db_name, uri=True, check_same_thread=False,
                                               isolation_level=None, timeout=10)
        rows = self._log_reader.execute(
            f"SELECT rowid, originator_id FROM {self.table} WHERE rowid > ? ORDER BY rowid LIMIT {CATCH_UP_ROWS}",
            (position,)).fetchall()
        return [(row[0], UUID(row[1])) for row in rows]

    def close(self) -> None:
        if self._log_reader is not None:
            self._log_reader.close()
            self._log_reader = None

    # -- running a command ------------------------------------------------------------------
    def run(self, tenant: Any, body: Callable[[], T]) -> T:
        nested = tenant in self._held_schools()
        floor: datetime | None = None
        for attempt in range(1, ATTEMPTS + 1):
            scope: Scope | None = None
            try:
                with self._guard(tenant, nested) as connection:
                    instant = self.clock.now()
                    if floor is not None and instant < floor:
                        instant = floor
                    scope = Scope(tenant, instant, connection)
                    result = self._attempt(scope, body)
                self._committed(scope)
                return result
            except InstantTooEarly as late:
                self._forget(scope)
                floor = late.at
                log.info("command_instant_raised", tenant=str(tenant), to=late.at.isoformat())
            except RecordConflictError:
                self._forget(scope)
                if attempt == ATTEMPTS:
                    raise Conflict("the object was changed concurrently; retry the request") from None
                time.sleep(random.uniform(0, min(0.25, 0.004 * 2 ** attempt)))
            except PersistenceError as exc:
                self._forget(scope)
                raise store_unavailable(exc) from None
            except BaseException:
                self._forget(scope)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, scope: Scope, body: Callable[[], T]) -> T:
        token = _scope.set(scope)
        clock_token = use_clock(FrozenClock(scope.instant))
        # PostgreSQL: the command's reads run in its transaction; a nested command's in their own.
        bound = bind_connection(scope.connection) if self.is_postgres else None
        try:
            result = body()
            if scope.events or scope.writes:
                self._append(scope)
            return result
        finally:
            if bound is not None:
                bound.reset()
            reset_clock(clock_token)
            _scope.reset(token)

    @contextmanager
    def _guard(self, tenant: Any, nested: bool) -> Iterator[Any]:
        """Hold the school (unless this thread already does); yield the PostgreSQL connection whose
        transaction holds it (None on SQLite, or for a nested command)."""
        if nested:
            yield None
            return
        with self.locks.school_slot(tenant), self._holding(tenant):
            if not self.is_postgres:
                yield None
                return
            if not self._connections.acquire(timeout=GUARD_LOCK_TIMEOUT_MS / 1000):
                raise StoreUnavailable("the server is busy; nothing was changed, retry shortly", code="server_busy")
            try:
                datastore = self.recorder.datastore
                with datastore.get_connection() as conn, conn.transaction():
                    # One round trip: the school (waiting at most the connection's lock_timeout,
                    # LOCK_TIMEOUT_MS: campus/infra/store.py) and the transaction's id, taken
                    # before the sequence gives ids to its events (see _insert_postgres).
                    conn.execute("SELECT pg_advisory_xact_lock(%s), pg_current_xact_id()",
                                 (self.locks.school_key(tenant),))
                    yield conn
            finally:
                self._connections.release()

    @contextmanager
    def _holding(self, tenant: Any) -> Iterator[None]:
        held = self._held_schools()
        held.add(tenant)
        try:
            yield
        finally:
            held.discard(tenant)

    def save(self, *aggregates: Any) -> list:
        """Inside a command: keep the aggregates' events for the command's one append. Outside: a command of
        its own (the school is the first aggregate's account)."""
        scope = _scope.get()
        if scope is not None:
            self.collect(scope, aggregates)
            return []
        tenant = next((getattr(a, "account_id", None) for a in aggregates if a is not None), None)
        return self.run(tenant, lambda: self.save(*aggregates))

    def now(self) -> datetime:
        """The running command's instant, or the clock's outside a command."""
        clock = current_clock()
        return clock.now() if isinstance(clock, FrozenClock) else self.clock.now()

    # -- inside a command ---------------------------------------------------------------------------
    def collect(self, scope: Scope, aggregates: tuple[Any, ...]) -> None:
        """What ``save`` does inside a command: keep the events for the append."""
        for aggregate in aggregates:
            if aggregate is None:
                continue
            if self.shared(aggregate):
                # Read outside any command, changed, then saved: no longer the committed state readers share.
                log.warning("shared_aggregate_changed", aggregate_type=type(aggregate).__name__)
                for forget in self._forgetters:
                    forget({aggregate.id})
            scope.events.extend(aggregate.collect_events())
            scope.saved[aggregate.id] = aggregate

    def in_transaction(self, write: Callable[[Any], None]) -> None:
        """Run `write(cursor)` in the transaction that appends the current command's events (so it is
        kept exactly when they are), or at once in a transaction of its own outside a command."""
        scope = _scope.get()
        if scope is not None:
            scope.writes.append(write)
            return
        with self.recorder.datastore.transaction(commit=True) as curs:
            write(curs)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the current command is stored (at once outside a command)."""
        scope = _scope.get()
        if scope is None:
            action()
        else:
            scope.after.append(action)

    def touch(self, aggregate_id: UUID) -> None:
        """A cached aggregate was handed to the current command: drop it if the command fails."""
        scope = _scope.get()
        if scope is not None:
            scope.touched.add(aggregate_id)

    # -- the append -----------------------------------------------------------------------------------
    def _append(self, scope: Scope) -> None:
        stored = [self.mapper.to_stored_event(e) for e in scope.events]
        if scope.connection is not None:
            with scope.connection.cursor() as curs:
                self._insert(curs, scope, stored)
            return
        if self.group is not None:  # SQLite: with the other schools' commands of this moment, one commit
            self.group.run(lambda curs: self._insert(curs, scope, stored))
            return
        with self.recorder.datastore.transaction(commit=True) as curs:
            self._insert(curs, scope, stored)

    def _insert(self, curs: Any, scope: Scope, stored: list[StoredEvent]) -> None:
        try:
            if stored:
                scope.positions = (self._insert_postgres(curs, stored, has_id=scope.connection is not None)
                                   if self.is_postgres else self._insert_sqlite(curs, stored))
            for write in scope.writes:
                write(curs)
        except (IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError) as exc:
            if _is_version_conflict(exc, self.table):
                raise RecordConflictError(str(exc)) from None
            # Refused for another reason (a constraint or trigger of the database): nothing to retry, a
            # store that refused (503), not "changed concurrently" after eight attempts.
            raise PersistenceError(f"the store refused the change: {exc}") from exc
        except sqlite3.Error as exc:  # SQLite's cursor raises its own errors: the library's, as elsewhere
            raise (OperationalError if isinstance(exc, sqlite3.OperationalError) else PersistenceError)(
                str(exc)) from exc

    def _insert_sqlite(self, curs: Any, stored: list[StoredEvent]) -> list[int]:
        positions = []
        for s in stored:
            curs.execute(f"INSERT INTO {self.table} VALUES (?,?,?,?)",
                         (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                          s.originator_version, s.topic, s.state))
            positions.append(curs.lastrowid)
        return positions

    def _insert_postgres(self, curs: Any, stored: list[StoredEvent], *, has_id: bool) -> list[int]:
        # The transaction gets its id before the sequence gives ids to its events: a view
        # follower that sees a gap in the ids knows which transactions could still fill it.
        # (`has_id`: the school's guard took it with the lock, in the same transaction.)
        if not has_id:
            curs.execute("SELECT pg_current_xact_id()")
        # One statement (not psycopg's pipeline, which hung on multi-megabyte commands).
        values = ",".join(["(%s,%s,%s,%s)"] * len(stored))
        params: list[Any] = []
        for s in stored:
            params += [s.originator_id, s.originator_version, s.topic, s.state]
        curs.execute(f"INSERT INTO {self.qualified} (originator_id, originator_version, topic, state)"
                     f" VALUES {values} RETURNING notification_id", params)
        return sorted(int(row["notification_id"]) for row in curs.fetchall())

    # -- afterwards -----------------------------------------------------------------------------------
    def _committed(self, scope: Scope) -> None:
        if scope.saved:
            for committed in self._on_commit:
                committed(scope.saved.values(), scope.positions)
        for action in scope.after:
            try:
                action()
            except Exception:  # noqa: BLE001 - the command is stored; a follow-up is best effort
                log.warning("after_commit_failed", exc_info=True)

    def _forget(self, scope: Scope | None) -> None:
        if scope is None:
            return
        ids = set(scope.touched) | set(scope.saved)
        for aggregate in scope.saved.values():
            aggregate.collect_events()  # never saved: its pending events go with it
        if ids:
            for forget in self._forgetters:
                forget(ids)


def _is_version_conflict(exc: Exception, table: str) -> bool:
    """Whether an integrity error is another writer's event at the same (aggregate, version): SQLite says
    "UNIQUE constraint failed: <table>.originator_id, <table>.originator_version", PostgreSQL names the
    primary key "<table>_pkey" and "Key (originator_id, originator_version)"."""
    text = str(exc).lower()
    return "originator_version" in text or f"{table}_pkey" in text


def store_unavailable(exc: Exception) -> StoreUnavailable:
    """The 503 for a store that refused or failed: says why when the store says it is full."""
    text = str(exc).lower()
    log.warning("store_refused", error_type=type(exc).__name__, full="full" in text)
    if "disk is full" in text or "no space left" in text or "could not extend" in text or "diskfull" in text:
        return StoreUnavailable("the store is full: nothing was changed; the operator must free space",
                                retry_after=30, code="store_full")
    return StoreUnavailable("the event store refused or could not take the change; nothing was changed, "
                            "retry shortly", retry_after=1)
