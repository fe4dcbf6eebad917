"""Mail (Campus fiches 10 and 11).

* **Mail accounts**, personal or establishment, secured by a secret question
  (the answer kept as an argon2id hash) and verified by a 6-digit code e-mailed
  to the address: it expires after 15 minutes, 5 wrong codes make it void, and
  a new one can be asked for after a minute.
* **Connection details**: for each selected user with an e-mail, a new
  password is generated (passwords are kept hashed, so the old one cannot be
  sent) and mailed inside a PDF letter rendered from the school's editable
  "Connexion des personnels" template. The reset and the queued message are
  saved in one transaction: a user never loses a password without a letter
  being queued for it.
* **The outbox**: every message is a :class:`MailMessage` (``Queued`` →
  ``Sent``, or ``Failed`` and retried with backoff, finally ``Abandoned``)
  delivered through SMTP (:mod:`smtplib`) by a background sender thread.

Secrets never reach the event log in clear: a message's content is sealed with
AES-GCM under a key of its own; that key lives in a small table beside the
events (``campus_mail_keys``), itself encrypted with the server's mail key
(``CAMPUS_MAIL_KEY`` or ``<data_dir>/mail-key``), and is deleted once the
message is sent or abandoned — the sealed copy in the log can then never be
opened again ("crypto-shredding"). A queued message survives a restart; see
docs/MAIL.md for the reasoning.
"""

from __future__ import annotations

import base64
import os
import secrets
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.core import CampusAggregate
from campus.aggregates.mail import (
    ACCOUNT_KINDS,
    CONNECTION_LETTER,
    LetterTemplate,
    MailAccount,
    MailMessage,
    letter_template_id_for,
    mail_account_id_for,
)
from campus.aggregates.user import DirectoryUser
from campus.errors import Conflict, Forbidden, Invalid, NotFound, TooManyRequests
from campus.infra.context import RequestContext, context_changed, set_context
from campus.projections.tables import StoreTables
from campus.rules.letters import (
    DEFAULT_BODY,
    DEFAULT_TITLE,
    NEEDS_DOMAIN,
    fill,
    render_pdf,
    validate_template,
)
from campus.rules.security import hash_secret, verify_secret
from campus.services.base import Core, Service, check_if_match
from campus.services.login_guard import FailureKind


log = structlog.get_logger("campus.mail")

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=15)
CODE_ATTEMPTS = 5
RESEND_AFTER = timedelta(seconds=60)
# A sender holds a message this long while delivering it (another process leaves it alone).
DELIVERY_LEASE = timedelta(minutes=5)
# A key whose Queued event never got saved (a crash in between) is removed after this.
ORPHAN_KEY_AGE = timedelta(minutes=10)
MAX_BACKOFF = timedelta(hours=1)
SMTP_TIMEOUT = 30.0
TLS_MODES = ("none", "starttls", "ssl")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}
MAX_QUESTION = 200
MAX_ANSWER = 200
MAX_NAME = 100


@dataclass(frozen=True)
class LetterTemplateView:
    slug: str
    title: str
    body: str
    custom: bool
    etag: str


@dataclass(frozen=True)
class ConnectionDetailsSent:
    mail_account: MailAccount
    sent: list[dict]
    without_email: list[dict]


def normalise_answer(answer: str) -> str:
    """A secret answer as compared: case and runs of spaces do not matter ("Marseille" = " marseille")."""
    return " ".join(answer.split()).casefold()


def _iso(instant: datetime) -> str:
    """Fixed-width UTC text, which sorts as instants do."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(field: str, value: str, limit: int) -> str:
    """Runs of spaces as one; 422 if nothing visible is left (campus/rules/text.py)."""
    from campus.rules.text import required_text

    return required_text(field, " ".join(value.split()), limit)


# -- sealing -----------------------------------------------------------------------------------
def seal(key: bytes, message_id: UUID, data: bytes) -> bytes:
    """AES-256-GCM of `data`, bound to the message's id; nonce first."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, data, message_id.bytes)


def unseal(key: bytes, message_id: UUID, sealed: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], message_id.bytes)


def mail_master_key(settings: Any) -> bytes:
    """The server's mail key: CAMPUS_MAIL_KEY (base64 of 32 bytes), else <data_dir>/mail-key (made once, 0600)."""
    if settings.mail_key:
        return _decode_key(settings.mail_key, "CAMPUS_MAIL_KEY")
    path: Path = settings.data_dir / "mail-key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked: a reader never sees half a key.
        part = path.with_name(f".mail-key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(part, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            part.unlink()
    return _decode_key(path.read_text().strip(), str(path))


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().replace("+", "-").replace("/", "_") + "==")
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(f"{where} must hold 32 random bytes in base64 (e.g. `python -c \"import base64,os;"
                         "print(base64.urlsafe_b64encode(os.urandom(32)).decode())\"`)")
    return key


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
        self.master = AESGCM(mail_master_key(core.settings))
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
        nonce = secrets.token_bytes(12)
        wrapped = nonce + self.master.encrypt(nonce, key, message_id.bytes)
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
        wrapped = bytes(row["wrapped_key"])
        try:
            return self.master.decrypt(wrapped[:12], wrapped[12:], message_id.bytes)
        except InvalidTag:
            return None

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


# -- SMTP ------------------------------------------------------------------------------------
def deliver(settings: Any, sender: str, to: str, data: bytes) -> None:
    """Hand one message to the configured SMTP server (raises on any failure)."""
    tls = settings.smtp_tls
    if tls not in TLS_MODES:
        raise ValueError(f"CAMPUS_SMTP_TLS must be one of {', '.join(TLS_MODES)}, not {tls!r}")
    port = settings.smtp_port or DEFAULT_PORTS[tls]
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if tls == "ssl":
        client = smtplib.SMTP_SSL(settings.smtp_host, port, timeout=SMTP_TIMEOUT, context=context)
    else:
        client = smtplib.SMTP(settings.smtp_host, port, timeout=SMTP_TIMEOUT)
    with client:
        if tls == "starttls":
            client.starttls(context=context)
        if settings.smtp_user:
            client.login(settings.smtp_user, settings.smtp_password or "")
        client.sendmail(sender, [to], data)


def _permanent(exc: Exception) -> bool:
    """The server refused the recipient for good (5xx): retrying cannot help."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    return False


def _describe(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = "; ".join(f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
                         for code, msg in exc.recipients.values())
        return f"recipient refused: {text}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


_KEYS_GUARD = threading.Lock()


class Mail(Service):
    """Mail accounts, letters of connection details and the outbox (Campus fiches 10, 11)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "controllers", "login_guard", "users")

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

    def _queue_mail(self, account_id: UUID, *, message_id: UUID, purpose: str, to: str,
                    subject: str, mime: EmailMessage, changes: Callable[[], list[CampusAggregate]],
                    mail_account_id: UUID | None = None, login: str | None = None) -> MailMessage:
        """Seal `mime`, keep its key, and save the ``Queued`` message with the aggregates `changes` returns."""
        key = AESGCM.generate_key(bit_length=256)
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
            mime = self._new_mime(sender=self.mail_sender_address, to=to, subject=f"[campus] {subject}", text=text)
            return self._queue_mail(account_id, message_id=uuid4(), purpose=f"notification:{topic}", to=to,
                                    subject=f"[campus] {subject}", mime=mime, changes=list)
        except Exception:  # noqa: BLE001 - logged, never raised into the caller
            log.warning("notification_failed", account_id=str(account_id), topic=topic, exc_info=True)
            return None

    def _new_mime(self, *, sender: str, to: str, subject: str, text: str,
                  reply_to: str | None = None) -> EmailMessage:
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

    def list_mail_accounts(self, account_id: UUID) -> list[MailAccount]:
        found = [self._get(MailAccount, i, account_id, "mail account")
                 for i in self.history.aggregate_ids(str(account_id), "MailAccount")]
        return [a for a in found if not a.deleted]

    def get_mail_account(self, account_id: UUID, mail_account_id: UUID) -> MailAccount:
        found = self._get(MailAccount, mail_account_id, account_id, "mail account")
        if found.deleted:
            raise NotFound("mail account not found (it was deleted)")
        return found

    def create_mail_account(self, account_id: UUID, *, kind: str, address: str | None,
                            secret_question: str, secret_answer: str, name: str | None = None,
                            login: str | None = None) -> MailAccount:
        """A new account (or a deleted one opened again), its verification code e-mailed at once."""
        if kind not in ACCOUNT_KINDS:
            raise Invalid.field("kind", f"must be one of {', '.join(ACCOUNT_KINDS)}")
        question = _text("secret_question", secret_question, MAX_QUESTION)
        answer = normalise_answer(secret_answer)
        if not answer:
            raise Invalid.field("secret_answer", "must not be empty")
        if len(answer) > MAX_ANSWER:
            raise Invalid.field("secret_answer", f"must be at most {MAX_ANSWER} characters")
        owner: DirectoryUser | None = None
        if login is not None:
            if kind != "personal":
                raise Invalid.field("login", "only a personal account belongs to a user")
            try:
                owner = self.users.get_user(account_id, login)
            except NotFound:
                raise Invalid.field("login", f"no user with login {login!r}") from None
        if not address:
            if owner is None or not owner.email:
                raise Invalid.field("address", "is required (or give the login of a user who has an e-mail)")
            address = owner.email
        address = address.strip()
        establishment = self.accounts.get_account(account_id).establishment
        if name is not None:
            name = _text("name", name, MAX_NAME)
        elif owner is not None:
            name = f"{owner.first_name} {owner.last_name}"
        else:
            name = establishment if kind == "establishment" else address
        answer_hash = hash_secret(answer)
        mail_account_id = mail_account_id_for(account_id, address)

        def open_account() -> MailAccount:
            try:
                current = self.repository.get(mail_account_id)
            except AggregateNotFoundError:
                current = None
            if isinstance(current, MailAccount) and not current.deleted:
                raise Conflict(f"a mail account for {address} already exists", code="mail_account_exists")
            if isinstance(current, MailAccount):
                current.reopen(kind=kind, name=name, owner_login=owner.login if owner else None,
                               secret_question=question, secret_answer_hash=answer_hash)
                return current
            return MailAccount(account_id=account_id, kind=kind, name=name, address=address,
                               owner_login=owner.login if owner else None, secret_question=question,
                               secret_answer_hash=answer_hash)

        return self._send_code(account_id, mail_account_id, open_account, address, name, establishment)

    def resend_verification_code(self, account_id: UUID, mail_account_id: UUID) -> MailAccount:
        """A new code (the previous one stops working), at most one a minute."""
        current = self.get_mail_account(account_id, mail_account_id)
        establishment = self.accounts.get_account(account_id).establishment

        def reload() -> MailAccount:
            found = self.get_mail_account(account_id, mail_account_id)
            if found.verified:
                raise Conflict("this mail account is already verified", code="already_verified")
            if found.code_sent_at is not None:
                wait = found.code_sent_at + RESEND_AFTER - self.now()
                if wait > timedelta(0):
                    seconds = max(1, int(wait.total_seconds() + 0.999))
                    raise TooManyRequests(f"a code was sent less than a minute ago; ask again in {seconds} s",
                                          retry_after=seconds, code="resend_too_soon")
            return found

        return self._send_code(account_id, mail_account_id, reload, current.address, current.name, establishment)

    def _send_code(self, account_id: UUID, mail_account_id: UUID,
                   load: Callable[[], MailAccount], address: str, name: str, establishment: str) -> MailAccount:
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        code_hash = hash_secret(code)
        message_id = uuid4()
        subject = "Vérification de votre compte e-mail"
        minutes = int(CODE_LIFETIME.total_seconds() // 60)
        mime = self._new_mime(
            sender=formataddr((establishment, self.mail_sender_address)), to=formataddr((name, address)),
            subject=subject,
            text=f"Bonjour,\n\nVoici le code de vérification du compte e-mail « {name} » ({address}) "
                 f"de {establishment} :\n\n    {code}\n\nSaisissez-le dans la console d'hébergement. "
                 f"Il expire dans {minutes} minutes.\n\nSi vous n'avez rien demandé, ignorez ce message.\n")
        holder: list[MailAccount] = []

        def changes() -> list[CampusAggregate]:
            found = load()
            now = self.now()
            found.send_verification_code(code_hash=code_hash, sent_at=now, expires_at=now + CODE_LIFETIME,
                                         message_id=message_id)
            holder[:] = [found]
            return [found]

        self._queue_mail(account_id, message_id=message_id, purpose="verification_code", to=address,
                         subject=subject, mime=mime, changes=changes, mail_account_id=mail_account_id)
        return holder[0]

    def verify_mail_account(self, account_id: UUID, mail_account_id: UUID,
                            code: str) -> MailAccount:
        """Check the code: right, the account is verified; wrong, one of the 5 attempts is spent."""
        code = "".join(code.split())
        if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
            raise Invalid.field("code", f"the code has {CODE_DIGITS} digits")
        seen = self.get_mail_account(account_id, mail_account_id)
        # argon2 outside the school's lock; the command checks the code did not change meanwhile.
        right = verify_secret(seen.code_hash, code) if seen.code_hash else False
        failures: list[int] = []

        def body() -> MailAccount:
            found = self.get_mail_account(account_id, mail_account_id)
            if found.verified:
                raise Conflict("this mail account is already verified", code="already_verified")
            if found.code_hash is None:
                raise Conflict("no code is waiting: ask for one (POST …/verification/resend)", code="no_code")
            if found.code_hash != seen.code_hash:
                raise Conflict("a new code was sent meanwhile: use the newest code", code="code_replaced")
            if found.code_void:
                raise Conflict(f"{CODE_ATTEMPTS} wrong codes were entered: this code is void; ask for a new one "
                               "(POST …/verification/resend)", code="code_void")
            now = self.now()
            if found.code_expires_at is not None and now > found.code_expires_at:
                raise Conflict("the code has expired; ask for a new one (POST …/verification/resend)",
                               code="code_expired")
            if right:
                found.verify(verified_at=now)
            else:
                failures[:] = [found.code_failures + 1]
                found.fail_verification(failures=failures[0], void=failures[0] >= CODE_ATTEMPTS)
            self.save(found)
            return found

        found = self._run(account_id, body)
        if failures:
            left = CODE_ATTEMPTS - failures[0]
            message = (f"the code is wrong; {left} attempt{'s' if left != 1 else ''} left" if left > 0 else
                       "the code is wrong; no attempt left: the code is void, ask for a new one")
            raise Invalid(f"code: {message}", errors=[{"field": "code", "message": message}], code="invalid_code")
        return found

    def change_mail_account(self, account_id: UUID, mail_account_id: UUID, *,
                            secret_answer: str, name: str | None = None, secret_question: str | None = None,
                            new_secret_answer: str | None = None, if_match: str | None = None) -> MailAccount:
        """Rename the account or change its secret question/answer: needs the current answer."""
        if secret_question is not None and new_secret_answer is None:
            raise Invalid.field("new_secret_answer", "a new secret question needs its answer")
        new_name = _text("name", name, MAX_NAME) if name is not None else None
        new_question = _text("secret_question", secret_question, MAX_QUESTION) if secret_question else None
        new_hash = None
        if new_secret_answer is not None:
            normalised = normalise_answer(new_secret_answer)
            if not normalised:
                raise Invalid.field("new_secret_answer", "must not be empty")
            if len(normalised) > MAX_ANSWER:
                raise Invalid.field("new_secret_answer", f"must be at most {MAX_ANSWER} characters")
            new_hash = hash_secret(normalised)
        seen = self.get_mail_account(account_id, mail_account_id)
        self.login_guard.refuse_if_suspended(account_id)
        # Counted like a password: guessing the answer gets the address suspended too.
        self.login_guard.check_secret(account_id, seen.secret_answer_hash, normalise_answer(secret_answer),
                          FailureKind.SECRET_ANSWER, None, Forbidden("the answer to the secret question is wrong",
                                                                     code="wrong_secret_answer"))

        def body() -> MailAccount:
            found = self.get_mail_account(account_id, mail_account_id)
            check_if_match(found.etag, if_match)
            if found.secret_answer_hash != seen.secret_answer_hash:
                raise Conflict("the secret answer was changed meanwhile; read the account again",
                               code="secret_answer_changed")
            target = (new_name or found.name, new_question or found.secret_question,
                      new_hash or found.secret_answer_hash)
            if target != (found.name, found.secret_question, found.secret_answer_hash):
                found.change(name=target[0], secret_question=target[1], secret_answer_hash=target[2])
                self.save(found)
            return found

        return self._run(account_id, body)

    def delete_mail_account(self, account_id: UUID, mail_account_id: UUID) -> None:
        def body() -> None:
            found = self.get_mail_account(account_id, mail_account_id)
            found.delete()
            self.save(found)

        self._run(account_id, body)

    def get_letter_template(self, account_id: UUID, slug: str) -> LetterTemplateView:
        if slug != CONNECTION_LETTER:
            raise NotFound(f"no letter template {slug!r}; the template is {CONNECTION_LETTER!r}")
        self.accounts.get_account(account_id)
        try:
            found = self.repository.get(letter_template_id_for(account_id, slug))
        except AggregateNotFoundError:
            return LetterTemplateView(slug, DEFAULT_TITLE, DEFAULT_BODY, custom=False, etag='"0"')
        return LetterTemplateView(slug, found.title, found.body, custom=True, etag=found.etag)

    def put_letter_template(self, account_id: UUID, slug: str, title: str, body: str,
                            if_match: str | None = None) -> LetterTemplateView:
        self.get_letter_template(account_id, slug)  # 404 for another slug
        validate_template(title, body)

        def command() -> LetterTemplateView:
            check_if_match(self.get_letter_template(account_id, slug).etag, if_match)
            try:
                found = self.repository.get(letter_template_id_for(account_id, slug))
            except AggregateNotFoundError:
                found = LetterTemplate(account_id=account_id, slug=slug, title=title, body=body)
            else:
                if (found.title, found.body) == (title, body):
                    return self.get_letter_template(account_id, slug)
                found.change(title=title, body=body)
            self.save(found)
            return LetterTemplateView(slug, found.title, found.body, custom=True, etag=found.etag)

        return self._run(account_id, command)

    def send_connection_details(self, account_id: UUID, logins: list[str],
                                mail_account_id: UUID) -> ConnectionDetailsSent:
        """Reset each selected user's password and mail it in the letter; users without an e-mail
        are reported and keep their password."""
        mail_account = self.get_mail_account(account_id, mail_account_id)
        if not mail_account.verified:
            raise Conflict(f"the mail account {mail_account.address} is not verified yet: enter the code it was "
                           "sent (POST …/verification)", code="mail_account_not_verified")
        users = self.users.users_named(account_id, logins, "logins")
        template = self.get_letter_template(account_id, CONNECTION_LETTER)
        account = self.accounts.get_account(account_id)
        controller = self.controllers.get_controller(account_id)
        used = validate_template(template.title, template.body)
        if controller.domain is None and any(p in NEEDS_DOMAIN for part in used.values() for p in part):
            raise Conflict("the letter gives the controller's address, and the controller has no domain name yet "
                           "(PUT /v1/console/controller/domain)", code="domain_required")
        sent, without_email = [], []
        for user in users:
            if not user.email:
                without_email.append({"login": user.login, "detail": "the user has no e-mail address: nothing was "
                                      "sent and the password is unchanged; set one (PATCH /v1/console/users/…)"})
                continue
            message = self._mail_connection_details(account_id, user, mail_account, template, account.establishment,
                                                    controller.domain, controller.port)
            sent.append({"login": user.login, "to": message.to, "message_id": str(message.id)})
        return ConnectionDetailsSent(mail_account, sent, without_email)

    def _mail_connection_details(self, account_id: UUID, user: DirectoryUser,
                                 mail_account: MailAccount, template: LetterTemplateView, establishment: str,
                                 domain: str | None, port: int | None) -> MailMessage:
        password, password_hash = self.users.new_password()
        values = {"civility": user.civility, "first_name": user.first_name, "last_name": user.last_name,
                  "login": user.login, "password": password, "establishment": establishment,
                  "url": f"https://{domain}" if domain else None, "domain": domain, "port": port}
        subject = fill(template.title, values)
        pdf = render_pdf(subject, fill(template.body, values), establishment=establishment,
                         created_at=self.clock.now())
        del password, values
        mime = self._new_mime(
            sender=formataddr((mail_account.name, self.mail_sender_address)),
            to=formataddr((f"{user.first_name} {user.last_name}", user.email)), reply_to=mail_account.address,
            subject=subject,
            text=f"Bonjour {user.first_name} {user.last_name},\n\nVous trouverez vos informations de connexion "
                 f"dans le document joint.\nCe document est personnel : conservez-le en lieu sûr.\n\n"
                 f"{establishment}\n")
        mime.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"{CONNECTION_LETTER}.pdf")
        epoch = user.credentials_epoch

        def changes() -> list[CampusAggregate]:
            current = self.users.get_user(account_id, user.login)
            if current.credentials_epoch != epoch or current.email != user.email:
                raise Conflict(f"{user.login!r} was changed meanwhile; send the connection details again",
                               code="user_changed")
            current.change_password(password_hash=password_hash)
            return [current]

        return self._queue_mail(account_id, message_id=uuid4(), purpose="connection_details", to=user.email or "",
                                subject=subject, mime=mime, changes=changes, mail_account_id=mail_account.id,
                                login=user.login)

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
        error = _describe(exc)
        give_up = _permanent(exc) or attempts >= self.settings.mail_max_attempts

        def body() -> None:
            current: MailMessage = self.repository.get(message.id)
            now = self.now()
            delay = min(timedelta(seconds=self.settings.mail_retry_seconds * 2 ** (attempts - 1)), MAX_BACKOFF)
            current.mark_failed(error=error, attempts=attempts, next_attempt_at=None if give_up else now + delay)
            if give_up:
                reason = ("the SMTP server refused the recipient" if _permanent(exc) else
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
