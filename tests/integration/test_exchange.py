"""Load and export of bases, annexes, the users file, timetable transfers (issue 3,
hosting guide fiches 5 and 7), over HTTP like an API client.

The round trip runs on both stores (parametrized ``settings``); the refusals on SQLite.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
from api_helpers import (
    assert_problem,
    bearer,
    cheap_argon2,
    create_user,
    make_client,
    ready_school,
)
from school_helpers import (
    FIRST_MONDAY,
    LAST_SUNDAY,
    CampusSchool,
    activate_controller,
    add_record,
    campus_school,
    create_base,
    set_server,
)
from starlette.testclient import TestClient

import campus.api.exchange as exchange_api
from campus.infra.settings import Settings
from campus.rules.export_format import MEDIA_TYPE, BaseFile, write_chunks
from campus.rules.grid import make_grid
from campus.rules.records import KINDS, validate_fields
from campus.rules.security import verify_secret


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


def exchange_client(settings: Settings, clock: Any, **overrides: Any) -> TestClient:
    return make_client(settings, clock, **overrides)


def export_url(planning: str) -> str:
    return f"/v1/console/plannings/{planning}/base/export"


def load_url(planning: str) -> str:
    return f"/v1/console/plannings/{planning}/bases/load"


def annex_url(planning: str, name: str) -> str:
    return f"/v1/console/plannings/{planning}/base/annexes/{name}"


def split_file(data: bytes) -> tuple[dict, bytes]:
    header, _, body = data.partition(b"\n")
    return json.loads(header), body


def bases_of(cs: CampusSchool, planning: str) -> list[dict]:
    r = cs.client.get(f"/v1/console/plannings/{planning}/bases", headers=cs.console)
    assert r.status_code == 200, r.text
    return r.json()["bases"]


def tmp_files(settings: Settings) -> list[Path]:
    tmp = settings.data_dir / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def fill_school(cs: CampusSchool) -> dict[str, str]:
    """Records of many kinds on planning01, added by the user with the modification profile."""
    h = cs.headers_for("modif", mode="teacher")
    url = cs.records_url
    ids: dict[str, str] = {}
    ids["teacher"] = add_record(cs.client, h, url("teachers"), last_name="Martin", first_name="Paul",
                                civility="M.")["id"]
    ids["subject"] = add_record(cs.client, h, url("subjects"), name="Mathématiques", short_name="MATH")["id"]
    ids["class"] = add_record(cs.client, h, url("classes"), name="2nde A", level="Seconde")["id"]
    ids["group"] = add_record(cs.client, h, url("groups"), name="2nde A - G1", class_id=ids["class"])["id"]
    ids["room"] = add_record(cs.client, h, url("rooms"), name="B215", capacity=32)["id"]
    for n in range(3):
        ids[f"student{n}"] = add_record(cs.client, h, url("students"), last_name=f"Élève{n}", first_name="Lucie",
                                        class_id=ids["class"], birth_date="2010-03-0" + str(n + 1))["id"]
    ids["course"] = add_record(cs.client, h, url("courses"), subject_id=ids["subject"], teacher_id=ids["teacher"],
                               class_id=ids["class"], room_id=ids["room"], weekday="mon", start="08:30",
                               duration_minutes=55)["id"]
    for n, value in enumerate(("12.5", "17", "9.25")):
        add_record(cs.client, h, url("grades"), student_id=ids[f"student{n}"], subject_id=ids["subject"],
                   value=value, scale="20", date="2026-10-05", comment="contrôle")
    add_record(cs.client, h, url("absences"), student_id=ids["student0"], start="2026-10-06T08:00:00+02:00",
               end="2026-10-06T10:00:00+02:00", reason="malade")
    add_record(cs.client, h, url("evaluations"), student_id=ids["student1"], subject_id=ids["subject"],
               competence="Raisonner", level="acquired")
    add_record(cs.client, h, url("homework"), subject_id=ids["subject"], class_id=ids["class"],
               given_on="2026-10-05", due_on="2026-10-12", description="Exercices 1 à 5")
    add_record(cs.client, h, url("lesson_logs"), course_id=ids["course"], date="2026-10-05", content="Fonctions")
    add_record(cs.client, h, url("lateness"), student_id=ids["student2"], at="2026-10-07T08:05:00+02:00", minutes=5)
    return ids


# -- export, then load into planning02 ------------------------------------------------------------

def test_export_then_load_gives_the_same_base(settings, clock):
    with exchange_client(settings, clock) as client:
        cs = campus_school(client)
        fill_school(cs)
        photo = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        r = client.put(annex_url(cs.planning01, "photo élève.png"), headers={**cs.console,
                       "Content-Type": "image/png"}, content=photo)
        assert r.status_code == 201, r.text

        r = client.get(export_url(cs.planning01), headers=cs.console)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == MEDIA_TYPE
        assert r.headers["content-disposition"].startswith('attachment; filename="Base 2026.campus"')
        assert r.headers["cache-control"] == "no-store"
        exported = r.content
        assert int(r.headers["content-length"]) == len(exported)
        header, body = split_file(exported)
        original = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()
        assert header["format"] == "campus-base" and header["version"] == 1
        assert header["base"]["name"] == "Base 2026" and header["base"]["id"] == original["id"]
        assert header["counts"] == original["counts"]
        assert header["position"] == original["version"]
        assert header["annexes"] == 1
        assert header["grid"] == original["grid"]
        assert header["body_bytes"] == len(body)
        assert header["body_sha256"] == hashlib.sha256(body).hexdigest()
        lines = [json.loads(line) for line in body.splitlines()]
        assert sum(1 for line in lines if "kind" in line) == sum(original["counts"].values()) == 17

        # The server of planning01 is in service: a load there is refused before the upload.
        assert_problem(client.post(load_url(cs.planning01), headers=cs.console, content=exported), 409,
                       code="server_in_service")

        r = client.post(load_url(cs.planning02), headers={**cs.console, "Content-Type": MEDIA_TYPE},
                        content=exported)
        assert r.status_code == 201, r.text
        loaded = r.json()
        assert loaded["origin"] == "loaded" and loaded["name"] == "Base 2026"
        assert loaded["id"] != original["id"]
        assert loaded["counts"] == original["counts"]
        assert loaded["grid"] == original["grid"]
        assert loaded["last_entry_at"] == original["last_entry_at"]
        assert loaded["annexes"] == original["annexes"]
        assert loaded["loaded"]["records"] == 17 and loaded["loaded"]["annexes"] == 1
        assert tmp_files(settings) == []

        again = client.get(f"/v1/console/plannings/{cs.planning02}/base", headers=cs.console).json()
        assert again["id"] == loaded["id"] and again["counts"] == original["counts"]
        # Identical records (ids, fields, order) and annexes: the re-export's body is byte for byte the same.
        r = client.get(export_url(cs.planning02), headers=cs.console)
        assert r.status_code == 200
        header2, body2 = split_file(r.content)
        assert body2 == body and header2["body_sha256"] == header["body_sha256"]
        r = client.get(annex_url(cs.planning02, "photo élève.png"), headers=cs.console)
        assert r.status_code == 200 and r.content == photo

        # The records read back through the records API are the same, typed values included.
        assert set_server(client, cs.console, cs.planning02, "in_service").status_code == 200
        for kind in ("grades", "absences", "evaluations", "courses", "students"):
            a = client.get(cs.records_url(kind), headers=cs.headers_for("modif", mode="teacher")).json()
            h = cs.headers_for("modif", planning=cs.planning02, mode="teacher")
            b = client.get(cs.records_url(kind, planning=cs.planning02), headers=h).json()
            assert a["records"] == b["records"] and a["records"], kind


def test_loaded_base_keeps_the_previous_one_and_takes_a_name(sqlite_only_settings, clock):
    with exchange_client(sqlite_only_settings, clock) as client:
        cs = campus_school(client, users=False)
        exported = client.get(export_url(cs.planning01), headers=cs.console).content
        set_server(client, cs.console, cs.planning01, "stopped")
        r = client.post(load_url(cs.planning01), headers=cs.console, content=exported,
                        params={"name": "Base rechargée"})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "Base rechargée"
        names = [b["name"] for b in bases_of(cs, cs.planning01)]
        assert names == ["Base 2026", "Base rechargée"]  # "autres bases": nothing lost
        assert_problem(client.post(load_url(cs.planning01), headers=cs.console, content=exported,
                                   params={"nom": "x"}), 422, fields={"query.nom"})


# -- refusals of a load ------------------------------------------------------------------------------

@pytest.fixture
def exported(sqlite_only_settings, clock):
    """A school with data on planning01, its export, and the client (planning02 free)."""
    with exchange_client(sqlite_only_settings, clock) as client:
        cs = campus_school(client)
        fill_school(cs)
        r = client.get(export_url(cs.planning01), headers=cs.console)
        assert r.status_code == 200
        yield cs, r.content


def _with_header(data: bytes, **changes: Any) -> bytes:
    header, body = split_file(data)
    header.update(changes)
    return orjson.dumps(header) + b"\n" + body


def _refused(cs: CampusSchool, settings: Settings, content: bytes, status: int, **expect: Any) -> dict:
    before = bases_of(cs, cs.planning02)
    body = assert_problem(cs.client.post(load_url(cs.planning02), headers=cs.console, content=content),
                          status, **expect)
    assert bases_of(cs, cs.planning02) == before, "no base is created by a refused load"
    assert tmp_files(settings) == [], "the temporary file is removed"
    return body


def test_malformed_truncated_altered_files_are_refused(exported, sqlite_only_settings):
    cs, data = exported
    settings = sqlite_only_settings
    header, body = split_file(data)

    _refused(cs, settings, b"PK\x03\x04 this is a zip\n" + body, 422, detail="not JSON", code="not_a_campus_file")
    _refused(cs, settings, b"", 422, detail="no file", fields={"body"})
    _refused(cs, settings, b'{"format": "campus-base", "version": 1', 422, detail="truncated")
    _refused(cs, settings, _with_header(data, format="hnot"), 422, detail="'hnot'", fields={"header.format"})
    r = _refused(cs, settings, _with_header(data, version=2), 422, detail=("version 2", "version 1"),
                 code="unsupported_version", fields={"header.version"})
    assert "not supported" in r["detail"]
    _refused(cs, settings, _with_header(data, body_sha256="xyz", position=-1), 422,
             fields={"header.body_sha256", "header.position"}, code="invalid_header")
    _refused(cs, settings, _with_header(data, grid={**header["grid"], "first_monday": "2026-09-01"}), 422,
             fields={"header.grid.first_monday"}, detail="not a Monday")

    _refused(cs, settings, data[:-40], 422, detail="truncated", code="truncated")
    _refused(cs, settings, data + b'{"kind": "rooms"}\n', 422, detail="longer than", code="size_mismatch")
    # One byte changed inside a record (same length): only the checksum can tell.
    at = data.index(b"Martin")
    altered = data[:at] + b"Nartin" + data[at + 6:]
    r = _refused(cs, settings, altered, 422, detail=("SHA-256", "altered"), code="checksum_mismatch")
    assert r["errors"] == [{"field": "body", "message": r["detail"].removeprefix("body: ")}]
    # An altered header count is caught by comparing with the body.
    counts = {**header["counts"], "grades": 4}
    _refused(cs, settings, _with_header(data, counts=counts), 422, fields={"header.counts.grades"},
             code="count_mismatch")
    assert cs.client.get(f"/v1/console/plannings/{cs.planning02}/base", headers=cs.console).status_code == 404


def _file(records: dict[str, dict], **kw: Any) -> bytes:
    """A well-formed file (valid header and checksum) holding `records`."""
    grid = make_grid(date.fromisoformat(FIRST_MONDAY), date.fromisoformat(LAST_SUNDAY),
                     ["mon", "tue", "wed", "thu", "fri"], 10, 55, 1)
    now = datetime(2026, 10, 1, tzinfo=UTC)
    typed = {kind: {rid: validate_fields(KINDS[kind], fields) for rid, fields in by_id.items()}
             for kind, by_id in records.items()}
    return b"".join(write_chunks(BaseFile(uuid4(), "Fabriquée", "created", now, now, grid, typed, **kw)))


def test_wrong_references_invalid_records_and_duplicates_are_refused(exported, sqlite_only_settings):
    cs, _ = exported
    settings = sqlite_only_settings
    klass, student, subject, ghost = uuid4(), uuid4(), uuid4(), uuid4()
    good = {"classes": {klass: {"name": "6A"}}, "subjects": {subject: {"name": "Français"}},
            "students": {student: {"last_name": "A", "first_name": "B", "class_id": str(klass)}}}
    wrong = {**good, "grades": {uuid4(): {"student_id": str(ghost), "subject_id": str(subject), "value": "12"}}}
    r = _refused(cs, settings, _file(wrong), 422, detail=("not in the file", str(ghost)),
                 code="unknown_reference")
    assert r["errors"][0]["field"].endswith(".fields.student_id")

    # A record whose fields break its kind's rules (value above the scale), with a valid checksum.
    data = _file({**good, "grades": {uuid4(): {"student_id": str(student), "subject_id": str(subject),
                                               "value": "12", "scale": "20"}}})
    bad = data.replace(b'"value":"12"', b'"value":"42"')
    header, body = split_file(bad)
    fixed = _with_header(bad, body_sha256=hashlib.sha256(body).hexdigest(), body_bytes=len(body))
    r = _refused(cs, settings, fixed, 422, detail="between 0 and the scale", code="invalid_record")
    assert r["errors"][0]["field"].endswith(".fields.value")

    # The same id twice.
    data = _file(good)
    header, body = split_file(data)
    line = body.splitlines(keepends=True)[0]
    body += line
    counts = {**header["counts"]}
    dup = _with_header(data, body_sha256=hashlib.sha256(body).hexdigest(), body_bytes=len(body), counts=counts)
    dup = dup[:dup.index(b"\n") + 1] + body
    _refused(cs, settings, dup, 422, detail="duplicate id", code="duplicate_id")

    # The good file loads.
    r = cs.client.post(load_url(cs.planning02), headers=cs.console, content=_file(good))
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["students"] == 1


def test_oversized_upload_is_refused_with_413(sqlite_only_settings, clock, monkeypatch):
    settings = dataclasses.replace(sqlite_only_settings, max_upload_bytes=4096)
    with exchange_client(settings, clock) as client:
        cs = campus_school(client, users=False)
        data = client.get(export_url(cs.planning01), headers=cs.console).content
        big = data + b"x" * 5000
        _refused(cs, settings, big, 413, detail="4096")

        def chunked():  # no Content-Length: the cap applies while streaming
            for start in range(0, len(big), 1000):
                yield big[start:start + 1000]

        _refused(cs, settings, chunked(), 413, detail="4096")
        # Credentials are checked before anything is read.
        assert_problem(client.post(load_url(cs.planning02), content=data), 401)
        assert_problem(client.post(load_url(cs.planning02), headers=bearer("nope"), content=data), 401)
        assert tmp_files(settings) == []


# -- annexes --------------------------------------------------------------------------------------

def test_annex_round_trip(sqlite_only_settings, clock):
    with exchange_client(sqlite_only_settings, clock) as client:
        cs = campus_school(client, users=False)
        pdf = b"%PDF-1.7\n" + b"\x00\xff" * 1000
        url = annex_url(cs.planning01, "règlement intérieur.pdf")
        r = client.put(url, headers={**cs.console, "Content-Type": "application/pdf"}, content=pdf)
        assert r.status_code == 201, r.text
        assert r.json() == {"name": "règlement intérieur.pdf", "content_type": "application/pdf", "size": len(pdf),
                            "sha256": hashlib.sha256(pdf).hexdigest()}
        version = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()["version"]
        r = client.put(url, headers={**cs.console, "Content-Type": "application/pdf"}, content=pdf)
        assert r.status_code == 200  # the same file again: nothing new
        base = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()
        assert base["version"] == version
        assert base["annexes"] == [{"name": "règlement intérieur.pdf", "content_type": "application/pdf",
                                    "size": len(pdf), "sha256": hashlib.sha256(pdf).hexdigest()}]
        r = client.get(url, headers=cs.console)
        assert r.status_code == 200 and r.content == pdf
        assert r.headers["content-type"] == "application/pdf"
        assert r.headers["etag"] == f'"{hashlib.sha256(pdf).hexdigest()}"'
        # Replaced by another content.
        r = client.put(url, headers={**cs.console, "Content-Type": "application/pdf"}, content=b"%PDF-2")
        assert r.status_code == 200 and r.json()["size"] == 6
        assert client.get(url, headers=cs.console).content == b"%PDF-2"

        assert_problem(client.get(annex_url(cs.planning01, "absent.jpg"), headers=cs.console), 404,
                       detail="absent.jpg")
        assert_problem(client.put(annex_url(cs.planning01, "vide.txt"), headers=cs.console, content=b""), 422,
                       fields={"body"})
        assert_problem(client.put(annex_url(cs.planning01, "x.bin"), headers={**cs.console, "Content-Type": "nope"},
                                  content=b"1"), 422, fields={"Content-Type"})
        assert_problem(client.put(annex_url(cs.planning01, "bad%01name"), headers=cs.console, content=b"1"), 422,
                       fields={"name"})
        too_big = b"0" * (exchange_api.MAX_ANNEX_BYTES + 1)
        assert_problem(client.put(annex_url(cs.planning01, "big.bin"), headers=cs.console, content=too_big), 413)
        assert_problem(client.put(annex_url(cs.planning02, "a.txt"), headers=cs.console, content=b"1"), 404,
                       detail="no base")
        assert_problem(client.put(url, content=b"1"), 401)


# -- the users file ----------------------------------------------------------------------------------

def test_users_file_round_trip_into_another_school(sqlite_only_settings, clock):
    with exchange_client(sqlite_only_settings, clock) as client:
        a = campus_school(client, base=False)
        r = client.patch("/v1/console/users/badmin", headers=a.console,
                         json={"email": "badmin@example.org", "console_access": True,
                               "external_ids": {"cas": "cas-badmin"}})
        assert r.status_code == 200, r.text
        r = client.get("/v1/console/users/export", headers=a.console)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["cache-control"] == "no-store"
        assert "attachment" in r.headers["content-disposition"]
        users_file = r.content
        doc = json.loads(users_file)
        assert doc["format"] == "campus-users" and doc["version"] == 1
        logins = [u["login"] for u in doc["users"]]
        assert sorted(logins) == ["badmin", "consult", "direction", "modif", "noprof"]
        for user in doc["users"]:
            assert set(user) == {"login", "last_name", "first_name", "civility", "status", "email",
                                 "console_access", "external_ids", "password_hash"}
            assert user["password_hash"].startswith("$argon2id$")
        assert doc["assignments"]["planning01"]["modification"] == ["modif"]
        assert a.passwords["modif"] not in users_file.decode()

        b = ready_school(client, domain="autreecole", establishment="Collège Victor Hugo")
        activate_controller(client, b.headers)
        p1 = b.planning_ids[0]
        before = client.get("/v1/console/users", headers=b.headers).json()["users"]
        # "direction" exists in both schools: refused as a whole unless told what to do.
        body = assert_problem(client.post("/v1/console/users/import", headers=b.headers, content=users_file), 409,
                              code="login_exists", detail="'direction'")
        assert "on_conflict" in body["detail"]
        assert client.get("/v1/console/users", headers=b.headers).json()["users"] == before
        assert_problem(client.post("/v1/console/users/import", headers=b.headers, content=users_file,
                                   params={"on_conflict": "merge"}), 422, fields={"query.on_conflict"})

        r = client.post("/v1/console/users/import", headers=b.headers, content=users_file,
                        params={"on_conflict": "skip"})
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 4 and r.json()["updated"] == 0 and r.json()["skipped"] == ["direction"]
        users = {u["login"]: u for u in client.get("/v1/console/users", headers=b.headers).json()["users"]}
        assert users["badmin"]["status"] == "base_administrator" and users["badmin"]["console_access"] is True
        assert users["badmin"]["external_ids"] == {"cas": "cas-badmin"}
        planning = client.get(f"/v1/console/plannings/{p1}", headers=b.headers).json()
        assert planning["profiles"]["modification"] == ["modif"]
        assert planning["profiles"]["consultation"] == ["consult"]
        assert planning["profiles"]["administration"] == ["badmin"]  # direction was skipped, not touched

        # The password hashes came along: the users log in to the other school with their passwords.
        create_base(client, b.headers, p1)
        r = client.post("/v1/sessions", json={"domain": "autreecole", "login": "modif",
                                              "password": a.passwords["modif"], "planning": "planning01",
                                              "mode": "teacher"})
        assert r.status_code == 201, r.text
        service = client.app.state.campus  # type: ignore[attr-defined]
        account_b = service.accounts.account_by_number(b.hosting_number)
        assert verify_secret(service.users.get_user(account_b.id, "badmin").password_hash, a.passwords["badmin"])

        # Importing again with update changes nothing (same content), then a changed hash is applied.
        r = client.post("/v1/console/users/import", headers=b.headers, content=users_file,
                        params={"on_conflict": "update"})
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 0 and r.json()["skipped"] == []

        # The hashes never reach the history.
        r = client.get("/v1/console/history", headers=b.headers, params={"limit": 500})
        assert r.status_code == 200
        assert "$argon2" not in r.text


def test_users_file_refusals(sqlite_only_settings, clock):
    with exchange_client(sqlite_only_settings, clock) as client:
        a = ready_school(client)
        create_user(client, a, "prof1", status="user")
        users_file = client.get("/v1/console/users/export", headers=a.headers).content
        doc = json.loads(users_file)
        b = ready_school(client, domain="autreecole", superadministrator=False)

        def post(content: bytes, **params: str):
            return client.post("/v1/console/users/import", headers=b.headers, content=content, params=params)

        assert_problem(post(b"not json"), 422, code="not_a_users_file")
        assert_problem(post(b""), 422, fields={"body"})
        tampered = users_file.replace(b'"prof1"', b'"prof2"')
        assert_problem(post(tampered), 422, code="checksum_mismatch", detail="altered")
        assert_problem(post(orjson.dumps({**doc, "version": 9})), 422, code="unsupported_version",
                       detail="version 9")
        from campus.rules.users_file import users_file_digest

        def resigned(document: dict) -> bytes:
            return orjson.dumps({**document, "sha256": users_file_digest(document)})

        bad_user = {**doc, "users": [{**doc["users"][0], "password_hash": "plain-text-password"}]}
        body = assert_problem(post(resigned(bad_user)), 422, fields={"users[0].password_hash"})
        assert "plain-text-password" not in body["detail"]
        unknown_planning = {**doc, "assignments": {"planning09": {"modification": ["prof1"]}}}
        assert_problem(post(resigned(unknown_planning)), 422, fields={"assignments.planning09"})
        user_in_admin = {**doc, "assignments": {"planning01": {"administration": ["prof1"]}}}
        assert_problem(post(resigned(user_in_admin)), 422, fields={"assignments.planning01.administration[0]"})
        assert client.get("/v1/console/users", headers=b.headers).json()["users"] == []

        # A school without a superadministrator gets its first one from the file.
        r = post(users_file)
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 2
        assert_problem(client.post("/v1/console/superadministrator", headers=b.headers, json={
            "first_name": "A", "last_name": "B", "login": "autre", "password": "Campus-Direction-2026!",
            "password_confirmation": "Campus-Direction-2026!"}), 409)


# -- timetable transfer ---------------------------------------------------------------------------------

def transfer_body(**overrides: Any) -> dict:
    body = {
        "name": "Base EDT 2026",
        "grid": {"first_monday": FIRST_MONDAY, "last_sunday": LAST_SUNDAY,
                 "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 10,
                 "sequence_minutes": 55, "split": 1},
        "resources": {
            "teachers": [{"ref": "P1", "last_name": "Martin", "first_name": "Paul"},
                         {"ref": "P2", "last_name": "Durand", "first_name": "Anne", "civility": "Mme"}],
            "subjects": [{"ref": "MATH", "name": "Mathématiques"}, {"ref": "FR", "name": "Français"}],
            "classes": [{"ref": "C1", "name": "6A"}, {"ref": "C2", "name": "6B"}],
            "groups": [{"ref": "G1", "name": "6A-latin", "class_ref": "C1"}],
            "students": [{"ref": "E1", "last_name": "Bernard", "first_name": "Lucie", "class_ref": "C1"},
                         {"ref": "E2", "last_name": "Petit", "first_name": "Hugo", "class_ref": "C2"},
                         {"last_name": "Roux", "first_name": "Léa", "class_ref": "C2"}],
            "rooms": [{"ref": "S1", "name": "B215", "capacity": 30}],
            "courses": [{"subject_ref": "MATH", "teacher_ref": "P1", "class_ref": "C1", "room_ref": "S1",
                         "weekday": "mon", "start": "08:00", "duration_minutes": 55}],
        },
        "connection_modes": {
            "direction": {"client": True, "spaces": ["direction"]},
            "school_life": {"client": True, "spaces": ["school_life"]},
            "parents": {"public": True, "spaces": ["parents", "common"]},
        },
    }
    body.update(overrides)
    return body


def test_transfer_creates_the_base_its_resources_and_modes(sqlite_only_settings, clock):
    with exchange_client(sqlite_only_settings, clock) as client:
        cs = campus_school(client, base=False)
        url = f"/v1/console/plannings/{cs.planning01}/bases/transfer"
        r = client.post(url, headers=cs.console, json=transfer_body())
        assert r.status_code == 201, r.text
        base = r.json()
        assert base["origin"] == "transfer" and base["name"] == "Base EDT 2026"
        assert base["server_state"] == "stopped"
        assert base["grid"]["sequence_minutes"] == 55 and base["grid"]["weeks"] == 44
        counts = {k: v for k, v in base["counts"].items() if v}
        assert counts == {"teachers": 2, "subjects": 2, "classes": 2, "groups": 1, "students": 3, "rooms": 1,
                          "courses": 1}
        refs = base["refs"]
        assert set(refs) == {"teachers", "subjects", "classes", "groups", "students", "rooms"}
        assert set(refs["students"]) == {"E1", "E2"}
        modes = base["connection_modes"]
        assert set(modes) == {"direction", "teachers", "school_life", "parents", "companions", "students",
                              "company", "academy"}
        assert modes["direction"] == {"public": False, "client": True, "spaces": ["direction"]}
        assert modes["parents"] == {"public": True, "client": False, "spaces": ["common", "parents"]}
        assert modes["teachers"] == {"public": False, "client": False, "spaces": []}

        # The references point at the ids the refs were given.
        r = client.get(export_url(cs.planning01), headers=cs.console)
        lines = [json.loads(line) for line in r.content.splitlines()[1:]]
        by_id = {line["id"]: line for line in lines if "kind" in line}
        e1 = by_id[refs["students"]["E1"]]
        assert e1["fields"]["class_id"] == refs["classes"]["C1"]
        course = next(line for line in lines if line.get("kind") == "courses")
        assert course["fields"]["teacher_id"] == refs["teachers"]["P1"]
        assert course["fields"]["start"] == "08:00:00"
        assert {"connection_modes": modes} in lines

        # Put in service, the transferred base is the planning's.
        assert set_server(client, cs.console, cs.planning01, "in_service").status_code == 200
        assert_problem(client.post(url, headers=cs.console, json=transfer_body()), 409, code="server_in_service")


def test_transfer_refusals_name_the_field(sqlite_only_settings, clock):
    with exchange_client(sqlite_only_settings, clock) as client:
        cs = campus_school(client, base=False, users=False)
        url = f"/v1/console/plannings/{cs.planning02}/bases/transfer"
        good = transfer_body()

        def refused(body: dict, fields: set[str], **kw: Any) -> dict:
            result = assert_problem(client.post(url, headers=cs.console, json=body), 422, fields=fields, **kw)
            assert bases_of(cs, cs.planning02) == []
            return result

        resources = json.loads(json.dumps(good["resources"]))
        resources["students"][0]["class_ref"] = "C9"
        refused({**good, "resources": resources}, {"resources.students[0].class_ref"}, detail="'C9'")
        resources = json.loads(json.dumps(good["resources"]))
        resources["classes"].append({"ref": "C1", "name": "6C"})
        resources["teachers"][0].pop("last_name")
        refused({**good, "resources": resources}, {"resources.classes[2].ref", "resources.teachers[0].last_name"})
        refused({**good, "resources": {**good["resources"], "grades": []}}, {"resources.grades"})
        refused({**good, "connection_modes": {"bogus": {"client": True}}}, {"connection_modes.bogus"})
        refused({**good, "grid": {**good["grid"], "first_monday": "2026-09-01", "split": 5}},
                {"grid.first_monday", "grid.split"})
        student = {"last_name": "X", "first_name": "Y", "class_id": str(uuid4())}
        refused({**good, "resources": {**good["resources"], "students": [student]}},
                {"resources.students[0].class_id"}, detail="class_ref")
        r = client.post(url, headers=cs.console, json={**good, "resources": {}, "connection_modes": {}})
        assert r.status_code == 201, r.text
        assert sum(r.json()["counts"].values()) == 0 and r.json()["refs"] == {}


def test_a_base_administrator_may_export_and_load_but_not_a_plain_user(sqlite_only_settings, clock):
    with exchange_client(sqlite_only_settings, clock) as client:
        cs = campus_school(client)
        admin = cs.headers_for("badmin")  # Administration on planning01
        r = client.get(export_url(cs.planning01), headers=admin)
        assert r.status_code == 200, r.text
        plain = cs.headers_for("modif", mode="teacher")
        assert_problem(client.get(export_url(cs.planning01), headers=plain), 403)
        assert_problem(client.post(load_url(cs.planning01), headers=plain, content=r.content), 403)
        assert_problem(client.post(load_url(cs.planning02), headers=admin, content=r.content), 403,
                       code="other_planning")
        assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
        r = client.post(load_url(cs.planning01), headers=admin, content=r.content, params={"name": "Copie"})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "Copie"
        # The users file is the hosting manager's only.
        assert_problem(client.get("/v1/console/users/export", headers=admin), 401)
        # Another school sees nothing of this one.
        other = ready_school(client, domain="ailleurs")
        assert_problem(client.get(export_url(cs.planning01), headers=other.headers), 404)
        assert_problem(client.post(load_url(cs.planning02), headers=other.headers, content=r.content), 404)
