"""Mail over HTTP (issue 5, Campus fiches 10 and 11), with a REAL local SMTP server.

Mail accounts verified by the 6-digit code that arrives by SMTP (wrong codes,
limited attempts, expiry, resend), secured by a secret question; the editable
"Connexion des personnels" letter; connection details sent to selected users
(the PDF letter opened with pypdf, its password then used to log in); the
outbox through an SMTP outage (failed, retried with backoff, sent, or
abandoned); mail that waits for an SMTP server across a restart. No code,
secret answer or password ever appears in an answer, the history, or the
event store.

Runs on SQLite and PostgreSQL (the `settings` fixture). The clock is a
ManualClock: expiry and backoff are lived through by advancing it.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from api_helpers import assert_problem, cheap_argon2, history, make_client, ready_school
from pypdf import PdfReader
from school_helpers import CampusSchool, campus_school
from starlette.testclient import TestClient

from campus.infra.clock import ManualClock
from campus.infra.settings import Settings

ACCOUNTS = "/v1/console/mail-accounts"
LETTER = "/v1/console/letter-templates/connexion-des-personnels"
SEND = "/v1/console/users/connection-details"
OUTBOX = "/v1/console/outbox"
MAIL_FROM = "campus@hebergeur.example"
SCHOOL_ADDRESS = "secretariat@lycee-moulin.example"
ANSWER = "Marseille"
EMAILS = {"modif": "modif@lycee-moulin.example", "consult": "consult@lycee-moulin.example"}
MARKED_LETTER = {
    "title": "Connexion des personnels",
    "body": "Bonjour {first_name} {last_name},\nEtablissement : {establishment}\nIdentifiant : {login}\n"
            "Mot de passe : {password}\nAdresse : {url}",
}


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    cheap_argon2(monkeypatch)


def mail_settings(settings: Settings, smtp) -> Settings:  # noqa: ANN001
    return dataclasses.replace(settings, smtp_host=smtp.host, smtp_port=smtp.port, smtp_tls="none",
                               mail_from=MAIL_FROM, mail_poll_seconds=0.05, mail_retry_seconds=30,
                               mail_max_attempts=3)


@pytest.fixture
def mc(settings: Settings, clock: ManualClock, smtp_server) -> Iterator[TestClient]:  # noqa: ANN001
    """A client of an app that sends through the local SMTP server (each store)."""
    with make_client(mail_settings(settings, smtp_server), clock) as client:
        yield client


@pytest.fixture
def ms(mc: TestClient) -> CampusSchool:
    """A school (base in service on planning01) whose users modif and consult have an e-mail."""
    cs = campus_school(mc)
    for login, address in EMAILS.items():
        r = mc.patch(f"/v1/console/users/{login}", headers=cs.console, json={"email": address})
        assert r.status_code == 200, r.text
    return cs


# -- helpers ----------------------------------------------------------------------------------------
def create_account(cs: CampusSchool, **overrides) -> dict:  # noqa: ANN003
    body = {"kind": "establishment", "address": SCHOOL_ADDRESS, "secret_question": "Ville de naissance",
            "secret_answer": ANSWER, **overrides}
    r = cs.client.post(ACCOUNTS, headers=cs.console, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def text_of(message) -> str:  # noqa: ANN001
    return message.get_body(preferencelist=("plain",)).get_content()


def code_in(message) -> str:  # noqa: ANN001
    found = re.findall(r"\b(\d{6})\b", text_of(message))
    assert len(found) == 1, text_of(message)
    return found[0]


def pdf_text(message) -> str:  # noqa: ANN001
    pdfs = [part for part in message.iter_attachments() if part.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1, [p.get_content_type() for p in message.iter_attachments()]
    reader = PdfReader(io.BytesIO(pdfs[0].get_content()))
    return "\n".join(page.extract_text() for page in reader.pages)


def password_in(text: str) -> str:
    match = re.search(r"Mot de passe : (\S+)", text)
    assert match, text
    return match.group(1)


def verify(cs: CampusSchool, account_id: str, code: str):  # noqa: ANN201
    return cs.client.post(f"{ACCOUNTS}/{account_id}/verification", headers=cs.console, json={"code": code})


def verified_account(cs: CampusSchool, smtp) -> dict:  # noqa: ANN001
    before = len(smtp.messages())
    account = create_account(cs)
    message = smtp.wait_for(before + 1)[before]
    r = verify(cs, account["id"], code_in(message))
    assert r.status_code == 200, r.text
    return r.json()


def outbox(cs: CampusSchool, **params) -> dict:  # noqa: ANN003
    r = cs.client.get(OUTBOX, headers=cs.console, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def wait_outbox(cs: CampusSchool, check: Callable[[list[dict]], bool], timeout: float = 30.0) -> list[dict]:
    """The outbox's messages once `check` holds (the sender thread works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = outbox(cs)["messages"]
        if check(messages):
            return messages
        if time.monotonic() > deadline:
            pytest.fail(f"the outbox never reached the expected state: {messages}")
        time.sleep(0.02)


def by_login(messages: list[dict], login: str) -> dict:
    return next(m for m in messages if m["login"] == login)


def everything_stored(client: TestClient) -> bytes:
    """Every event's stored bytes, as the store keeps them."""
    app = client.app.state.campus  # type: ignore[attr-defined]
    notifications = app.recorder.select_notifications(start=1, limit=1_000_000)
    return b"\n".join(n.state for n in notifications)


def assert_nowhere(cs: CampusSchool, secrets: list[str], *answers, known: str = SCHOOL_ADDRESS) -> None:  # noqa: ANN002
    """None of `secrets` is in the history, in the stored events, or in the given answers
    (`known`, a plain value the events do hold, proves the scans read real content)."""
    history_text = str(history(cs.client, cs.console))
    stored = everything_stored(cs.client)
    assert known in history_text and known.encode() in stored, "the scans read real content"
    for secret in secrets:
        assert secret not in history_text, secret
        assert secret.encode() not in stored, secret
        for answer in answers:
            assert secret not in answer.text, (secret, answer.text)


# -- mail accounts (fiche 10) ------------------------------------------------------------------------
def test_a_mail_account_is_verified_by_the_code_that_arrives_by_smtp(ms: CampusSchool, smtp_server):  # noqa: ANN001
    client = ms.client
    r = client.post(ACCOUNTS, headers=ms.console, json={
        "kind": "establishment", "address": SCHOOL_ADDRESS, "secret_question": "Ville de naissance",
        "secret_answer": ANSWER})
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["location"] == f"{ACCOUNTS}/{created['id']}"
    assert created["kind"] == "establishment" and created["address"] == SCHOOL_ADDRESS
    assert created["name"] == "Lycée Jean Moulin" and created["secret_question"] == "Ville de naissance"
    assert created["verified"] is False and created["verification"]["attempts_left"] == 5
    assert "secret_answer" not in created and ANSWER not in r.text

    message = smtp_server.wait_for(1)[0]
    assert smtp_server.envelopes[0] == (MAIL_FROM, [SCHOOL_ADDRESS])
    assert SCHOOL_ADDRESS in message["To"] and MAIL_FROM in message["From"]
    code = code_in(message)
    assert code not in message["Subject"]

    wrong = "000000" if code != "000000" else "111111"
    refused = verify(ms, created["id"], wrong)
    body = assert_problem(refused, 422, fields={"code"}, code="invalid_code")
    assert "4 attempts left" in body["detail"]
    assert_problem(verify(ms, created["id"], "12ab56"), 422, fields={"code"})  # not a code: no attempt spent
    r = client.get(f"{ACCOUNTS}/{created['id']}", headers=ms.console)
    assert r.json()["verification"]["attempts_left"] == 4 and r.json()["verified"] is False

    accepted = verify(ms, created["id"], code)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["verified"] is True and accepted.json()["verification"] is None
    assert_problem(verify(ms, created["id"], code), 409, code="already_verified")
    listed = client.get(ACCOUNTS, headers=ms.console).json()["mail_accounts"]
    assert [a["id"] for a in listed] == [created["id"]] and listed[0]["verified"] is True

    sent = wait_outbox(ms, lambda ms_: ms_ and ms_[0]["state"] == "sent")[0]
    assert sent["purpose"] == "verification_code" and sent["to"] == SCHOOL_ADDRESS and sent["attempts"] == 1
    assert sent["mail_account_id"] == created["id"] and "content" not in sent
    events = history(client, ms.console, aggregate_id=created["id"])
    assert [e["type"] for e in events] == ["MailAccount.Created", "MailAccount.VerificationCodeSent",
                                           "MailAccount.VerificationFailed", "MailAccount.Verified"]
    assert all(e["actor"] == ms.school.actor for e in events)
    assert events[0]["data"]["secret_answer_hash"] == "[redacted]"
    assert events[1]["data"]["code_hash"] == "[redacted]"
    queued = history(client, ms.console, type="MailMessage.Queued")[0]
    assert queued["data"]["sealed_message"] == "[redacted]" and queued["data"]["to"] == SCHOOL_ADDRESS
    assert_nowhere(ms, [code, ANSWER, ANSWER.casefold()], r, accepted)


def test_five_wrong_codes_make_the_code_void_and_a_new_one_can_be_asked_for(ms: CampusSchool, smtp_server,  # noqa: ANN001
                                                                          clock: ManualClock):
    account = create_account(ms)
    code = code_in(smtp_server.wait_for(1)[0])
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1):
        assert f"{left} attempt" in assert_problem(verify(ms, account["id"], wrong), 422, code="invalid_code")["detail"]
    last = assert_problem(verify(ms, account["id"], wrong), 422, code="invalid_code")
    assert "no attempt left" in last["detail"] and "void" in last["detail"]
    assert_problem(verify(ms, account["id"], code), 409, code="code_void", detail="resend")
    view = ms.client.get(f"{ACCOUNTS}/{account['id']}", headers=ms.console).json()
    assert view["verified"] is False and view["verification"]["void"] is True
    assert view["verification"]["attempts_left"] == 0

    resend = f"{ACCOUNTS}/{account['id']}/verification/resend"
    too_soon = ms.client.post(resend, headers=ms.console)
    assert_problem(too_soon, 429, code="resend_too_soon", detail="ask again in")
    assert 1 <= int(too_soon.headers["retry-after"]) <= 60
    clock.advance(timedelta(seconds=61))
    r = ms.client.post(resend, headers=ms.console)
    assert r.status_code == 202, r.text
    assert r.json()["verification"]["attempts_left"] == 5 and r.json()["verification"]["void"] is False
    new_code = code_in(smtp_server.wait_for(2)[1])
    if new_code != code:
        assert_problem(verify(ms, account["id"], code), 422, code="invalid_code")  # the old code stopped working
    assert verify(ms, account["id"], new_code).status_code == 200
    assert_problem(ms.client.post(resend, headers=ms.console), 409, code="already_verified")
    types = [e["type"] for e in history(ms.client, ms.console, aggregate_id=account["id"])]
    assert types.count("MailAccount.VerificationFailed") == 5 + (new_code != code)
    assert types.count("MailAccount.VerificationCodeSent") == 2 and types[-1] == "MailAccount.Verified"
    assert_nowhere(ms, [code, new_code])


def test_an_expired_code_is_refused(ms: CampusSchool, smtp_server, clock: ManualClock):  # noqa: ANN001
    account = create_account(ms)
    code = code_in(smtp_server.wait_for(1)[0])
    expires_at = datetime.fromisoformat(account["verification"]["expires_at"])
    assert expires_at - datetime.fromisoformat(account["verification"]["sent_at"]) == timedelta(minutes=15)
    clock.advance(timedelta(minutes=15, seconds=1))
    assert_problem(verify(ms, account["id"], code), 409, code="code_expired", detail="expired")
    view = ms.client.get(f"{ACCOUNTS}/{account['id']}", headers=ms.console).json()
    assert view["verification"]["expired"] is True and view["verified"] is False
    assert ms.client.post(f"{ACCOUNTS}/{account['id']}/verification/resend", headers=ms.console).status_code == 202
    new_code = code_in(smtp_server.wait_for(2)[1])
    assert verify(ms, account["id"], new_code).json()["verified"] is True


def test_personal_accounts_the_secret_answer_guards_changes_and_deletion_frees_the_address(
        ms: CampusSchool, smtp_server):  # noqa: ANN001
    client, h = ms.client, ms.console
    assert client.patch("/v1/console/users/direction", headers=h, json={"email": "a.durand@lycee-moulin.example"}
                        ).status_code == 200
    r = client.post(ACCOUNTS, headers=h, json={"kind": "personal", "login": "direction",
                                               "secret_question": "Ville de naissance", "secret_answer": ANSWER})
    assert r.status_code == 201, r.text
    personal = r.json()
    assert personal["address"] == "a.durand@lycee-moulin.example" and personal["name"] == "Anne Durand"
    assert personal["owner_login"] == "direction" and personal["kind"] == "personal"
    assert smtp_server.wait_for(1)[0]["To"].addresses[0].addr_spec == "a.durand@lycee-moulin.example"

    assert_problem(client.post(ACCOUNTS, headers=h, json={
        "kind": "establishment", "address": "A.Durand@lycee-moulin.example", "secret_question": "Q",
        "secret_answer": "R"}), 409, code="mail_account_exists")
    url = f"{ACCOUNTS}/{personal['id']}"
    assert_problem(client.patch(url, headers=h, json={"secret_answer": "Lyon", "name": "Direction"}), 403,
                   code="wrong_secret_answer")
    assert_problem(client.patch(url, headers=h, json={"name": "Direction"}), 422, fields={"secret_answer"})
    assert_problem(client.patch(url, headers=h, json={"secret_answer": ANSWER, "secret_question": "Premier animal"}),
                   422, fields={"new_secret_answer"})
    r = client.patch(url, headers=h, json={"secret_answer": "  marseille ", "name": "Direction",
                                           "secret_question": "Premier animal", "new_secret_answer": "Medor Le Chien"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Direction" and r.json()["secret_question"] == "Premier animal"
    assert_problem(client.patch(url, headers=h, json={"secret_answer": ANSWER, "name": "X"}), 403,
                   code="wrong_secret_answer")
    assert client.patch(url, headers=h, json={"secret_answer": "medor  le chien", "name": "Direction 2"}).status_code == 200
    changed = history(client, h, type="MailAccount.Changed")
    assert len(changed) == 2 and changed[0]["data"]["secret_answer_hash"] == "[redacted]"
    # Wrong answers count as failed authentications of the address, like wrong passwords: with the two
    # above, seven more are refused and the tenth suspends the address (counted, not recorded one by one).
    for _ in range(7):
        assert_problem(client.patch(url, headers=h, json={"secret_answer": "Lyon", "name": "X"}), 403,
                       code="wrong_secret_answer")
    assert_problem(client.patch(url, headers=h, json={"secret_answer": "Lyon", "name": "X"}), 429,
                   code="address_suspended")
    assert history(client, h, type="ClientAddress.AuthenticationFailed") == []
    assert len(history(client, h, type="ClientAddress.Suspended")) == 1

    assert client.delete(url, headers=h).status_code == 204
    assert_problem(client.get(url, headers=h), 404)
    assert client.get(ACCOUNTS, headers=h).json()["mail_accounts"] == []
    again = client.post(ACCOUNTS, headers=h, json={"kind": "personal", "login": "direction",
                                                   "secret_question": "Ville", "secret_answer": "Nice-Cote-Azur"})
    assert again.status_code == 201 and again.json()["id"] == personal["id"]
    assert again.json()["verified"] is False and again.json()["name"] == "Anne Durand"
    assert "MailAccount.Reopened" in [e["type"] for e in history(client, h, aggregate_id=personal["id"])]
    assert_nowhere(ms, ["Medor Le Chien", "medor le chien", "Nice-Cote-Azur", "nice-cote-azur", ANSWER], r, again, known="a.durand@lycee-moulin.example")


def test_mail_account_refusals(ms: CampusSchool):
    client, h = ms.client, ms.console
    base = {"kind": "establishment", "address": SCHOOL_ADDRESS, "secret_question": "Q", "secret_answer": "R"}
    for changes, fields in [
        ({"kind": "school"}, {"kind"}),
        ({"address": "not-an-address"}, {"address"}),
        ({"address": None}, {"address"}),
        ({"secret_answer": ""}, {"secret_answer"}),
        ({"secret_question": "   "}, {"secret_question"}),
        ({"login": "direction"}, {"login"}),  # an establishment account belongs to nobody
        ({"kind": "personal", "address": None, "login": "nobody"}, {"login"}),
        ({"colour": "blue"}, {"colour"}),
    ]:
        body = {**base, **changes}
        body = {k: v for k, v in body.items() if v is not None}
        assert_problem(client.post(ACCOUNTS, headers=h, json=body), 422, fields=fields)
    # a personal account for a user without an e-mail needs an address
    assert_problem(client.post(ACCOUNTS, headers=h, json={**{k: v for k, v in base.items() if k != "address"},
                                                          "kind": "personal", "login": "noprof"}),
                   422, fields={"address"})
    assert_problem(client.get(f"{ACCOUNTS}/not-a-uuid", headers=h), 404)
    assert_problem(client.get(f"{ACCOUNTS}/00000000-0000-0000-0000-000000000000", headers=h), 404)
    assert_problem(client.post(ACCOUNTS, json=base), 401)


def test_another_school_never_sees_a_mail_account(ms: CampusSchool, smtp_server):  # noqa: ANN001
    account = create_account(ms)
    code = code_in(smtp_server.wait_for(1)[0])
    other = ready_school(ms.client, domain="autreecole", establishment="Collège Voisin")
    url = f"{ACCOUNTS}/{account['id']}"
    assert_problem(ms.client.get(url, headers=other.headers), 404)
    assert_problem(verify(CampusSchool(ms.client, other, "autreecole", "", ""), account["id"], code), 404)
    assert_problem(ms.client.delete(url, headers=other.headers), 404)
    assert ms.client.get(ACCOUNTS, headers=other.headers).json()["mail_accounts"] == []
    assert ms.client.get(OUTBOX, headers=other.headers).json()["messages"] == []
    message_id = account["verification"]["message_id"]
    assert_problem(ms.client.get(f"{OUTBOX}/{message_id}", headers=other.headers), 404)
    assert ms.client.get(f"{OUTBOX}/{message_id}", headers=ms.console).status_code == 200


# -- the letter template (fiche 11) -----------------------------------------------------------------
def test_the_letter_template_is_editable_and_its_placeholders_checked(ms: CampusSchool):
    client, h = ms.client, ms.console
    r = client.get(LETTER, headers=h)
    assert r.status_code == 200, r.text
    default = r.json()
    assert default["title"] == "Connexion des personnels" and default["custom"] is False
    assert "{password}" in default["body"] and "{login}" in default["body"]
    assert set(default["placeholders"]) >= {"first_name", "last_name", "login", "password", "url", "establishment"}
    etag = r.headers["etag"]

    for body, field, words in [
        ({"title": "Connexion", "body": "Bonjour {prenom}, {login} {password}"}, "body", "{prenom}"),
        ({"title": "Connexion", "body": "Identifiant : {login}"}, "body", "{password}"),
        ({"title": "Pour {first_name} : {password}", "body": "{login} {password}"}, "title", "{password}"),
        ({"title": "Connexion", "body": "{login} {password} {first_name"}, "body", "{"),
        ({"title": "Connexion", "body": "{login} {password} {login.upper}"}, "body", "{login.upper}"),
        ({"title": "Connexion", "body": "{login} {password} {first_name!r}"}, "body", "{first_name!r}"),
        ({"title": "  ", "body": "{login} {password}"}, "title", "empty"),
    ]:
        problem = assert_problem(client.put(LETTER, headers=h, json=body), 422, fields={field})
        assert words in problem["detail"], (words, problem["detail"])
    assert_problem(client.put(LETTER, headers=h, json={"title": "T"}), 422, fields={"body"})

    r = client.put(LETTER, headers={**h, "If-Match": etag}, json=MARKED_LETTER)
    assert r.status_code == 200, r.text
    assert r.json()["custom"] is True and r.json()["body"] == MARKED_LETTER["body"]
    assert client.get(LETTER, headers=h).json()["body"] == MARKED_LETTER["body"]
    assert_problem(client.put(LETTER, headers={**h, "If-Match": etag}, json=MARKED_LETTER), 412)
    changed = {**MARKED_LETTER, "body": MARKED_LETTER["body"] + "\n{{Confidentiel}}"}
    assert client.put(LETTER, headers=h, json=changed).status_code == 200
    assert_problem(client.get("/v1/console/letter-templates/autre-modele", headers=h), 404)
    types = [e["type"] for e in history(client, h, type="LetterTemplate.Created,LetterTemplate.Changed")]
    assert types == ["LetterTemplate.Created", "LetterTemplate.Changed"]


# -- connection details (fiche 11) ------------------------------------------------------------------
def test_connection_details_reset_the_passwords_and_mail_them_in_a_pdf_letter(ms: CampusSchool, smtp_server):  # noqa: ANN001
    client, h = ms.client, ms.console
    account = verified_account(ms, smtp_server)
    assert client.put(LETTER, headers=h, json=MARKED_LETTER).status_code == 200
    old = {login: ms.passwords[login] for login in ("modif", "consult", "noprof")}

    r = client.post(SEND, headers=h, json={"logins": ["modif", "consult", "noprof", "modif"],
                                           "mail_account_id": account["id"]})
    assert r.status_code == 202, r.text
    answer = r.json()
    assert [(q["login"], q["to"]) for q in answer["queued"]] == [("modif", EMAILS["modif"]),
                                                                 ("consult", EMAILS["consult"])]
    assert [w["login"] for w in answer["without_email"]] == ["noprof"]
    assert "e-mail" in answer["without_email"][0]["detail"] and answer["waiting_for"] is None

    received = smtp_server.wait_for(3)[1:]
    assert sorted(m["To"].addresses[0].addr_spec for m in received) == sorted(EMAILS.values())
    passwords = {}
    for message in received:
        login = next(k for k, v in EMAILS.items() if v == message["To"].addresses[0].addr_spec)
        assert message["Subject"] == "Connexion des personnels"
        assert message["Reply-To"] == SCHOOL_ADDRESS and MAIL_FROM in message["From"]
        text = pdf_text(message)
        assert f"Identifiant : {login}" in text and "Etablissement : Lycée Jean Moulin" in text
        assert f"Bonjour Jean {login.title()}" in text
        assert "Adresse : https://monecole." in text
        passwords[login] = password_in(text)
        assert passwords[login] not in text_of(message), "the password travels only in the letter"

    for login, password in passwords.items():
        assert password != old[login]
        assert ms.login(login, password=password).status_code == 201, login
        assert_problem(ms.login(login, password=old[login]), 401, code="invalid_credentials")
    # noprof got nothing and keeps the password (accepted: it only lacks a profile on planning01)
    assert_problem(ms.login("noprof"), 403, code="no_profile")

    sent = wait_outbox(ms, lambda msgs: sum(m["state"] == "sent" for m in msgs) == 3)
    for login in passwords:
        row = by_login(sent, login)
        assert row["purpose"] == "connection_details" and row["subject"] == "Connexion des personnels"
        assert row["to"] == EMAILS[login] and row["attempts"] == 1 and row["last_error"] is None
    changes = history(client, h, type="DirectoryUser.PasswordChanged")
    assert len(changes) == 2 and all(c["actor"] == ms.school.actor for c in changes)
    assert_nowhere(ms, list(passwords.values()), r, client.get(OUTBOX, headers=h))
    assert client.app.state.campus.outbox._mail_keys().count() == 0, "every key is shredded once its message is sent"


def test_connection_details_refusals(ms: CampusSchool, smtp_server):  # noqa: ANN001
    client, h = ms.client, ms.console
    unverified = create_account(ms)
    assert_problem(client.post(SEND, headers=h, json={"logins": ["modif"], "mail_account_id": unverified["id"]}),
                   409, code="mail_account_not_verified")
    code = code_in(smtp_server.wait_for(1)[0])
    assert verify(ms, unverified["id"], code).status_code == 200
    assert_problem(client.post(SEND, headers=h, json={"logins": ["modif", "ghost"],
                                                      "mail_account_id": unverified["id"]}),
                   422, fields={"logins[1]"}, detail="ghost")
    assert_problem(client.post(SEND, headers=h, json={"logins": [], "mail_account_id": unverified["id"]}),
                   422, fields={"logins"})
    assert_problem(client.post(SEND, headers=h, json={"logins": ["modif"], "mail_account_id": "nope"}),
                   422, fields={"mail_account_id"})
    assert_problem(client.post(SEND, headers=h, json={"logins": ["modif"],
                                                      "mail_account_id": "00000000-0000-0000-0000-000000000000"}),
                   404)
    assert ms.login("modif").status_code == 201, "nothing was reset by the refused requests"
    assert len(history(client, h, type="DirectoryUser.PasswordChanged")) == 0


def test_smtp_down_the_mail_fails_is_retried_with_backoff_then_sent(ms: CampusSchool, smtp_server,  # noqa: ANN001
                                                                   clock: ManualClock):
    account = verified_account(ms, smtp_server)
    smtp_server.stop()
    r = ms.client.post(SEND, headers=ms.console, json={"logins": ["modif"], "mail_account_id": account["id"]})
    assert r.status_code == 202, r.text
    message_id = r.json()["queued"][0]["message_id"]

    def state_of(messages: list[dict]) -> dict:
        return next(m for m in messages if m["id"] == message_id)

    first = state_of(wait_outbox(ms, lambda msgs: state_of(msgs)["attempts"] == 1))
    assert first["state"] == "failed" and "refused" in first["last_error"].lower()
    delay = datetime.fromisoformat(first["next_attempt_at"]) - datetime.fromisoformat(first["queued_at"])
    assert timedelta(seconds=29) < delay <= timedelta(seconds=31)
    clock.advance(timedelta(seconds=31))
    second = state_of(wait_outbox(ms, lambda msgs: state_of(msgs)["attempts"] == 2))
    assert second["state"] == "failed"
    assert datetime.fromisoformat(second["next_attempt_at"]) - clock.now() > timedelta(seconds=55), "backoff doubles"

    smtp_server.start()
    clock.advance(timedelta(seconds=61))
    sent = state_of(wait_outbox(ms, lambda msgs: state_of(msgs)["state"] == "sent"))
    assert sent["attempts"] == 3 and sent["sent_at"] is not None
    password = password_in(pdf_text(smtp_server.wait_for(2)[1]))
    assert ms.login("modif", password=password).status_code == 201
    types = [e["type"] for e in history(ms.client, ms.console, aggregate_id=message_id)]
    assert types == ["MailMessage.Queued", "MailMessage.Failed", "MailMessage.Failed", "MailMessage.Sent"]
    assert all(e["actor"] == "mailer" for e in history(ms.client, ms.console, aggregate_id=message_id)[1:])
    assert_nowhere(ms, [password])


def test_a_message_that_keeps_failing_is_abandoned_and_can_be_sent_again(ms: CampusSchool, smtp_server,  # noqa: ANN001
                                                                       clock: ManualClock):
    account = verified_account(ms, smtp_server)
    smtp_server.stop()
    r = ms.client.post(SEND, headers=ms.console, json={"logins": ["consult"], "mail_account_id": account["id"]})
    message_id = r.json()["queued"][0]["message_id"]
    for attempts in (1, 2, 3):  # mail_max_attempts = 3
        wait_outbox(ms, lambda msgs, n=attempts: any(m["id"] == message_id and m["attempts"] == n for m in msgs))
        clock.advance(timedelta(minutes=5))
    abandoned = next(m for m in wait_outbox(ms, lambda msgs: msgs[0]["state"] == "abandoned") if m["id"] == message_id)
    assert abandoned["abandoned_reason"] == "3 attempts failed" and abandoned["next_attempt_at"] is None
    assert outbox(ms, state="abandoned")["messages"] == [abandoned]
    assert client_keys(ms) == 0, "an abandoned message's key is shredded too"

    smtp_server.start()
    r = ms.client.post(SEND, headers=ms.console, json={"logins": ["consult"], "mail_account_id": account["id"]})
    assert r.status_code == 202
    password = password_in(pdf_text(smtp_server.wait_for(2)[1]))
    assert ms.login("consult", password=password).status_code == 201


def client_keys(cs: CampusSchool) -> int:
    return cs.client.app.state.campus.outbox._mail_keys().count()  # type: ignore[attr-defined]


def test_without_an_smtp_server_mail_stays_queued_and_is_sent_after_a_restart(settings: Settings,  # noqa: ANN001
                                                                              clock: ManualClock, smtp_server):
    quiet = dataclasses.replace(settings, mail_poll_seconds=0.05)
    with make_client(quiet, clock) as client:
        cs = campus_school(client, base=False, users=False)
        account = create_account(cs)
        box = outbox(cs)
        assert box["smtp_configured"] is False and "CAMPUS_SMTP_HOST" in box["waiting_for"]
        [message] = box["messages"]
        assert message["state"] == "queued" and message["attempts"] == 0
        assert "CAMPUS_SMTP_HOST" in message["waiting_for"]
    assert smtp_server.messages() == []

    with make_client(mail_settings(settings, smtp_server), clock) as client:
        cs.client = client
        code = code_in(smtp_server.wait_for(1)[0])
        assert verify(cs, account["id"], code).json()["verified"] is True
        sent = wait_outbox(cs, lambda msgs: msgs[0]["state"] == "sent")[0]
        assert sent["attempts"] == 1 and sent["waiting_for"] is None
        assert_nowhere(cs, [code])
