"""Publication of a planning's web spaces and delegated authentication.

Hosting guide fiche 8: the spaces of the base in service are published on the
internet, or not ("Base publiée" / "Arrêter la publication"); each space has a
publish switch and its desktop and mobile addresses. Fiche 9: authentication
can be delegated to the school's ENT by protocol (CAS, WS-Federation, SAML2,
EduConnect), chosen per space, with or without direct authentication too.
Campus fiche 9: the public URL and the common page's header; publishing needs
the planning's .net licence.

Rules kept here (docs/PUBLICATION.md explains each):

* publishing needs the .net licence switched on and the server in service;
  putting the server in service publishes, in the same command
  (:meth:`Publication.publish_with_server`);
* settings and delegations change only while the publication is stopped (409);
* a space that no connection mode of the base may use (the timetable transfer's
  rules, ``Base.connection_modes``) cannot be switched on (409);
* every URL is checked by :mod:`campus.rules.urls` and never fetched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from campus.aggregates.planning import Planning
from campus.errors import Conflict, Invalid, NotFound
from campus.rules.export_format import CONNECTION_MODES
from campus.rules.text import BLANK_MESSAGE, required_text, visible_strip
from campus.rules.urls import check_url
from campus.services.base import Service



@dataclass(frozen=True)
class Space:
    key: str
    label: str  # as the seeds name it
    page: str  # under the public URL ("" is the public URL itself)
    mobile: str | None  # the mobile page, when the space has one
    default_on: bool
    delegable: bool  # listed in fiche 9's table "Choix de la délégation en fonction de l'espace"


# Hosting guide fiche 8 (the hosted edition): the spaces, their pages, which are on by default.
HOSTED_SPACES = (
    Space("common", "Page commune", "", "mobile.html", True, True),
    Space("establishment", "Page Etablissement", "etablissement.html", None, False, False),
    Space("direction", "Espace Direction", "direction.html", "mobile.direction.html", True, True),
    Space("teachers", "Espace Professeurs", "professeur.html", "mobile.professeur.html", True, True),
    Space("school_life", "Espace Vie scolaire", "viescolaire.html", "mobile.viescolaire.html", True, True),
    Space("parents", "Espace Parents", "parent.html", "mobile.parent.html", True, True),
    Space("companions", "Espace Accompagnants", "accompagnant.html", "mobile.accompagnant.html", True, True),
    Space("students", "Espace Elèves", "eleve.html", "mobile.eleve.html", True, True),
    Space("company", "Espace Entreprise", "entreprise.html", None, True, True),
    Space("academy", "Espace Académie", "academie.html", None, True, True),
    Space("registration", "Espace Inscription", "inscription.html", None, False, False),
)
# Campus fiche 9 (the Campus edition).
CAMPUS_SPACES = (
    Space("common", "Page commune", "", "mobile.html", True, True),
    Space("teachers", "Espace Enseignants", "enseignant.html", "mobile.enseignant.html", True, True),
    Space("secretariat", "Espace Secrétariat", "secretariat.html", "mobile.secretariat.html", True, True),
    Space("fitters", "Espace Appareilleurs", "appareilleur.html", "mobile.appareilleur.html", True, True),
    Space("students", "Espace Étudiants", "etudiant.html", "mobile.etudiant.html", True, True),
    Space("parents", "Espace Parents", "parent.html", "mobile.parent.html", True, True),
    Space("company", "Espace Entreprise", "entreprise.html", None, True, True),
    Space("guests", "Espace Invités", "invite.html", "mobile.invite.html", True, True),
)
SPACES_BY_EDITION = {"hosted": HOSTED_SPACES, "campus": CAMPUS_SPACES}
# Where the spaces live under the planning's domain when no public URL is set.
DEFAULT_PATH = {"hosted": "/pronote/", "campus": "/"}

# The common page's header (Campus fiche 9), with the values the seed's screenshot shows.
COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
FONT_SIZES = (8, 72)
HEIGHTS = {"fixed": ("px", 20, 400), "variable": ("%", 5, 50)}
LOGOS = ("none", "establishment", "other")
TITLE_MAX = 100
DEFAULT_COMMON_PAGE: dict[str, Any] = {
    "title": None,  # the establishment's name
    "text_color": "#464646",
    "font_size": 26,
    "background_color": "#FFFFFF",
    "height": {"mode": "variable", "value": 10},
    "logo": "none",
    "logo_url": None,
}

# Delegated authentication (hosting guide fiche 9): the URLs each protocol takes.
PROTOCOLS = ("cas", "ws_federation", "saml2", "educonnect")
URL_FIELDS = ("server_url", "authentication_url", "validation_url", "sign_in_url", "metadata_url")
PROTOCOL_URLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # (required, optional)
    "ws_federation": (("sign_in_url",), ("metadata_url",)),
    "saml2": (("metadata_url",), ("sign_in_url",)),
    "educonnect": (("metadata_url",), ()),
}
MAX_DELEGATIONS = 20
DELEGATION_NAME_MAX = 64


def validate_color(value: Any, field: str = "color") -> str:
    if not isinstance(value, str) or not COLOR.match(value):
        raise Invalid.field(field, "must be a colour #RRGGBB, for example #464646")
    return value.upper()


class Publication(Service):
    """Publication of the web spaces and delegated authentication (hosting guide fiches 8, 9; Campus fiche 9)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "bases", "plannings")

    def publication(self, account_id: UUID, planning_id: UUID) -> tuple[Planning, dict]:
        """The planning and the description of its publication (see :func:`describe`)."""
        planning = self.plannings.get_planning(account_id, planning_id)
        with self._reading(account_id):
            return planning, self._describe(planning)

    def _describe(self, planning: Planning) -> dict:
        account = self.accounts.get_account(planning.account_id)
        return describe(planning, account.edition, account.establishment, self._connection_modes(planning))

    def _connection_modes(self, planning: Planning) -> dict:
        """The rules of the planning's current base (empty: no base, or a base without rules)."""
        if planning.base_id is None:
            return {}
        return self.bases.get_base(planning.account_id, planning.base_id).connection_modes

    def set_publication_state(self, account_id: UUID, planning_id: UUID, state: str,
                              if_match: str | None = None) -> tuple[Planning, dict]:
        if state not in ("published", "stopped"):
            raise Invalid.field("state", "must be published or stopped")

        def body() -> tuple[Planning, dict]:
            planning = self.plannings.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            if state == "published" and planning.publication_state != "published":
                problem = publishing_problem(planning)
                if problem:
                    raise problem
                planning.publish(cause="manager")
                self.save(planning)
            elif state == "stopped" and planning.publication_state == "published":
                planning.stop_publication()
                self.save(planning)
            return planning, self._describe(planning)

        return self._run(account_id, body)

    def publish_with_server(self, planning: Planning) -> None:
        """Hosting fiche 8: "La publication des Espaces est automatique". Called by the command that puts
        the server in service, after `start_server`, so both events share its instant and its save."""
        if planning.net_licence and planning.publication_state != "published":
            planning.publish(cause="server_started")

    def change_publication_settings(self, account_id: UUID, planning_id: UUID,
                                    changes: dict[str, Any], if_match: str | None = None) -> tuple[Planning, dict]:
        """`changes` may hold spaces {space: bool}, public_url (None: back to the domain's) and
        common_page {title, text_color, font_size, background_color, height, logo, logo_url}."""
        checked = _checked_settings(changes)

        def body() -> tuple[Planning, dict]:
            planning = self.plannings.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            edition = self.accounts.get_account(account_id).edition
            spaces = _edition_spaces(edition)
            unknown = [k for k in checked.get("spaces", {}) if k not in spaces]
            if unknown:
                names = ", ".join(spaces)
                raise Invalid("; ".join(f"spaces.{k}: not a space of the {edition} edition ({names})" for k in unknown),
                              errors=[{"field": f"spaces.{k}", "message": f"not a space of the {edition} edition; "
                                       f"its spaces are {names}"} for k in unknown])
            _require_stopped(planning, "change the publication settings")
            modes = self._connection_modes(planning)
            refused = [k for k, on in checked.get("spaces", {}).items() if on and not space_allowed(k, modes)]
            if refused:
                raise Conflict(
                    f"no connection mode of the base may use {', '.join(refused)} (the rules of its timetable "
                    "transfer): such a space cannot be switched on", code="space_not_allowed",
                    errors=[{"field": f"spaces.{k}", "message": "no connection mode of the base may use this space"}
                            for k in refused])
            current = describe(planning, edition, "", modes)
            delta = _settings_delta(planning, current, checked)
            if delta:
                planning.change_publication_settings(changes=delta)
                self.save(planning)
            return planning, self._describe(planning)

        return self._run(account_id, body)

    def add_delegation(self, account_id: UUID, planning_id: UUID, *, name: str, protocol: str,
                       urls: dict[str, str | None]) -> tuple[Planning, dict, str]:
        """A new delegation, not yet active (fiche 9: add, then activate); answers its id too."""
        name = required_text("name", name, DELEGATION_NAME_MAX)
        checked = _checked_delegation_urls(protocol, urls)

        def body() -> tuple[Planning, dict, str]:
            planning = self.plannings.get_planning(account_id, planning_id)
            _require_stopped(planning, "add a delegation")
            delegations = planning.publication["delegations"]
            if any(d["name"].casefold() == name.casefold() for d in delegations.values()):
                raise Conflict(f"this planning already has a delegation named {name!r}", code="delegation_name_taken",
                               errors=[{"field": "name", "message": "already used by another delegation"}])
            if len(delegations) >= MAX_DELEGATIONS:
                raise Conflict(f"a planning has at most {MAX_DELEGATIONS} delegations; remove one first",
                               code="too_many_delegations")
            delegation_id = str(uuid4())
            planning.add_delegation(delegation_id=delegation_id, name=name, protocol=protocol, urls=checked)
            self.save(planning)
            return planning, self._describe(planning), delegation_id

        return self._run(account_id, body)

    def set_delegation_active(self, account_id: UUID, planning_id: UUID, delegation_id: str,
                              active: bool) -> tuple[Planning, dict]:
        def body() -> tuple[Planning, dict]:
            planning = self.plannings.get_planning(account_id, planning_id)
            delegation = _delegation(planning, delegation_id)
            _require_stopped(planning, "activate or deactivate a delegation")
            if active and not delegation["active"]:
                planning.activate_delegation(delegation_id=delegation_id)
                self.save(planning)
            elif not active and delegation["active"]:
                _require_unused(planning, delegation_id, "deactivating")
                planning.deactivate_delegation(delegation_id=delegation_id)
                self.save(planning)
            return planning, self._describe(planning)

        return self._run(account_id, body)

    def remove_delegation(self, account_id: UUID, planning_id: UUID, delegation_id: str) -> None:
        def body() -> None:
            planning = self.plannings.get_planning(account_id, planning_id)
            _delegation(planning, delegation_id)
            _require_stopped(planning, "remove a delegation")
            _require_unused(planning, delegation_id, "removing")
            planning.remove_delegation(delegation_id=delegation_id)
            self.save(planning)

        self._run(account_id, body)

    def set_space_delegations(self, account_id: UUID, planning_id: UUID,
                              choices: dict[str, dict[str, Any]], if_match: str | None = None
                              ) -> tuple[Planning, dict]:
        """The whole choice per space: {space: {"delegation_id": id or None, "allow_direct": bool}};
        spaces left out get no delegation (direct authentication)."""
        def body() -> tuple[Planning, dict]:
            planning = self.plannings.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            edition = self.accounts.get_account(account_id).edition
            new = _checked_space_delegations(planning, edition, choices)
            _require_stopped(planning, "change the delegation of the spaces")
            inactive = [(k, c["delegation_id"]) for k, c in new.items()
                        if c["delegation_id"] and not planning.publication["delegations"][c["delegation_id"]]["active"]]
            if inactive:
                raise Conflict(
                    "a space can only use an active delegation: activate it first (PATCH "
                    "…/publication/delegations/{id} {\"active\": true})", code="delegation_inactive",
                    errors=[{"field": f"spaces.{k}.delegation_id", "message": f"delegation {d} is not active"}
                            for k, d in inactive])
            if new != planning.publication["space_delegations"]:
                planning.set_space_delegations(spaces=new)
                self.save(planning)
            return planning, self._describe(planning)

        return self._run(account_id, body)


# -- rules ------------------------------------------------------------------------------------------------
def publishing_problem(planning: Planning) -> Conflict | None:
    """Why the planning cannot be published now, or None."""
    if not planning.net_licence:
        return Conflict(
            f"the .net licence of {planning.name!r} is switched off, which forbids publishing: switch it on "
            f'(PATCH /v1/console/plannings/{planning.id} {{"net_licence": true}}) first', code="net_licence_off")
    if not planning.in_service:
        return Conflict(
            f"the server of {planning.name!r} is stopped: put it in service (PUT …/server "
            '{"state": "in_service"}), which publishes the spaces', code="server_not_in_service")
    return None


def _require_stopped(planning: Planning, action: str) -> None:
    if planning.publication_state == "published":
        raise Conflict(
            f"the spaces of {planning.name!r} are published: stop the publication first (PUT "
            f'/v1/console/plannings/{planning.id}/publication {{"state": "stopped"}}) to {action}, then publish '
            "again", code="publication_published")


def space_allowed(space: str, modes: dict) -> bool:
    """A connection mode's own space may be switched on only if some mode of the base may use it;
    the common, establishment and registration pages, the Campus edition's own spaces, and every
    space of a base without rules are not governed by the connection modes."""
    if not modes or space not in CONNECTION_MODES:
        return True
    return bool(usable_by(space, modes))


def usable_by(space: str, modes: dict) -> list[str] | None:
    """The modes that may use `space`, or None when the rules do not govern it."""
    if not modes or space not in CONNECTION_MODES:
        return None
    return [mode for mode in CONNECTION_MODES if space in modes.get(mode, {}).get("spaces", ())]


def _edition_spaces(edition: str) -> dict[str, Space]:
    return {s.key: s for s in SPACES_BY_EDITION.get(edition, CAMPUS_SPACES)}


def _delegation(planning: Planning, delegation_id: str) -> dict:
    delegation = planning.publication["delegations"].get(delegation_id)
    if delegation is None:
        raise NotFound(f"no delegation {delegation_id} on {planning.name!r}")
    return delegation


def _require_unused(planning: Planning, delegation_id: str, doing: str) -> None:
    users = [k for k, c in planning.publication["space_delegations"].items() if c.get("delegation_id") == delegation_id]
    if users:
        raise Conflict(f"{doing} this delegation would leave {', '.join(users)} without it: choose another "
                       "delegation (or none) for those spaces first (PUT …/publication/space-delegations)",
                       code="delegation_in_use")


def _checked_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """The changes with every value checked (422 naming the field); the edition is checked later."""
    checked: dict[str, Any] = {}
    errors: list[dict] = []
    if "spaces" in changes:
        spaces = changes["spaces"]
        if not isinstance(spaces, dict) or not all(isinstance(v, bool) for v in spaces.values()):
            errors.append({"field": "spaces", "message": "must map spaces to true or false"})
        else:
            checked["spaces"] = dict(spaces)
    if "public_url" in changes:
        checked["public_url"] = _collect(errors, _public_url, changes["public_url"])
    if "common_page" in changes:
        checked["common_page"] = _collect(errors, _common_page, changes["common_page"])
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors,
                      code=_url_code(errors))
    return checked


def _collect(errors: list[dict], check: Any, value: Any) -> Any:
    try:
        return check(value)
    except Invalid as exc:
        errors += exc.errors
        return None


def _url_code(errors: list[dict]) -> str | None:
    return "url_refused" if any("rule" in e for e in errors) else None


def _public_url(value: Any) -> str | None:
    if value is None:
        return None
    url = check_url("public_url", value)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise Invalid.field("public_url", "is the base address of the spaces: no ?query or #fragment")
    return url if url.endswith("/") else url + "/"


def _common_page(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid.field("common_page", "must be an object")
    checked: dict[str, Any] = {}
    errors: list[dict] = []

    def field(name: str, check: Any) -> None:
        if name in value:
            try:
                checked[name] = check(value[name])
            except Invalid as exc:
                errors.extend(exc.errors)

    field("title", _title)
    field("text_color", lambda v: validate_color(v, "common_page.text_color"))
    field("background_color", lambda v: validate_color(v, "common_page.background_color"))
    field("font_size", _font_size)
    field("height", _height)
    field("logo", _logo)
    field("logo_url", lambda v: None if v is None else check_url("common_page.logo_url", v))
    unknown = set(value) - set(DEFAULT_COMMON_PAGE)
    errors += [{"field": f"common_page.{k}", "message": "unknown field"} for k in sorted(unknown)]
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return checked


def _title(value: Any) -> str | None:
    if value is None:
        return None
    text = visible_strip(value) if isinstance(value, str) else ""
    if not text:
        raise Invalid.field("common_page.title", f"{BLANK_MESSAGE} (null: the establishment's name)")
    if len(text) > TITLE_MAX or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise Invalid.field("common_page.title", f"must be 1 to {TITLE_MAX} characters without control characters "
                                                 "(null: the establishment's name)")
    return text


def _font_size(value: Any) -> int:
    low, high = FONT_SIZES
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid.field("common_page.font_size", f"must be a whole number from {low} to {high}")
    return value


def _height(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("mode") not in HEIGHTS or set(value) != {"mode", "value"}:
        raise Invalid.field("common_page.height", 'must be {"mode": "fixed" (pixels) or "variable" '
                                                  '(percent of the screen), "value": a number}')
    unit, low, high = HEIGHTS[value["mode"]]
    number = value["value"]
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise Invalid.field("common_page.height.value", f"a {value['mode']} height is {low} to {high} {unit}")
    return {"mode": value["mode"], "value": number}


def _logo(value: Any) -> str:
    if value not in LOGOS:
        raise Invalid.field("common_page.logo", "must be none, establishment or other")
    return value


def _settings_delta(planning: Planning, current: dict, checked: dict[str, Any]) -> dict[str, Any]:
    """Only what differs from the planning's current settings; refuses an "other" logo without its URL."""
    delta: dict[str, Any] = {}
    switches = {s["space"]: s["publish"] for s in current["spaces"]}
    spaces = {k: v for k, v in checked.get("spaces", {}).items() if switches[k] != v}
    if spaces:
        delta["spaces"] = spaces
    if "public_url" in checked and checked["public_url"] != planning.publication["public_url"]:
        delta["public_url"] = checked["public_url"]
    if "common_page" in checked:
        stored = {**DEFAULT_COMMON_PAGE, **planning.publication["common_page"]}
        page = {k: v for k, v in checked["common_page"].items() if stored[k] != v}
        merged = {**stored, **page}
        if merged["logo"] == "other" and not merged["logo_url"]:
            raise Invalid.field("common_page.logo_url", 'is required when logo is "other" (an https URL)')
        if page:
            delta["common_page"] = page
    return delta


def _checked_delegation_urls(protocol: str, urls: dict[str, str | None]) -> dict[str, str]:
    """The URLs the protocol takes, each checked by campus.rules.urls; every problem reported at once."""
    given = {k: v for k, v in urls.items() if v is not None}
    errors: list[dict] = []
    if protocol == "cas":
        separate = ("authentication_url", "validation_url")
        if "server_url" in given and any(k in given for k in separate):
            errors.append({"field": "server_url", "message": "give either server_url, or authentication_url and "
                                                             "validation_url (different addresses), not both"})
        elif "server_url" not in given:
            errors += [{"field": k, "message": "is required (or give server_url alone)"}
                       for k in separate if k not in given]
        allowed = ("server_url", *separate)
    else:
        required, optional = PROTOCOL_URLS[protocol]
        errors += [{"field": k, "message": f"is required for {protocol}"} for k in required if k not in given]
        allowed = required + optional
    errors += [{"field": k, "message": f"is not used by {protocol}"} for k in given if k not in allowed]
    checked: dict[str, str] = {}
    for key in [k for k in URL_FIELDS if k in given and k in allowed]:
        try:
            checked[key] = check_url(key, given[key])
        except Invalid as exc:
            errors += exc.errors
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors,
                      code=_url_code(errors))
    return checked


def _checked_space_delegations(planning: Planning, edition: str, choices: dict[str, dict[str, Any]]
                               ) -> dict[str, dict[str, Any]]:
    spaces = _edition_spaces(edition)
    delegations = planning.publication["delegations"]
    errors: list[dict] = []
    new: dict[str, dict[str, Any]] = {}
    for key, choice in choices.items():
        where = f"spaces.{key}"
        if key not in spaces:
            errors.append({"field": where, "message": f"not a space of the {edition} edition; its spaces are "
                                                      f"{', '.join(spaces)}"})
            continue
        delegation_id = choice.get("delegation_id")
        allow_direct = choice.get("allow_direct", True)
        if delegation_id is not None and not spaces[key].delegable:
            errors.append({"field": f"{where}.delegation_id", "message": f"the {spaces[key].label} has no "
                                                                          "authentication to delegate"})
        elif delegation_id is not None and delegation_id not in delegations:
            errors.append({"field": f"{where}.delegation_id", "message": f"no delegation {delegation_id} on "
                                                                          "this planning"})
        if delegation_id is None and not allow_direct:
            errors.append({"field": f"{where}.allow_direct", "message": "a space without a delegation is reached "
                                                                        "by direct authentication only"})
        if delegation_id is not None:
            new[key] = {"delegation_id": delegation_id, "allow_direct": bool(allow_direct)}
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return new


# -- the description the API answers ------------------------------------------------------------------
def public_url(planning: Planning, edition: str) -> str | None:
    """The manager's public URL, or the planning's domain with the edition's path; None without either."""
    configured = planning.publication["public_url"]
    if configured:
        return configured
    return f"https://{planning.domain}{DEFAULT_PATH.get(edition, '/')}" if planning.domain else None


def describe(planning: Planning, edition: str, establishment: str, modes: dict) -> dict:
    """Everything hosting fiches 8 and 9 show, as JSON-ready values."""
    config = planning.publication
    base = public_url(planning, edition)
    online = (planning.publication_state == "published" and planning.in_service and planning.net_licence)
    delegations = config["delegations"]
    spaces = []
    for space in SPACES_BY_EDITION.get(edition, CAMPUS_SPACES):
        switch = config["spaces"].get(space.key, space.default_on)
        allowed = space_allowed(space.key, modes)
        choice = config["space_delegations"].get(space.key, {})
        desktop = f"{base}{space.page}" if base else None
        spaces.append({
            "space": space.key,
            "label": space.label,
            "publish": switch,
            "usable_by": usable_by(space.key, modes),
            "allowed": allowed,
            "online": online and switch and allowed,
            "desktop_url": desktop,
            "mobile_url": f"{base}{space.mobile}" if base and space.mobile else None,
            "delegable": space.delegable,
            "delegation_id": choice.get("delegation_id"),
            "allow_direct": choice.get("allow_direct", True),
            "direct_url": f"{desktop}?login=true" if desktop and space.delegable else None,
        })
    page = {**DEFAULT_COMMON_PAGE, **config["common_page"]}
    unit = HEIGHTS[page["height"]["mode"]][0]
    return {
        "planning_id": str(planning.id),
        "edition": edition,
        "state": planning.publication_state,
        "online": online,
        "net_licence": planning.net_licence,
        "server_state": planning.server_state,
        "settings_editable": planning.publication_state != "published",
        "publishable": publishing_problem(planning) is None,
        "public_url": base,
        "public_url_configured": config["public_url"] is not None,
        "spaces": spaces,
        "common_page": {**page, "title": page["title"] or establishment or None,
                        "height": {**page["height"], "unit": unit}},
        "delegations": [
            {"id": delegation_id, "name": d["name"], "protocol": d["protocol"], "active": d["active"],
             **{k: d["urls"].get(k) for k in _protocol_fields(d["protocol"])},
             "ent_service_url": f"{base}**" if base else None,
             "used_by": [k for k, c in config["space_delegations"].items() if c.get("delegation_id") == delegation_id]}
            for delegation_id, d in delegations.items()
        ],
        "version": planning.version,
    }


def _protocol_fields(protocol: str) -> tuple[str, ...]:
    if protocol == "cas":
        return ("server_url", "authentication_url", "validation_url")
    required, optional = PROTOCOL_URLS[protocol]
    return required + optional
