"""The test PostgreSQL server: reachable or not, throw-away schemas (used by conftest.py and by the test
modules that need a schema for longer than one test)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

PG_DSN = os.environ.get("CAMPUS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CAMPUS_REQUIRE_POSTGRES") == "1"

_PROBLEM: str | None | bool = False


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_DSN}: {exc}"
    return None


def postgres_or_skip() -> None:
    """Skip the test without a reachable server, unless CAMPUS_REQUIRE_POSTGRES=1 (then it fails)."""
    global _PROBLEM
    if _PROBLEM is False:
        _PROBLEM = _postgres_problem()
    if _PROBLEM:
        if REQUIRE_PG:
            pytest.fail(f"CAMPUS_REQUIRE_POSTGRES=1 but {_PROBLEM}")
        pytest.skip(f"{_PROBLEM} (set CAMPUS_REQUIRE_POSTGRES=1 to make this a failure)")


def new_schema() -> str:
    return f"campus_test_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    """Drop a test schema. A server stopped a moment ago may still have a backend finishing its last
    statement: if the drop deadlocks with it, PostgreSQL aborts one of the two; try again."""
    import psycopg

    for attempt in range(5):
        try:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == 4:
                raise
            time.sleep(0.5)
