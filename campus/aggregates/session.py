"""A hosting manager's console session.

The bearer token itself is never stored: the session's id is derived from the
token's SHA-256 digest, so presenting the token finds the session and nothing
stored can be turned back into a token.
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id


def console_session_id_for(token_digest: str) -> UUID:
    return natural_id("console-session", token_digest)


class ConsoleSession(CampusAggregate):
    @staticmethod
    def create_id(token_digest: str) -> UUID:
        return console_session_id_for(token_digest)

    @event("Opened")
    def __init__(
        self,
        token_digest: str,
        account_id: UUID,
        expires_at: datetime,
        password_epoch: int,
        new_certificate: bool,
    ) -> None:
        self.account_id = account_id
        self.expires_at = expires_at
        self.password_epoch = password_epoch
        self.closed = False

    @event("Closed")
    def close(self) -> None:
        self.closed = True


def user_session_id_for(token_digest: str) -> UUID:
    return natural_id("user-session", token_digest)


class UserSession(CampusAggregate):
    """A directory user's connection to one planning, in one mode (Campus fiche 7).

    Hosting guide fiche 11 lists it as a connection: station, application,
    access (modification takes a licence seat, consultation does not), mode,
    user, base. An administrator may disconnect it: the token stops at once.
    """

    @staticmethod
    def create_id(token_digest: str) -> UUID:
        return user_session_id_for(token_digest)

    @event("Opened")
    def __init__(
        self,
        token_digest: str,
        account_id: UUID,
        user_id: UUID,
        login: str,
        planning_id: UUID,
        base_id: UUID | None,
        mode: str,
        device_id: UUID | None,
        recognised_device: bool,
        expires_at: datetime,
        credentials_epoch: int,
        station: str | None = None,
        application: str = "client",
        access: str = "modification",
    ) -> None:
        self.account_id = account_id
        self.user_id = user_id
        self.station = station
        self.application = application
        self.access = access
        self.disconnected_by: str | None = None
        self.login = login
        self.planning_id = planning_id
        self.base_id = base_id
        self.mode = mode
        self.device_id = device_id
        self.recognised_device = recognised_device
        self.expires_at = expires_at
        self.credentials_epoch = credentials_epoch
        self.closed = False

    @event("Closed")
    def close(self) -> None:
        self.closed = True

    @event("Disconnected")
    def disconnect(self, by: str) -> None:
        """Ended by an administrator (hosting guide fiche 11), not by its user."""
        self.closed = True
        self.disconnected_by = by


def connection_board_id_for(account_id: UUID, day: date) -> UUID:
    return natural_id("connection-board", account_id, day.isoformat())


class ConnectionBoard(CampusAggregate):
    """The directory-user sessions of one school opened on one day (UTC): the index of its live
    connections and of the licence seats they hold.

    A session lasts less than a day, so the open ones are on today's board or
    yesterday's: listing them, or counting the seats in modification, reads two
    small aggregates instead of every session ever opened. Every login of the
    school appends to today's board, so two logins in two processes conflict on
    its version and the loser is re-run, seeing the seat the winner took.
    The truth about one session stays its UserSession (the token is checked there).
    """

    @staticmethod
    def create_id(account_id: UUID, day: date) -> UUID:
        return connection_board_id_for(account_id, day)

    @event("Started")
    def __init__(self, account_id: UUID, day: date) -> None:
        self.account_id = account_id
        self.day = day
        self.connections: dict[UUID, dict] = {}

    @event("ConnectionOpened")
    def open_connection(self, session_id: UUID, connection: dict) -> None:
        """`connection`: login, user_id, administrator, planning_id, base_id, station, application,
        access, mode, since, expires_at, credentials_epoch, client_address."""
        self.connections[session_id] = {**connection, "ended": None}

    @event("ConnectionEnded")
    def end_connection(self, session_id: UUID, reason: str) -> None:
        """`reason`: logout or disconnected."""
        if session_id in self.connections:
            self.connections[session_id] = {**self.connections[session_id], "ended": reason}
