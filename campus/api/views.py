"""Aggregates as the JSON the API answers. Secrets never reach these views."""

from __future__ import annotations

from typing import Any

from campus.aggregates.account import HostingAccount
from campus.aggregates.controller import Controller
from campus.aggregates.planning import Planning
from campus.aggregates.user import DirectoryUser
from campus.services.account_page import contact_of


def account_view(a: HostingAccount) -> dict[str, Any]:
    """The account page: the contract (read-only for the manager: client reference, hosting
    number, licence expiry, seats, formula, options) and what he edits (contact details,
    notifications, version-change choice). Accounts opened before those existed get defaults."""
    return {
        "hosting_number": a.hosting_number,
        "client_reference": a.client_reference,
        "establishment": a.establishment,
        "edition": a.edition,
        "licence": {**a.licence, "options": list(a.licence.get("options", ()))},
        "manager": contact_of(a),
        "notifications": a.notifications,
        "version_change": a.version_change,
        "licence_accepted_at": a.licence_accepted_at,
        "certificates": len(a.certificate_digests),
        "plannings": [str(p) for p in a.planning_ids],
        "version": a.version,
    }


def controller_view(c: Controller) -> dict[str, Any]:
    return {"name": c.domain_label, "domain": c.domain, "port": c.port, "state": c.state, "version": c.version}


def planning_view(p: Planning) -> dict[str, Any]:
    return {
        "id": str(p.id),
        "number": p.number,
        "name": p.name,
        "publication_name": p.publication_name,
        "net_licence": p.net_licence,
        "domain": p.domain,
        "port": p.port,
        "time_zone": p.time_zone,
        "server_state": p.server_state,
        "publication_state": p.publication_state,
        "profiles": {k: list(v) for k, v in p.profiles.items()},
        "version": p.version,
    }


def user_view(u: DirectoryUser) -> dict[str, Any]:
    return {**u.public_fields(), "version": u.version}
