"""The files of saves and archives, as files: written atomically under a lock, hashed, and told apart from
what a dead writer left (docs/BACKUPS.md, "Crash safety").

A file is written as ``<path>.part``, created and locked (``flock``), written, fsynced, renamed (or
linked) over its path, then the folder is fsynced; the writer keeps the lock until its ``Backup.Taken``
is saved, and the kernel drops it when the process dies, even by SIGKILL. So a locked file belongs to a
live writer, and an unlocked ``.part`` is an interrupted write. What the bytes are (a campus-base file)
is the caller's business: :func:`campus.services.backups.atomic_backup_file` gives them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from campus.infra.locks import StoreLocks

PART = ".part"  # an unfinished write: <backup id>.campus.part
# PostgreSQL servers may share the snapshots folder from several machines, where a file lock taken on one
# may not be seen on another: a file a writer left is removed only once it is this old (and unlocked).
SHARED_STORAGE_GRACE_SECONDS = 600.0
_HASH_CHUNK = 1024 * 1024
_NEW_PART_SECONDS = 5.0  # a scheduled slot's .part younger than this may be a writer's that is not locked yet


class SlotTaken(Exception):
    """A scheduled slot is taken, or being taken, by another writer: its ``Backup`` exists, or its file
    (or unfinished write) is there and locked. Not an error: the slot is skipped."""


def snapshot_grace(locks: StoreLocks) -> float:
    """How old a file another writer left must be before it is removed or replaced: 0 on SQLite (every
    server runs on the store's machine, where every writer's lock is seen), else
    SHARED_STORAGE_GRACE_SECONDS (servers on several machines may not see each other's locks)."""
    return SHARED_STORAGE_GRACE_SECONDS if locks.is_postgres else 0.0


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a whole file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(chunks: Iterable[bytes], path: Path, *, exclusive: bool = False,
                 min_age: float = 0.0) -> Iterator[tuple[str, int]]:
    """Write `chunks` to `path` atomically; yield (SHA-256, size) of the whole file while holding it.

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
            for chunk in chunks:
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
        fsync_dir(path.parent)
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
            with unless_locked(partial) as dead:
                # A writer that has just created its .part has not locked it yet: a few seconds' grace.
                if not dead or not old_enough(partial, max(min_age, _NEW_PART_SECONDS)):
                    raise SlotTaken(f"{partial.name} is being written by another process") from None
                partial.unlink(missing_ok=True)  # what a writer killed during this slot left
    raise SlotTaken(f"{partial.name} keeps appearing: another process is writing the slot")


def old_enough(path: Path, min_age: float) -> bool:
    """Whether `path` was last modified at least `min_age` seconds ago, by the clock of the file system
    that stamped it (a file written just now in the same folder tells its "now"; the application's clock
    is for events, and a shared folder's server may not agree with this machine's)."""
    if min_age <= 0:
        return True
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return _folder_now(path.parent) - modified >= min_age


def _folder_now(folder: Path) -> float:
    """The file system's current time in `folder`: the modification time of a file created there now."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".clock-")
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(probe)


@contextlib.contextmanager
def unless_locked(path: Path) -> Iterator[bool]:
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


def remove_unfinished(folder: Path, pattern: str, min_age: float = 0.0) -> list[Path]:
    """Delete every file matching `pattern` (an unfinished write: ``*<suffix>.part``) under `folder`
    whose writer is gone; return them.

    A ``.part`` a live process is still writing is locked and left alone, so
    this is safe while other servers of this machine share the folder. With
    `min_age`, a ``.part`` must also not have changed for that many seconds (a
    writer on another machine, whose lock this one may not see).
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob(pattern)):
        if not old_enough(path, min_age):
            continue
        with unless_locked(path) as dead:
            if dead:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
