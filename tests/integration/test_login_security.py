"""Failed authentications per client address, suspension and unblocking (issue 5, hosting
guide fiche 11 "Sécurité"), over HTTP.

The clients here connect from a chosen socket address. Behind a trusted proxy
(``trusted_proxies``) the address is the right-most untrusted hop of
``X-Forwarded-For``, which lets one client speak from several addresses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from api_helpers import (
    SUPERADMIN_LOGIN,
    assert_problem,
    bearer,
    cheap_argon2,
    console_login,
    history,
    open_account,
)
from school_helpers import CampusSchool, campus_school
from starlette.testclient import TestClient

from campus.api.app import create_app
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings

PROXY = "198.51.100.7"  # the reverse proxy the server trusts
ATTACKER = "203.0.113.66"
NEIGHBOUR = "203.0.113.99"
WRONG = "Not-the-password-42!"
SUSPENDED = "/v1/console/security/suspended-addresses"


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


def client_from(settings: Settings, clock: ManualClock, peer: str, **overrides: Any) -> TestClient:
    """A client whose socket address is `peer`, of a server on `settings` (fields replaced)."""
    settings = dataclasses.replace(settings, **overrides)
    return TestClient(create_app(settings, clock=clock), raise_server_exceptions=False, client=(peer, 40000))


@pytest.fixture
def proxied(settings: Settings, clock: ManualClock) -> Iterator[TestClient]:
    """Requests arrive through the trusted proxy; X-Forwarded-For says who the client is."""
    with client_from(settings, clock, PROXY, trusted_proxies=(PROXY,)) as c:
        yield c


@pytest.fixture
def school(proxied: TestClient) -> CampusSchool:
    return campus_school(proxied)


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def user_login(cs: CampusSchool, address: str, login: str = "modif", password: str | None = None, **extra: Any):
    body = {"domain": cs.domain, "login": login, "planning": cs.planning01, "mode": "administrative",
            "password": cs.passwords.get(login, WRONG) if password is None else password, **extra}
    return cs.client.post("/v1/sessions", json=body, headers=via(address))


def hammer(cs: CampusSchool, address: str, times: int, login: str = "modif") -> list:
    return [user_login(cs, address, login, password=WRONG) for _ in range(times)]


def suspended(client: TestClient, headers: dict[str, str]) -> list[dict]:
    r = client.get(SUSPENDED, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["suspended_addresses"]


# -- the story of the issue ------------------------------------------------------------------
def test_hammering_suspends_the_address_another_is_served_and_unblocking_lets_it_in(school, clock):
    cs = school
    for r in hammer(cs, ATTACKER, 9):
        assert_problem(r, 401, code="invalid_credentials")
    tenth = user_login(cs, ATTACKER, password=WRONG)
    body = assert_problem(tenth, 429, code="address_suspended", detail=(ATTACKER, "unblock"))
    assert tenth.headers["Retry-After"] == str(15 * 60)
    assert WRONG not in tenth.text and "token" not in body

    # The right password from the suspended address is refused too; another address is served.
    right = user_login(cs, ATTACKER)
    assert_problem(right, 429, code="address_suspended")
    assert 0 < int(right.headers["Retry-After"]) <= 15 * 60
    assert user_login(cs, NEIGHBOUR).status_code == 201
    assert cs.client.post("/v1/sessions", json={"domain": cs.domain, "login": "modif", "password": WRONG,
                                                "planning": cs.planning01, "mode": "administrative"},
                          headers=via(NEIGHBOUR)).status_code == 401

    [listed] = suspended(cs.client, cs.console)
    assert listed["address"] == ATTACKER and listed["failures"] == 10
    assert listed["suspended_at"] and listed["until"] > listed["suspended_at"]

    r = cs.client.delete(f"{SUSPENDED}/{ATTACKER}", headers=cs.console)
    assert r.status_code == 204, r.text
    assert suspended(cs.client, cs.console) == []
    ok = user_login(cs, ATTACKER)
    assert ok.status_code == 201, ok.text
    # Unblocking forgets the failures: one more mistake is not a new suspension.
    assert_problem(user_login(cs, ATTACKER, password=WRONG), 401, code="invalid_credentials")

    # Failures are counters, not events (issue 9: bounded storage); the suspension and the unblocking are.
    assert history(cs.client, cs.console, type="ClientAddress.AuthenticationFailed") == []
    [suspension] = history(cs.client, cs.console, type="ClientAddress.Suspended")
    assert suspension["client_address"] == ATTACKER and suspension["data"]["failures"] == 10
    [unblocking] = history(cs.client, cs.console, type="ClientAddress.Unblocked")
    assert unblocking["actor"] == cs.school.actor
    # The manager asked for security notifications (the default): one is waiting in the outbox.
    outbox = cs.client.get("/v1/console/outbox", headers=cs.console)
    assert outbox.status_code == 200, outbox.text
    [notice] = [m for m in outbox.json()["messages"] if ATTACKER in m["subject"]]
    assert notice["subject"].startswith("[campus] address") and WRONG not in outbox.text


def test_unknown_login_and_wrong_password_answer_and_count_alike(school):
    cs = school
    answers = []
    for i in range(9):
        login = "modif" if i % 2 else f"nobody{i}"
        r = user_login(cs, ATTACKER, login, password=WRONG)
        answers.append(assert_problem(r, 401, code="invalid_credentials"))
    assert all(a == answers[0] for a in answers)
    # The tenth, for a login that does not exist, suspends exactly as a wrong password would.
    unknown = assert_problem(user_login(cs, ATTACKER, "personne", password=WRONG), 429, code="address_suspended")
    assert_problem(user_login(cs, ATTACKER, "consult"), 429, code="address_suspended")
    assert unknown["detail"].startswith("too many failed authentications")


def test_failures_older_than_the_window_do_not_count(school, clock):
    cs = school
    hammer(cs, ATTACKER, 9)
    clock.advance(timedelta(minutes=15, seconds=1))
    for r in hammer(cs, ATTACKER, 9):
        assert_problem(r, 401, code="invalid_credentials")
    assert suspended(cs.client, cs.console) == []
    assert_problem(user_login(cs, ATTACKER, password=WRONG), 429, code="address_suspended")


def test_a_suspension_ends_by_itself(school, clock):
    cs = school
    hammer(cs, ATTACKER, 10)
    clock.advance(timedelta(minutes=5))
    r = user_login(cs, ATTACKER)
    assert_problem(r, 429)
    assert int(r.headers["Retry-After"]) == 10 * 60
    clock.advance(timedelta(minutes=10, seconds=1))
    assert user_login(cs, ATTACKER).status_code == 201
    assert suspended(cs.client, cs.console) == []
    assert_problem(cs.client.delete(f"{SUSPENDED}/{ATTACKER}", headers=cs.console), 404, detail="not suspended")


def test_a_successful_login_does_not_reset_the_count(school):
    """Otherwise one valid account would let an address try every other password forever."""
    cs = school
    hammer(cs, ATTACKER, 5)
    assert user_login(cs, ATTACKER, "consult").status_code == 201
    hammer(cs, ATTACKER, 4)
    assert_problem(user_login(cs, ATTACKER, password=WRONG), 429)


def test_wrong_pins_count_as_failed_authentications(school):
    cs = school
    h = bearer(user_login(cs, NEIGHBOUR).json()["token"])
    r = cs.client.put("/v1/me/security", headers=h, json={"measure": "pin", "pin": "7450", "pin_confirmation": "7450"})
    assert r.status_code == 200, r.text
    device = "device-0123456789abcdef-cdi"
    # Being asked for the PIN is not a failure; a wrong PIN is.
    for _ in range(3):
        assert_problem(user_login(cs, ATTACKER, device=device), 401, code="pin_required")
    for _ in range(9):
        assert_problem(user_login(cs, ATTACKER, device=device, pin="918273645"), 401, code="invalid_pin")
    assert_problem(user_login(cs, ATTACKER, device=device, pin="1111"), 429, code="address_suspended")
    assert_problem(user_login(cs, ATTACKER, device=device, pin="7450"), 429)
    [suspension] = history(cs.client, cs.console, type="ClientAddress.Suspended")
    assert suspension["client_address"] == ATTACKER and suspension["data"]["failures"] == 10
    assert "918273645" not in json.dumps(history(cs.client, cs.console))


# -- the hosting manager's console ---------------------------------------------------------------
def test_console_password_failures_suspend_that_schools_console_logins(proxied):
    client = proxied
    school, other = open_account(client), open_account(client, establishment="Collège Voltaire")
    console_login(client, school)
    body = {"hosting_number": school.hosting_number, "password": WRONG, "certificate": school.certificate}
    for _ in range(9):
        assert_problem(client.post("/v1/console/sessions", json=body, headers=via(ATTACKER)), 401,
                       code="invalid_credentials")
    assert_problem(client.post("/v1/console/sessions", json=body, headers=via(ATTACKER)), 429, code="address_suspended")
    right = {**body, "password": school.console_password}
    assert_problem(client.post("/v1/console/sessions", json=right, headers=via(ATTACKER)), 429)
    # Another address, and another school from the same address, are served.
    assert client.post("/v1/console/sessions", json=right, headers=via(NEIGHBOUR)).status_code == 201
    r = client.post("/v1/console/sessions", headers=via(ATTACKER), json={
        "hosting_number": other.hosting_number, "password": other.console_password, "invoice_number": other.invoice_number})
    assert r.status_code == 201, r.text
    # The other school sees nothing of the first school's suspension.
    other_headers = bearer(r.json()["token"])
    assert client.post("/v1/console/licence-agreement", headers=other_headers).status_code == 200
    assert suspended(client, other_headers) == []
    assert_problem(client.delete(f"{SUSPENDED}/{ATTACKER}", headers=other_headers), 404)


def test_wrong_invoice_numbers_count_and_are_never_recorded(proxied):
    client = proxied
    school = open_account(client)
    wrong_invoice = "1234567890" if school.invoice_number != "1234567890" else "1234567891"
    body = {"hosting_number": school.hosting_number, "password": school.console_password, "invoice_number": wrong_invoice}
    for _ in range(9):
        assert_problem(client.post("/v1/console/sessions", json=body, headers=via(ATTACKER)), 401,
                       code="invalid_invoice_number")
    assert_problem(client.post("/v1/console/sessions", json=body, headers=via(ATTACKER)), 429)
    headers = console_login(client, school)  # from the proxy's own address
    client.post("/v1/console/licence-agreement", headers=headers)
    [suspension] = history(client, headers, type="ClientAddress.Suspended")
    assert suspension["client_address"] == ATTACKER and suspension["data"]["failures"] == 10
    assert wrong_invoice not in json.dumps(history(client, headers))


def test_an_unknown_hosting_number_answers_like_a_wrong_password(proxied):
    client = proxied
    school = open_account(client)
    missing = "100000000000" if school.hosting_number != "100000000000" else "100000000001"
    answers = [client.post("/v1/console/sessions", headers=via(ATTACKER), json={"hosting_number": number,
               "password": WRONG, "invoice_number": "1234567890"}) for number in (missing, school.hosting_number)]
    assert answers[0].status_code == answers[1].status_code == 401
    assert answers[0].json() == answers[1].json()
    for _ in range(9):
        client.post("/v1/console/sessions", headers=via(ATTACKER), json={"hosting_number": missing, "password": WRONG})
    assert_problem(client.post("/v1/console/sessions", headers=via(ATTACKER),
                               json={"hosting_number": missing, "password": WRONG}), 429, code="address_suspended")


# -- who may see and unblock -------------------------------------------------------------------
def test_an_administrator_user_lists_and_unblocks_but_a_plain_user_may_not(school):
    cs = school
    hammer(cs, ATTACKER, 10)
    admin = bearer(user_login(cs, NEIGHBOUR, SUPERADMIN_LOGIN).json()["token"])
    plain = bearer(user_login(cs, NEIGHBOUR, "modif").json()["token"])
    assert [s["address"] for s in suspended(cs.client, admin)] == [ATTACKER]
    assert_problem(cs.client.get(SUSPENDED, headers=plain), 403, code="profile_insufficient")
    assert_problem(cs.client.delete(f"{SUSPENDED}/{ATTACKER}", headers=plain), 403)
    assert_problem(cs.client.get(SUSPENDED), 401)
    assert cs.client.delete(f"{SUSPENDED}/{ATTACKER}", headers=admin).status_code == 204
    [unblocking] = history(cs.client, cs.console, type="ClientAddress.Unblocked")
    assert unblocking["actor"] == f"user:{SUPERADMIN_LOGIN}"


@pytest.mark.parametrize("address", ["not-an-address", "300.1.2.3", "1.2.3", "::g"])
def test_unblocking_a_malformed_address_is_refused(school, address):
    assert_problem(school.client.delete(f"{SUSPENDED}/{address}", headers=school.console), 422, fields={"address"})


def test_unblocking_an_address_that_is_not_suspended_is_not_found(school):
    cs = school
    hammer(cs, ATTACKER, 3)
    assert_problem(cs.client.delete(f"{SUSPENDED}/{ATTACKER}", headers=cs.console), 404, detail=ATTACKER)
    assert_problem(cs.client.delete(f"{SUSPENDED}/2001:db8::1", headers=cs.console), 404)


def test_ipv6_addresses_are_named_canonically(school):
    cs = school
    for _ in range(10):
        user_login(cs, "2001:DB8:0:0::7", password=WRONG)
    assert [s["address"] for s in suspended(cs.client, cs.console)] == ["2001:db8::7"]
    assert cs.client.delete(f"{SUSPENDED}/2001:0db8::0007", headers=cs.console).status_code == 204


# -- where the address comes from --------------------------------------------------------------
def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(settings, clock):
    with client_from(settings, clock, ATTACKER) as client:
        cs = campus_school(client)
        for i in range(10):
            user_login(cs, f"192.0.2.{i}", password=WRONG)
        assert [s["address"] for s in suspended(client, cs.console)] == [ATTACKER]
        assert_problem(user_login(cs, NEIGHBOUR), 429)


def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client(settings, clock):
    # One failure suspends (login_failures_max=1): the suspensions name the addresses the failures counted for.
    with client_from(settings, clock, PROXY, trusted_proxies=(PROXY, "10.0.0.0/8"), login_failures_max=1) as client:
        cs = campus_school(client)
        # The client forged the first hop; the second proxy (10.1.2.3) saw 203.0.113.66.
        forged = "6.6.6.6, 203.0.113.66, 10.1.2.3"
        r = client.post("/v1/sessions", headers={"X-Forwarded-For": forged}, json={
            "domain": cs.domain, "login": "modif", "password": cs.passwords["modif"], "planning": cs.planning01,
            "mode": "administrative"})
        assert r.status_code == 201, r.text
        [opened] = history(client, cs.console, type="UserSession.Opened")
        assert opened["client_address"] == ATTACKER
        # Only trusted hops: the left-most one; no header: the proxy itself.
        client.post("/v1/sessions", headers={"X-Forwarded-For": "10.9.9.9, 10.1.1.1"}, json={
            "domain": cs.domain, "login": "modif", "password": WRONG, "planning": cs.planning01,
            "mode": "administrative"})
        client.post("/v1/sessions", json={"domain": cs.domain, "login": "modif", "password": WRONG,
                                          "planning": cs.planning01, "mode": "administrative"})
        assert [s["address"] for s in suspended(client, cs.console)] == ["10.9.9.9", PROXY]


# -- configuration and durability ---------------------------------------------------------------
def test_the_limits_are_settings(settings, clock):
    with client_from(settings, clock, PROXY, trusted_proxies=(PROXY,), login_failures_max=3,
                     login_failures_window_minutes=1, login_suspension_minutes=2) as client:
        cs = campus_school(client)
        hammer(cs, ATTACKER, 2)
        r = user_login(cs, ATTACKER, password=WRONG)
        assert_problem(r, 429)
        assert r.headers["Retry-After"] == "120"


def test_settings_are_read_from_the_environment():
    env = {"CAMPUS_LOGIN_FAILURES_MAX": "5", "CAMPUS_LOGIN_FAILURES_WINDOW_MINUTES": "30",
           "CAMPUS_LOGIN_SUSPENSION_MINUTES": "60", "CAMPUS_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,::1"}
    s = Settings.from_env(env)
    assert (s.login_failures_max, s.login_failures_window_minutes, s.login_suspension_minutes) == (5, 30, 60)
    assert s.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1")
    defaults = Settings.from_env({})
    assert (defaults.login_failures_max, defaults.login_failures_window_minutes) == (10, 15)
    assert defaults.trusted_proxies == ()
    with pytest.raises(ValueError, match="CAMPUS_TRUSTED_PROXIES"):
        Settings.from_env({"CAMPUS_TRUSTED_PROXIES": "proxy.example.org"})
    with pytest.raises(ValueError, match="CAMPUS_LOGIN_FAILURES_MAX"):
        Settings.from_env({"CAMPUS_LOGIN_FAILURES_MAX": "0"})


def test_failures_and_suspensions_survive_a_restart(settings, clock):
    with client_from(settings, clock, PROXY, trusted_proxies=(PROXY,)) as client:
        cs = campus_school(client)
        hammer(cs, ATTACKER, 6)
    with client_from(settings, clock, PROXY, trusted_proxies=(PROXY,)) as client:
        cs.client = client
        hammer(cs, ATTACKER, 3)
        assert_problem(user_login(cs, ATTACKER, password=WRONG), 429)
    with client_from(settings, clock, PROXY, trusted_proxies=(PROXY,)) as client:
        cs.client = client
        assert_problem(user_login(cs, ATTACKER), 429)
        assert [s["address"] for s in suspended(client, cs.console)] == [ATTACKER]
