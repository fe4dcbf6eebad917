"""The Campus controller (Campus fiches 3 and 5)."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id

CONTROLLER_PORT = 21200


def controller_id_for(account_id: UUID) -> UUID:
    return natural_id("controller", account_id)


class Controller(CampusAggregate):
    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return controller_id_for(account_id)

    @event("Created")
    def __init__(self, account_id: UUID) -> None:
        self.account_id = account_id
        self.domain_label: str | None = None
        self.domain: str | None = None
        self.port: int | None = None
        self.state = "stopped"

    @event("DomainBound")
    def bind_domain(self, label: str, domain: str, port: int) -> None:
        self.domain_label = label
        self.domain = domain
        self.port = port

    @event("Activated")
    def activate(self) -> None:
        self.state = "active"

    @event("Deactivated")
    def deactivate(self) -> None:
        self.state = "stopped"
