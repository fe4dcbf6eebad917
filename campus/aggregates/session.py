"""A hosting manager's console session.

The bearer token itself is never stored: the session's id is derived from the
token's SHA-256 digest, so presenting the token finds the session and nothing
stored can be turned back into a token.
"""

from __future__ import annotations

from datetime import datetime
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
    """A directory user's connection to one planning, in one mode (Campus fiche 7)."""

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
    ) -> None:
        self.account_id = account_id
        self.user_id = user_id
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
