"""Directory users connecting to a planning (Campus fiche 7, hosting guide fiche 4).

A user logs in with the controller's domain, a login and a password, to one
planning, in one mode. The profile the user holds on that planning (read
again at every request) decides what the session may do. Users protect
unrecognised devices with nothing, a notification, or a PIN; a device can be
recognised under a name and forgotten. Tokens are 256-bit random values stored
only as digests; they expire, and end at logout and when the user's password
or status changes.

Every session is also a connection (hosting guide fiche 11): its station and
application, its access (``modification`` takes one of the licence's seats,
``consultation`` takes none), its mode, user and base, listed per planning from
the day's :class:`ConnectionBoard`; an administrator disconnects one and its token
stops at once. Failed passwords and PINs are counted per client address by
:mod:`campus.services.login_guard`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.core import natural_id
from campus.aggregates.domain_name import DomainName, domain_claim_id
from campus.aggregates.planning import Planning, Profile
from campus.aggregates.session import (
    ConnectionBoard,
    UserSession,
    connection_board_id_for,
    user_session_id_for,
)
from campus.aggregates.user import DirectoryUser, SecurityMeasure, user_id_for
from campus.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from campus.infra.context import current_context, set_actor
from campus.rules.security import hash_secret, new_token, token_digest
from campus.rules.text import required_text
from campus.services.base import Service
from campus.services.login_guard import FailureKind


USER_SESSION_HOURS = 10
PIN_MIN_DIGITS = 4
# Open sessions are on today's board or yesterday's only while a session lasts less than a day.
assert USER_SESSION_HOURS < 24


class Mode(StrEnum):
    """Connection modes of the hosting guide, fiche 4."""

    ADMINISTRATIVE = "administrative"
    TEACHER = "teacher"
    SCHOOL_LIFE = "school_life"


class Access(StrEnum):
    """How a session uses the base: modification takes a licence seat (hosting guide fiche 11);
    consultation (the login window's "Consultation" box, hosting guide fiche 4) only reads."""

    MODIFICATION = "modification"
    CONSULTATION = "consultation"


class ClientApplication(StrEnum):
    """What connects: the PRONOTE client, a web space, the mobile application."""

    CLIENT = "client"
    WEB = "web"
    MOBILE = "mobile"


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
        if right == "write" and self.session.access == Access.CONSULTATION:
            raise Forbidden("this session was opened in consultation: it reads only; log in with "
                            "\"access\": \"modification\" to change anything", code="consultation_access")


@dataclass(frozen=True)
class Seats:
    """The licence's seats in modification, for the whole school (hosting guide fiche 11).

    Seats reserved for administrators (superadministrators and base
    administrators) are taken by administrators first; the others may use only
    the seats left outside the reservation.
    """

    total: int
    reserved: int
    used_by_administrators: int
    used_by_others: int

    @property
    def used(self) -> int:
        return self.used_by_administrators + self.used_by_others

    @property
    def free(self) -> int:
        """Seats anyone may take."""
        return max(0, self.total - max(self.reserved, self.used_by_administrators) - self.used_by_others)

    @property
    def free_for_administrators(self) -> int:
        return max(0, self.total - self.used)

    def view(self) -> dict:
        return {"total": self.total, "used": self.used, "reserved_for_administrators": self.reserved,
                "used_by_administrators": self.used_by_administrators, "free": self.free,
                "free_for_administrators": self.free_for_administrators}


@dataclass(frozen=True)
class Connection:
    """An open session as the connections list shows it."""

    id: UUID
    entry: dict
    user: DirectoryUser
    planning: Planning
    board: ConnectionBoard

    @property
    def state(self) -> str:
        """connected, or server_stopped (the session resumes when the server is back in service)."""
        return "connected" if self.planning.in_service else "server_stopped"


@dataclass(frozen=True)
class ConnectionList:
    planning: Planning
    connections: list[Connection]
    seats: Seats
    base_names: dict[UUID, str]


class UserSessions(Service):
    """Directory users' sessions on a planning, connections and modification seats (hosting guide fiches 4, 11)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "bases", "controllers", "login_guard", "plannings", "users")

    def open_user_session(self, *, domain: str, login: str, password: str, planning: str,
                          mode: Mode, device: str | None = None, pin: str | None = None,
                          station: str | None = None, application: ClientApplication = ClientApplication.CLIENT,
                          access: Access | None = None) -> UserLogin:
        """`access` defaults to the most the profile allows: modification (the login window's
        "Consultation" box unticked, hosting guide fiche 4), consultation for a Consultation profile."""
        account_id = self._account_for_controller_domain(domain)
        self.login_guard.refuse_if_suspended(account_id)
        refused = Unauthenticated("the login or the password is wrong", code="invalid_credentials")
        try:
            user = self.users.get_user(account_id, login)
        except NotFound:
            user = None
        # An unknown login is checked against a dummy hash: unknown and wrong look alike, and count alike.
        self.login_guard.check_secret(account_id, user.password_hash if user else None, password, FailureKind.PASSWORD, login,
                          refused)
        assert user is not None
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
            self.login_guard.check_secret(account_id, user.pin_hash, pin, FailureKind.PIN, user.login,
                              Unauthenticated("the PIN is wrong", code="invalid_pin"))
        access = self._access_for(target, profile, access)
        station = station or current_context().client_address

        def body() -> UserLogin:
            now = self.now()
            connections = self._open_connections(account_id)
            if access == Access.MODIFICATION:
                self._check_free_seat(account_id, user, station, connections)
            token = new_token()
            session = UserSession(
                token_digest=token_digest(token), account_id=account_id, user_id=user.id, login=user.login,
                planning_id=target.id, base_id=target.base_id, mode=mode.value, device_id=device_id,
                recognised_device=recognised,
                expires_at=now + timedelta(hours=USER_SESSION_HOURS),
                credentials_epoch=user.credentials_epoch,
                station=station, application=application.value, access=access.value,
            )
            board = self._board(account_id, now.date()) or ConnectionBoard(account_id=account_id, day=now.date())
            board.open_connection(session_id=session.id, connection={
                "login": user.login, "user_id": user.id, "administrator": user.is_administrative,
                "planning_id": target.id, "base_id": target.base_id, "station": station,
                "application": application.value, "access": access.value, "mode": mode.value,
                "since": now, "expires_at": session.expires_at, "credentials_epoch": user.credentials_epoch,
                "client_address": current_context().client_address,
            })
            self.save(session, board)
            return UserLogin(token, session, user, target, profile)

        return self._run(account_id, body)

    @staticmethod
    def _access_for(planning: Planning, profile: str, wanted: Access | None) -> Access:
        writes = "write" in RIGHTS[profile]
        if wanted is None:
            return Access.MODIFICATION if writes else Access.CONSULTATION
        if wanted == Access.MODIFICATION and not writes:
            raise Forbidden(f"the {profile} profile on {planning.name!r} does not allow modification; "
                            "log in with \"access\": \"consultation\"", code="profile_insufficient")
        return wanted

    def _board(self, account_id: UUID, day: date) -> ConnectionBoard | None:
        try:
            board = self.repository.get(connection_board_id_for(account_id, day))
        except AggregateNotFoundError:
            return None
        return board if isinstance(board, ConnectionBoard) and board.account_id == account_id else None

    def _open_connections(self, account_id: UUID) -> list[Connection]:
        """The school's sessions still usable now: not ended, not expired, not revoked by a password
        or status change, on the base their planning still has (today's and yesterday's boards)."""
        now = self.now()
        users: dict[UUID, DirectoryUser | None] = {}
        plannings: dict[UUID, Planning | None] = {}
        found: list[Connection] = []
        for day in (now.date() - timedelta(days=1), now.date()):
            board = self._board(account_id, day)
            for session_id, entry in (board.connections.items() if board else ()):
                if entry["ended"] or entry["expires_at"] <= now:
                    continue
                if entry["user_id"] not in users:
                    users[entry["user_id"]] = self._maybe(DirectoryUser, entry["user_id"], account_id)
                if entry["planning_id"] not in plannings:
                    plannings[entry["planning_id"]] = self._maybe(Planning, entry["planning_id"], account_id)
                user, planning = users[entry["user_id"]], plannings[entry["planning_id"]]
                if user is None or planning is None or user.credentials_epoch != entry["credentials_epoch"]:
                    continue
                if planning.base_id != entry["base_id"]:
                    continue
                found.append(Connection(session_id, entry, user, planning, board))
        return found

    def _maybe(self, cls: type, aggregate_id: UUID, account_id: UUID):  # noqa: ANN202
        try:
            return self._get(cls, aggregate_id, account_id, cls.__name__)
        except NotFound:
            return None

    def _seats(self, account_id: UUID, connections: list[Connection]) -> Seats:
        account = self.accounts.get_account(account_id)
        total = int(account.licence.get("modification_seats", 0))
        # One seat per user and station: logging in again from the same station takes no second seat.
        held = {(c.entry["user_id"], c.entry["station"]): c.entry["administrator"]
                for c in connections if c.entry["access"] == Access.MODIFICATION}
        admins = sum(1 for administrator in held.values() if administrator)
        return Seats(total=total, reserved=min(account.administrator_seats, total),
                     used_by_administrators=admins, used_by_others=len(held) - admins)

    def _check_free_seat(self, account_id: UUID, user: DirectoryUser, station: str | None,
                         connections: list[Connection]) -> None:
        """409 when no seat in modification is left for this user; consultation is always possible."""
        if any(c.entry["access"] == Access.MODIFICATION and c.entry["user_id"] == user.id
               and c.entry["station"] == station for c in connections):
            return  # the user already holds a seat at this station
        seats = self._seats(account_id, connections)
        if (seats.free_for_administrators if user.is_administrative else seats.free) > 0:
            return
        if user.is_administrative or seats.reserved == 0 or seats.used >= seats.total:
            detail = f"all {seats.total} modification seats of the licence are in use"
        else:
            detail = (f"no modification seat is free for {user.login!r}: {seats.used} of the licence's "
                      f"{seats.total} are in use and {seats.reserved} are reserved for administrators")
        raise Conflict(detail + "; log in with \"access\": \"consultation\", or ask an administrator to "
                       "disconnect a connection in modification", code="no_free_seat")

    def seats(self, account_id: UUID) -> Seats:
        with self._reading(account_id):
            return self._seats(account_id, self._open_connections(account_id))

    def reserve_administrator_seats(self, account_id: UUID, seats: int) -> Seats:
        """Keep `seats` of the licence's seats in modification for administrators (0 to release)."""
        def body() -> Seats:
            account = self.accounts.get_account(account_id)
            total = int(account.licence.get("modification_seats", 0))
            if not 0 <= seats <= total:
                raise Invalid.field("reserved_for_administrators",
                                    f"must be between 0 and the licence's {total} seats in modification")
            if seats != account.administrator_seats:
                account.reserve_administrator_seats(seats=seats)
                self.save(account)
            return self._seats(account_id, self._open_connections(account_id))

        return self._run(account_id, body)

    def list_connections(self, account_id: UUID, planning_id: UUID) -> ConnectionList:
        """The planning's open connections, oldest first, with the school's seats."""
        planning = self.plannings.get_planning(account_id, planning_id)
        with self._reading(account_id):
            every = self._open_connections(account_id)
            here = sorted((c for c in every if c.entry["planning_id"] == planning.id), key=lambda c: c.entry["since"])
            names: dict[UUID, str] = {}
            for base_id in {c.entry["base_id"] for c in here if c.entry["base_id"] is not None}:
                names[base_id] = self.bases.get_base(account_id, base_id).name
            return ConnectionList(planning, here, self._seats(account_id, every), names)

    def disconnect(self, account_id: UUID, planning_id: UUID, connection_id: UUID) -> None:
        """End another session at once (an event): its token gets 401 from its next request."""
        def body() -> None:
            planning = self.plannings.get_planning(account_id, planning_id)
            found = [c for c in self._open_connections(account_id)
                     if c.id == connection_id and c.entry["planning_id"] == planning.id]
            if not found:
                raise NotFound(f"no open connection {connection_id} on {planning.name!r}")
            session: UserSession = self.repository.get(connection_id)
            session.disconnect(by=current_context().actor)
            board = found[0].board
            board.end_connection(session_id=connection_id, reason="disconnected")
            self.save(session, board)

        self._run(account_id, body)

    def _account_for_controller_domain(self, domain: str) -> UUID:
        label = domain.strip().lower()
        if "." not in label:
            label = f"{label}.{self.settings.domain_suffix}"
        try:
            claim = self.repository.get(domain_claim_id(label))
        except AggregateNotFoundError:
            claim = None
        if not isinstance(claim, DomainName) or claim.holder_id is None:
            raise NotFound(f"no controller answers at {domain!r}")
        controller = self.controllers.get_controller(claim.account_id)
        if controller.id != claim.holder_id:
            raise NotFound(f"no controller answers at {domain!r} (it is a planning's domain)")
        if controller.state != "active":
            raise Conflict("the controller is not active yet (Campus fiche 5)", code="controller_stopped")
        return claim.account_id

    def _find_planning(self, account_id: UUID, wanted: str) -> Planning:
        """By id, else by name, else by publication name (names ignore case)."""
        plannings = self.plannings.list_plannings(account_id)
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

    def authenticate_user(self, token: str, *, serving: bool = True) -> UserCaller:
        """The caller behind a user token. With `serving`, the planning's server must be in
        service on the session's base (records); administration works on a stopped server."""
        invalid = Unauthenticated("the token is invalid, has expired or was revoked; log in again",
                                  code="invalid_token")
        try:
            session = self.repository.get(user_session_id_for(token_digest(token)))
        except AggregateNotFoundError:
            raise invalid from None
        if isinstance(session, UserSession) and session.disconnected_by:
            raise Unauthenticated("this connection was ended by an administrator; log in again",
                                  code="disconnected")
        if not isinstance(session, UserSession) or session.closed or session.expires_at <= self.now():
            raise invalid
        user = self._get(DirectoryUser, session.user_id, session.account_id, "user")
        if user.credentials_epoch != session.credentials_epoch:
            raise invalid
        planning = self.plannings.get_planning(session.account_id, session.planning_id)
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

    def close_user_session(self, caller: UserCaller) -> None:
        def body() -> None:
            session = self.repository.get(caller.session.id)
            if not session.closed:
                session.close()
                board = self._board(session.account_id, session.created_on.date())
                if board is not None and session.id in board.connections:
                    board.end_connection(session_id=session.id, reason="logout")
                    self.save(session, board)
                else:  # a session opened before connections were tracked
                    self.save(session)

        self._run(caller.session.account_id, body)

    def choose_security_measure(self, caller: UserCaller, measure: SecurityMeasure,
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

    def recognise_device(self, caller: UserCaller, name: str) -> tuple[UUID, DirectoryUser]:
        name = required_text("name", name, 60)
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

    def forget_device(self, caller: UserCaller, device_id: UUID) -> DirectoryUser:
        def body() -> DirectoryUser:
            user = self.repository.get(caller.user.id)
            if device_id not in user.devices:
                raise NotFound("no recognised device with this id")
            user.forget_device(device_id=device_id)
            self.save(user)
            return user

        return self._run(caller.session.account_id, body)


__all__ = ["Access", "ClientApplication", "Connection", "ConnectionList", "Mode", "Seats", "UserCaller", "UserLogin", "UserSessions", "device_id_for", "user_id_for"]
