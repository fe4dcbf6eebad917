"""Hosting accounts: opened by the operator, read by their manager (hosting guide fiche 1)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.account import HostingAccount, account_id_for, default_licence
from campus.aggregates.controller import Controller
from campus.aggregates.planning import DEFAULT_TIME_ZONE, Planning
from campus.errors import Conflict, NotFound
from campus.rules.security import generate_password, hash_secret, random_digits
from campus.services.base import Service


@dataclass(frozen=True)
class OpenedAccount:
    account: HostingAccount
    console_password: str
    invoice_number: str


class Accounts(Service):
    """Hosting accounts: opened by the operator, read by their manager (hosting guide fiche 1)."""


    def check_operator_token(self, token: str) -> bool:
        expected = self.settings.operator_token
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())

    def open_account(self, establishment: str, manager_name: str, manager_email: str,
                     edition: str = "campus") -> OpenedAccount:
        for _ in range(10):
            hosting_number = random_digits(12)
            account_id = account_id_for(hosting_number)
            if account_id not in self.repository:
                break
        else:  # pragma: no cover - 10 collisions in 10^12 numbers
            raise Conflict("could not allocate a hosting number; retry")

        def body() -> OpenedAccount:
            password, invoice = generate_password(14), random_digits(10)
            controller = Controller(account_id=account_id)
            plannings = [
                Planning(account_id=account_id, number=n, name=f"planning0{n}", time_zone=DEFAULT_TIME_ZONE)
                for n in (1, 2)
            ]
            account = HostingAccount(
                hosting_number=hosting_number,
                account_id=account_id,
                establishment=establishment,
                manager={"name": manager_name, "email": manager_email},
                console_password_hash=hash_secret(password),
                invoice_number_hash=hash_secret(invoice),
                licence=default_licence(self.now().date()),
                planning_ids=tuple(p.id for p in plannings),
                controller_id=controller.id,
                edition=edition,
            )
            self.save(account, controller, *plannings)
            return OpenedAccount(account, password, invoice)

        return self._run(account_id, body)

    def account_by_number(self, hosting_number: str) -> HostingAccount:
        try:
            account = self.repository.get(account_id_for(hosting_number))
        except AggregateNotFoundError:
            raise NotFound("hosting account not found") from None
        assert isinstance(account, HostingAccount)
        return account

    def reset_console_password(self, hosting_number: str) -> tuple[HostingAccount, str]:
        account = self.account_by_number(hosting_number)

        def body() -> tuple[HostingAccount, str]:
            current = self.repository.get(account.id)
            password = generate_password(14)
            current.reset_console_password(console_password_hash=hash_secret(password))
            self.save(current)
            return current, password

        return self._run(account.id, body)

    def get_account(self, account_id: UUID) -> HostingAccount:
        return self._get(HostingAccount, account_id, account_id, "hosting account")

    def accept_licence_agreement(self, account_id: UUID) -> HostingAccount:
        def body() -> HostingAccount:
            account: HostingAccount = self.repository.get(account_id)
            if not account.licence_accepted:
                account.accept_licence_agreement(accepted_at=self.now())
                self.save(account)
            return account

        return self._run(account_id, body)
