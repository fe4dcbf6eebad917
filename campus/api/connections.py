"""HTTP handlers of live connections and licence seats (hosting guide fiche 11)."""

from __future__ import annotations

from pydantic import Field

from campus.api import schemas as s
from campus.api.handlers import _uuid, api
from campus.api.routing import Auth, Call
from campus.services.user_sessions import Access, Connection, ConnectionList, Mode


class SeatReservation(s.Strict):
    reserved_for_administrators: int = Field(
        ge=0, strict=True, description="seats in modification kept for superadministrators and base administrators")


def connection_view(c: Connection, base_names: dict) -> dict:
    e = c.entry
    return {
        "id": str(c.id),
        "station": e["station"],
        "application": e["application"],
        "state": c.state,
        "access": e["access"],
        "mode": e["mode"],
        "user": {"login": c.user.login, "last_name": c.user.last_name, "first_name": c.user.first_name},
        "base": {"id": str(e["base_id"]), "name": base_names.get(e["base_id"])} if e["base_id"] else None,
        "since": e["since"],
        "expires_at": e["expires_at"],
        "client_address": e["client_address"],
    }


def connections_view(listing: ConnectionList) -> dict:
    here = listing.connections
    return {
        "planning": {"id": str(listing.planning.id), "name": listing.planning.name},
        "connections": [connection_view(c, listing.base_names) for c in here],
        "counts": {
            "access": {a.value: sum(1 for c in here if c.entry["access"] == a) for a in Access},
            "modes": {m.value: sum(1 for c in here if c.entry["mode"] == m) for m in Mode},
        },
        "seats": listing.seats.view(),
    }


@api.get("/v1/console/plannings/{planning_id}/connections", auth=Auth.CONSOLE_OR_ADMIN, tag="connections")
def list_connections(call: Call) -> dict:
    """The planning's open connections (station, application, state, access, mode, user, base, since),
    counts per access and mode, and the licence's seats in modification."""
    planning_id = _uuid(call.path["planning_id"], "planning")
    return connections_view(call.app.user_sessions.list_connections(call.account_id, planning_id))


@api.delete("/v1/console/plannings/{planning_id}/connections/{connection_id}", auth=Auth.CONSOLE_OR_ADMIN,
            status=204, tag="connections")
def disconnect(call: Call) -> None:
    """Disconnect a client: its token gets 401 from its next request, and its seat is free."""
    call.app.user_sessions.disconnect(call.account_id, _uuid(call.path["planning_id"], "planning"),
                        _uuid(call.path["connection_id"], "connection"))


@api.get("/v1/console/licence/seats", auth=Auth.CONSOLE_OR_ADMIN, tag="connections")
def seats(call: Call) -> dict:
    """The licence's seats in modification: total, used, reserved for administrators, free."""
    return call.app.user_sessions.seats(call.account_id).view()


@api.put("/v1/console/licence/seats", auth=Auth.CONSOLE_OR_ADMIN, body=SeatReservation, tag="connections")
def reserve_seats(call: Call, body: SeatReservation) -> dict:
    """Reserve seats in modification for administrators, so they can always log in (0 to release)."""
    return call.app.user_sessions.reserve_administrator_seats(call.account_id, body.reserved_for_administrators).view()
