"""The account page ("Mon compte", hosting guide fiche 12).

What the manager reads there and cannot change — client reference, hosting
number, licence (expiry, seats, formula, options) — is the operator's to set
(:meth:`AccountPage.change_contract`). What he changes himself: his
contact details, the e-mails he wants, and the version-change choice. Each
change is an event on :class:`HostingAccount`; a change that changes nothing
records nothing.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import phonenumbers

from campus.aggregates.account import LICENCE_OPTIONS, NOTIFICATIONS, HostingAccount
from campus.errors import Invalid
from campus.rules.school_calendar import validate_version_change
from campus.services.base import Service, check_if_match


# Numbers written without a country code are read as French ones (the seeds' schools).
DEFAULT_PHONE_REGION = "FR"
CONTACT_FIELDS = ("civility", "last_name", "first_name", "email", "phone", "mobile_phone")
MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def normalise_phone(field: str, value: str, *, mobile: bool = False) -> str:
    """A phone number in E.164 (+33612345678), or a 422 naming `field`."""
    try:
        number = phonenumbers.parse(value, DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise Invalid.field(field, f"{value!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise Invalid.field(field, f"{value!r} is not a valid phone number (write +41… for a number abroad)")
    if mobile and phonenumbers.number_type(number) not in MOBILE_TYPES:
        raise Invalid.field(field, f"{value!r} is not a mobile number: this one receives the console password "
                                   "by SMS")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def contact_of(account: HostingAccount) -> dict[str, Any]:
    """The manager's contact: the fields he (or the operator, at the opening) gave; an absent
    field is unset (accounts are opened with a name and an e-mail only)."""
    return {f: account.manager[f] for f in ("name", *CONTACT_FIELDS) if account.manager.get(f) is not None}


class AccountPage(Service):
    """The hosting account's page: contact, notifications, version change (hosting guide fiche 12)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts",)

    def change_account(self, account_id: UUID, *, manager: dict[str, Any] | None = None,
                       notifications: dict[str, bool] | None = None, version_change: dict[str, Any] | None = None,
                       if_match: str | None = None) -> HostingAccount:
        """The manager's part of the account page; absent parts are left alone."""
        contact = self._checked_manager_contact(manager or {})
        unknown = sorted(set(notifications or {}) - set(NOTIFICATIONS))
        if unknown:
            raise Invalid.field(f"notifications.{unknown[0]}",
                                f"unknown notification; one of {', '.join(NOTIFICATIONS)}")
        chosen = None
        if version_change is not None:
            chosen = validate_version_change(version_change.get("choice", ""), version_change.get("date"),
                                             version_change.get("base"), self.now().date())

        def body() -> HostingAccount:
            account = self.accounts.get_account(account_id)
            check_if_match(account.etag, if_match)
            merged = {**account.manager, **contact}
            if "first_name" in contact or "last_name" in contact:
                merged["name"] = " ".join(n for n in (merged.get("first_name"), merged.get("last_name")) if n)
            merged = {k: v for k, v in merged.items() if v is not None}
            if merged != account.manager:
                account.change_contact_details(manager=merged)
            wanted = {**account.notifications, **(notifications or {})}
            if wanted != account.notifications:
                account.change_notifications(notifications=wanted)
            if chosen is not None and chosen != account.version_change:
                account.choose_version_change(**chosen)
            if account.pending_events:
                self.save(account)
            return account

        return self._run(account_id, body)

    @staticmethod
    def _checked_manager_contact(changes: dict[str, Any]) -> dict[str, Any]:
        """Phone numbers normalised; names and e-mail were checked by the request's schema."""
        contact = dict(changes)
        for field in ("phone", "mobile_phone"):
            if contact.get(field) is not None:
                contact[field] = normalise_phone(f"manager.{field}", contact[field], mobile=field == "mobile_phone")
        return contact

    def change_contract(self, hosting_number: str, *, client_reference: Any = ...,
                        licence: dict[str, Any] | None = None) -> HostingAccount:
        """The operator records the customer number and the licence (fields absent: unchanged)."""
        account = self.accounts.account_by_number(hosting_number)
        if licence and "options" in licence:
            unknown = [o for o in licence["options"] if o not in LICENCE_OPTIONS]
            if unknown:
                raise Invalid.field("licence.options",
                                    f"unknown options {unknown}; known: {', '.join(LICENCE_OPTIONS)}")

        def body() -> HostingAccount:
            current: HostingAccount = self.repository.get(account.id)
            reference = current.client_reference if client_reference is ... else client_reference
            new_licence = {**current.licence, **(licence or {})}
            if "options" in (licence or {}):
                new_licence["options"] = tuple(o for o in LICENCE_OPTIONS if o in licence["options"])
            if (reference, new_licence) != (current.client_reference, current.licence):
                current.change_contract(client_reference=reference, licence=new_licence)
                self.save(current)
            return current

        return self._run(account.id, body)
