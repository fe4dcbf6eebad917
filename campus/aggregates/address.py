"""Client addresses as one school's logins see them (hosting guide fiche 11, "Sécurité").

The :class:`ClientAddress` of (school, address), whose id is natural, records
the actions: a suspension (too many failed authentications from that address
for that school's logins) and its unblocking by an administrator. The failures
themselves are counters beside the events (``campus_login_failures``, see
:mod:`campus.services.login_guard`), not events: a brute force must not grow the log.
``AuthenticationFailed`` events stored before that change (kind and login tried,
never the secret) stay readable: the method is kept so they replay.

:class:`SuspensionDay` is a small index: which addresses of a school were
suspended on a day (UTC), so listing the current suspensions reads a day or two
of entries instead of every address that ever mistyped a password.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id

# What an address remembers of its failures (the counting window is a setting, well below this).
FAILURE_MEMORY = timedelta(days=7)
FAILURES_KEPT = 1000


def client_address_id_for(account_id: UUID, address: str) -> UUID:
    return natural_id("client-address", account_id, address)


def suspension_day_id_for(account_id: UUID, day: date) -> UUID:
    return natural_id("suspension-day", account_id, day.isoformat())


class ClientAddress(CampusAggregate):
    """One client address, for one school's logins."""

    @staticmethod
    def create_id(account_id: UUID, address: str) -> UUID:
        return client_address_id_for(account_id, address)

    @event("Watched")
    def __init__(self, account_id: UUID, address: str) -> None:
        self.account_id = account_id
        self.address = address
        self.recent_failures: tuple[datetime, ...] = ()
        self.suspended_at: datetime | None = None
        self.suspended_until: datetime | None = None
        self.suspension_failures = 0

    @event("AuthenticationFailed")
    def fail_authentication(self, kind: str, login: str | None, failed_at: datetime) -> None:
        """Replays failures recorded before issue 9 (new ones are counters, campus/login_guard.py).
        `kind`: console_password, invoice_number, password, pin or secret_answer. Never the attempted secret."""
        kept = [t for t in self.recent_failures if t > failed_at - FAILURE_MEMORY]
        self.recent_failures = (*kept[-(FAILURES_KEPT - 1):], failed_at)

    @event("Suspended")
    def suspend(self, suspended_at: datetime, until: datetime, failures: int) -> None:
        self.suspended_at = suspended_at
        self.suspended_until = until
        self.suspension_failures = failures
        self.recent_failures = ()

    @event("Unblocked")
    def unblock(self, lifted_until: datetime) -> None:
        """`lifted_until`: the end the suspension would have had."""
        self.suspended_at = None
        self.suspended_until = None
        self.suspension_failures = 0
        self.recent_failures = ()

    def is_suspended(self, now: datetime) -> bool:
        return self.suspended_until is not None and self.suspended_until > now

    def failures_since(self, instant: datetime) -> int:
        return sum(1 for t in self.recent_failures if t > instant)


class SuspensionDay(CampusAggregate):
    """The addresses of one school suspended on one day (an index; the truth is ClientAddress)."""

    @staticmethod
    def create_id(account_id: UUID, day: date) -> UUID:
        return suspension_day_id_for(account_id, day)

    @event("Started")
    def __init__(self, account_id: UUID, day: date) -> None:
        self.account_id = account_id
        self.day = day
        self.addresses: tuple[str, ...] = ()

    @event("AddressNoted")
    def note(self, address: str) -> None:
        if address not in self.addresses:
            self.addresses = (*self.addresses, address)
