"""Shared helpers for the HTTP API tests (tests/integration/test_api_*.py).

Everything here talks to the server the way an API client does: through a
Starlette ``TestClient`` over the real ASGI app, with JSON bodies and bearer
tokens, and asserts only what such a client can see.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.testclient import TestClient

from campus.api.app import create_app
from campus.infra.clock import Clock
from campus.infra.settings import Settings

PROBLEM = "application/problem+json"
TRACEBACK_MARKERS = ("Traceback", 'File "')

SUPERADMIN_LOGIN = "direction"
SUPERADMIN_PASSWORD = "Campus-Direction-2026!"

HOSTING_NUMBER = re.compile(r"^\d{12}$")
INVOICE_NUMBER = re.compile(r"^\d{10}$")


def make_client(settings: Settings, clock: Clock | None = None, **overrides: Any) -> TestClient:
    """A client of a fresh app on `settings` (fields in `overrides` replaced).

    Use it as a context manager so the app's lifespan runs. Server exceptions are
    turned into responses, so a 500 is seen as a client would see it.
    """
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    return TestClient(create_app(settings, clock=clock), raise_server_exceptions=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def operator_headers(client: TestClient) -> dict[str, str]:
    token = client.app.state.campus.settings.operator_token  # type: ignore[attr-defined]
    assert token, "the test settings must set an operator token"
    return bearer(token)


@dataclass
class School:
    """What a test knows about one hosting account, as an API client learnt it."""

    hosting_number: str
    console_password: str
    invoice_number: str
    establishment: str
    token: str | None = None
    certificate: str | None = None
    plannings: list[dict] = field(default_factory=list)
    user_passwords: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        assert self.token, "log in first (console_login)"
        return bearer(self.token)

    @property
    def actor(self) -> str:
        return f"manager:{self.hosting_number}"

    @property
    def planning_ids(self) -> list[str]:
        return [p["id"] for p in self.plannings]


def open_account(client: TestClient, establishment: str = "Lycée Jean Moulin",
                 manager_name: str = "Claire Martin", manager_email: str = "claire.martin@example.org") -> School:
    r = client.post("/v1/operator/accounts", headers=operator_headers(client),
                    json={"establishment": establishment, "manager": {"name": manager_name, "email": manager_email}})
    assert r.status_code == 201, r.text
    body = r.json()
    return School(hosting_number=body["hosting_number"], console_password=body["console_password"],
                  invoice_number=body["invoice_number"], establishment=establishment)


def console_login(client: TestClient, school: School) -> dict[str, str]:
    """The first login from this 'machine': with the invoice number; keeps token and certificate."""
    r = client.post("/v1/console/sessions", json={
        "hosting_number": school.hosting_number, "password": school.console_password,
        "invoice_number": school.invoice_number})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["certificate"], body
    school.token, school.certificate = body["token"], body["certificate"]
    return school.headers


def login_with_certificate(client: TestClient, school: School) -> httpx.Response:
    return client.post("/v1/console/sessions", json={
        "hosting_number": school.hosting_number, "password": school.console_password,
        "certificate": school.certificate})


def accept_licence(client: TestClient, headers: dict[str, str]) -> dict:
    r = client.post("/v1/console/licence-agreement", headers=headers)
    assert r.status_code in (200, 201, 204), r.text
    return r.json() if r.content else {}


def bind_domain(client: TestClient, headers: dict[str, str], name: str) -> dict:
    r = client.put("/v1/console/controller/domain", headers=headers, json={"name": name})
    assert r.status_code == 200, r.text
    return r.json()


def create_superadministrator(client: TestClient, headers: dict[str, str], login: str = SUPERADMIN_LOGIN,
                              password: str = SUPERADMIN_PASSWORD) -> dict:
    r = client.post("/v1/console/superadministrator", headers=headers, json={
        "first_name": "Anne", "last_name": "Durand", "login": login,
        "password": password, "password_confirmation": password})
    assert r.status_code == 201, r.text
    return r.json()


def create_user(client: TestClient, school: School, login: str, **extra: Any) -> dict:
    body = {"login": login, "last_name": extra.pop("last_name", "Dupont"),
            "first_name": extra.pop("first_name", "Jean"), **extra}
    r = client.post("/v1/console/users", headers=school.headers, json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    school.user_passwords[login] = created["password"]
    return created


def list_plannings(client: TestClient, school: School) -> list[dict]:
    r = client.get("/v1/console/plannings", headers=school.headers)
    assert r.status_code == 200, r.text
    school.plannings = r.json()["plannings"]
    return school.plannings


def ready_school(client: TestClient, *, domain: str | None = "monecole", superadministrator: bool = True,
                 establishment: str = "Lycée Jean Moulin") -> School:
    """The usual start: account opened, first login, licence accepted, domain bound,
    first superadministrator created, plannings listed."""
    school = open_account(client, establishment=establishment)
    console_login(client, school)
    accept_licence(client, school.headers)
    if domain:
        bind_domain(client, school.headers, domain)
    if superadministrator:
        create_superadministrator(client, school.headers)
    list_plannings(client, school)
    return school


def history(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict]:
    """Every event the history answers for `params`, following `next` to the end."""
    events: list[dict] = []
    params = {k: v for k, v in params.items() if v is not None}
    params.setdefault("limit", 500)
    while True:
        r = client.get("/v1/console/history", headers=headers, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        events += page["events"]
        if page["next"] is None:
            return events
        params["after"] = page["next"]


def assert_no_traceback(response: httpx.Response) -> None:
    for marker in TRACEBACK_MARKERS:
        assert marker not in response.text, f"traceback text in the response: {response.text[:500]}"


def assert_problem(response: httpx.Response, status: int, *, fields: set[str] | None = None,
                   detail: str | tuple[str, ...] | None = None, code: str | None = None) -> dict:
    """`response` is an RFC 9457 problem with `status`.

    `fields`: exactly the set of fields named by `errors`; `detail`: text(s) that
    the human message contains (case-insensitive); `code`: the machine code.
    """
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    assert_no_traceback(response)
    assert response.headers.get("x-request-id"), "every answer carries X-Request-ID"
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"].strip()
    if status == 401:
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), response.headers
    if detail is not None:
        for part in (detail,) if isinstance(detail, str) else detail:
            assert part.lower() in body["detail"].lower(), f"{part!r} not in detail {body['detail']!r}"
    if fields is not None:
        errors = body.get("errors") or []
        for e in errors:
            assert set(e) >= {"field", "message"} and e["message"], e
        assert {e["field"] for e in errors} == fields, f"errors {errors} do not name exactly {fields}"
    if code is not None:
        assert body.get("code") == code, body
    return body


def messages_for(body: dict, field_name: str) -> list[str]:
    return [e["message"] for e in body.get("errors", []) if e["field"] == field_name]


def cheap_argon2(monkeypatch: Any) -> None:
    """Make argon2id cheap for tests that exercise validation, not hashing.

    Hashes keep the argon2id format and are still checked for real; only the cost
    parameters drop (the default profile costs ~0.1 s per hash). The walkthrough
    (test_api_console.py) and test_api_secrets.py keep the real costs.
    """
    from argon2 import PasswordHasher

    import campus.rules.security

    monkeypatch.setattr(campus.rules.security, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
