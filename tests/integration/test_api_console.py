"""The fixed routes of the console API (issue 2), with the exact shapes a client sees.

The walkthrough runs on both stores (parametrized ``settings``); the rest on SQLite.
"""

from __future__ import annotations

import string
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from api_helpers import (
    HOSTING_NUMBER,
    INVOICE_NUMBER,
    PROBLEM,
    SUPERADMIN_LOGIN,
    School,
    accept_licence,
    assert_problem,
    bearer,
    bind_domain,
    console_login,
    create_superadministrator,
    create_user,
    history,
    list_plannings,
    login_with_certificate,
    make_client,
    open_account,
    operator_headers,
    ready_school,
)

from campus.api.handlers import api
from campus.api.routing import Auth

SPECIALS = set(string.punctuation)


def _strong(password: str) -> bool:
    return (len(password) >= 12 and any(c.isdigit() for c in password) and any(c.islower() for c in password)
            and any(c.isupper() for c in password) and any(c in SPECIALS for c in password))


# -- system -----------------------------------------------------------------------

def test_healthz_answers_ok_and_echoes_a_request_id(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        r = client.get("/healthz")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {"status": "ok"}
        assert r.headers["x-request-id"]

        mine = client.get("/healthz", headers={"X-Request-ID": "req-0001.abc"})
        assert mine.headers["x-request-id"] == "req-0001.abc"
        # An id that is not a sane token is replaced, not echoed.
        odd = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert odd.headers["x-request-id"] not in ("", "bad id with spaces")
        assert client.get("/healthz").headers["x-request-id"] != r.headers["x-request-id"]


def test_openapi_documents_every_declared_route(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]

    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    declared = {(ep.path, ep.method) for ep in api.endpoints}
    assert declared <= documented, f"undocumented routes: {sorted(declared - documented)}"
    fixed = {
        ("/healthz", "GET"), ("/v1/operator/accounts", "POST"), ("/v1/console/sessions", "POST"),
        ("/v1/console/licence-agreement", "POST"), ("/v1/console/controller/domain", "PUT"),
        ("/v1/console/superadministrator", "POST"), ("/v1/console/users", "POST"),
        ("/v1/console/users/{login}", "GET"), ("/v1/console/users/{login}", "PATCH"),
        ("/v1/console/plannings", "GET"), ("/v1/console/plannings/{planning_id}", "GET"),
        ("/v1/console/plannings/{planning_id}", "PATCH"),
        ("/v1/console/plannings/{planning_id}/profiles/{profile}", "PUT"),
        ("/v1/console/controller/activation", "POST"), ("/v1/console/history", "GET"),
    }
    assert fixed <= documented

    schemas = doc["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        ref = schema.get("$ref")
        if not ref:
            return schema
        assert ref.startswith("#/components/schemas/")
        return schemas[ref.rsplit("/", 1)[1]]

    for ep in api.endpoints:
        op = doc["paths"][ep.path][ep.method.lower()]
        assert str(ep.status) in op["responses"], (ep.path, ep.method)
        assert {p["name"] for p in op.get("parameters", []) if p["in"] == "path"} == set(ep.path_params)
        if ep.body is not None:
            body = resolve(op["requestBody"]["content"]["application/json"]["schema"])
            assert set(body["properties"]) == set(ep.body.model_fields), ep.path
        if ep.auth is not Auth.NONE:
            assert "401" in op["responses"]
            assert PROBLEM in op["responses"]["401"]["content"]

    def body_schema(path: str) -> dict:
        return resolve(doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])

    login = body_schema("/v1/console/sessions")
    assert set(login["required"]) == {"hosting_number", "password"}
    assert {"invoice_number", "certificate"} <= set(login["properties"])
    new_user = body_schema("/v1/console/users")
    assert {"login", "last_name", "first_name"} <= set(new_user["required"])
    assert new_user.get("additionalProperties") is False
    history_params = {p["name"] for p in doc["paths"]["/v1/console/history"]["get"]["parameters"]}
    assert {"type", "actor", "aggregate_id", "since", "until", "after", "limit"} <= history_params


# -- operator and console session -------------------------------------------------

def test_operator_opens_accounts_with_secrets_shown_once(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        r = client.post("/v1/operator/accounts", headers=operator_headers(client), json={
            "establishment": "Collège Victor Hugo", "manager": {"name": "Paul Leroy", "email": "p.leroy@example.org"}})
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert HOSTING_NUMBER.match(body["hosting_number"])
        assert INVOICE_NUMBER.match(body["invoice_number"])
        assert len(body["console_password"]) == 14
        assert _strong(body["console_password"])

        other = open_account(client)
        assert other.hosting_number != body["hosting_number"]
        assert other.console_password != body["console_password"]

        # The operator can read the account back: no secret, no hash.
        r = client.get(f"/v1/operator/accounts/{body['hosting_number']}", headers=operator_headers(client))
        assert r.status_code == 200
        assert r.headers["etag"] == f'"{r.json()["version"]}"'
        account = r.json()
        assert account["hosting_number"] == body["hosting_number"]
        assert account["establishment"] == "Collège Victor Hugo"
        assert account["manager"] == {"name": "Paul Leroy", "email": "p.leroy@example.org"}
        assert body["console_password"] not in r.text and body["invoice_number"] not in r.text
        assert "hash" not in r.text and "$argon2" not in r.text


def test_first_login_needs_the_invoice_number_later_ones_the_certificate(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        school = open_account(client)
        base = {"hosting_number": school.hosting_number, "password": school.console_password}

        r = client.post("/v1/console/sessions", json=base)
        assert_problem(r, 401, code="certificate_required", detail="invoice_number")

        wrong_invoice = "1" * 10 if school.invoice_number != "1" * 10 else "2" * 10
        r = client.post("/v1/console/sessions", json={**base, "invoice_number": wrong_invoice})
        assert_problem(r, 401, detail="invoice number")

        r = client.post("/v1/console/sessions", json={**base, "invoice_number": school.invoice_number})
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store"
        first = r.json()
        assert set(first) >= {"token", "certificate"}
        assert first["token"] and first["certificate"] and first["token"] != first["certificate"]
        school.token, school.certificate = first["token"], first["certificate"]

        r = login_with_certificate(client, school)
        assert r.status_code == 201, r.text
        second = r.json()
        assert second["certificate"] is None
        assert second["token"] not in (first["token"], first["certificate"])
        # Both sessions work.
        for token in (first["token"], second["token"]):
            assert client.post("/v1/console/licence-agreement", headers=bearer(token)).status_code in (200, 201, 204)

        # A certificate that was never installed is refused like a missing one.
        r = client.post("/v1/console/sessions", json={**base, "certificate": "not-a-certificate"})
        assert_problem(r, 401, code="certificate_required")

        # Wrong password and unknown hosting number look the same.
        wrong = client.post("/v1/console/sessions", json={**base, "password": "Wrong-password-1!",
                                                           "certificate": school.certificate})
        unknown_number = "9" * 12 if school.hosting_number != "9" * 12 else "8" * 12
        unknown = client.post("/v1/console/sessions", json={**base, "hosting_number": unknown_number,
                                                             "certificate": school.certificate})
        body_wrong = assert_problem(wrong, 401)
        body_unknown = assert_problem(unknown, 401)
        assert body_wrong["detail"] == body_unknown["detail"]


def test_nothing_of_the_console_works_before_the_licence_agreement(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        school = open_account(client)
        headers = console_login(client, school)
        account = client.get(f"/v1/operator/accounts/{school.hosting_number}", headers=operator_headers(client)).json()
        planning_id = account["plannings"][0]
        params = {"planning_id": planning_id, "login": SUPERADMIN_LOGIN, "profile": "consultation",
                  "hosting_number": school.hosting_number}
        samples = {
            ("PUT", "/v1/console/controller/domain"): {"name": "avantlicence"},
            ("PATCH", "/v1/console/plannings/{planning_id}"): {"name": "edt"},
            ("PUT", "/v1/console/plannings/{planning_id}/profiles/{profile}"): {"logins": []},
            ("POST", "/v1/console/assignment-templates"): {"name": "t", "planning_id": planning_id},
            ("POST", "/v1/console/plannings/{planning_id}/assignment-template"): {"name": "t"},
            ("POST", "/v1/console/superadministrator"): {
                "first_name": "Anne", "last_name": "Durand", "login": "direction",
                "password": "Campus-Direction-2026!", "password_confirmation": "Campus-Direction-2026!"},
            ("POST", "/v1/console/users"): {"login": "prof1", "last_name": "Dupont", "first_name": "Jean"},
            ("PATCH", "/v1/console/users/{login}"): {"email": "a@example.org"},
        }
        gated = [ep for ep in api.endpoints if ep.auth is Auth.CONSOLE]
        assert len(gated) >= 15
        for ep in gated:
            url = ep.path.format(**{p: params.get(p, "x") for p in ep.path_params})
            kwargs = {"json": samples.get((ep.method, ep.path), {})} if ep.body is not None else {}
            r = client.request(ep.method, url, headers=headers, **kwargs)
            assert_problem(r, 403, detail="licence agreement", code="licence_not_accepted")

        # The session routes that do not need it: accept, then everything opens.
        first = client.post("/v1/console/licence-agreement", headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["accepted"] is True
        accepted_at = first.json()["accepted_at"]
        again = client.post("/v1/console/licence-agreement", headers=headers)
        assert again.status_code == 200 and again.json()["accepted_at"] == accepted_at
        assert client.get("/v1/console/plannings", headers=headers).status_code == 200
        assert client.get("/v1/console/account", headers=headers).json()["licence_accepted_at"] == accepted_at
        accepted = history(client, headers, type="HostingAccount.LicenceAgreementAccepted")
        assert len(accepted) == 1


# -- the walkthrough (both stores) ------------------------------------------------

def test_console_walkthrough_fiches_1_to_8(settings, clock):
    """Open, log in, accept, bind, superadministrator, users, plannings, profiles,
    templates, activate, log out; every action in the history exactly once with its actor."""
    actions: list[tuple[str, list[str]]] = []  # (request id, event types expected from it)

    def did(response, *types: str) -> None:
        actions.append((response.headers["x-request-id"], sorted(types)))

    with make_client(settings, clock) as client:
        r = client.post("/v1/operator/accounts", headers=operator_headers(client), json={
            "establishment": "Lycée Jean Moulin",
            "manager": {"name": "Claire Martin", "email": "c.martin@example.org"}})
        assert r.status_code == 201
        did(r, "HostingAccount.Opened", "Controller.Created", "Planning.Created", "Planning.Created")
        opened = r.json()
        school = School(opened["hosting_number"], opened["console_password"], opened["invoice_number"], "Lycée")

        r = client.post("/v1/console/sessions", json={
            "hosting_number": school.hosting_number, "password": school.console_password,
            "invoice_number": school.invoice_number})
        assert r.status_code == 201
        did(r, "HostingAccount.CertificateInstalled", "ConsoleSession.Opened")
        school.token, school.certificate = r.json()["token"], r.json()["certificate"]
        h = school.headers

        r = client.post("/v1/console/licence-agreement", headers=h)
        assert r.status_code == 200
        did(r, "HostingAccount.LicenceAgreementAccepted")
        r = client.post("/v1/console/licence-agreement", headers=h)
        did(r)  # idempotent: no second event

        r = client.get("/v1/console/controller", headers=h)
        assert r.status_code == 200
        assert r.json()["state"] == "stopped" and r.json()["domain"] is None

        # Fiche 3: the controller's domain name.
        r = client.put("/v1/console/controller/domain", headers=h, json={"name": "monecole"})
        assert r.status_code == 200, r.text
        did(r, "Controller.DomainBound", "DomainName.Claimed")
        controller = r.json()
        assert controller["domain"] == "monecole.pronote-campus.net"
        assert controller["port"] == 21200
        assert controller["name"] == "monecole"
        assert controller["state"] == "stopped"
        assert r.headers["etag"] == f'"{controller["version"]}"'
        r = client.put("/v1/console/controller/domain", headers=h, json={"name": "MonEcole.pronote-campus.net"})
        assert r.status_code == 200 and r.json()["domain"] == "monecole.pronote-campus.net"
        did(r)  # the same name again: nothing happens

        # Fiche 4: the first superadministrator.
        r = client.post("/v1/console/superadministrator", headers=h, json={
            "first_name": "Anne", "last_name": "Durand", "login": "direction",
            "password": "Campus-Direction-2026!", "password_confirmation": "Campus-Direction-2026!"})
        assert r.status_code == 201, r.text
        did(r, "DirectoryUser.Created", "HostingAccount.FirstSuperadministratorCreated")
        superadmin = r.json()
        assert superadmin["login"] == "direction" and superadmin["status"] == "superadministrator"
        assert "password" not in superadmin

        # Fiche 8: directory users.
        r = client.post("/v1/console/users", headers=h, json={
            "login": "prof1", "last_name": "Dupont", "first_name": "Jean", "civility": "M."})
        assert r.status_code == 201, r.text
        did(r, "DirectoryUser.Created")
        prof1 = r.json()
        assert prof1["status"] == "user"
        assert len(prof1["password"]) == 14 and _strong(prof1["password"])
        assert r.headers["cache-control"] == "no-store"
        assert prof1["console_access"] is False and prof1["email"] is None

        r = client.post("/v1/console/users", headers=h, json={
            "login": "vie.scolaire", "last_name": "Bernard", "first_name": "Lucie", "status": "base_administrator",
            "email": "l.bernard@example.org"})
        assert r.status_code == 201, r.text
        did(r, "DirectoryUser.Created")
        assert r.json()["status"] == "base_administrator"

        r = client.get("/v1/console/users/prof1", headers=h)
        assert r.status_code == 200
        assert "password" not in r.json()
        assert r.headers["etag"] == '"1"' and r.json()["version"] == 1
        r = client.patch("/v1/console/users/prof1", headers=h,
                         json={"email": "j.dupont@example.org", "console_access": True})
        assert r.status_code == 200, r.text
        did(r, "DirectoryUser.EmailChanged", "DirectoryUser.ConsoleAccessChanged")
        assert r.json()["email"] == "j.dupont@example.org" and r.json()["console_access"] is True
        assert r.headers["etag"] == '"3"'
        r = client.patch("/v1/console/users/vie.scolaire", headers=h, json={"status": "user"})
        assert r.status_code == 200
        did(r, "DirectoryUser.StatusChanged")
        r = client.patch("/v1/console/users/vie.scolaire", headers=h, json={"status": "base_administrator"})
        did(r, "DirectoryUser.StatusChanged")
        read = client.get("/v1/console/users/prof1", headers=h).json()
        assert (read["email"], read["console_access"], read["status"]) == ("j.dupont@example.org", True, "user")
        r = client.get("/v1/console/users", headers=h)
        assert [u["login"] for u in r.json()["users"]] == ["direction", "prof1", "vie.scolaire"]

        # Fiche 3: the two plannings.
        r = client.get("/v1/console/plannings", headers=h)
        assert r.status_code == 200
        plannings = r.json()["plannings"]
        assert [p["name"] for p in plannings] == ["planning01", "planning02"]
        for p in plannings:
            assert {"id", "name", "port", "publication_name", "net_licence", "domain", "time_zone"} <= set(p)
            assert p["publication_name"] == p["name"] and p["net_licence"] is True
            assert p["time_zone"] == "Europe/Paris"
        p1, p2 = plannings[0]["id"], plannings[1]["id"]
        assert p1 != p2

        r = client.get(f"/v1/console/plannings/{p1}", headers=h)
        assert r.status_code == 200 and r.json() == plannings[0]
        assert r.headers["etag"] == f'"{plannings[0]["version"]}"'
        r = client.patch(f"/v1/console/plannings/{p1}", headers=h, json={
            "name": "edt-lycee", "publication_name": "EDT du lycée", "net_licence": False,
            "domain": "monecole-edt", "time_zone": "America/Martinique"})
        assert r.status_code == 200, r.text
        did(r, "Planning.Renamed", "Planning.PublicationNameChanged", "Planning.NetLicenceSwitched",
            "Planning.TimeZoneChanged", "Planning.DomainBound", "DomainName.Claimed")
        changed = r.json()
        assert changed["name"] == "edt-lycee" and changed["publication_name"] == "EDT du lycée"
        assert changed["net_licence"] is False and changed["time_zone"] == "America/Martinique"
        assert changed["domain"] == "monecole-edt.pronote-campus.net" and changed["port"] == 21201
        r = client.patch(f"/v1/console/plannings/{p2}", headers=h, json={"name": "edt-college", "domain": "monecole-2"})
        assert r.status_code == 200
        did(r, "Planning.Renamed", "Planning.DomainBound", "DomainName.Claimed")
        # The publication name follows the name until it is set (fiche 6).
        assert r.json()["publication_name"] == "edt-college" and r.json()["port"] == 21202

        # Fiche 4/8: profiles.
        r = client.put(f"/v1/console/plannings/{p1}/profiles/administration", headers=h,
                       json={"logins": ["direction", "vie.scolaire"]})
        assert r.status_code == 200, r.text
        did(r, "Planning.ProfilesAssigned")
        r = client.put(f"/v1/console/plannings/{p1}/profiles/modification", headers=h, json={"logins": ["prof1"]})
        assert r.status_code == 200
        did(r, "Planning.ProfilesAssigned")
        assert r.json()["profiles"] == {"administration": ["direction", "vie.scolaire"],
                                        "modification": ["prof1"], "consultation": []}
        # Moving a login to another profile takes it out of the first one.
        r = client.put(f"/v1/console/plannings/{p1}/profiles/consultation", headers=h,
                       json={"logins": ["vie.scolaire"]})
        did(r, "Planning.ProfilesAssigned")
        assert r.json()["profiles"] == {"administration": ["direction"], "modification": ["prof1"],
                                        "consultation": ["vie.scolaire"]}

        # Assignment templates: save planning01's, apply it to planning02.
        r = client.post("/v1/console/assignment-templates", headers=h, json={"name": "standard", "planning_id": p1})
        assert r.status_code == 201, r.text
        did(r, "HostingAccount.AssignmentTemplateSaved")
        assert r.json()["name"] == "standard"
        r = client.get("/v1/console/assignment-templates", headers=h)
        assert [t["name"] for t in r.json()["templates"]] == ["standard"]
        r = client.post(f"/v1/console/plannings/{p2}/assignment-template", headers=h, json={"name": "standard"})
        assert r.status_code == 200, r.text
        did(r, "Planning.ProfilesAssigned")
        assert r.json()["profiles"] == {"administration": ["direction"], "modification": ["prof1"],
                                        "consultation": ["vie.scolaire"]}

        # Fiche 5: activation.
        r = client.post("/v1/console/controller/activation", headers=h)
        assert r.status_code == 200, r.text
        did(r, "Controller.Activated")
        assert r.json()["state"] == "active"
        assert client.get("/v1/console/controller", headers=h).json()["state"] == "active"

        # Log out: the token stops working at once.
        r = client.delete("/v1/console/sessions/current", headers=h)
        assert r.status_code == 204 and r.content == b""
        did(r, "ConsoleSession.Closed")
        assert_problem(client.get("/v1/console/plannings", headers=h), 401)
        assert_problem(client.delete("/v1/console/sessions/current", headers=h), 401)

        r = login_with_certificate(client, school)
        assert r.status_code == 201
        did(r, "ConsoleSession.Opened")
        h = bearer(r.json()["token"])

        # Read everything back as left.
        plannings = client.get("/v1/console/plannings", headers=h).json()["plannings"]
        assert [(p["name"], p["domain"], p["port"]) for p in plannings] == [
            ("edt-lycee", "monecole-edt.pronote-campus.net", 21201),
            ("edt-college", "monecole-2.pronote-campus.net", 21202)]
        assert client.get("/v1/console/users/vie.scolaire", headers=h).json()["status"] == "base_administrator"

        # The history: every action once, with its actor, newest last.
        events = history(client, h)
        positions = [e["position"] for e in events]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
        for e in events:
            assert set(e) >= {"position", "timestamp", "type", "aggregate_id", "aggregate_type", "version",
                              "actor", "data"}
            assert e["type"].split(".")[0] == e["aggregate_type"]
        by_request: dict[str, list[str]] = {}
        for e in events:
            by_request.setdefault(e["request_id"], []).append(e["type"])
        for request_id, types in actions:
            assert sorted(by_request.pop(request_id, [])) == types, request_id
        assert by_request == {}, f"events from no known action: {by_request}"

        actors = Counter((e["type"], e["actor"]) for e in events)
        assert actors[("HostingAccount.Opened", "operator")] == 1
        assert actors[("Planning.Created", "operator")] == 2
        assert actors[("DirectoryUser.Created", school.actor)] == 3
        assert actors[("ConsoleSession.Opened", school.actor)] == 2
        assert actors[("Controller.Activated", school.actor)] == 1
        assert {e["actor"] for e in events} == {"operator", school.actor}


# -- operator password reset ------------------------------------------------------

def test_console_password_reset_refuses_old_password_and_sessions(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        school = ready_school(client, superadministrator=False, domain=None)
        old_password, old_headers = school.console_password, school.headers

        r = client.post(f"/v1/operator/accounts/{school.hosting_number}/console-password",
                        headers=operator_headers(client))
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        new_password = r.json()["console_password"]
        assert r.json()["hosting_number"] == school.hosting_number
        assert len(new_password) == 14 and new_password != old_password

        # Open sessions end.
        assert_problem(client.get("/v1/console/plannings", headers=old_headers), 401)
        # The old password no longer opens one, even with the certificate.
        assert_problem(login_with_certificate(client, school), 401, code="invalid_credentials")
        # The new one does, with the certificate installed earlier (no new certificate).
        school.console_password = new_password
        r = login_with_certificate(client, school)
        assert r.status_code == 201, r.text
        assert r.json()["certificate"] is None
        assert client.get("/v1/console/plannings", headers=bearer(r.json()["token"])).status_code == 200
        manager = bearer(r.json()["token"])
        # ...and still needs a certificate or the invoice number from a new machine.
        r = client.post("/v1/console/sessions",
                        json={"hosting_number": school.hosting_number, "password": new_password})
        assert_problem(r, 401, code="certificate_required")

        events = history(client, manager, type="HostingAccount.ConsolePasswordReset")
        assert len(events) == 1 and events[0]["actor"] == "operator"

        # The manager cannot reset it: the route is the operator's.
        r = client.post(f"/v1/operator/accounts/{school.hosting_number}/console-password", headers=manager)
        assert_problem(r, 401)
        assert client.get("/v1/console/plannings", headers=manager).status_code == 200
        unknown = "9" * 12 if school.hosting_number != "9" * 12 else "8" * 12
        assert_problem(client.post(f"/v1/operator/accounts/{unknown}/console-password",
                                   headers=operator_headers(client)), 404)


# -- history ----------------------------------------------------------------------

def _instant(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def test_history_filters_and_paging(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        school = ready_school(client)
        h = school.headers
        p1, p2 = school.planning_ids
        clock.advance(timedelta(hours=1))
        create_user(client, school, "prof1")
        create_user(client, school, "prof2")
        clock.advance(timedelta(hours=1))
        for name in ("a", "b", "c"):
            r = client.patch(f"/v1/console/plannings/{p1}", headers=h, json={"name": f"edt-{name}"})
            assert r.status_code == 200
        clock.advance(timedelta(hours=1))
        r = client.patch(f"/v1/console/plannings/{p2}", headers=h, json={"time_zone": "Europe/Brussels"})
        assert r.status_code == 200

        everything = history(client, h)
        assert len(everything) >= 15
        r = client.get("/v1/console/history", headers=h)
        assert r.status_code == 200 and set(r.json()) == {"events", "next"}
        assert r.json()["events"] == everything[:100] and r.json()["next"] is None

        # type: one, or several separated by commas.
        renamed = history(client, h, type="Planning.Renamed")
        assert [e["data"]["name"] for e in renamed] == ["edt-a", "edt-b", "edt-c"]
        both = history(client, h, type="Planning.Renamed,Planning.TimeZoneChanged")
        assert [e["type"] for e in both] == ["Planning.Renamed"] * 3 + ["Planning.TimeZoneChanged"]
        assert history(client, h, type="No.SuchEvent") == []

        # actor
        by_operator = history(client, h, actor="operator")
        by_manager = history(client, h, actor=school.actor)
        assert [e["type"] for e in by_operator] == [
            "HostingAccount.Opened", "Controller.Created", "Planning.Created", "Planning.Created"]
        assert sorted(e["position"] for e in by_operator + by_manager) == [e["position"] for e in everything]

        # aggregate_id: the whole life of one planning, versions 1..n.
        life = history(client, h, aggregate_id=p1)
        assert {e["aggregate_id"] for e in life} == {p1}
        assert [e["version"] for e in life] == list(range(1, len(life) + 1))
        assert life[0]["type"] == "Planning.Created" and len(life) == 4

        # since / until: inclusive bounds, any offset.
        creations = history(client, h, type="DirectoryUser.Created")
        t_prof1 = _instant(creations[1]["timestamp"])  # [0] is the superadministrator
        since = history(client, h, since=t_prof1.isoformat())
        assert since == [e for e in everything if _instant(e["timestamp"]) >= t_prof1]
        assert since[0]["type"] == "DirectoryUser.Created" and since[0]["data"]["login"] == "prof1"
        paris = t_prof1.astimezone(timezone(timedelta(hours=2))).isoformat()
        assert history(client, h, since=paris) == since
        until = history(client, h, until=t_prof1.isoformat())
        assert until == [e for e in everything if _instant(e["timestamp"]) <= t_prof1]
        t_last_rename = _instant(renamed[-1]["timestamp"])
        window = history(client, h, since=t_prof1.isoformat(), until=t_last_rename.isoformat())
        assert [e["type"] for e in window] == ["DirectoryUser.Created"] * 2 + ["Planning.Renamed"] * 3

        # after: a position cursor.
        middle = everything[len(everything) // 2]["position"]
        assert history(client, h, after=middle) == [e for e in everything if e["position"] > middle]

        # Paging with a small limit: next until null, nothing repeated or skipped.
        pages, after = [], None
        while True:
            params = {"limit": 4, **({"after": after} if after is not None else {})}
            page = client.get("/v1/console/history", headers=h, params=params).json()
            assert len(page["events"]) <= 4
            pages.append(page["events"])
            if page["next"] is None:
                break
            assert page["next"] == page["events"][-1]["position"]
            after = page["next"]
        assert [e for p in pages for e in p] == everything
        assert len(pages) == -(-len(everything) // 4)
        exact = client.get("/v1/console/history", headers=h, params={"limit": len(everything)}).json()
        assert exact["next"] is None and exact["events"] == everything

        # The cap: 1,000 is the most a page holds (issue 11).
        assert client.get("/v1/console/history", headers=h, params={"limit": 1000}).status_code == 200
        assert_problem(client.get("/v1/console/history", headers=h, params={"limit": 1001}), 422,
                       fields={"query.limit"})
        assert_problem(client.get("/v1/console/history", headers=h, params={"limit": 0}), 422,
                       fields={"query.limit"})


@pytest.mark.parametrize("profile", ["administration", "modification", "consultation"])
def test_profiles_accept_each_profile_name(sqlite_only_settings, clock, profile):
    with make_client(sqlite_only_settings, clock) as client:
        school = ready_school(client)
        p1 = school.planning_ids[0]
        r = client.put(f"/v1/console/plannings/{p1}/profiles/{profile}", headers=school.headers,
                       json={"logins": [SUPERADMIN_LOGIN]})
        assert r.status_code == 200, r.text
        assert r.json()["profiles"][profile] == [SUPERADMIN_LOGIN]
        assert client.get(f"/v1/console/plannings/{p1}", headers=school.headers).json()["profiles"][profile] == [
            SUPERADMIN_LOGIN]
        # Emptying a profile.
        r = client.put(f"/v1/console/plannings/{p1}/profiles/{profile}", headers=school.headers, json={"logins": []})
        assert r.status_code == 200 and r.json()["profiles"][profile] == []


def test_deactivation_and_reactivation(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        school = ready_school(client)
        h = school.headers
        assert client.post("/v1/console/controller/activation", headers=h).json()["state"] == "active"
        again = client.post("/v1/console/controller/activation", headers=h)
        assert again.status_code == 200 and again.json()["state"] == "active"
        r = client.delete("/v1/console/controller/activation", headers=h)
        assert r.status_code == 200 and r.json()["state"] == "stopped"
        assert client.post("/v1/console/controller/activation", headers=h).json()["state"] == "active"
        types = [e["type"] for e in history(client, h, type="Controller.Activated,Controller.Deactivated")]
        assert types == ["Controller.Activated", "Controller.Deactivated", "Controller.Activated"]


def test_accounts_are_created_with_distinct_plannings_and_controllers(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        a = open_account(client)
        b = open_account(client)
        ha, hb = console_login(client, a), console_login(client, b)
        accept_licence(client, ha)
        accept_licence(client, hb)
        pa, pb = list_plannings(client, a), list_plannings(client, b)
        assert not set(a.planning_ids) & set(b.planning_ids)
        assert [p["name"] for p in pb] == ["planning01", "planning02"]
        bind_domain(client, ha, "ecole-a")
        create_superadministrator(client, hb)
        assert client.get("/v1/console/controller", headers=hb).json()["domain"] is None
        assert [u["login"] for u in client.get("/v1/console/users", headers=ha).json()["users"]] == []
        assert pa[0]["name"] == "planning01"


def test_history_export_is_every_filtered_event_as_json_lines(sqlite_only_settings, clock):
    import json as _json

    with make_client(sqlite_only_settings, clock) as client:
        school = ready_school(client)
        paged = history(client, school.headers)
        r = client.get("/v1/console/history/export", headers=school.headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [_json.loads(line) for line in r.text.splitlines()]
        assert lines == paged
        only = client.get("/v1/console/history/export", headers=school.headers,
                          params={"type": "DirectoryUser.Created"})
        assert {_json.loads(line)["type"] for line in only.text.splitlines()} == {"DirectoryUser.Created"}
