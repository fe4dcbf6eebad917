"""A write the store refuses leaves no trace (issue 9, first "Done when"), against a real ``campus serve``.

The fault is real: on PostgreSQL a trigger on the events table raises for every
insert while a switch row exists; on SQLite the data dir is a small tmpfs that a
filler file fills to the last pages. Each time: the refused write answers 503
with ``Retry-After`` and says nothing was changed; nothing of it is listed, counted
or in the history; the next write succeeds once the fault is gone; and after a
restart every acknowledged record is read back and the base's versions are
contiguous in the store.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pg_support import PG_DSN
from server_tools import tmpfs

pytestmark = pytest.mark.e2e

GRID = {"name": "Année 2026-2027", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
        "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 8, "sequence_minutes": 60,
        "split": 2}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def school_with_a_teacher(guide: Any) -> tuple[str, str, str]:
    """A ready school, a base in service on planning01, a teacher with the modification profile, logged in.
    Returns (planning id, base id, the teacher's session token)."""
    guide.walk()
    http, expect, console = guide.http, guide.expect, guide.console()
    p1 = guide.planning(1)
    base = expect(http.post(f"/v1/console/plannings/{p1['id']}/bases", headers=console, json=GRID), 201)
    teacher = guide.create_user("cdurand", "DURAND", "Claire")
    guide.assign(p1["id"], "modification", [*guide.planning(1)["profiles"]["modification"], "cdurand"])
    session = expect(http.post("/v1/sessions", json={
        "domain": "monecole", "login": "cdurand", "password": teacher["password"], "planning": p1["id"],
        "mode": "teacher"}), 201)
    return p1["id"], base["id"], session["token"]


def listed_teachers(http: httpx.Client, token: str, planning_id: str) -> dict[str, str]:
    """Every teacher of the base, id -> last name, following the pages."""
    found: dict[str, str] = {}
    after = None
    while True:
        params = {"limit": 1000, **({"after": after} if after else {})}
        page = http.get(f"/v1/plannings/{planning_id}/records/teachers", headers=bearer(token), params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        found.update({r["id"]: r["last_name"] for r in body["records"]})
        after = body["next"]
        if after is None:
            return found


def add_teacher(http: httpx.Client, token: str, planning_id: str, name: str) -> httpx.Response:
    return http.post(f"/v1/plannings/{planning_id}/records/teachers", headers=bearer(token),
                     json={"last_name": name, "first_name": "Test"})


def assert_refused_without_trace(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert "nothing was changed" in problem["detail"]
    assert "Traceback" not in response.text


def teacher_count(guide: Any, planning_id: str) -> int:
    base = guide.expect(guide.http.get(f"/v1/console/plannings/{planning_id}/base", headers=guide.console()), 200)
    return base["counts"]["teachers"]


def history_names(guide: Any, base_id: str) -> list[str]:
    return [e["data"]["fields"]["last_name"] for e in guide.history(base_id=base_id)
            if e["type"] == "Base.RecordAdded" and e["data"].get("kind") == "teachers"]


# -- PostgreSQL: a failing trigger ------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_insert_refused_by_postgresql_leaves_no_trace(make_server, guide_for, pg_schema: str) -> None:
    server = make_server("postgres")
    guide = guide_for(server)
    planning_id, base_id, token = school_with_a_teacher(guide)
    http = guide.http
    acknowledged = {}
    for name in ("AVANT-1", "AVANT-2"):
        acknowledged[guide.expect(add_teacher(http, token, planning_id, name), 201)["id"]] = name

    # A trigger that refuses every insert into the events table while the switch holds a row
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{pg_schema}".fault_switch (on_ boolean)')
        conn.execute(f'''CREATE FUNCTION "{pg_schema}".refuse_events() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM "{pg_schema}".fault_switch) THEN
                RAISE EXCEPTION 'injected fault: inserts refused';
              END IF;
              RETURN NEW;
            END $$''')
        conn.execute(f'CREATE TRIGGER refuse_events BEFORE INSERT ON "{pg_schema}".campus_events'
                     f' FOR EACH ROW EXECUTE FUNCTION "{pg_schema}".refuse_events()')
        conn.execute(f'INSERT INTO "{pg_schema}".fault_switch VALUES (true)')

    # When the teacher adds a record (twice: the second would have been stored as N+2 before the fix)
    for _ in range(2):
        assert_refused_without_trace(add_teacher(http, token, planning_id, "REFUSE"))
    # Then nothing of it is listed, counted or in the history
    assert listed_teachers(http, token, planning_id) == acknowledged
    assert teacher_count(guide, planning_id) == 2
    assert "REFUSE" not in history_names(guide, base_id)

    # When the fault is gone, the next write succeeds
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{pg_schema}".fault_switch')
    for name in ("APRES-1", "APRES-2"):
        acknowledged[guide.expect(add_teacher(http, token, planning_id, name), 201)["id"]] = name
    assert listed_teachers(http, token, planning_id) == acknowledged

    # And after a restart every acknowledged record is read back, the base's versions contiguous
    server.restart()
    assert listed_teachers(http, token, planning_id) == acknowledged
    assert sorted(history_names(guide, base_id)) == sorted(acknowledged.values())
    with psycopg.connect(PG_DSN) as conn:
        versions = [r[0] for r in conn.execute(
            f'SELECT originator_version FROM "{pg_schema}".campus_events WHERE originator_id = %s'
            " ORDER BY originator_version", (uuid.UUID(base_id),))]
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) == 1 + len(acknowledged)  # created, then one event per acknowledged record


# -- SQLite: a full filesystem ----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for the test (the server's data dir), unmounted afterwards."""
    with tmpfs(tmp_path / "small-disk", size="24m") as mount_point:
        yield mount_point


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of `directory` but `leave` bytes."""
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    filler = directory / "filler"
    with open(filler, "wb") as out:
        remaining = max(0, free - leave)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            written = out.write(chunk[: min(len(chunk), remaining)])
            remaining -= written
    return filler


def test_an_insert_on_a_full_disk_leaves_no_trace(make_server, guide_for, small_disk: Path) -> None:
    server = make_server("sqlite", data_dir=small_disk / "data")
    try:
        guide = guide_for(server)
        planning_id, base_id, token = school_with_a_teacher(guide)
        http = guide.http
        acknowledged: dict[str, str] = {}
        acknowledged[guide.expect(add_teacher(http, token, planning_id, "AVANT-0"), 201)["id"]] = "AVANT-0"

        # When the disk is full but a few pages
        filler = fill(small_disk, leave=96 * 1024)
        refused = None
        for i in range(1, 400):
            answer = add_teacher(http, token, planning_id, f"PLEIN-{i}")
            if answer.status_code == 201:
                acknowledged[answer.json()["id"]] = f"PLEIN-{i}"
                continue
            refused = answer
            break
        # Then a write is refused with 503, and says the store is full
        assert refused is not None, "the disk never filled up"
        assert_refused_without_trace(refused)
        assert refused.json()["code"] == "store_full"
        # And a second try is refused the same way (no version skipped in memory)
        assert_refused_without_trace(add_teacher(http, token, planning_id, "PLEIN-ENCORE"))
        # And what is listed is exactly what was acknowledged
        assert listed_teachers(http, token, planning_id) == acknowledged

        # When space is freed, the next write succeeds
        filler.unlink()
        acknowledged[guide.expect(add_teacher(http, token, planning_id, "APRES"), 201)["id"]] = "APRES"
        assert listed_teachers(http, token, planning_id) == acknowledged

        # And after a restart every acknowledged record is read back, the versions contiguous
        server.restart()
        assert listed_teachers(http, token, planning_id) == acknowledged
        assert teacher_count(guide, planning_id) == len(acknowledged)
        assert sorted(history_names(guide, base_id)) == sorted(acknowledged.values())
        server.stop()
        with sqlite3.connect(small_disk / "data" / "campus.sqlite3") as conn:
            versions = [r[0] for r in conn.execute(
                "SELECT originator_version FROM stored_events WHERE originator_id = ? ORDER BY originator_version",
                (uuid.UUID(base_id).hex,))]
        assert versions == list(range(1, len(acknowledged) + 2))
    finally:
        server.stop()
