"""Every refusal of the console API, as a client sees it: status, problem+json body
naming the problem and each offending field, headers; never a 500 or a traceback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from api_helpers import (
    PROBLEM,
    SUPERADMIN_LOGIN,
    SUPERADMIN_PASSWORD,
    accept_licence,
    assert_no_traceback,
    assert_problem,
    bearer,
    bind_domain,
    cheap_argon2,
    console_login,
    create_superadministrator,
    create_user,
    make_client,
    messages_for,
    open_account,
    operator_headers,
    ready_school,
)
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import BaseModel

from campus.api.handlers import api

JSON = {"Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


@pytest.fixture
def client(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as c:
        yield c


@pytest.fixture
def school(client):
    return ready_school(client)


# -- 400: the body is not JSON ------------------------------------------------------

@pytest.mark.parametrize("raw, detail", [
    (b'{"login": "prof1", ', "not valid JSON"),
    (b"{'login': 'prof1'}", "not valid JSON"),
    (b'{"login": NaN}', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"", "JSON body is required"),
    (b"   \n", "JSON body is required"),
])
def test_400_malformed_or_empty_body(client, school, raw, detail):
    r = client.post("/v1/console/users", headers={**school.headers, **JSON}, content=raw)
    assert_problem(r, 400, detail=detail)


def test_400_wrong_content_type(client, school):
    r = client.post("/v1/console/users", headers={**school.headers, "Content-Type": "text/plain"},
                    content=b'{"login": "prof1", "last_name": "D", "first_name": "J"}')
    assert_problem(r, 400, detail="application/json")
    r = client.post("/v1/console/users", headers=school.headers,
                    data={"login": "prof1", "last_name": "D", "first_name": "J"})
    assert_problem(r, 400, detail="application/json")
    # A +json media type and a charset are fine.
    r = client.post("/v1/console/users", headers={**school.headers, "Content-Type": "application/json; charset=utf-8"},
                    content=b'{"login": "prof1", "last_name": "D", "first_name": "J"}')
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("raw", [b"[]", b'["login"]', b'"prof1"', b"42", b"true", b"null"])
def test_422_body_that_is_not_an_object(client, school, raw):
    r = client.post("/v1/console/users", headers={**school.headers, **JSON}, content=raw)
    body = assert_problem(r, 422, fields={"body"}, detail="JSON object")
    assert body["errors"][0]["message"] == "must be a JSON object"


# -- 401: credentials -----------------------------------------------------------------

def test_401_missing_or_invalid_credentials(client, school):
    routes = [("GET", "/v1/console/plannings"), ("POST", "/v1/console/licence-agreement"),
              ("DELETE", "/v1/console/sessions/current"), ("GET", "/v1/console/history")]
    for method, path in routes:
        assert_problem(client.request(method, path), 401, code="missing_token", detail="Bearer")
        for header in (f"Basic {school.token}", f"Token {school.token}", "Bearer", "Bearer   ", school.token):
            r = client.request(method, path, headers={"Authorization": header})
            assert_problem(r, 401, code="missing_token")
        assert_problem(client.request(method, path, headers=bearer("no-such-token")), 401, code="invalid_token")
        # The operator token is not a console token.
        assert_problem(client.request(method, path, headers=operator_headers(client)), 401, code="invalid_token")
    # The scheme is case-insensitive.
    assert client.get("/v1/console/plannings", headers={"Authorization": f"bearer {school.token}"}).status_code == 200

    new_account = {"establishment": "X", "manager": {"name": "M", "email": "m@example.org"}}
    operator_routes = [("POST", "/v1/operator/accounts", new_account),
                       ("GET", f"/v1/operator/accounts/{school.hosting_number}", None),
                       ("POST", f"/v1/operator/accounts/{school.hosting_number}/console-password", None)]
    for method, path, body in operator_routes:
        kwargs = {"json": body} if body else {}
        assert_problem(client.request(method, path, **kwargs), 401, code="missing_token")
        # A console token is not the operator token.
        assert_problem(client.request(method, path, headers=school.headers, **kwargs), 401, code="invalid_token")
        assert_problem(client.request(method, path, headers=bearer("operator-test-token-WRONG"), **kwargs), 401,
                       code="invalid_token")
    # Nothing was reset by those attempts: the manager's session still works.
    assert client.get("/v1/console/plannings", headers=school.headers).status_code == 200


@pytest.mark.parametrize("case", ["no_token_invalid_body", "no_token_malformed_json", "licence_invalid_body"])
def test_credentials_are_checked_before_the_body(client, case):
    """401/403 must not depend on the body: an anonymous client learns nothing of the
    validation rules, and before the licence agreement nothing of the console works."""
    school = open_account(client)
    headers = console_login(client, school)
    if case == "no_token_invalid_body":
        r = client.post("/v1/console/users", json={"login": 12})
        assert_problem(r, 401)
    elif case == "no_token_malformed_json":
        r = client.post("/v1/console/users", headers=JSON, content=b"{oops")
        assert_problem(r, 401)
    else:
        r = client.post("/v1/console/users", headers=headers, json={"nickname": "x"})
        assert_problem(r, 403, code="licence_not_accepted")


def test_401_after_logout_and_on_an_expired_session(client, school, clock):
    from datetime import timedelta

    other = client.post("/v1/console/sessions", json={
        "hosting_number": school.hosting_number, "password": school.console_password,
        "certificate": school.certificate}).json()["token"]
    assert client.delete("/v1/console/sessions/current", headers=school.headers).status_code == 204
    assert_problem(client.get("/v1/console/plannings", headers=school.headers), 401, code="invalid_token")
    assert client.get("/v1/console/plannings", headers=bearer(other)).status_code == 200
    clock.advance(timedelta(hours=13))
    assert_problem(client.get("/v1/console/plannings", headers=bearer(other)), 401, code="invalid_token")


# -- 403: licence ------------------------------------------------------------------

def test_403_before_the_licence_agreement(client):
    school = open_account(client)
    headers = console_login(client, school)
    for method, path, body in [("GET", "/v1/console/plannings", None), ("GET", "/v1/console/history", None),
                               ("PUT", "/v1/console/controller/domain", {"name": "monecole"}),
                               ("POST", "/v1/console/controller/activation", None)]:
        r = client.request(method, path, headers=headers, **({"json": body} if body else {}))
        assert_problem(r, 403, code="licence_not_accepted",
                       detail=("licence agreement", "POST /v1/console/licence-agreement"))
    accept_licence(client, headers)
    assert client.get("/v1/console/plannings", headers=headers).status_code == 200


# -- 404 ---------------------------------------------------------------------------

def test_404_unknown_things(client, school):
    h = school.headers
    assert_problem(client.get("/v1/nope"), 404, detail="no route for GET /v1/nope")
    p1 = school.planning_ids[0]
    r = client.post("/v1/console/assignment-templates", headers=h, json={"name": "t", "planning_id": p1})
    assert r.status_code == 201
    unknown = str(uuid.uuid4())
    for method, suffix, body in [("GET", "", None), ("PATCH", "", {"name": "x"}),
                                 ("PUT", "/profiles/consultation", {"logins": []}),
                                 ("POST", "/assignment-template", {"name": "t"})]:
        for planning_id in (unknown, "not-a-uuid", "12345"):
            r = client.request(method, f"/v1/console/plannings/{planning_id}{suffix}", headers=h,
                               **({"json": body} if body else {}))
            assert_problem(r, 404, detail="planning not found")
    assert_problem(client.get(f"/v1/console/plannings/{unknown}", headers=h), 404, detail="planning not found")
    assert_problem(client.post("/v1/console/assignment-templates", headers=h,
                               json={"name": "t", "planning_id": unknown}), 404, detail="planning not found")
    assert_problem(client.post(f"/v1/console/plannings/{p1}/assignment-template", headers=h,
                               json={"name": "nope"}), 404, detail="nope")

    assert_problem(client.get("/v1/console/users/nobody", headers=h), 404, detail="nobody")
    assert_problem(client.patch("/v1/console/users/nobody", headers=h, json={"email": "a@example.org"}), 404)

    r = client.put(f"/v1/console/plannings/{p1}/profiles/director", headers=h, json={"logins": []})
    assert_problem(r, 404, detail=("director", "administration", "modification", "consultation"))
    assert_problem(client.get("/v1/operator/accounts/000000000000", headers=operator_headers(client)), 404)


# -- 405 ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("DELETE", "/v1/console/plannings"), ("PUT", "/healthz"), ("GET", "/v1/console/sessions"),
    ("POST", "/v1/console/users/prof1"), ("DELETE", "/v1/operator/accounts"),
])
def test_405_wrong_method_is_a_problem(client, method, path):
    r = client.request(method, path)
    assert_problem(r, 405, detail=(method, path))
    assert r.headers.get("allow"), "a 405 names the allowed methods"
    assert method not in r.headers["allow"]


# -- 409 ---------------------------------------------------------------------------

def test_409_duplicate_login_in_one_school(client, school):
    create_user(client, school, "prof1")
    for login in ("prof1", "PROF1", " prof1 ", SUPERADMIN_LOGIN):
        r = client.post("/v1/console/users", headers=school.headers,
                        json={"login": login, "last_name": "Autre", "first_name": "Personne"})
        assert_problem(r, 409, detail=login.strip())
    # The first one is untouched.
    assert client.get("/v1/console/users/prof1", headers=school.headers).json()["last_name"] == "Dupont"


def test_409_domain_names_are_unique_across_tenants(client, school):
    other = ready_school(client, domain=None, superadministrator=False, establishment="Autre école")
    r = client.put("/v1/console/controller/domain", headers=other.headers, json={"name": "monecole"})
    assert_problem(r, 409, detail="monecole.pronote-campus.net")
    assert school.hosting_number not in r.text and school.establishment not in r.text
    # ... for a planning's domain too, and against the school's own controller.
    p = other.planning_ids[0]
    assert_problem(client.patch(f"/v1/console/plannings/{p}", headers=other.headers, json={"domain": "monecole"}), 409)
    assert_problem(client.patch(f"/v1/console/plannings/{school.planning_ids[0]}", headers=school.headers,
                                json={"domain": "monecole"}), 409)
    bind_domain(client, other.headers, "autre")
    r = client.patch(f"/v1/console/plannings/{p}", headers=other.headers, json={"domain": "Autre"})
    assert_problem(r, 409, detail="autre.pronote-campus.net")
    assert client.get("/v1/console/controller", headers=other.headers).json()["domain"] == "autre.pronote-campus.net"
    # A name released by its holder can be taken by another tenant.
    bind_domain(client, school.headers, "monecole-nouveau")
    assert bind_domain(client, other.headers, "monecole")["domain"] == "monecole.pronote-campus.net"


def test_409_second_superadministrator(client, school):
    r = client.post("/v1/console/superadministrator", headers=school.headers, json={
        "first_name": "B", "last_name": "C", "login": "direction2",
        "password": SUPERADMIN_PASSWORD, "password_confirmation": SUPERADMIN_PASSWORD})
    assert_problem(r, 409, detail="superadministrator already exists")
    assert_problem(client.get("/v1/console/users/direction2", headers=school.headers), 404)


def test_409_activation_needs_domain_and_superadministrator(client):
    school = ready_school(client, domain=None, superadministrator=False)
    h = school.headers
    assert_problem(client.post("/v1/console/controller/activation", headers=h), 409, code="domain_required",
                   detail="domain")
    bind_domain(client, h, "monecole")
    assert_problem(client.post("/v1/console/controller/activation", headers=h), 409,
                   code="superadministrator_required", detail="superadministrator")
    create_user(client, school, "adjoint", status="base_administrator")
    assert_problem(client.post("/v1/console/controller/activation", headers=h), 409,
                   code="superadministrator_required")
    assert client.get("/v1/console/controller", headers=h).json()["state"] == "stopped"
    create_superadministrator(client, h)
    assert client.post("/v1/console/controller/activation", headers=h).json()["state"] == "active"


def test_409_demoting_an_administration_holder(client, school):
    create_user(client, school, "adjoint", status="base_administrator")
    p1 = school.planning_ids[0]
    r = client.put(f"/v1/console/plannings/{p1}/profiles/administration", headers=school.headers,
                   json={"logins": ["adjoint"]})
    assert r.status_code == 200
    r = client.patch("/v1/console/users/adjoint", headers=school.headers, json={"status": "user"})
    assert_problem(r, 409, detail=("adjoint", "administration", "planning01"))
    assert client.get("/v1/console/users/adjoint", headers=school.headers).json()["status"] == "base_administrator"
    # Once removed from the profile, the demotion works.
    client.put(f"/v1/console/plannings/{p1}/profiles/administration", headers=school.headers, json={"logins": []})
    r = client.patch("/v1/console/users/adjoint", headers=school.headers, json={"status": "user"})
    assert r.status_code == 200 and r.json()["status"] == "user"


def test_409_two_plannings_with_one_name(client, school):
    p1, p2 = school.planning_ids
    r = client.patch(f"/v1/console/plannings/{p2}", headers=school.headers, json={"name": "PLANNING01"})
    assert_problem(r, 409, detail="PLANNING01")


# -- 412: If-Match -------------------------------------------------------------------

def test_412_stale_if_match_on_planning(client, school):
    h = school.headers
    p1 = school.planning_ids[0]
    r = client.get(f"/v1/console/plannings/{p1}", headers=h)
    etag = r.headers["etag"]
    assert etag == f'"{r.json()["version"]}"'
    r = client.patch(f"/v1/console/plannings/{p1}", headers={**h, "If-Match": etag}, json={"name": "edt"})
    assert r.status_code == 200
    new_etag = r.headers["etag"]
    assert new_etag != etag and new_etag == f'"{r.json()["version"]}"'
    assert client.get(f"/v1/console/plannings/{p1}", headers=h).headers["etag"] == new_etag

    r = client.patch(f"/v1/console/plannings/{p1}", headers={**h, "If-Match": etag}, json={"name": "stale"})
    assert_problem(r, 412, detail=(etag, new_etag))
    r = client.put(f"/v1/console/plannings/{p1}/profiles/consultation", headers={**h, "If-Match": etag},
                   json={"logins": [SUPERADMIN_LOGIN]})
    assert_problem(r, 412)
    after = client.get(f"/v1/console/plannings/{p1}", headers=h).json()
    assert after["name"] == "edt" and after["profiles"]["consultation"] == []

    for matching in (new_etag, f"W/{new_etag}", f'"999", {new_etag}', "*"):
        r = client.patch(f"/v1/console/plannings/{p1}", headers={**h, "If-Match": matching},
                         json={"time_zone": "Europe/Paris"})
        assert r.status_code == 200, (matching, r.text)


def test_412_stale_if_match_on_user(client, school):
    h = school.headers
    create_user(client, school, "prof1")
    r = client.get("/v1/console/users/prof1", headers=h)
    etag = r.headers["etag"]
    assert etag == '"1"'
    r = client.patch("/v1/console/users/prof1", headers={**h, "If-Match": etag}, json={"email": "p@example.org"})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    r = client.patch("/v1/console/users/prof1", headers={**h, "If-Match": etag}, json={"email": "q@example.org"})
    assert_problem(r, 412)
    assert client.get("/v1/console/users/prof1", headers=h).json()["email"] == "p@example.org"
    r = client.patch("/v1/console/users/prof1", headers={**h, "If-Match": '"2"'}, json={"email": "q@example.org"})
    assert r.status_code == 200 and r.json()["email"] == "q@example.org"


def test_412_stale_if_match_on_controller_domain(client, school):
    h = school.headers
    etag = client.get("/v1/console/controller", headers=h).headers["etag"]
    bind_domain(client, h, "monecole-bis")
    r = client.put("/v1/console/controller/domain", headers={**h, "If-Match": etag}, json={"name": "tertio"})
    assert_problem(r, 412)
    assert client.get("/v1/console/controller", headers=h).json()["name"] == "monecole-bis"


# -- 413: body over the cap --------------------------------------------------------------

def test_413_body_over_the_cap(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock, max_body_bytes=1024) as client:
        school = ready_school(client)
        big = json.dumps({"login": "prof1", "last_name": "x" * 2000, "first_name": "J"}).encode()
        r = client.post("/v1/console/users", headers={**school.headers, **JSON}, content=big)
        assert_problem(r, 413, detail="1024")

        def chunks() -> Iterator[bytes]:
            for _ in range(20):
                yield b" " * 100
            yield big

        r = client.post("/v1/console/users", headers={**school.headers, **JSON}, content=chunks())
        assert_problem(r, 413, detail="1024")

        # Just under the cap: judged on its content, not its size.
        small = json.dumps({"login": "prof1", "last_name": "x" * 101, "first_name": "J"}).encode()
        assert len(small) < 1024
        assert_problem(client.post("/v1/console/users", headers={**school.headers, **JSON}, content=small), 422,
                       fields={"last_name"})
        assert_problem(client.get("/v1/console/users/prof1", headers=school.headers), 404)


# -- 422: invalid values -------------------------------------------------------------------

RULES = {
    "length": "at least 12 characters",
    "letter": "at least one letter",
    "digit": "at least one digit",
    "special": "special character",
    "case": "lower-case and upper-case",
}


@pytest.mark.parametrize("password, failed", [
    ("abc", {"length", "digit", "special", "case"}),
    ("abcdefghijklmnop", {"digit", "special", "case"}),
    ("1234567890123", {"letter", "special", "case"}),
    ("!!!!!!!!!!!!!!", {"letter", "digit", "case"}),
    ("ABCDEFGHIJ12!", {"case"}),
    ("Abcdefghijkl1", {"special"}),
    ("Abc1!", {"length"}),
])
def test_422_password_rules_each_failed_rule_listed(client, password, failed):
    school = ready_school(client, superadministrator=False)
    r = client.post("/v1/console/superadministrator", headers=school.headers, json={
        "first_name": "A", "last_name": "D", "login": "direction",
        "password": password, "password_confirmation": password})
    body = assert_problem(r, 422, fields={"password"})
    messages = messages_for(body, "password")
    assert len(messages) == len(failed), messages
    for rule in failed:
        assert any(RULES[rule] in m for m in messages), (rule, messages)
    for rule in set(RULES) - failed:
        assert not any(RULES[rule] in m for m in messages), (rule, messages)
    assert all(message in body["detail"] for message in messages), body["detail"]
    assert password not in r.text or len(password) < 6
    assert_problem(client.get("/v1/console/users/direction", headers=school.headers), 404)


def test_422_password_confirmation_mismatch_and_rules_together(client):
    school = ready_school(client, superadministrator=False)
    url = "/v1/console/superadministrator"
    base = {"first_name": "A", "last_name": "D", "login": "direction"}
    r = client.post(url, headers=school.headers,
                    json={**base, "password": SUPERADMIN_PASSWORD, "password_confirmation": SUPERADMIN_PASSWORD + "x"})
    body = assert_problem(r, 422, fields={"password_confirmation"}, detail="password_confirmation")
    assert "match" in body["errors"][0]["message"]
    r = client.post(url, headers=school.headers, json={**base, "password": "short", "password_confirmation": "other"})
    body = assert_problem(r, 422, fields={"password", "password_confirmation"})
    assert len(messages_for(body, "password")) == 4
    # Missing fields are each named.
    r = client.post(url, headers=school.headers, json={"login": "direction"})
    assert_problem(r, 422, fields={"first_name", "last_name", "password", "password_confirmation"})


def test_422_bad_emails(client, school):
    r = client.post("/v1/console/users", headers=school.headers,
                    json={"login": "prof1", "last_name": "D", "first_name": "J", "email": "not-an-email"})
    assert_problem(r, 422, fields={"email"}, detail="email")
    create_user(client, school, "prof1")
    assert_problem(client.patch("/v1/console/users/prof1", headers=school.headers, json={"email": "a@b@c"}), 422,
                   fields={"email"})
    r = client.post("/v1/operator/accounts", headers=operator_headers(client),
                    json={"establishment": "X", "manager": {"name": "M", "email": "nope"}})
    assert_problem(r, 422, fields={"manager.email"})


def test_422_unknown_fields_are_named(client, school):
    r = client.post("/v1/console/users", headers=school.headers,
                    json={"login": "prof1", "last_name": "D", "first_name": "J", "nickname": "jj", "age": 3})
    body = assert_problem(r, 422, fields={"nickname", "age"}, detail="nickname")
    assert all("not permitted" in e["message"] for e in body["errors"])
    p1 = school.planning_ids[0]
    assert_problem(client.patch(f"/v1/console/plannings/{p1}", headers=school.headers, json={"port": 9999}), 422,
                   fields={"port"})
    r = client.post("/v1/operator/accounts", headers=operator_headers(client),
                    json={"establishment": "X", "manager": {"name": "M", "email": "m@example.org", "phone": "1"}})
    assert_problem(r, 422, fields={"manager.phone"})


def test_422_wrong_types_each_field_named(client, school):
    r = client.post("/v1/console/users", headers=school.headers,
                    json={"login": 12, "last_name": ["D"], "first_name": {"x": 1}, "status": "king"})
    assert_problem(r, 422, fields={"login", "last_name", "first_name", "status"})
    p1 = school.planning_ids[0]
    r = client.patch(f"/v1/console/plannings/{p1}", headers=school.headers,
                     json={"net_licence": "maybe", "name": 3, "time_zone": ["Europe/Paris"]})
    assert_problem(r, 422, fields={"net_licence", "name", "time_zone"})
    r = client.put(f"/v1/console/plannings/{p1}/profiles/consultation", headers=school.headers,
                   json={"logins": "direction"})
    assert_problem(r, 422, fields={"logins"})
    r = client.put(f"/v1/console/plannings/{p1}/profiles/consultation", headers=school.headers,
                   json={"logins": ["direction", 7]})
    assert_problem(r, 422, fields={"logins.1"})
    r = client.post("/v1/console/users", headers=school.headers,
                    json={"login": "", "last_name": " ", "first_name": "J"})
    assert_problem(r, 422, fields={"login", "last_name"})
    r = client.post("/v1/console/users", headers=school.headers,
                    json={"login": "bad login!", "last_name": "D", "first_name": "J"})
    assert_problem(r, 422, fields={"login"})


def test_422_login_form(client):
    school = open_account(client)
    base = {"hosting_number": school.hosting_number, "password": school.console_password}
    for bad in ("12345", "12345678901a", "1234567890123", 123456789012, ""):
        r = client.post("/v1/console/sessions", json={**base, "hosting_number": bad})
        assert_problem(r, 422, fields={"hosting_number"})
    r = client.post("/v1/console/sessions", json={**base, "invoice_number": "12"})
    assert_problem(r, 422, fields={"invoice_number"})
    r = client.post("/v1/console/sessions", json={})
    assert_problem(r, 422, fields={"hosting_number", "password"})


def test_422_time_zone_and_domain_labels(client, school):
    p1 = school.planning_ids[0]
    for zone in ("Mars/Olympus", "europe/paris", "Paris", "UTC+2", "../etc/passwd", ""):
        r = client.patch(f"/v1/console/plannings/{p1}", headers=school.headers, json={"time_zone": zone})
        body = assert_problem(r, 422, fields={"time_zone"})
        if zone:
            assert zone in body["errors"][0]["message"]
    assert client.get(f"/v1/console/plannings/{p1}", headers=school.headers).json()["time_zone"] == "Europe/Paris"
    for label in ("-bad", "bad-", "mon_ecole", "mon ecole", "école", "a" * 64, "a.b", ""):
        assert_problem(client.put("/v1/console/controller/domain", headers=school.headers, json={"name": label}), 422,
                       fields={"name"})
        if label:
            assert_problem(client.patch(f"/v1/console/plannings/{p1}", headers=school.headers,
                                        json={"domain": label}), 422, fields={"domain"})
    assert client.get("/v1/console/controller", headers=school.headers).json()["name"] == "monecole"


def test_422_console_access_needs_an_email(client, school):
    create_user(client, school, "prof1")
    r = client.patch("/v1/console/users/prof1", headers=school.headers, json={"console_access": True})
    assert_problem(r, 422, fields={"console_access"}, detail="e-mail")
    r = client.patch("/v1/console/users/prof1", headers=school.headers,
                     json={"console_access": True, "email": "p@example.org"})
    assert r.status_code == 200 and r.json()["console_access"] is True
    # Removing the e-mail while console access stays on is refused too.
    r = client.patch("/v1/console/users/prof1", headers=school.headers, json={"email": None})
    assert_problem(r, 422, fields={"console_access"})
    assert client.get("/v1/console/users/prof1", headers=school.headers).json()["email"] == "p@example.org"


def test_422_profile_lists(client, school):
    create_user(client, school, "prof1")
    p1 = school.planning_ids[0]
    url = f"/v1/console/plannings/{p1}/profiles/administration"
    r = client.put(url, headers=school.headers, json={"logins": [SUPERADMIN_LOGIN, "prof1"]})
    body = assert_problem(r, 422, fields={"logins[1]"}, detail="prof1")
    assert "Administration" in body["errors"][0]["message"]
    r = client.put(url, headers=school.headers, json={"logins": ["ghost", SUPERADMIN_LOGIN, "prof1", "phantom"]})
    body = assert_problem(r, 422, fields={"logins[0]", "logins[2]", "logins[3]"})
    assert "ghost" in messages_for(body, "logins[0]")[0] and "phantom" in messages_for(body, "logins[3]")[0]
    r = client.put(f"/v1/console/plannings/{p1}/profiles/consultation", headers=school.headers,
                   json={"logins": ["prof1", "ghost"]})
    assert_problem(r, 422, fields={"logins[1]"}, detail="ghost")
    assert client.get(f"/v1/console/plannings/{p1}", headers=school.headers).json()["profiles"] == {
        "administration": [], "modification": [], "consultation": []}


def test_422_history_parameters(client, school):
    h = school.headers
    url = "/v1/console/history"
    assert_problem(client.get(url, headers=h, params={"since": "2026-09-01T08:00:00"}), 422, fields={"query.since"})
    assert_problem(client.get(url, headers=h, params={"until": "yesterday"}), 422, fields={"query.until"})
    assert_problem(client.get(url, headers=h, params={"limit": 1001}), 422, fields={"query.limit"})
    assert_problem(client.get(url, headers=h, params={"limit": "many"}), 422, fields={"query.limit"})
    assert_problem(client.get(url, headers=h, params={"after": -1}), 422, fields={"query.after"})
    assert_problem(client.get(url, headers=h, params={"tenant": "other"}), 422, fields={"query.tenant"})
    r = client.get(url, headers=h, params={"since": "2026-09-01T08:00:00+00:00"})
    assert r.status_code == 200


# -- null values in PATCH bodies -----------------------------------------------------

def test_patch_user_with_null_external_ids_is_not_a_500(client, school):
    create_user(client, school, "prof1", external_ids={"ldap": "uid=prof1"})
    r = client.patch("/v1/console/users/prof1", headers=school.headers, json={"external_ids": None})
    assert r.status_code < 500, r.text
    assert_no_traceback(r)
    if r.status_code >= 400:
        assert_problem(r, 422, fields={"external_ids"})


def test_patch_user_with_null_console_access_keeps_a_boolean(client, school):
    create_user(client, school, "prof1")
    r = client.patch("/v1/console/users/prof1", headers=school.headers, json={"console_access": None})
    assert r.status_code in (200, 422), r.text
    assert r.status_code == 422 or isinstance(r.json()["console_access"], bool), r.text
    assert isinstance(client.get("/v1/console/users/prof1", headers=school.headers).json()["console_access"], bool)


def test_patch_planning_with_null_net_licence_keeps_a_boolean(client, school):
    p1 = school.planning_ids[0]
    r = client.patch(f"/v1/console/plannings/{p1}", headers=school.headers, json={"net_licence": None})
    assert r.status_code in (200, 422), r.text
    assert r.status_code == 422 or isinstance(r.json()["net_licence"], bool), r.text
    assert isinstance(client.get(f"/v1/console/plannings/{p1}", headers=school.headers).json()["net_licence"], bool)


# -- random JSON never breaks the server ---------------------------------------------

SAMPLES = ["prof1", SUPERADMIN_LOGIN, "user", "base_administrator", "superadministrator", "M.", "Mme",
           "Europe/Paris", "Mars/Olympus", "monecole", "a@example.org", "", " ", "\x00", "é" * 70, "standard",
           "123456789012", "1234567890"]
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | st.sampled_from(SAMPLES))


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy:
    """Any JSON value (st.recursive over scalars, lists and objects)."""
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                        max_leaves=12)


def field_names(method: str, path: str) -> list[str]:
    """The fields a route's body declares, nested models' fields included."""
    endpoint = next(ep for ep in api.endpoints if ep.method == method and ep.path == path)
    names: set[str] = set()
    models = [endpoint.body]
    while models:
        model = models.pop()
        for name, info in model.model_fields.items():
            names.add(name)
            for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    models.append(arg)
    return sorted(names)


def bodies_for(method: str, path: str, valid: dict) -> st.SearchStrategy:
    """Random JSON for a route: a valid body with fields replaced, added or removed,
    an object of the route's own field names, or any JSON value at all."""
    known = st.sampled_from(field_names(method, path))
    keys = known | st.text(max_size=8)
    values = json_values(keys)
    mutated = st.tuples(st.dictionaries(known | keys, values, max_size=2), st.sets(st.sampled_from(sorted(valid)))).map(
        lambda change: {**{k: v for k, v in valid.items() if k not in change[1]}, **change[0]})
    return mutated | st.dictionaries(known, values, max_size=6) | st.dictionaries(keys, values, max_size=6) | values


def test_random_json_never_breaks_the_server(sqlite_only_settings, clock):
    with make_client(sqlite_only_settings, clock) as client:
        school = ready_school(client)
        create_user(client, school, "prof1")
        p1 = school.planning_ids[0]
        client.post("/v1/console/assignment-templates", headers=school.headers,
                    json={"name": "standard", "planning_id": p1})
        params = {"login": "prof1", "planning_id": p1, "profile": "modification"}
        valid_bodies = {
            ("POST", "/v1/console/users"): {"login": "fuzz", "last_name": "D", "first_name": "J"},
            ("PATCH", "/v1/console/users/{login}"): {"email": "p@example.org"},
            ("PATCH", "/v1/console/plannings/{planning_id}"): {"name": "edt", "time_zone": "Europe/Paris"},
            ("PUT", "/v1/console/plannings/{planning_id}/profiles/{profile}"): {"logins": ["prof1"]},
            ("POST", "/v1/console/plannings/{planning_id}/assignment-template"): {"name": "standard"},
            ("POST", "/v1/console/assignment-templates"): {"name": "standard", "planning_id": p1},
            ("PUT", "/v1/console/controller/domain"): {"name": "monecole"},
            ("POST", "/v1/console/superadministrator"): {
                "first_name": "A", "last_name": "D", "login": "direction2", "password": SUPERADMIN_PASSWORD,
                "password_confirmation": SUPERADMIN_PASSWORD},
            ("POST", "/v1/console/sessions"): {"hosting_number": school.hosting_number,
                                               "password": school.console_password, "certificate": school.certificate},
            ("POST", "/v1/operator/accounts"): {"establishment": "X",
                                                "manager": {"name": "M", "email": "m@example.org"}},
        }
        headers_for = {"/v1/console/sessions": {}, "/v1/operator/accounts": operator_headers(client)}

        def target(route: tuple[str, str]) -> tuple[str, str, dict]:
            return route[0], route[1].format(**params), headers_for.get(route[1], school.headers)

        requests = st.sampled_from(sorted(valid_bodies)).flatmap(
            lambda route: st.tuples(st.just(target(route)), bodies_for(*route, valid_bodies[route])))

        @hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(request=requests)
        def check(request):
            (method, path, headers), body = request
            raw = json.dumps(body, ensure_ascii=False).encode()
            r = client.request(method, path, headers={**headers, **JSON}, content=raw)
            assert r.status_code < 500, (method, path, body, r.status_code, r.text)
            assert_no_traceback(r)
            if r.status_code >= 400:
                assert r.headers["content-type"].split(";")[0] == PROBLEM
                problem = r.json()
                assert problem["status"] == r.status_code and problem["detail"]
                for error in problem.get("errors", []):
                    assert error["field"] and error["message"]

        # Deterministic cases besides the random ones: each declared field set to null.
        for route, valid in valid_bodies.items():
            for name in field_names(*route):
                check = example(request=(target(route), {**valid, name: None}))(check)
        check()
