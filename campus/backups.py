"""Saves and archives of bases (hosting guide fiches 6, 10, 12). Mixed into CampusApplication.

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
recorded when it was taken.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import structlog

from campus.aggregates.backup import Backup
from campus.aggregates.planning import Planning
from campus.aggregates.school_base import Base
from campus.context import current_context, reset_context, set_context
from campus.errors import CampusError, Conflict, Invalid, NotFound
from campus.export_format import (
    SUFFIX,
    BaseFile,
    FormatError,
    read_base_file,
    write_file,
)

if TYPE_CHECKING:
    from campus.application import CampusApplication

log = structlog.get_logger("campus.backups")

KEEP = {"save": 12, "archive": 30}
EVERY = {"save": timedelta(hours=2), "archive": timedelta(days=1)}
SCHEDULER_SECONDS = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HASH_CHUNK = 1024 * 1024


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


class BackupUseCases:
    """Mixed into CampusApplication."""

    # -- the aggregates ------------------------------------------------------------------
    def _backup_cache(self: CampusApplication) -> dict[UUID, Backup]:
        cache = self.__dict__.get("_backups")
        if cache is None:
            cache = self.__dict__.setdefault("_backups", {})
        return cache

    def _backups_of(self: CampusApplication, account_id: UUID, planning_id: UUID) -> list[Backup]:
        """Every Backup of the planning (discarded ones too), oldest taken first.

        Discarded backups never change again and are kept in memory; live ones are
        read again (at most 42 per planning) so another process's discard is seen.
        """
        cache = self._backup_cache()
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

    def list_backups(self: CampusApplication, account_id: UUID, planning_id: UUID) -> list[Backup]:
        """The saves and archives of the planning's current base, newest first."""
        planning = self.get_planning(account_id, planning_id)
        return [b for b in reversed(self._backups_of(account_id, planning_id))
                if not b.discarded and b.base_id == planning.base_id]

    def get_backup(self: CampusApplication, account_id: UUID, planning_id: UUID, backup_id: UUID) -> Backup:
        self.get_planning(account_id, planning_id)
        backup = self._get(Backup, backup_id, account_id, "backup")
        if backup.planning_id != planning_id:
            raise NotFound("backup not found")
        if backup.discarded:
            raise NotFound(f"backup {backup.name!r} was discarded by retention ({backup.discard_reason}); "
                           "its file is gone")
        return backup

    def backup_path(self: CampusApplication, backup: Backup) -> Path:
        return self.settings.snapshots_dir / backup.file

    def verified_backup_path(self: CampusApplication, backup: Backup) -> Path:
        """The backup's file, after checking its size and SHA-256 (410 missing, 409 altered)."""
        path = self.backup_path(backup)
        try:
            sha256, size = file_digest(path)
        except FileNotFoundError:
            raise Gone(f"the file of backup {backup.name!r} is missing ({backup.file})",
                       code="backup_file_missing") from None
        if (sha256, size) != (backup.sha256, backup.size):
            raise BackupUnreadable(f"the file of backup {backup.name!r} is corrupted: its size or SHA-256 no "
                                   "longer matches what was written; it is not served",
                                   code="backup_corrupted")
        return path

    # -- taking ------------------------------------------------------------------------------
    def _write_backup(self: CampusApplication, account_id: UUID, backup_id: UUID,
                      snapshot: BaseFile) -> tuple[str, str, int]:
        folder = self.settings.snapshots_dir / str(account_id)
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(folder.parent)
        relative = f"{account_id}/{backup_id}{SUFFIX}"
        path = self.settings.snapshots_dir / relative
        write_file(snapshot, path)
        _fsync_dir(folder)
        sha256, size = file_digest(path)
        return relative, sha256, size

    def _record_backup(self: CampusApplication, account_id: UUID, planning_id: UUID, snapshot: BaseFile,
                       *, kind: str, name: str, taken_at: datetime, position: int, scheduled: bool) -> Backup:
        backup_id = uuid4()
        relative, sha256, size = self._write_backup(account_id, backup_id, snapshot)

        def body() -> Backup:
            backup = Backup._create(Backup.Taken, id=backup_id, account_id=account_id, planning_id=planning_id,
                            base_id=snapshot.base_id, kind=kind, name=name, taken_at=taken_at,
                            version=snapshot.position, position=position, file=relative, sha256=sha256,
                            size=size, counts=snapshot.counts(), scheduled=scheduled)
            self.save(backup)
            return backup

        try:
            backup = self._run(account_id, body)
        except BaseException:
            (self.settings.snapshots_dir / relative).unlink(missing_ok=True)
            raise
        self._backup_cache()[backup.id] = backup
        return backup

    def take_backup(self: CampusApplication, account_id: UUID, planning_id: UUID, kind: str = "save",
                    before: str | None = None) -> Backup:
        """A save of the planning's current base now, on request (in service or not), or
        automatically `before` a risky operation ("restore", "load")."""
        from campus.exchange import snapshot_of

        if kind != "save":
            raise Invalid.field("kind", "only saves are taken on request; archives are taken every day")
        planning = self.get_planning(account_id, planning_id)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet: create or load one")
        with self._command(account_id):
            taken_at = self.now()
            snapshot = snapshot_of(self.get_base(account_id, planning.base_id), taken_at)
            found = self.history.version_at(snapshot.base_id, taken_at)
        position = found[1] if found else 0
        what = f"save before {before}" if before else "save"
        name = f"{snapshot.name} — {what} of {taken_at:%Y-%m-%d %H:%M:%S} UTC"
        return self._record_backup(account_id, planning_id, snapshot, kind="save", name=name,
                                   taken_at=taken_at, position=position, scheduled=False)

    # -- the schedule ----------------------------------------------------------------------------
    def run_due_backups(self: CampusApplication) -> list[Backup]:
        """Take every scheduled save and archive due since the last run, then apply retention.

        For each planning in service, the boundaries passed since the newest
        scheduled backup of each kind of its current base (or since the base's
        creation, at most the number retention keeps) are each taken with the
        base's state at that boundary. Safe to call at any pace: it catches up.
        """
        taken: list[Backup] = []
        token = set_context(replace(current_context(), actor="scheduler"))
        try:
            for planning_id in self.history.all_aggregate_ids("Planning"):
                try:
                    planning = self.repository.get(planning_id)
                    if not isinstance(planning, Planning) or not planning.in_service or planning.base_id is None:
                        continue
                    taken += self._run_due_for(planning)
                except Exception:
                    log.warning("scheduled_backup_failed", planning_id=str(planning_id), exc_info=True)
        finally:
            reset_context(token)
        return taken

    def _run_due_for(self: CampusApplication, planning: Planning) -> list[Backup]:
        from campus.exchange import snapshot_of

        account_id, base_id = planning.account_id, planning.base_id
        now = self.clock.now()
        backups = self._backups_of(account_id, planning.id)
        with self._command(account_id):
            created_on = self.get_base(account_id, base_id).created_on
        due: list[tuple[datetime, str]] = []
        for kind in KEEP:
            done = [b.taken_at for b in backups if b.kind == kind and b.scheduled and b.base_id == base_id]
            after = max([created_on, *done])
            due += [(at, kind) for at in boundaries(kind, after, now)[-KEEP[kind]:]]
        due.sort()
        taken = []
        for at, kind, past, position in self._states_at(account_id, base_id, due):
            snapshot = snapshot_of(past, at)
            when = f"{at:%Y-%m-%d}" if kind == "archive" else f"{at:%Y-%m-%d %H:%M} UTC"
            taken.append(self._record_backup(account_id, planning.id, snapshot, kind=kind,
                                             name=f"{snapshot.name} — {kind} of {when}", taken_at=at,
                                             position=position, scheduled=True))
        if taken:
            self._apply_retention(account_id, planning.id)
        return taken

    def _states_at(self: CampusApplication, account_id: UUID, base_id: UUID,
                   due: list[tuple[datetime, str]]) -> Iterator[tuple[datetime, str, Base, int]]:
        """The base at each instant (in order), replayed once and rolled forward."""
        past: Base | None = None
        for at, kind in due:
            found = self.history.version_at(base_id, at)
            if found is None:
                continue
            version, position = found
            if past is None or past.version > version:
                past = self.repository.get(base_id, version=version)
            elif past.version < version:
                for event in self.events.get(base_id, gt=past.version, lte=version):
                    past = event.mutate(past)
            yield at, kind, past, position

    def _apply_retention(self: CampusApplication, account_id: UUID, planning_id: UUID) -> list[Backup]:
        """Keep the newest 12 saves and 30 archives of the planning; discard the others' files."""
        discarded = []
        live = [b for b in self._backups_of(account_id, planning_id) if not b.discarded]
        for kind, keep in KEEP.items():
            of_kind = [b for b in live if b.kind == kind]
            discarded += of_kind[:-keep] if len(of_kind) > keep else []
        if not discarded:
            return []
        reason = "retention: the newest 12 saves and 30 archives are kept"

        def body() -> None:
            for backup in discarded:
                backup.discard(reason=reason)
            self.save(*discarded)

        self._run(account_id, body)
        for backup in discarded:
            self.backup_path(backup).unlink(missing_ok=True)
        return discarded

    def start_backup_scheduler(self: CampusApplication, stop: threading.Event,
                               every: float = SCHEDULER_SECONDS) -> threading.Thread:
        """A daemon thread calling :meth:`run_due_backups` every minute until `stop` is set."""

        def loop() -> None:
            while not stop.wait(every):
                try:
                    self.run_due_backups()
                except Exception:
                    log.warning("backup_scheduler_failed", exc_info=True)

        thread = threading.Thread(target=loop, name="campus-backups", daemon=True)
        thread.start()
        return thread

    # -- restoring ---------------------------------------------------------------------------------
    def restore_from_backup(self: CampusApplication, account_id: UUID, planning_id: UUID, backup_id: UUID, *,
                            confirm: bool, reason: str | None = None) -> tuple[Base, datetime, Backup]:
        """Bring the planning's current base back to a save or an archive (its checked file)."""
        if not confirm:
            raise Invalid.field("confirm", "the restore replaces the base's current state: send \"confirm\": true")
        backup = self.get_backup(account_id, planning_id, backup_id)
        fallback = (f"restore with \"as_of\": \"{backup.taken_at.isoformat()}\" instead "
                    "(the event log rebuilds that state)")
        try:
            path = self.verified_backup_path(backup)
            with open(path, "rb") as stream:
                loaded = read_base_file(stream)
        except (Gone, BackupUnreadable, FormatError) as exc:
            raise Conflict(f"{exc.detail}; {fallback}", code="backup_unreadable") from None
        state = state_of_file(loaded, backup.taken_at)
        token = set_context(replace(current_context(), reason=reason))
        try:
            planning = self.get_planning(account_id, planning_id)
            self._require_stopped(planning, "restore its base")
            if planning.base_id == backup.base_id:
                self.take_backup(account_id, planning_id, before="restore")  # the way back, whatever happens

            def body() -> tuple[Base, datetime, Backup]:
                planning = self.get_planning(account_id, planning_id)
                self._require_stopped(planning, "restore its base")
                if planning.base_id != backup.base_id:
                    raise Conflict(f"backup {backup.name!r} is of another base of the planning: mount that base "
                                   "first (PUT …/base)", code="other_base")
                current = self.get_base(account_id, planning.base_id)
                restore_state(current, state, backup.taken_at, backup.base_version)
                self.save(current)
                return current, self.now(), backup

            return self._run(account_id, body)
        finally:
            reset_context(token)
