"""How a queued message is kept secret and handed over: sealing, the server's mail key, SMTP.

Not a use case: the outbox (campus/services/outbox.py) decides what to send and
when; this module only seals a message's content with AES-256-GCM under a key of
its own (bound to the message id), wraps that key with the server's mail key
(``CAMPUS_MAIL_KEY`` or ``<data_dir>/mail-key``), and delivers the opened
message through :mod:`smtplib`. See docs/MAIL.md for the reasoning.
"""

from __future__ import annotations

import base64
import os
import secrets
import smtplib
import ssl
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SMTP_TIMEOUT = 30.0
TLS_MODES = ("none", "starttls", "ssl")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}


# -- sealing -----------------------------------------------------------------------------------
def new_message_key() -> bytes:
    """A fresh random AES-256 key for one message."""
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, message_id: UUID, data: bytes) -> bytes:
    """AES-256-GCM of `data`, bound to the message's id; nonce first."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, data, message_id.bytes)


def unseal(key: bytes, message_id: UUID, sealed: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], message_id.bytes)


def unwrap_key(master: bytes, message_id: UUID, wrapped: bytes) -> bytes | None:
    """A message key sealed (:func:`seal`) under the mail key `master`, or None if another mail key sealed it."""
    try:
        return unseal(master, message_id, wrapped)
    except InvalidTag:
        return None


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


def refused_for_good(exc: Exception) -> bool:
    """The server refused the recipient for good (5xx): retrying cannot help."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    return False


def describe_failure(exc: Exception) -> str:
    """A delivery failure as the outbox shows it (at most 300 characters)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = "; ".join(f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
                         for code, msg in exc.recipients.values())
        return f"recipient refused: {text}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
