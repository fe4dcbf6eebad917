"""HTTP handlers of mail (Campus fiches 10 and 11): mail accounts and their
verification, the "Connexion des personnels" letter, sending users their
connection details, and the outbox. No answer ever holds a code, a secret
answer, a password or a message's content."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import EmailStr, Field

from campus.aggregates.mail import MailAccount, MailMessage
from campus.api import schemas as s
from campus.api.handlers import _uuid, api
from campus.api.routing import Auth, Call, Reply
from campus.rules.letters import PLACEHOLDERS
from campus.services.mail import CODE_ATTEMPTS, RESEND_AFTER, LetterTemplateView


# -- bodies and queries -------------------------------------------------------------------
class NewMailAccount(s.Strict):
    kind: Literal["personal", "establishment"]
    address: EmailStr | None = Field(default=None, description=(
        "the account's address; for a personal account of a user (`login`), their e-mail by default"))
    name: s.Name | None = Field(default=None, description=(
        "the account's name; by default the user's name, the establishment's, or the address"))
    login: s.Login | None = Field(default=None, description="personal account: the user it belongs to")
    secret_question: s.Text
    secret_answer: s.Secret = Field(description="stored as an argon2id hash; never shown again")


class MailAccountChanges(s.Strict):
    secret_answer: s.Secret = Field(description="the current answer: every change needs it")
    name: s.Name | None = None
    secret_question: s.Text | None = None
    new_secret_answer: s.Secret | None = None


class VerificationCode(s.Strict):
    code: str = Field(min_length=1, max_length=20, description="the 6-digit code e-mailed to the address")


class LetterTemplateBody(s.Strict):
    title: str = Field(max_length=200, description="the letter's title, also the mail's subject; no {password}")
    body: str = Field(max_length=10_000, description="the letter's text; must contain {login} and {password}")


class ConnectionDetails(s.Strict):
    logins: list[s.Login] = Field(min_length=1, max_length=1000)
    mail_account_id: UUID = Field(description="a verified mail account of the school")


class OutboxParams(s.Strict):
    state: Literal["queued", "failed", "sent", "abandoned"] | None = None
    limit: int = Field(default=100, ge=1, le=500)


# -- views --------------------------------------------------------------------------------
def mail_account_view(account: MailAccount, now: datetime) -> dict[str, Any]:
    verification = None
    if not account.verified and account.code_sent_at is not None:
        verification = {
            "sent_at": account.code_sent_at,
            "expires_at": account.code_expires_at,
            "expired": account.code_expires_at is not None and now > account.code_expires_at,
            "attempts_left": max(0, CODE_ATTEMPTS - account.code_failures),
            "void": account.code_void,
            "resend_available_at": account.code_sent_at + RESEND_AFTER,
            "message_id": str(account.code_message_id) if account.code_message_id else None,
        }
    return {
        "id": str(account.id),
        "kind": account.kind,
        "name": account.name,
        "address": account.address,
        "owner_login": account.owner_login,
        "secret_question": account.secret_question,
        "verified": account.verified,
        "verified_at": account.verified_at,
        "verification": verification,
    }


def letter_template_view(template: LetterTemplateView) -> dict[str, Any]:
    return {"slug": template.slug, "title": template.title, "body": template.body, "custom": template.custom,
            "placeholders": PLACEHOLDERS}


def message_view(message: MailMessage, waiting: str | None) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "purpose": message.purpose,
        "to": message.to,
        "subject": message.subject,
        "login": message.login,
        "mail_account_id": str(message.mail_account_id) if message.mail_account_id else None,
        "state": message.state,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "queued_at": message.queued_at,
        "next_attempt_at": message.next_attempt_at,
        "sent_at": message.sent_at,
        "abandoned_reason": message.abandoned_reason,
        "waiting_for": waiting if message.pending else None,
    }


def _mail_account_id(call: Call) -> UUID:
    return _uuid(call.path["mail_account_id"], "mail account")


def _account_reply(call: Call, account: MailAccount, status: int | None = None) -> Reply:
    return Reply(mail_account_view(account, call.app.now()), status=status, etag=account.etag, headers={
        "Location": f"/v1/console/mail-accounts/{account.id}"} if status == 201 else {})


# -- mail accounts (Campus fiche 10) -----------------------------------------------------
@api.get("/v1/console/mail-accounts", auth=Auth.CONSOLE, tag="mail")
def list_mail_accounts(call: Call) -> dict:
    """The school's mail accounts, personal and establishment."""
    now = call.app.now()
    return {"mail_accounts": [mail_account_view(a, now) for a in call.app.mail.list_mail_accounts(call.account_id)]}


@api.post("/v1/console/mail-accounts", auth=Auth.CONSOLE, body=NewMailAccount, status=201, tag="mail")
def create_mail_account(call: Call, body: NewMailAccount) -> Reply:
    """Create a mail account; a 6-digit verification code is e-mailed to its address at once."""
    account = call.app.mail.create_mail_account(
        call.account_id, kind=body.kind, address=str(body.address) if body.address else None, name=body.name,
        login=body.login, secret_question=body.secret_question, secret_answer=body.secret_answer)
    return _account_reply(call, account, 201)


@api.get("/v1/console/mail-accounts/{mail_account_id}", auth=Auth.CONSOLE, tag="mail")
def get_mail_account(call: Call) -> Reply:
    """One mail account (never its secret answer nor its code)."""
    return _account_reply(call, call.app.mail.get_mail_account(call.account_id, _mail_account_id(call)))


@api.patch("/v1/console/mail-accounts/{mail_account_id}", auth=Auth.CONSOLE, body=MailAccountChanges, tag="mail")
def change_mail_account(call: Call, body: MailAccountChanges) -> Reply:
    """Rename the account or change its secret question and answer (the current answer is required)."""
    account = call.app.mail.change_mail_account(
        call.account_id, _mail_account_id(call), secret_answer=body.secret_answer, name=body.name,
        secret_question=body.secret_question, new_secret_answer=body.new_secret_answer, if_match=call.if_match)
    return _account_reply(call, account)


@api.delete("/v1/console/mail-accounts/{mail_account_id}", auth=Auth.CONSOLE, status=204, tag="mail")
def delete_mail_account(call: Call) -> None:
    """Delete a mail account (its address can be used for a new one)."""
    call.app.mail.delete_mail_account(call.account_id, _mail_account_id(call))


@api.post("/v1/console/mail-accounts/{mail_account_id}/verification", auth=Auth.CONSOLE, body=VerificationCode,
          tag="mail")
def verify_mail_account(call: Call, body: VerificationCode) -> Reply:
    """Enter the code received: 5 wrong codes make it void; it expires after 15 minutes."""
    return _account_reply(call, call.app.mail.verify_mail_account(call.account_id, _mail_account_id(call), body.code))


@api.post("/v1/console/mail-accounts/{mail_account_id}/verification/resend", auth=Auth.CONSOLE, status=202,
          tag="mail")
def resend_verification_code(call: Call) -> Reply:
    """E-mail a new code ("Je n'ai pas reçu le code"); the previous one stops working. Once a minute."""
    return _account_reply(call, call.app.mail.resend_verification_code(call.account_id, _mail_account_id(call)))


# -- the letter (Campus fiche 11) ------------------------------------------------------------
@api.get("/v1/console/letter-templates/{slug}", auth=Auth.CONSOLE, tag="mail")
def get_letter_template(call: Call) -> Reply:
    """The "Connexion des personnels" letter (the default until the school changes it) and its placeholders."""
    template = call.app.mail.get_letter_template(call.account_id, call.path["slug"])
    return Reply(letter_template_view(template), etag=template.etag)


@api.put("/v1/console/letter-templates/{slug}", auth=Auth.CONSOLE, body=LetterTemplateBody, tag="mail")
def put_letter_template(call: Call, body: LetterTemplateBody) -> Reply:
    """Change the letter; an unknown placeholder is refused (422 naming it)."""
    template = call.app.mail.put_letter_template(call.account_id, call.path["slug"], body.title, body.body,
                                            if_match=call.if_match)
    return Reply(letter_template_view(template), etag=template.etag)


@api.post("/v1/console/users/connection-details", auth=Auth.CONSOLE, body=ConnectionDetails, status=202,
          tag="mail")
def send_connection_details(call: Call, body: ConnectionDetails) -> Reply:
    """E-mail each selected user a new password in the PDF letter; users without an e-mail are listed apart."""
    result = call.app.mail.send_connection_details(call.account_id, body.logins, body.mail_account_id)
    return Reply({
        "mail_account_id": str(result.mail_account.id),
        "queued": result.sent,
        "without_email": result.without_email,
        "waiting_for": call.app.outbox.smtp_waiting_reason(),
    })


# -- the outbox ------------------------------------------------------------------------------
@api.get("/v1/console/outbox", auth=Auth.CONSOLE, query=OutboxParams, tag="mail")
def list_outbox(call: Call) -> dict:
    """The school's mail, newest first: recipient, subject, state, attempts, last error (never the content)."""
    waiting = call.app.outbox.smtp_waiting_reason()
    messages = call.app.outbox.list_outbox(call.account_id, call.query.state, call.query.limit)
    return {"smtp_configured": waiting is None, "waiting_for": waiting,
            "messages": [message_view(m, waiting) for m in messages]}


@api.get("/v1/console/outbox/{message_id}", auth=Auth.CONSOLE, tag="mail")
def get_outbox_message(call: Call) -> dict:
    """One message of the outbox (never its content)."""
    message = call.app.outbox.get_outbox_message(call.account_id, _uuid(call.path["message_id"], "message"))
    return message_view(message, call.app.outbox.smtp_waiting_reason())
