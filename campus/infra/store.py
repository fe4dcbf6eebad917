"""The stores: the library's SQLite and PostgreSQL factories, with what campus needs made explicit.

SQLite: every connection runs ``PRAGMA synchronous=FULL`` (WAL mode is the
library's own choice), so an acknowledged write survives a power cut whatever
the SQLite build's default.

PostgreSQL: every connection has a ``statement_timeout`` (no query runs
unbounded), and a command's connection can be *bound* to the running context
(:func:`bind_connection`): while a command holds its school's advisory lock in a
transaction, every read the library makes for it runs on that same connection
and transaction, so a command needs one connection, not two, and sees exactly
what its school's lock protects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import psycopg
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)
from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool, SQLiteFactory
from eventsourcing.utils import Environment, EnvType


class DurableSQLiteConnectionPool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection._sqlite_conn.execute("PRAGMA synchronous=FULL")  # noqa: SLF001
        return connection


class DurableSQLiteFactory(SQLiteFactory):
    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        pool = self.datastore.pool
        self.datastore.pool = DurableSQLiteConnectionPool(db_name=pool.db_name, lock_timeout=pool.lock_timeout)
        pool.close()


# -- PostgreSQL ------------------------------------------------------------------------------------
_bound: ContextVar[Any] = ContextVar("campus_bound_connection", default=None)


class Bound:
    def __init__(self, token: Token) -> None:
        self._token = token

    def reset(self) -> None:
        _bound.reset(self._token)


def bind_connection(connection: Any) -> Bound:
    """Route this context's store reads to `connection` (None: back to the pool) until reset."""
    return Bound(_bound.set(connection))


_ERRORS: tuple[tuple[type[Exception], type[PersistenceError]], ...] = (
    (psycopg.InterfaceError, InterfaceError), (psycopg.OperationalError, OperationalError),
    (psycopg.DataError, DataError), (psycopg.IntegrityError, IntegrityError),
    (psycopg.InternalError, InternalError), (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.NotSupportedError, NotSupportedError), (psycopg.DatabaseError, DatabaseError),
    (psycopg.Error, PersistenceError),
)


class CampusPostgresDatastore(PostgresDatastore):
    @contextmanager
    def get_connection(self) -> Iterator[Any]:
        bound = _bound.get()
        if bound is None:
            with super().get_connection() as conn:
                yield conn
            return
        try:
            yield bound
        except psycopg.Error as exc:  # the library's own mapping, as for a pooled connection
            for raw, ours in _ERRORS:
                if isinstance(exc, raw):
                    raise ours(str(exc)) from exc
            raise  # pragma: no cover


LOCK_TIMEOUT_MS = 30_000  # PostgreSQL: the longest wait for a lock (a school's guard among them)


class CampusPostgresFactory(PostgresFactory):
    """The library's factory, with a statement timeout on every connection (``POSTGRES_STATEMENT_TIMEOUT``,
    seconds) and connections bindable to a command."""

    POSTGRES_STATEMENT_TIMEOUT = "POSTGRES_STATEMENT_TIMEOUT"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        seconds = float(self.env.get(self.POSTGRES_STATEMENT_TIMEOUT) or "60")
        # lock_timeout: how long a command waits for its school's advisory lock (campus/commands.py) or any
        # other lock; both bounds on every connection, so no statement needs a SET of its own.
        self.datastore.pool.kwargs["options"] = (f"-c statement_timeout={int(seconds * 1000)}"
                                                 f" -c lock_timeout={LOCK_TIMEOUT_MS}")
        self.datastore.__class__ = CampusPostgresDatastore
