"""HTTP handlers of directory users' own sessions, security measure and devices."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from campus.aggregates.user import DirectoryUser, SecurityMeasure
from campus.api import schemas as s
from campus.api.handlers import _uuid, api
from campus.api.routing import Auth, Call, Reply
from campus.rules.text import VISIBLE
from campus.services.user_sessions import Access, ClientApplication, Mode

Station = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                           pattern=r"^[^\x00-\x1f\x7f]*$"), VISIBLE]


class OpenUserSession(s.OpenUserSession):
    """The login body, with what the connections list shows (hosting guide fiche 11)."""

    station: Station | None = Field(
        default=None, description='the name of the connecting station, e.g. "Poste 1" (default: the client address)')
    application: Literal["client", "web", "mobile"] = Field(
        default="client", description="what connects: the PRONOTE client, a web space, the mobile application")
    access: Literal["modification", "consultation"] | None = Field(
        default=None, description="modification takes one of the licence's seats; consultation only reads. "
        "Default: modification if the profile allows it (the login window's Consultation box unticked), "
        "else consultation")


def me_view(user: DirectoryUser) -> dict:
    return {
        "login": user.login,
        "last_name": user.last_name,
        "first_name": user.first_name,
        "status": user.status.value,
        "security_measure": user.security_measure.value if user.security_measure else None,
        "devices": [{"id": str(i), "name": d["name"], "recognised_at": d["recognised_at"]}
                    for i, d in user.devices.items()],
    }


@api.post("/v1/sessions", auth=Auth.NONE, body=OpenUserSession, status=201, tag="sessions")
def open_session(call: Call, body: OpenUserSession) -> Reply:
    """Log in to a planning in a mode with the controller's domain, login and password (Campus fiche 7)."""
    login = call.app.user_sessions.open_user_session(domain=body.domain, login=body.login, password=body.password,
                                       planning=body.planning, mode=Mode(body.mode), device=body.device,
                                       pin=body.pin, station=body.station,
                                       application=ClientApplication(body.application),
                                       access=Access(body.access) if body.access else None)
    return Reply({
        "token": login.token,
        "connection_id": str(login.session.id),
        "expires_at": login.session.expires_at,
        "planning": {"id": str(login.planning.id), "name": login.planning.name,
                     "publication_name": login.planning.publication_name},
        "mode": body.mode,
        "access": login.session.access,
        "profile": login.profile,
        "recognised_device": login.session.recognised_device,
        "security_setup_required": login.user.security_measure is None,
    }, headers={"Cache-Control": "no-store"})


@api.delete("/v1/sessions/current", auth=Auth.USER, status=204, tag="sessions")
def close_session(call: Call) -> None:
    """Log out: the token stops working at once."""
    call.app.user_sessions.close_user_session(call.user)


@api.get("/v1/me", auth=Auth.USER, tag="sessions")
def me(call: Call) -> dict:
    """Who I am, on which planning, with which profile; my security measure and recognised devices."""
    caller = call.user
    return {**me_view(caller.user), "planning": {"id": str(caller.planning.id), "name": caller.planning.name},
            "profile": caller.profile, "mode": caller.session.mode, "access": caller.session.access,
            "connection_id": str(caller.session.id)}


@api.put("/v1/me/security", auth=Auth.USER, body=s.SecurityChoice, tag="sessions")
def choose_security(call: Call, body: s.SecurityChoice) -> dict:
    """Choose the measure for unrecognised devices: none, notification, or a PIN of at least 4 digits."""
    user = call.app.user_sessions.choose_security_measure(call.user, SecurityMeasure(body.measure), body.pin,
                                            body.pin_confirmation)
    return me_view(user)


@api.post("/v1/me/devices", auth=Auth.USER, body=s.DeviceName, status=201, tag="sessions")
def recognise_device(call: Call, body: s.DeviceName) -> dict:
    """Recognise the device of this session under a name ("Bureau")."""
    device_id, user = call.app.user_sessions.recognise_device(call.user, body.name)
    return {"id": str(device_id), "name": user.devices[device_id]["name"]}


@api.delete("/v1/me/devices/{device_id}", auth=Auth.USER, status=204, tag="sessions")
def forget_device(call: Call) -> None:
    """Forget a recognised device: it will need the PIN again."""
    call.app.user_sessions.forget_device(call.user, _uuid(call.path["device_id"], "device"))
