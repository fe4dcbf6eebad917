"""The controller of each school and the domain names of the deployment (Campus fiches 3 and 5)."""

from __future__ import annotations

import re
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.controller import CONTROLLER_PORT, Controller
from campus.aggregates.domain_name import DomainName, domain_claim_id
from campus.errors import Conflict, Invalid
from campus.services.base import Service



DOMAIN_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class Controllers(Service):
    """The controller of each school and the domain names of the deployment (Campus fiches 3 and 5)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "users")

    def domain(self, field: str, label: str) -> tuple[str, str]:
        label = label.strip().lower()
        suffix = "." + self.settings.domain_suffix
        if label.endswith(suffix):
            label = label[: -len(suffix)]
        if not DOMAIN_LABEL.match(label):
            raise Invalid.field(
                field,
                "a domain name is 1 to 63 characters among a-z, 0-9 and '-', "
                "not starting or ending with '-'",
            )
        return label, f"{label}.{self.settings.domain_suffix}"

    def claim_domain(self, domain: str, account_id: UUID, holder_id: UUID, previous: str | None) -> list[DomainName]:
        changed: list[DomainName] = []
        try:
            claim: DomainName = self.repository.get(domain_claim_id(domain))
        except AggregateNotFoundError:
            changed.append(DomainName(domain=domain, account_id=account_id, holder_id=holder_id))
        else:
            if claim.holder_id is not None and claim.holder_id != holder_id:
                raise Conflict(f"the domain name {domain} is already in use; choose another one")
            claim.reclaim(account_id=account_id, holder_id=holder_id)
            changed.append(claim)
        if previous and previous != domain:
            old: DomainName = self.repository.get(domain_claim_id(previous))
            old.release()
            changed.append(old)
        return changed

    def get_controller(self, account_id: UUID) -> Controller:
        account = self.accounts.get_account(account_id)
        return self._get(Controller, account.controller_id, account_id, "controller")

    def bind_controller_domain(self, account_id: UUID, name: str, if_match: str | None = None) -> Controller:
        label, domain = self.domain("name", name)

        def body() -> Controller:
            controller = self.get_controller(account_id)
            self._check_version(controller, if_match)
            if controller.domain == domain:
                return controller
            claims = self.claim_domain(domain, account_id, controller.id, controller.domain)
            controller.bind_domain(label=label, domain=domain, port=CONTROLLER_PORT)
            self.save(controller, *claims)
            return controller

        return self._run(account_id, body)

    def activate_controller(self, account_id: UUID) -> Controller:
        def body() -> Controller:
            controller = self.get_controller(account_id)
            if controller.state == "active":
                return controller
            if controller.domain is None:
                raise Conflict(
                    "the controller needs a domain name before it can be activated "
                    "(PUT /v1/console/controller/domain)", code="domain_required")
            if not self.users.has_superadministrator(account_id):
                raise Conflict(
                    "the controller needs a superadministrator before it can be activated "
                    "(POST /v1/console/superadministrator)", code="superadministrator_required")
            controller.activate()
            self.save(controller)
            return controller

        return self._run(account_id, body)

    def deactivate_controller(self, account_id: UUID) -> Controller:
        def body() -> Controller:
            controller = self.get_controller(account_id)
            if controller.state != "stopped":
                controller.deactivate()
                self.save(controller)
            return controller

        return self._run(account_id, body)
