"""Directory users connecting to a planning (Campus fiche 7, hosting guide fiche 4).

A user logs in with the controller's domain, a login and a password, to one
planning, in one mode. The profile the user holds on that planning (read
again at every request) decides what the session may do. Users protect
unrecognised devices with nothing, a notification, or a PIN; a device can be
recognised under a name and forgotten. Tokens are 256-bit random values stored
only as digests; they expire, and end at logout and when the user's password
or status changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.core import natural_id
from campus.aggregates.domain_name import DomainName, domain_claim_id
from campus.aggregates.planning import Planning, Profile
from campus.aggregates.session import UserSession, user_session_id_for
from campus.aggregates.user import DirectoryUser, SecurityMeasure, user_id_for
from campus.context import set_actor
from campus.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from campus.security import hash_secret, new_token, token_digest, verify_secret

if TYPE_CHECKING:
    from campus.application import CampusApplication

USER_SESSION_HOURS = 10
PIN_MIN_DIGITS = 4


class Mode(StrEnum):
    """Connection modes of the hosting guide, fiche 4."""

    ADMINISTRATIVE = "administrative"
    TEACHER = "teacher"
    SCHOOL_LIFE = "school_life"


RIGHTS = {
    Profile.CONSULTATION.value: {"read"},
    Profile.MODIFICATION.value: {"read", "write"},
    Profile.ADMINISTRATION.value: {"read", "write", "administer"},
}


def device_id_for(device: str) -> UUID:
    """The public id of a device: derived from its secret identifier, not reversible."""
    return natural_id("device", token_digest(device))


@dataclass(frozen=True)
class UserLogin:
    token: str
    session: UserSession
    user: DirectoryUser
    planning: Planning
    profile: str


@dataclass(frozen=True)
class UserCaller:
    """Who is behind a user token, as of this request."""

    session: UserSession
    user: DirectoryUser
    planning: Planning
    profile: str

    def require(self, right: str) -> None:
        if right not in RIGHTS[self.profile]:
            needed = {"write": "modification or administration", "administer": "administration"}[right]
            raise Forbidden(f"the {self.profile} profile on {self.planning.name!r} does not allow this; "
                            f"it needs the {needed} profile", code="profile_insufficient")


class UserSessionUseCases:
    """Mixed into CampusApplication."""

    def open_user_session(self: CampusApplication, *, domain: str, login: str, password: str, planning: str,
                          mode: Mode, device: str | None = None, pin: str | None = None) -> UserLogin:
        account_id = self._account_for_controller_domain(domain)
        refused = Unauthenticated("the login or the password is wrong", code="invalid_credentials")
        try:
            user = self.get_user(account_id, login)
        except NotFound:
            verify_secret(None, password)
            raise refused from None
        if not verify_secret(user.password_hash, password):
            raise refused
        set_actor(f"user:{user.login}")
        target = self._find_planning(account_id, planning)
        if not target.in_service:
            raise Conflict(f"the server of {target.name!r} is not in service", code="server_stopped")
        profile = target.profile_of(user.login)
        if profile is None:
            raise Forbidden(f"{user.login!r} has no profile on {target.name!r}", code="no_profile")
        device_id = device_id_for(device) if device else None
        recognised = device_id is not None and device_id in user.devices
        if user.security_measure == SecurityMeasure.PIN and not recognised:
            if not pin:
                raise Unauthenticated("this device is not recognised: send your PIN", code="pin_required")
            if not verify_secret(user.pin_hash, pin):
                raise Unauthenticated("the PIN is wrong", code="invalid_pin")

        def body() -> UserLogin:
            token = new_token()
            session = UserSession(
                token_digest=token_digest(token), account_id=account_id, user_id=user.id, login=user.login,
                planning_id=target.id, base_id=target.base_id, mode=mode.value, device_id=device_id,
                recognised_device=recognised,
                expires_at=self.now() + timedelta(hours=USER_SESSION_HOURS),
                credentials_epoch=user.credentials_epoch,
            )
            self.save(session)
            return UserLogin(token, session, user, target, profile)

        return self._run(account_id, body)

    def _account_for_controller_domain(self: CampusApplication, domain: str) -> UUID:
        label = domain.strip().lower()
        if "." not in label:
            label = f"{label}.{self.settings.domain_suffix}"
        try:
            claim = self.repository.get(domain_claim_id(label))
        except AggregateNotFoundError:
            claim = None
        if not isinstance(claim, DomainName) or claim.holder_id is None:
            raise NotFound(f"no controller answers at {domain!r}")
        controller = self.get_controller(claim.account_id)
        if controller.id != claim.holder_id:
            raise NotFound(f"no controller answers at {domain!r} (it is a planning's domain)")
        if controller.state != "active":
            raise Conflict("the controller is not active yet (Campus fiche 5)", code="controller_stopped")
        return claim.account_id

    def _find_planning(self: CampusApplication, account_id: UUID, wanted: str) -> Planning:
        """By id, else by name, else by publication name (names ignore case)."""
        plannings = self.list_plannings(account_id)
        key = wanted.strip().casefold()
        for match in (lambda p: str(p.id) == wanted.strip(), lambda p: p.name.casefold() == key,
                      lambda p: p.publication_name.casefold() == key):
            found = [p for p in plannings if match(p)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise Conflict(f"{wanted!r} names several plannings: use the planning's id", code="ambiguous_planning")
        names = ", ".join(repr(p.name) for p in plannings)
        raise NotFound(f"no planning {wanted!r}: the plannings are {names}")

    def authenticate_user(self: CampusApplication, token: str, *, serving: bool = True) -> UserCaller:
        """The caller behind a user token. With `serving`, the planning's server must be in
        service on the session's base (records); administration works on a stopped server."""
        invalid = Unauthenticated("the token is invalid, has expired or was revoked; log in again",
                                  code="invalid_token")
        try:
            session = self.repository.get(user_session_id_for(token_digest(token)))
        except AggregateNotFoundError:
            raise invalid from None
        if not isinstance(session, UserSession) or session.closed or session.expires_at <= self.now():
            raise invalid
        user = self._get(DirectoryUser, session.user_id, session.account_id, "user")
        if user.credentials_epoch != session.credentials_epoch:
            raise invalid
        planning = self.get_planning(session.account_id, session.planning_id)
        if serving and not planning.in_service:
            raise Conflict(f"the server of {planning.name!r} was stopped; log in again once it is back in service",
                           code="server_stopped")
        if serving and planning.base_id != session.base_id:
            raise Unauthenticated(f"the base of {planning.name!r} was changed since this session began; log in again",
                                  code="base_changed")
        profile = planning.profile_of(user.login)
        if profile is None:
            raise Forbidden(f"{user.login!r} no longer holds a profile on {planning.name!r}", code="no_profile")
        set_actor(f"user:{user.login}")
        return UserCaller(session, user, planning, profile)

    def close_user_session(self: CampusApplication, caller: UserCaller) -> None:
        def body() -> None:
            session = self.repository.get(caller.session.id)
            if not session.closed:
                session.close()
                self.save(session)

        self._run(caller.session.account_id, body)

    def choose_security_measure(self: CampusApplication, caller: UserCaller, measure: SecurityMeasure,
                                pin: str | None, pin_confirmation: str | None) -> DirectoryUser:
        pin_hash = None
        if measure == SecurityMeasure.PIN:
            errors = []
            if not pin or not pin.isdigit() or len(pin) < PIN_MIN_DIGITS or not pin.isascii():
                errors.append({"field": "pin", "message": f"the PIN must contain at least {PIN_MIN_DIGITS} digits, "
                                                          "and digits only"})
            if pin != pin_confirmation:
                errors.append({"field": "pin_confirmation", "message": "does not match the PIN"})
            if errors:
                raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
            pin_hash = hash_secret(pin)
        elif pin is not None:
            raise Invalid.field("pin", f"a PIN goes only with the measure 'pin', not {measure.value!r}")

        def body() -> DirectoryUser:
            user = self.repository.get(caller.user.id)
            user.choose_security_measure(measure=measure, pin_hash=pin_hash)
            self.save(user)
            return user

        return self._run(caller.session.account_id, body)

    def recognise_device(self: CampusApplication, caller: UserCaller, name: str) -> tuple[UUID, DirectoryUser]:
        from campus.application import _required_text

        name = _required_text("name", name, 60)
        device_id = caller.session.device_id
        if device_id is None:
            raise Conflict("this session did not name a device: log in with \"device\" to recognise it",
                           code="no_device")

        def body() -> tuple[UUID, DirectoryUser]:
            user = self.repository.get(caller.user.id)
            user.recognise_device(device_id=device_id, name=name, recognised_at=self.now())
            self.save(user)
            return device_id, user

        return self._run(caller.session.account_id, body)

    def forget_device(self: CampusApplication, caller: UserCaller, device_id: UUID) -> DirectoryUser:
        def body() -> DirectoryUser:
            user = self.repository.get(caller.user.id)
            if device_id not in user.devices:
                raise NotFound("no recognised device with this id")
            user.forget_device(device_id=device_id)
            self.save(user)
            return user

        return self._run(caller.session.account_id, body)


__all__ = ["Mode", "UserCaller", "UserLogin", "UserSessionUseCases", "device_id_for", "user_id_for"]
