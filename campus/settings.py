"""Configuration, read once at the composition root and passed down.

Nothing else in campus reads ``os.environ``. Tests build a :class:`Settings`
directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_DOMAIN_SUFFIX = "pronote-campus.net"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    # Saves and archives of bases: <snapshots_dir>/<account id>/<backup id>.campus
    snapshots_dir: Path = Path("./snapshots")
    # PostgreSQL: a libpq-style URL, e.g. postgresql://campus@127.0.0.1:5432/campus
    postgres_dsn: str | None = None
    # Extra eventsourcing variables (POSTGRES_* and others) passed to the library as-is.
    library_env: Mapping[str, str] = field(default_factory=dict)
    operator_token: str | None = None
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
    console_session_hours: int = 12
    max_body_bytes: int = 1024 * 1024
    # Uploaded base files (loads) are streamed to <data_dir>/tmp under this cap.
    max_upload_bytes: int = 256 * 1024 * 1024
    history_page_max: int = 500
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        kwargs: dict = {}
        if env.get("CAMPUS_DATA_DIR"):
            kwargs["data_dir"] = Path(env["CAMPUS_DATA_DIR"])
        if env.get("CAMPUS_SNAPSHOTS_DIR"):
            kwargs["snapshots_dir"] = Path(env["CAMPUS_SNAPSHOTS_DIR"])
        if env.get("CAMPUS_POSTGRES_DSN"):
            kwargs["postgres_dsn"] = env["CAMPUS_POSTGRES_DSN"]
        kwargs["library_env"] = {k: v for k, v in env.items() if k.startswith("POSTGRES_")}
        if env.get("CAMPUS_OPERATOR_TOKEN"):
            kwargs["operator_token"] = env["CAMPUS_OPERATOR_TOKEN"]
        if env.get("CAMPUS_DOMAIN_SUFFIX"):
            kwargs["domain_suffix"] = env["CAMPUS_DOMAIN_SUFFIX"]
        if env.get("CAMPUS_LOG_FORMAT"):
            kwargs["log_format"] = env["CAMPUS_LOG_FORMAT"]
        if env.get("CAMPUS_LOG_LEVEL"):
            kwargs["log_level"] = env["CAMPUS_LOG_LEVEL"]
        if env.get("CAMPUS_MAX_BODY_BYTES"):
            kwargs["max_body_bytes"] = int(env["CAMPUS_MAX_BODY_BYTES"])
        if env.get("CAMPUS_MAX_UPLOAD_BYTES"):
            kwargs["max_upload_bytes"] = int(env["CAMPUS_MAX_UPLOAD_BYTES"])
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    @property
    def uses_postgres(self) -> bool:
        return bool(self.postgres_dsn or self.library_env.get("POSTGRES_DBNAME"))

    def persistence_env(self) -> dict[str, str]:
        """The eventsourcing library's environment for our one Application."""
        if not self.uses_postgres:
            return {
                "PERSISTENCE_MODULE": "campus.store:DurableSQLiteFactory",
                "SQLITE_DBNAME": str(self.data_dir / "campus.sqlite3"),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        # Insert through a database function: psycopg's pipeline mode hangs on multi-MB
        # commands (a 62k-record load, an 8 MB annex) and would hold the school's lock forever.
        env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_ENABLE_DB_FUNCTIONS": "y"}
        if self.postgres_dsn:
            env.update(dsn_to_library_env(self.postgres_dsn))
        env.update(self.library_env)
        env.setdefault("POSTGRES_USER", "postgres")
        env.setdefault("POSTGRES_PASSWORD", "")
        env.setdefault("POSTGRES_HOST", "127.0.0.1")
        return env


def dsn_to_library_env(dsn: str) -> dict[str, str]:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("CAMPUS_POSTGRES_DSN must be a postgresql:// URL")
    env = {
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }
    schema = parse_qs(parts.query).get("schema")
    if schema:
        env["POSTGRES_SCHEMA"] = schema[0]
    return env
