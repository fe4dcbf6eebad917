"""Views that follow the event log: every event exactly once, one projector at a time.

What the history view and the timeline share (docs/HISTORY.md, "How the views
follow the log"):

* **The settled prefix.** A view's tracking position P means: every event with
  an id up to P is in the view, and every id up to P that is not in the log never
  will be. The projector reads the ids after P in order and takes the contiguous
  run; at a gap it stops, unless the gap is *settled*:

  - SQLite: at once. One writer at a time, ids given in commit order: a gap in
    what a reader sees is permanent (rowids are not even left unused by a
    rollback).
  - PostgreSQL: ids are taken from a sequence by transactions that may commit in
    another order, so a gap can be an id whose transaction is still running.
    Every campus writer takes its transaction id *before* its INSERT takes ids
    (:mod:`campus.commands`). When a gap is first seen the projector records
    the newest committed id (the horizon) and ``pg_snapshot_xmax`` of the same
    snapshot: every transaction holding an id up to the horizon has a smaller
    transaction id. Once ``pg_snapshot_xmin`` has reached that value, and at least
    :data:`GAP_MARGIN_SECONDS` later (a margin for a writer that would not take
    its transaction id first), all of them have ended: the projector re-reads, so
    the rows that filled the gaps are projected in order, and the ids still
    missing up to the horizon are holes for ever (rolled back).

* **Tracking.** One row per view, written in the same transaction as the view's
  rows, by compare-and-set: it moves from the position the batch was read after,
  to a greater one, or the whole transaction is dropped (:class:`Overtaken`). Rows
  are written idempotently (``ON CONFLICT DO NOTHING``) besides. Even two
  projectors overlapping for a moment can neither corrupt a view nor move its
  position backwards.

* **One projector at a time.** The projector holds the view's lease
  (``app.locks.lease("view:<name>")``; across processes a PostgreSQL session
  advisory lock or a byte lock on the SQLite lease file, ended by the process's
  death). A server's follower thread tries the lease every
  :data:`LEASE_RETRY_SECONDS`, keeps it while it is held, and projects what
  was committed (by any process) every ``Settings.view_poll_seconds``, or at
  once when a reader of its process waits for the view — not after each commit,
  which would make one write transaction per command per view.

* **Readers wait.** A read first notes the newest committed id (everything
  committed before the read began) and waits, at most
  ``Settings.view_wait_seconds``, for the tracking position to reach it; past
  that it answers :class:`~campus.errors.StoreUnavailable` (503, code
  ``view_behind``). A reader never projects in a process running a follower;
  where no process leads at all (a CLI, tests without a server), the reader takes
  the lease itself, catches up and hands it back.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from campus.errors import StoreUnavailable
from campus.infra.store import bind_connection
from campus.projections.tables import StoreTables

BATCH = 500  # events per projection transaction
GAP_MARGIN_SECONDS = 1.0  # PostgreSQL: a gap is settled no sooner than this after it was first seen
GAP_POLL_SECONDS = 0.05  # how often an unsettled gap is looked at again
LEASE_RETRY_SECONDS = 1.0  # a follower without the lease tries again this often
READER_POLL_SECONDS = 0.03  # a waiting reader looks at the tracking position this often
READER_LEASE_RETRY_SECONDS = 0.5  # …and, where no follower runs, tries to lead the view this often
PG_PARAMETERS = 30_000  # parameters per statement (PostgreSQL allows 65,535)
FAILURE_PAUSE_SECONDS = 1.0  # a follower whose step failed (store unreachable…) tries again after this
log = structlog.get_logger("campus.views")


class Overtaken(Exception):
    """Another projector moved the view's tracking position since this one read it: the batch is dropped."""


@dataclass(frozen=True)
class _Gap:
    horizon: int  # every id up to this one had been taken when the gap was seen
    xmax: int  # pg_snapshot_xmax of that moment: every writer of those ids has a smaller xid
    seen: float  # time.monotonic() of that moment


class ProjectedView(StoreTables):
    """A read model projected from the notification log: the follower, lease, gaps, tracking and waits.

    Subclasses set :attr:`name` and implement :meth:`_project` (and :meth:`_clear`
    for a rebuild); they may keep running state in memory if they drop it in
    :meth:`_forget_running_state`, which is called whenever the tracking position
    was not written by this process's last batch.
    """

    name = ""  # the tracking row's name; the lease is "view:<name>"

    def __init__(self, app: Any, tracking_table: str) -> None:
        super().__init__(app)
        self.app = app
        self.t_tracking = self.table(tracking_table)
        settings = getattr(app, "settings", None)
        self.wait_seconds: float = getattr(settings, "view_wait_seconds", 10.0)
        self.poll_seconds: float = getattr(settings, "view_poll_seconds", 0.1)
        self.lease = app.locks.lease(f"view:{self.name}")
        events = app.recorder.events_table_name
        if self.is_postgres:
            self._events_sql, self._id_column = f'"{self.datastore.schema}"."{events}"', "notification_id"
        else:
            self._events_sql, self._id_column = events, "rowid"
        self._projecting = threading.Lock()  # one projecting thread in this process
        self._moved = threading.Condition()  # notified after each batch this process commits
        self._gap: _Gap | None = None
        self._wrote: int | None = None  # the tracking position this process's last batch wrote
        self._following = False  # a follower thread of this process runs (readers then never project)
        self._wanted = threading.Event()  # set by a reader of this process waiting for the follower
        # Set when the server is asked to stop (see `follow`): live readers of the view end.
        self.stopping = threading.Event()

    # -- for subclasses -------------------------------------------------------------------------
    def _project(self, notifications: Sequence[Any], after: int) -> None:
        """Write the view's rows for `notifications` (ids after `after`, in order) in ONE transaction
        whose first statement is ``self._advance_tracking(curs, after, notifications[-1].id)``."""
        raise NotImplementedError

    def _clear(self, curs: Any) -> None:
        """Delete every row of the view (a rebuild); the tracking row is reset by the caller."""
        raise NotImplementedError

    def _forget_running_state(self) -> None:
        """Drop whatever the projector keeps in memory between batches."""

    def _ensure_tracking(self, curs: Any) -> None:
        curs.execute(self._sql(f"INSERT INTO {self.t_tracking} (name, position) VALUES (?, 0)"
                               " ON CONFLICT (name) DO NOTHING"), (self.name,))

    def _advance_tracking(self, curs: Any, old: int, new: int) -> None:
        """Compare-and-set the tracking position from `old` to `new` (> old), or raise :class:`Overtaken`."""
        curs.execute(self._sql(
            f"INSERT INTO {self.t_tracking} AS t (name, position) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position"
            " WHERE t.position = ? AND t.position < excluded.position RETURNING position"), (self.name, new, old))
        if curs.fetchone() is None:
            raise Overtaken(f"the {self.name} view was moved past {old} by another projector")

    def _insert_rows(self, curs: Any, into: str, rows: Sequence[tuple], tail: str = "") -> None:
        """``INSERT INTO <into> VALUES …`` every row. PostgreSQL: a few multi-row statements (not psycopg's
        pipelined executemany, which can hang on multi-megabyte batches); SQLite: executemany."""
        if not rows:
            return
        width = len(rows[0])
        if not self.is_postgres:
            curs.executemany(f"INSERT INTO {into} VALUES ({','.join('?' * width)}) {tail}", rows)
            return
        per = max(1, PG_PARAMETERS // width)
        one = "(" + ",".join(["%s"] * width) + ")"
        for start in range(0, len(rows), per):
            chunk = rows[start:start + per]
            curs.execute(f"INSERT INTO {into} VALUES {','.join([one] * len(chunk))} {tail}",
                         [value for row in chunk for value in row])

    # -- positions --------------------------------------------------------------------------------
    def _tracked(self, curs: Any) -> int:
        curs.execute(self._sql(f"SELECT position FROM {self.t_tracking} WHERE name = ?"), (self.name,))
        row = curs.fetchone()
        return int(row["position"]) if row else 0

    def position(self) -> int:
        """The view's tracking position now (no wait): every event up to it is in the view."""
        with self.datastore.transaction(commit=False) as curs:
            return self._tracked(curs)

    def _head_and_position(self) -> tuple[int, int]:
        """(the newest committed id, the view's position), read together."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(
                f"SELECT (SELECT MAX({self._id_column}) FROM {self._events_sql}) AS head,"
                f" (SELECT position FROM {self.t_tracking} WHERE name = ?) AS position"), (self.name,))
            row = curs.fetchone()
        return int(row["head"] or 0), int(row["position"] or 0)

    # -- readers ------------------------------------------------------------------------------------
    def catch_up(self, timeout: float | None = None, *, patient: bool = False) -> int:
        """Wait until the view holds every event committed before this call; return its position.

        Where no process leads the view (no follower in this process, nobody holding the lease), the
        caller projects itself, for as long as it makes progress. Otherwise it waits for the leader at
        most `timeout` seconds (``Settings.view_wait_seconds`` by default), then raises
        :class:`StoreUnavailable` (``view_behind``). `patient`: the bound counts from the view's last
        move instead (start-up: wait for a leader that is projecting a long backlog).
        """
        head, position = self._head_and_position()
        if position >= head:
            return position
        wait = self.wait_seconds if timeout is None else timeout
        deadline = time.monotonic() + wait
        next_try = 0.0  # trying the lease costs a connection on PostgreSQL: not at every poll
        while True:
            led = None
            if not self._following and time.monotonic() >= next_try:
                led = self._lead_briefly(head, wait)
                next_try = time.monotonic() + READER_LEASE_RETRY_SECONDS
            if led is not None:
                moved = led
            else:
                self._wanted.set()  # this process's follower projects at once
                with self._moved:
                    self._moved.wait(READER_POLL_SECONDS)
                moved = self.position()
            if moved > position and (patient or led is not None):  # our own projection: never cut short
                deadline = time.monotonic() + wait
            position = moved
            if position >= head:
                return position
            if time.monotonic() >= deadline:
                log.warning("view_behind", view=self.name, position=position, wanted=head, waited=wait)
                raise StoreUnavailable(f"the {self.name} view is still catching up with the latest changes;"
                                       " retry shortly", retry_after=2, code="view_behind")

    def _lead_briefly(self, target: int, wait: float) -> int | None:
        """Where no process leads: take the lease, project up to `target` (or until nothing moved for
        `wait` seconds: an unsettled gap), hand the lease back. None if another thread or process leads."""
        if not self._projecting.acquire(blocking=False):
            return None
        try:
            if not self.lease.try_acquire():
                return None
            try:
                return self._project_until(target, wait)
            finally:
                if not self._following:
                    self.lease.release()
        finally:
            self._projecting.release()

    def _project_until(self, target: int, wait: float) -> int:
        stalled_at = time.monotonic() + wait
        while True:
            position, projected = self._advance()
            if position >= target:
                return position
            if projected:
                stalled_at = time.monotonic() + wait
            elif time.monotonic() >= stalled_at:
                return position
            else:
                time.sleep(GAP_POLL_SECONDS)

    # -- the follower -----------------------------------------------------------------------------------
    def follow(self, stop: threading.Event, interval: float | None = None) -> threading.Thread:
        """Keep the view up to date in a thread, while this process holds the view's lease, until `stop`.

        `stop` also becomes :attr:`stopping` (live readers end when it is set). `interval`: how
        often to look for other processes' writes (``Settings.view_poll_seconds`` by default).
        """
        self.stopping = stop
        self._following = True
        poll = self.poll_seconds if interval is None else interval
        thread = threading.Thread(target=self._follow, args=(stop, poll), name=f"campus-{self.name}-follower",
                                  daemon=True)
        thread.start()
        return thread

    def _follow(self, stop: threading.Event, poll: float) -> None:
        leading = False
        try:
            while not stop.is_set():
                try:
                    if not self.lease.try_acquire():
                        if leading:
                            log.warning("view_lead_lost", view=self.name)
                            leading = False
                        stop.wait(LEASE_RETRY_SECONDS)
                        continue
                    if not leading:
                        log.info("view_leading", view=self.name)
                        leading = True
                    self._wanted.clear()
                    with self._projecting:
                        _, projected = self._advance()
                    if projected == BATCH:
                        continue  # a backlog: on at once
                    # Commits do not wake the follower one by one (each would be a write transaction
                    # of its own, beside the commands'): it projects what arrived every `poll`, or at
                    # once when a reader of this process waits for the view.
                    self._wanted.wait(GAP_POLL_SECONDS if self._gap is not None else poll)
                except Exception:  # noqa: BLE001 - logged; the next round retries
                    log.warning("view_follower_failed", view=self.name, exc_info=True)
                    stop.wait(FAILURE_PAUSE_SECONDS)
        finally:
            with self._projecting:
                self.lease.release()
                self._following = False

    # -- one step of the projector ------------------------------------------------------------------------
    def _advance(self) -> tuple[int, int]:
        """Project the next batch of the settled prefix; (position after, events projected).

        The caller holds the lease and ``_projecting``. Runs on the pool's connections even inside a
        command (its own transactions, committed whatever becomes of the command).
        """
        bound = bind_connection(None)
        try:
            return self._step()
        finally:
            bound.reset()

    def _step(self) -> tuple[int, int]:
        head, position = self._head_and_position()
        if position != self._wrote:  # someone else wrote it (or nobody yet): memory is not to be trusted
            self._forget_running_state()
            self._wrote = position
        gap = self._gap
        if gap is not None and gap.horizon <= position:
            gap = self._gap = None
        if head <= position:
            return position, 0
        if not self.is_postgres:
            settled = sys.maxsize  # SQLite: what a reader does not see was never committed
        elif gap is not None and self._settled(gap):
            settled = gap.horizon
        else:
            settled = position
        notifications = self.app.recorder.select_notifications(start=position + 1, limit=BATCH)
        batch: list[Any] = []
        expected = position + 1
        for n in notifications:
            if n.id != expected and n.id - 1 > settled:
                break
            batch.append(n)
            expected = n.id + 1
        if len(batch) < len(notifications) and (gap is None or gap.horizon < notifications[len(batch)].id - 1):
            self._gap = self._sight_gap()
            log.debug("view_gap_seen", view=self.name, after=expected - 1, horizon=self._gap.horizon)
        if not batch:
            return position, 0
        last = batch[-1].id
        if last - position != len(batch):
            log.info("view_holes_passed", view=self.name, after=position, upto=last,
                     missing=last - position - len(batch))
        try:
            self._project(batch, position)
        except Overtaken:
            log.info("view_overtaken", view=self.name, after=position)
            self._forget_running_state()
            self._wrote = None
            return self.position(), 0
        except BaseException:
            self._forget_running_state()
            self._wrote = None
            raise
        self._wrote = last
        with self._moved:
            self._moved.notify_all()
        return last, len(batch)

    def _sight_gap(self) -> _Gap:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT (SELECT MAX(notification_id) FROM {self._events_sql}) AS head,"
                         " pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax")
            row = curs.fetchone()
        return _Gap(horizon=int(row["head"] or 0), xmax=int(row["xmax"]), seen=time.monotonic())

    def _settled(self, gap: _Gap) -> bool:
        if time.monotonic() - gap.seen < GAP_MARGIN_SECONDS:
            return False
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin")
            row = curs.fetchone()
        return int(row["xmin"]) >= gap.xmax

    # -- rebuild ------------------------------------------------------------------------------------------
    def event_count(self) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT COUNT(*) AS n FROM {self._events_sql}")
            return int(curs.fetchone()["n"])

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Empty the view and project the whole log again; return the position reached.

        The caller holds :attr:`lease` (``campus views rebuild``). `progress(done, total)` is called
        after each batch. Events committed meanwhile are projected too.
        """
        with self._projecting:
            bound = bind_connection(None)
            try:
                total = self.event_count()
                with self.datastore.transaction(commit=True) as curs:
                    self._clear(curs)
                    self._ensure_tracking(curs)
                    curs.execute(self._sql(f"UPDATE {self.t_tracking} SET position = 0 WHERE name = ?"),
                                 (self.name,))
                self._forget_running_state()
                self._wrote, self._gap = 0, None
                if progress is not None:
                    progress(0, total)
                done = 0
                while True:
                    head, position = self._head_and_position()
                    if position >= head:
                        return position
                    position, projected = self._step()
                    done += projected
                    if progress is not None and projected:
                        progress(done, max(total, done))
                    if not projected:
                        time.sleep(GAP_POLL_SECONDS)
            finally:
                bound.reset()
