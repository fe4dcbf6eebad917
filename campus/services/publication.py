"""Publication of a planning's web spaces and delegated authentication.

Hosting guide fiche 8: the spaces of the base in service are published on the
internet, or not ("Base publiée" / "Arrêter la publication"); each space has a
publish switch and its desktop and mobile addresses. Fiche 9: authentication
can be delegated to the school's ENT by protocol (CAS, WS-Federation, SAML2,
EduConnect), chosen per space, with or without direct authentication too.
Campus fiche 9: the public URL and the common page's header; publishing needs
the planning's .net licence.

The rules (docs/PUBLICATION.md explains each; the pure ones are in
:mod:`campus.rules.publication`, with the spaces of each edition and :func:`describe`):

* publishing needs the .net licence switched on and the server in service;
  putting the server in service publishes, in the same command
  (:meth:`Publication.publish_with_server`);
* settings and delegations change only while the publication is stopped (409);
* a space that no connection mode of the base may use (the timetable transfer's
  rules, ``Base.connection_modes``) cannot be switched on (409);
* every URL is checked by :mod:`campus.rules.urls` and never fetched.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from campus.aggregates.planning import Planning
from campus.errors import Conflict, Invalid
from campus.rules.publication import (
    DELEGATION_NAME_MAX,
    MAX_DELEGATIONS,
    checked_delegation_urls,
    checked_settings,
    checked_space_delegations,
    delegation_of,
    describe,
    edition_spaces,
    publishing_problem,
    require_delegation_unused,
    require_unpublished,
    settings_delta,
    space_allowed,
)
from campus.rules.text import required_text
from campus.services.base import Service


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
        checked = checked_settings(changes)

        def body() -> tuple[Planning, dict]:
            planning = self.plannings.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            edition = self.accounts.get_account(account_id).edition
            spaces = edition_spaces(edition)
            unknown = [k for k in checked.get("spaces", {}) if k not in spaces]
            if unknown:
                names = ", ".join(spaces)
                raise Invalid("; ".join(f"spaces.{k}: not a space of the {edition} edition ({names})" for k in unknown),
                              errors=[{"field": f"spaces.{k}", "message": f"not a space of the {edition} edition; "
                                       f"its spaces are {names}"} for k in unknown])
            require_unpublished(planning, "change the publication settings")
            modes = self._connection_modes(planning)
            refused = [k for k, on in checked.get("spaces", {}).items() if on and not space_allowed(k, modes)]
            if refused:
                raise Conflict(
                    f"no connection mode of the base may use {', '.join(refused)} (the rules of its timetable "
                    "transfer): such a space cannot be switched on", code="space_not_allowed",
                    errors=[{"field": f"spaces.{k}", "message": "no connection mode of the base may use this space"}
                            for k in refused])
            current = describe(planning, edition, "", modes)
            delta = settings_delta(planning, current, checked)
            if delta:
                planning.change_publication_settings(changes=delta)
                self.save(planning)
            return planning, self._describe(planning)

        return self._run(account_id, body)

    def add_delegation(self, account_id: UUID, planning_id: UUID, *, name: str, protocol: str,
                       urls: dict[str, str | None]) -> tuple[Planning, dict, str]:
        """A new delegation, not yet active (fiche 9: add, then activate); answers its id too."""
        name = required_text("name", name, DELEGATION_NAME_MAX)
        checked = checked_delegation_urls(protocol, urls)

        def body() -> tuple[Planning, dict, str]:
            planning = self.plannings.get_planning(account_id, planning_id)
            require_unpublished(planning, "add a delegation")
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
            delegation = delegation_of(planning, delegation_id)
            require_unpublished(planning, "activate or deactivate a delegation")
            if active and not delegation["active"]:
                planning.activate_delegation(delegation_id=delegation_id)
                self.save(planning)
            elif not active and delegation["active"]:
                require_delegation_unused(planning, delegation_id, "deactivating")
                planning.deactivate_delegation(delegation_id=delegation_id)
                self.save(planning)
            return planning, self._describe(planning)

        return self._run(account_id, body)

    def remove_delegation(self, account_id: UUID, planning_id: UUID, delegation_id: str) -> None:
        def body() -> None:
            planning = self.plannings.get_planning(account_id, planning_id)
            delegation_of(planning, delegation_id)
            require_unpublished(planning, "remove a delegation")
            require_delegation_unused(planning, delegation_id, "removing")
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
            new = checked_space_delegations(planning, edition, choices)
            require_unpublished(planning, "change the delegation of the spaces")
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
