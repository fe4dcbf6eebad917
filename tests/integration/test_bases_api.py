"""Bases and the server of a planning over HTTP (issue 3, Campus fiche 6):
creating a base (grid rules, who may), the server in service / stopped, the
base dashboard, the other bases of a planning, and tenant isolation."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from api_helpers import (
    SUPERADMIN_LOGIN,
    assert_problem,
    bearer,
    cheap_argon2,
    history,
    make_client,
    ready_school,
)
from school_helpers import (
    KIND_NAMES,
    a_class_and_student,
    add_record,
    assign,
    campus_school,
    create_base,
    grid_body,
    set_server,
)
from starlette.testclient import TestClient


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


def bases_url(planning: str) -> str:
    return f"/v1/console/plannings/{planning}/bases"


def base_url(planning: str) -> str:
    return f"/v1/console/plannings/{planning}/base"


def planning(client: TestClient, headers: dict, planning_id: str) -> dict:
    r = client.get(f"/v1/console/plannings/{planning_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


# -- creating a base --------------------------------------------------------------
def test_a_created_base_goes_in_service_at_once_in_the_campus_edition(settings, clock):
    with make_client(settings, clock) as client:
        cs = campus_school(client, base=False)
        r = client.post(bases_url(cs.planning01), headers=cs.console, json=grid_body())
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["name"] == "Base 2026"
        assert body["server_state"] == "in_service"
        assert body["grid"] == {"first_monday": "2026-08-31", "last_sunday": "2027-07-04", "weeks": 44,
                                "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 12,
                                "sequence_minutes": 60, "split": 2, "step_minutes": 30, "day_minutes": 720}
        assert body["counts"] == dict.fromkeys(KIND_NAMES, 0)
        assert body["last_entry_at"] is None and body["created_at"]
        assert r.headers.get("etag")

        assert planning(client, cs.console, cs.planning01)["server_state"] == "in_service"
        got = client.get(base_url(cs.planning01), headers=cs.console)
        assert got.status_code == 200 and got.json()["id"] == body["id"]

        events = history(client, cs.console, type="Base.Created,Planning.BaseMounted,Planning.ServerStarted")
        assert [e["type"] for e in events] == ["Base.Created", "Planning.BaseMounted", "Planning.ServerStarted"]
        assert {e["actor"] for e in events} == {cs.school.actor}
        assert len({e["request_id"] for e in events}) == 1, "one request, one command"


def test_creating_a_base_needs_a_superadministrator_in_the_campus_edition(client):
    school = ready_school(client, superadministrator=False)
    p1 = school.planning_ids[0]
    r = client.post(bases_url(p1), headers=school.headers, json=grid_body())
    assert_problem(r, 409, code="superadministrator_required", detail="superadministrator")
    # Nothing half-made: no base, the server still stopped, no Base event.
    assert_problem(client.get(base_url(p1), headers=school.headers), 404, detail="no base")
    assert client.get(bases_url(p1), headers=school.headers).json() == {"current": None, "bases": []}
    assert planning(client, school.headers, p1)["server_state"] == "stopped"
    assert history(client, school.headers, type="Base.Created,Planning.BaseMounted") == []


@pytest.mark.parametrize("overrides,fields,words", [
    ({"first_monday": "2026-09-01"}, {"first_monday"}, ("not a monday",)),
    ({"last_sunday": "2027-07-03"}, {"last_sunday"}, ("not a sunday",)),
    ({"last_sunday": "2027-11-14"}, {"last_sunday"}, ("62 weeks", "63")),  # 63 weeks
    ({"last_sunday": "2026-08-30"}, {"last_sunday"}, ("after first_monday",)),
    ({"working_days": ["mon", "lun"]}, {"working_days"}, ("unknown days", "'lun'")),
    ({"working_days": ["mon", "mon"]}, {"working_days"}, ("twice",)),
    ({"working_days": []}, {"working_days"}, ()),
    ({"sequences_per_day": 25}, {"sequences_per_day"}, ("24 h",)),
    ({"sequences_per_day": 0}, {"sequences_per_day"}, ()),
    ({"sequence_minutes": 0}, {"sequence_minutes"}, ()),
    ({"split": 5}, {"split"}, ("2, 3, 4, 6 or 12",)),
    ({"sequence_minutes": 50, "split": 3}, {"split"}, ("50 min split in 3", "whole number of minutes")),
    ({"name": "   "}, {"name"}, ()),
    ({"colour": "blue"}, {"colour"}, ()),
    ({"first_monday": "31/08/2026"}, {"first_monday"}, ()),
])
def test_grid_refusals_name_the_field_and_the_rule(client, overrides, fields, words):
    cs = campus_school(client, base=False, users=False)
    r = client.post(bases_url(cs.planning01), headers=cs.console, json=grid_body(**overrides))
    assert_problem(r, 422, fields=fields, detail=words)
    assert client.get(bases_url(cs.planning01), headers=cs.console).json()["bases"] == []
    assert planning(client, cs.console, cs.planning01)["server_state"] == "stopped"


def test_missing_grid_fields_are_each_named(client):
    cs = campus_school(client, base=False, users=False)
    r = client.post(bases_url(cs.planning01), headers=cs.console, json={"name": "Base"})
    assert_problem(r, 422, fields={"first_monday", "last_sunday", "working_days", "sequences_per_day",
                                   "sequence_minutes", "split"})


def test_every_broken_grid_rule_is_reported_at_once(client):
    cs = campus_school(client, base=False, users=False)
    r = client.post(bases_url(cs.planning01), headers=cs.console, json=grid_body(
        first_monday="2026-09-02", last_sunday="2028-01-01", working_days=["mon", "mon", "xyz"],
        sequences_per_day=30, sequence_minutes=50, split=3))
    body = assert_problem(r, 422, fields={"first_monday", "last_sunday", "working_days", "sequences_per_day",
                                          "split"})
    assert len(body["errors"]) >= 6  # last_sunday and working_days each break two rules


@pytest.mark.parametrize("weeks", [1, 62])
def test_the_boundaries_of_the_span(client, weeks):
    cs = campus_school(client, base=False, users=False)
    from datetime import date
    sunday = date(2026, 8, 31) + timedelta(weeks=weeks, days=-1)
    r = client.post(bases_url(cs.planning01), headers=cs.console, json=grid_body(last_sunday=sunday.isoformat()))
    assert r.status_code == 201, r.text
    assert r.json()["grid"]["weeks"] == weeks


def test_creating_a_base_while_in_service_is_refused(cs):
    client = cs.client
    r = client.post(bases_url(cs.planning01), headers=cs.console, json=grid_body(name="Base 2027"))
    assert_problem(r, 409, code="server_in_service", detail="stop it")
    listed = client.get(bases_url(cs.planning01), headers=cs.console).json()
    assert [b["name"] for b in listed["bases"]] == ["Base 2026"]


def test_who_may_create_a_base(cs):
    """The hosting manager, and superadministrators and base administrators holding the
    Administration profile on the planning (through their user session); never a user
    with a lesser profile."""
    client = cs.client
    tokens = {login: cs.headers_for(login) for login in (SUPERADMIN_LOGIN, "badmin", "modif", "consult")}

    for login in ("modif", "consult"):
        r = client.post(bases_url(cs.planning01), headers=tokens[login], json=grid_body(name=f"Base {login}"))
        assert_problem(r, 403, code="profile_insufficient")
        r = set_server(client, tokens[login], cs.planning01, "stopped")
        assert_problem(r, 403, code="profile_insufficient")
        assert_problem(client.get(base_url(cs.planning01), headers=tokens[login]), 403, code="profile_insufficient")
    assert_problem(client.post(bases_url(cs.planning01), json=grid_body()), 401)
    assert_problem(client.post(bases_url(cs.planning01), headers=bearer("x" * 43), json=grid_body()), 401)

    created = {}
    for login in ("badmin", SUPERADMIN_LOGIN):
        r = set_server(client, tokens[login], cs.planning01, "stopped")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "stopped"
        r = client.post(bases_url(cs.planning01), headers=tokens[login], json=grid_body(name=f"Base {login}"))
        assert r.status_code == 201, r.text
        assert r.json()["server_state"] == "in_service"
        created[login] = r.json()["id"]

    events = history(client, cs.console, type="Base.Created")
    assert [(e["data"]["name"], e["actor"]) for e in events] == [
        ("Base 2026", cs.school.actor), ("Base badmin", "user:badmin"),
        (f"Base {SUPERADMIN_LOGIN}", f"user:{SUPERADMIN_LOGIN}")]
    listed = client.get(bases_url(cs.planning01), headers=tokens["badmin"]).json()
    assert listed["current"] == created[SUPERADMIN_LOGIN]
    assert len(listed["bases"]) == 3


# -- the server -------------------------------------------------------------------
def test_stopping_and_restarting_the_server_are_events(cs):
    client = cs.client
    r = set_server(client, cs.console, cs.planning01, "stopped")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "stopped" and r.json()["server_state"] == "stopped"
    assert planning(client, cs.console, cs.planning01)["server_state"] == "stopped"
    again = set_server(client, cs.console, cs.planning01, "stopped")
    assert again.status_code == 200 and again.json()["state"] == "stopped"

    r = set_server(client, cs.console, cs.planning01, "in_service")
    assert r.status_code == 200 and r.json()["state"] == "in_service"

    events = history(client, cs.console, aggregate_id=cs.planning01, type="Planning.ServerStarted,Planning.ServerStopped")
    assert [e["type"] for e in events] == ["Planning.ServerStarted", "Planning.ServerStopped",
                                           "Planning.ServerStarted"], "stopping twice is one event"
    assert all(e["actor"] == cs.school.actor for e in events)


def test_an_unknown_server_state_is_refused(cs):
    r = set_server(cs.client, cs.console, cs.planning01, "paused")
    assert_problem(r, 422, fields={"state"})


def test_putting_in_service_needs_a_base(cs):
    r = set_server(cs.client, cs.console, cs.planning02, "in_service")
    assert_problem(r, 409, code="base_required", detail="no base")
    assert planning(cs.client, cs.console, cs.planning02)["server_state"] == "stopped"


def test_putting_in_service_needs_a_superadministrator(cs):
    client = cs.client
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    # The last superadministrator may lose that status only while the controller is stopped.
    assert client.delete("/v1/console/controller/activation", headers=cs.console).status_code == 200
    r = client.patch(f"/v1/console/users/{SUPERADMIN_LOGIN}", headers=cs.console,
                     json={"status": "base_administrator"})
    assert r.status_code == 200, r.text
    r = set_server(client, cs.console, cs.planning01, "in_service")
    assert_problem(r, 409, code="superadministrator_required")
    assert planning(client, cs.console, cs.planning01)["server_state"] == "stopped"


# -- the dashboard ----------------------------------------------------------------
def test_the_base_dashboard_counts_per_kind_and_dates_the_last_entry(cs, clock):
    client = cs.client
    first = client.get(base_url(cs.planning01), headers=cs.console)
    assert first.status_code == 200
    dash = first.json()
    assert dash["name"] == "Base 2026" and dash["id"] == cs.base["id"]
    assert dash["grid"]["weeks"] == 44
    assert set(dash["counts"]) == set(KIND_NAMES) and len(dash["counts"]) == 18
    assert dash["created_at"] == cs.base["created_at"]
    assert dash["last_entry_at"] is None
    assert set(dash["sections"]) == {"resources", "schooling", "school_life"}
    assert dash["sections"]["school_life"] == {"absences": 0, "lateness": 0, "punishments": 0, "sanctions": 0}

    h = cs.headers_for("modif")
    clock.advance(timedelta(hours=2))
    _, student = a_class_and_student(cs, h)
    subject = add_record(client, h, cs.records_url("subjects"), name="Mathématiques")
    for value in (12, 15):
        add_record(client, h, cs.records_url("grades"), student_id=student["id"], subject_id=subject["id"],
                   value=value)
    add_record(client, h, cs.records_url("absences"), student_id=student["id"], start="2026-09-07T08:00:00Z",
               end="2026-09-07T10:00:00Z")

    second = client.get(base_url(cs.planning01), headers=cs.console)
    dash2 = second.json()
    expected = {**dict.fromkeys(KIND_NAMES, 0), "classes": 1, "students": 1, "subjects": 1, "grades": 2,
                "absences": 1}
    assert dash2["counts"] == expected
    assert dash2["sections"]["schooling"]["grades"] == 2 and dash2["sections"]["resources"]["students"] == 1
    assert dash2["last_entry_at"] is not None and dash2["last_entry_at"] > dash2["created_at"]
    assert dash2["created_at"] == dash["created_at"]
    assert second.headers["etag"] != first.headers["etag"]

    clock.advance(timedelta(hours=3))
    add_record(client, h, cs.records_url("rooms"), name="Salle 215")
    dash3 = client.get(base_url(cs.planning01), headers=cs.console).json()
    assert dash3["last_entry_at"] > dash2["last_entry_at"]
    assert dash3["counts"]["rooms"] == 1

    # Base administrators see the same dashboard through their user session.
    as_admin = client.get(base_url(cs.planning01), headers=cs.headers_for("badmin"))
    assert as_admin.status_code == 200 and as_admin.json()["counts"] == dash3["counts"]


def test_a_planning_without_a_base_has_no_dashboard(cs):
    r = cs.client.get(base_url(cs.planning02), headers=cs.console)
    assert_problem(r, 404, detail=("planning02", "no base"))
    assert cs.client.get(bases_url(cs.planning02), headers=cs.console).json() == {"current": None, "bases": []}


# -- other bases ("autres bases") ----------------------------------------------------
def test_mounting_another_base_keeps_every_base(cs):
    client = cs.client
    h = cs.headers_for("modif")
    add_record(client, h, cs.records_url("subjects"), name="Histoire")
    first_id = cs.base["id"]

    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    second = create_base(client, cs.console, cs.planning01, name="Base 2027", first_monday="2027-08-30",
                         last_sunday="2028-07-02")
    assert second["server_state"] == "in_service"
    assert client.get(base_url(cs.planning01), headers=cs.console).json()["name"] == "Base 2027"

    listed = client.get(bases_url(cs.planning01), headers=cs.console).json()
    assert listed["current"] == second["id"]
    assert [(b["id"], b["name"], b["counts"]["subjects"]) for b in listed["bases"]] == [
        (first_id, "Base 2026", 1), (second["id"], "Base 2027", 0)]

    # Mounting is refused while in service, and changes nothing.
    r = client.put(base_url(cs.planning01), headers=cs.console, json={"base_id": first_id})
    assert_problem(r, 409, code="server_in_service")
    assert client.get(base_url(cs.planning01), headers=cs.console).json()["id"] == second["id"]

    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    r = client.put(base_url(cs.planning01), headers=cs.console, json={"base_id": first_id})
    assert r.status_code == 200, r.text
    back = client.get(base_url(cs.planning01), headers=cs.console).json()
    assert back["id"] == first_id and back["name"] == "Base 2026" and back["counts"]["subjects"] == 1
    listed = client.get(bases_url(cs.planning01), headers=cs.console).json()
    assert listed["current"] == first_id
    assert {b["id"] for b in listed["bases"]} == {first_id, second["id"]}

    # Mounting the current one again changes nothing; an unknown id is not found.
    assert client.put(base_url(cs.planning01), headers=cs.console, json={"base_id": first_id}).status_code == 200
    assert_problem(client.put(base_url(cs.planning01), headers=cs.console, json={"base_id": str(uuid.uuid4())}), 404)
    assert_problem(client.put(base_url(cs.planning01), headers=cs.console, json={"base_id": "nope"}), 422,
                   fields={"base_id"})
    mounts = history(client, cs.console, type="Planning.BaseMounted")
    assert [e["data"]["base_id"] for e in mounts] == [first_id, second["id"], first_id]


def test_a_base_of_another_planning_cannot_be_mounted(cs):
    client = cs.client
    other = create_base(client, cs.console, cs.planning02, name="Base du planning 2")
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    r = client.put(base_url(cs.planning01), headers=cs.console, json={"base_id": other["id"]})
    assert_problem(r, 404)
    assert client.get(base_url(cs.planning01), headers=cs.console).json()["id"] == cs.base["id"]


# -- tenant isolation -------------------------------------------------------------
def test_another_schools_tokens_find_nothing(settings, clock):
    with make_client(settings, clock) as client:
        a = campus_school(client, domain="ecole-a", establishment="Lycée Alpha")
        b = campus_school(client, domain="ecole-b", establishment="Collège Bravo")
        b_admin = b.headers_for("badmin")
        before = client.get(base_url(a.planning01), headers=a.console).json()

        for headers in (b.console, b_admin):
            for p in (a.planning01, a.planning02):
                assert_problem(client.get(base_url(p), headers=headers), 404)
                assert_problem(client.get(bases_url(p), headers=headers), 404)
                assert_problem(client.post(bases_url(p), headers=headers, json=grid_body()), 404)
                assert_problem(set_server(client, headers, p, "stopped"), 404)
                assert_problem(client.put(base_url(p), headers=headers, json={"base_id": a.base["id"]}), 404)

        after = client.get(base_url(a.planning01), headers=a.console).json()
        assert after == before and after["server_state"] == "in_service"
        assert planning(client, a.console, a.planning02)["server_state"] == "stopped"
        assert history(client, b.console, type="Base.Created") and all(
            e["aggregate_id"] != a.base["id"] for e in history(client, b.console))


# -- administering through a user session ------------------------------------------
def test_a_base_administrator_with_only_consultation_does_not_administer_the_planning(cs):
    """Issue 3: "the profile on that planning decides: consultation reads, modification
    reads and writes records, administration also administers".

    Found: the CONSOLE_OR_ADMIN routes look only at the user's status
    (campus/api/routing.py, `_authenticate`), never at the profile the session holds:
    the `administer` right of campus/user_sessions.py RIGHTS is never required, so a
    base administrator who only consults planning01 can stop its server.
    """
    client = cs.client
    assign(client, cs.console, cs.planning01, "consultation", ["consult", "badmin"])
    consulting_admin = cs.headers_for("badmin")
    r = set_server(client, consulting_admin, cs.planning01, "stopped")
    assert_problem(r, 403)
    assert planning(client, cs.console, cs.planning01)["server_state"] == "in_service"


def test_a_session_of_planning01_does_not_administer_planning02(cs):
    """A user session is for one planning (Auth.USER refuses another planning's path
    with 403 other_planning); the administration routes should too.

    Found: campus/api/routing.py `_authenticate` (Auth.CONSOLE_OR_ADMIN) never compares
    the session's planning with the path's: badmin, administrator of planning01 with no
    profile at all on planning02, creates a base on planning02 and puts it in service.
    """
    client = cs.client
    admin_of_p1 = cs.headers_for("badmin")
    r = client.post(bases_url(cs.planning02), headers=admin_of_p1, json=grid_body(name="Intruse"))
    assert_problem(r, 403)
    assert client.get(bases_url(cs.planning02), headers=cs.console).json()["bases"] == []
    assert planning(client, cs.console, cs.planning02)["server_state"] == "stopped"


# -- the library's snapshots of long base streams ------------------------------------
def test_a_base_replayed_from_its_events_alone_is_complete(cs):
    """Library snapshots are taken in the background only for long bases (docs/DECISIONS.md); a young
    base has none, and rebuilt from its events alone it is complete."""
    app = cs.client.app.state.campus
    h = cs.headers_for("modif")
    _, student = a_class_and_student(cs, h)
    base_id = uuid.UUID(cs.base["id"])
    assert app.base_snapshots.snapshot_versions(base_id) == []
    fresh = app.repository.get(base_id)
    assert fresh.records["students"][uuid.UUID(student["id"])]["last_name"] == "Bernard"


def test_in_the_hosted_edition_the_manager_puts_a_created_base_in_service(sqlite_only_settings, clock):
    """Campus fiche 6 puts a created base in service at once; the hosted edition leaves it to the manager."""
    from api_helpers import (
        School,
        accept_licence,
        console_login,
        make_client,
        operator_headers,
    )

    with make_client(sqlite_only_settings, clock) as client:
        r = client.post("/v1/operator/accounts", headers=operator_headers(client), json={
            "establishment": "Lycée hébergé", "manager": {"name": "M", "email": "m@example.org"},
            "edition": "hosted"})
        assert r.status_code == 201, r.text
        body = r.json()
        school = School(body["hosting_number"], body["console_password"], body["invoice_number"], "Lycée hébergé")
        headers = console_login(client, school)
        accept_licence(client, headers)
        assert client.get("/v1/console/account", headers=headers).json()["edition"] == "hosted"
        planning = client.get("/v1/console/plannings", headers=headers).json()["plannings"][0]["id"]
        created = client.post(bases_url(planning), headers=headers, json=grid_body())
        assert created.status_code == 201, created.text
        assert created.json()["server_state"] == "stopped"
        refused = set_server(client, headers, planning, "in_service")
        assert_problem(refused, 409, code="superadministrator_required")
