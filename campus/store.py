"""The embedded store: the library's SQLite factory, with durability made explicit.

Every connection runs ``PRAGMA synchronous=FULL`` (WAL mode is the library's
own choice), so an acknowledged write survives a power cut whatever the
SQLite build's default.
"""

from __future__ import annotations

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
