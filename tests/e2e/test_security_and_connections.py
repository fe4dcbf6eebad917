"""Hosting guide fiche 11 against a real ``campus serve``: failed authentications and suspended
addresses ("Sécurité"), live connections and licence seats ("Suivi des connexions").

The server trusts 127.0.0.1 as a reverse proxy (``CAMPUS_TRUSTED_PROXIES``), so the
test speaks from several client addresses with ``X-Forwarded-For``; restarted without
that setting, the header is ignored and every request is 127.0.0.1 again.

Once on SQLite and once on PostgreSQL (own schema), like the walkthrough.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e

GRID = {"name": "Année 2026-2027", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
        "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 8, "sequence_minutes": 60,
        "split": 2}
TEACHERS = ["prof1", "prof2", "prof3", "prof4", "prof5"]
ATTACKER, NEIGHBOUR = "203.0.113.66", "203.0.113.99"
WRONG = "Not-the-password-42!"
SUSPENDED = "/v1/console/security/suspended-addresses"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_suspension_unblocking_connections_and_seats(make_server, guide_for, store: str) -> None:
    server = make_server(store, extra_env={"CAMPUS_TRUSTED_PROXIES": "127.0.0.1"})
    guide = guide_for(server).walk()
    http, expect, console = guide.http, guide.expect, guide.console()
    p1 = guide.planning(1)
    expect(http.post(f"/v1/console/plannings/{p1['id']}/bases", headers=console, json=GRID), 201)
    passwords = {"pmartin": guide.COMPLIANT_PASSWORD, "afilaire": guide.generated_passwords[0]}
    for login in TEACHERS:
        passwords[login] = guide.create_user(login, login.upper(), "Prof")["password"]
    guide.assign(p1["id"], "modification", ["afilaire", *TEACHERS])

    def log_in(login: str, address: str = NEIGHBOUR, password: str | None = None, **extra: str) -> httpx.Response:
        body = {"domain": "monecole", "login": login, "password": password or passwords[login],
                "planning": p1["id"], "mode": "administrative", **extra}
        return http.post("/v1/sessions", json=body, headers={"X-Forwarded-For": address})

    # ---- Someone hammers prof1's password from one address ----------------------------------------------------
    for _ in range(9):
        r = log_in("prof1", ATTACKER, WRONG)
        assert r.status_code == 401 and r.json()["code"] == "invalid_credentials", r.text
    unknown = log_in("nobody", NEIGHBOUR, WRONG)
    assert unknown.status_code == 401 and unknown.json() == log_in("prof1", NEIGHBOUR, WRONG).json()
    tenth = log_in("prof1", ATTACKER, WRONG)
    assert tenth.status_code == 429, tenth.text
    assert tenth.json()["code"] == "address_suspended" and int(tenth.headers["Retry-After"]) == 900
    # Then even the right password is refused from there, while another address is served
    right = log_in("prof1", ATTACKER)
    assert right.status_code == 429 and 0 < int(right.headers["Retry-After"]) <= 900
    served = expect(log_in("prof1", NEIGHBOUR), 201)
    listed = expect(http.get(SUSPENDED, headers=console), 200)["suspended_addresses"]
    assert [(s["address"], s["failures"]) for s in listed] == [(ATTACKER, 10)]
    # ---- The manager unblocks it: prof1 logs in from there ----------------------------------------------------
    assert http.delete(f"{SUSPENDED}/{ATTACKER}", headers=console).status_code == 204
    assert http.delete(f"{SUSPENDED}/{ATTACKER}", headers=console).status_code == 404
    assert http.delete(f"{SUSPENDED}/not-an-ip", headers=console).status_code == 422
    unblocked = expect(log_in("prof1", ATTACKER), 201)
    assert expect(http.get(SUSPENDED, headers=console), 200)["suspended_addresses"] == []
    assert WRONG not in server.logs()
    for session in (served, unblocked):  # prof1 logs out of both stations
        assert http.delete("/v1/sessions/current", headers=bearer(session["token"])).status_code == 204

    # ---- Six seats in modification: the seventh modifying login is refused, consultation works ------------------
    tokens = {}
    for login in ("pmartin", "afilaire", "prof1", "prof2", "prof3", "prof4"):
        tokens[login] = expect(log_in(login, station=f"Poste {login}"), 201)
    listing = expect(http.get(f"/v1/console/plannings/{p1['id']}/connections", headers=console), 200)
    assert listing["seats"]["total"] == 6 and listing["seats"]["used"] == 6 and listing["seats"]["free"] == 0
    refused = log_in("prof5")
    assert refused.status_code == 409 and "all 6 modification seats" in refused.json()["detail"], refused.text
    reader = expect(log_in("prof5", access="consultation"), 201)
    assert reader["access"] == "consultation"
    listing = expect(http.get(f"/v1/console/plannings/{p1['id']}/connections", headers=console), 200)
    assert listing["counts"]["access"] == {"modification": 6, "consultation": 1}
    row = next(c for c in listing["connections"] if c["user"]["login"] == "prof2")
    assert (row["station"], row["application"], row["state"], row["access"], row["mode"]) == (
        "Poste prof2", "client", "connected", "modification", "administrative")
    assert row["base"]["name"] == GRID["name"] and row["client_address"] == NEIGHBOUR

    # ---- Disconnecting one frees a seat; its token gets 401 ---------------------------------------------------
    victim = tokens["prof2"]
    assert http.delete(f"/v1/console/plannings/{p1['id']}/connections/{victim['connection_id']}",
                       headers=console).status_code == 204
    assert http.get("/v1/me", headers=bearer(victim["token"])).status_code == 401
    assert log_in("prof5").status_code == 201
    assert log_in("prof2").status_code == 409

    # ---- Restarted without a trusted proxy, X-Forwarded-For is ignored -------------------------------------------
    server.env.pop("CAMPUS_TRUSTED_PROXIES")
    server.restart()
    assert expect(http.get(f"/v1/console/plannings/{p1['id']}/connections", headers=console), 200)[
        "seats"]["used"] == 6
    for i in range(10):
        log_in("prof3", f"192.0.2.{i}", WRONG)
    listed = expect(http.get(SUSPENDED, headers=console), 200)["suspended_addresses"]
    assert [s["address"] for s in listed] == ["127.0.0.1"]
    assert log_in("prof3", NEIGHBOUR).status_code == 429
    assert http.delete(f"{SUSPENDED}/127.0.0.1", headers=console).status_code == 204
    assert log_in("prof3", NEIGHBOUR, access="consultation").status_code == 201

    history = guide.history(type="ClientAddress.Suspended,ClientAddress.Unblocked,UserSession.Disconnected")
    assert [e["type"] for e in history] == ["ClientAddress.Suspended", "ClientAddress.Unblocked",
                                            "UserSession.Disconnected", "ClientAddress.Suspended",
                                            "ClientAddress.Unblocked"]
    assert WRONG not in server.logs()
