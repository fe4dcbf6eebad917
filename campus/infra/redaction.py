"""One place that knows which values are secrets.

Secrets are stored only as hashes or digests, and even those never leave the
server: history, logs and responses pass through :func:`redact`.
"""

from __future__ import annotations

from typing import Any

REDACTED = "[redacted]"
SECRET_NAMES = frozenset({
    "password", "password_confirmation", "console_password", "pin", "token",
    "certificate", "invoice_number", "code", "secret", "secret_answer", "authorization",
    # Mail (campus/mail.py): a new secret answer; a queued message's sealed content.
    "new_secret_answer", "sealed_message", "verification_code", "wrapped_key", "smtp_password", "mail_key",
})
SECRET_SUFFIXES = ("_hash", "_digest", "_password", "_token", "_secret")


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_NAMES or lowered.endswith(SECRET_SUFFIXES)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def redact_log_event(logger: object, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: no secret-named field ever reaches a log line."""
    return redact(event_dict)
