"""Our own tables beside the event store's (read models, keys): one way to name and query them.

They live in the same database as the events — the SQLite file, or the
PostgreSQL schema the application was given — so a view's rows can be written
in the same transaction as its tracking position.
"""

from __future__ import annotations

from typing import Any


class StoreTables:
    """SQL plumbing shared by the history view, the timeline and the mail keys."""

    def __init__(self, app: Any) -> None:
        self.datastore = app.recorder.datastore
        self.is_postgres = "Postgres" in type(self.datastore).__name__
        self._schema = getattr(self.datastore, "schema", "") if self.is_postgres else ""
        # Column types that differ between the two stores.
        self.big = "BIGINT" if self.is_postgres else "INTEGER"
        self.blob = "BYTEA" if self.is_postgres else "BLOB"

    def table(self, name: str) -> str:
        """The table's name as SQL: qualified by the PostgreSQL schema when there is one."""
        return f'"{self._schema}".{name}' if self._schema else name

    def _sql(self, statement: str) -> str:
        """Statements are written with `?` placeholders; PostgreSQL's driver wants `%s`."""
        return statement.replace("?", "%s") if self.is_postgres else statement
