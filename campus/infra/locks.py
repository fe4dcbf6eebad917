"""Locks that hold between processes: one writer per school, one leader per background task.

Several ``campus serve`` processes may share one store (PostgreSQL, or one SQLite
file on one machine). Two kinds of lock keep them from stepping on each other:

* **The school's guard** (:meth:`StoreLocks.school`): the command path holds it
  for the whole of a command — read, check, append — so a rule that spans
  several aggregates (seats, the last superadministrator, unique planning names)
  holds whichever process answers. Inside one process a thread takes a slot
  lock first (one of :data:`SLOTS` re-entrant locks, chosen by the school's id),
  so a process never has two threads waiting on the database for one school.
  Across processes:

  - PostgreSQL: a transaction-scoped advisory lock, taken by the command path in
    the command's own transaction (:func:`advisory_key` gives the key; the lock
    is released by the commit or rollback, or when a killed process's
    connection ends);
  - SQLite: a byte-range lock (``fcntl.lockf``) on ``<data dir>/campus.locks``,
    one byte per slot. POSIX record locks belong to the process and end with it,
    so a ``kill -9`` never leaves a school locked.

  Waiting is bounded (:data:`GUARD_TIMEOUT`): a school held longer answers
  :class:`~campus.errors.StoreUnavailable` (503 + ``Retry-After``), never a hang.

* **Leases** (:meth:`StoreLocks.lease`): one process at a time runs a view's
  follower or the scheduler. PostgreSQL: a session advisory lock on a connection
  of the lease's own; SQLite: ``lockf(LOCK_NB)`` on ``<data dir>/campus.leases``.
  Either ends with the process, so another process takes over after a crash.

* **Exclusive sections** (:meth:`StoreLocks.exclusive`): a blocking session-level
  lock for start-up work that must not run twice at once (creating the schema
  and tables when several servers start together on an empty database).

Advisory locks are per database, not per schema: every key includes the schema,
so two deployments (or two tests) sharing a database never share a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog

from campus.errors import StoreUnavailable

log = structlog.get_logger("campus.locks")

SLOTS = 4096  # in-process slot locks (and SQLite lock-file bytes) schools are spread over
GUARD_TIMEOUT = 30.0  # seconds a command waits for its school before answering 503
_LEASE_BASE = 1 << 20  # leases' bytes in the SQLite lease file start here (apart from any slot)


def advisory_key(namespace: str, *parts: object) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for `parts` within `namespace` (the schema)."""
    digest = hashlib.sha256(":".join([namespace, *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def slot_of(tenant: Any) -> int:
    if isinstance(tenant, UUID):
        return tenant.int % SLOTS
    return int.from_bytes(hashlib.sha256(str(tenant).encode()).digest()[:4], "big") % SLOTS


class _Slots:
    """One process's slot locks for one store, with the SQLite lock file when there is one.

    A slot's file byte is locked when a thread of this process first takes the slot
    and unlocked when it lets go (re-entrant takes are counted), because POSIX record
    locks are the process's, not the thread's.
    """

    def __init__(self, lock_file: Path | None) -> None:
        self.locks = [threading.RLock() for _ in range(SLOTS)]
        self.depth = [0] * SLOTS
        self.fd: int | None = None
        self.lease_fd: int | None = None
        if lock_file is not None:
            self.fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def hold(self, slot: int, timeout: float, what: str) -> Iterator[None]:
        lock = self.locks[slot]
        if not lock.acquire(timeout=timeout):
            raise StoreUnavailable(f"{what} is busy; nothing was changed, retry shortly", code="school_busy")
        try:
            if self.depth[slot] == 0 and self.fd is not None:
                _lockf_wait(self.fd, slot, timeout, what)
            self.depth[slot] += 1
            try:
                yield
            finally:
                self.depth[slot] -= 1
                if self.depth[slot] == 0 and self.fd is not None:
                    fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, slot)
        finally:
            lock.release()


def _lockf_wait(fd: int, offset: int, timeout: float, what: str) -> None:
    """Lock one byte of `fd` at `offset`, waiting at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise StoreUnavailable(f"{what} is busy in another process; nothing was changed, retry shortly",
                                       code="school_busy") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


# One registry per process: every application on one store shares the same slots (tests run
# several applications on one file in one process; a server runs one).
_REGISTRY: dict[str, _Slots] = {}
_REGISTRY_GUARD = threading.Lock()
_HELD_LEASES: dict[tuple[str, str], int] = {}  # (store, lease name) -> id of the holding Lease


def _slots_for(store: str, lock_file: Path | None) -> _Slots:
    with _REGISTRY_GUARD:
        slots = _REGISTRY.get(store)
        if slots is None:
            slots = _REGISTRY[store] = _Slots(lock_file)
        return slots


class Lease:
    """The right to run one background task, held by one process at a time.

    ``try_acquire()`` never waits; ``held`` says whether it is still ours (a
    PostgreSQL lease whose connection broke is lost); ``release()`` hands it over.
    """

    def __init__(self, locks: StoreLocks, name: str) -> None:
        self.locks = locks
        self.name = name
        self._conn: Any = None  # PostgreSQL: the connection holding the session lock
        self._held = False
        self._checked = 0.0

    def try_acquire(self) -> bool:
        if self._held:
            return self.held
        key = (self.locks.store, self.name)
        with _REGISTRY_GUARD:
            if key in _HELD_LEASES:
                return False  # another application of this process leads
            _HELD_LEASES[key] = id(self)
        try:
            acquired = self._acquire()
        except Exception:  # noqa: BLE001 - an unreachable store: not the leader, try again later
            log.warning("lease_unavailable", lease=self.name, exc_info=True)
            acquired = False
        if not acquired:
            with _REGISTRY_GUARD:
                _HELD_LEASES.pop(key, None)
            return False
        self._held = True
        self._checked = time.monotonic()
        log.debug("lease_acquired", lease=self.name, pid=os.getpid())
        return True

    def _acquire(self) -> bool:
        if self.locks.is_postgres:
            import psycopg

            # The connection is kept between attempts (a server that does not lead tries every second).
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(**self.locks.connect_kwargs, autocommit=True)
            try:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                         (advisory_key(self.locks.store, "lease", self.name),)).fetchone()
            except Exception:
                self._close_connection()
                raise
            return bool(row and row[0])
        assert self.locks.lease_fd is not None
        try:
            fcntl.lockf(self.locks.lease_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _lease_offset(self.name))
        except OSError:
            return False
        return True

    @property
    def held(self) -> bool:
        """Still ours. On PostgreSQL the connection is checked at most once a second."""
        if not self._held:
            return False
        if self._conn is not None and time.monotonic() - self._checked > 1.0:
            try:
                self._conn.execute("SELECT 1")
                self._checked = time.monotonic()
            except Exception:  # noqa: BLE001 - the connection (hence the lock) is gone
                log.warning("lease_lost", lease=self.name)
                self._forget()
                return False
        return True

    def release(self) -> None:
        """Hand the lease over (and close its connection: nothing of it is kept)."""
        if self._held and self._conn is None and self.locks.lease_fd is not None:
            fcntl.lockf(self.locks.lease_fd, fcntl.LOCK_UN, 1, _lease_offset(self.name))
        self._forget()

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None

    def _forget(self) -> None:
        self._close_connection()
        self._held = False
        with _REGISTRY_GUARD:
            if _HELD_LEASES.get((self.locks.store, self.name)) == id(self):
                del _HELD_LEASES[(self.locks.store, self.name)]


def _lease_offset(name: str) -> int:
    return _LEASE_BASE + int.from_bytes(hashlib.sha256(name.encode()).digest()[:3], "big")


class StoreLocks:
    """The locks of one store (a SQLite file or a PostgreSQL schema), for one application."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        """`env`: the library's persistence environment (:meth:`Settings.persistence_env`)."""
        self.is_postgres = env.get("PERSISTENCE_MODULE", "").endswith("postgres") or "POSTGRES_DBNAME" in env
        if self.is_postgres:
            self.connect_kwargs = {
                "host": env.get("POSTGRES_HOST", "127.0.0.1"), "port": env.get("POSTGRES_PORT", "5432"),
                "dbname": env["POSTGRES_DBNAME"], "user": env.get("POSTGRES_USER", "postgres"),
                "password": env.get("POSTGRES_PASSWORD") or None,
                "connect_timeout": int(float(env.get("POSTGRES_CONNECT_TIMEOUT", "5"))),
            }
            self.schema = env.get("POSTGRES_SCHEMA") or "public"
            k = self.connect_kwargs
            self.store = f"postgres:{k['host']}:{k['port']}/{k['dbname']}/{self.schema}"
            self.lease_fd = None
            self._slots = _slots_for(self.store, None)
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            self.store = f"sqlite:{(data_dir / 'campus.sqlite3').resolve()}"
            self.schema = ""
            self._slots = _slots_for(self.store, data_dir / "campus.locks")
            with _REGISTRY_GUARD:
                fd = getattr(self._slots, "lease_fd", None)
                if fd is None:
                    fd = self._slots.lease_fd = os.open(data_dir / "campus.leases", os.O_RDWR | os.O_CREAT, 0o600)
            self.lease_fd = fd

    # -- the school's guard ---------------------------------------------------------------------
    @contextmanager
    def school_slot(self, tenant: Any, timeout: float = GUARD_TIMEOUT) -> Iterator[None]:
        """This thread's turn for the school among this process's threads, and, on SQLite, among
        processes too (its byte of the lock file). On PostgreSQL the command path adds the
        advisory lock in its transaction (:meth:`school_key`)."""
        with self._slots.hold(slot_of(tenant), timeout, "the school"):
            yield

    def school_key(self, tenant: Any) -> int:
        return advisory_key(self.store, "school", tenant)

    # -- leases and exclusive sections ----------------------------------------------------------------
    def lease(self, name: str) -> Lease:
        return Lease(self, name)

    @contextmanager
    def exclusive(self, name: str, timeout: float = 120.0) -> Iterator[None]:
        """Run a block in one process at a time (waits up to `timeout` for the others)."""
        if self.is_postgres:
            import psycopg

            with psycopg.connect(**self.connect_kwargs, autocommit=True) as conn:
                conn.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
                conn.execute("SELECT pg_advisory_lock(%s)", (advisory_key(self.store, "exclusive", name),))
                try:
                    yield
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(self.store, "exclusive", name),))
            return
        offset = _lease_offset("exclusive:" + name)
        lock = self._slots.locks[slot_of("exclusive:" + name)]
        with lock:
            assert self.lease_fd is not None
            _lockf_wait(self.lease_fd, offset, timeout, f"start-up section {name!r}")
            try:
                yield
            finally:
                fcntl.lockf(self.lease_fd, fcntl.LOCK_UN, 1, offset)
