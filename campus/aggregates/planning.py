"""A planning: a server slot of the account (Campus fiches 3, 4 and 8)."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id

FIRST_PLANNING_PORT = 21201
DEFAULT_TIME_ZONE = "Europe/Paris"


class Profile(StrEnum):
    ADMINISTRATION = "administration"
    MODIFICATION = "modification"
    CONSULTATION = "consultation"


def planning_id_for(account_id: UUID, number: int) -> UUID:
    return natural_id("planning", account_id, number)


class Planning(CampusAggregate):
    @staticmethod
    def create_id(account_id: UUID, number: int) -> UUID:
        return planning_id_for(account_id, number)

    @event("Created")
    def __init__(self, account_id: UUID, number: int, name: str, time_zone: str) -> None:
        self.account_id = account_id
        self.number = number
        self.name = name
        self.custom_publication_name: str | None = None
        self.net_licence = True
        self.domain_label: str | None = None
        self.domain: str | None = None
        self.port: int | None = None
        self.time_zone = time_zone
        self.server_state = "stopped"
        self.publication_state = "stopped"
        self.profiles: dict[str, tuple[str, ...]] = {p.value: () for p in Profile}
        self.base_id: UUID | None = None
        self.base_ids: tuple[UUID, ...] = ()

    @property
    def publication_name(self) -> str:
        """Defaults to the planning's name (Campus fiche 6)."""
        return self.custom_publication_name or self.name

    @event("Renamed")
    def rename(self, name: str) -> None:
        self.name = name

    @event("PublicationNameChanged")
    def change_publication_name(self, publication_name: str | None) -> None:
        self.custom_publication_name = publication_name

    @event("NetLicenceSwitched")
    def switch_net_licence(self, enabled: bool) -> None:
        self.net_licence = enabled

    @event("DomainBound")
    def bind_domain(self, label: str, domain: str, port: int) -> None:
        self.domain_label = label
        self.domain = domain
        self.port = port

    @event("TimeZoneChanged")
    def change_time_zone(self, time_zone: str) -> None:
        self.time_zone = time_zone

    @event("ProfilesAssigned")
    def assign_profiles(self, profiles: dict, template: str | None = None) -> None:
        """`profiles` is the whole new assignment: {profile: (login, ...)}."""
        self.profiles = {k: tuple(v) for k, v in profiles.items()}

    @event("BaseMounted")
    def mount_base(self, base_id: UUID) -> None:
        """`base_id` becomes the base of the planning; the others stay available."""
        self.base_id = base_id
        if base_id not in self.base_ids:
            self.base_ids = (*self.base_ids, base_id)

    @event("BaseAdded")
    def add_base(self, base_id: UUID) -> None:
        """`base_id` joins the planning's bases without becoming current (next school year's base)."""
        if base_id not in self.base_ids:
            self.base_ids = (*self.base_ids, base_id)

    @event("ServerStarted")
    def start_server(self) -> None:
        self.server_state = "in_service"

    @event("ServerStopped")
    def stop_server(self) -> None:
        self.server_state = "stopped"

    @property
    def in_service(self) -> bool:
        return self.server_state == "in_service"

    def profile_of(self, login: str) -> str | None:
        for profile, logins in self.profiles.items():
            if login in logins:
                return profile
        return None

    # -- publication of the web spaces (hosting guide fiches 8 and 9, Campus fiche 9) ------------------
    # Streams recorded before these events existed replay without them: `publication` falls back to
    # "nothing configured", and campus/publication.py supplies every default (they depend on the edition).
    # Each method assigns a new dict, never changing the previous one in place.

    @property
    def publication(self) -> dict:
        """What the manager configured: spaces (switches), public_url, common_page (header),
        delegations (by id) and space_delegations (by space); absent keys mean the defaults."""
        return self.__dict__.get("_publication") or {
            "spaces": {}, "public_url": None, "common_page": {}, "delegations": {}, "space_delegations": {}}

    def _configure(self, **parts: dict | str | None) -> None:
        self._publication = {**self.publication, **parts}

    @event("Published")
    def publish(self, cause: str) -> None:
        """`cause`: "manager" (asked for), or "server_started" (automatic when the server goes in service)."""
        self.publication_state = "published"

    @event("PublicationStopped")
    def stop_publication(self) -> None:
        self.publication_state = "stopped"

    @event("PublicationSettingsChanged")
    def change_publication_settings(self, changes: dict) -> None:
        """`changes` holds only what changed: spaces {space: bool}, public_url, common_page {field: value}."""
        current = self.publication
        self._configure(
            spaces={**current["spaces"], **changes.get("spaces", {})},
            public_url=changes["public_url"] if "public_url" in changes else current["public_url"],
            common_page={**current["common_page"], **changes.get("common_page", {})},
        )

    @event("DelegationAdded")
    def add_delegation(self, delegation_id: str, name: str, protocol: str, urls: dict) -> None:
        delegation = {"name": name, "protocol": protocol, "urls": dict(urls), "active": False}
        self._configure(delegations={**self.publication["delegations"], delegation_id: delegation})

    @event("DelegationActivated")
    def activate_delegation(self, delegation_id: str) -> None:
        self._set_delegation_active(delegation_id, True)

    @event("DelegationDeactivated")
    def deactivate_delegation(self, delegation_id: str) -> None:
        self._set_delegation_active(delegation_id, False)

    def _set_delegation_active(self, delegation_id: str, active: bool) -> None:
        delegations = dict(self.publication["delegations"])
        delegations[delegation_id] = {**delegations[delegation_id], "active": active}
        self._configure(delegations=delegations)

    @event("DelegationRemoved")
    def remove_delegation(self, delegation_id: str) -> None:
        self._configure(delegations={k: v for k, v in self.publication["delegations"].items() if k != delegation_id})

    @event("SpaceDelegationsSet")
    def set_space_delegations(self, spaces: dict) -> None:
        """The whole choice: {space: {"delegation_id": id or None, "allow_direct": bool}}."""
        self._configure(space_delegations={k: dict(v) for k, v in spaces.items()})
