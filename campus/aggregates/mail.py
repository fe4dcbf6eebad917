"""Mail (Campus fiches 10 and 11): the accounts mail is sent from, the letter
template of the connection details, and the outbox.

* :class:`MailAccount` — a personal or establishment account, secured by a
  secret question whose answer is kept as an argon2id hash, verified by a
  6-digit code e-mailed to its address (the code kept as a hash too).
* :class:`LetterTemplate` — the school's editable "Connexion des personnels"
  letter (title and body with placeholders).
* :class:`MailMessage` — one message of the outbox: ``Queued`` → ``Sent``, or
  ``Failed`` (retried with backoff) and finally ``Abandoned``. Its content is
  stored sealed (encrypted with a key of its own kept outside the event log and
  destroyed once the message is sent or abandoned: see docs/MAIL.md); the
  subject and recipient are plain and never hold a secret.

Decorated ``@event`` methods only assign state.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from campus.aggregates.core import CampusAggregate, natural_id

ACCOUNT_KINDS = ("personal", "establishment")
CONNECTION_LETTER = "connexion-des-personnels"
MESSAGE_STATES = ("queued", "failed", "sent", "abandoned")


def mail_account_id_for(account_id: UUID, address: str) -> UUID:
    """One mail account per address in a school: a second one is a version-1 conflict."""
    return natural_id("mail-account", account_id, address.strip().casefold())


def letter_template_id_for(account_id: UUID, slug: str) -> UUID:
    return natural_id("letter-template", account_id, slug)


class MailAccount(CampusAggregate):
    @staticmethod
    def create_id(account_id: UUID, address: str) -> UUID:
        return mail_account_id_for(account_id, address)

    @event("Created")
    def __init__(self, account_id: UUID, kind: str, name: str, address: str, owner_login: str | None,
                 secret_question: str, secret_answer_hash: str) -> None:
        self.account_id = account_id
        self._open(kind, name, address, owner_login, secret_question, secret_answer_hash)

    def _open(self, kind: str, name: str, address: str, owner_login: str | None, secret_question: str,
              secret_answer_hash: str) -> None:
        self.kind = kind
        self.name = name
        self.address = address
        self.owner_login = owner_login
        self.secret_question = secret_question
        self.secret_answer_hash = secret_answer_hash
        self.verified_at: datetime | None = None
        self.deleted = False
        self._forget_code()

    def _forget_code(self) -> None:
        self.code_hash: str | None = None
        self.code_sent_at: datetime | None = None
        self.code_expires_at: datetime | None = None
        self.code_failures = 0
        self.code_void = False
        self.code_message_id: UUID | None = None

    @event("Reopened")
    def reopen(self, kind: str, name: str, owner_login: str | None, secret_question: str,
               secret_answer_hash: str) -> None:
        """The same address again after a deletion: a fresh, unverified account."""
        self._open(kind, name, self.address, owner_login, secret_question, secret_answer_hash)

    @event("VerificationCodeSent")
    def send_verification_code(self, code_hash: str, sent_at: datetime, expires_at: datetime,
                               message_id: UUID) -> None:
        self.code_hash = code_hash
        self.code_sent_at = sent_at
        self.code_expires_at = expires_at
        self.code_failures = 0
        self.code_void = False
        self.code_message_id = message_id

    @event("VerificationFailed")
    def fail_verification(self, failures: int, void: bool) -> None:
        self.code_failures = failures
        self.code_void = void

    @event("Verified")
    def verify(self, verified_at: datetime) -> None:
        self.verified_at = verified_at
        self._forget_code()

    @event("Changed")
    def change(self, name: str, secret_question: str, secret_answer_hash: str) -> None:
        self.name = name
        self.secret_question = secret_question
        self.secret_answer_hash = secret_answer_hash

    @event("Deleted")
    def delete(self) -> None:
        self.deleted = True
        self._forget_code()

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


class LetterTemplate(CampusAggregate):
    @staticmethod
    def create_id(account_id: UUID, slug: str) -> UUID:
        return letter_template_id_for(account_id, slug)

    @event("Created")
    def __init__(self, account_id: UUID, slug: str, title: str, body: str) -> None:
        self.account_id = account_id
        self.slug = slug
        self.title = title
        self.body = body

    @event("Changed")
    def change(self, title: str, body: str) -> None:
        self.title = title
        self.body = body


class MailMessage(CampusAggregate):
    @event("Queued")
    def __init__(self, account_id: UUID, purpose: str, to: str, subject: str, sealed_message: bytes,
                 mail_account_id: UUID | None, login: str | None, queued_at: datetime) -> None:
        self.account_id = account_id
        self.purpose = purpose  # "verification_code" | "connection_details" | "notification:<topic>"
        self.to = to
        self.subject = subject
        # The whole MIME message, encrypted with this message's own key (kept outside the log).
        self.sealed_message = sealed_message
        self.mail_account_id = mail_account_id
        self.login = login
        self.queued_at = queued_at
        self.state = "queued"
        self.attempts = 0
        self.last_error: str | None = None
        self.next_attempt_at: datetime | None = None
        self.sent_at: datetime | None = None
        self.abandoned_reason: str | None = None

    @event("Sent")
    def mark_sent(self, sent_at: datetime, attempts: int) -> None:
        self.state = "sent"
        self.sent_at = sent_at
        self.attempts = attempts
        self.next_attempt_at = None

    @event("Failed")
    def mark_failed(self, error: str, attempts: int, next_attempt_at: datetime | None) -> None:
        self.state = "failed"
        self.last_error = error
        self.attempts = attempts
        self.next_attempt_at = next_attempt_at

    @event("Abandoned")
    def abandon(self, reason: str) -> None:
        self.state = "abandoned"
        self.abandoned_reason = reason
        self.next_attempt_at = None

    @property
    def pending(self) -> bool:
        return self.state in ("queued", "failed")
