"""The school's records over HTTP (issue 3): directory users write them through a
session on a planning; the profile decides; references are checked; ETags guard
changes; every change is an event of the history; concurrent writers lose nothing."""

from __future__ import annotations

import threading
import uuid

import pytest
from api_helpers import (
    SUPERADMIN_LOGIN,
    assert_problem,
    cheap_argon2,
    history,
    make_client,
)
from school_helpers import (
    KIND_NAMES,
    CampusSchool,
    a_class_and_student,
    add_record,
    campus_school,
    create_base,
    set_server,
)
from starlette.testclient import TestClient


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


@pytest.fixture
def modif(cs) -> dict[str, str]:
    return cs.headers_for("modif")


def all_records(client: TestClient, headers: dict, url: str, limit: int = 1000) -> list[dict]:
    records, params = [], {"limit": limit}
    while True:
        r = client.get(url, headers=headers, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        records += page["records"]
        if page["next"] is None:
            return records
        params["after"] = page["next"]


# -- profiles decide -------------------------------------------------------------
@pytest.mark.parametrize("login,profile,writes", [
    (SUPERADMIN_LOGIN, "administration", True),
    ("badmin", "administration", True),
    ("modif", "modification", True),
    ("consult", "consultation", False),
])
def test_the_profile_on_the_planning_decides(cs, login, profile, writes):
    client = cs.client
    writer = cs.headers_for("modif")
    existing = add_record(client, writer, cs.records_url("subjects"), name="Anglais")

    r = cs.login(login)
    assert r.status_code == 201, r.text
    assert r.json()["profile"] == profile
    headers = {"Authorization": f"Bearer {r.json()['token']}"}

    listed = client.get(cs.records_url("subjects"), headers=headers)
    assert listed.status_code == 200 and [s["name"] for s in listed.json()["records"]] == ["Anglais"]
    one = client.get(cs.records_url("subjects", existing["id"]), headers=headers)
    assert one.status_code == 200 and one.json() == existing

    created = client.post(cs.records_url("subjects"), headers=headers, json={"name": f"Physique {login}"})
    changed = client.patch(cs.records_url("subjects", existing["id"]), headers=headers, json={"short_name": "ANG"})
    removed = client.delete(cs.records_url("subjects", existing["id"]), headers=headers)
    if writes:
        assert created.status_code == 201, created.text
        assert changed.status_code == 200 and changed.json()["short_name"] == "ANG"
        assert removed.status_code == 204
    else:
        for r in (created, changed, removed):
            assert_problem(r, 403, code="profile_insufficient", detail=("consultation", "modification"))
        after = client.get(cs.records_url("subjects"), headers=writer).json()["records"]
        assert after == [existing], "a refused write changes nothing"
        assert [e["actor"] for e in history(client, cs.console, type="Base.RecordAdded")] == ["user:modif"]


def test_records_need_a_user_session(cs):
    client = cs.client
    assert_problem(client.get(cs.records_url("teachers")), 401, code="missing_token")
    assert_problem(client.get(cs.records_url("teachers"), headers={"Authorization": "Bearer nope"}), 401,
                   code="invalid_token")
    # The hosting manager's console token is not a directory user's session.
    assert_problem(client.get(cs.records_url("teachers"), headers=cs.console), 401, code="invalid_token")


# -- create, read, change, remove ----------------------------------------------------
def test_create_read_change_remove_a_teacher(cs, modif):
    client = cs.client
    r = client.post(cs.records_url("teachers"), headers=modif,
                    json={"last_name": "Martin", "first_name": "Pierre", "civility": "M.", "email": "pm@example.org"})
    assert r.status_code == 201, r.text
    teacher = r.json()
    assert uuid.UUID(teacher["id"])
    assert teacher == {"id": teacher["id"], "kind": "teachers", "last_name": "Martin", "first_name": "Pierre",
                       "civility": "M.", "email": "pm@example.org"}
    etag = r.headers["etag"]

    got = client.get(cs.records_url("teachers", teacher["id"]), headers=modif)
    assert got.status_code == 200 and got.json() == teacher and got.headers["etag"] == etag

    changed = client.patch(cs.records_url("teachers", teacher["id"]), headers={**modif, "If-Match": etag},
                           json={"first_name": "Paul", "email": None})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**{k: v for k, v in teacher.items() if k != "email"}, "first_name": "Paul"}
    new_etag = changed.headers["etag"]
    assert new_etag != etag

    stale = client.patch(cs.records_url("teachers", teacher["id"]), headers={**modif, "If-Match": etag},
                         json={"first_name": "Jacques"})
    assert_problem(stale, 412)
    assert_problem(client.delete(cs.records_url("teachers", teacher["id"]), headers={**modif, "If-Match": etag}),
                   412)
    got = client.get(cs.records_url("teachers", teacher["id"]), headers=modif)
    assert got.json()["first_name"] == "Paul" and got.headers["etag"] == new_etag

    # Another record's change leaves this record's ETag alone.
    add_record(client, modif, cs.records_url("rooms"), name="Salle 101")
    assert client.get(cs.records_url("teachers", teacher["id"]), headers=modif).headers["etag"] == new_etag

    assert client.delete(cs.records_url("teachers", teacher["id"]), headers={**modif, "If-Match": new_etag}
                         ).status_code == 204
    assert_problem(client.get(cs.records_url("teachers", teacher["id"]), headers=modif), 404)
    assert_problem(client.patch(cs.records_url("teachers", teacher["id"]), headers=modif, json={"first_name": "X"}),
                   404)
    assert_problem(client.delete(cs.records_url("teachers", teacher["id"]), headers=modif), 404)
    assert_problem(client.get(cs.records_url("teachers", "not-an-id"), headers=modif), 404)


def test_refused_bodies_name_the_field(cs, modif):
    client = cs.client
    url = cs.records_url("teachers")
    assert_problem(client.post(url, headers=modif, json={"last_name": "Martin"}), 422, fields={"first_name"})
    assert_problem(client.post(url, headers=modif, json={"last_name": "Martin", "first_name": "P", "age": 40}),
                   422, fields={"age"})
    assert_problem(client.post(url, headers=modif, json=["Martin"]), 422, fields={"body"})
    assert_problem(client.post(url, headers={**modif, "Content-Type": "application/json"}, content=b"{"), 400)
    assert_problem(client.post(cs.records_url("absences"), headers=modif, json={
        "student_id": str(uuid.uuid4()), "start": "2026-09-07T10:00:00Z", "end": "2026-09-07T09:00:00Z"}),
        422, fields={"start"}, detail="before end")
    assert client.get(url, headers=modif).json()["records"] == []


def test_patch_revalidates_the_merged_record(cs, modif):
    client = cs.client
    _, student = a_class_and_student(cs, modif)
    subject = add_record(client, modif, cs.records_url("subjects"), name="Mathématiques")
    r = client.post(cs.records_url("grades"), headers=modif,
                    json={"student_id": student["id"], "subject_id": subject["id"], "value": "15.5", "scale": 20})
    assert r.status_code == 201, r.text
    grade = r.json()
    assert (grade["value"], grade["scale"]) == ("15.5", "20")
    url = cs.records_url("grades", grade["id"])

    lower = client.patch(url, headers={**modif, "If-Match": r.headers["etag"]}, json={"scale": 10})
    assert_problem(lower, 422, fields={"value"}, detail="between 0 and the scale (10)")
    assert_problem(client.patch(url, headers=modif, json={"value": 21}), 422, fields={"value"})
    assert_problem(client.patch(url, headers=modif, json={"student_id": None}), 422, fields={"student_id"})
    assert_problem(client.patch(url, headers=modif, json={"student_id": str(uuid.uuid4())}), 422,
                   fields={"student_id"})
    assert_problem(client.patch(url, headers=modif, json={"mark": 3}), 422, fields={"mark"})
    assert client.get(url, headers=modif).json() == grade, "a refused change changes nothing"

    both = client.patch(url, headers={**modif, "If-Match": r.headers["etag"]}, json={"scale": 10, "value": "7.75"})
    assert both.status_code == 200, both.text
    assert (both.json()["value"], both.json()["scale"]) == ("7.75", "10")
    same = client.patch(url, headers=modif, json={"value": "7.75"})
    assert same.status_code == 200 and same.headers["etag"] == both.headers["etag"], "no change, no new version"


def test_a_referenced_record_cannot_be_removed(cs, modif):
    client = cs.client
    klass, student = a_class_and_student(cs, modif)
    subject = add_record(client, modif, cs.records_url("subjects"), name="SVT")
    grade = add_record(client, modif, cs.records_url("grades"), student_id=student["id"], subject_id=subject["id"],
                       value=11)

    r = client.delete(cs.records_url("classes", klass["id"]), headers=modif)
    assert_problem(r, 409, code="record_in_use", detail="1 students")
    r = client.delete(cs.records_url("students", student["id"]), headers=modif)
    assert_problem(r, 409, code="record_in_use", detail="1 grades")
    assert_problem(client.delete(cs.records_url("subjects", subject["id"]), headers=modif), 409, code="record_in_use")

    assert client.delete(cs.records_url("grades", grade["id"]), headers=modif).status_code == 204
    assert client.delete(cs.records_url("students", student["id"]), headers=modif).status_code == 204
    assert client.delete(cs.records_url("classes", klass["id"]), headers=modif).status_code == 204
    counts = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()["counts"]
    assert counts == {**dict.fromkeys(KIND_NAMES, 0), "subjects": 1}


# -- references -----------------------------------------------------------------------
def test_a_grade_for_an_unknown_student_is_refused(cs, modif):
    client = cs.client
    subject = add_record(client, modif, cs.records_url("subjects"), name="Français")
    nobody = str(uuid.uuid4())
    r = client.post(cs.records_url("grades"), headers=modif,
                    json={"student_id": nobody, "subject_id": subject["id"], "value": 10})
    assert_problem(r, 422, fields={"student_id"}, detail=("student_id", nobody))
    # A subject id given as the student: of the wrong kind, so unknown as a student.
    r = client.post(cs.records_url("grades"), headers=modif,
                    json={"student_id": subject["id"], "subject_id": nobody, "value": 10})
    assert_problem(r, 422, fields={"student_id", "subject_id"})
    assert client.get(cs.records_url("grades"), headers=modif).json()["records"] == []


def test_references_stay_inside_the_base(cs, modif):
    """A class of planning02's base, or of an earlier base of planning01, is unknown here."""
    client = cs.client
    create_base(client, cs.console, cs.planning02, name="Base du planning 2")
    other = cs.headers_for("modif", planning=cs.planning02)
    foreign_class = add_record(client, other, cs.records_url("classes", planning=cs.planning02), name="3e B")

    r = client.post(cs.records_url("students"), headers=modif,
                    json={"last_name": "Petit", "first_name": "Léa", "class_id": foreign_class["id"]})
    assert_problem(r, 422, fields={"class_id"}, detail=foreign_class["id"])

    old_class = add_record(client, modif, cs.records_url("classes"), name="2nde A")
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    create_base(client, cs.console, cs.planning01, name="Base 2027")
    fresh = cs.headers_for("modif")
    r = client.post(cs.records_url("students"), headers=fresh,
                    json={"last_name": "Petit", "first_name": "Léa", "class_id": old_class["id"]})
    assert_problem(r, 422, fields={"class_id"})
    assert_problem(client.get(cs.records_url("classes", old_class["id"]), headers=fresh), 404)


def test_an_unknown_kind_is_not_found_and_the_kinds_are_listed(cs, modif):
    client = cs.client
    for r in (client.get(cs.records_url("notes"), headers=modif),
              client.post(cs.records_url("notes"), headers=modif, json={"value": 12}),
              client.get(cs.records_url("notes", str(uuid.uuid4())), headers=modif)):
        body = assert_problem(r, 404, detail="'notes'")
        for kind in KIND_NAMES:
            assert kind in body["detail"]


def test_a_session_is_for_one_planning(cs, modif):
    client = cs.client
    create_base(client, cs.console, cs.planning02, name="Base du planning 2")
    for r in (client.get(cs.records_url("classes", planning=cs.planning02), headers=modif),
              client.post(cs.records_url("classes", planning=cs.planning02), headers=modif, json={"name": "6e A"})):
        assert_problem(r, 403, code="other_planning", detail="planning01")
    other = cs.headers_for("modif", planning=cs.planning02)
    assert client.get(cs.records_url("classes", planning=cs.planning02), headers=other).status_code == 200
    assert_problem(client.get(cs.records_url("classes"), headers=other), 403, code="other_planning")


# -- listing --------------------------------------------------------------------------
def test_lists_are_paged_in_the_order_of_creation(cs, modif):
    client = cs.client
    names = [f"Salle {n}" for n in range(1, 8)]
    ids = [add_record(client, modif, cs.records_url("rooms"), name=n)["id"] for n in names]

    first = client.get(cs.records_url("rooms"), headers=modif, params={"limit": 3}).json()
    assert [r["name"] for r in first["records"]] == names[:3]
    assert first["next"] == ids[2]
    second = client.get(cs.records_url("rooms"), headers=modif, params={"limit": 3, "after": first["next"]}).json()
    assert [r["id"] for r in second["records"]] == ids[3:6]
    third = client.get(cs.records_url("rooms"), headers=modif, params={"limit": 3, "after": second["next"]}).json()
    assert [r["id"] for r in third["records"]] == ids[6:] and third["next"] is None
    exact = client.get(cs.records_url("rooms"), headers=modif, params={"limit": 7}).json()
    assert len(exact["records"]) == 7 and exact["next"] is None
    assert [r["id"] for r in all_records(client, modif, cs.records_url("rooms"), limit=2)] == ids

    assert_problem(client.get(cs.records_url("rooms"), headers=modif, params={"limit": 0}), 422,
                   fields={"query.limit"})
    assert_problem(client.get(cs.records_url("rooms"), headers=modif, params={"limit": 1001}), 422,
                   fields={"query.limit"})
    assert_problem(client.get(cs.records_url("rooms"), headers=modif, params={"after": "x"}), 422,
                   fields={"query.after"})
    assert_problem(client.get(cs.records_url("rooms"), headers=modif, params={"after": str(uuid.uuid4())}), 422,
                   fields={"after"})


# -- records keep their values ------------------------------------------------------------
def one_of_each_kind(cs: CampusSchool, h: dict) -> dict[str, dict]:
    client, url = cs.client, cs.records_url
    made: dict[str, dict] = {}

    def add(kind: str, **fields) -> dict:
        made[kind] = add_record(client, h, url(kind), **fields)
        return made[kind]

    klass, student = a_class_and_student(cs, h)
    made["classes"], made["students"] = klass, student
    s = {"student_id": student["id"]}
    teacher = add("teachers", last_name="Martin", first_name="Pierre", civility="M.", email="pm@example.org")
    subject = add("subjects", name="Mathématiques")
    group = add("groups", name="Latin", class_id=klass["id"])
    room = add("rooms", name="Salle 215", capacity=32)
    course = add("courses", subject_id=subject["id"], teacher_id=teacher["id"], class_id=klass["id"],
                 group_id=group["id"], room_id=room["id"], weekday="tue", start="08:30", duration_minutes=55)
    add("homework", subject_id=subject["id"], class_id=klass["id"], given_on="2026-09-07", due_on="2026-09-14",
        description="Exercices 1 à 5 p. 12")
    add("grades", **s, subject_id=subject["id"], value="12.125", scale=20, coefficient="0.5", date="2026-09-10",
        comment="Bien")
    add("lesson_logs", course_id=course["id"], date="2026-09-08", content="Fonctions affines")
    add("appraisals", **s, subject_id=subject["id"], period="Trimestre 1", text="Bon trimestre")
    add("evaluations", **s, subject_id=subject["id"], competence="Raisonner", level="exceeded", date="2026-09-11")
    company = add("companies", name="Boulangerie Durand", city="Lyon")
    add("internships", **s, company_id=company["id"], start="2027-01-04", end="2027-01-29")
    add("absences", **s, start="2026-09-07T08:00:00+02:00", end="2026-09-07T12:00:00+02:00", reason="Malade",
        justified=True)
    add("lateness", **s, at="2026-09-08T08:10:00Z", minutes=10)
    add("punishments", **s, on="2026-09-09", nature="Retenue", reason="Bavardages")
    add("sanctions", **s, on="2026-09-10", nature="Avertissement")
    return made


def test_records_of_every_kind_survive_a_restart(settings, clock):
    with make_client(settings, clock) as client:
        cs = campus_school(client)
        h = cs.headers_for("modif")
        made = one_of_each_kind(cs, h)
        assert set(made) == set(KIND_NAMES)
        assert made["absences"]["start"] == "2026-09-07T08:00:00+02:00"
        assert made["grades"]["value"] == "12.125" and made["courses"]["start"] == "08:30:00"
        assert made["evaluations"]["level"] == "exceeded" and made["absences"]["justified"] is True
        before = {k: all_records(client, h, cs.records_url(k)) for k in KIND_NAMES}
        dashboard = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()
    with make_client(settings, clock) as again:
        cs.client = again
        h = cs.headers_for("modif")
        after = {k: all_records(again, h, cs.records_url(k)) for k in KIND_NAMES}
        assert after == before
        for kind, record in made.items():
            assert after[kind] == [record], kind
        # The reread base still takes changes, checked against the same rules.
        grade = made["grades"]
        assert_problem(again.patch(cs.records_url("grades", grade["id"]), headers=h, json={"scale": 10}), 422,
                       fields={"value"})
        r = again.patch(cs.records_url("grades", grade["id"]), headers=h, json={"value": "13.5"})
        assert r.status_code == 200 and r.json()["value"] == "13.5" and r.json()["coefficient"] == "0.5"
        assert_problem(again.delete(cs.records_url("courses", made["courses"]["id"]), headers=h), 409,
                       code="record_in_use")
        console = {"Authorization": cs.console["Authorization"]}
        reread = again.get(f"/v1/console/plannings/{cs.planning01}/base", headers=console).json()
        assert reread["counts"] == dashboard["counts"] == dict.fromkeys(KIND_NAMES, 1)
        assert reread["created_at"] == dashboard["created_at"]
        assert reread["last_entry_at"] > dashboard["last_entry_at"]


# -- every change is an event ------------------------------------------------------------
def test_every_change_is_an_event_of_the_history_by_its_user(cs, modif):
    client = cs.client
    teacher = add_record(client, modif, cs.records_url("teachers"), last_name="Martin", first_name="Pierre")
    admin = cs.headers_for("badmin")
    assert client.patch(cs.records_url("teachers", teacher["id"]), headers=admin,
                        json={"first_name": "Paul"}).status_code == 200
    assert client.delete(cs.records_url("teachers", teacher["id"]), headers=modif).status_code == 204

    events = history(client, cs.console, aggregate_id=cs.base["id"], type="Base.RecordAdded,Base.RecordChanged,"
                                                                          "Base.RecordRemoved")
    assert [(e["type"], e["actor"]) for e in events] == [
        ("Base.RecordAdded", "user:modif"), ("Base.RecordChanged", "user:badmin"),
        ("Base.RecordRemoved", "user:modif")]
    assert all(e["data"]["record_id"] == teacher["id"] and e["data"]["kind"] == "teachers" for e in events)
    assert events[0]["data"]["fields"] == {"last_name": "Martin", "first_name": "Pierre"}
    assert events[1]["data"]["changes"] == {"first_name": "Paul"}
    assert history(client, cs.console, actor="user:modif", type="Base.RecordAdded") == events[:1]


def test_the_history_shows_a_subjects_short_name(cs, modif):
    """A subject's short name ("MATH") is school data, not a secret: the history shows it.

    (It was first called `code`, a name the redaction hides everywhere since
    verification codes are secrets; the field is now `short_name`.)
    """
    client = cs.client
    subject = add_record(client, modif, cs.records_url("subjects"), name="Mathématiques", short_name="MATH")
    assert subject["short_name"] == "MATH"
    [added] = history(client, cs.console, type="Base.RecordAdded")
    assert added["data"]["fields"] == {"name": "Mathématiques", "short_name": "MATH"}


# -- concurrent writers -----------------------------------------------------------------
WRITERS = 2
PER_WRITER = 200


def _write_concurrently(clients: list[TestClient], headers: list[dict], url: str) -> list[list]:
    outcomes: list[list] = [[] for _ in clients]
    start = threading.Barrier(len(clients))

    def writer(n: int) -> None:
        start.wait()
        for i in range(PER_WRITER):
            r = clients[n].post(url, headers=headers[n], json={"name": f"Salle {n}-{i}"})
            outcomes[n].append((r.status_code, r.json().get("id") if r.status_code == 201 else r.text,
                                r.headers.get("retry-after")))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _assert_nothing_lost(client: TestClient, headers: dict, url: str, outcomes: list[list]) -> int:
    created = [o[1] for per in outcomes for o in per if o[0] == 201]
    refused = [o for per in outcomes for o in per if o[0] != 201]
    for status, text, retry_after in refused:
        # Explicit refusals only: a conflict, or the store busy (nothing written, retry).
        assert status in (409, 503), text
        if status == 503:
            assert retry_after == "1"
    stored = all_records(client, headers, url)
    assert len(stored) == len(created), "every 201 is a stored record, every stored record had a 201"
    assert {r["id"] for r in stored} == set(created)
    assert len(set(created)) == len(created)
    assert {r["name"] for r in stored} == {f"Salle {n}-{i}" for n, per in enumerate(outcomes)
                                           for i, o in enumerate(per) if o[0] == 201}
    return len(created)


def test_two_writers_on_one_server_lose_nothing(settings, clock):
    with make_client(settings, clock) as client:
        cs = campus_school(client)
        tokens = [cs.headers_for("modif"), cs.headers_for("badmin")]
        outcomes = _write_concurrently([client, client], tokens, cs.records_url("rooms"))
        assert _assert_nothing_lost(client, tokens[0], cs.records_url("rooms"), outcomes) == WRITERS * PER_WRITER
        counts = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()["counts"]
        assert counts["rooms"] == WRITERS * PER_WRITER
        added = history(client, cs.console, aggregate_id=cs.base["id"], type="Base.RecordAdded")
        assert len(added) == WRITERS * PER_WRITER
        assert {e["actor"] for e in added} == {"user:modif", "user:badmin"}


def test_two_servers_on_one_store_lose_nothing(settings, clock):
    """Two app instances on the same database (two `campus serve` processes): the
    store's version check and the re-runs turn every race into a success or a 409."""
    with make_client(settings, clock) as one, make_client(settings, clock) as two:
        cs = campus_school(one)
        tokens = [cs.headers_for("modif"), cs.headers_for("badmin")]
        outcomes = _write_concurrently([one, two], tokens, cs.records_url("rooms"))
        created = _assert_nothing_lost(one, tokens[0], cs.records_url("rooms"), outcomes)
        assert created > 0
        # The second server sees the same base.
        assert len(all_records(two, tokens[1], cs.records_url("rooms"))) == created
        added = history(one, cs.console, aggregate_id=cs.base["id"], type="Base.RecordAdded")
        assert len(added) == created
