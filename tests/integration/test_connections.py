"""Live connections and licence seats (issue 5, hosting guide fiche 11 "Suivi des connexions"), over HTTP.

The school of :func:`school_helpers.campus_school` holds, on planning01, the
administrators ``direction`` and ``badmin``, ``modif`` (modification) and
``consult`` (consultation); the tests add teachers ``prof1``… in modification.
Its licence has 6 seats in modification.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from api_helpers import (
    SUPERADMIN_LOGIN,
    assert_problem,
    bearer,
    cheap_argon2,
    create_user,
    history,
    login_with_certificate,
    make_client,
)
from school_helpers import (
    CampusSchool,
    a_class_and_student,
    assign,
    campus_school,
    set_server,
)
from starlette.testclient import TestClient

from campus.infra.clock import ManualClock
from campus.infra.settings import Settings

TEACHERS = ["prof1", "prof2", "prof3", "prof4", "prof5"]


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


@pytest.fixture
def both_stores_client(settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    with make_client(settings, clock) as c:
        yield c


def with_teachers(cs: CampusSchool) -> CampusSchool:
    for login in TEACHERS:
        cs.passwords[login] = create_user(cs.client, cs.school, login, last_name=login.upper())["password"]
    assign(cs.client, cs.console, cs.planning01, "modification", ["modif", *TEACHERS])
    return cs


@pytest.fixture
def school(both_stores_client: TestClient) -> CampusSchool:
    return with_teachers(campus_school(both_stores_client))


@pytest.fixture
def teachers(cs: CampusSchool) -> CampusSchool:
    return with_teachers(cs)


def login(cs: CampusSchool, who: str, **extra: Any):
    return cs.login(who, **{k: v for k, v in extra.items() if v is not None})


def token_of(cs: CampusSchool, who: str, **extra: Any) -> dict:
    r = login(cs, who, **extra)
    assert r.status_code == 201, r.text
    return r.json()


def connections(cs: CampusSchool, planning: str | None = None, headers: dict | None = None) -> dict:
    r = cs.client.get(f"/v1/console/plannings/{planning or cs.planning01}/connections", headers=headers or cs.console)
    assert r.status_code == 200, r.text
    return r.json()


def disconnect(cs: CampusSchool, connection_id: str, planning: str | None = None, headers: dict | None = None):
    return cs.client.delete(f"/v1/console/plannings/{planning or cs.planning01}/connections/{connection_id}",
                            headers=headers or cs.console)


# -- the story of the issue -----------------------------------------------------------------------
def test_a_seventh_modifying_login_is_refused_consultation_works_and_disconnecting_frees_a_seat(school):
    cs = school
    opened = {who: token_of(cs, who) for who in (SUPERADMIN_LOGIN, "badmin", "modif", "prof1", "prof2", "prof3")}
    assert {o["access"] for o in opened.values()} == {"modification"}
    listing = connections(cs)
    assert listing["seats"] == {"total": 6, "used": 6, "reserved_for_administrators": 0, "used_by_administrators": 2,
                                "free": 0, "free_for_administrators": 0}
    assert listing["counts"]["access"] == {"modification": 6, "consultation": 0}

    refused = assert_problem(login(cs, "prof4"), 409, code="no_free_seat",
                             detail=("all 6 modification seats", "consultation"))
    assert "token" not in refused
    assert_problem(login(cs, "prof4", access="modification"), 409, code="no_free_seat")
    reader = token_of(cs, "prof4", access="consultation")
    assert reader["access"] == "consultation"
    assert token_of(cs, "consult")["access"] == "consultation"
    listing = connections(cs)
    assert listing["counts"]["access"] == {"modification": 6, "consultation": 2}
    assert listing["seats"]["used"] == 6

    # Disconnecting prof1 frees a seat at once; prof1's token stops working.
    r = disconnect(cs, opened["prof1"]["connection_id"])
    assert r.status_code == 204, r.text
    assert_problem(cs.client.get("/v1/me", headers=bearer(opened["prof1"]["token"])), 401, code="disconnected")
    assert connections(cs)["seats"]["free"] == 1
    assert token_of(cs, "prof4")["access"] == "modification"
    assert_problem(login(cs, "prof5"), 409, code="no_free_seat")

    [event] = history(cs.client, cs.console, type="UserSession.Disconnected")
    assert event["actor"] == cs.school.actor and event["aggregate_id"] == opened["prof1"]["connection_id"]
    assert opened["prof1"]["token"] not in str(history(cs.client, cs.console))


def test_a_connection_shows_station_application_state_access_mode_user_base_and_since(cs, clock):
    before = clock.now()
    token_of(cs, "modif", station="Poste 1", application="client", mode="teacher")
    token_of(cs, "consult", application="web", mode="school_life")
    listing = connections(cs)
    assert listing["planning"] == {"id": cs.planning01, "name": "planning01"}
    first, second = listing["connections"]
    assert first["station"] == "Poste 1" and first["application"] == "client"
    assert first["state"] == "connected" and first["access"] == "modification" and first["mode"] == "teacher"
    assert first["user"] == {"login": "modif", "last_name": "Modif", "first_name": "Jean"}
    assert first["base"] == {"id": cs.base["id"], "name": "Base 2026"}
    assert datetime.fromisoformat(first["since"]) > before
    assert datetime.fromisoformat(first["expires_at"]) == datetime.fromisoformat(first["since"]) + timedelta(hours=10)
    # Without a station name, the station is the client's address.
    assert second["station"] == "testclient" == second["client_address"]
    assert second["application"] == "web" and second["access"] == "consultation"
    assert listing["counts"]["modes"] == {"administrative": 0, "teacher": 1, "school_life": 1}
    assert "token" not in str(listing)

    # A stopped server keeps its sessions (they resume): they show as such.
    assert set_server(cs.client, cs.console, cs.planning01, "stopped").status_code == 200
    assert {c["state"] for c in connections(cs)["connections"]} == {"server_stopped"}
    # planning02 has none of them.
    assert connections(cs, cs.planning02)["connections"] == []


@pytest.mark.parametrize("body,field", [
    ({"station": ""}, "station"), ({"station": "x" * 65}, "station"), ({"station": "Poste\n1"}, "station"),
    ({"application": "desktop"}, "application"), ({"access": "write"}, "access"), ({"station": 12}, "station"),
])
def test_bad_connection_fields_are_refused(cs, body, field):
    assert_problem(login(cs, "modif", **body), 422, fields={field})


def test_access_follows_the_profile_and_consultation_only_reads(cs):
    assert token_of(cs, "consult")["access"] == "consultation"
    assert_problem(login(cs, "consult", access="modification"), 403, code="profile_insufficient",
                   detail="consultation")
    reader = bearer(token_of(cs, "modif", access="consultation")["token"])
    writer = bearer(token_of(cs, "modif")["token"])
    a_class_and_student(cs, writer)
    assert cs.client.get(cs.records_url("classes"), headers=reader).status_code == 200
    r = cs.client.post(cs.records_url("classes"), headers=reader, json={"name": "2nde B"})
    assert_problem(r, 403, code="consultation_access", detail="consultation")
    me = cs.client.get("/v1/me", headers=reader).json()
    assert me["access"] == "consultation"


# -- what holds a seat ----------------------------------------------------------------------------
def test_logout_expiry_and_revocation_free_their_seats(teachers, clock):
    cs = teachers
    tokens = {who: token_of(cs, who) for who in ("modif", *TEACHERS)}
    assert_problem(login(cs, SUPERADMIN_LOGIN), 409, code="no_free_seat")
    assert cs.client.delete("/v1/sessions/current", headers=bearer(tokens["prof1"]["token"])).status_code == 204
    assert connections(cs)["seats"]["used"] == 5
    # The manager gives prof2 a new password: prof2's session ends, and so does its seat.
    assert cs.client.post("/v1/console/users/prof2/password", headers=cs.console).status_code == 200
    assert connections(cs)["seats"]["used"] == 4
    assert [c["user"]["login"] for c in connections(cs)["connections"]] == ["modif", "prof3", "prof4", "prof5"]
    clock.advance(timedelta(hours=10, seconds=1))
    assert connections(cs)["connections"] == [] and connections(cs)["seats"]["used"] == 0
    assert_problem(disconnect(cs, tokens["prof3"]["connection_id"]), 404)


def test_sessions_on_a_base_no_longer_mounted_hold_no_seat(cs):
    token_of(cs, "modif")
    assert connections(cs)["seats"]["used"] == 1
    assert set_server(cs.client, cs.console, cs.planning01, "stopped").status_code == 200
    r = cs.client.post(f"/v1/console/plannings/{cs.planning01}/bases", headers=cs.console,
                       json={"name": "Base 2027", "first_monday": "2027-08-30", "last_sunday": "2028-07-02",
                             "working_days": ["mon", "tue"], "sequences_per_day": 8, "sequence_minutes": 60,
                             "split": 1})
    assert r.status_code == 201, r.text
    assert connections(cs)["seats"]["used"] == 0


def test_the_same_user_at_the_same_station_holds_one_seat(cs):
    for _ in range(3):
        token_of(cs, "modif", station="Poste 1")
    listing = connections(cs)
    assert len(listing["connections"]) == 3 and listing["seats"]["used"] == 1
    token_of(cs, "modif", station="Poste 2")
    assert connections(cs)["seats"]["used"] == 2


def test_connections_opened_yesterday_are_still_listed_and_end_normally(cs, clock):
    clock.set(datetime(2026, 9, 1, 23, 0, tzinfo=timezone.utc))
    late = token_of(cs, "modif")
    clock.set(datetime(2026, 9, 2, 1, 0, tzinfo=timezone.utc))
    token_of(cs, "badmin")
    r = login_with_certificate(cs.client, cs.school)  # the manager's console session of 08:00 has expired
    assert r.status_code == 201, r.text
    cs.school.token = r.json()["token"]
    assert {c["user"]["login"] for c in connections(cs)["connections"]} == {"modif", "badmin"}
    assert cs.client.delete("/v1/sessions/current", headers=bearer(late["token"])).status_code == 204
    assert [c["user"]["login"] for c in connections(cs)["connections"]] == ["badmin"]


# -- seats reserved for administrators ----------------------------------------------------------------
def test_seats_reserved_for_administrators(teachers):
    cs = teachers
    r = cs.client.put("/v1/console/licence/seats", headers=cs.console, json={"reserved_for_administrators": 1})
    assert r.status_code == 200, r.text
    assert r.json() == {"total": 6, "used": 0, "reserved_for_administrators": 1, "used_by_administrators": 0,
                        "free": 5, "free_for_administrators": 6}
    for who in ("modif", "prof1", "prof2", "prof3", "prof4"):
        token_of(cs, who)
    assert_problem(login(cs, "prof5"), 409, code="no_free_seat", detail="reserved for administrators")
    assert token_of(cs, SUPERADMIN_LOGIN)["access"] == "modification"
    assert_problem(login(cs, "badmin"), 409, code="no_free_seat", detail="all 6")
    seats = cs.client.get("/v1/console/licence/seats", headers=cs.console).json()
    assert seats["used"] == 6 and seats["used_by_administrators"] == 1
    [event] = history(cs.client, cs.console, type="HostingAccount.AdministratorSeatsReserved")
    assert event["data"] == {"seats": 1} and event["actor"] == cs.school.actor


@pytest.mark.parametrize("body,field", [
    ({"reserved_for_administrators": 7}, "reserved_for_administrators"),
    ({"reserved_for_administrators": -1}, "reserved_for_administrators"),
    ({"reserved_for_administrators": "1"}, "reserved_for_administrators"),
    ({}, "reserved_for_administrators"),
    ({"reserved_for_administrators": 1, "extra": 1}, "extra"),
])
def test_bad_reservations_are_refused(cs, body, field):
    assert_problem(cs.client.put("/v1/console/licence/seats", headers=cs.console, json=body), 422, fields={field})


# -- who may see and disconnect --------------------------------------------------------------------
def test_an_administrator_of_the_planning_lists_and_disconnects_others_may_not(cs):
    admin = bearer(token_of(cs, SUPERADMIN_LOGIN)["token"])
    victim = token_of(cs, "modif")
    plain = bearer(token_of(cs, "consult")["token"])
    assert len(connections(cs, headers=admin)["connections"]) == 3
    assert_problem(cs.client.get(f"/v1/console/plannings/{cs.planning01}/connections", headers=plain), 403,
                   code="profile_insufficient")
    assert_problem(disconnect(cs, victim["connection_id"], headers=plain), 403)
    assert_problem(cs.client.get(f"/v1/console/plannings/{cs.planning02}/connections", headers=admin), 403,
                   code="other_planning")
    assert disconnect(cs, victim["connection_id"], headers=admin).status_code == 204
    [event] = history(cs.client, cs.console, type="UserSession.Disconnected")
    assert event["actor"] == f"user:{SUPERADMIN_LOGIN}"


def test_disconnecting_what_is_not_an_open_connection_here_is_not_found(cs):
    victim = token_of(cs, "modif")
    assert_problem(disconnect(cs, "not-a-uuid"), 404)
    assert_problem(disconnect(cs, "00000000-0000-0000-0000-000000000000"), 404)
    assert_problem(disconnect(cs, victim["connection_id"], planning=cs.planning02), 404)
    assert disconnect(cs, victim["connection_id"]).status_code == 204
    assert_problem(disconnect(cs, victim["connection_id"]), 404, detail="no open connection")


def test_another_school_sees_and_ends_nothing(client, cs):
    victim = token_of(cs, "modif")
    other = campus_school(client, domain="autreecole", establishment="Collège Voltaire", users=False, base=False)
    assert_problem(other.client.get(f"/v1/console/plannings/{cs.planning01}/connections", headers=other.console), 404)
    assert_problem(disconnect(cs, victim["connection_id"], planning=other.planning01, headers=other.console), 404)
    assert_problem(disconnect(cs, victim["connection_id"], headers=other.console), 404)
    assert connections(other, other.planning01, headers=other.console)["connections"] == []
    assert cs.client.get("/v1/me", headers=bearer(victim["token"])).status_code == 200


# -- concurrency and durability ----------------------------------------------------------------------
def test_two_logins_racing_for_the_last_seat_get_one_seat(school):
    cs = school
    for who in (SUPERADMIN_LOGIN, "badmin", "modif", "prof1", "prof2"):
        token_of(cs, who)
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def race(who: str) -> None:
        barrier.wait()
        results[who] = login(cs, who).status_code

    threads = [threading.Thread(target=race, args=(who,)) for who in ("prof3", "prof4")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [201, 409]
    assert connections(cs)["seats"]["used"] == 6


def test_connections_survive_a_restart(settings, clock):
    with make_client(settings, clock) as client:
        cs = campus_school(client)
        kept = token_of(cs, "modif", station="Poste 3")
        before = connections(cs)
    with make_client(settings, clock) as client:
        cs.client = client
        assert connections(cs) == before
        assert disconnect(cs, kept["connection_id"]).status_code == 204
        assert_problem(client.get("/v1/me", headers=bearer(kept["token"])), 401)
