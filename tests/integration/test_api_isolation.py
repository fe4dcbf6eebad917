"""Tenants are isolated: nothing of one school is visible or changeable with another
school's credentials, and another school's objects answer 404 (not 403), exactly
like objects that do not exist. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from api_helpers import (
    School,
    assert_problem,
    cheap_argon2,
    create_user,
    history,
    make_client,
    ready_school,
)
from starlette.testclient import TestClient


@dataclass
class Two:
    client: TestClient
    a: School
    b: School


def _school(client: TestClient, domain: str, establishment: str) -> School:
    school = ready_school(client, domain=domain, establishment=establishment)
    p1 = school.planning_ids[0]
    r = client.put(f"/v1/console/plannings/{p1}/profiles/administration", headers=school.headers,
                   json={"logins": ["direction"]})
    assert r.status_code == 200, r.text
    r = client.post("/v1/console/assignment-templates", headers=school.headers,
                    json={"name": f"modele-{domain}", "planning_id": p1})
    assert r.status_code == 201, r.text
    r = client.patch(f"/v1/console/plannings/{p1}", headers=school.headers, json={"domain": f"{domain}-edt"})
    assert r.status_code == 200, r.text
    return school


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


@pytest.fixture
def two(settings, clock) -> Iterator[Two]:
    with make_client(settings, clock) as client:
        a = _school(client, "ecole-a", "Lycée Alpha")
        create_user(client, a, "prof1", last_name="Alpha", email="prof1@alpha.example.org")
        create_user(client, a, "only-a", status="base_administrator")
        b = _school(client, "ecole-b", "Collège Bravo")
        yield Two(client, a, b)


def _account_id(client: TestClient, school: School) -> str:
    opened = history(client, school.headers, type="HostingAccount.Opened")
    assert len(opened) == 1
    return opened[0]["aggregate_id"]


def test_another_schools_plannings_are_not_found(two: Two):
    client, a, b = two.client, two.a, two.b
    never = str(uuid.uuid4())
    absent = assert_problem(client.get(f"/v1/console/plannings/{never}", headers=b.headers), 404)
    before = {pid: client.get(f"/v1/console/plannings/{pid}", headers=a.headers).json() for pid in a.planning_ids}

    for pid in a.planning_ids:
        r = client.get(f"/v1/console/plannings/{pid}", headers=b.headers)
        assert assert_problem(r, 404)["detail"] == absent["detail"]
        assert "etag" not in r.headers
        assert_problem(client.patch(f"/v1/console/plannings/{pid}", headers=b.headers,
                                    json={"name": "pris", "time_zone": "Asia/Tokyo"}), 404)
        assert_problem(client.patch(f"/v1/console/plannings/{pid}", headers={**b.headers, "If-Match": "*"},
                                    json={"net_licence": False}), 404)
        for profile in ("administration", "modification", "consultation"):
            assert_problem(client.put(f"/v1/console/plannings/{pid}/profiles/{profile}", headers=b.headers,
                                      json={"logins": ["direction"]}), 404)
        # B applies its own template to A's planning; A's template by name is unknown to B too.
        assert_problem(client.post(f"/v1/console/plannings/{pid}/assignment-template", headers=b.headers,
                                   json={"name": "modele-ecole-b"}), 404)
        assert_problem(client.post(f"/v1/console/plannings/{pid}/assignment-template", headers=b.headers,
                                   json={"name": "modele-ecole-a"}), 404)
        # B cannot save a template from A's planning.
        assert_problem(client.post("/v1/console/assignment-templates", headers=b.headers,
                                   json={"name": "vol", "planning_id": pid}), 404)

    # Nothing of A changed; B's lists hold only B's.
    after = {pid: client.get(f"/v1/console/plannings/{pid}", headers=a.headers).json() for pid in a.planning_ids}
    assert after == before
    b_plannings = client.get("/v1/console/plannings", headers=b.headers).json()["plannings"]
    assert {p["id"] for p in b_plannings} == set(b.planning_ids)
    assert not set(a.planning_ids) & set(b.planning_ids)
    templates = client.get("/v1/console/assignment-templates", headers=b.headers).json()["templates"]
    assert [t["name"] for t in templates] == ["modele-ecole-b"]
    # And the other way round.
    for pid in b.planning_ids:
        assert_problem(client.get(f"/v1/console/plannings/{pid}", headers=a.headers), 404)


def test_another_schools_users_are_not_found_and_logins_are_per_school(two: Two):
    client, a, b = two.client, two.a, two.b
    r = client.get("/v1/console/users/only-a", headers=b.headers)
    assert_problem(r, 404, detail="only-a")
    assert "etag" not in r.headers
    assert_problem(client.patch("/v1/console/users/only-a", headers=b.headers, json={"status": "user"}), 404)
    assert [u["login"] for u in client.get("/v1/console/users", headers=b.headers).json()["users"]] == ["direction"]
    # A's login cannot be put in B's profiles either: to B it does not exist.
    r = client.put(f"/v1/console/plannings/{b.planning_ids[0]}/profiles/administration", headers=b.headers,
                   json={"logins": ["only-a"]})
    assert_problem(r, 422, fields={"logins[0]"}, detail="only-a")

    # The same login in B is a different user.
    a_prof1 = client.get("/v1/console/users/prof1", headers=a.headers).json()
    r = client.post("/v1/console/users", headers=b.headers,
                    json={"login": "prof1", "last_name": "Bravo", "first_name": "Marc"})
    assert r.status_code == 201, r.text
    assert r.json()["last_name"] == "Bravo" and r.json()["version"] == 1
    r = client.patch("/v1/console/users/prof1", headers=b.headers, json={"status": "base_administrator"})
    assert r.status_code == 200
    assert client.get("/v1/console/users/prof1", headers=a.headers).json() == a_prof1
    assert client.get("/v1/console/users/only-a", headers=a.headers).json()["status"] == "base_administrator"
    # The same superadministrator login exists in both schools, each its own.
    assert client.get("/v1/console/users/direction", headers=a.headers).status_code == 200
    assert client.get("/v1/console/users/direction", headers=b.headers).status_code == 200


def test_history_never_shows_another_schools_events(two: Two):
    client, a, b = two.client, two.a, two.b
    a_events, b_events = history(client, a.headers), history(client, b.headers)
    a_account, b_account = _account_id(client, a), _account_id(client, b)
    a_ids, b_ids = {e["aggregate_id"] for e in a_events}, {e["aggregate_id"] for e in b_events}
    assert a_ids and b_ids and not a_ids & b_ids
    assert not {e["position"] for e in a_events} & {e["position"] for e in b_events}
    assert {e["actor"] for e in b_events} == {"operator", b.actor}

    text = json.dumps(b_events)
    for marker in (a.hosting_number, a.establishment, a_account, "ecole-a", "prof1", "only-a", *a.planning_ids):
        assert marker not in text, marker
    for event in b_events:
        account_id = event["data"].get("account_id")
        assert account_id in (None, b_account), event

    # Filters cannot reach across either.
    for pid in a.planning_ids:
        assert history(client, b.headers, aggregate_id=pid) == []
    assert history(client, b.headers, aggregate_id=a_account) == []
    assert history(client, b.headers, actor=a.actor) == []
    opened = history(client, b.headers, type="HostingAccount.Opened")
    assert [e["data"]["hosting_number"] for e in opened] == [b.hosting_number]
    assert [e["position"] for e in history(client, b.headers, after=0)] == [e["position"] for e in b_events]
    # Positions are global: B's cursor after A's last event still shows only B's.
    assert history(client, b.headers, after=max(e["position"] for e in a_events)) == [
        e for e in b_events if e["position"] > max(e["position"] for e in a_events)]


def test_another_schools_domain_is_refused_without_revealing_anything(two: Two):
    client, a, b = two.client, two.a, two.b
    a_account = _account_id(client, a)
    b_controller = client.get("/v1/console/controller", headers=b.headers).json()
    b_count = len(history(client, b.headers))
    secrets_of_a = (a.hosting_number, a.establishment, a_account, *a.planning_ids, "Alpha")

    for name in ("ecole-a", "ECOLE-A", "ecole-a.pronote-campus.net", "ecole-a-edt"):
        r = client.put("/v1/console/controller/domain", headers=b.headers, json={"name": name})
        assert_problem(r, 409, detail="already in use")
        for marker in secrets_of_a:
            assert marker not in r.text
    r = client.patch(f"/v1/console/plannings/{b.planning_ids[1]}", headers=b.headers, json={"domain": "ecole-a-edt"})
    assert_problem(r, 409, detail="ecole-a-edt.pronote-campus.net")
    for marker in secrets_of_a:
        assert marker not in r.text

    # Nothing changed, nothing was recorded, A still holds its names.
    assert client.get("/v1/console/controller", headers=b.headers).json() == b_controller
    assert len(history(client, b.headers)) == b_count
    assert client.get("/v1/console/controller", headers=a.headers).json()["domain"] == "ecole-a.pronote-campus.net"
    assert client.get(f"/v1/console/plannings/{a.planning_ids[0]}", headers=a.headers).json()["domain"] == (
        "ecole-a-edt.pronote-campus.net")
