"""Publication of the web spaces and delegated authentication over the HTTP API
(hosting guide fiches 8 and 9, Campus fiche 9; docs/PUBLICATION.md).

Given / when / then against the in-process ASGI app; what a client sees: statuses,
bodies, the events the history records.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from api_helpers import (
    School,
    accept_licence,
    assert_problem,
    bearer,
    cheap_argon2,
    console_login,
    create_superadministrator,
    history,
    list_plannings,
    operator_headers,
)
from school_helpers import create_base, set_server
from starlette.testclient import TestClient

from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings

HOSTED_SPACES = ["common", "establishment", "direction", "teachers", "school_life", "parents", "companions",
                 "students", "company", "academy", "registration"]
CAMPUS_SPACES = ["common", "teachers", "secretariat", "fitters", "students", "parents", "company", "guests"]
CAS = {"name": "Mon ENT", "protocol": "cas", "server_url": "https://cas.monent.fr/cas"}


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests exercise publication rules, not password hashing."""
    cheap_argon2(monkeypatch)


# -- helpers -------------------------------------------------------------------------------------------
class Pub:
    """One planning's publication routes, for one school."""

    def __init__(self, client: TestClient, headers: dict[str, str], planning_id: str) -> None:
        self.client, self.headers, self.planning_id = client, headers, planning_id
        self.url = f"/v1/console/plannings/{planning_id}/publication"

    def get(self) -> dict:
        r = self.client.get(self.url, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()

    def state(self, state: str, **kw: Any) -> httpx.Response:
        return self.client.put(self.url, headers={**self.headers, **kw.pop("headers", {})}, json={"state": state})

    def settings(self, body: dict, headers: dict | None = None) -> httpx.Response:
        return self.client.patch(f"{self.url}/settings", headers={**self.headers, **(headers or {})}, json=body)

    def add(self, body: dict) -> httpx.Response:
        return self.client.post(f"{self.url}/delegations", headers=self.headers, json=body)

    def activate(self, delegation_id: str, active: bool = True) -> httpx.Response:
        return self.client.patch(f"{self.url}/delegations/{delegation_id}", headers=self.headers,
                                 json={"active": active})

    def remove(self, delegation_id: str) -> httpx.Response:
        return self.client.delete(f"{self.url}/delegations/{delegation_id}", headers=self.headers)

    def assign(self, spaces: dict) -> httpx.Response:
        return self.client.put(f"{self.url}/space-delegations", headers=self.headers, json={"spaces": spaces})

    def ok(self, response: httpx.Response, status: int = 200) -> dict:
        assert response.status_code == status, response.text
        return response.json()

    def space(self, key: str, view: dict | None = None) -> dict:
        return next(s for s in (view or self.get())["spaces"] if s["space"] == key)


def open_school(client: TestClient, edition: str, establishment: str = "Lycée Victor Hugo",
                domain: str | None = "rne0750001a") -> tuple[School, str]:
    """An account of `edition`, logged in, licence accepted, a superadministrator, planning01's
    domain bound; answers (school, planning01 id)."""
    r = client.post("/v1/operator/accounts", headers=operator_headers(client), json={
        "establishment": establishment, "manager": {"name": "Claire Martin", "email": "claire@example.org"},
        "edition": edition})
    assert r.status_code == 201, r.text
    body = r.json()
    school = School(body["hosting_number"], body["console_password"], body["invoice_number"], establishment)
    console_login(client, school)
    accept_licence(client, school.headers)
    create_superadministrator(client, school.headers)
    planning = list_plannings(client, school)[0]["id"]
    if domain:
        r = client.patch(f"/v1/console/plannings/{planning}", headers=school.headers, json={"domain": domain})
        assert r.status_code == 200, r.text
    return school, planning


@pytest.fixture
def hosted(client: TestClient) -> Pub:
    """A hosted-edition school whose planning01 has a base, server stopped, not published."""
    school, planning = open_school(client, "hosted")
    create_base(client, school.headers, planning)
    return Pub(client, school.headers, planning)


def in_service(pub: Pub) -> dict:
    r = set_server(pub.client, pub.headers, pub.planning_id, "in_service")
    assert r.status_code == 200, r.text
    return r.json()


def stopped_and_ready(pub: Pub) -> None:
    """Server in service (which publishes), then the publication stopped: settings may change."""
    in_service(pub)
    pub.ok(pub.state("stopped"))


# -- what fiche 8 shows ---------------------------------------------------------------------------------
def test_the_hosted_edition_lists_fiche_8s_spaces_with_urls_from_the_planning_domain(hosted: Pub) -> None:
    view = hosted.get()
    domain = "https://rne0750001a.pronote-campus.net/pronote/"
    assert view["edition"] == "hosted" and view["state"] == "stopped" and view["online"] is False
    assert view["public_url"] == domain and view["public_url_configured"] is False
    assert [s["space"] for s in view["spaces"]] == HOSTED_SPACES
    spaces = {s["space"]: s for s in view["spaces"]}
    assert (spaces["common"]["desktop_url"], spaces["common"]["mobile_url"]) == (domain, domain + "mobile.html")
    assert (spaces["direction"]["desktop_url"], spaces["direction"]["mobile_url"]) == (
        domain + "direction.html", domain + "mobile.direction.html")
    assert spaces["teachers"]["desktop_url"] == domain + "professeur.html"
    assert spaces["school_life"]["mobile_url"] == domain + "mobile.viescolaire.html"
    assert spaces["companions"]["desktop_url"] == domain + "accompagnant.html"
    assert spaces["students"]["desktop_url"] == domain + "eleve.html"
    # Fiche 8: Company and Academy have no mobile address; Establishment and Registration are off.
    assert (spaces["company"]["desktop_url"], spaces["company"]["mobile_url"]) == (domain + "entreprise.html", None)
    assert spaces["academy"]["mobile_url"] is None
    assert [k for k, s in spaces.items() if not s["publish"]] == ["establishment", "registration"]
    # Fiche 9: the direct address of a space is its address with ?login=true; no delegation by default.
    assert spaces["common"]["direct_url"] == domain + "?login=true"
    assert all(s["delegation_id"] is None and s["allow_direct"] for s in view["spaces"])
    assert view["common_page"] == {"title": "Lycée Victor Hugo", "text_color": "#464646", "font_size": 26,
                                   "background_color": "#FFFFFF", "height": {"mode": "variable", "value": 10,
                                                                             "unit": "%"},
                                   "logo": "none", "logo_url": None}
    assert view["delegations"] == []


def test_the_campus_edition_lists_its_own_spaces_at_the_root_of_the_domain(client: TestClient) -> None:
    school, planning = open_school(client, "campus", domain="ecole-annee-en-cours")
    view = Pub(client, school.headers, planning).get()
    assert view["edition"] == "campus"
    assert [s["space"] for s in view["spaces"]] == CAMPUS_SPACES
    assert view["public_url"] == "https://ecole-annee-en-cours.pronote-campus.net/"
    labels = {s["space"]: s["label"] for s in view["spaces"]}
    assert labels["fitters"] == "Espace Appareilleurs" and labels["secretariat"] == "Espace Secrétariat"
    assert all(s["publish"] for s in view["spaces"])


def test_without_a_domain_the_urls_are_null_until_a_public_url_is_set(client: TestClient) -> None:
    school, planning = open_school(client, "campus", domain=None)
    pub = Pub(client, school.headers, planning)
    view = pub.get()
    assert view["public_url"] is None and all(s["desktop_url"] is None for s in view["spaces"])
    view = pub.ok(pub.settings({"public_url": "https://espaces.lycee-hugo.fr/campus"}))
    assert view["public_url"] == "https://espaces.lycee-hugo.fr/campus/" and view["public_url_configured"]
    assert pub.space("teachers", view)["desktop_url"] == "https://espaces.lycee-hugo.fr/campus/enseignant.html"
    view = pub.ok(pub.settings({"public_url": None}))
    assert view["public_url"] is None and not view["public_url_configured"]


# -- published / stopped ------------------------------------------------------------------------------------
def test_putting_the_server_in_service_publishes_in_the_same_command(hosted: Pub) -> None:
    in_service(hosted)
    view = hosted.get()
    assert view["state"] == "published" and view["online"] is True
    assert all(s["online"] == s["publish"] for s in view["spaces"])
    events = history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id,
                     type="Planning.ServerStarted,Planning.Published")
    assert [e["type"] for e in events] == ["Planning.ServerStarted", "Planning.Published"]
    started, published = events
    assert published["data"] == {"cause": "server_started"}
    assert published["timestamp"] == started["timestamp"] and published["request_id"] == started["request_id"]
    assert published["actor"] == started["actor"] and published["actor"].startswith("manager:")


def test_switching_the_net_licence_off_stops_the_publication_in_the_same_command(hosted: Pub) -> None:
    in_service(hosted)
    assert hosted.get()["state"] == "published"
    r = hosted.client.patch(f"/v1/console/plannings/{hosted.planning_id}", headers=hosted.headers,
                            json={"net_licence": False})
    assert r.status_code == 200, r.text
    assert hosted.get()["state"] == "stopped"
    events = history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id,
                     type="Planning.NetLicenceSwitched,Planning.PublicationStopped")
    assert len(events) == 2 and events[0]["request_id"] == events[1]["request_id"]


def test_the_campus_edition_publishes_when_a_created_base_goes_in_service(client: TestClient) -> None:
    school, planning = open_school(client, "campus")
    create_base(client, school.headers, planning)
    assert Pub(client, school.headers, planning).get()["state"] == "published"


def test_a_net_licence_switched_off_forbids_publishing(hosted: Pub) -> None:
    r = hosted.client.patch(f"/v1/console/plannings/{hosted.planning_id}", headers=hosted.headers,
                            json={"net_licence": False})
    assert r.status_code == 200, r.text
    in_service(hosted)
    # Putting the server in service did not publish.
    assert hosted.get()["state"] == "stopped" and hosted.get()["publishable"] is False
    assert_problem(hosted.state("published"), 409, code="net_licence_off", detail=(".net licence", "switched off"))
    assert not history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id, type="Planning.Published")
    # With the licence back on, publishing works.
    hosted.client.patch(f"/v1/console/plannings/{hosted.planning_id}", headers=hosted.headers,
                        json={"net_licence": True})
    assert hosted.ok(hosted.state("published"))["state"] == "published"
    events = history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id, type="Planning.Published")
    assert [e["data"] for e in events] == [{"cause": "manager"}]


def test_publishing_needs_the_server_in_service_and_stopping_twice_is_one_event(hosted: Pub) -> None:
    assert_problem(hosted.state("published"), 409, code="server_not_in_service", detail="in service")
    in_service(hosted)
    assert hosted.ok(hosted.state("stopped"))["state"] == "stopped"
    assert hosted.ok(hosted.state("stopped"))["settings_editable"] is True
    assert hosted.ok(hosted.state("published"))["online"] is True
    assert hosted.ok(hosted.state("published"))["state"] == "published"
    types = [e["type"] for e in history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id,
                                        type="Planning.Published,Planning.PublicationStopped")]
    assert types == ["Planning.Published", "Planning.PublicationStopped", "Planning.Published"]
    # Stopping the server leaves the publication published but no longer online.
    set_server(hosted.client, hosted.headers, hosted.planning_id, "stopped")
    view = hosted.get()
    assert (view["state"], view["online"]) == ("published", False)
    assert_problem(hosted.client.put(hosted.url, headers=hosted.headers, json={"state": "paused"}), 422,
                   fields={"state"})


def test_if_match_guards_the_publication(hosted: Pub) -> None:
    in_service(hosted)
    r = hosted.client.get(hosted.url, headers=hosted.headers)
    etag = r.headers["etag"]
    assert etag == f'"{r.json()["version"]}"'
    moved = hosted.state("stopped", headers={"If-Match": etag})
    assert moved.status_code == 200 and moved.headers["etag"] != etag
    assert_problem(hosted.settings({"spaces": {"registration": True}}, headers={"If-Match": etag}), 412)
    assert hosted.settings({"spaces": {"registration": True}},
                           headers={"If-Match": moved.headers["etag"]}).status_code == 200


# -- settings ---------------------------------------------------------------------------------------------
def test_settings_change_only_while_the_publication_is_stopped(hosted: Pub) -> None:
    in_service(hosted)
    refused = hosted.settings({"spaces": {"parents": False}})
    body = assert_problem(refused, 409, code="publication_published", detail="stop the publication first")
    assert "/publication" in body["detail"]
    hosted.ok(hosted.state("stopped"))
    view = hosted.ok(hosted.settings({
        "spaces": {"parents": False, "registration": True},
        "public_url": "https://espaces.lycee-hugo.fr/pronote/",
        "common_page": {"title": "Lycée Victor Hugo — Espaces", "text_color": "#1a2b3c", "font_size": 30,
                        "background_color": "#ffffff", "height": {"mode": "fixed", "value": 50},
                        "logo": "other", "logo_url": "https://www.lycee-hugo.fr/logo.png"},
    }))
    assert not hosted.space("parents", view)["publish"] and hosted.space("registration", view)["publish"]
    assert hosted.space("direction", view)["desktop_url"] == "https://espaces.lycee-hugo.fr/pronote/direction.html"
    assert view["common_page"] == {"title": "Lycée Victor Hugo — Espaces", "text_color": "#1A2B3C",
                                   "font_size": 30, "background_color": "#FFFFFF",
                                   "height": {"mode": "fixed", "value": 50, "unit": "px"},
                                   "logo": "other", "logo_url": "https://www.lycee-hugo.fr/logo.png"}
    # Only what changed is recorded, and sending the same values again records nothing.
    events = history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id,
                     type="Planning.PublicationSettingsChanged")
    assert len(events) == 1
    assert events[0]["data"]["changes"]["spaces"] == {"parents": False, "registration": True}
    assert "background_color" not in events[0]["data"]["changes"]["common_page"]  # #FFFFFF already
    hosted.ok(hosted.settings({"spaces": {"parents": False}, "common_page": {"font_size": 30}}))
    assert len(history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id,
                       type="Planning.PublicationSettingsChanged")) == 1
    # null brings back the defaults: the establishment's name, the domain's address.
    view = hosted.ok(hosted.settings({"public_url": None, "common_page": {"title": None}}))
    assert view["common_page"]["title"] == "Lycée Victor Hugo"
    assert view["public_url"] == "https://rne0750001a.pronote-campus.net/pronote/"
    # Published again, the settings hold.
    view = hosted.ok(hosted.state("published"))
    assert view["online"] and not hosted.space("parents", view)["online"]
    assert hosted.space("registration", view)["online"]


@pytest.mark.parametrize(("body", "fields"), [
    ({"common_page": {"text_color": "red"}}, {"common_page.text_color"}),
    ({"common_page": {"background_color": "#12345"}}, {"common_page.background_color"}),
    ({"common_page": {"background_color": "#GGGGGG"}}, {"common_page.background_color"}),
    ({"common_page": {"font_size": 7}}, {"common_page.font_size"}),
    ({"common_page": {"font_size": 73}}, {"common_page.font_size"}),
    ({"common_page": {"height": {"mode": "fixed", "value": 19}}}, {"common_page.height.value"}),
    ({"common_page": {"height": {"mode": "fixed", "value": 401}}}, {"common_page.height.value"}),
    ({"common_page": {"height": {"mode": "variable", "value": 51}}}, {"common_page.height.value"}),
    ({"common_page": {"height": {"mode": "variable", "value": 4}}}, {"common_page.height.value"}),
    ({"common_page": {"height": {"mode": "stretchy", "value": 10}}}, {"common_page.height.mode"}),
    ({"common_page": {"logo": "other"}}, {"common_page.logo_url"}),
    ({"common_page": {"logo": "big"}}, {"common_page.logo"}),
    ({"common_page": {"title": "  "}}, {"common_page.title"}),
    ({"common_page": {"title": "a" * 101}}, {"common_page.title"}),
    ({"common_page": {"colour": "#FFFFFF"}}, {"common_page.colour"}),
    ({"common_page": {"font_size": None}}, {"common_page.font_size"}),
    ({"common_page": {"logo_url": "http://www.lycee-hugo.fr/logo.png"}}, {"common_page.logo_url"}),
    ({"spaces": {"teachers": "yes"}}, {"spaces.teachers"}),
    ({"spaces": {"fitters": True}}, {"spaces.fitters"}),  # a Campus-edition space
    ({"spaces": None}, {"spaces"}),
    ({"public_url": "https://espaces.lycee-hugo.fr/?x=1"}, {"public_url"}),
    ({"public_url": "http://espaces.lycee-hugo.fr/"}, {"public_url"}),
    ({"public_url": "https://192.168.1.20/pronote/"}, {"public_url"}),
    ({"favourite": 1}, {"favourite"}),
])
def test_settings_refusals_name_the_field(hosted: Pub, body: dict, fields: set[str]) -> None:
    stopped_and_ready(hosted)
    before = hosted.get()
    assert_problem(hosted.settings(body), 422, fields=fields)
    assert hosted.get() == before


def test_a_refused_url_says_which_rule_failed(hosted: Pub) -> None:
    stopped_and_ready(hosted)
    body = assert_problem(hosted.settings({"public_url": "http://admin:pw@169.254.169.254/"}), 422,
                          fields={"public_url"}, code="url_refused")
    assert {e["rule"] for e in body["errors"]} == {"https_only", "no_credentials", "host_name", "public_host"}
    assert "pw" not in body["detail"]  # the refusal does not echo the credentials
    body = assert_problem(hosted.settings({"common_page": {"logo": "other",
                                                           "logo_url": "https://metadata.google.internal/"}}),
                          422, fields={"common_page.logo_url"})
    assert [e["rule"] for e in body["errors"]] == ["public_host"]


# -- connection modes of the timetable transfer -------------------------------------------------------------
def transfer(pub: Pub, modes: dict) -> dict:
    body = {"name": "Base EDT", "grid": {"first_monday": "2026-08-31", "last_sunday": "2027-07-04",
                                         "working_days": ["mon", "tue", "wed", "thu", "fri"],
                                         "sequences_per_day": 8, "sequence_minutes": 60, "split": 1},
            "connection_modes": modes}
    r = pub.client.post(f"/v1/console/plannings/{pub.planning_id}/bases/transfer", headers=pub.headers, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_space_no_connection_mode_may_use_cannot_be_switched_on(client: TestClient) -> None:
    school, planning = open_school(client, "hosted")
    pub = Pub(client, school.headers, planning)
    transfer(pub, {"direction": {"client": True, "spaces": ["direction"]},
                   "parents": {"public": True, "spaces": ["parents"]},
                   "teachers": {"client": True, "spaces": []}})
    view = pub.get()
    spaces = {s["space"]: s for s in view["spaces"]}
    assert spaces["direction"]["usable_by"] == ["direction"] and spaces["direction"]["allowed"]
    assert spaces["teachers"]["usable_by"] == [] and spaces["teachers"]["allowed"] is False
    # The portals and a base's unruled spaces are not governed by the modes.
    assert spaces["common"]["usable_by"] is None and spaces["common"]["allowed"]
    assert spaces["registration"]["usable_by"] is None
    stopped_and_ready(pub)
    refused = assert_problem(pub.settings({"spaces": {"teachers": True, "students": True, "parents": True}}), 409,
                             code="space_not_allowed", fields={"spaces.teachers", "spaces.students"})
    assert "teachers" in refused["detail"]
    view = pub.ok(pub.settings({"spaces": {"teachers": False, "parents": True}}))
    assert not pub.space("teachers", view)["publish"]
    # Published, a space the modes forbid is not online even if its switch was on before.
    view = pub.ok(pub.state("published"))
    assert pub.space("direction", view)["online"] and not pub.space("students", view)["online"]
    assert pub.space("students", view)["publish"] is True


# -- delegated authentication (fiche 9) ---------------------------------------------------------------------
def test_fiche_9_add_a_cas_delegation_activate_it_and_choose_it_per_space(hosted: Pub) -> None:
    in_service(hosted)
    # Delegations change only while the publication is stopped.
    assert_problem(hosted.add(CAS), 409, code="publication_published", detail="stop the publication first")
    hosted.ok(hosted.state("stopped"))
    added = hosted.add(CAS)
    body = hosted.ok(added, 201)
    delegation = body["delegation"]
    assert added.headers["location"].endswith(f"/publication/delegations/{delegation['id']}")
    assert delegation == {"id": delegation["id"], "name": "Mon ENT", "protocol": "cas", "active": False,
                          "server_url": "https://cas.monent.fr/cas", "authentication_url": None,
                          "validation_url": None,
                          "ent_service_url": "https://rne0750001a.pronote-campus.net/pronote/**", "used_by": []}
    # An inactive delegation cannot be chosen.
    assert_problem(hosted.assign({"teachers": {"delegation_id": delegation["id"]}}), 409,
                   code="delegation_inactive", fields={"spaces.teachers.delegation_id"})
    assert hosted.ok(hosted.activate(delegation["id"]))["delegations"][0]["active"] is True
    view = hosted.ok(hosted.assign({k: {"delegation_id": delegation["id"], "allow_direct": k != "students"}
                                    for k in ("teachers", "parents", "companions", "students")}))
    chosen = {s["space"]: (s["delegation_id"], s["allow_direct"]) for s in view["spaces"] if s["delegation_id"]}
    assert chosen == {"teachers": (delegation["id"], True), "parents": (delegation["id"], True),
                      "companions": (delegation["id"], True), "students": (delegation["id"], False)}
    assert view["delegations"][0]["used_by"] == ["teachers", "parents", "companions", "students"]
    # A delegation in use cannot be deactivated or removed.
    assert_problem(hosted.activate(delegation["id"], False), 409, code="delegation_in_use", detail="teachers")
    assert_problem(hosted.remove(delegation["id"]), 409, code="delegation_in_use")
    # Published: every change is refused.
    hosted.ok(hosted.state("published"))
    for refused in (hosted.assign({}), hosted.activate(delegation["id"], False), hosted.remove(delegation["id"]),
                    hosted.add({**CAS, "name": "Autre"})):
        assert_problem(refused, 409, code="publication_published")
    hosted.ok(hosted.state("stopped"))
    # The PUT replaces the whole choice; then the delegation can go.
    view = hosted.ok(hosted.assign({}))
    assert all(s["delegation_id"] is None for s in view["spaces"])
    hosted.ok(hosted.activate(delegation["id"], False))
    assert hosted.remove(delegation["id"]).status_code == 204
    assert hosted.get()["delegations"] == []
    assert_problem(hosted.remove(delegation["id"]), 404)
    types = [e["type"] for e in history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id)
             if "Delegation" in e["type"]]
    assert types == ["Planning.DelegationAdded", "Planning.DelegationActivated", "Planning.SpaceDelegationsSet",
                     "Planning.SpaceDelegationsSet", "Planning.DelegationDeactivated", "Planning.DelegationRemoved"]


@pytest.mark.parametrize("body", [
    {"name": "CAS séparé", "protocol": "cas", "authentication_url": "https://cas.monent.fr/login",
     "validation_url": "https://cas.monent.fr/serviceValidate"},
    {"name": "ADFS", "protocol": "ws_federation", "sign_in_url": "https://adfs.region.fr/adfs/ls/",
     "metadata_url": "https://adfs.region.fr/FederationMetadata/2007-06/FederationMetadata.xml"},
    {"name": "Shibboleth", "protocol": "saml2", "metadata_url": "https://idp.region.fr/idp/shibboleth"},
    {"name": "ÉduConnect", "protocol": "educonnect",
     "metadata_url": "https://educonnect.education.gouv.fr/idp/metadata"},
])
def test_every_protocol_takes_its_urls(hosted: Pub, body: dict) -> None:
    stopped_and_ready(hosted)
    delegation = hosted.ok(hosted.add(body), 201)["delegation"]
    assert delegation["protocol"] == body["protocol"] and delegation["active"] is False
    assert {k: v for k, v in delegation.items() if k.endswith("_url") and k != "ent_service_url" and v} == {
        k: v for k, v in body.items() if k.endswith("_url")}


@pytest.mark.parametrize(("body", "fields", "rules"), [
    ({**CAS, "server_url": "http://cas.monent.fr/cas"}, {"server_url"}, {"https_only"}),
    ({**CAS, "server_url": "https://admin:secret@cas.monent.fr/"}, {"server_url"}, {"no_credentials"}),
    ({**CAS, "server_url": "https://10.0.0.5/cas"}, {"server_url"}, {"host_name", "public_host"}),
    ({**CAS, "server_url": "https://2130706433/cas"}, {"server_url"}, {"host_name", "public_host"}),
    ({**CAS, "server_url": "https://[::1]/cas"}, {"server_url"}, {"host_name", "public_host"}),
    ({**CAS, "server_url": "https://localhost/cas"}, {"server_url"}, {"public_host"}),
    ({**CAS, "server_url": "https://cas.localhost/cas"}, {"server_url"}, {"public_host"}),
    ({**CAS, "server_url": "https://169.254.169.254/latest"}, {"server_url"}, {"host_name", "public_host"}),
    ({"name": "x", "protocol": "saml2", "metadata_url": "https://metadata.google.internal/x"}, {"metadata_url"},
     {"public_host"}),
    ({"name": "x", "protocol": "cas", "authentication_url": "https://cas.monent.fr/login",
      "validation_url": "http://127.0.0.1:8080/validate"}, {"validation_url"},
     {"https_only", "host_name", "public_host"}),
])
def test_every_url_is_checked_and_the_refusal_names_field_and_rule(hosted: Pub, body: dict, fields: set[str],
                                                                   rules: set[str]) -> None:
    stopped_and_ready(hosted)
    refused = assert_problem(hosted.add(body), 422, fields=fields, code="url_refused")
    assert {e["rule"] for e in refused["errors"]} == rules
    assert "secret" not in refused["detail"]
    assert hosted.get()["delegations"] == []


@pytest.mark.parametrize(("body", "fields"), [
    ({"name": "x", "protocol": "cas"}, {"authentication_url", "validation_url"}),
    ({"name": "x", "protocol": "cas", "authentication_url": "https://cas.monent.fr/login"}, {"validation_url"}),
    ({**CAS, "validation_url": "https://cas.monent.fr/validate"}, {"server_url"}),
    ({**CAS, "metadata_url": "https://cas.monent.fr/meta"}, {"metadata_url"}),
    ({"name": "x", "protocol": "ws_federation"}, {"sign_in_url"}),
    ({"name": "x", "protocol": "saml2", "sign_in_url": "https://idp.region.fr/sso"}, {"metadata_url"}),
    ({"name": "x", "protocol": "educonnect", "metadata_url": "https://educonnect.education.gouv.fr/m",
      "server_url": "https://educonnect.education.gouv.fr/"}, {"server_url"}),
    ({"name": "x", "protocol": "oauth", "server_url": "https://a.fr/"}, {"protocol"}),
    ({"name": " ", "protocol": "cas", "server_url": "https://cas.monent.fr/"}, {"name"}),
    ({"protocol": "cas", "server_url": "https://cas.monent.fr/"}, {"name"}),
])
def test_delegation_refusals_name_the_field(hosted: Pub, body: dict, fields: set[str]) -> None:
    stopped_and_ready(hosted)
    assert_problem(hosted.add(body), 422, fields=fields)


def test_space_choices_are_checked(hosted: Pub) -> None:
    stopped_and_ready(hosted)
    delegation = hosted.ok(hosted.add(CAS), 201)["delegation"]["id"]
    hosted.ok(hosted.activate(delegation))
    assert_problem(hosted.add({**CAS, "name": "MON ENT"}), 409, code="delegation_name_taken", fields={"name"})
    assert_problem(hosted.assign({"establishment": {"delegation_id": delegation}}), 422,
                   fields={"spaces.establishment.delegation_id"})
    assert_problem(hosted.assign({"teachers": {"delegation_id": "0a2b"}}), 422,
                   fields={"spaces.teachers.delegation_id"})
    assert_problem(hosted.assign({"teachers": {"delegation_id": None, "allow_direct": False}}), 422,
                   fields={"spaces.teachers.allow_direct"})
    assert_problem(hosted.assign({"guests": {"delegation_id": delegation}}), 422, fields={"spaces.guests"})
    assert_problem(hosted.assign({"teachers": {"delegation": delegation}}), 422,
                   fields={"spaces.teachers.delegation"})
    assert_problem(hosted.activate("no-such-delegation"), 404)
    assert not history(hosted.client, hosted.headers, aggregate_id=hosted.planning_id,
                       type="Planning.SpaceDelegationsSet")


# -- who may -------------------------------------------------------------------------------------------------
def test_another_school_sees_nothing_and_a_consultation_user_is_refused(client: TestClient, hosted: Pub) -> None:
    other, _ = open_school(client, "hosted", establishment="Collège voisin", domain="rne0750002b")
    for response in (client.get(hosted.url, headers=other.headers),
                     client.put(hosted.url, headers=other.headers, json={"state": "stopped"}),
                     client.patch(f"{hosted.url}/settings", headers=other.headers, json={"spaces": {}}),
                     client.post(f"{hosted.url}/delegations", headers=other.headers, json=CAS),
                     client.put(f"{hosted.url}/space-delegations", headers=other.headers, json={"spaces": {}})):
        assert_problem(response, 404)
    assert_problem(client.get(hosted.url), 401)


# -- the event log --------------------------------------------------------------------------------------------
def test_old_streams_replay_and_every_change_reads_back_from_the_store(app: CampusApplication,
                                                                       settings: Settings,
                                                                       clock: ManualClock) -> None:
    """A planning with no publication event (every stream written before this feature) answers the
    defaults; after changes, a new application on the same store reads the same publication. On
    SQLite and PostgreSQL."""
    from school_helpers import service_school

    account_id, planning_id = service_school(app)  # Campus edition: in service, so published
    _, before = app.publication.publication(account_id, planning_id)
    assert before["state"] == "published" and before["spaces"][0]["publish"] is True
    clock.advance(timedelta(minutes=5))
    app.publication.set_publication_state(account_id, planning_id, "stopped")
    app.publication.change_publication_settings(account_id, planning_id, {
        "spaces": {"guests": False}, "public_url": "https://espaces.lycee.fr/",
        "common_page": {"background_color": "#000000", "height": {"mode": "fixed", "value": 80}}})
    _, _, delegation_id = app.publication.add_delegation(account_id, planning_id, name="ENT", protocol="saml2",
                                                 urls={"metadata_url": "https://idp.ent.fr/metadata"})
    app.publication.set_delegation_active(account_id, planning_id, delegation_id, True)
    app.publication.set_space_delegations(account_id, planning_id, {"teachers": {"delegation_id": delegation_id,
                                                                         "allow_direct": False}})
    app.publication.set_publication_state(account_id, planning_id, "published")
    planning, after = app.publication.publication(account_id, planning_id)

    again = CampusApplication(settings, clock=clock)
    try:
        replayed, view = again.publication.publication(account_id, planning_id)
        assert view == after and replayed.version == planning.version
        assert view["public_url"] == "https://espaces.lycee.fr/"
        assert view["common_page"]["height"] == {"mode": "fixed", "value": 80, "unit": "px"}
        assert [(s["space"], s["delegation_id"], s["allow_direct"]) for s in view["spaces"]
                if s["delegation_id"]] == [("teachers", delegation_id, False)]
        # And as of before the changes, the planning read back is the unconfigured one.
        old = again.repository.get(planning_id, version=before["version"])
        assert old.publication == {"spaces": {}, "public_url": None, "common_page": {}, "delegations": {},
                                   "space_delegations": {}}
    finally:
        again.close()


def test_an_administrator_of_the_planning_may_publish_a_consultation_user_may_not(client: TestClient) -> None:
    from api_helpers import SUPERADMIN_LOGIN, SUPERADMIN_PASSWORD, create_user
    from school_helpers import assign, open_user_session

    school, planning = open_school(client, "campus", domain="ecole-hugo")
    r = client.put("/v1/console/controller/domain", headers=school.headers, json={"name": "lyceehugo"})
    assert r.status_code == 200, r.text
    client.post("/v1/console/controller/activation", headers=school.headers)
    create_user(client, school, "consult")
    assign(client, school.headers, planning, "administration", [SUPERADMIN_LOGIN])
    assign(client, school.headers, planning, "consultation", ["consult"])
    create_base(client, school.headers, planning)

    def token(login: str, password: str) -> dict[str, str]:
        r = open_user_session(client, domain="lyceehugo", login=login, password=password, planning=planning)
        assert r.status_code == 201, r.text
        return bearer(r.json()["token"])

    admin = token(SUPERADMIN_LOGIN, SUPERADMIN_PASSWORD)
    url = f"/v1/console/plannings/{planning}/publication"
    assert client.put(url, headers=admin, json={"state": "stopped"}).json()["state"] == "stopped"
    events = history(client, school.headers, aggregate_id=planning, type="Planning.PublicationStopped")
    assert [e["actor"] for e in events] == [f"user:{SUPERADMIN_LOGIN}"]
    consult = token("consult", school.user_passwords["consult"])
    assert_problem(client.put(url, headers=consult, json={"state": "published"}), 403, code="profile_insufficient")
    assert_problem(client.get(url, headers=consult), 403)
