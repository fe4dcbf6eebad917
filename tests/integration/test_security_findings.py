"""Issue 9, point 4 — security and robustness findings, over HTTP (in-process app, real stores).

* equal work for an unknown hosting number (the argon2 check runs, on a hash of the same cost);
* failed logins are bounded counters, not events; an address trying random hosting numbers is
  refused after the deployment-wide limit; counters are shared by servers on one store;
* operator authentication: a short configured token opens nothing, failures are rate-limited;
* names made only of invisible characters are refused with 422 naming the field, everywhere;
* security headers on every answer, and on files served (an HTML annex is not sniffed or framed).

The live history stream, a client gone mid-body, a full disk, an unusable data dir and
the start-up refusals are tested against a real ``campus serve``:
tests/e2e/test_security_findings_server.py.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import argon2
import pytest
from api_helpers import (
    SUPERADMIN_LOGIN,
    assert_problem,
    bearer,
    cheap_argon2,
    history,
    open_account,
    operator_headers,
)
from school_helpers import CampusSchool, campus_school, grid_body
from starlette.testclient import TestClient

import campus.rules.security
from campus.api.app import create_app
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.rules.text import BLANK_MESSAGE, is_blank, required_text, visible_strip

PROXY = "198.51.100.7"
ATTACKER = "203.0.113.66"
NEIGHBOUR = "203.0.113.99"
WRONG = "Not-the-password-42!"
# Zero-width space, word joiner, byte-order mark, zero-width joiner, ideographic space, no-break space.
INVISIBLE = "\u200b\u2060\ufeff\u200d\u3000\u00a0"


def client_from(settings: Settings, clock: ManualClock, peer: str = PROXY, **overrides: Any) -> TestClient:
    settings = dataclasses.replace(settings, **{"trusted_proxies": (PROXY,), **overrides})
    return TestClient(create_app(settings, clock=clock), raise_server_exceptions=False, client=(peer, 40000))


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def stored_events(client: TestClient) -> int:
    """How many events the store holds (the notification log's last id)."""
    return client.app.state.campus.recorder.max_notification_id() or 0  # type: ignore[attr-defined]


def unknown_numbers(client: TestClient, count: int) -> list[str]:
    app = client.app.state.campus  # type: ignore[attr-defined]
    from campus.aggregates.account import account_id_for

    numbers = [f"9{i:011d}" for i in range(1, 1000)]
    return [n for n in numbers if account_id_for(n) not in app.repository][:count]


# -- 1. an unknown hosting number costs the same argon2 check as a wrong password ------------------------------
class WatchedHasher(argon2.PasswordHasher):
    """argon2's own hasher (default costs), noting the parameters of every hash it verifies."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[argon2.Parameters] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - argon2's signature
        self.verified.append(argon2.extract_parameters(hash if isinstance(hash, str) else hash.decode()))
        return super().verify(hash, password)


def test_an_unknown_hosting_number_is_checked_against_a_dummy_hash_of_the_same_cost(sqlite_only_settings, clock,
                                                                                   monkeypatch):
    hasher = WatchedHasher()
    monkeypatch.setattr(campus.rules.security, "_hasher", hasher)
    with client_from(sqlite_only_settings, clock) as client:
        school = open_account(client)
        [missing] = unknown_numbers(client, 1)
        stored = argon2.extract_parameters(client.app.state.campus.accounts.account_by_number(  # type: ignore[attr-defined]
            school.hosting_number).console_password_hash)
        answers = {}
        for number in (school.hosting_number, missing):
            hasher.verified.clear()
            r = client.post("/v1/console/sessions", json={"hosting_number": number, "password": WRONG})
            answers[number] = assert_problem(r, 401, code="invalid_credentials")
            # Then exactly one argon2 verification ran, on a hash as costly as a real console password's
            assert hasher.verified == [stored], f"{number}: argon2 verified {hasher.verified}"
        assert answers[school.hosting_number] == answers[missing]


# -- 2. failed logins: bounded counters, suspension by address whatever number is tried ------------------------
@pytest.fixture(autouse=False)
def cheap(monkeypatch):
    cheap_argon2(monkeypatch)


def test_an_address_trying_random_hosting_numbers_is_refused_after_the_limit_and_writes_no_event(
        settings, clock, cheap):
    limit = 30  # CAMPUS_CONSOLE_LOGIN_FAILURES_MAX's default (checked at the end)
    with client_from(settings, clock) as client:
        school = open_account(client)
        numbers = unknown_numbers(client, limit + 1)
        before = stored_events(client)
        # When one address tries 29 different unknown numbers
        for number in numbers[:limit - 1]:
            assert_problem(client.post("/v1/console/sessions", headers=via(ATTACKER),
                                       json={"hosting_number": number, "password": WRONG}), 401,
                           code="invalid_credentials")
        # Then nothing was written to the event log: failures are counters
        assert stored_events(client) == before
        # And the 30th failure, on yet another number, reaches the deployment-wide limit
        last = client.post("/v1/console/sessions", headers=via(ATTACKER),
                           json={"hosting_number": numbers[limit - 1], "password": WRONG})
        body = assert_problem(last, 429, code="address_suspended", detail=(ATTACKER, "console logins"))
        assert 0 < int(last.headers["Retry-After"]) <= 15 * 60
        assert WRONG not in last.text and "token" not in body
        # Then every console login from that address is refused before any check, the right password included
        right = {"hosting_number": school.hosting_number, "password": school.console_password,
                 "invoice_number": school.invoice_number}
        assert_problem(client.post("/v1/console/sessions", headers=via(ATTACKER), json=right), 429,
                       code="address_suspended")
        assert_problem(client.post("/v1/console/sessions", headers=via(ATTACKER),
                                   json={"hosting_number": numbers[limit], "password": WRONG}), 429)
        # While another address is served
        assert client.post("/v1/console/sessions", headers=via(NEIGHBOUR), json=right).status_code == 201
        assert stored_events(client) > before  # (that login is an event)

        # When the failures leave the window, the address may log in again
        clock.advance(timedelta(minutes=15, seconds=1))
        assert client.post("/v1/console/sessions", headers=via(ATTACKER), json=right).status_code == 201
    assert Settings().console_login_failures_max == limit


def test_the_deployment_wide_limit_is_a_setting(sqlite_only_settings, clock, cheap):
    with client_from(sqlite_only_settings, clock, console_login_failures_max=3) as client:
        numbers = unknown_numbers(client, 3)
        for number in numbers[:2]:
            assert_problem(client.post("/v1/console/sessions", headers=via(ATTACKER),
                                       json={"hosting_number": number, "password": WRONG}), 401)
        assert_problem(client.post("/v1/console/sessions", headers=via(ATTACKER),
                                   json={"hosting_number": numbers[2], "password": WRONG}), 429,
                       code="address_suspended")


def test_failed_logins_are_counters_shared_by_two_servers_and_only_the_suspension_is_an_event(
        settings, clock, cheap):
    # Given two servers on one store (two apps, as two processes would be)
    with client_from(settings, clock) as one, client_from(settings, clock) as two:
        cs = campus_school(one)
        before = stored_events(one)

        def hammer(client: TestClient, times: int, answers: list) -> None:
            for _ in range(times):
                answers.append(client.post("/v1/sessions", headers=via(ATTACKER), json={
                    "domain": cs.domain, "login": "modif", "password": WRONG, "planning": cs.planning01,
                    "mode": "administrative"}).status_code)

        # When nine failures of one address hit both servers at once
        answers: list[int] = []
        threads = [threading.Thread(target=hammer, args=(c, n, answers)) for c, n in ((one, 5), (two, 4))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [401] * 9
        # Then none of them is an event
        assert stored_events(one) == before
        assert history(one, cs.console, type="ClientAddress.AuthenticationFailed") == []
        # And the tenth, on either server, suspends the address: counted together
        tenth = two.post("/v1/sessions", headers=via(ATTACKER), json={
            "domain": cs.domain, "login": "consult", "password": WRONG, "planning": cs.planning01,
            "mode": "administrative"})
        assert_problem(tenth, 429, code="address_suspended")
        [suspension] = history(one, cs.console, type="ClientAddress.Suspended")
        assert suspension["client_address"] == ATTACKER and suspension["data"]["failures"] == 10
        listed = one.get("/v1/console/security/suspended-addresses", headers=cs.console).json()
        assert [(s["address"], s["failures"]) for s in listed["suspended_addresses"]] == [(ATTACKER, 10)]


def test_a_burst_of_guesses_on_two_servers_has_at_most_the_limit_checked(settings, clock, cheap):
    """An attempt is counted before its password is checked: past the limit it is refused unchecked."""
    burst = 16
    with client_from(settings, clock) as one, client_from(settings, clock) as two:
        cs = campus_school(one)
        start = threading.Barrier(burst)
        answers: list[str] = []

        def guess(client: TestClient, password: str = WRONG) -> str:
            r = client.post("/v1/sessions", headers=via(ATTACKER), json={
                "domain": cs.domain, "login": "modif", "password": password, "planning": cs.planning01,
                "mode": "administrative"})
            return f"{r.status_code} {r.json().get('code')}"

        def racer(client: TestClient) -> None:
            start.wait()
            answers.append(guess(client))

        threads = [threading.Thread(target=racer, args=((one, two)[i % 2],)) for i in range(burst)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Then nine guesses were told "wrong password", the tenth suspended the address, the rest were not checked
        assert sorted(answers) == ["401 invalid_credentials"] * 9 + ["429 address_suspended"] * (burst - 9)
        [suspension] = history(one, cs.console, type="ClientAddress.Suspended")
        assert suspension["data"]["failures"] == 10
        # And the right password is refused from there on both servers
        assert guess(one, cs.passwords["modif"]) == guess(two, cs.passwords["modif"]) == "429 address_suspended"


def test_correct_logins_arriving_together_from_one_address_are_all_accepted(settings, clock, cheap):
    """A school behind one NAT address at 8:00: more right passwords at once than the failure limit are queued
    for a moment (attempts in flight count against the limit), never refused."""
    burst = 16
    settings = dataclasses.replace(settings, login_failures_max=2)  # many more in flight at once than the limit
    with client_from(settings, clock) as one, client_from(settings, clock) as two:
        cs = campus_school(one)
        start = threading.Barrier(burst)
        answers: list[int] = []

        def racer(client: TestClient) -> None:
            start.wait()
            r = client.post("/v1/sessions", headers=via(ATTACKER), json={
                "domain": cs.domain, "login": "modif", "password": cs.passwords["modif"], "planning": cs.planning01,
                "mode": "administrative", "access": "consultation"})
            answers.append(r.status_code)

        threads = [threading.Thread(target=racer, args=((one, two)[i % 2],)) for i in range(burst)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [201] * burst
        assert history(one, cs.console, type="ClientAddress.Suspended") == []


def test_the_failure_table_keeps_only_the_window(settings, clock, cheap):
    """Bounded storage: the counters of failures older than the window are deleted."""
    with client_from(settings, clock) as client:
        school = open_account(client)
        app = client.app.state.campus  # type: ignore[attr-defined]
        numbers = unknown_numbers(client, 20)
        for number in numbers:
            client.post("/v1/console/sessions", headers=via(ATTACKER), json={"hosting_number": number,
                                                                             "password": WRONG})
        table = app.login_guard.login_failures

        def rows() -> int:
            with table.datastore.transaction(commit=False) as curs:
                curs.execute(f"SELECT COUNT(*) AS n FROM {table.name}")
                return int(curs.fetchone()["n"])

        assert 0 < rows() <= 21  # one per tried number (school scope) and one for every console login
        clock.advance(timedelta(minutes=16))
        client.post("/v1/console/sessions", headers=via(NEIGHBOUR), json={"hosting_number": school.hosting_number,
                                                                          "password": WRONG})
        assert rows() == 2  # only the new failure's two counters are left


def test_failures_recorded_as_events_before_still_replay_and_no_longer_count(settings, clock, cheap):
    """Stores written before issue 9 hold ClientAddress.AuthenticationFailed events: they stay readable."""
    from campus.aggregates.account import account_id_for
    from campus.aggregates.address import ClientAddress

    with client_from(settings, clock) as client:
        cs = campus_school(client)
        app = client.app.state.campus  # type: ignore[attr-defined]
        # Given nine failures recorded the old way (one event each) for ATTACKER
        tenant = account_id_for(cs.school.hosting_number)

        def old_failures() -> None:  # as the code before issue 9 recorded them: a command of the school
            watch = ClientAddress(account_id=tenant, address=ATTACKER)
            for _ in range(9):
                watch.fail_authentication(kind="password", login="modif", failed_at=app.now())
            app.save(watch)

        app.commands.run(tenant, old_failures)
        assert len(history(client, cs.console, type="ClientAddress.AuthenticationFailed")) == 9

        def wrong() -> Any:
            return client.post("/v1/sessions", headers=via(ATTACKER), json={
                "domain": cs.domain, "login": "modif", "password": WRONG, "planning": cs.planning01,
                "mode": "administrative"})

        # Then they no longer count: nine new failures are refused one by one, the tenth suspends
        for _ in range(9):
            assert_problem(wrong(), 401, code="invalid_credentials")
        assert_problem(wrong(), 429, code="address_suspended")
        # And the old aggregate replays with its suspension (listing and unblocking read it)
        listed = client.get("/v1/console/security/suspended-addresses", headers=cs.console).json()
        assert [(a["address"], a["failures"]) for a in listed["suspended_addresses"]] == [(ATTACKER, 10)]
        assert client.delete(f"/v1/console/security/suspended-addresses/{ATTACKER}",
                             headers=cs.console).status_code == 204
        assert len(history(client, cs.console, type="ClientAddress.AuthenticationFailed")) == 9


# -- 9. operator authentication --------------------------------------------------------------------------------
def test_operator_authentication_is_rate_limited_per_address(settings, clock, cheap):
    with client_from(settings, clock) as client:
        good = operator_headers(client)
        body = {"establishment": "Lycée", "manager": {"name": "M", "email": "m@example.org"}}
        wrong = bearer("x" * 43)
        for _ in range(9):
            assert_problem(client.post("/v1/operator/accounts", headers={**wrong, **via(ATTACKER)}, json=body), 401,
                           code="invalid_token")
        tenth = client.post("/v1/operator/accounts", headers={**wrong, **via(ATTACKER)}, json=body)
        assert_problem(tenth, 429, code="address_suspended", detail=(ATTACKER, "operator"))
        assert 0 < int(tenth.headers["Retry-After"]) <= 15 * 60
        # Then even the right token is refused from that address, until the failures age out
        assert_problem(client.get("/v1/operator/accounts/100000000000", headers={**good, **via(ATTACKER)}), 429)
        assert client.post("/v1/operator/accounts", headers={**good, **via(NEIGHBOUR)}, json=body).status_code == 201
        clock.advance(timedelta(minutes=15, seconds=1))
        assert client.post("/v1/operator/accounts", headers={**good, **via(ATTACKER)}, json=body).status_code == 201
        assert "x" * 43 not in client.get("/v1/console/history").text


def test_a_configured_operator_token_shorter_than_32_characters_opens_nothing(sqlite_only_settings, clock):
    short = "s" * 31
    with client_from(sqlite_only_settings, clock, operator_token=short) as client:
        r = client.post("/v1/operator/accounts", headers=bearer(short), json={
            "establishment": "Lycée", "manager": {"name": "M", "email": "m@example.org"}})
        assert_problem(r, 401, code="invalid_token")


def test_a_short_operator_token_in_the_environment_stops_the_settings():
    with pytest.raises(ValueError, match=r"CAMPUS_OPERATOR_TOKEN must be at least 32 characters"):
        Settings.from_env({"CAMPUS_OPERATOR_TOKEN": "t" * 31})
    assert Settings.from_env({"CAMPUS_OPERATOR_TOKEN": "t" * 32}).operator_token == "t" * 32
    assert Settings.from_env({"CAMPUS_CONSOLE_LOGIN_FAILURES_MAX": "7"}).console_login_failures_max == 7
    assert Settings.from_env({"CAMPUS_HISTORY_SESSION_CHECK_SECONDS": "2.5"}).history_session_check_seconds == 2.5
    with pytest.raises(ValueError, match="CAMPUS_HISTORY_SESSION_CHECK_SECONDS"):
        Settings.from_env({"CAMPUS_HISTORY_SESSION_CHECK_SECONDS": "0"})


# -- 7. names made only of invisible characters ------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    "", " ", "\t\n", "\u200b", "\u200c\u200d", "\u2060", "\ufeff", "\u00a0\u3000", "\u2028\u2029", "\u202e",
    "\u3164", "\u2800", "\u115f", "\x00\x1f", INVISIBLE])
def test_invisible_only_text_is_blank(value):
    assert is_blank(value)
    with pytest.raises(Exception) as refused:
        required_text("name", value, 100)
    assert refused.value.status == 422 and refused.value.errors == [{"field": "name", "message": BLANK_MESSAGE}]


@pytest.mark.parametrize(("value", "kept"), [
    ("Jean", "Jean"), ("\u200bJean\ufeff ", "Jean"), ("Jean\u200dPierre", "Jean\u200dPierre"), ("é", "é"),
    ("👩\u200d🏫", "👩\u200d🏫"), (" A ", "A")])
def test_visible_text_is_kept_trimmed_of_invisible_ends(value, kept):
    assert not is_blank(value) and visible_strip(value) == kept == required_text("name", value, 100)


def test_names_made_only_of_invisible_characters_are_refused_everywhere(sqlite_only_settings, clock, cheap):
    with client_from(sqlite_only_settings, clock) as client:
        cs: CampusSchool = campus_school(client)
        console, p1, p2 = cs.console, cs.planning01, cs.planning02
        operator = operator_headers(client)
        user = cs.headers_for("modif", device="device-0123456789abcdef-cdi")
        admin = cs.headers_for(SUPERADMIN_LOGIN)
        manager = {"name": "M", "email": "m@example.org"}
        cases: list[tuple[str, str, dict[str, str], Any, str]] = [
            ("POST", "/v1/operator/accounts", operator, {"establishment": INVISIBLE, "manager": manager},
             "establishment"),
            ("POST", "/v1/operator/accounts", operator, {"establishment": "Lycée", "manager": {**manager,
                                                                                              "name": INVISIBLE}},
             "manager.name"),
            ("PATCH", f"/v1/operator/accounts/{cs.school.hosting_number}", operator,
             {"licence": {"formula": INVISIBLE}}, "licence.formula"),
            ("POST", "/v1/console/users", console, {"login": "newone", "last_name": INVISIBLE, "first_name": "Jean"},
             "last_name"),
            ("PATCH", "/v1/console/users/modif", console, {"first_name": INVISIBLE}, "first_name"),
            ("PATCH", f"/v1/console/plannings/{p2}", console, {"name": INVISIBLE}, "name"),
            ("PATCH", f"/v1/console/plannings/{p2}", console, {"publication_name": INVISIBLE}, "publication_name"),
            ("POST", "/v1/console/assignment-templates", console, {"name": INVISIBLE, "planning_id": p1}, "name"),
            ("POST", f"/v1/console/plannings/{p2}/bases", console, grid_body(name=INVISIBLE), "name"),
            ("POST", f"/v1/console/plannings/{p2}/bases/transfer", console, {
                "name": INVISIBLE, "grid": {k: v for k, v in grid_body().items() if k != "name"}}, "name"),
            ("PATCH", "/v1/console/account", console, {"manager": {"last_name": INVISIBLE}}, "manager.last_name"),
            ("POST", "/v1/console/mail-accounts", console, {"kind": "establishment", "address": "a@lycee.example",
                                                            "name": INVISIBLE, "secret_question": "Q",
                                                            "secret_answer": "R"}, "name"),
            ("POST", "/v1/console/mail-accounts", console, {"kind": "establishment", "address": "a@lycee.example",
                                                            "secret_question": INVISIBLE, "secret_answer": "R"},
             "secret_question"),
            ("PUT", "/v1/console/letter-templates/connexion-des-personnels", console,
             {"title": INVISIBLE, "body": "{login} {password}"}, "title"),
            ("POST", f"/v1/console/plannings/{p2}/publication/delegations", console,
             {"name": INVISIBLE, "protocol": "cas", "server_url": "https://cas.example.org/cas"}, "name"),
            ("PATCH", f"/v1/console/plannings/{p1}/publication/settings", admin,
             {"common_page": {"title": INVISIBLE}}, "common_page.title"),
            ("POST", "/v1/me/devices", user, {"name": INVISIBLE}, "name"),
            ("POST", "/v1/sessions", {}, {"domain": cs.domain, "login": "consult", "password": cs.passwords["consult"],
                                          "planning": p1, "mode": "administrative", "station": INVISIBLE}, "station"),
            ("POST", cs.records_url("teachers"), user, {"last_name": INVISIBLE, "first_name": "Ada"}, "last_name"),
            ("POST", cs.records_url("classes"), user, {"name": INVISIBLE}, "name"),
            ("PUT", f"/v1/console/plannings/{p1}/base/annexes/{quote(INVISIBLE)}", console, b"<p>hello</p>", "name"),
        ]
        wrong = []
        for method, url, headers, body, field in cases:
            kw = {"content": body, "headers": {**headers, "content-type": "text/html"}} if isinstance(body, bytes) \
                else {"json": body, "headers": headers}
            r = client.request(method, url, **kw)
            if r.status_code != 422 or field not in {e["field"] for e in r.json().get("errors", [])}:
                wrong.append(f"{method} {url} ({field}): {r.status_code} {r.text[:200]}")
            else:
                assert_problem(r, 422, fields={field})
                assert "invisible" in r.json()["detail"]
        assert not wrong, "accepted or refused without naming the field:\n" + "\n".join(wrong)
        # And nothing of them was stored
        assert not [e for e in history(client, console) if INVISIBLE in str(e["data"])]


# -- 8. security headers ------------------------------------------------------------------------------------------
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store", "x-frame-options": "DENY"}


def assert_secured(response, what: str) -> None:  # noqa: ANN001
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, f"{what}: {name} is {response.headers.get(name)!r}"
    policy = response.headers.get("content-security-policy", "")
    assert "default-src 'none'" in policy and "sandbox" in policy, f"{what}: CSP {policy!r}"


def test_every_answer_and_every_served_file_carries_the_security_headers(sqlite_only_settings, clock, cheap):
    with client_from(sqlite_only_settings, clock) as client:
        cs = campus_school(client)
        p1, console = cs.planning01, cs.console
        html = b"<html><script>alert(document.cookie)</script></html>"
        put = client.put(f"/v1/console/plannings/{p1}/base/annexes/page.html", headers={
            **console, "content-type": "text/html"}, content=html)
        assert put.status_code == 201, put.text
        annex = client.get(f"/v1/console/plannings/{p1}/base/annexes/page.html", headers=console)
        assert annex.status_code == 200 and annex.content == html
        assert annex.headers["content-type"].startswith("text/html")
        assert_secured(annex, "an HTML annex")
        assert annex.headers["content-disposition"].startswith("attachment")

        backup = client.post(f"/v1/console/plannings/{p1}/backups", headers=console, json={})
        assert backup.status_code == 201, backup.text
        answers = {
            "the annex": annex,
            "an export": client.get(f"/v1/console/plannings/{p1}/base/export", headers=console),
            "a backup download": client.get(f"/v1/console/plannings/{p1}/backups/{backup.json()['id']}/download",
                                            headers=console),
            "the users file": client.get("/v1/console/users/export", headers=console),
            "a new account's secrets": client.post("/v1/operator/accounts", headers=operator_headers(client), json={
                "establishment": "Collège", "manager": {"name": "M", "email": "m@example.org"}}),
            "a JSON read": client.get("/v1/console/plannings", headers=console),
            "a problem": client.get("/v1/console/plannings", headers=bearer("nope")),
            "an unknown route": client.get("/nowhere"),
            "the health check": client.get("/healthz"),
            "the API document": client.get("/openapi.json"),
        }
        for what, response in answers.items():
            assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:200]}"
            assert_secured(response, what)
        # A login answers a token: never stored by a cache either
        login = client.post("/v1/console/sessions", json={"hosting_number": cs.school.hosting_number,
                                                          "password": cs.school.console_password,
                                                          "certificate": cs.school.certificate})
        assert login.status_code == 201 and login.headers["cache-control"] == "no-store"
