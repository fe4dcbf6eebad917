"""The hosting account: one school, one tenant (Campus fiche 1, hosting fiche 1)."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id
from campus.rules.school_calendar import DEFAULT_VERSION_CHANGE

# The e-mails a hosting manager can choose to receive (all wanted until he says otherwise).
NOTIFICATIONS = {
    "version_change": "the next version and its pre-release are available (hosting guide fiche 12)",
    "year_operations": "before and after the school-year operations: July archive, August base, version change",
    "backup_problems": "a scheduled save or archive failed, or a backup file failed its check",
    "security": "a certificate installed on a new machine, the console password reset",
}
DEFAULT_NOTIFICATIONS = {name: True for name in NOTIFICATIONS}
VERSION_CHOICES = ("install_at_release", "defer", "pre_release")
LICENCE_OPTIONS = ("edt_connection", "consultation", "sms", "web_publication")


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

    @event("AdministratorSeatsReserved")
    def reserve_administrator_seats(self, seats: int) -> None:
        """Seats in modification kept for superadministrators and base administrators (hosting fiche 11)."""
        self._administrator_seats = seats

    @property
    def administrator_seats(self) -> int:
        """Reserved seats (0 until reserved; accounts opened before this event existed have none)."""
        return self.__dict__.get("_administrator_seats", 0)

    # -- the account page ("Mon compte", hosting guide fiche 12) -----------------------------------------
    # Added after accounts were first opened: an `Opened` event has none of these, so each property
    # falls back to its default until the first event that sets it (old streams replay unchanged).

    @property
    def client_reference(self) -> str | None:
        """The provider's customer number ("Référence client"), recorded by the operator."""
        return self.__dict__.get("_client_reference")

    @property
    def notifications(self) -> dict[str, bool]:
        """Which e-mails the manager wants (see NOTIFICATIONS): every one until he chooses."""
        return {**DEFAULT_NOTIFICATIONS, **self.__dict__.get("_notifications", {})}

    @property
    def version_change(self) -> dict:
        """The version-change choice: {"choice", "date", "base"} (install at release until chosen)."""
        return dict(self.__dict__.get("_version_change") or DEFAULT_VERSION_CHANGE)

    @event("ContractChanged")
    def change_contract(self, client_reference: str | None, licence: dict) -> None:
        """The operator records the real contract: the customer number and the whole licence."""
        self._client_reference = client_reference
        self.licence = dict(licence)

    @event("ContactDetailsChanged")
    def change_contact_details(self, manager: dict) -> None:
        """`manager` is the whole new contact ("Mes coordonnées"); the use case merged the changes."""
        self.manager = dict(manager)

    @event("NotificationsChanged")
    def change_notifications(self, notifications: dict) -> None:
        """`notifications` is the whole new choice {name: wanted}."""
        self._notifications = dict(notifications)

    @event("VersionChangeChosen")
    def choose_version_change(self, choice: str, date: date | None, base: str | None) -> None:
        """install_at_release (no date), defer (to `date`, with `base`), pre_release (from `date`)."""
        self._version_change = {"choice": choice, "date": date, "base": base}


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
