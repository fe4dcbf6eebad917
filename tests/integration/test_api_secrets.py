"""No secret leaves the server except in the one response that first shows it.

The walkthrough runs while every response (body and headers) and every structlog
event is collected; then the full history is read. Each secret — console
passwords (before and after a reset), the invoice number, user passwords, the
superadministrator's password, session tokens, the certificate, the operator
token, and passwords of refused attempts — must appear in no response other than
the one that displays it, in no log line, and in no history event.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import httpx
import pytest
import structlog
from api_helpers import (
    SUPERADMIN_PASSWORD,
    assert_problem,
    bearer,
    make_client,
    operator_headers,
)
from structlog.testing import capture_logs

import campus.api.app
import campus.api.middleware
import campus.api.problems
import campus.api.routing
from campus.infra.redaction import REDACTED


@dataclass
class Seen:
    method: str
    path: str
    status: int
    request_id: str
    text: str  # headers and body, as the client received them


@pytest.fixture
def fresh_loggers(monkeypatch):
    """Loggers that honour capture_logs even if logging was configured (and cached) earlier.

    capture_logs replaces the processors only: a level set by an earlier configuration
    (`campus views rebuild` configures warning) would still drop the info lines, so the
    defaults come back for this test (the autouse fixture restores the configuration after).
    """
    structlog.reset_defaults()
    for module, name in ((campus.api.middleware, "campus.access"), (campus.api.routing, "campus.api"),
                         (campus.api.problems, "campus.api"), (campus.api.app, "campus")):
        monkeypatch.setattr(module, "log", structlog.get_logger(name))


def test_no_secret_in_any_response_log_line_or_history_event(sqlite_only_settings, clock, fresh_loggers):
    seen: list[Seen] = []

    def record(response: httpx.Response) -> None:
        response.read()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        seen.append(Seen(response.request.method, response.request.url.path, response.status_code,
                         response.headers.get("x-request-id", ""), f"{headers}\n\n{response.text}"))

    def shown_in(value: str) -> list[int]:
        return [i for i, s in enumerate(seen) if value in s.text]

    secrets: dict[str, str] = {}
    displayed_by: dict[str, int] = {}  # secret name -> index of the response that shows it

    def shows(name: str, value: str) -> None:
        secrets[name] = value
        displayed_by[name] = len(seen) - 1
        assert "no-store" in seen[-1].text.lower(), f"{name} is shown without Cache-Control: no-store"

    with capture_logs() as logs:
        with make_client(sqlite_only_settings, clock) as client:
            client.event_hooks = {"request": [], "response": [record]}
            op = operator_headers(client)
            secrets["operator token"] = op["Authorization"].split(" ", 1)[1]

            r = client.post("/v1/operator/accounts", headers=op, json={
                "establishment": "Lycée Jean Moulin", "manager": {"name": "Claire Martin", "email": "c.m@example.org"}})
            assert r.status_code == 201
            hn = r.json()["hosting_number"]
            shows("console password", r.json()["console_password"])
            shows("invoice number", r.json()["invoice_number"])

            wrong = "Wrong-Password-123!"
            secrets["refused password"] = wrong
            assert_problem(client.post("/v1/console/sessions", json={
                "hosting_number": hn, "password": wrong, "invoice_number": secrets["invoice number"]}), 401)
            assert_problem(client.post("/v1/console/sessions", json={
                "hosting_number": hn, "password": secrets["console password"]}), 401)
            r = client.post("/v1/console/sessions", json={
                "hosting_number": hn, "password": secrets["console password"],
                "invoice_number": secrets["invoice number"]})
            assert r.status_code == 201
            shows("first token", r.json()["token"])
            shows("certificate", r.json()["certificate"])
            h = bearer(secrets["first token"])

            assert client.post("/v1/console/licence-agreement", headers=h).status_code == 200
            assert client.put("/v1/console/controller/domain", headers=h, json={"name": "monecole"}).status_code == 200
            weak = "weakpassword-zz"
            secrets["refused superadministrator password"] = weak
            assert_problem(client.post("/v1/console/superadministrator", headers=h, json={
                "first_name": "Anne", "last_name": "Durand", "login": "direction",
                "password": weak, "password_confirmation": weak + "x"}), 422)
            assert_problem(client.post("/v1/console/superadministrator", headers=h, json={
                "first_name": "Anne", "last_name": "Durand", "login": "direction",
                "password": 123456789012345, "password_confirmation": SUPERADMIN_PASSWORD}), 422)
            r = client.post("/v1/console/superadministrator", headers=h, json={
                "first_name": "Anne", "last_name": "Durand", "login": "direction",
                "password": SUPERADMIN_PASSWORD, "password_confirmation": SUPERADMIN_PASSWORD})
            assert r.status_code == 201
            secrets["superadministrator password"] = SUPERADMIN_PASSWORD

            for login, extra in (("prof1", {}), ("vie.scolaire", {"status": "base_administrator",
                                                                  "email": "vs@example.org"})):
                r = client.post("/v1/console/users", headers=h,
                                json={"login": login, "last_name": "Dupont", "first_name": "Jean", **extra})
                assert r.status_code == 201
                shows(f"password of {login}", r.json()["password"])
            assert client.patch("/v1/console/users/prof1", headers=h,
                                json={"email": "p1@example.org", "console_access": True}).status_code == 200
            assert client.get("/v1/console/users/prof1", headers=h).status_code == 200
            assert client.get("/v1/console/users", headers=h).status_code == 200
            plannings = client.get("/v1/console/plannings", headers=h).json()["plannings"]
            p1, p2 = plannings[0]["id"], plannings[1]["id"]
            assert client.patch(f"/v1/console/plannings/{p1}", headers=h,
                                json={"name": "edt", "domain": "monecole-edt"}).status_code == 200
            assert client.put(f"/v1/console/plannings/{p1}/profiles/administration", headers=h,
                              json={"logins": ["direction", "vie.scolaire"]}).status_code == 200
            assert client.post("/v1/console/assignment-templates", headers=h,
                               json={"name": "standard", "planning_id": p1}).status_code == 201
            assert client.post(f"/v1/console/plannings/{p2}/assignment-template", headers=h,
                               json={"name": "standard"}).status_code == 200
            assert client.post("/v1/console/controller/activation", headers=h).status_code == 200
            assert client.get("/v1/console/account", headers=h).status_code == 200
            assert client.get("/v1/console/history", headers=h).status_code == 200

            r = client.post("/v1/console/sessions", json={
                "hosting_number": hn, "password": secrets["console password"], "certificate": secrets["certificate"]})
            assert r.status_code == 201
            shows("second token", r.json()["token"])
            assert client.delete("/v1/console/sessions/current", headers=h).status_code == 204
            assert_problem(client.get("/v1/console/plannings", headers=h), 401)

            r = client.post(f"/v1/operator/accounts/{hn}/console-password", headers=op)
            assert r.status_code == 200
            shows("reset console password", r.json()["console_password"])
            assert client.get(f"/v1/operator/accounts/{hn}", headers=op).status_code == 200
            assert_problem(client.post("/v1/console/sessions", json={
                "hosting_number": hn, "password": secrets["console password"],
                "certificate": secrets["certificate"]}), 401)
            r = client.post("/v1/console/sessions", json={
                "hosting_number": hn, "password": secrets["reset console password"],
                "certificate": secrets["certificate"]})
            assert r.status_code == 201
            shows("third token", r.json()["token"])

            r = client.get("/v1/console/history", headers=bearer(secrets["third token"]), params={"limit": 500})
            assert r.status_code == 200 and r.json()["next"] is None
            events = r.json()["events"]

    # Derived forms must not leak either: token digests and any argon2 hash.
    for name in ("first token", "second token", "third token", "certificate"):
        secrets[f"digest of {name}"] = hashlib.sha256(secrets[name].encode()).hexdigest()

    # (a) responses: each secret only in the response that first displays it.
    for name, value in secrets.items():
        expected = [displayed_by[name]] if name in displayed_by else []
        found = shown_in(value)
        assert found == expected, (
            f"{name} appears in {[(seen[i].method, seen[i].path, seen[i].status) for i in found]}")
    assert not [s.path for s in seen if "$argon2" in s.text]

    # (b) log lines: one canonical line per request, with no secret.
    lines = [json.dumps(entry, default=str, ensure_ascii=False) for entry in logs]
    request_lines = [entry for entry in logs if entry.get("event") == "request"]
    assert len(request_lines) == len(seen), "one canonical log line per request"
    assert sorted((e["request_id"], e["status"]) for e in request_lines) == sorted(
        (s.request_id, s.status) for s in seen)
    for name, value in secrets.items():
        leaking = [line for line in lines if value in line]
        assert not leaking, f"{name} in a log line: {leaking[0][:300]}"
    assert not [line for line in lines if "$argon2" in line]

    # (c) the history: no secret, and every hash or digest shows as redacted.
    history_text = json.dumps(events, ensure_ascii=False)
    for name, value in secrets.items():
        assert value not in history_text, f"{name} in the history"
    assert "$argon2" not in history_text
    redacted: dict[str, set[str]] = {}

    def walk(event_type: str, data: object) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                if key.endswith(("_hash", "_digest")) or key in ("password", "token", "certificate"):
                    assert value == REDACTED, (event_type, key, value)
                    redacted.setdefault(event_type, set()).add(key)
                else:
                    walk(event_type, value)
        elif isinstance(data, list):
            for item in data:
                walk(event_type, item)

    for event in events:
        walk(event["type"], event["data"])
    assert redacted == {
        "HostingAccount.Opened": {"console_password_hash", "invoice_number_hash"},
        "HostingAccount.CertificateInstalled": {"certificate_digest"},
        "ConsoleSession.Opened": {"token_digest"},
        "DirectoryUser.Created": {"password_hash"},
        "HostingAccount.ConsolePasswordReset": {"console_password_hash"},
    }
    counts = {t: sum(e["type"] == t for e in events) for t in redacted}
    assert counts == {"HostingAccount.Opened": 1, "HostingAccount.CertificateInstalled": 1,
                      "ConsoleSession.Opened": 3, "DirectoryUser.Created": 3,
                      "HostingAccount.ConsolePasswordReset": 1}
