"""The hosting account: one school, one tenant (Campus fiche 1, hosting fiche 1)."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id


def account_id_for(hosting_number: str) -> UUID:
    return natural_id("account", hosting_number)


class HostingAccount(CampusAggregate):
    @staticmethod
    def create_id(hosting_number: str) -> UUID:
        return account_id_for(hosting_number)

    @event("Opened")
    def __init__(
        self,
        hosting_number: str,
        account_id: UUID,
        establishment: str,
        manager: dict,
        console_password_hash: str,
        invoice_number_hash: str,
        licence: dict,
        planning_ids: tuple,
        controller_id: UUID,
        edition: str = "campus",
    ) -> None:
        self.hosting_number = hosting_number
        self.account_id = account_id
        self.establishment = establishment
        self.manager = dict(manager)
        self.console_password_hash = console_password_hash
        self.invoice_number_hash = invoice_number_hash
        self.licence = dict(licence)
        self.planning_ids = tuple(planning_ids)
        self.controller_id = controller_id
        # "campus": a created base goes into service at once (Campus fiche 6); "hosted": the manager does it.
        self.edition = edition
        self.password_epoch = 0
        self.certificate_digests: dict[str, datetime] = {}
        self.licence_accepted_at: datetime | None = None
        self.assignment_templates: dict[str, dict] = {}
        self.first_superadministrator: str | None = None

    @event("ConsolePasswordReset")
    def reset_console_password(self, console_password_hash: str) -> None:
        self.console_password_hash = console_password_hash
        self.password_epoch += 1

    @event("CertificateInstalled")
    def install_certificate(self, certificate_digest: str, installed_at: datetime) -> None:
        self.certificate_digests[certificate_digest] = installed_at

    @event("LicenceAgreementAccepted")
    def accept_licence_agreement(self, accepted_at: datetime) -> None:
        self.licence_accepted_at = accepted_at

    @event("AssignmentTemplateSaved")
    def save_assignment_template(self, name: str, assignments: dict, source_planning_id: UUID) -> None:
        self.assignment_templates[name] = {
            "assignments": {k: tuple(v) for k, v in assignments.items()},
            "source_planning_id": source_planning_id,
        }

    @event("FirstSuperadministratorCreated")
    def record_first_superadministrator(self, login: str) -> None:
        """A one-time claim, saved with the user, so two writers cannot both create 'the first'."""
        self.first_superadministrator = login

    @property
    def licence_accepted(self) -> bool:
        return self.licence_accepted_at is not None


def _one_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def default_licence(today: date) -> dict:
    """What a new account gets until the operator sets the real contract."""
    return {
        "formula": "PRONOTE Campus",
        "expires_on": _one_year_after(today),
        "modification_seats": 6,
        "options": ("edt_connection", "consultation", "sms", "web_publication"),
    }
