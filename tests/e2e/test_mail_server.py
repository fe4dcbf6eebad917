"""Mail against a real ``campus serve`` and a real local SMTP server (issue 5,
Campus fiches 10 and 11).

Given the Campus guide's school (fiches 1-8: pmartin superadministrator,
afilaire base administrator, both with an e-mail) and a base in service on
planning01, the hosting manager:

* creates pmartin's personal mail account: the 6-digit code arrives by SMTP
  (the server authenticates with CAMPUS_SMTP_USER / CAMPUS_SMTP_PASSWORD), a
  wrong code is refused, the right one verifies it; an establishment account
  whose code is missed five times is void;
* sends the connection details to afilaire, cdurand and a user without an
  e-mail: two mails arrive, each PDF letter (opened with pypdf) holds the
  login and a new password that opens a session, while the old one no
  longer does; the user without an e-mail is reported;
* with the SMTP server down, sends again: the outbox shows the failure; the
  campus server restarts; the SMTP server comes back and the queued letter
  is delivered after the restart;
* and nowhere — history, answers, server logs — is there a code or a password.

Expiry (15 minutes) is covered by tests/integration/test_mail.py with a
ManualClock. Once on SQLite and once on PostgreSQL (own schema).
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

pytestmark = pytest.mark.e2e

MAIL_FROM = "campus@hebergeur.example"
SMTP_USER, SMTP_PASSWORD = "campus-mailer", "smtp-Secret-2026"
GRID = {
    "name": "Année 2026-2027", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
    "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 8, "sequence_minutes": 60,
    "split": 2,
}


def code_in(message: Any) -> str:
    found = re.findall(r"\b(\d{6})\b", message.get_body(preferencelist=("plain",)).get_content())
    assert len(found) == 1, found
    return found[0]


def letter_of(message: Any) -> str:
    [pdf] = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.get_content())).pages)


def password_in(text: str) -> str:
    match = re.search(r"Mot de passe : (\S+)", text)
    assert match, text
    return match.group(1)


def recipient(message: Any) -> str:
    return message["To"].addresses[0].addr_spec


def wait_outbox(http: httpx.Client, headers: dict, message_id: str, check: Any, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = http.get(f"/v1/console/outbox/{message_id}", headers=headers)
        assert r.status_code == 200, r.text
        if check(r.json()):
            return r.json()
        if time.monotonic() > deadline:
            pytest.fail(f"the message never reached the expected state: {r.json()}")
        time.sleep(0.1)


def login(http: httpx.Client, user: str, password: str, planning_id: str) -> httpx.Response:
    return http.post("/v1/sessions", json={"domain": "monecole", "login": user, "password": password,
                                           "planning": planning_id, "mode": "administrative"})


def test_mail_accounts_connection_details_and_the_outbox(make_server, guide_for, make_smtp_server,  # noqa: ANN001
                                                         store: str) -> None:  # noqa: PLR0915 - one story
    smtp = make_smtp_server(SMTP_USER, SMTP_PASSWORD)
    server = make_server(store, extra_env={**smtp.env(), "CAMPUS_MAIL_FROM": MAIL_FROM,
                                           "CAMPUS_MAIL_RETRY_SECONDS": "1", "CAMPUS_MAIL_POLL_SECONDS": "0.2"})
    guide = guide_for(server).walk()
    http, expect, console = server.client, guide.expect, guide.console()
    p1 = guide.planning(1)["id"]
    expect(http.post(f"/v1/console/plannings/{p1}/bases", headers=console, json=GRID), 201)
    cdurand = guide.create_user("cdurand", "DURAND", "Claire", email="cdurand@ecole.fr")
    sansmail = guide.create_user("sansmail", "SANS", "Mail")
    guide.assign(p1, "consultation", ["cdurand", "sansmail"])
    old_afilaire = guide.generated_passwords[0]
    assert login(http, "afilaire", old_afilaire, p1).status_code == 201

    # -- fiche 10: pmartin's personal account, verified by the code received -----------------------
    account = expect(http.post("/v1/console/mail-accounts", headers=console, json={
        "kind": "personal", "login": "pmartin", "secret_question": "Ville de naissance",
        "secret_answer": "Marseille"}), 201)
    assert account["address"] == "pmartin@ecole.fr" and account["name"] == "Pierre MARTIN"
    first = smtp.wait_for(1)[0]
    assert recipient(first) == "pmartin@ecole.fr" and smtp.envelopes[0][0] == MAIL_FROM
    code = code_in(first)
    url = f"/v1/console/mail-accounts/{account['id']}"
    wrong = "000000" if code != "000000" else "111111"
    refused = expect(http.post(f"{url}/verification", headers=console, json={"code": wrong}), 422)
    assert refused["code"] == "invalid_code" and refused["errors"][0]["field"] == "code"
    assert expect(http.post(f"{url}/verification", headers=console, json={"code": code}), 200)["verified"] is True

    other = expect(http.post("/v1/console/mail-accounts", headers=console, json={
        "kind": "establishment", "address": "secretariat@ecole.fr", "secret_question": "Q",
        "secret_answer": "R"}), 201)
    other_code = code_in(smtp.wait_for(2)[1])
    other_wrong = "000000" if other_code != "000000" else "111111"
    for _ in range(5):
        expect(http.post(f"/v1/console/mail-accounts/{other['id']}/verification", headers=console,
                         json={"code": other_wrong}), 422)
    void = expect(http.post(f"/v1/console/mail-accounts/{other['id']}/verification", headers=console,
                            json={"code": other_code}), 409)
    assert void["code"] == "code_void"
    refused_send = expect(http.post("/v1/console/users/connection-details", headers=console, json={
        "logins": ["afilaire"], "mail_account_id": other["id"]}), 409)
    assert refused_send["code"] == "mail_account_not_verified"

    # -- fiche 11: connection details, in the default "Connexion des personnels" letter ------------------
    sent = expect(http.post("/v1/console/users/connection-details", headers=console, json={
        "logins": ["afilaire", "cdurand", "sansmail"], "mail_account_id": account["id"]}), 202)
    assert [q["login"] for q in sent["queued"]] == ["afilaire", "cdurand"]
    assert [w["login"] for w in sent["without_email"]] == ["sansmail"]
    letters = {recipient(m): m for m in smtp.wait_for(4)[2:]}
    assert set(letters) == {"afilaire@ecole.fr", "cdurand@ecole.fr"}
    passwords = {}
    for user, address in (("afilaire", "afilaire@ecole.fr"), ("cdurand", "cdurand@ecole.fr")):
        message = letters[address]
        assert message["Subject"] == "Connexion des personnels" and message["Reply-To"] == "pmartin@ecole.fr"
        text = letter_of(message)
        assert f"Identifiant : {user}" in text and "École Martin" in text and "monecole." in text
        passwords[user] = password_in(text)
        assert login(http, user, passwords[user], p1).status_code == 201
    assert login(http, "afilaire", old_afilaire, p1).status_code == 401
    assert login(http, "cdurand", cdurand["password"], p1).status_code == 401
    assert login(http, "sansmail", sansmail["password"], p1).status_code == 201, "no e-mail: password unchanged"

    # -- the SMTP server is down; campus restarts; the letter still arrives ---------------------------------
    smtp.stop()
    again = expect(http.post("/v1/console/users/connection-details", headers=console, json={
        "logins": ["cdurand"], "mail_account_id": account["id"]}), 202)
    message_id = again["queued"][0]["message_id"]
    failed = wait_outbox(http, console, message_id, lambda m: m["attempts"] >= 1)
    assert failed["state"] == "failed" and failed["last_error"] and failed["next_attempt_at"]
    server.restart()
    smtp.start()
    delivered = wait_outbox(http, guide.console(), message_id, lambda m: m["state"] == "sent")
    assert delivered["attempts"] >= 2 and delivered["to"] == "cdurand@ecole.fr"
    newest = smtp.wait_for(5)[4]
    assert recipient(newest) == "cdurand@ecole.fr"
    passwords["cdurand again"] = password_in(letter_of(newest))
    assert login(http, "cdurand", passwords["cdurand again"], p1).status_code == 201
    assert login(http, "cdurand", passwords["cdurand"], p1).status_code == 401

    # -- no code, answer or password anywhere but in the mail -------------------------------------------
    outbox = expect(http.get("/v1/console/outbox", headers=guide.console()), 200)
    assert outbox["smtp_configured"] is True
    assert [m["state"] for m in outbox["messages"]] == ["sent"] * 5
    history = str(guide.history())
    assert "MailMessage.Sent" in history and "pmartin@ecole.fr" in history
    logs = server.logs()
    assert "mail_sent" in logs
    for secret in [code, other_code, "Marseille", SMTP_PASSWORD, *passwords.values()]:
        assert secret not in history, secret
        assert secret not in logs, secret
        assert secret not in str(outbox), secret
