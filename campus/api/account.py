"""HTTP handlers of the account page ("Mon compte", hosting guide fiche 12).

The manager reads the whole page and changes his contact details, the e-mails he
wants and the version-change choice; the contract (client reference, licence)
is the operator's.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import EmailStr, Field, StringConstraints

from campus.aggregates.account import LICENCE_OPTIONS, NOTIFICATIONS
from campus.api import schemas as s
from campus.api.handlers import api
from campus.api.routing import Auth, Call, Reply
from campus.api.views import account_view

Phone = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
LicenceOption = Literal[LICENCE_OPTIONS]  # type: ignore[valid-type] - the same names, one list
ClientReference = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9-]{1,20}$")]


class ManagerChanges(s.Patch):
    """The manager's contact details ("Mes coordonnées"); absent fields are kept."""

    NULLABLE = frozenset({"civility", "phone", "mobile_phone"})

    civility: Literal["M.", "Mme"] | None = None
    last_name: s.Name | None = None
    first_name: s.Name | None = None
    email: EmailStr | None = Field(default=None, description="where the provider writes to; cannot be removed")
    phone: Phone | None = Field(default=None, description="any valid number; without +country, a French one")
    mobile_phone: Phone | None = Field(default=None, description="a mobile number: the console password comes by SMS")


class NotificationChanges(s.Patch):
    """Which e-mails the manager wants; absent ones are kept."""

    version_change: bool | None = Field(default=None, description=NOTIFICATIONS["version_change"])
    year_operations: bool | None = Field(default=None, description=NOTIFICATIONS["year_operations"])
    backup_problems: bool | None = Field(default=None, description=NOTIFICATIONS["backup_problems"])
    security: bool | None = Field(default=None, description=NOTIFICATIONS["security"])


class VersionChangeChoice(s.Strict):
    """The whole choice (hosting guide fiche 12)."""

    choice: Literal["install_at_release", "defer", "pre_release"]
    date: dt.date | None = Field(default=None, description=(
        "defer: the day to install on (31 August to 30 June); pre_release: the day to install it from "
        "(1 July to 30 August)"))
    base: Literal["new_empty", "current"] | None = Field(
        default=None, description="defer only: a new empty base goes in service, or the base in service is kept")


class AccountChanges(s.Patch):
    manager: ManagerChanges | None = None
    notifications: NotificationChanges | None = None
    version_change: VersionChangeChoice | None = None


class LicenceChanges(s.Patch):
    formula: s.Text | None = None
    expires_on: dt.date | None = None
    modification_seats: int | None = Field(default=None, ge=1, le=100000,
                                           description="administrators and modifying users")
    options: list[LicenceOption] | None = Field(default=None, max_length=len(LICENCE_OPTIONS))


class ContractChanges(s.Patch):
    NULLABLE = frozenset({"client_reference"})

    client_reference: ClientReference | None = Field(default=None, description='"Référence client", e.g. 91430')
    licence: LicenceChanges | None = None


@api.get("/v1/console/account", auth=Auth.CONSOLE, tag="console")
def get_account(call: Call) -> Reply:
    """The account page: client reference, hosting number, licence; contact, notifications, version change."""
    account = call.app.accounts.get_account(call.account_id)
    return Reply(account_view(account), etag=account.etag)


@api.patch("/v1/console/account", auth=Auth.CONSOLE, body=AccountChanges, tag="console")
def change_account(call: Call, body: AccountChanges) -> Reply:
    """Change the contact details, the notifications or the version-change choice (If-Match honoured)."""
    changes = body.model_dump(exclude_unset=True)
    account = call.app.account_page.change_account(call.account_id, manager=changes.get("manager"),
                                      notifications=changes.get("notifications"),
                                      version_change=changes.get("version_change"), if_match=call.if_match)
    return Reply(account_view(account), etag=account.etag)


@api.patch("/v1/operator/accounts/{hosting_number}", auth=Auth.OPERATOR, body=ContractChanges, tag="operator")
def change_contract(call: Call, body: ContractChanges) -> Reply:
    """Record the contract: the client reference and the licence (formula, expiry, seats, options)."""
    changes = body.model_dump(exclude_unset=True)
    account = call.app.account_page.change_contract(call.path["hosting_number"],
                                       client_reference=changes.get("client_reference", ...),
                                       licence=changes.get("licence"))
    return Reply(account_view(account), etag=account.etag)
