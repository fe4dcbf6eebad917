"""Directory users of a school (Campus fiches 4 and 8)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id


class Status(StrEnum):
    SUPERADMINISTRATOR = "superadministrator"
    BASE_ADMINISTRATOR = "base_administrator"
    USER = "user"


class SecurityMeasure(StrEnum):
    """What an unrecognised device must get past (Campus fiche 7)."""

    NONE = "none"
    NOTIFICATION = "notification"
    PIN = "pin"


ADMINISTRATIVE_STATUSES = (Status.SUPERADMINISTRATOR, Status.BASE_ADMINISTRATOR)


def normalise_login(login: str) -> str:
    return login.strip().casefold()


def user_id_for(account_id: UUID, login: str) -> UUID:
    return natural_id("user", account_id, normalise_login(login))


class DirectoryUser(CampusAggregate):
    @staticmethod
    def create_id(account_id: UUID, login: str) -> UUID:
        return user_id_for(account_id, login)

    @event("Created")
    def __init__(
        self,
        account_id: UUID,
        login: str,
        last_name: str,
        first_name: str,
        civility: str | None,
        status: Status,
        email: str | None,
        password_hash: str,
        external_ids: dict,
    ) -> None:
        self.account_id = account_id
        self.login = login
        self.last_name = last_name
        self.first_name = first_name
        self.civility = civility
        self.status = status
        self.email = email
        self.password_hash = password_hash
        self.console_access = False
        self.external_ids = dict(external_ids)
        # Bumped by a password or status change: every open session of the user ends.
        self.credentials_epoch = 0
        self.security_measure: SecurityMeasure | None = None
        self.pin_hash: str | None = None
        self.devices: dict[UUID, dict] = {}

    @event("Renamed")
    def rename(self, last_name: str, first_name: str, civility: str | None) -> None:
        self.last_name = last_name
        self.first_name = first_name
        self.civility = civility

    @event("StatusChanged")
    def change_status(self, status: Status) -> None:
        self.status = status
        self.credentials_epoch += 1

    @event("EmailChanged")
    def change_email(self, email: str | None) -> None:
        self.email = email

    @event("ConsoleAccessChanged")
    def change_console_access(self, console_access: bool) -> None:
        self.console_access = console_access

    @event("ExternalIdentifiersChanged")
    def change_external_ids(self, external_ids: dict) -> None:
        self.external_ids = dict(external_ids)

    @event("PasswordChanged")
    def change_password(self, password_hash: str) -> None:
        self.password_hash = password_hash
        self.credentials_epoch += 1

    @event("SecurityMeasureChosen")
    def choose_security_measure(self, measure: SecurityMeasure, pin_hash: str | None) -> None:
        self.security_measure = measure
        self.pin_hash = pin_hash

    @event("DeviceRecognised")
    def recognise_device(self, device_id: UUID, name: str, recognised_at: datetime) -> None:
        self.devices[device_id] = {"name": name, "recognised_at": recognised_at}

    @event("DeviceForgotten")
    def forget_device(self, device_id: UUID) -> None:
        self.devices.pop(device_id, None)

    def public_fields(self) -> dict:
        """Who the user is, without any secret (views and the users file build on it)."""
        return {
            "login": self.login,
            "last_name": self.last_name,
            "first_name": self.first_name,
            "civility": self.civility,
            "status": self.status.value,
            "email": self.email,
            "console_access": self.console_access,
            "external_ids": dict(self.external_ids),
        }

    @property
    def is_administrative(self) -> bool:
        return self.status in ADMINISTRATIVE_STATUSES
