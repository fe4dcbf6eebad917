"""HTTP handlers of the console's security settings: suspended client addresses (hosting guide fiche 11)."""

from __future__ import annotations

from campus.aggregates.address import ClientAddress
from campus.api.handlers import api
from campus.api.routing import Auth, Call


def suspension_view(watch: ClientAddress) -> dict:
    return {"address": watch.address, "suspended_at": watch.suspended_at, "until": watch.suspended_until,
            "failures": watch.suspension_failures}


@api.get("/v1/console/security/suspended-addresses", auth=Auth.CONSOLE_OR_ADMIN, tag="security")
def list_suspended_addresses(call: Call) -> dict:
    """The client addresses suspended now for this school's logins, after too many failed authentications."""
    return {"suspended_addresses": [suspension_view(w) for w in call.app.login_guard.list_suspended_addresses(call.account_id)]}


@api.delete("/v1/console/security/suspended-addresses/{address}", auth=Auth.CONSOLE_OR_ADMIN, status=204,
            tag="security")
def unblock_address(call: Call) -> None:
    """Unblock a suspended address at once; its failures are forgotten."""
    call.app.login_guard.unblock_address(call.account_id, call.path["address"])
