"""Hosting guide fiches 8 and 9 over HTTP against a real ``campus serve``: publishing the
spaces, stopping to change settings, delegating authentication to the ENT by CAS, every
refusal on the way, and everything as left after a restart.

Once on SQLite and once on PostgreSQL (own schema), like the walkthrough.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

PASSWORD = "Direction-Hugo-2026!"
DOMAIN = "https://rne0750001a.pronote-campus.net/pronote/"
GRID = {"name": "Base année 2026-2027", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
        "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 8, "sequence_minutes": 60,
        "split": 2}


def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        f" (wanted {status}): {response.text}")
    return response.json() if response.content else None


def refused(response: httpx.Response, status: int, code: str | None = None) -> dict:
    body = expect(response, status)
    assert response.headers["content-type"] == "application/problem+json"
    if code:
        assert body["code"] == code, body
    return body


def test_hosting_guide_fiches_8_and_9(make_server, store: str) -> None:
    server = make_server(store)
    http = server.client
    operator = {"Authorization": f"Bearer {(server.data_dir / 'operator-token').read_text().strip()}"}

    # ---- Given a hosted school: account, console session, licence, superadministrator, planning domain, a base
    account = expect(http.post("/v1/operator/accounts", headers=operator, json={
        "establishment": "Lycée Victor Hugo", "manager": {"name": "Samia B.", "email": "samia@ac-paris.fr"},
        "edition": "hosted"}), 201)
    session = expect(http.post("/v1/console/sessions", json={
        "hosting_number": account["hosting_number"], "password": account["console_password"],
        "invoice_number": account["invoice_number"]}), 201)
    console = {"Authorization": f"Bearer {session['token']}"}
    manager = f"manager:{account['hosting_number']}"
    expect(http.post("/v1/console/licence-agreement", headers=console), 200)
    expect(http.post("/v1/console/superadministrator", headers=console, json={
        "first_name": "Anne", "last_name": "Durand", "login": "direction", "password": PASSWORD,
        "password_confirmation": PASSWORD}), 201)
    planning = expect(http.get("/v1/console/plannings", headers=console), 200)["plannings"][0]
    pid = planning["id"]
    expect(http.patch(f"/v1/console/plannings/{pid}", headers=console, json={"domain": "rne0750001a"}), 200)
    expect(http.post(f"/v1/console/plannings/{pid}/bases", headers=console, json=GRID), 201)
    url = f"/v1/console/plannings/{pid}/publication"

    def publication() -> dict:
        return expect(http.get(url, headers=console), 200)

    def space(view: dict, key: str) -> dict:
        return next(s for s in view["spaces"] if s["space"] == key)

    # The hosted edition's base waits, stopped; so does the publication, with the addresses of fiche 8.
    view = publication()
    assert (view["state"], view["server_state"], view["online"]) == ("stopped", "stopped", False)
    assert [(s["space"], s["desktop_url"], s["mobile_url"]) for s in view["spaces"][:4]] == [
        ("common", DOMAIN, DOMAIN + "mobile.html"),
        ("establishment", DOMAIN + "etablissement.html", None),
        ("direction", DOMAIN + "direction.html", DOMAIN + "mobile.direction.html"),
        ("teachers", DOMAIN + "professeur.html", DOMAIN + "mobile.professeur.html")]
    refused(http.put(url, headers=console, json={"state": "published"}), 409, "server_not_in_service")

    # ---- Fiche 8: putting the base in service publishes the spaces ("La publication des Espaces est automatique")
    expect(http.put(f"/v1/console/plannings/{pid}/server", headers=console, json={"state": "in_service"}), 200)
    view = publication()
    assert (view["state"], view["online"]) == ("published", True)
    assert [s["space"] for s in view["spaces"] if s["online"]] == [
        "common", "direction", "teachers", "school_life", "parents", "companions", "students", "company", "academy"]

    # ---- Fiche 9, steps 1-3: while published, nothing of the settings or delegations may change
    cas = {"name": "Mon ENT", "protocol": "cas", "authentication_url": "https://cas.monent.fr/cas/login",
           "validation_url": "https://cas.monent.fr/cas/serviceValidate"}
    detail = refused(http.patch(f"{url}/settings", headers=console, json={"spaces": {"registration": True}}), 409,
                     "publication_published")["detail"]
    assert "stop the publication first" in detail
    refused(http.post(f"{url}/delegations", headers=console, json=cas), 409, "publication_published")
    refused(http.put(f"{url}/space-delegations", headers=console, json={"spaces": {}}), 409, "publication_published")
    # ... step 2: "Arrêter la publication"
    view = expect(http.put(url, headers=console, json={"state": "stopped"}), 200)
    assert view["state"] == "stopped" and view["settings_editable"] is True

    # ---- Fiche 8 settings: the switches, the common page's header
    view = expect(http.patch(f"{url}/settings", headers=console, json={
        "spaces": {"registration": True, "academy": False},
        "common_page": {"title": "Lycée Victor Hugo", "text_color": "#464646", "font_size": 26,
                        "background_color": "#FFFFFF", "height": {"mode": "fixed", "value": 50},
                        "logo": "establishment"}}), 200)
    assert space(view, "registration")["publish"] and not space(view, "academy")["publish"]
    assert view["common_page"]["height"] == {"mode": "fixed", "value": 50, "unit": "px"}
    bad = refused(http.patch(f"{url}/settings", headers=console, json={
        "common_page": {"text_color": "#46464", "height": {"mode": "variable", "value": 80}}}), 422)
    assert {e["field"] for e in bad["errors"]} == {"common_page.text_color", "common_page.height.value"}

    # ---- Fiche 9, steps 4-6: a CAS delegation; each URL is checked, every refusal names its field and rule
    for field, value, rules in [
        ("server_url", "http://cas.monent.fr/cas", {"https_only"}),
        ("server_url", "https://admin:s3cret-word@cas.monent.fr/cas", {"no_credentials"}),
        ("server_url", "https://2130706433/cas", {"host_name", "public_host"}),
        ("server_url", "https://[::ffff:10.0.0.1]/cas", {"host_name", "public_host"}),
        ("server_url", "https://cas.localhost/cas", {"public_host"}),
        ("server_url", "https://169.254.169.254/latest/meta-data", {"host_name", "public_host"}),
        ("validation_url", "https://metadata.google.internal/cas", {"public_host"}),
    ]:
        body = {"name": "Mon ENT", "protocol": "cas", field: value}
        if field == "validation_url":
            body["authentication_url"] = "https://cas.monent.fr/cas/login"
        problem = refused(http.post(f"{url}/delegations", headers=console, json=body), 422, "url_refused")
        assert {e["field"] for e in problem["errors"]} == {field}, problem
        assert {e["rule"] for e in problem["errors"]} == rules, problem
    both = refused(http.post(f"{url}/delegations", headers=console, json={**cas, "server_url": "https://cas.fr/"}),
                   422)
    assert {e["field"] for e in both["errors"]} == {"server_url"}
    # "Les adresses d'authentification et de validation sont différentes"
    added = expect(http.post(f"{url}/delegations", headers=console, json=cas), 201)["delegation"]
    assert (added["active"], added["ent_service_url"]) == (False, DOMAIN + "**")
    refused(http.post(f"{url}/delegations", headers=console, json=cas), 409, "delegation_name_taken")
    # ---- Step 7: activate it. Step 8: tick the spaces in the table
    fiche_9_table = {k: {"delegation_id": added["id"]} for k in ("teachers", "parents", "companions", "students")}
    refused(http.put(f"{url}/space-delegations", headers=console, json={"spaces": fiche_9_table}), 409,
            "delegation_inactive")
    expect(http.patch(f"{url}/delegations/{added['id']}", headers=console, json={"active": True}), 200)
    view = expect(http.put(f"{url}/space-delegations", headers=console, json={"spaces": fiche_9_table}), 200)
    assert [s["space"] for s in view["spaces"] if s["delegation_id"] == added["id"]] == [
        "teachers", "parents", "companions", "students"]
    # "Autoriser l'authentification directe": kept, with the address to give users
    assert space(view, "teachers")["allow_direct"] is True
    assert space(view, "teachers")["direct_url"] == DOMAIN + "professeur.html?login=true"

    # ---- Publish again ("Publier la base")
    view = expect(http.put(url, headers=console, json={"state": "published"}), 200)
    assert view["online"] and space(view, "registration")["online"] and not space(view, "academy")["online"]
    # A settings change while published: 409; stop, change, publish.
    refused(http.patch(f"{url}/settings", headers=console, json={"spaces": {"academy": True}}), 409,
            "publication_published")
    refused(http.patch(f"{url}/delegations/{added['id']}", headers=console, json={"active": False}), 409,
            "publication_published")
    expect(http.put(url, headers=console, json={"state": "stopped"}), 200)
    expect(http.patch(f"{url}/settings", headers=console, json={"spaces": {"academy": True}}), 200)
    refused(http.delete(f"{url}/delegations/{added['id']}", headers=console), 409, "delegation_in_use")
    view = expect(http.put(url, headers=console, json={"state": "published"}), 200)
    assert space(view, "academy")["online"]

    # ---- The .net licence switched off forbids publishing
    expect(http.put(url, headers=console, json={"state": "stopped"}), 200)
    expect(http.patch(f"/v1/console/plannings/{pid}", headers=console, json={"net_licence": False}), 200)
    licence = refused(http.put(url, headers=console, json={"state": "published"}), 409, "net_licence_off")
    assert ".net licence" in licence["detail"]
    expect(http.patch(f"/v1/console/plannings/{pid}", headers=console, json={"net_licence": True}), 200)
    final = expect(http.put(url, headers=console, json={"state": "published"}), 200)

    # ---- The history tells it all, by the manager
    events = []
    after = None
    while True:
        page = expect(http.get("/v1/console/history", headers=console, params={
            "aggregate_id": pid, "limit": 500, **({"after": after} if after else {})}), 200)
        events += page["events"]
        if (after := page["next"]) is None:
            break
    ours = [(e["type"].removeprefix("Planning."), e["actor"]) for e in events
            if "Publi" in e["type"] or "Delegation" in e["type"]]
    assert ours == [(t, manager) for t in (
        "Published", "PublicationStopped", "PublicationSettingsChanged", "DelegationAdded", "DelegationActivated",
        "SpaceDelegationsSet", "Published", "PublicationStopped", "PublicationSettingsChanged", "Published",
        "PublicationStopped", "Published")]
    # The credentials of a refused URL went nowhere: not in an answer, not in a log line.
    assert "s3cret-word" not in server.logs()

    # ---- After a restart, everything is as left
    server.restart()
    assert publication() == final
