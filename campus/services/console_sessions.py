"""The hosting manager's console sessions (Campus fiche 2, hosting guide fiche 1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.account import HostingAccount, account_id_for
from campus.aggregates.session import ConsoleSession, console_session_id_for
from campus.errors import NotFound, Unauthenticated
from campus.infra.context import set_actor
from campus.rules.security import new_token, token_digest, verify_secret
from campus.services.base import Service
from campus.services.login_guard import FailureKind




@dataclass(frozen=True)
class ConsoleLogin:
    token: str
    certificate: str | None
    session: ConsoleSession


class ConsoleSessions(Service):
    """The hosting manager's console sessions (Campus fiche 2, hosting guide fiche 1)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "login_guard")

    def open_console_session(
        self, hosting_number: str, password: str, invoice_number: str | None, certificate: str | None
    ) -> ConsoleLogin:
        # An unknown number is guarded under the id its account would have: it answers like a wrong password.
        tenant = account_id_for(hosting_number)
        self.login_guard.refuse_if_suspended(tenant, console=True)  # also: too many failed console logins from here
        try:
            account = self.accounts.account_by_number(hosting_number)
        except NotFound:
            account = None
        # The same check either way: an unknown number verifies against a fixed dummy argon2 hash
        # (verify_secret(None, …)), so the time of the answer does not tell whether the number exists.
        self.login_guard.check_secret(tenant, account.console_password_hash if account else None, password,
                          FailureKind.CONSOLE_PASSWORD, hosting_number, Unauthenticated(
                              "the hosting number or the console password is wrong", code="invalid_credentials"))
        assert account is not None  # (an unknown number never passes the check)
        # The invoice number is checked before the command: a failure is counted, whatever the command does.
        certified = bool(certificate) and token_digest(certificate) in account.certificate_digests
        if not certified and invoice_number:
            self.login_guard.check_secret(tenant, account.invoice_number_hash, invoice_number, FailureKind.INVOICE_NUMBER,
                              hosting_number, Unauthenticated("the invoice number is wrong",
                                                              code="invalid_invoice_number"))
        set_actor(f"manager:{account.hosting_number}")

        def body() -> ConsoleLogin:
            current: HostingAccount = self.repository.get(account.id)
            issued: str | None = None
            if certificate and token_digest(certificate) in current.certificate_digests:
                pass
            elif invoice_number:
                if certified and not verify_secret(current.invoice_number_hash, invoice_number):
                    # (its certificate was removed meanwhile, so the invoice number was not checked above)
                    raise Unauthenticated("the invoice number is wrong", code="invalid_invoice_number")
                issued = new_token()
                current.install_certificate(certificate_digest=token_digest(issued), installed_at=self.now())
            else:
                raise Unauthenticated(
                    "first login from this machine: send invoice_number (10 digits, from your invoice) "
                    "to install a certificate, or present a certificate installed earlier",
                    code="certificate_required",
                )
            token = new_token()
            session = ConsoleSession(
                token_digest=token_digest(token),
                account_id=current.id,
                expires_at=self.now() + timedelta(hours=self.settings.console_session_hours),
                password_epoch=current.password_epoch,
                new_certificate=issued is not None,
            )
            self.save(current, session)
            return ConsoleLogin(token, issued, session)

        return self._run(account.id, body)

    def authenticate_console(self, token: str) -> HostingAccount:
        invalid = Unauthenticated("the console token is invalid or has expired; open a new session", code="invalid_token")
        try:
            session = self.repository.get(console_session_id_for(token_digest(token)))
        except AggregateNotFoundError:
            raise invalid from None
        if not isinstance(session, ConsoleSession) or session.closed or session.expires_at <= self.now():
            raise invalid
        account: HostingAccount = self.repository.get(session.account_id)
        if account.password_epoch != session.password_epoch:
            raise invalid
        return account

    def close_console_session(self, token: str) -> None:
        account = self.authenticate_console(token)

        def body() -> None:
            session = self.repository.get(console_session_id_for(token_digest(token)))
            session.close()
            self.save(session)

        self._run(account.id, body)
