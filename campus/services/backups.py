"""Saves and archives of bases (hosting guide fiches 6, 10, 12).

A backup is a campus-base file (docs/EXPORT_FORMAT.md) of a base's state at an
instant, written atomically under ``<snapshots_dir>/<account id>/<backup id>.campus``
(``.part``, fsync, rename, fsync of the folder), and a :class:`Backup`
aggregate that records it (where, SHA-256 and size of the whole file, the base's
version, the log position and counts). Saves are taken on request and by the
clock every 2 hours (UTC), archives every day at 00:00 UTC; each scheduled one
holds the base's state AT its boundary, whenever the scheduler gets to it.
Retention keeps the newest 12 saves and 30 archives per planning: older ones
are ``Discarded`` and their file deleted; events are never deleted.

A file is never served or restored unless its size and SHA-256 match what was
recorded when it was taken. When it does not, the backup is marked
(``Backup.FoundDamaged``, logged); a file missing from this server's snapshot
storage is logged and answered 410, not recorded. Either way a restore from it
falls back to the event log: the base's state at the backup's ``taken_at`` is
replayed, and the answer says so.

Crash safety: the writer holds an advisory lock (``flock``) on the file from its
``.part`` until the ``Backup.Taken`` event is saved; the kernel drops it when
the process dies, even by SIGKILL. At start-up (and in ``campus snapshots
verify``) an unlocked ``.part`` is an interrupted write and an unlocked file no
live backup records is an orphan: both are removed by the clean-up.

Many servers, one scheduler (issue 9): scheduled saves and archives, the
school-year operations and the clean-ups run in the one process holding the
"scheduler" lease (:class:`Scheduler`); another takes over within seconds when
it dies. A scheduled backup's id is a natural id of (planning, kind, slot), so
the same slot can never be recorded twice, whoever takes it. A file missing from
this server's snapshot storage is reported here (410), never recorded as damage
for every server. See docs/BACKUPS.md.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import structlog
from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.backup import MISSING, Backup
from campus.aggregates.core import natural_id
from campus.aggregates.planning import Planning
from campus.aggregates.school_base import Base
from campus.errors import CampusError, Conflict, Invalid, NotFound
from campus.infra.context import context_changed
from campus.rules.export_format import (
    SUFFIX,
    Annex,
    BaseFile,
    FormatError,
    prepare,
    read_base_file,
)
from campus.rules.records import KINDS
from campus.services.base import Service
from campus.services.time_machine import checked_kinds, only_kinds, reason_with_kinds


log = structlog.get_logger("campus.backups")

KEEP = {"save": 12, "archive": 30}
EVERY = {"save": timedelta(hours=2), "archive": timedelta(days=1)}
SCHEDULER_SECONDS = 60  # the schedule's rounds, in the process holding the scheduler's lease
SCHEDULER_LEASE = "scheduler"
LEASE_RETRY_SECONDS = 5.0  # a server without the lease tries to take it this often
CLEANUP_SECONDS = 3600.0  # the holder's clean-up of the snapshots folder (and at once when it takes the lease)
# PostgreSQL servers may share the snapshots folder from several machines, where a file lock taken on one
# may not be seen on another: a file a writer left is removed only once it is this old (and unlocked).
SHARED_STORAGE_GRACE_SECONDS = 600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HASH_CHUNK = 1024 * 1024
PART = ".part"  # an unfinished write: <backup id>.campus.part
_NEW_PART_SECONDS = 5.0  # a scheduled slot's .part younger than this may be a writer's that is not locked yet


class Gone(CampusError):
    """The backup's file is missing (410)."""

    status = 410
    title = "Gone"


class BackupUnreadable(Conflict):
    """The backup's file does not match its recorded size and SHA-256 (409)."""


class TimelineBehind(Exception):
    """The timeline has not projected the base up to a slot yet: the slot waits for the next round."""


class SlotTaken(Exception):
    """A scheduled slot is taken, or being taken, by another writer: its ``Backup`` exists, or its file
    (or unfinished write) is there and locked. Not an error: the slot is skipped."""


def scheduled_backup_id(planning_id: UUID, kind: str, at: datetime) -> UUID:
    """The id of the scheduled `kind` of `planning_id` at the slot `at`: the same in every server, so a
    slot is recorded once (a second ``Backup.Taken`` is a version-1 conflict)."""
    return natural_id("scheduled-backup", planning_id, kind, at.astimezone(UTC).isoformat())


def boundaries(kind: str, after: datetime, until: datetime) -> list[datetime]:
    """The kind's boundaries (every 2 hours / every day at 00:00 UTC) in (after, until]."""
    step = EVERY[kind]
    first = _EPOCH + ((after - _EPOCH) // step + 1) * step
    out = []
    at = first
    while at <= until:
        out.append(at)
        at += step
    return out


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a whole file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_backup_file(snapshot: BaseFile, path: Path, *, exclusive: bool = False,
                       min_age: float = 0.0) -> Iterator[tuple[str, int]]:
    """Write `snapshot` to `path` atomically; yield (SHA-256, size) of the whole file while holding it.

    ``<path>.part`` is created and locked (``flock``), written, fsynced, renamed
    over `path`, then the folder is fsynced: whenever the process dies, `path`
    holds either what it held before or the complete new file, never a torn
    one. The lock is held until the ``with`` block ends (the caller saves the
    ``Backup.Taken`` event inside it), so start-up cleanup can tell a live
    writer's files from a dead one's. If the block fails, the new file is removed.

    `exclusive` (a scheduled slot, whose path is the same for every server): never
    overwrite. The ``.part`` is created only if absent (a dead writer's is replaced,
    a live one's raises :class:`SlotTaken`) and linked to `path` only if `path` does
    not exist (else :class:`SlotTaken`); what another writer wrote is never touched. A
    dead writer's ``.part`` is replaced only once unchanged for `min_age` seconds.
    """
    prepared = prepare(snapshot)
    partial = path.with_name(path.name + PART)
    fd = _create_exclusive(partial, min_age) if exclusive else os.open(
        partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    written = partial
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_ino != os.stat(partial).st_ino:  # a start-up cleanup took it between open and lock
            raise OSError(f"{partial} was removed while it was being opened; retry")
        digest, size = hashlib.sha256(), 0
        with os.fdopen(os.dup(fd), "wb") as out:
            for chunk in prepared.chunks():
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            if os.fstat(fd).st_ino != os.stat(partial).st_ino:
                raise OSError(f"{partial} was replaced while it was being written; retry")
            try:
                os.link(partial, path)  # atomic, and never over an existing file
            except FileExistsError:
                raise SlotTaken(f"{path.name} exists already") from None
            written = path
            partial.unlink()
        else:
            os.replace(partial, path)
            written = path
        _fsync_dir(path.parent)
        yield digest.hexdigest(), size
    except BaseException:
        _unlink_if_ours(written, fd)  # never what another writer put there meanwhile
        raise
    finally:
        os.close(fd)  # releases the lock


def _unlink_if_ours(path: Path, fd: int) -> None:
    try:
        here, ours = os.stat(path), os.fstat(fd)
        if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
            path.unlink()
    except FileNotFoundError:
        pass


def _create_exclusive(partial: Path, min_age: float) -> int:
    """Create `partial` for writing if it does not exist; replace a dead writer's (unlocked, unchanged
    for `min_age` seconds); SlotTaken otherwise."""
    for _ in range(2):
        try:
            return os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            with _unless_locked(partial) as dead:
                # A writer that has just created its .part has not locked it yet: a few seconds' grace.
                if not dead or not _old_enough(partial, max(min_age, _NEW_PART_SECONDS)):
                    raise SlotTaken(f"{partial.name} is being written by another process") from None
                partial.unlink(missing_ok=True)  # what a writer killed during this slot left
    raise SlotTaken(f"{partial.name} keeps appearing: another process is writing the slot")


def _old_enough(path: Path, min_age: float) -> bool:
    """Whether `path` was last modified at least `min_age` seconds ago (wall clock, as file times are)."""
    if min_age <= 0:
        return True
    try:
        return time.time() - path.stat().st_mtime >= min_age
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _unless_locked(path: Path) -> Iterator[bool]:
    """Yield True holding `path`'s lock if no live process holds it (its writer is gone), else False."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def remove_unfinished_writes(folder: Path, min_age: float = 0.0) -> list[Path]:
    """Delete every ``*.campus.part`` under `folder` whose writer is gone; return them.

    A ``.part`` a live process is still writing is locked and left alone, so
    this is safe while other servers of this machine share the folder. With
    `min_age`, a ``.part`` must also not have changed for that many seconds (a
    writer on another machine, whose lock this one may not see).
    """
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob(f"*{SUFFIX}{PART}")):
        if not _old_enough(path, min_age):
            continue
        with _unless_locked(path) as dead:
            if dead:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@dataclass
class Inventory:
    """The snapshots folder against the store (``campus snapshots verify``, start-up cleanup).

    Paths are relative to the snapshots folder (POSIX form).
    """

    files: list[str] = field(default_factory=list)  # every *.campus file
    unfinished: list[str] = field(default_factory=list)  # *.campus.part: interrupted writes
    orphans: list[str] = field(default_factory=list)  # files no live backup records
    missing: list[Backup] = field(default_factory=list)  # live backups without their file
    recorded: dict[str, Backup] = field(default_factory=dict)  # file -> its live backup


def state_of_file(bf: BaseFile, at: datetime) -> dict[str, Any]:
    """A base file as the state a ``Base.Restored`` event carries (see Base.restorable_state)."""
    return {
        "name": bf.name,
        "grid": dict(bf.grid),
        "records": {kind: {rid: dict(fields) for rid, fields in records.items()}
                    for kind, records in bf.records.items() if records},
        "annexes": {name: {"content_type": a.content_type, "sha256": a.sha256, "size": len(a.data),
                           "data": a.data, "added_at": at} for name, a in bf.annexes.items()},
        "connection_modes": copy.deepcopy(dict(bf.connection_modes)),
        "last_entry_at": bf.last_entry_at,
    }


def restore_state(current: Base, state: dict[str, Any], restored_to: datetime, from_version: int) -> None:
    """Record ``Base.Restored`` on the current base with a state (from the log or from a file)."""
    current.restore(state=state, restored_to=restored_to, from_version=from_version)


def base_file_at(timeline: Any, past: Any, exported_at: datetime) -> BaseFile:
    """The content of a campus-base file for the base as the timeline has it at a position."""
    state = timeline.restorable_state(past)
    return BaseFile(
        base_id=past.id, name=state["name"], origin=past.origin, created_at=past.created_on,
        last_entry_at=state["last_entry_at"], grid=dict(state["grid"]),
        records={kind: state["records"].get(kind, {}) for kind in KINDS},
        annexes={name: Annex(a["content_type"], a["sha256"], a["data"]) for name, a in state["annexes"].items()},
        connection_modes=state["connection_modes"], position=past.version, exported_at=exported_at)


def backup_filename(backup: Backup) -> str:
    return f"{backup.name}{SUFFIX}".replace("/", "-").replace(":", "")


class Backups(Service):
    """Saves and archives of bases: taken, listed, verified, restored, kept by the schedule (hosting guide fiche 10)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("bases", "mail", "plannings", "time_machine", "school_year")

    def backup_cache(self) -> dict[UUID, Backup]:
        cache = self.__dict__.get("_backups")
        if cache is None:
            cache = self.__dict__.setdefault("_backups", {})
        return cache

    def _backups_of(self, account_id: UUID, planning_id: UUID) -> list[Backup]:
        """Every Backup of the planning (discarded ones too), oldest taken first.

        Discarded backups never change again and are kept in memory; live ones are
        read again (at most 42 per planning) so another process's discard is seen.
        """
        cache = self.backup_cache()
        found = []
        for backup_id in self.history.aggregate_ids(str(account_id), "Backup"):
            backup = cache.get(backup_id)
            if backup is None or not backup.discarded:
                backup = self.repository.get(backup_id)
                cache[backup_id] = backup
            if backup.account_id == account_id and backup.planning_id == planning_id:
                found.append(backup)
        found.sort(key=lambda b: (b.taken_at, b.created_on))
        return found

    def list_backups(self, account_id: UUID, planning_id: UUID) -> list[Backup]:
        """The saves and archives of the planning's current base, newest first."""
        planning = self.plannings.get_planning(account_id, planning_id)
        return [b for b in reversed(self._backups_of(account_id, planning_id))
                if not b.discarded and b.base_id == planning.base_id]

    def get_backup(self, account_id: UUID, planning_id: UUID, backup_id: UUID) -> Backup:
        self.plannings.get_planning(account_id, planning_id)
        backup = self._get(Backup, backup_id, account_id, "backup")
        if backup.planning_id != planning_id:
            raise NotFound("backup not found")
        if backup.discarded:
            raise NotFound(f"backup {backup.name!r} was discarded by retention ({backup.discard_reason}); "
                           "its file is gone")
        return backup

    def backup_path(self, backup: Backup) -> Path:
        return self.settings.snapshots_dir / backup.file

    def backup_status(self, backup: Backup) -> tuple[str, str | None]:
        """("ok" | "damaged" | "missing", the problem's code) without reading the file: the
        full check runs before every download and restore, and in ``campus snapshots verify``."""
        if not self.backup_path(backup).is_file():
            return "missing", "backup_file_missing"
        if backup.damaged:
            return "damaged", (backup.damage or {}).get("problem")
        return "ok", None

    def verified_backup_path(self, backup: Backup) -> Path:
        """The backup's file, after checking its size and SHA-256 (410 missing, 409 altered)."""
        path = self.backup_path(backup)
        try:
            sha256, size = file_digest(path)
        except FileNotFoundError:
            raise Gone(f"the file of {backup.kind} {backup.name!r} is not on this server's snapshot storage "
                       f"({backup.file}); nothing was recorded: the servers of one store must share their "
                       "snapshots folder, and the operator must look for the file", code=MISSING) from None
        if (sha256, size) != (backup.sha256, backup.size):
            raise BackupUnreadable(f"the file of backup {backup.name!r} is corrupted: its size or SHA-256 no "
                                   "longer matches what was written; it is not served",
                                   code="backup_corrupted")
        return path

    def trusted_backup_path(self, backup: Backup) -> Path:
        """:meth:`verified_backup_path`. A file that is there but altered is logged and its backup marked
        damaged (for every server: the file is shared); a file missing from this server's snapshot
        storage is only logged, for the operator (another server may well have it: a storage problem
        of this machine is not a fact about the backup)."""
        try:
            return self.verified_backup_path(backup)
        except Gone:
            log.warning("backup_file_missing", account_id=str(backup.account_id), backup_id=str(backup.id),
                        kind=backup.kind, file=backup.file, snapshots_dir=str(self.settings.snapshots_dir))
            raise
        except BackupUnreadable as exc:
            self._report_damaged(backup, exc.code or "backup_corrupted", exc.detail)
            raise

    def _report_damaged(self, backup: Backup, problem: str, detail: str) -> Backup:
        """Log a bad file (never its content) and record ``Backup.FoundDamaged`` once per problem."""
        log.warning("backup_file_damaged", account_id=str(backup.account_id), backup_id=str(backup.id),
                    kind=backup.kind, file=backup.file, problem=problem)

        def body() -> Backup:
            current: Backup = self.repository.get(backup.id)
            if not current.discarded and (current.damage or {}).get("problem") != problem:
                current.mark_damaged(problem=problem, detail=detail)
                self.save(current)
            return current

        before = self.repository.get(backup.id).damage
        marked = self._run(backup.account_id, body)
        if marked.damage != before:
            self.mail.notify_manager(backup.account_id, "backup_problems", f"{backup.kind} {backup.name!r} is damaged",
                                f"A check of the file of {backup.kind} {backup.name!r} found: {detail}.\n"
                                "It will not be served; a restore from it is rebuilt from the event log instead.")
        self.backup_cache()[marked.id] = marked
        return marked

    def record_backup(self, account_id: UUID, planning_id: UUID, snapshot: BaseFile,
                       *, kind: str, name: str, taken_at: datetime, position: int, scheduled: bool,
                       kept: bool = False, backup_id: UUID | None = None) -> Backup:
        """Write the file, then save ``Backup.Taken`` while still holding the file's lock
        (a failed save removes the file; a crash leaves an orphan that the clean-up removes).

        With `backup_id` (a scheduled slot's natural id) the file is written exclusively and the
        backup recorded only if it does not exist yet: :class:`SlotTaken` otherwise."""
        exclusive = backup_id is not None
        backup_id = backup_id or uuid4()
        folder = self.settings.snapshots_dir / str(account_id)
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(folder.parent)
        relative = f"{account_id}/{backup_id}{SUFFIX}"
        path = self.settings.snapshots_dir / relative
        with atomic_backup_file(snapshot, path, exclusive=exclusive,
                                min_age=self._snapshot_grace()) as (sha256, size):

            def body() -> Backup:
                if exclusive and backup_id in self.repository:  # re-run after a conflict, or a late writer
                    raise SlotTaken(f"{kind} {name!r} is recorded already")
                backup = Backup._create(Backup.Taken, id=backup_id, account_id=account_id, planning_id=planning_id,
                                base_id=snapshot.base_id, kind=kind, name=name, taken_at=taken_at,
                                version=snapshot.position, position=position, file=relative, sha256=sha256,
                                size=size, counts=snapshot.counts(), scheduled=scheduled, kept=kept)
                self.save(backup)
                return backup

            backup = self._run(account_id, body)
        self.backup_cache()[backup.id] = backup
        return backup

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
                return self.record_backup(planning.account_id, planning.id, snapshot, kind=kind,
                                           name=f"{snapshot.name} — {kind} of {when}", taken_at=at,
                                           position=past.position, scheduled=True, backup_id=backup_id)
            except SlotTaken:
                # A file at the slot's path that no live writer holds and no backup records is what a
                # holder of the lease killed between writing and recording left: replace it, once.
                if attempt == 2 or not self._remove_orphan(relative, self._snapshot_grace()):
                    log.info("scheduled_backup_already_taken", planning_id=str(planning.id), kind=kind,
                             slot=at.isoformat())
                    return None
        return None

    def take_backup(self, account_id: UUID, planning_id: UUID, kind: str = "save",
                    before: str | None = None) -> Backup:
        """A save of the planning's current base now, on request (in service or not), or
        automatically `before` a risky operation ("restore", "load")."""
        from campus.services.exchange import snapshot_of

        if kind != "save":
            raise Invalid.field("kind", "only saves are taken on request; archives are taken every day")
        planning = self.plannings.get_planning(account_id, planning_id)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet: create or load one")
        with self._reading(account_id):
            taken_at = self.now()
            snapshot = snapshot_of(self.bases.get_base(account_id, planning.base_id), taken_at)
            found = self.history.version_at(snapshot.base_id, taken_at)
        position = found[1] if found else 0
        what = f"save before {before}" if before else "save"
        name = f"{snapshot.name} — {what} of {taken_at:%Y-%m-%d %H:%M:%S} UTC"
        return self.record_backup(account_id, planning_id, snapshot, kind="save", name=name,
                                   taken_at=taken_at, position=position, scheduled=False)

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
        backups = self._backups_of(account_id, planning.id)
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

    def _apply_retention(self, account_id: UUID, planning_id: UUID) -> list[Backup]:
        """Keep the newest 12 saves and 30 archives of the planning; discard the others' files.
        Archives of a school year (``kept``) are out of the count and never discarded.

        The command decides on the backups as it reads them itself (under the school's guard, and
        again if it is re-run after a conflict): a discard another server recorded meanwhile is
        seen, so each discard is recorded once."""
        candidates = [b.id for b in self._backups_of(account_id, planning_id) if not b.discarded and not b.kept]
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
        cache = self.backup_cache()
        for backup in discarded:
            cache[backup.id] = backup
            self.backup_path(backup).unlink(missing_ok=True)
        return discarded

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

    def restore_from_backup(self, account_id: UUID, planning_id: UUID, backup_id: UUID, *,
                            confirm: bool, reason: str | None = None,
                            kinds: list[str] | None = None) -> BackupRestore:
        """Bring the planning's current base back to a save or an archive.

        From its file when the file checks out; otherwise (missing from this
        server's snapshot storage, truncated, altered: the last two mark the
        backup damaged) the base's state at the backup's ``taken_at`` is rebuilt
        from the event log instead, and the answer says so (``source``, ``warning``).
        """
        if not confirm:
            raise Invalid.field("confirm", "the restore replaces the base's current state: send \"confirm\": true")
        kinds = checked_kinds(kinds)
        backup = self.get_backup(account_id, planning_id, backup_id)
        try:
            path = self.trusted_backup_path(backup)
            with open(path, "rb") as stream:
                loaded = read_base_file(stream)
        except Gone:
            return self._restore_from_log(account_id, planning_id, backup,
                                          "is missing from this server's snapshot storage", reason, kinds)
        except BackupUnreadable:
            return self._restore_from_log(account_id, planning_id, backup, "failed its checksum", reason, kinds)
        except FormatError as exc:  # matches what was written, yet unreadable: should never happen
            self._report_damaged(backup, exc.code or "invalid_file", exc.detail)
            return self._restore_from_log(account_id, planning_id, backup, "is not a readable campus-base file",
                                          reason, kinds)
        state = state_of_file(loaded, backup.taken_at)
        with context_changed(reason=reason_with_kinds(reason, kinds)):
            planning = self.plannings.get_planning(account_id, planning_id)
            self.bases.require_stopped(planning, "restore its base")
            if planning.base_id == backup.base_id:
                self.take_backup(account_id, planning_id, before="restore")  # the way back, whatever happens

            def body() -> BackupRestore:
                planning = self.plannings.get_planning(account_id, planning_id)
                self.bases.require_stopped(planning, "restore its base")
                self._require_same_base(planning, backup)
                current = self.bases.get_base(account_id, planning.base_id)
                restore_state(current, only_kinds(current, state, kinds), backup.taken_at, backup.base_version)
                self.save(current)
                return BackupRestore(current, self.now(), backup, source="file")

            return self._run(account_id, body)

    @staticmethod
    def _require_same_base(planning: Planning, backup: Backup) -> None:
        if planning.base_id != backup.base_id:
            raise Conflict(f"backup {backup.name!r} is of another base of the planning: mount that base "
                           "first (PUT …/base)", code="other_base")

    def _restore_from_log(self, account_id: UUID, planning_id: UUID, backup: Backup,
                          what: str, reason: str | None, kinds: list[str] | None = None) -> BackupRestore:
        """The fallback: the base's state at the backup's instant, replayed from the event log."""
        at = backup.taken_at.isoformat()
        self._require_same_base(self.plannings.get_planning(account_id, planning_id), backup)
        try:
            base, restored_at = self.time_machine.restore_base(account_id, planning_id, as_of=backup.taken_at, confirm=True,
                                                  reason=reason, kinds=kinds)
        except Invalid as exc:  # outside the restore window, or before the base existed
            raise Conflict(f"the file of {backup.kind} {backup.name!r} {what} and the event log cannot stand in "
                           f"for it at {at} ({exc.detail}); nothing was restored",
                           code="backup_unrecoverable") from None
        log.warning("backup_restored_from_event_log", account_id=str(account_id), backup_id=str(backup.id),
                    taken_at=at)
        warning = f"the file of {backup.kind} {backup.name!r} {what}; the base was rebuilt from the event log at {at}"
        return BackupRestore(base, restored_at, backup, source="event_log", warning=warning)

    def snapshot_inventory(self, *, with_missing: bool = True) -> Inventory:
        """Every file and unfinished write under the snapshots folder, the orphans among them
        (no live backup records them) and, if asked, the live backups without a file.

        Looking for missing files reads every backup ever taken (for ``campus snapshots
        verify``); without it only the files found are looked up (start-up).
        """
        folder = self.settings.snapshots_dir
        inventory = Inventory()
        if folder.is_dir():
            inventory.unfinished = sorted(p.relative_to(folder).as_posix() for p in folder.rglob(f"*{SUFFIX}{PART}"))
            inventory.files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob(f"*{SUFFIX}")
                                     if p.is_file())
        for relative in inventory.files:
            backup = self._live_backup_for(relative)
            if backup is None:
                inventory.orphans.append(relative)
            else:
                inventory.recorded[relative] = backup
        if with_missing:
            for backup_id in self.history.all_aggregate_ids("Backup"):
                backup = self.repository.get(backup_id)
                if isinstance(backup, Backup) and not backup.discarded and backup.file not in inventory.recorded:
                    inventory.missing.append(backup)
        return inventory

    def _live_backup_for(self, relative: str) -> Backup | None:
        """The live backup whose file is `relative` (``<account id>/<backup id>.campus``), if any."""
        account, _, name = relative.partition("/")
        try:
            backup_id = UUID(name.removesuffix(SUFFIX))
            UUID(account)
            backup = self.repository.get(backup_id)
        except (ValueError, AggregateNotFoundError):
            return None
        if not isinstance(backup, Backup) or backup.discarded or backup.file != relative:
            return None
        return backup

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

    def _snapshot_grace(self) -> float:
        """How old a file another writer left must be before it is removed or replaced: 0 on SQLite (every
        server runs on the store's machine, where every writer's lock is seen), else
        SHARED_STORAGE_GRACE_SECONDS (servers on several machines may not see each other's locks)."""
        return SHARED_STORAGE_GRACE_SECONDS if self.core.locks.is_postgres else 0.0

    def _clean_snapshots_now(self) -> dict[str, int]:
        folder = self.settings.snapshots_dir
        grace = self._snapshot_grace()
        counts = {"unfinished": 0, "orphans": 0}
        try:
            for path in remove_unfinished_writes(folder, grace):
                counts["unfinished"] += 1
                log.warning("snapshot_unfinished_write_removed", file=path.relative_to(folder).as_posix())
            for relative in self.snapshot_inventory(with_missing=False).orphans:
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
        if not _old_enough(path, min_age):
            return False
        with _unless_locked(path) as dead:
            if dead and self._live_backup_for(relative) is None:
                path.unlink(missing_ok=True)
                return True
        return False


class Scheduler:
    """The schedule of one application, run by one process of the store at a time: the holder of the
    "scheduler" lease (:mod:`campus.infra.locks`: a PostgreSQL session advisory lock, or a byte lock on the
    SQLite lease file; either ends with the process, even killed).

    Every server starts its thread. The holder runs a round every `every` seconds: the clean-up of
    the snapshots folder (when it takes the lease, then every CLEANUP_SECONDS), the due saves and
    archives (:meth:`~Backups.run_due_backups`), then the due school-year operations
    (:meth:`~campus.services.school_year.SchoolYear.run_due_year_operations`). The others try the
    lease every `retry` seconds, so one takes over within seconds of the holder's death, and runs a
    round at once. The deterministic ids of scheduled backups keep a slot single even if two
    processes ever ran a round at once (a lease lost mid-round).
    """

    def __init__(self, backups: Backups) -> None:
        self.backups = backups
        self.lease = backups.core.locks.lease(SCHEDULER_LEASE)
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
        work: list[tuple[str, Callable[[], Any]]] = [("backups", lambda: self.backups.run_due_backups()),
                                                     ("school_year", lambda: self.backups.school_year.run_due_year_operations())]
        with self.running:
            if self.cleaned_at is None or time.monotonic() - self.cleaned_at >= CLEANUP_SECONDS:
                self.backups._clean_snapshots_now()
                self.cleaned_at = time.monotonic()
            for name, run in work:
                if not self.lease.held:
                    log.warning("scheduler_round_interrupted", work=name, reason="the scheduler's lease was lost")
                    return
                try:
                    run()
                except Exception:  # noqa: BLE001 - logged; the next round retries
                    log.warning("scheduler_round_failed", work=name, exc_info=True)


@dataclass(frozen=True)
class BackupRestore:
    """What a restore from a backup did: from the file, or (bad file) from the event log."""

    base: Base
    restored_at: datetime
    backup: Backup
    source: str  # "file" | "event_log"
    warning: str | None = None
