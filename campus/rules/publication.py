"""The rules of a planning's web spaces and delegated authentication (hosting guide fiches 8
and 9, Campus fiche 9): pure, no input/output of their own.

The spaces of each edition (their pages, which are on by default, which may delegate); the common
page's header and its checks; the URLs each delegation protocol takes; the checks of a change of
the settings and of the spaces' delegations; why a planning cannot be published; which connection
modes of the base (``Base.connection_modes``, the timetable transfer's rules) may use a space; and
:func:`describe`, everything fiches 8 and 9 show. Every URL is checked by :mod:`campus.rules.urls`
and never fetched. The use cases are in :mod:`campus.services.publication`; docs/PUBLICATION.md
explains each rule.

A planning here is the aggregate ``campus.aggregates.planning.Planning``, only read: the rules sit
below the aggregates, so :class:`PlanningState` names what they read of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit
from uuid import UUID

from campus.errors import Conflict, Invalid, NotFound
from campus.rules.export_format import CONNECTION_MODES
from campus.rules.text import BLANK_MESSAGE, visible_strip
from campus.rules.urls import check_url


class PlanningState(Protocol):
    """What these rules read of a planning (campus.aggregates.planning.Planning)."""

    id: UUID
    name: str
    version: int
    domain: str | None
    net_licence: bool
    server_state: str
    publication_state: str
    publication: dict[str, Any]

    @property
    def in_service(self) -> bool: ...


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


# -- publishing, settings, delegations ------------------------------------------------------------------
def publishing_problem(planning: PlanningState) -> Conflict | None:
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


def require_unpublished(planning: PlanningState, action: str) -> None:
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


def edition_spaces(edition: str) -> dict[str, Space]:
    return {s.key: s for s in SPACES_BY_EDITION.get(edition, CAMPUS_SPACES)}


def delegation_of(planning: PlanningState, delegation_id: str) -> dict:
    delegation = planning.publication["delegations"].get(delegation_id)
    if delegation is None:
        raise NotFound(f"no delegation {delegation_id} on {planning.name!r}")
    return delegation


def require_delegation_unused(planning: PlanningState, delegation_id: str, doing: str) -> None:
    users = [k for k, c in planning.publication["space_delegations"].items() if c.get("delegation_id") == delegation_id]
    if users:
        raise Conflict(f"{doing} this delegation would leave {', '.join(users)} without it: choose another "
                       "delegation (or none) for those spaces first (PUT …/publication/space-delegations)",
                       code="delegation_in_use")


def checked_settings(changes: dict[str, Any]) -> dict[str, Any]:
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


def settings_delta(planning: PlanningState, current: dict, checked: dict[str, Any]) -> dict[str, Any]:
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


def checked_delegation_urls(protocol: str, urls: dict[str, str | None]) -> dict[str, str]:
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


def checked_space_delegations(planning: PlanningState, edition: str, choices: dict[str, dict[str, Any]]
                              ) -> dict[str, dict[str, Any]]:
    spaces = edition_spaces(edition)
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
def public_url(planning: PlanningState, edition: str) -> str | None:
    """The manager's public URL, or the planning's domain with the edition's path; None without either."""
    configured = planning.publication["public_url"]
    if configured:
        return configured
    return f"https://{planning.domain}{DEFAULT_PATH.get(edition, '/')}" if planning.domain else None


def describe(planning: PlanningState, edition: str, establishment: str, modes: dict) -> dict:
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
