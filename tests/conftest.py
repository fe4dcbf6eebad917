"""Shared fixtures: stores (SQLite always, PostgreSQL when reachable), apps, clients.

PostgreSQL tests run against the server named by CAMPUS_TEST_POSTGRES_DSN
(default postgresql://postgres@127.0.0.1:5432/test), each in a schema of its
own that is dropped afterwards. Without a reachable server they skip, unless
CAMPUS_REQUIRE_POSTGRES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from campus.clock import ManualClock
from campus.settings import Settings

PG_DSN = os.environ.get("CAMPUS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CAMPUS_REQUIRE_POSTGRES") == "1"
OPERATOR_TOKEN = "operator-test-token-0123456789"


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_DSN}: {exc}"
    return None


_PG_PROBLEM: str | None | bool = False


def postgres_or_skip() -> None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _postgres_problem()
    if _PG_PROBLEM:
        if REQUIRE_PG:
            pytest.fail(f"CAMPUS_REQUIRE_POSTGRES=1 but {_PG_PROBLEM}")
        pytest.skip(f"{_PG_PROBLEM} (set CAMPUS_REQUIRE_POSTGRES=1 to make this a failure)")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped after the test."""
    postgres_or_skip()
    import psycopg

    schema = f"campus_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def sqlite_settings(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", snapshots_dir=tmp_path / "snapshots",
                    operator_token=OPERATOR_TOKEN, **kw)


def postgres_settings(tmp_path: Path, schema: str, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", snapshots_dir=tmp_path / "snapshots",
                    operator_token=OPERATOR_TOKEN, postgres_dsn=f"{PG_DSN}?schema={schema}", **kw)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each store: the test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    schema = request.getfixturevalue("pg_schema")
    return postgres_settings(tmp_path, schema)


@pytest.fixture
def sqlite_only_settings(tmp_path: Path) -> Settings:
    return sqlite_settings(tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
