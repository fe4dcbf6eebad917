"""Failed authentications per client address, and suspended addresses (hosting guide fiche 11).

Every login path of campus (the hosting manager's console, a directory user's
password, a user's PIN, the invoice number of a first console login) calls
:meth:`LoginGuardUseCases.refuse_if_suspended` before checking anything, and
:meth:`LoginGuardUseCases.authentication_failed` when a check fails. Failures
are counted per (school, client address): the school is the tenant of the login
(for a hosting number that opens no account, the id that account would have, so
an unknown number and a wrong password behave alike); the address is the one
:mod:`campus.api.middleware` resolved (the socket, or the right-most untrusted
``X-Forwarded-For`` hop behind a trusted proxy).

Each failure is an event (``ClientAddress.AuthenticationFailed``: kind and login,
never the secret tried), so the count survives a restart and is shared by every
process on the store. After ``login_failures_max`` failures within
``login_failures_window_minutes`` the address is suspended
(``ClientAddress.Suspended``) for ``login_suspension_minutes``: every login of
that school from that address, even with the right password, gets 429 with
``Retry-After``. Other addresses, and other schools, are not concerned. A
success does not reset the count: otherwise one valid account would let an
address try the passwords of all the others.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.address import ClientAddress, SuspensionDay, client_address_id_for, suspension_day_id_for
from campus.context import current_context
from campus.errors import CampusError, Invalid, NotFound, TooManyRequests

if TYPE_CHECKING:
    from campus.application import CampusApplication

UNKNOWN_ADDRESS = "unknown"  # no socket address (the service layer called directly)


class FailureKind:
    """What was being checked when an authentication failed."""

    CONSOLE_PASSWORD = "console_password"
    INVOICE_NUMBER = "invoice_number"
    PASSWORD = "password"
    PIN = "pin"
    SECRET_ANSWER = "secret_answer"  # a mail account's secret question


def current_address() -> str:
    return current_context().client_address or UNKNOWN_ADDRESS


def _iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


class LoginGuardUseCases:
    """Mixed into CampusApplication."""

    # -- at every login ---------------------------------------------------------
    def refuse_if_suspended(self: CampusApplication, tenant: UUID) -> None:
        """429 if the caller's address is suspended for `tenant`'s logins (checked before any secret)."""
        watch = self._client_address(tenant, current_address())
        now = self.now()
        if watch is not None and watch.is_suspended(now):
            raise self._suspended_error(watch, now)

    def authentication_failed(self: CampusApplication, tenant: UUID, kind: str, login: str | None,
                              refusal: CampusError) -> NoReturn:
        """Record the failure, suspend the address at the limit, then raise `refusal` (or 429 if
        this very failure suspended the address)."""
        address = current_address()
        settings = self.settings

        def body() -> tuple[ClientAddress, datetime]:
            now = self.now()
            watch = self._client_address(tenant, address) or ClientAddress(account_id=tenant, address=address)
            watch.fail_authentication(kind=kind, login=(login or "")[:64] or None, failed_at=now)
            changed: list = [watch]
            failures = watch.failures_since(now - timedelta(minutes=settings.login_failures_window_minutes))
            if failures >= settings.login_failures_max:
                watch.suspend(suspended_at=now, until=now + timedelta(minutes=settings.login_suspension_minutes),
                              failures=failures)
                day = self._suspension_day(tenant, now.date()) or SuspensionDay(account_id=tenant, day=now.date())
                day.note(address=address)
                changed.append(day)
            self.save(*changed)
            return watch, now

        watch, now = self._run(tenant, body)
        if watch.is_suspended(now):
            self.notify_manager(tenant, "security", f"address {address} suspended after failed logins",
                                f"{watch.failures_since(now - timedelta(minutes=settings.login_failures_window_minutes))}"
                                f" failed authentications came from {address} within "
                                f"{settings.login_failures_window_minutes} minutes: its logins to your school are "
                                f"suspended until {watch.suspended_until.isoformat()}.\n"
                                "Unblock it from the console (Security > suspended addresses) if it is one of yours.")
            raise self._suspended_error(watch, now) from None
        raise refusal

    # -- the administrator's view ----------------------------------------------
    def list_suspended_addresses(self: CampusApplication, account_id: UUID) -> list[ClientAddress]:
        """The addresses suspended now for this school, oldest suspension first."""
        now = self.now()
        horizon = now - timedelta(minutes=self.settings.login_suspension_minutes)
        addresses: list[str] = []
        day = horizon.date()
        while day <= now.date():
            index = self._suspension_day(account_id, day)
            addresses += [a for a in (index.addresses if index else ()) if a not in addresses]
            day += timedelta(days=1)
        watches = [w for w in (self._client_address(account_id, a) for a in addresses) if w and w.is_suspended(now)]
        return sorted(watches, key=lambda w: w.suspended_at or now)

    def unblock_address(self: CampusApplication, account_id: UUID, address: str) -> ClientAddress:
        """Lift a suspension at once (an event); 404 if the address is not suspended."""
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            raise Invalid.field("address", f"{address!r} is not an IPv4 or IPv6 address") from None
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        canonical = str(parsed)

        def body() -> ClientAddress:
            watch = self._client_address(account_id, canonical)
            if watch is None or not watch.is_suspended(self.now()):
                raise NotFound(f"the address {canonical} is not suspended")
            assert watch.suspended_until is not None
            watch.unblock(lifted_until=watch.suspended_until)
            self.save(watch)
            return watch

        return self._run(account_id, body)

    # -- plumbing -------------------------------------------------------------------
    def _client_address(self: CampusApplication, tenant: UUID, address: str) -> ClientAddress | None:
        try:
            watch = self.repository.get(client_address_id_for(tenant, address))
        except AggregateNotFoundError:
            return None
        return watch if isinstance(watch, ClientAddress) and watch.account_id == tenant else None

    def _suspension_day(self: CampusApplication, tenant: UUID, day: date) -> SuspensionDay | None:
        try:
            index = self.repository.get(suspension_day_id_for(tenant, day))
        except AggregateNotFoundError:
            return None
        return index if isinstance(index, SuspensionDay) and index.account_id == tenant else None

    @staticmethod
    def _suspended_error(watch: ClientAddress, now: datetime) -> TooManyRequests:
        assert watch.suspended_until is not None
        seconds = max(1, math.ceil((watch.suspended_until - now).total_seconds()))
        return TooManyRequests(
            f"too many failed authentications from {watch.address}: logins to this school from this "
            f"address are suspended until {_iso(watch.suspended_until)} (retry in {seconds} s); "
            "an administrator can unblock it in the console's security settings",
            retry_after=seconds, code="address_suspended")


__all__ = ["FailureKind", "LoginGuardUseCases", "current_address"]
