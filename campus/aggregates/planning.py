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
