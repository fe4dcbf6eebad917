"""A claim on a domain name under the provider's suffix.

Domain names are unique across every tenant: the claim's id is derived from the
name, so two tenants binding the same name at once cannot both succeed.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id


def domain_claim_id(domain: str) -> UUID:
    return natural_id("domain", domain)


class DomainName(CampusAggregate):
    @staticmethod
    def create_id(domain: str) -> UUID:
        return domain_claim_id(domain)

    @event("Claimed")
    def __init__(self, domain: str, account_id: UUID, holder_id: UUID) -> None:
        self.domain = domain
        self.account_id = account_id
        self.holder_id: UUID | None = holder_id

    @event("Reclaimed")
    def reclaim(self, account_id: UUID, holder_id: UUID) -> None:
        self.account_id = account_id
        self.holder_id = holder_id

    @event("Released")
    def release(self) -> None:
        self.holder_id = None
