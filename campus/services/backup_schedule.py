"""The schedule of saves and archives, their retention and the clean-up of the snapshots folder
(hosting guide fiche 10; docs/BACKUPS.md, "One scheduler").

Saves are taken by the clock every 2 hours (UTC), archives every day at 00:00 UTC
(:data:`campus.services.backups.EVERY`); each scheduled one holds the base's state AT its boundary,
read from the timeline, whenever the scheduler gets to it. Retention keeps the newest 12 saves and
30 archives per planning: older ones are ``Discarded`` and their file deleted; events are never deleted.

Many servers, one scheduler (issue 9): scheduled saves and archives, the school-year operations and the
clean-ups run in the one process holding the "scheduler" lease (:class:`Scheduler`); another takes over
within seconds when it dies. A scheduled backup's id is a natural id of (planning, kind, slot), so the
same slot can never be recorded twice, whoever takes it. The clean-up removes interrupted writes
(unlocked ``.part``) and orphans (unlocked files no live backup records).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog

from campus.aggregates.backup import Backup
from campus.aggregates.core import natural_id
from campus.aggregates.planning import Planning
from campus.infra.backup_files import SlotTaken, old_enough, snapshot_grace, unless_locked
from campus.infra.context import context_changed
from campus.rules.export_format import SUFFIX, Annex, BaseFile
from campus.rules.records import KINDS
from campus.services.backups import EVERY, boundaries, remove_unfinished_writes
from campus.services.base import Service

log = structlog.get_logger("campus.backups")

KEEP = {"save": 12, "archive": 30}
SCHEDULER_SECONDS = 60  # the schedule's rounds, in the process holding the scheduler's lease
SCHEDULER_LEASE = "scheduler"
LEASE_RETRY_SECONDS = 5.0  # a server without the lease tries to take it this often
CLEANUP_SECONDS = 3600.0  # the holder's clean-up of the snapshots folder (and at once when it takes the lease)


class TimelineBehind(Exception):
    """The timeline has not projected the base up to a slot yet: the slot waits for the next round."""


def scheduled_backup_id(planning_id: UUID, kind: str, at: datetime) -> UUID:
    """The id of the scheduled `kind` of `planning_id` at the slot `at`: the same in every server, so a
    slot is recorded once (a second ``Backup.Taken`` is a version-1 conflict)."""
    return natural_id("scheduled-backup", planning_id, kind, at.astimezone(UTC).isoformat())


def base_file_at(timeline: Any, past: Any, exported_at: datetime) -> BaseFile:
    """The content of a campus-base file for the base as the timeline has it at a position."""
    state = timeline.restorable_state(past)
    return BaseFile(
        base_id=past.id, name=state["name"], origin=past.origin, created_at=past.created_on,
        last_entry_at=state["last_entry_at"], grid=dict(state["grid"]),
        records={kind: state["records"].get(kind, {}) for kind in KINDS},
        annexes={name: Annex(a["content_type"], a["sha256"], a["data"]) for name, a in state["annexes"].items()},
        connection_modes=state["connection_modes"], position=past.version, exported_at=exported_at)


class BackupSchedule(Service):
    """The scheduled saves and archives, retention, the scheduler's thread and the snapshots clean-up."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("backups", "bases", "school_year")

    def run_due_backups(self) -> list[Backup]:
        """Take every scheduled save and archive due, then apply retention.

        For each planning in service, every boundary of the window retention keeps
        (the last 12 two-hour boundaries, the last 30 midnights, none before the
        current base was created) that no scheduled backup of the planning holds
        yet is taken with the base's state at that boundary. Safe to call at any
        pace, and from several servers at once: a slot's backup has the slot's
        natural id, so it is taken once.
        """
        taken: list[Backup] = []
        with context_changed(actor="scheduler"):
            for planning_id in self.history.all_aggregate_ids("Planning"):
                try:
                    planning = self.repository.get(planning_id)
                    if not isinstance(planning, Planning) or not planning.in_service or planning.base_id is None:
                        continue
                    taken += self._run_due_for(planning)
                except Exception:
                    log.warning("scheduled_backup_failed", planning_id=str(planning_id), exc_info=True)
        return taken

    def _run_due_for(self, planning: Planning) -> list[Backup]:
        account_id, base_id = planning.account_id, planning.base_id
        now = self.clock.now()
        backups = self.backups.backups_of(account_id, planning.id)
        with self._reading(account_id):
            created_on = self.bases.get_base(account_id, base_id).created_on
        # A slot is the planning's, whichever base it was taken of (its id says so too). Every slot of the
        # window retention keeps that is not taken is due: one a server could not take is taken later.
        taken_slots = {(b.kind, b.taken_at) for b in backups if b.scheduled}
        due: list[tuple[datetime, str]] = []
        for kind, keep in KEEP.items():
            start = max(created_on, now - keep * EVERY[kind])
            due += [(at, kind) for at in boundaries(kind, start, now) if (kind, at) not in taken_slots]
        due.sort()
        taken = []
        for at, kind in due:
            try:
                backup = self._take_slot(planning, base_id, kind, at)
            except TimelineBehind:
                # Never skip a slot: a later one taken first would make this one look done.
                log.info("scheduled_backup_waits_for_timeline", planning_id=str(planning.id), slot=at.isoformat())
                break
            if backup is not None:
                taken.append(backup)
        live = [b for b in backups if not b.discarded and not b.kept]
        if taken or any(sum(b.kind == kind for b in live) > keep for kind, keep in KEEP.items()):
            self._apply_retention(account_id, planning.id)
        return taken

    def _take_slot(self, planning: Planning, base_id: UUID, kind: str,
                   at: datetime) -> Backup | None:
        """Take the scheduled `kind` of the planning at the slot `at` (the base's state at `at`), unless
        it is taken already (None). Raises :class:`TimelineBehind` if the timeline cannot say yet."""
        backup_id = scheduled_backup_id(planning.id, kind, at)
        if backup_id in self.repository:
            return None
        past = self.timeline.base_at(base_id, at)
        if past is None:
            raise TimelineBehind(f"the timeline has no state of base {base_id} at {at.isoformat()} yet")
        snapshot = base_file_at(self.timeline, past, at)
        when = f"{at:%Y-%m-%d}" if kind == "archive" else f"{at:%Y-%m-%d %H:%M} UTC"
        relative = f"{planning.account_id}/{backup_id}{SUFFIX}"
        for attempt in (1, 2):
            try:
                return self.backups.record_backup(planning.account_id, planning.id, snapshot, kind=kind,
                                                  name=f"{snapshot.name} — {kind} of {when}", taken_at=at,
                                                  position=past.position, scheduled=True, backup_id=backup_id)
            except SlotTaken:
                # A file at the slot's path that no live writer holds and no backup records is what a
                # holder of the lease killed between writing and recording left: replace it, once.
                if attempt == 2 or not self._remove_orphan(relative, snapshot_grace(self.core.locks)):
                    log.info("scheduled_backup_already_taken", planning_id=str(planning.id), kind=kind,
                             slot=at.isoformat())
                    return None
        return None

    def _apply_retention(self, account_id: UUID, planning_id: UUID) -> list[Backup]:
        """Keep the newest 12 saves and 30 archives of the planning; discard the others' files.
        Archives of a school year (``kept``) are out of the count and never discarded.

        The command decides on the backups as it reads them itself (under the school's guard, and
        again if it is re-run after a conflict): a discard another server recorded meanwhile is
        seen, so each discard is recorded once."""
        candidates = [b.id for b in self.backups.backups_of(account_id, planning_id)
                      if not b.discarded and not b.kept]
        reason = "retention: the newest 12 saves and 30 archives are kept"

        def body() -> list[Backup]:
            live: list[Backup] = [b for b in (self.repository.get(i) for i in candidates)
                                  if not b.discarded and not b.kept]
            live.sort(key=lambda b: (b.taken_at, b.created_on))
            out: list[Backup] = []
            for kind, keep in KEEP.items():
                of_kind = [b for b in live if b.kind == kind]
                out += of_kind[:-keep] if len(of_kind) > keep else []
            for backup in out:
                backup.discard(reason=reason)
            if out:
                self.save(*out)
            return out

        if not candidates:
            return []
        discarded: list[Backup] = self._run(account_id, body)
        cache = self.backups.backup_cache()
        for backup in discarded:
            cache[backup.id] = backup
            self.backups.backup_path(backup).unlink(missing_ok=True)
        return discarded

    # -- the scheduler's thread -------------------------------------------------------------------
    def _scheduler(self) -> Scheduler:
        scheduler = self.__dict__.get("_campus_scheduler")
        if scheduler is None:
            scheduler = self.__dict__.setdefault("_campus_scheduler", Scheduler(self))
        return scheduler

    def _scheduler_lease(self) -> Any:
        """The "scheduler" lease of this application (held while this process runs the schedule)."""
        return self._scheduler().lease

    def start_scheduler(self, stop: threading.Event, every: float = SCHEDULER_SECONDS,
                        retry: float = LEASE_RETRY_SECONDS) -> threading.Thread:
        """The thread running the schedule (saves, archives, school-year operations, clean-ups) every
        `every` seconds while this process holds the scheduler's lease, trying to take it every `retry`
        seconds otherwise, until `stop` is set. One per application: a second call gives the same thread."""
        return self._scheduler().start(stop, every, retry)

    def start_backup_scheduler(self, stop: threading.Event,
                               every: float = SCHEDULER_SECONDS) -> threading.Thread:
        """The scheduler's thread (:meth:`start_scheduler`), which also runs the school-year operations."""
        return self.start_scheduler(stop, every)

    # -- the clean-up of the snapshots folder -----------------------------------------------------
    def clean_snapshots(self) -> dict[str, int]:
        """At start-up (the app's lifespan, before the scheduler starts): remove interrupted writes
        (``.part``) and orphan files whose writer is gone — in the process holding the scheduler's
        lease only. It takes the lease if it is free and keeps it for the scheduler started next; a
        server that does not get it leaves the folder to the holder, which cleans it every hour.

        An orphan is removed only in the folder of an account of this store (a
        folder shared with another deployment is never emptied), under its lock,
        after checking again that no backup records it: a writer holds the lock
        until its ``Backup.Taken`` is saved. Never fails the start: problems are logged.
        """
        scheduler = self._scheduler()
        if not scheduler.lead():
            log.info("snapshot_cleanup_left_to_the_scheduler")
            return {"unfinished": 0, "orphans": 0}
        with scheduler.running:
            counts = self._clean_snapshots_now()
            scheduler.cleaned_at = time.monotonic()
        return counts

    def _clean_snapshots_now(self) -> dict[str, int]:
        folder = self.settings.snapshots_dir
        grace = snapshot_grace(self.core.locks)
        counts = {"unfinished": 0, "orphans": 0}
        try:
            for path in remove_unfinished_writes(folder, grace):
                counts["unfinished"] += 1
                log.warning("snapshot_unfinished_write_removed", file=path.relative_to(folder).as_posix())
            for relative in self.backups.snapshot_inventory(with_missing=False).orphans:
                if self._remove_orphan(relative, grace):
                    counts["orphans"] += 1
                    log.warning("snapshot_orphan_removed", file=relative)
        except Exception:
            log.warning("snapshot_cleanup_failed", exc_info=True)
        return counts

    def _remove_orphan(self, relative: str, min_age: float = 0.0) -> bool:
        account, _, _ = relative.partition("/")
        try:
            account_known = UUID(account) in self.repository
        except ValueError:
            return False
        if not account_known:
            return False
        path = self.settings.snapshots_dir / relative
        if not old_enough(path, min_age):
            return False
        with unless_locked(path) as dead:
            if dead and self.backups.live_backup_for(relative) is None:
                path.unlink(missing_ok=True)
                return True
        return False


class Scheduler:
    """The schedule of one application, run by one process of the store at a time: the holder of the
    "scheduler" lease (:mod:`campus.infra.locks`: a PostgreSQL session advisory lock, or a byte lock on the
    SQLite lease file; either ends with the process, even killed).

    Every server starts its thread. The holder runs a round every `every` seconds: the clean-up of
    the snapshots folder (when it takes the lease, then every CLEANUP_SECONDS), the due saves and
    archives (:meth:`~BackupSchedule.run_due_backups`), then the due school-year operations
    (:meth:`~campus.services.school_year.SchoolYear.run_due_year_operations`). The others try the
    lease every `retry` seconds, so one takes over within seconds of the holder's death, and runs a
    round at once. The deterministic ids of scheduled backups keep a slot single even if two
    processes ever ran a round at once (a lease lost mid-round).
    """

    def __init__(self, schedule: BackupSchedule) -> None:
        self.schedule = schedule
        self.lease = schedule.core.locks.lease(SCHEDULER_LEASE)
        self.running = threading.Lock()  # one round (or clean-up) at a time in this process
        self.cleaned_at: float | None = None  # monotonic; None: clean at the next round
        self.thread: threading.Thread | None = None
        self.stop: threading.Event | None = None
        self._starting = threading.Lock()

    def lead(self) -> bool:
        """Whether this process holds the lease now (taking it if it is free)."""
        if self.lease.held:
            return True
        if self.lease.try_acquire():
            log.info("scheduler_leading", pid=os.getpid())
            self.cleaned_at = None  # the previous holder may have died mid-write
            return True
        return False

    def start(self, stop: threading.Event, every: float, retry: float) -> threading.Thread:
        with self._starting:
            if self.thread is not None and self.thread.is_alive() and self.stop is stop:
                return self.thread
            self.stop = stop
            self.thread = threading.Thread(target=self._loop, args=(stop, every, retry), name="campus-scheduler",
                                           daemon=True)
            self.thread.start()
            return self.thread

    def _loop(self, stop: threading.Event, every: float, retry: float) -> None:
        next_round = 0.0
        try:
            while not stop.is_set():
                if self.lead():
                    if time.monotonic() >= next_round:
                        self.run_round()
                        next_round = time.monotonic() + every
                    pause = min(retry, max(0.0, next_round - time.monotonic()))
                else:
                    next_round = 0.0  # a new holder runs a round at once
                    pause = retry
                stop.wait(pause)
        finally:
            if self.thread is threading.current_thread():
                self.lease.release()

    def run_round(self) -> None:
        """One round of the schedule (the caller holds the lease). Failures are logged; the next round
        retries."""
        work: list[tuple[str, Callable[[], Any]]] = [
            ("backups", lambda: self.schedule.run_due_backups()),
            ("school_year", lambda: self.schedule.school_year.run_due_year_operations())]
        with self.running:
            if self.cleaned_at is None or time.monotonic() - self.cleaned_at >= CLEANUP_SECONDS:
                self.schedule._clean_snapshots_now()
                self.cleaned_at = time.monotonic()
            for name, run in work:
                if not self.lease.held:
                    log.warning("scheduler_round_interrupted", work=name, reason="the scheduler's lease was lost")
                    return
                try:
                    run()
                except Exception:  # noqa: BLE001 - logged; the next round retries
                    log.warning("scheduler_round_failed", work=name, exc_info=True)
