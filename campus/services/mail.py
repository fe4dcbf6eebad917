"""Mail accounts and connection-details letters (Campus fiches 10 and 11).

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

Both queue their messages in the outbox (campus/services/outbox.py), which
seals them, keeps their keys aside and delivers them through SMTP; see
docs/MAIL.md for the reasoning.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.utils import formataddr
from uuid import UUID, uuid4

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
from campus.rules.letters import (
    DEFAULT_BODY,
    DEFAULT_TITLE,
    NEEDS_DOMAIN,
    fill,
    render_pdf,
    validate_template,
)
from campus.rules.security import hash_secret, verify_secret
from campus.services.base import Service, check_if_match
from campus.services.login_guard import FailureKind

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=15)
CODE_ATTEMPTS = 5
RESEND_AFTER = timedelta(seconds=60)
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


def _text(field: str, value: str, limit: int) -> str:
    """Runs of spaces as one; 422 if nothing visible is left (campus/rules/text.py)."""
    from campus.rules.text import required_text

    return required_text(field, " ".join(value.split()), limit)


class Mail(Service):
    """Mail accounts and letters of connection details (Campus fiches 10, 11); their mail goes through
    the outbox."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "controllers", "login_guard", "outbox", "users")

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
        mime = self.outbox.new_mime(
            sender=formataddr((establishment, self.outbox.mail_sender_address)), to=formataddr((name, address)),
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

        self.outbox.queue_mail(account_id, message_id=message_id, purpose="verification_code", to=address,
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
        mime = self.outbox.new_mime(
            sender=formataddr((mail_account.name, self.outbox.mail_sender_address)),
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

        return self.outbox.queue_mail(account_id, message_id=uuid4(), purpose="connection_details",
                                      to=user.email or "", subject=subject, mime=mime, changes=changes,
                                      mail_account_id=mail_account.id, login=user.login)

