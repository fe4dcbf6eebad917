"""A school's base over HTTP against a real ``campus serve`` (issue 3, first "Done when").

Given a ready school (the Campus guide's walk: controller active, pmartin
superadministrator), the manager creates a base on planning01 (in service at
once in the Campus edition), gives a teacher the modification profile; the
teacher logs in and adds teachers, subjects, classes, students, grades and
absences; the dashboard counts them. The base is exported and the file loaded
into planning02 (stopped, no base yet), which then holds the same counts and
the same records, ids included. After a restart everything is as left:
dashboards, records, history, sessions.

Once on SQLite and once on PostgreSQL (own schema), like the walkthrough.
While the export/load routes are not built yet (absent from ``/openapi.json``
and unrouted: a 404 "no route for …") that part is skipped and the rest (base,
records, dashboard, restart) runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

EXPORT_PATH = "/v1/console/plannings/{planning_id}/base/export"
LOAD_PATH = "/v1/console/plannings/{planning_id}/bases/load"
KIND_NAMES = (
    "teachers", "subjects", "classes", "groups", "students", "rooms", "courses", "homework", "grades",
    "lesson_logs", "appraisals", "evaluations", "internships", "companies", "absences", "lateness",
    "punishments", "sanctions",
)
GRID = {
    "name": "Année 2026-2027",
    # A 44-week school year: Monday 31 August 2026 to Sunday 4 July 2027.
    "first_monday": "2026-08-31",
    "last_sunday": "2027-07-04",
    "working_days": ["mon", "tue", "wed", "thu", "fri"],
    "sequences_per_day": 8,
    "sequence_minutes": 60,
    "split": 2,
}
TEACHER = "cdurand"  # a plain user, given the modification profile on planning01


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def all_records(http: httpx.Client, token: str, planning_id: str, kind: str, *, limit: int = 4) -> list[dict]:
    """Every record of a kind, following the pages (small pages, to walk the paging too)."""
    records: list[dict] = []
    after = None
    for _ in range(10_000):
        params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
        response = http.get(f"/v1/plannings/{planning_id}/records/{kind}", headers=bearer(token), params=params)
        assert response.status_code == 200, (kind, response.status_code, response.text)
        page = response.json()
        records += page["records"]
        after = page["next"]
        if after is None:
            return records
    raise AssertionError(f"paging {kind} did not end")


def route_built(http: httpx.Client, documented: dict, template: str, planning_id: str) -> bool:
    """The route is in /openapi.json, or the server routes its path (a 405 to another method, not "no route")."""
    if template in documented:
        return True
    answer = http.request("DELETE", template.format(planning_id=planning_id))
    return not (answer.status_code == 404 and "no route for" in answer.text)


def records_by_kind(http: httpx.Client, token: str, planning_id: str) -> dict[str, list[dict]]:
    return {kind: all_records(http, token, planning_id, kind) for kind in KIND_NAMES}


def test_school_base_records_export_load_restart(make_server, guide_for, store: str) -> None:
    # Given a ready school: controller active, pmartin superadministrator (the guide's fiches 1-8)
    server = make_server(store)
    guide = guide_for(server).walk()
    http, expect, console = guide.http, guide.expect, guide.console()
    p1, p2 = guide.planning(1), guide.planning(2)
    assert (p1["server_state"], p2["server_state"]) == ("stopped", "stopped")
    assert http.get(f"/v1/console/plannings/{p2['id']}/base", headers=console).status_code == 404

    # ---- The manager creates a base on planning01 --------------------------------------------------------------
    created = expect(http.post(f"/v1/console/plannings/{p1['id']}/bases", headers=console, json=GRID), 201)
    # Then, in the Campus edition, it is in service at once, empty, with the grid asked for
    assert created["server_state"] == "in_service"
    assert guide.planning(1)["server_state"] == "in_service"
    assert created["name"] == GRID["name"]
    assert created["planning_id"] == p1["id"]
    assert set(created["counts"]) == set(KIND_NAMES) and not any(created["counts"].values())
    assert created["last_entry_at"] is None
    assert created["grid"]["first_monday"] == GRID["first_monday"]
    assert created["grid"]["last_sunday"] == GRID["last_sunday"]

    # ---- The manager gives a teacher the modification profile on planning01 -------------------------------------
    teacher = guide.create_user(TEACHER, "DURAND", "Claire")
    modifiers = guide.planning(1)["profiles"]["modification"]
    assert guide.assign(p1["id"], "modification", [*modifiers, TEACHER])["profiles"]["modification"] == [
        *modifiers, TEACHER]

    # ---- The teacher logs in to planning01 in teacher mode -------------------------------------------------------
    session = expect(http.post("/v1/sessions", json={
        "domain": "monecole", "login": TEACHER, "password": teacher["password"], "planning": p1["id"],
        "mode": "teacher"}), 201)
    assert (session["planning"]["id"], session["mode"], session["profile"]) == (p1["id"], "teacher", "modification")
    token = session["token"]

    # ---- ... and adds teachers, subjects, classes, students, grades and absences ---------------------------------
    added: dict[str, list[dict]] = {kind: [] for kind in KIND_NAMES}

    def add(kind: str, **fields: Any) -> dict:
        record = expect(http.post(f"/v1/plannings/{p1['id']}/records/{kind}", headers=bearer(token), json=fields),
                        201)
        assert record["kind"] == kind and record["id"]
        added[kind].append(record)
        return record

    for last, first in (("LEROY", "Anne"), ("GARNIER", "Paul"), ("ROUX", "Inès")):
        add("teachers", last_name=last, first_name=first)
    maths = add("subjects", name="Mathématiques", short_name="MATHS")
    french = add("subjects", name="Français", short_name="FR")
    add("subjects", name="Histoire-géographie")
    classes = [add("classes", name=name, level="6e") for name in ("6A", "6B")]
    students = [
        add("students", last_name=last, first_name=first, class_id=classes[i % 2]["id"])
        for i, (last, first) in enumerate((("BERNARD", "Léa"), ("PETIT", "Hugo"), ("MOREAU", "Chloé"),
                                           ("FOURNIER", "Jules"), ("GIRARD", "Emma"), ("LAMBERT", "Noé")))
    ]
    for i, student in enumerate(students):
        add("grades", student_id=student["id"], subject_id=maths["id"], value=str(8 + i * 2), scale="20")
        add("grades", student_id=student["id"], subject_id=french["id"], value=f"{12 + i}.5", scale="20",
            coefficient="2", date="2026-10-05", comment="Contrôle")
    add("absences", student_id=students[0]["id"], start="2026-09-07T08:00:00+02:00", end="2026-09-07T10:00:00+02:00")
    add("absences", student_id=students[3]["id"], start="2026-09-08T13:30:00+02:00", end="2026-09-08T17:00:00+02:00",
        reason="Rendez-vous médical", justified=True)
    # A grade for an unknown student is refused and counts nowhere
    unknown = http.post(f"/v1/plannings/{p1['id']}/records/grades", headers=bearer(token), json={
        "student_id": "00000000-0000-4000-8000-000000000000", "subject_id": maths["id"], "value": "10", "scale": "20"})
    assert unknown.status_code == 422, unknown.text
    assert [e["field"] for e in unknown.json()["errors"]] == ["student_id"]

    expected_counts = {kind: len(records) for kind, records in added.items()}
    assert expected_counts == {**dict.fromkeys(KIND_NAMES, 0), "teachers": 3, "subjects": 3, "classes": 2,
                               "students": 6, "grades": 12, "absences": 2}

    # ---- The dashboard shows the counts ----------------------------------------------------------------------------
    dashboard1 = expect(http.get(f"/v1/console/plannings/{p1['id']}/base", headers=console), 200)
    assert dashboard1["id"] == created["id"]
    assert dashboard1["counts"] == expected_counts
    assert dashboard1["server_state"] == "in_service"
    assert dashboard1["created_at"] == created["created_at"]
    assert dashboard1["last_entry_at"] is not None and dashboard1["last_entry_at"] >= dashboard1["created_at"]
    assert dashboard1["grid"] == created["grid"]
    # And the records read back are the ones added, in the order they were added
    records1 = records_by_kind(http, token, p1["id"])
    assert records1 == added

    # ---- The history names each change and who made it -----------------------------------------------------------
    history = guide.history(aggregate_id=created["id"])
    assert Counter((e["type"], e["actor"]) for e in history) == {
        ("Base.Created", guide.manager_actor): 1, ("Base.RecordAdded", f"user:{TEACHER}"): sum(expected_counts.values())}

    documented = expect(http.get("/openapi.json"), 200)["paths"]
    routes_built = (route_built(http, documented, EXPORT_PATH, p1["id"])
                    and route_built(http, documented, LOAD_PATH, p2["id"]))
    p2_token = None
    if routes_built:
        # ---- Export planning01's base; load the file into planning02 ------------------------------------------------
        exported = http.get(EXPORT_PATH.format(planning_id=p1["id"]), headers=console)
        assert exported.status_code == 200, exported.text
        export_file = exported.content
        assert export_file
        # Exporting changes nothing
        assert expect(http.get(f"/v1/console/plannings/{p1['id']}/base", headers=console), 200) == dashboard1

        # Given planning02: stopped, no base yet
        assert guide.planning(2)["server_state"] == "stopped"
        loaded = expect(http.post(LOAD_PATH.format(planning_id=p2["id"]), headers={
            **console, "Content-Type": "application/octet-stream"}, content=export_file), 201)
        # Then planning02's new base has the same counts and grid
        assert loaded["counts"] == expected_counts
        assert loaded["planning_id"] == p2["id"]
        assert loaded["id"] != created["id"]
        assert loaded["grid"] == dashboard1["grid"]
        if guide.planning(2)["server_state"] != "in_service":
            expect(http.put(f"/v1/console/plannings/{p2['id']}/server", headers=console,
                            json={"state": "in_service"}), 200)
        dashboard2 = expect(http.get(f"/v1/console/plannings/{p2['id']}/base", headers=console), 200)
        assert dashboard2["id"] == loaded["id"]
        assert dashboard2["counts"] == expected_counts
        assert dashboard2["server_state"] == "in_service"

        # And the teacher, given a profile on planning02, finds the same records there, ids included
        guide.assign(p2["id"], "consultation", [TEACHER])
        p2_session = expect(http.post("/v1/sessions", json={
            "domain": "monecole", "login": TEACHER, "password": teacher["password"], "planning": p2["id"],
            "mode": "teacher"}), 201)
        assert p2_session["profile"] == "consultation"
        p2_token = p2_session["token"]
        records2 = records_by_kind(http, p2_token, p2["id"])
        assert records2 == records1
        # And planning01 kept its base and records
        assert records_by_kind(http, token, p1["id"]) == records1

    # ---- Restart: everything as left ---------------------------------------------------------------------------------
    def state() -> dict[str, Any]:
        seen: dict[str, Any] = {
            "plannings": expect(http.get("/v1/console/plannings", headers=console), 200),
            "dashboard1": expect(http.get(f"/v1/console/plannings/{p1['id']}/base", headers=console), 200),
            "bases1": expect(http.get(f"/v1/console/plannings/{p1['id']}/bases", headers=console), 200),
            "records1": records_by_kind(http, token, p1["id"]),
            "history": guide.history(),
        }
        if p2_token:
            seen["dashboard2"] = expect(http.get(f"/v1/console/plannings/{p2['id']}/base", headers=console), 200)
            seen["bases2"] = expect(http.get(f"/v1/console/plannings/{p2['id']}/bases", headers=console), 200)
            seen["records2"] = records_by_kind(http, p2_token, p2["id"])
        return seen

    before = state()
    server.restart()
    assert server.returncodes[0] in (0, -15)
    # Then dashboards, records, history are exactly as left, and the teacher's sessions still work
    after = state()
    assert after == before
    assert after["dashboard1"]["counts"] == expected_counts
    assert after["records1"] == added
    # And the base is still writable: one more grade, counted, after the old history
    late = expect(http.post(f"/v1/plannings/{p1['id']}/records/grades", headers=bearer(token), json={
        "student_id": students[0]["id"], "subject_id": maths["id"], "value": "17", "scale": "20"}), 201)
    assert expect(http.get(f"/v1/console/plannings/{p1['id']}/base", headers=console), 200)["counts"]["grades"] == 13
    history_after = guide.history()
    assert history_after[: len(before["history"])] == before["history"]
    assert [(e["type"], e["actor"], e["aggregate_id"]) for e in history_after[len(before["history"]):]] == [
        ("Base.RecordAdded", f"user:{TEACHER}", created["id"])]
    assert late["id"] not in {r["id"] for r in added["grades"]}

    if not routes_built:
        pytest.skip("export/load not built yet (GET …/base/export, POST …/bases/load are neither in /openapi.json nor routed);"
                    " the base, records, dashboard and restart parts passed")
