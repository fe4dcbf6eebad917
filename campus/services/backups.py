"""Saves and archives of bases (hosting guide fiches 6, 10, 12).

A backup is a campus-base file (docs/EXPORT_FORMAT.md) of a base's state at an
instant, written atomically under ``<snapshots_dir>/<account id>/<backup id>.campus``
(``.part``, fsync, rename, fsync of the folder: :mod:`campus.infra.backup_files`),
and a :class:`Backup` aggregate that records it (where, SHA-256 and size of the
whole file, the base's version, the log position and counts). Saves are taken on
request (here) and by the clock every 2 hours (UTC), archives every day at 00:00
UTC (:data:`EVERY`); the schedule, retention and the clean-up of the snapshots
folder are :mod:`campus.services.backup_schedule`'s.

A file is never served or restored unless its size and SHA-256 match what was
recorded when it was taken. When it does not, the backup is marked
(``Backup.FoundDamaged``, logged); a file missing from this server's snapshot
storage is logged and answered 410, never recorded as damage for every server.
Either way a restore from it falls back to the event log: the base's state at
the backup's ``taken_at`` is replayed, and the answer says so.

Crash safety: the writer holds an advisory lock (``flock``) on the file from its
``.part`` until the ``Backup.Taken`` event is saved; the kernel drops it when
the process dies, even by SIGKILL. At start-up (and in ``campus snapshots
verify``, :meth:`Backups.snapshot_inventory`) an unlocked ``.part`` is an
interrupted write and an unlocked file no live backup records is an orphan:
both are removed by the clean-up. See docs/BACKUPS.md.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import structlog
from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.backup import MISSING, Backup
from campus.aggregates.planning import Planning
from campus.aggregates.school_base import Base
from campus.errors import CampusError, Conflict, Invalid, NotFound
from campus.infra.backup_files import (
    PART,
    SlotTaken,
    atomic_write,
    file_digest,
    fsync_dir,
    remove_unfinished,
    snapshot_grace,
)
from campus.infra.context import context_changed
from campus.rules.base_file_reader import read_base_file
from campus.rules.export_format import SUFFIX, BaseFile, FormatError, prepare
from campus.services.base import Service
from campus.services.time_machine import checked_kinds, only_kinds, reason_with_kinds


log = structlog.get_logger("campus.backups")

EVERY = {"save": timedelta(hours=2), "archive": timedelta(days=1)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Gone(CampusError):
    """The backup's file is missing (410)."""

    status = 410
    title = "Gone"


class BackupUnreadable(Conflict):
    """The backup's file does not match its recorded size and SHA-256 (409)."""


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


def atomic_backup_file(snapshot: BaseFile, path: Path, *, exclusive: bool = False,
                       min_age: float = 0.0) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """Write the campus-base file `snapshot` to `path` atomically, yielding (SHA-256, size) of the whole
    file while holding its lock (:func:`campus.infra.backup_files.atomic_write`: `exclusive` and `min_age`
    are for a scheduled slot)."""
    return atomic_write(prepare(snapshot).chunks(), path, exclusive=exclusive, min_age=min_age)


def remove_unfinished_writes(folder: Path, min_age: float = 0.0) -> list[Path]:
    """Delete every ``*.campus.part`` under `folder` whose writer is gone (unlocked, and unchanged for
    `min_age` seconds); return them (:func:`campus.infra.backup_files.remove_unfinished`)."""
    return remove_unfinished(folder, f"*{SUFFIX}{PART}", min_age)


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


def backup_filename(backup: Backup) -> str:
    return f"{backup.name}{SUFFIX}".replace("/", "-").replace(":", "")


class Backups(Service):
    """Saves and archives of bases: taken, listed, verified, restored (hosting guide fiche 10); the schedule and
    retention are :class:`~campus.services.backup_schedule.BackupSchedule`'s."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("backup_schedule", "bases", "outbox", "plannings", "time_machine")

    def backup_cache(self) -> dict[UUID, Backup]:
        cache = self.__dict__.get("_backups")
        if cache is None:
            cache = self.__dict__.setdefault("_backups", {})
        return cache

    def backups_of(self, account_id: UUID, planning_id: UUID) -> list[Backup]:
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
        return [b for b in reversed(self.backups_of(account_id, planning_id))
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
            self.outbox.notify_manager(backup.account_id, "backup_problems", f"{backup.kind} {backup.name!r} is damaged",
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
            fsync_dir(folder.parent)
        relative = f"{account_id}/{backup_id}{SUFFIX}"
        path = self.settings.snapshots_dir / relative
        with atomic_backup_file(snapshot, path, exclusive=exclusive,
                                min_age=snapshot_grace(self.core.locks)) as (sha256, size):

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

    def start_scheduler(self, stop: threading.Event, *args: Any, **kwargs: Any) -> threading.Thread:
        """The scheduler's thread: :meth:`campus.services.backup_schedule.BackupSchedule.start_scheduler`.
        Transitional, for ``SchoolYear.start_year_scheduler``; call ``backup_schedule`` instead."""
        return self.backup_schedule.start_scheduler(stop, *args, **kwargs)

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
            backup = self.live_backup_for(relative)
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

    def live_backup_for(self, relative: str) -> Backup | None:
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

@dataclass(frozen=True)
class BackupRestore:
    """What a restore from a backup did: from the file, or (bad file) from the event log."""

    base: Base
    restored_at: datetime
    backup: Backup
    source: str  # "file" | "event_log"
    warning: str | None = None
