"""The outbox: queued mail, its keys, and the sender that delivers it (docs/MAIL.md).

Every message is a :class:`MailMessage` (``Queued`` → ``Sent``, or ``Failed``
and retried with backoff, finally ``Abandoned``) delivered through SMTP by a
background sender thread. The other services queue mail here: the mail
accounts' codes and the connection-details letters (campus/services/mail.py),
and the hosting manager's notifications (:meth:`Outbox.notify_manager`).

Secrets never reach the event log in clear: a message's content is sealed with
AES-GCM under a key of its own (campus/infra/mail_transport.py); that key lives
in a small table beside the events (``campus_mail_keys``, :class:`MailKeys`),
itself encrypted with the server's mail key, and is deleted once the message is
sent or abandoned — the sealed copy in the log can then never be opened again
("crypto-shredding"). A queued message survives a restart.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from uuid import UUID, uuid4

import structlog
from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.core import CampusAggregate
from campus.aggregates.mail import MailMessage
from campus.infra.context import RequestContext, context_changed, set_context
from campus.infra.mail_transport import (
    deliver,
    describe_failure,
    mail_master_key,
    new_message_key,
    refused_for_good,
    seal,
    unseal,
    unwrap_key,
)
from campus.projections.tables import StoreTables
from campus.services.base import Core, Service

log = structlog.get_logger("campus.mail")

# A sender holds a message this long while delivering it (another process leaves it alone).
DELIVERY_LEASE = timedelta(minutes=5)
# A key whose Queued event never got saved (a crash in between) is removed after this.
ORPHAN_KEY_AGE = timedelta(minutes=10)
MAX_BACKOFF = timedelta(hours=1)


def _iso(instant: datetime) -> str:
    """Fixed-width UTC text, which sorts as instants do."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MailKeys(StoreTables):
    """The per-message keys of the undelivered messages (a table beside the events, not events).

    A row exists from just before a message's ``Queued`` event is saved until it
    is sent or abandoned; deleting it makes the sealed copy in the log unreadable.
    The key is stored encrypted with the server's mail key. The row also carries
    the delivery lease, so two servers on one database never deliver one message
    at the same time.
    """

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.keys = self.table("campus_mail_keys")
        self.master = mail_master_key(core.settings)
        self.commands = core.commands

    @classmethod
    def create_table(cls, app: Any) -> None:
        """Made at start-up, in the section one server at a time runs (servers starting together)."""
        tables = StoreTables(app)
        with tables.datastore.transaction(commit=True) as curs:
            curs.execute(f"CREATE TABLE IF NOT EXISTS {tables.table('campus_mail_keys')} (message_id TEXT PRIMARY KEY,"
                         f" tenant TEXT NOT NULL, wrapped_key {tables.blob} NOT NULL, created_at TEXT NOT NULL,"
                         " claimed_until TEXT)")

    def put(self, message_id: UUID, tenant: UUID, key: bytes, now: datetime) -> None:
        """Keep the key in the transaction of the current command (the one saving the ``Queued`` event):
        stored exactly when the message is."""
        wrapped = seal(self.master, message_id, key)
        statement = self._sql(f"INSERT INTO {self.keys} (message_id, tenant, wrapped_key, created_at)"
                              " VALUES (?, ?, ?, ?)")
        params = (str(message_id), str(tenant), wrapped, _iso(now))
        self.commands.in_transaction(lambda curs: curs.execute(statement, params))

    def key(self, message_id: UUID) -> bytes | None:
        """The message's key, or None if it is gone (sent, abandoned) or sealed under another mail key."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._sql(f"SELECT wrapped_key FROM {self.keys} WHERE message_id = ?"),
                         (str(message_id),))
            row = curs.fetchone()
        if row is None:
            return None
        return unwrap_key(self.master, message_id, bytes(row["wrapped_key"]))

    def pending(self) -> list[tuple[UUID, datetime]]:
        """(message id, created at) of every message still holding a key, oldest first."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT message_id, created_at FROM {self.keys} ORDER BY created_at")
            rows = curs.fetchall()
        return [(UUID(str(r["message_id"])), datetime.strptime(r["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
                 .replace(tzinfo=UTC)) for r in rows]

    def claim(self, message_id: UUID, now: datetime) -> bool:
        """Take the delivery lease unless another sender holds it."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._sql(
                f"UPDATE {self.keys} SET claimed_until = ? WHERE message_id = ?"
                " AND (claimed_until IS NULL OR claimed_until < ?) RETURNING message_id"),
                (_iso(now + DELIVERY_LEASE), str(message_id), _iso(now)))
            return curs.fetchone() is not None

    def release(self, message_id: UUID) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._sql(f"UPDATE {self.keys} SET claimed_until = NULL WHERE message_id = ?"),
                         (str(message_id),))

    def shred(self, message_id: UUID) -> None:
        """Forget the key: the sealed copy in the event log can never be opened again."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._sql(f"DELETE FROM {self.keys} WHERE message_id = ?"), (str(message_id),))

    def count(self) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT COUNT(*) AS n FROM {self.keys}")
            return int(curs.fetchone()["n"])


_KEYS_GUARD = threading.Lock()


class Outbox(Service):
    """Queue mail (sealed, its key kept aside), list it, and deliver it from a background thread."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts",)

    def _mail_keys(self) -> MailKeys:
        keys = self.__dict__.get("_mail_key_store")
        if keys is None:
            with _KEYS_GUARD:
                keys = self.__dict__.get("_mail_key_store")
                if keys is None:
                    keys = self.__dict__["_mail_key_store"] = MailKeys(self.core)
        return keys

    def _mail_kick(self) -> threading.Event:
        return self.__dict__.setdefault("_mail_kick_event", threading.Event())

    @property
    def mail_sender_address(self) -> str:
        return self.settings.mail_from or f"no-reply@{self.settings.domain_suffix}"

    def smtp_waiting_reason(self) -> str | None:
        """Why queued mail is not being sent, or None when an SMTP server is configured."""
        if not self.settings.smtp_host:
            return "no SMTP server is configured (CAMPUS_SMTP_HOST): mail stays queued until one is"
        return None

    def new_mime(self, *, sender: str, to: str, subject: str, text: str,
                 reply_to: str | None = None) -> EmailMessage:
        """A message dated by the clock, its Message-ID on the domain suffix (add attachments, then queue it)."""
        mime = EmailMessage()
        mime["From"] = sender
        mime["To"] = to
        if reply_to:
            mime["Reply-To"] = reply_to
        mime["Subject"] = subject
        mime["Date"] = format_datetime(self.clock.now())
        mime["Message-ID"] = make_msgid(domain=self.settings.domain_suffix)
        mime.set_content(text)
        return mime

    def queue_mail(self, account_id: UUID, *, message_id: UUID, purpose: str, to: str,
                   subject: str, mime: EmailMessage, changes: Callable[[], list[CampusAggregate]],
                   mail_account_id: UUID | None = None, login: str | None = None) -> MailMessage:
        """Seal `mime`, keep its key, and save the ``Queued`` message with the aggregates `changes` returns
        (in one command of `account_id`'s school); then wake the sender."""
        key = new_message_key()
        # CRLF line ends, as SMTP wants them (a bare LF is refused by careful servers).
        sealed = seal(key, message_id, mime.as_bytes(policy=email_policy.SMTP))
        keys = self._mail_keys()

        def body() -> MailMessage:
            changed = changes()
            message = MailMessage._create(
                MailMessage.Queued, id=message_id, account_id=account_id, purpose=purpose, to=to, subject=subject,
                sealed_message=sealed, mail_account_id=mail_account_id, login=login, queued_at=self.now())
            keys.put(message_id, account_id, key, self.now())  # in the same transaction as the message
            self.save(*changed, message)
            return message

        message = self._run(account_id, body)
        self._mail_kick().set()
        return message

    def notify_manager(self, account_id: UUID, topic: str, subject: str,
                       text: str) -> MailMessage | None:
        """Mail the hosting manager about `topic` if the account page asks for it (notifications).

        Best effort: a notification never makes the operation that caused it fail.
        """
        try:
            account = self.accounts.get_account(account_id)
            to = account.manager.get("email")
            if not to or not account.notifications.get(topic, False):
                return None
            mime = self.new_mime(sender=self.mail_sender_address, to=to, subject=f"[campus] {subject}", text=text)
            return self.queue_mail(account_id, message_id=uuid4(), purpose=f"notification:{topic}", to=to,
                                   subject=f"[campus] {subject}", mime=mime, changes=list)
        except Exception:  # noqa: BLE001 - logged, never raised into the caller
            log.warning("notification_failed", account_id=str(account_id), topic=topic, exc_info=True)
            return None

    def list_outbox(self, account_id: UUID, state: str | None = None,
                    limit: int = 100) -> list[MailMessage]:
        """The school's messages, newest first."""
        ids = self.history.aggregate_ids(str(account_id), "MailMessage")
        found = []
        for message_id in reversed(ids):
            message = self._get(MailMessage, message_id, account_id, "message")
            if state is None or message.state == state:
                found.append(message)
                if len(found) >= limit:
                    break
        return found

    def get_outbox_message(self, account_id: UUID, message_id: UUID) -> MailMessage:
        return self._get(MailMessage, message_id, account_id, "message")

    def run_outbox(self) -> int:
        """Deliver every message that is due; return how many were sent. Safe to call at any pace."""
        if self.smtp_waiting_reason():
            return 0
        keys = self._mail_keys()
        sent = 0
        with context_changed(actor="mailer"):
            for message_id, created_at in keys.pending():
                try:
                    sent += self._deliver_one(keys, message_id, created_at)
                except Exception:  # noqa: BLE001 - one bad message must not stop the others
                    log.warning("mail_delivery_error", message_id=str(message_id), exc_info=True)
                    keys.release(message_id)
        return sent

    def _deliver_one(self, keys: MailKeys, message_id: UUID, created_at: datetime) -> int:
        now = self.clock.now()
        try:
            message = self.repository.get(message_id)
        except AggregateNotFoundError:
            if now - created_at > ORPHAN_KEY_AGE:
                keys.shred(message_id)  # its Queued event was never saved
            return 0
        if not isinstance(message, MailMessage):
            return 0
        if not message.pending:
            keys.shred(message_id)
            return 0
        if message.next_attempt_at is not None and message.next_attempt_at > now:
            return 0
        key = keys.key(message_id)
        if key is None:
            log.warning("mail_key_unusable", message_id=str(message_id),
                        detail="sealed under another mail key: servers sharing a database need one CAMPUS_MAIL_KEY")
            return 0
        if not keys.claim(message_id, now):
            return 0
        data = unseal(key, message_id, message.sealed_message)
        try:
            deliver(self.settings, self.mail_sender_address, message.to, data)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            self._record_failure(message, exc)
            return 0
        attempts = message.attempts + 1

        def body() -> None:
            current: MailMessage = self.repository.get(message_id)
            current.mark_sent(sent_at=self.now(), attempts=attempts)
            self.save(current)

        self._run(message.account_id, body)
        keys.shred(message_id)
        log.info("mail_sent", message_id=str(message_id), purpose=message.purpose, attempts=attempts)
        return 1

    def _record_failure(self, message: MailMessage, exc: Exception) -> None:
        keys = self._mail_keys()
        attempts = message.attempts + 1
        error = describe_failure(exc)
        give_up = refused_for_good(exc) or attempts >= self.settings.mail_max_attempts

        def body() -> None:
            current: MailMessage = self.repository.get(message.id)
            now = self.now()
            delay = min(timedelta(seconds=self.settings.mail_retry_seconds * 2 ** (attempts - 1)), MAX_BACKOFF)
            current.mark_failed(error=error, attempts=attempts, next_attempt_at=None if give_up else now + delay)
            if give_up:
                reason = ("the SMTP server refused the recipient" if refused_for_good(exc) else
                          f"{attempts} attempts failed")
                current.abandon(reason=reason)
            self.save(current)

        self._run(message.account_id, body)
        if give_up:
            keys.shred(message.id)
        else:
            keys.release(message.id)
        log.warning("mail_failed", message_id=str(message.id), attempts=attempts, error=error, abandoned=give_up)

    def start_mail_sender(self, stop: threading.Event) -> threading.Thread:
        """A daemon thread delivering the outbox: at once when mail is queued, and every few seconds."""
        self._mail_keys()  # a bad mail key fails the start-up, not the first message
        kick = self._mail_kick()

        def loop() -> None:
            set_context(RequestContext(actor="mailer"))
            while not stop.is_set():
                try:
                    self.run_outbox()
                except Exception:  # noqa: BLE001 - the next round retries
                    log.warning("mail_sender_failed", exc_info=True)
                # Wake when mail is queued, after `mail_poll_seconds`, or (within a quarter second) at shutdown.
                waited = 0.0
                while not stop.is_set() and waited < self.settings.mail_poll_seconds:
                    if kick.wait(min(0.25, self.settings.mail_poll_seconds)):
                        break
                    waited += 0.25
                kick.clear()

        thread = threading.Thread(target=loop, name="campus-mail-sender", daemon=True)
        thread.start()
        return thread
