"""The Campus quick-start guide, fiches 1-8, over HTTP against a real ``campus serve``.

Once on SQLite and once on PostgreSQL (own schema; skips without a server unless
CAMPUS_REQUIRE_POSTGRES=1). After fiche 8 the server is restarted and everything
must be as it was left: state, history, certificate and open sessions.
"""

from __future__ import annotations

import json
import re
import stat
from collections import Counter

import pytest

pytestmark = pytest.mark.e2e

OPERATOR = "operator"


def test_campus_guide_fiches_1_to_8_then_restart(make_server, guide_for, store: str) -> None:
    # Given a freshly started campus server (SQLite, then PostgreSQL), CAMPUS_OPERATOR_TOKEN not set
    server = make_server(store)
    guide = guide_for(server)
    http = guide.http
    expect = guide.expect

    # ---- Fiche 1: the operator opens the hosting account ------------------------------------------------------
    # Given the operator token the server generated into its data dir at first start
    token_file = server.data_dir / "operator-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    operator_token = guide.read_operator_token()
    assert len(operator_token) >= 32
    # ... printed exactly once, on stderr, outside the JSON log lines
    first_stderr = server.stderr(run=0)
    assert first_stderr.count(operator_token) == 1
    assert operator_token not in server.stdout(run=0)
    assert not [line for line in server.json_lines(run=0) if operator_token in json.dumps(line)]

    # When an unauthenticated or wrong-token caller tries to open an account, then 401
    opening = {"establishment": "École Martin", "manager": {"name": "Claire Dupont", "email": "claire@ecole.fr"}}
    assert http.post("/v1/operator/accounts", json=opening).status_code == 401
    assert http.post("/v1/operator/accounts", json=opening,
                     headers={"Authorization": "Bearer not-the-token"}).status_code == 401

    # When the operator opens the account
    account = guide.open_account()
    # Then the manager receives a 12-digit hosting number, a 14-character console password, a 10-digit invoice number
    assert re.fullmatch(r"\d{12}", account["hosting_number"])
    assert len(account["console_password"]) == 14
    assert re.fullmatch(r"\d{10}", account["invoice_number"])

    # ---- Fiche 2: the hosting manager logs in and accepts the licence -----------------------------------------
    # When the manager logs in from a new machine without the invoice number, then a certificate is required
    no_cert = http.post("/v1/console/sessions", json={"hosting_number": guide.hosting_number,
                                                        "password": account["console_password"]})
    assert no_cert.status_code == 401
    assert no_cert.headers["content-type"] == "application/problem+json"
    assert no_cert.json()["code"] == "certificate_required"
    # When the console password is wrong, then 401 (no hint which part was wrong)
    wrong = http.post("/v1/console/sessions", json={"hosting_number": guide.hosting_number,
                                                      "password": "Wrong-password!1", "invoice_number": "0" * 10})
    assert wrong.status_code == 401

    # When the manager logs in with the invoice number (first login)
    first_login = guide.login(invoice=True)
    # Then a session token and a certificate are returned
    assert first_login["token"] and first_login["certificate"]
    # And nothing of the console works before the licence agreement is accepted
    blocked = http.get("/v1/console/controller", headers=guide.console())
    assert blocked.status_code == 403
    assert blocked.json()["code"] == "licence_not_accepted"

    # When the manager accepts the licence agreement
    accepted = guide.accept_licence()
    assert accepted["accepted"] is True

    # When the manager logs in again, presenting the certificate instead of the invoice number
    later_login = guide.login(certificate=guide.certificate)
    # Then a new session is opened and no new certificate installed
    assert later_login["token"] != first_login["token"]
    assert later_login["certificate"] is None
    assert expect(http.get("/v1/console/account", headers=guide.console()), 200)["certificates"] == 1

    # ---- Fiche 3: controller and plannings ------------------------------------------------------------------------
    # Given the controller, stopped and without a domain
    controller = expect(http.get("/v1/console/controller", headers=guide.console()), 200)
    assert controller["state"] == "stopped" and controller["domain"] is None
    # When the manager binds the domain `monecole` (with a request id of their own)
    bound = expect(http.put("/v1/console/controller/domain", headers={**guide.console(), "X-Request-ID": "fiche-3-bind"},
                            json={"name": "monecole"}), 200)
    # Then it answers monecole.pronote-campus.net on port 21200, still stopped
    assert bound["domain"] == "monecole.pronote-campus.net"
    assert bound["port"] == 21200
    assert bound["state"] == "stopped"

    # Given the two default plannings, .net licence on
    plannings = guide.list_plannings()
    assert [(p["number"], p["name"], p["net_licence"]) for p in plannings] == [
        (1, "planning01", True), (2, "planning02", True)]
    p1, p2 = plannings
    # When the manager renames planning01, keeps the .net licence on, binds `ecole-annee-en-cours` in Europe/Paris
    p1 = guide.update_planning(p1["id"], name=guide.PLANNING_NAMES[1], net_licence=True, domain="ecole-annee-en-cours",
                               time_zone="Europe/Paris")
    # Then the planning answers that domain on port 21201
    assert p1["name"] == guide.PLANNING_NAMES[1]
    assert p1["publication_name"] == guide.PLANNING_NAMES[1]  # C6: by default the planning's name
    assert p1["net_licence"] is True
    assert p1["domain"] == "ecole-annee-en-cours.pronote-campus.net"
    assert p1["port"] == 21201
    assert p1["time_zone"] == "Europe/Paris"
    # When the manager does the same for planning02
    p2 = guide.update_planning(p2["id"], name=guide.PLANNING_NAMES[2], net_licence=True, domain="ecole-annee-suivante",
                               time_zone="Europe/Paris")
    # Then planning02 gets port 21202
    assert (p2["domain"], p2["port"], p2["time_zone"], p2["net_licence"]) == (
        "ecole-annee-suivante.pronote-campus.net", 21202, "Europe/Paris", True)

    # Given no superadministrator yet, when the manager activates the controller, then 409 (fiche 5 needs one)
    too_early = http.post("/v1/console/controller/activation", headers=guide.console())
    assert too_early.status_code == 409
    assert too_early.json()["code"] == "superadministrator_required"

    # ---- Fiche 4: the first superadministrator -----------------------------------------------------------------
    # When the manager proposes a password that breaks the rules, then the refusal names every failed rule
    refusal = guide.create_superadministrator(password=guide.REFUSED_PASSWORD, status=422)
    messages = " | ".join(e["message"] for e in refusal["errors"] if e["field"] == "password")
    for rule in ("12 characters", "digit", "special character", "lower-case and upper-case"):
        assert rule in messages, (rule, refusal)
    assert "at least one letter" not in messages  # "martin" has letters: that rule passed
    assert guide.REFUSED_PASSWORD not in json.dumps(refusal)

    # When the manager creates pmartin (MARTIN Pierre) with a compliant password
    pmartin = guide.create_superadministrator()
    # Then he is a superadministrator, without console access yet, and no password is answered
    assert (pmartin["login"], pmartin["last_name"], pmartin["first_name"], pmartin["status"]) == (
        "pmartin", "MARTIN", "Pierre", "superadministrator")
    assert pmartin["console_access"] is False
    assert "password" not in pmartin and guide.COMPLIANT_PASSWORD not in json.dumps(pmartin)
    # And console access is refused until he has an e-mail
    no_email = http.patch("/v1/console/users/pmartin", headers=guide.console(), json={"console_access": True})
    assert no_email.status_code == 422
    # When the manager gives him an e-mail, then console access
    guide.update_user("pmartin", email="pmartin@ecole.fr")
    pmartin = guide.update_user("pmartin", console_access=True)
    assert (pmartin["email"], pmartin["console_access"]) == ("pmartin@ecole.fr", True)
    # When the manager assigns him to Administration on both plannings
    p1 = guide.assign(p1["id"], "administration", ["pmartin"])
    p2 = guide.assign(p2["id"], "administration", ["pmartin"])
    assert p1["profiles"]["administration"] == ["pmartin"]
    assert p2["profiles"]["administration"] == ["pmartin"]

    # ---- Fiche 5: activation of the controller ---------------------------------------------------------------
    # When the manager activates the controller, then it is active
    activated = guide.activate_controller()
    assert activated["state"] == "active"
    assert (activated["domain"], activated["port"]) == ("monecole.pronote-campus.net", 21200)

    # ---- Fiche 6: creating a base — not in this issue (bases come later) ----------------------------------------
    # ---- Fiche 7: the Client login (PIN, recognised devices) — a later issue -----------------------------------

    # ---- Fiche 8: the other users ------------------------------------------------------------------------------
    # When the manager creates afilaire (FILAIRE Alain)
    afilaire = guide.create_user("afilaire", "FILAIRE", "Alain")
    # Then a password is generated (shown only here) and the status is "user"
    assert afilaire["status"] == "user"
    assert len(afilaire["password"]) >= 12
    assert "password" not in guide.get_user("afilaire")
    # And a user cannot hold the Administration profile
    refused = http.put(f"/v1/console/plannings/{p1['id']}/profiles/administration", headers=guide.console(),
                       json={"logins": ["pmartin", "afilaire"]})
    assert refused.status_code == 422
    # When the manager makes him base administrator and gives him an e-mail
    afilaire = guide.update_user("afilaire", status="base_administrator", email="afilaire@ecole.fr")
    assert (afilaire["status"], afilaire["email"]) == ("base_administrator", "afilaire@ecole.fr")
    # When the manager assigns him Modification on planning01 and Consultation on planning02
    p1 = guide.assign(p1["id"], "modification", ["afilaire"])
    p2 = guide.assign(p2["id"], "consultation", ["afilaire"])
    assert p1["profiles"] == {"administration": ["pmartin"], "modification": ["afilaire"], "consultation": []}
    assert p2["profiles"] == {"administration": ["pmartin"], "modification": [], "consultation": ["afilaire"]}
    # When the manager saves planning01's assignment as a template and applies it to planning02
    template = guide.save_template("Année en cours", p1["id"])
    assert template["assignments"] == p1["profiles"]
    p2 = guide.apply_template(p2["id"], "Année en cours")
    # Then planning02 has the same assignment as planning01
    assert p2["profiles"] == p1["profiles"]

    # ---- The history: every action once, with its actor ---------------------------------------------------------
    history = guide.history()
    manager = guide.manager_actor
    expected = [
        # fiche 1
        ("HostingAccount.Opened", OPERATOR), ("Controller.Created", OPERATOR),
        ("Planning.Created", OPERATOR), ("Planning.Created", OPERATOR),
        # fiche 2: the wrong console password is counted for this client address (issue 5, fiche 11) —
        # a counter, not an event (issue 9) — then the first login installs the certificate, licence,
        # second login
        ("HostingAccount.CertificateInstalled", manager), ("ConsoleSession.Opened", manager),
        ("HostingAccount.LicenceAgreementAccepted", manager),
        ("ConsoleSession.Opened", manager),
        # fiche 3 (the time zone was already Europe/Paris and the .net licence already on: no event)
        ("Controller.DomainBound", manager), ("DomainName.Claimed", manager),
        ("Planning.Renamed", manager), ("Planning.DomainBound", manager), ("DomainName.Claimed", manager),
        ("Planning.Renamed", manager), ("Planning.DomainBound", manager), ("DomainName.Claimed", manager),
        # fiche 4 (the refused password left no event)
        ("DirectoryUser.Created", manager), ("HostingAccount.FirstSuperadministratorCreated", manager),
        ("DirectoryUser.EmailChanged", manager),
        ("DirectoryUser.ConsoleAccessChanged", manager),
        ("Planning.ProfilesAssigned", manager), ("Planning.ProfilesAssigned", manager),
        # fiche 5
        ("Controller.Activated", manager),
        # fiche 8
        ("DirectoryUser.Created", manager),
        ("DirectoryUser.StatusChanged", manager), ("DirectoryUser.EmailChanged", manager),
        ("Planning.ProfilesAssigned", manager), ("Planning.ProfilesAssigned", manager),
        ("HostingAccount.AssignmentTemplateSaved", manager),
        ("Planning.ProfilesAssigned", manager),
    ]
    assert [(e["type"], e["actor"]) for e in history] == expected
    positions = [e["position"] for e in history]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    timestamps = [e["timestamp"] for e in history]
    assert timestamps == sorted(timestamps)
    # each aggregate's versions follow one another, from 1
    versions: dict[str, list[int]] = {}
    for e in history:
        versions.setdefault(e["aggregate_id"], []).append(e["version"])
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values()), versions
    # events name the right aggregates
    by_aggregate = Counter((e["aggregate_id"], e["type"]) for e in history)
    assert by_aggregate[(p1["id"], "Planning.ProfilesAssigned")] == 2
    assert by_aggregate[(p2["id"], "Planning.ProfilesAssigned")] == 3
    assert all(e["client_address"] == "127.0.0.1" and e["request_id"] for e in history)
    assert [e["request_id"] for e in history if e["type"] == "Controller.DomainBound"] == ["fiche-3-bind"]
    # and the history never holds a secret, not even hashed
    history_text = json.dumps(history)
    for what, secret in guide.secrets().items():
        assert secret not in history_text, what
    assert "argon2" not in history_text

    # ---- Restart: everything as left ---------------------------------------------------------------------------
    before = guide.snapshot()
    old_token = guide.token
    # When the server is stopped (SIGTERM) and started again on the same data dir / schema
    server.restart()
    assert server.returncodes[0] in (0, -15)
    # Then the operator token is not printed again
    assert operator_token not in server.stderr(run=1)
    assert "generated the operator token" not in server.stderr(run=1)
    # And the old session token still works (sessions are events too)
    after = guide.snapshot()
    # And the controller, plannings, users, templates and the history are exactly as left
    assert after == before
    assert after["controller"]["state"] == "active"
    assert [u["login"] for u in after["users"]["users"]] == ["afilaire", "pmartin"]
    assert after["templates"]["templates"][0]["name"] == "Année en cours"
    assert old_token == guide.token
    # And the operator token kept in the data dir is still the operator's
    assert expect(http.get(f"/v1/operator/accounts/{guide.hosting_number}", headers=guide.operator()), 200)[
        "establishment"] == "École Martin"
    # And the certificate is still accepted for a new login
    relogin = guide.login(certificate=guide.certificate)
    assert relogin["certificate"] is None
    assert expect(http.get("/v1/console/controller", headers={"Authorization": f"Bearer {old_token}"}), 200)[
        "state"] == "active"
    # And the only new event is that login, appended after the old positions
    history_after = guide.history()
    assert history_after[: len(history)] == history
    assert [(e["type"], e["actor"]) for e in history_after[len(history):]] == [("ConsoleSession.Opened", manager)]
    assert history_after[-1]["position"] > history[-1]["position"]
