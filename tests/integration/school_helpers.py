"""Helpers for issue 3's API tests: a school with a base in service on planning01
and directory users holding each profile, logged in through ``POST /v1/sessions``.

Like ``api_helpers``, everything goes through the HTTP API with a ``TestClient``.

The school built by :func:`campus_school`:

* controller ``monecole`` (or the given label) bound and **active**;
* users ``direction`` (superadministrator, the first one), ``badmin`` (base
  administrator), ``modif``, ``consult`` and ``noprof`` (plain users);
* planning01: administration = direction, badmin; modification = modif;
  consultation = consult; ``noprof`` holds nothing;
* planning02: modification = modif (no base yet, server stopped);
* a base "Base 2026" created on planning01 (the Campus edition puts it in service).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from api_helpers import (
    SUPERADMIN_LOGIN,
    SUPERADMIN_PASSWORD,
    School,
    bearer,
    create_user,
    ready_school,
)
from starlette.testclient import TestClient

# A 44-week school year: Monday 31 August 2026 to Sunday 4 July 2027.
FIRST_MONDAY = "2026-08-31"
LAST_SUNDAY = "2027-07-04"

KIND_NAMES = (
    "teachers", "subjects", "classes", "groups", "students", "rooms", "courses", "homework", "grades",
    "lesson_logs", "appraisals", "evaluations", "internships", "companies", "absences", "lateness",
    "punishments", "sanctions",
)

# login -> (status, profile on planning01)
PROFILE_USERS: dict[str, tuple[str, str | None]] = {
    "badmin": ("base_administrator", "administration"),
    "modif": ("user", "modification"),
    "consult": ("user", "consultation"),
    "noprof": ("user", None),
}


def grid_body(**overrides: Any) -> dict[str, Any]:
    """A valid body for POST …/bases (the grid of Campus fiche 6), fields replaced by `overrides`."""
    body = {
        "name": "Base 2026",
        "first_monday": FIRST_MONDAY,
        "last_sunday": LAST_SUNDAY,
        "working_days": ["mon", "tue", "wed", "thu", "fri"],
        "sequences_per_day": 12,
        "sequence_minutes": 60,
        "split": 2,
    }
    body.update(overrides)
    return body


@dataclass
class CampusSchool:
    client: TestClient
    school: School
    domain: str
    planning01: str
    planning02: str
    base: dict | None = None
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def console(self) -> dict[str, str]:
        """The hosting manager's console headers."""
        return self.school.headers

    def login(self, login: str, *, planning: str | None = None, mode: str = "administrative",
              password: str | None = None, **extra: Any) -> httpx.Response:
        return open_user_session(self.client, domain=self.domain, login=login,
                                 password=self.passwords[login] if password is None else password,
                                 planning=planning or self.planning01, mode=mode, **extra)

    def headers_for(self, login: str, **kw: Any) -> dict[str, str]:
        r = self.login(login, **kw)
        assert r.status_code == 201, r.text
        return bearer(r.json()["token"])

    def records_url(self, kind: str, record_id: str | None = None, planning: str | None = None) -> str:
        url = f"/v1/plannings/{planning or self.planning01}/records/{kind}"
        return f"{url}/{record_id}" if record_id else url


def open_user_session(client: TestClient, *, domain: str, login: str, password: str, planning: str,
                      mode: str = "administrative", **extra: Any) -> httpx.Response:
    body = {"domain": domain, "login": login, "password": password, "planning": planning, "mode": mode}
    body.update({k: v for k, v in extra.items() if v is not None})
    return client.post("/v1/sessions", json=body)


def activate_controller(client: TestClient, headers: dict[str, str]) -> None:
    r = client.post("/v1/console/controller/activation", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "active"


def assign(client: TestClient, headers: dict[str, str], planning_id: str, profile: str, logins: list[str]) -> dict:
    r = client.put(f"/v1/console/plannings/{planning_id}/profiles/{profile}", headers=headers,
                   json={"logins": logins})
    assert r.status_code == 200, r.text
    return r.json()


def create_base(client: TestClient, headers: dict[str, str], planning_id: str, **overrides: Any) -> dict:
    r = client.post(f"/v1/console/plannings/{planning_id}/bases", headers=headers, json=grid_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


def set_server(client: TestClient, headers: dict[str, str], planning_id: str, state: str) -> httpx.Response:
    return client.put(f"/v1/console/plannings/{planning_id}/server", headers=headers, json={"state": state})


def campus_school(client: TestClient, *, domain: str = "monecole", establishment: str = "Lycée Jean Moulin",
                  base: bool = True, activate: bool = True, users: bool = True) -> CampusSchool:
    school = ready_school(client, domain=domain, establishment=establishment)
    if activate:
        activate_controller(client, school.headers)
    p1, p2 = school.planning_ids[0], school.planning_ids[1]
    cs = CampusSchool(client, school, domain, p1, p2, passwords={SUPERADMIN_LOGIN: SUPERADMIN_PASSWORD})
    if users:
        for login, (status, _) in PROFILE_USERS.items():
            cs.passwords[login] = create_user(client, school, login, status=status, last_name=login.title())["password"]
        assign(client, school.headers, p1, "administration", [SUPERADMIN_LOGIN, "badmin"])
        assign(client, school.headers, p1, "modification", ["modif"])
        assign(client, school.headers, p1, "consultation", ["consult"])
        assign(client, school.headers, p2, "modification", ["modif"])
    if base:
        cs.base = create_base(client, school.headers, p1)
    return cs


def add_record(client: TestClient, headers: dict[str, str], url: str, **fields: Any) -> dict:
    r = client.post(url, headers=headers, json=fields)
    assert r.status_code == 201, r.text
    return r.json()


def a_class_and_student(cs: CampusSchool, headers: dict[str, str], *, planning: str | None = None,
                        class_name: str = "2nde A", last_name: str = "Bernard") -> tuple[dict, dict]:
    klass = add_record(cs.client, headers, cs.records_url("classes", planning=planning), name=class_name)
    student = add_record(cs.client, headers, cs.records_url("students", planning=planning), last_name=last_name,
                         first_name="Lucie", class_id=klass["id"])
    return klass, student


SERVICE_PASSWORD = "Superadmin-2026!"


def service_school(app: Any) -> tuple[Any, Any]:
    """Through the service layer: an account, its superadministrator and a base in service on
    planning01 (Campus edition); returns (account id, planning id)."""
    from datetime import date

    account_id = app.accounts.open_account("Lycée", "M", "m@example.org").account.id
    app.users.create_first_superadministrator(account_id, first_name="A", last_name="B", login="admin",
                                        password=SERVICE_PASSWORD, password_confirmation=SERVICE_PASSWORD)
    planning = app.plannings.list_plannings(account_id)[0]
    app.bases.create_base(account_id, planning.id, name="Base", first_monday=date(2026, 8, 31),
                    last_sunday=date(2027, 7, 4), working_days=["mon", "tue"], sequences_per_day=8,
                    sequence_minutes=60, split=1)
    return account_id, planning.id
