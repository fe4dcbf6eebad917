"""The account page ("Mon compte", hosting guide fiche 12) over HTTP: the contract the
manager reads (client reference, hosting number, licence), the contact details,
notifications and version-change choice he edits, each change an event."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from api_helpers import (
    assert_problem,
    bearer,
    console_login,
    history,
    login_with_certificate,
    make_client,
    open_account,
    operator_headers,
    ready_school,
)
from starlette.testclient import TestClient

ACCOUNT = "/v1/console/account"


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    from api_helpers import cheap_argon2

    cheap_argon2(monkeypatch)


def page(client: TestClient, headers: dict) -> dict:
    r = client.get(ACCOUNT, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == f'"{r.json()["version"]}"'
    return r.json()


def patch(client: TestClient, headers: dict, body: dict, **extra: str):  # noqa: ANN201
    return client.patch(ACCOUNT, headers={**headers, **extra}, json=body)


def account_events(client: TestClient, headers: dict, event: str) -> list[dict]:
    return history(client, headers, type=f"HostingAccount.{event}")


def test_the_page_shows_the_contract_and_the_defaults_of_an_account_never_edited(client: TestClient, clock) -> None:
    school = ready_school(client, domain=None, superadministrator=False)
    body = page(client, school.headers)
    assert body["hosting_number"] == school.hosting_number
    assert body["client_reference"] is None  # until the operator records it
    assert body["licence"] == {"formula": "PRONOTE Campus",
                               "expires_on": clock.now().date().replace(year=clock.now().year + 1).isoformat(),
                               "modification_seats": 6,
                               "options": ["edt_connection", "consultation", "sms", "web_publication"]}
    assert body["manager"] == {"name": "Claire Martin", "email": "claire.martin@example.org"}  # unset: absent
    assert body["notifications"] == {"version_change": True, "year_operations": True, "backup_problems": True,
                                     "security": True}
    assert body["version_change"] == {"choice": "install_at_release", "date": None, "base": None}
    assert client.get(ACCOUNT).status_code == 401
    assert_problem(client.patch(ACCOUNT, json={}), 401)


def test_nothing_is_edited_before_the_licence_agreement(client: TestClient) -> None:
    school = open_account(client)
    headers = console_login(client, school)
    assert_problem(patch(client, headers, {"notifications": {"security": False}}), 403, code="licence_not_accepted")


def test_the_operator_records_the_contract_the_manager_only_reads_it(client: TestClient) -> None:
    school = ready_school(client, domain=None, superadministrator=False)
    contract = {"client_reference": "91430",
                "licence": {"formula": "Profs illimités", "expires_on": "2028-12-27", "modification_seats": 8,
                            "options": ["web_publication", "edt_connection"]}}
    r = client.patch(f"/v1/operator/accounts/{school.hosting_number}", headers=operator_headers(client), json=contract)
    assert r.status_code == 200, r.text
    body = page(client, school.headers)
    assert body["client_reference"] == "91430"
    assert body["licence"] == {"formula": "Profs illimités", "expires_on": "2028-12-27", "modification_seats": 8,
                               "options": ["edt_connection", "web_publication"]}
    [changed] = account_events(client, school.headers, "ContractChanged")
    assert changed["actor"] == "operator"
    assert changed["data"]["client_reference"] == "91430"

    # Only some fields: the rest is kept; the same values again record nothing.
    r = client.patch(f"/v1/operator/accounts/{school.hosting_number}", headers=operator_headers(client),
                     json={"licence": {"modification_seats": 6}})
    assert r.json()["licence"]["formula"] == "Profs illimités" and r.json()["licence"]["modification_seats"] == 6
    client.patch(f"/v1/operator/accounts/{school.hosting_number}", headers=operator_headers(client),
                 json={"licence": {"modification_seats": 6}})
    assert len(account_events(client, school.headers, "ContractChanged")) == 2

    # The manager cannot change the contract, nor reach the operator's route.
    assert_problem(patch(client, school.headers, {"licence": {"modification_seats": 60}}), 422, fields={"licence"})
    assert_problem(patch(client, school.headers, {"client_reference": "1"}), 422, fields={"client_reference"})
    assert_problem(client.patch(f"/v1/operator/accounts/{school.hosting_number}", headers=school.headers,
                                json={"client_reference": "1"}), 401)
    r = client.patch(f"/v1/operator/accounts/{school.hosting_number}", headers=operator_headers(client),
                     json={"client_reference": "91 430", "licence": {"options": ["mailleva"], "modification_seats": 0}})
    assert_problem(r, 422, fields={"client_reference", "licence.options.0", "licence.modification_seats"})
    assert_problem(client.patch("/v1/operator/accounts/000000000000", headers=operator_headers(client),
                                json={"client_reference": "1"}), 404)


def test_the_manager_edits_his_contact_details(client: TestClient) -> None:
    school = ready_school(client, domain=None, superadministrator=False)
    r = patch(client, school.headers, {"manager": {
        "civility": "Mme", "first_name": "Samia", "last_name": "Bounhar", "email": "s.bounhar@example.org",
        "phone": "04 91 23 45 67", "mobile_phone": "+33 6 12 34 56 78"}})
    assert r.status_code == 200, r.text
    assert r.json()["manager"] == {"name": "Samia Bounhar", "civility": "Mme", "last_name": "Bounhar",
                                   "first_name": "Samia", "email": "s.bounhar@example.org",
                                   "phone": "+33491234567", "mobile_phone": "+33612345678"}
    assert r.headers["etag"] == f'"{r.json()["version"]}"'
    [changed] = account_events(client, school.headers, "ContactDetailsChanged")
    assert changed["actor"] == school.actor
    assert changed["data"]["manager"]["mobile_phone"] == "+33612345678"

    # A number abroad, and removing one.
    r = patch(client, school.headers, {"manager": {"phone": "+41 22 345 67 89", "mobile_phone": None}})
    assert r.status_code == 200, r.text
    assert r.json()["manager"]["phone"] == "+41223456789" and "mobile_phone" not in r.json()["manager"]
    assert r.json()["manager"]["email"] == "s.bounhar@example.org"  # untouched

    # The same values again change nothing and record nothing.
    version = r.json()["version"]
    r = patch(client, school.headers, {"manager": {"phone": "+41223456789"}})
    assert r.json()["version"] == version
    assert len(account_events(client, school.headers, "ContactDetailsChanged")) == 2

    # Refusals name the field; nothing is recorded.
    assert_problem(patch(client, school.headers, {"manager": {"phone": "12"}}), 422, fields={"manager.phone"})
    assert_problem(patch(client, school.headers, {"manager": {"phone": "not a number"}}), 422,
                   fields={"manager.phone"})
    assert_problem(patch(client, school.headers, {"manager": {"mobile_phone": "04 91 23 45 67"}}), 422,
                   fields={"manager.mobile_phone"}, detail="mobile")
    assert_problem(patch(client, school.headers, {"manager": {"email": "nope"}}), 422, fields={"manager.email"})
    assert_problem(patch(client, school.headers, {"manager": {"email": None}}), 422, fields={"manager.email"})
    assert_problem(patch(client, school.headers, {"manager": {"last_name": "  "}}), 422, fields={"manager.last_name"})
    assert_problem(patch(client, school.headers, {"manager": {"civility": "Dr"}}), 422, fields={"manager.civility"})
    assert_problem(patch(client, school.headers, {"manager": {"fax": "0491"}}), 422, fields={"manager.fax"})
    assert_problem(patch(client, school.headers, {"manager": None}), 422, fields={"manager"})
    assert page(client, school.headers)["version"] == version


def test_the_manager_chooses_his_notifications(client: TestClient) -> None:
    school = ready_school(client, domain=None, superadministrator=False)
    r = patch(client, school.headers, {"notifications": {"security": False, "backup_problems": False}})
    assert r.status_code == 200, r.text
    assert r.json()["notifications"] == {"version_change": True, "year_operations": True,
                                         "backup_problems": False, "security": False}
    r = patch(client, school.headers, {"notifications": {"security": True}})
    assert r.json()["notifications"]["security"] is True and r.json()["notifications"]["backup_problems"] is False
    assert [e["data"]["notifications"]["security"] for e in
            account_events(client, school.headers, "NotificationsChanged")] == [False, True]
    assert_problem(patch(client, school.headers, {"notifications": {"newsletter": True}}), 422,
                   fields={"notifications.newsletter"})
    assert_problem(patch(client, school.headers, {"notifications": {"security": None}}), 422,
                   fields={"notifications.security"})
    assert_problem(patch(client, school.headers, {"notifications": {"security": "sometimes"}}), 422,
                   fields={"notifications.security"})


def test_the_version_change_choice(client: TestClient, clock) -> None:
    school = ready_school(client, domain=None, superadministrator=False)
    today = clock.now().date()  # 1 September 2026
    defer_to = today + timedelta(days=14)
    r = patch(client, school.headers, {"version_change": {"choice": "defer", "date": defer_to.isoformat(),
                                                          "base": "current"}})
    assert r.status_code == 200, r.text
    assert r.json()["version_change"] == {"choice": "defer", "date": defer_to.isoformat(), "base": "current"}
    r = patch(client, school.headers, {"version_change": {"choice": "pre_release", "date": "2027-07-06"}})
    assert r.json()["version_change"] == {"choice": "pre_release", "date": "2027-07-06", "base": None}
    r = patch(client, school.headers, {"version_change": {"choice": "install_at_release"}})
    assert r.json()["version_change"] == {"choice": "install_at_release", "date": None, "base": None}
    assert [e["data"]["choice"] for e in account_events(client, school.headers, "VersionChangeChosen")] == [
        "defer", "pre_release", "install_at_release"]

    def refused(choice: dict, field: str, detail: str | None = None) -> None:
        assert_problem(patch(client, school.headers, {"version_change": choice}), 422,
                       fields={f"version_change.{field}"}, detail=detail)

    refused({"choice": "install_at_release", "date": "2027-09-01"}, "date")
    refused({"choice": "install_at_release", "base": "current"}, "base")
    refused({"choice": "defer", "date": defer_to.isoformat()}, "base")
    refused({"choice": "defer", "base": "new_empty"}, "date")
    refused({"choice": "defer", "date": "2027-07-15", "base": "new_empty"}, "date", detail="pre_release")
    refused({"choice": "defer", "date": (today - timedelta(days=1)).isoformat(), "base": "new_empty"}, "date",
            detail="past")
    refused({"choice": "defer", "date": "2026-09-31", "base": "new_empty"}, "date")
    refused({"choice": "pre_release", "date": "2027-09-02"}, "date", detail="1 July to 30 August")
    refused({"choice": "pre_release", "date": "2027-07-06", "base": "new_empty"}, "base")
    refused({"choice": "later"}, "choice")
    assert_problem(patch(client, school.headers, {"version_change": {"date": "2027-07-06"}}), 422,
                   fields={"version_change.choice"})
    assert page(client, school.headers)["version_change"]["choice"] == "install_at_release"


def test_if_match_protects_the_page(client: TestClient) -> None:
    school = ready_school(client, domain=None, superadministrator=False)
    etag = client.get(ACCOUNT, headers=school.headers).headers["etag"]
    r = patch(client, school.headers, {"notifications": {"security": False}}, **{"If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] != etag
    stale = patch(client, school.headers, {"notifications": {"security": True}}, **{"If-Match": etag})
    assert_problem(stale, 412)
    assert page(client, school.headers)["notifications"]["security"] is False
    assert patch(client, school.headers, {"notifications": {"security": True}},
                 **{"If-Match": r.headers["etag"]}).status_code == 200


def test_each_school_sees_and_edits_only_its_own_page(client: TestClient) -> None:
    first = ready_school(client, domain=None, superadministrator=False)
    second = ready_school(client, domain=None, superadministrator=False, establishment="Collège Victor Hugo")
    assert patch(client, second.headers, {"manager": {"phone": "0491234567"}}).status_code == 200
    assert "phone" not in page(client, first.headers)["manager"]
    assert page(client, second.headers)["hosting_number"] == second.hosting_number
    assert account_events(client, first.headers, "ContactDetailsChanged") == []


def test_the_page_is_the_same_after_a_restart(settings, clock) -> None:
    with make_client(settings, clock) as client:
        school = ready_school(client, domain=None, superadministrator=False)
        edited = patch(client, school.headers, {
            "manager": {"first_name": "Samia", "last_name": "Bounhar", "mobile_phone": "06 12 34 56 78"},
            "notifications": {"year_operations": False},
            "version_change": {"choice": "defer", "date": "2026-10-01", "base": "new_empty"}}).json()
    with make_client(settings, clock) as client:
        r = login_with_certificate(client, school)
        assert r.status_code == 201, r.text
        assert page(client, bearer(r.json()["token"])) == edited
        assert edited["version_change"]["date"] == date(2026, 10, 1).isoformat()
