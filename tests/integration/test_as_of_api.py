"""Reading the past over HTTP: the base, its records, the planning and a diff, as of an instant."""

from __future__ import annotations

from datetime import datetime, timedelta

from api_helpers import assert_problem, ready_school
from school_helpers import CampusSchool, add_record, set_server
from starlette.testclient import TestClient

from campus.infra.clock import ManualClock


def at(clock: ManualClock) -> str:
    """The instant now, then a second passes (so the next change is after it)."""
    instant = clock.now().isoformat()
    clock.advance(timedelta(seconds=1))
    return instant


def names(client: TestClient, cs: CampusSchool, admin: dict, as_of: str, limit: int = 1) -> list[str]:
    """Every class name as of the instant, read page by page."""
    found, after = [], None
    while True:
        params = {"as_of": as_of, "limit": limit, **({"after": after} if after else {})}
        r = client.get(cs.records_url("classes"), headers=admin, params=params)
        assert r.status_code == 200, r.text
        found += [record["name"] for record in r.json()["records"]]
        after = r.json()["next"]
        if after is None:
            return found


def test_the_base_its_records_and_the_planning_as_of_an_instant(client: TestClient, cs: CampusSchool,
                                                                  clock: ManualClock) -> None:
    admin = cs.headers_for("badmin")
    before_any = at(clock)
    a = add_record(client, admin, cs.records_url("classes"), name="6A")
    add_record(client, admin, cs.records_url("classes"), name="6B")
    after_two = at(clock)
    assert client.patch(cs.records_url("classes", a["id"]), headers=admin, json={"name": "6A bis"}).status_code == 200
    add_record(client, admin, cs.records_url("classes"), name="6C")
    after_rename = at(clock)
    assert client.delete(cs.records_url("classes", a["id"]), headers=admin).status_code == 204
    renamed = client.patch(f"/v1/console/plannings/{cs.planning01}", headers=cs.console, json={"name": "Lycée 2027"})
    assert renamed.status_code == 200, renamed.text
    now = at(clock)

    assert names(client, cs, admin, before_any) == []
    assert names(client, cs, admin, after_two) == ["6A", "6B"]
    assert names(client, cs, admin, after_rename) == ["6A bis", "6B", "6C"]
    assert names(client, cs, admin, now, limit=100) == ["6B", "6C"]

    base = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console,
                      params={"as_of": after_rename})
    assert base.status_code == 200, base.text
    assert base.json()["counts"]["classes"] == 3 and base.json()["name"] == cs.base["name"]
    assert base.json()["grid"] == cs.base["grid"]
    assert isinstance(base.json()["position"], int)
    later = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console, params={"as_of": now})
    assert later.json()["counts"]["classes"] == 2 and later.json()["position"] > base.json()["position"]

    old = client.get(f"/v1/console/plannings/{cs.planning01}", headers=cs.console, params={"as_of": after_rename})
    assert old.status_code == 200, old.text
    assert old.json()["name"] == "planning01" and isinstance(old.json()["position"], int)
    assert client.get(f"/v1/console/plannings/{cs.planning01}", headers=cs.console).json()["name"] == "Lycée 2027"

    diff = client.get(f"/v1/console/plannings/{cs.planning01}/base/diff", headers=cs.console,
                      params={"from": after_two, "to": now})
    assert diff.status_code == 200, diff.text
    d = diff.json()
    assert [r["name"] for r in d["added"]] == ["6C"]
    assert [r["name"] for r in d["removed"]] == ["6A"]  # as it was at `from`
    assert d["changed"] == []  # 6A changed, but it is gone at `to`: a removal, not a change


def test_bad_instants_and_other_schools_are_refused(client: TestClient, cs: CampusSchool, clock: ManualClock) -> None:
    url = f"/v1/console/plannings/{cs.planning01}/base"
    future = (clock.now() + timedelta(days=1)).isoformat()
    assert_problem(client.get(url, headers=cs.console, params={"as_of": future}), 422, fields={"as_of"})
    assert_problem(client.get(url, headers=cs.console, params={"as_of": "yesterday"}), 422, fields={"query.as_of"})
    assert_problem(client.get(url, headers=cs.console, params={"as_of": "2026-09-01T08:00:00"}), 422,
                   fields={"query.as_of"})  # no offset: ambiguous
    long_ago = (clock.now() - timedelta(days=400)).isoformat()
    assert_problem(client.get(url, headers=cs.console, params={"as_of": long_ago}), 404)
    admin = cs.headers_for("badmin")
    assert_problem(client.get(cs.records_url("classes"), headers=admin,
                              params={"as_of": clock.now().isoformat(), "after": "not-an-id"}), 422,
                   fields={"query.after"})
    later = add_record(client, admin, cs.records_url("classes"), name="later")
    before_it = (datetime.fromisoformat(cs.base["created_at"]) + timedelta(microseconds=1)).isoformat()
    assert_problem(client.get(cs.records_url("classes"), headers=admin,
                              params={"as_of": before_it, "after": later["id"]}), 422, fields={"after"})

    other = ready_school(client, domain="autre", establishment="Collège voisin")
    now = clock.now().isoformat()
    for path in (url, f"/v1/console/plannings/{cs.planning01}"):
        r = client.get(path, headers=other.headers, params={"as_of": now})
        assert_problem(r, 404)
        assert cs.base["name"] not in r.text


def test_a_restore_then_its_undo_over_http(client: TestClient, cs: CampusSchool, clock: ManualClock) -> None:
    admin = cs.headers_for("badmin")
    add_record(client, admin, cs.records_url("classes"), name="6A")
    one_class = at(clock)
    add_record(client, admin, cs.records_url("classes"), name="6B")
    at(clock)
    restores = f"/v1/console/plannings/{cs.planning01}/restores"
    assert_problem(client.post(restores, headers=cs.console, json={"as_of": one_class, "confirm": True}), 409)
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    assert_problem(client.post(restores, headers=cs.console, json={"as_of": one_class}), 422, fields={"confirm"})

    r = client.post(restores, headers=cs.console, json={"as_of": one_class, "confirm": True, "reason": "mistake"})
    assert r.status_code == 201, r.text
    assert r.json()["base"]["counts"]["classes"] == 1
    undo = r.json()["undo"]["as_of"]
    assert datetime.fromisoformat(undo) < datetime.fromisoformat(r.json()["restored_at"])
    clock.advance(timedelta(seconds=1))
    r = client.post(restores, headers=cs.console, json={"as_of": undo, "confirm": True, "reason": "undo"})
    assert r.status_code == 201, r.text
    assert r.json()["base"]["counts"]["classes"] == 2
    # Read back as of now, through the timeline: the undo is what is current.
    now = at(clock)
    base = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console, params={"as_of": now})
    assert base.json()["counts"]["classes"] == 2


def test_the_publication_as_of_an_instant(client: TestClient, cs: CampusSchool, clock: ManualClock) -> None:
    url = f"/v1/console/plannings/{cs.planning01}/publication"
    before = client.get(url, headers=cs.console)
    assert before.status_code == 200, before.text
    was = at(clock)
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    if before.json()["state"] == "published":
        assert client.put(url, headers=cs.console, json={"state": "stopped"}).status_code == 200
    changed = client.patch(f"{url}/settings", headers=cs.console, json={"common_page": {"title": "Nouveau titre"}})
    assert changed.status_code == 200, changed.text
    then = client.get(url, headers=cs.console, params={"as_of": was})
    assert then.status_code == 200, then.text
    assert then.json()["common_page"] == before.json()["common_page"]
    assert then.json()["state"] == before.json()["state"] and isinstance(then.json()["position"], int)
    assert client.get(url, headers=cs.console).json()["common_page"]["title"] == "Nouveau titre"


def test_recovering_chosen_kinds_from_an_instant_or_a_save_keeps_the_rest(client: TestClient, cs: CampusSchool,
                                                                           clock: ManualClock) -> None:
    admin = cs.headers_for("badmin")
    klass = add_record(client, admin, cs.records_url("classes"), name="6A")
    add_record(client, admin, cs.records_url("students"), last_name="Martin", first_name="Léa", class_id=klass["id"])
    one_student = at(clock)
    backups = f"/v1/console/plannings/{cs.planning01}/backups"
    save = client.post(backups, headers=cs.console, json={"kind": "save"})
    assert save.status_code == 201, save.text
    at(clock)
    add_record(client, admin, cs.records_url("students"), last_name="Durand", first_name="Tom", class_id=klass["id"])
    add_record(client, admin, cs.records_url("classes"), name="6B")
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    restores = f"/v1/console/plannings/{cs.planning01}/restores"

    assert_problem(client.post(restores, headers=cs.console,
                               json={"as_of": one_student, "confirm": True, "kinds": ["students", "pupils"]}),
                   422, fields={"kinds[1]"})
    r = client.post(restores, headers=cs.console,
                    json={"as_of": one_student, "confirm": True, "kinds": ["students"], "reason": "wrong import"})
    assert r.status_code == 201, r.text
    assert r.json()["kinds"] == ["students"]
    counts = r.json()["base"]["counts"]
    assert (counts["students"], counts["classes"]) == (1, 2)  # students as they were, classes as they are
    [event] = [e for e in client.get("/v1/console/history", headers=cs.console,
                                     params={"type": "Base.Restored"}).json()["events"]]
    assert event["reason"] == "wrong import [only: students]"

    # The same from the save's file: bring back the classes it held, keep today's students.
    at(clock)
    r = client.post(restores, headers=cs.console,
                    json={"backup_id": save.json()["id"], "confirm": True, "kinds": ["classes"]})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "file"
    counts = r.json()["base"]["counts"]
    assert (counts["students"], counts["classes"]) == (1, 1)
