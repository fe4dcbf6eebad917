"""A real ``campus serve`` restarted on a store holding a library snapshot of a base (issue 11, cold start).

A teacher fills a base over HTTP; the server stops; the base's snapshot is taken (in-process, on the
same SQLite file or PostgreSQL schema, as the lease holder's background thread would once the base has
grown enough); the server starts again and reads the base through the snapshot: dashboard, records
and their ETags are those answered before. Changes after the restart land on it, and a second restart
(snapshot + the events after it) answers them too.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest
from pg_support import PG_DSN

from campus.application import CampusApplication
from campus.infra.settings import Settings

pytestmark = pytest.mark.e2e

GRID = {"name": "Année 2026-2027", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
        "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 8, "sequence_minutes": 60,
        "split": 2}
KINDS = ("teachers", "subjects", "classes", "students", "grades", "absences", "evaluations", "lateness")
TEACHER = "cdurand"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def what_is_read(http: httpx.Client, console: dict, token: str, planning_id: str) -> dict[str, Any]:
    """The dashboard, every record of each kind and each record's ETag, as the server answers them."""
    read: dict[str, Any] = {"dashboard": http.get(f"/v1/console/plannings/{planning_id}/base", headers=console).json()}
    for kind in KINDS:
        page = http.get(f"/v1/plannings/{planning_id}/records/{kind}", headers=bearer(token),
                        params={"limit": 1000}).json()
        read[kind] = page["records"]
        for record in page["records"]:
            one = http.get(f"/v1/plannings/{planning_id}/records/{kind}/{record['id']}", headers=bearer(token))
            assert one.status_code == 200, one.text
            read[f"etag {record['id']}"] = one.headers["etag"]
    return read


def snapshot_in_process(server: Any, base_id: UUID) -> int | None:
    """Open the stopped server's store in this process and take the base's snapshot there."""
    schema = server.postgres_schema
    dsn = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={schema}" if schema else None
    app = CampusApplication(Settings(data_dir=server.data_dir, snapshots_dir=server.workdir / "snapshots",
                                     postgres_dsn=dsn))
    try:
        version = app.base_snapshots.take(base_id)
        assert app.repository.usable_snapshot(base_id).originator_version == version
        return version
    finally:
        app.close()


def test_a_restarted_server_reads_a_base_through_its_snapshot(make_server, guide_for, store: str) -> None:
    server = make_server(store)
    guide = guide_for(server).walk()
    http, expect, console = guide.http, guide.expect, guide.console()
    p1 = guide.planning(1)["id"]
    created = expect(http.post(f"/v1/console/plannings/{p1}/bases", headers=console, json=GRID), 201)
    teacher = guide.create_user(TEACHER, "DURAND", "Claire")
    guide.assign(p1, "modification", [*guide.planning(1)["profiles"]["modification"], TEACHER])
    token = expect(http.post("/v1/sessions", json={"domain": "monecole", "login": TEACHER,
                                                   "password": teacher["password"], "planning": p1,
                                                   "mode": "teacher"}), 201)["token"]

    def add(kind: str, **fields: Any) -> dict:
        return expect(http.post(f"/v1/plannings/{p1}/records/{kind}", headers=bearer(token), json=fields), 201)

    maths = add("subjects", name="Mathématiques", short_name="MATHS")
    add("teachers", last_name="LEROY", first_name="Anne", civility="Mme")
    klass = add("classes", name="6A", level="6e")
    students = [add("students", last_name=name, first_name="Léa", class_id=klass["id"], birth_date="2014-05-06")
                for name in ("BERNARD", "PETIT", "MOREAU")]
    grades = [add("grades", student_id=s["id"], subject_id=maths["id"], value=f"1{i}.25", scale="20",
                  coefficient="1.5", date="2026-10-05", comment="Contrôle") for i, s in enumerate(students)]
    add("absences", student_id=students[0]["id"], start="2026-09-07T08:00:00+02:00", end="2026-09-07T10:00:00+02:00",
        reason="Rendez-vous médical", justified=True)
    add("evaluations", student_id=students[1]["id"], subject_id=maths["id"], competence="C1", level="in_progress")
    add("lateness", student_id=students[2]["id"], at="2026-09-08T08:05:00-04:00", minutes=5)
    expect(http.patch(f"/v1/plannings/{p1}/records/grades/{grades[0]['id']}", headers=bearer(token),
                      json={"value": "17", "comment": None}), 200)
    expect(http.delete(f"/v1/plannings/{p1}/records/grades/{grades[2]['id']}", headers=bearer(token)), 204)
    before = what_is_read(http, console, token, p1)

    server.stop(close_clients=False)
    snapshotted = snapshot_in_process(server, UUID(created["id"]))
    assert snapshotted == 1 + 1 + 1 + 1 + 3 + 3 + 1 + 1 + 1 + 2  # created, 11 added, changed, removed
    server.start()
    assert what_is_read(http, console, token, p1) == before
    assert before["dashboard"]["id"] == created["id"]

    # Changes after the restart land on the base read through the snapshot, and survive another restart.
    add("grades", student_id=students[1]["id"], subject_id=maths["id"], value="9", scale="10")
    expect(http.patch(f"/v1/plannings/{p1}/records/students/{students[0]['id']}", headers=bearer(token),
                      json={"birth_date": None}), 200)
    after = what_is_read(http, console, token, p1)
    assert after != before
    server.restart()
    assert what_is_read(http, console, token, p1) == after
    assert "snapshot_unreadable" not in server.logs()
