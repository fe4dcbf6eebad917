"""Library snapshots of long bases, taken in the background (issue 11: fast replay and cold start).

A base is one event stream that only grows (a school year of grades is a million events), and a server
that starts, or a base that is not in memory, must read it: replaying every event takes seconds. The
library's snapshot of a base (:class:`~campus.aggregates.school_base.Base.Snapshot`) is its state at a
version; replay (:meth:`campus.repository.CommandRepository._reconstruct_aggregate`) starts from the
newest one at or below the wanted version and folds only the events after it.

How they are taken, here:

* **In the background, outside any school's serialisation.** Never inside a command (the school's
  guard would be held while a big state is encoded), never from the bases' cache (``BaseCache``, changed
  in place under the guard): the base is replayed into an object nobody else holds, from its previous
  snapshot and the events after it, encoded and stored. A command of the school meanwhile is neither
  waited for nor waits (on SQLite, only the short write transaction storing it is shared).
* **When a base has grown by** :data:`SNAPSHOT_EVERY` **events** since its snapshot (of the current
  layout: a snapshot of another layout counts as none). The server looks every :data:`LOOK_SECONDS`: it
  reads the log's new positions once (which bases got events, and their newest version).
* **By one server at a time**: the holder of the ``base-snapshots`` lease (:mod:`campus.infra.locks`,
  like the scheduler and the views' followers); the others try to take it every
  :data:`LEASE_RETRY_SECONDS`. Two servers snapshotting at once (a lease lost mid-way) would only do
  the work twice: storing is idempotent and keeps the newest.
* **One per base.** Storing a snapshot deletes the base's older ones in the same transaction, so the
  snapshot table holds about one state per base. ``version=`` reads below the newest snapshot replay
  from the first event, as before (``as_of`` reads never replay: they read the timeline).
* **At most half a core**: after a snapshot that took *t* seconds, the next waits *t* seconds.

A snapshot never changes what is read: it is the exact state replay gives at its version, and it is
used only if its stored topic names the current layout (``Base.SNAPSHOT_LAYOUT``, the record kinds, the
library's version; see :func:`campus.aggregates.school_base.snapshot_topic`). See docs/DECISIONS.md,
"Library snapshots of long bases".
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.utils import get_topic

from campus.aggregates.school_base import Base, snapshot_topic
from campus.repository import collector_paused
from campus.services.base import Core, Service

log = structlog.get_logger("campus.snapshots")

# Events a base may gain after its snapshot before it gets a new one. The events after a snapshot are
# replayed at each cold read: 10,000 of them take about 0.1 s (the fold runs at ~100,000 events/s), while
# each snapshot costs the encoding of the whole state (~1-2 s for 450,000 records) and is paid at most
# once per 10,000 events: a 1,000,000-event base has been snapshotted about 100 times in its life.
SNAPSHOT_EVERY = 10_000
LOOK_SECONDS = 30.0  # the lease holder looks for bases that grew this often
LEASE = "base-snapshots"
LEASE_RETRY_SECONDS = 5.0  # a server without the lease tries to take it this often
SCAN_ROWS = 50_000  # log positions read per query when looking for bases that grew
# PostgreSQL ids may commit out of order (docs/HISTORY.md): each look reads again this many ids before
# the head of the last look, so a command still committing then is seen now.
RESCAN_IDS = 10_000
PAUSE_FACTOR = 1.0  # after a snapshot that took t seconds, the next one waits t * PAUSE_FACTOR seconds


class BaseSnapshots(Service):
    """Snapshots of bases that grew: :meth:`take` one, :meth:`take_due` those due, :meth:`start_snapshotter`
    the thread doing it in the server holding the lease."""

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.store = core.repository.snapshot_store  # the library's snapshot store (None: snapshots off)
        self.topic = snapshot_topic()
        self.lease = core.locks.lease(LEASE)
        self.is_postgres = core.locks.is_postgres
        datastore = core.recorder.datastore
        self.datastore = datastore
        events = core.recorder.events_table_name
        snapshots = self.store.recorder.events_table_name if self.store is not None else ""
        if self.is_postgres:
            self._events, self._position = f'"{datastore.schema}"."{events}"', "notification_id"
            self._snapshots = f'"{datastore.schema}"."{snapshots}"'
        else:
            self._events, self._position, self._snapshots = events, "rowid", snapshots
        self._prefix = get_topic(Base) + "."  # the topics of a base's events
        self._working = threading.Lock()  # one look (and its snapshots) at a time in this process
        self._looked = 0  # the log's head at the last look
        self._versions: dict[UUID, int] = {}  # base id -> its newest version seen in the log
        self._snapshotted: dict[UUID, int] | None = None  # base id -> version of its snapshot (current layout)
        self.thread: threading.Thread | None = None

    # -- one base -----------------------------------------------------------------------------------
    def take(self, base_id: UUID, stop: threading.Event | None = None) -> int | None:
        """Snapshot the base as stored now and delete its older snapshots; the version snapshotted (None:
        no such base, not a base, snapshots off, or `stop` set meanwhile).

        The state is replayed into a new object (from the previous snapshot and the events after it),
        never taken from a cache, and no school's guard is held."""
        if self.store is None:
            return None
        started = time.monotonic()
        version = self._stored_version(base_id)
        if version is None:
            return None
        base = self.repository.get(base_id, version=version)  # a new object nobody else holds
        if not isinstance(base, Base) or (stop is not None and stop.is_set()):
            return None
        with collector_paused():  # a million small objects on the way, none of them cyclic garbage
            stored = self.store.mapper.to_stored_event(Base.Snapshot.take(base))
        del base
        if stop is not None and stop.is_set():
            return None
        self._store(stored)
        if self._snapshotted is not None:
            self._snapshotted[base_id] = version
        log.info("base_snapshot_taken", base_id=str(base_id), version=version, bytes=len(stored.state),
                 seconds=round(time.monotonic() - started, 3))
        return version

    def _stored_version(self, base_id: UUID) -> int | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(f"SELECT MAX(originator_version) AS version FROM {self._events}"
                                   " WHERE originator_id = ?"), (self._id(base_id),))
            row = curs.fetchone()
        return None if row is None or row["version"] is None else int(row["version"])

    def _store(self, stored: Any) -> None:
        """Insert the snapshot (replacing one of the same version: another layout's, or the same taken twice)
        and delete every older one of the base, in one transaction."""
        insert = (f"INSERT INTO {self._snapshots} (originator_id, originator_version, topic, state)"
                  " VALUES (?, ?, ?, ?) ON CONFLICT (originator_id, originator_version)"
                  " DO UPDATE SET topic = excluded.topic, state = excluded.state")
        delete = (f"DELETE FROM {self._snapshots} WHERE originator_id = ? AND originator_version <"
                  f" (SELECT MAX(originator_version) FROM {self._snapshots} WHERE originator_id = ?)")
        key = self._id(stored.originator_id)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._sql(insert), (key, stored.originator_version, stored.topic, stored.state))
            curs.execute(self._sql(delete), (key, key))

    def snapshot_versions(self, base_id: UUID) -> list[tuple[int, str]]:
        """(version, stored topic) of the base's stored snapshots, oldest first (for tests and operators)."""
        if self.store is None:
            return []
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(f"SELECT originator_version AS version, topic FROM {self._snapshots}"
                                   " WHERE originator_id = ? ORDER BY originator_version"), (self._id(base_id),))
            return [(int(row["version"]), str(row["topic"])) for row in curs.fetchall()]

    # -- the bases due -------------------------------------------------------------------------------
    def take_due(self, every: int | None = None, stop: threading.Event | None = None,
                 go_on: Callable[[], bool] | None = None) -> list[UUID]:
        """Look at the log since the last look, then snapshot every base that has grown by `every` events
        (:data:`SNAPSHOT_EVERY`) since its snapshot of the current layout, pausing after each; the bases
        snapshotted. `go_on()`: asked before each snapshot (the lease still held)."""
        if self.store is None:
            return []
        every = SNAPSHOT_EVERY if every is None else every
        with self._working:
            self._look()
            assert self._snapshotted is not None
            due = [base_id for base_id, version in self._versions.items()
                   if version - self._snapshotted.get(base_id, 0) >= every]
            taken = []
            for base_id in due:
                if (stop is not None and stop.is_set()) or (go_on is not None and not go_on()):
                    break
                started = time.monotonic()
                try:
                    if self.take(base_id, stop) is not None:
                        taken.append(base_id)
                except Exception:  # noqa: BLE001 - logged; the next look tries again
                    log.warning("base_snapshot_failed", base_id=str(base_id), exc_info=True)
                pause = (time.monotonic() - started) * PAUSE_FACTOR
                if stop is not None and stop.wait(pause):
                    break
            return taken

    def _look(self) -> None:
        """Bring `_versions` up to the log's head (the newest version of each base that got events), and
        read which snapshots there are once (after taking the lease)."""
        if self._snapshotted is None:
            with self.datastore.transaction(commit=False) as curs:
                curs.execute(self._sql(f"SELECT originator_id, MAX(originator_version) AS version FROM"
                                       f" {self._snapshots} WHERE topic = ? GROUP BY originator_id"), (self.topic,))
                self._snapshotted = {UUID(str(row["originator_id"])): int(row["version"]) for row in curs.fetchall()}
        head = self.core.recorder.max_notification_id() or 0
        low = max(0, self._looked - RESCAN_IDS) if self.is_postgres else self._looked
        scan = (f"SELECT originator_id, MAX(originator_version) AS version FROM {self._events}"
                f" WHERE {self._position} > ? AND {self._position} <= ? AND substr(topic, 1, ?) = ?"
                " GROUP BY originator_id")
        while low < head:
            high = min(head, low + SCAN_ROWS)
            with self.datastore.transaction(commit=False) as curs:
                curs.execute(self._sql(scan), (low, high, len(self._prefix), self._prefix))
                rows = curs.fetchall()
            for row in rows:
                base_id, version = UUID(str(row["originator_id"])), int(row["version"])
                if version > self._versions.get(base_id, 0):
                    self._versions[base_id] = version
            low = high
        self._looked = max(self._looked, head)

    # -- the thread ----------------------------------------------------------------------------------
    def start_snapshotter(self, stop: threading.Event, every: float = LOOK_SECONDS,
                          retry: float = LEASE_RETRY_SECONDS) -> threading.Thread:
        """The thread snapshotting the bases due every `every` seconds while this process holds the
        ``base-snapshots`` lease (trying to take it every `retry` seconds otherwise), until `stop`."""
        self.thread = threading.Thread(target=self._loop, args=(stop, every, retry), name="campus-base-snapshots",
                                       daemon=True)
        self.thread.start()
        return self.thread

    def _loop(self, stop: threading.Event, every: float, retry: float) -> None:
        leading = False
        try:
            while not stop.is_set():
                if not self.lease.try_acquire():
                    if leading:
                        log.warning("base_snapshots_lead_lost")
                        leading = False
                    stop.wait(retry)
                    continue
                if not leading:
                    log.info("base_snapshots_leading", pid=os.getpid())
                    leading = True
                    with self._working:  # another server may have taken some meanwhile: read them again
                        self._snapshotted = None
                if stop.wait(every):
                    break
                try:
                    self.take_due(stop=stop, go_on=lambda: self.lease.held)
                except Exception:  # noqa: BLE001 - logged; the next look tries again
                    log.warning("base_snapshots_failed", exc_info=True)
        finally:
            self.lease.release()

    # -- SQL ------------------------------------------------------------------------------------------
    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.is_postgres else statement

    def _id(self, base_id: UUID) -> Any:
        return base_id if self.is_postgres else base_id.hex
