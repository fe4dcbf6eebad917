"""Secrets: generation, hashing, checking.

Passwords and other human-chosen or short secrets are hashed with argon2id.
Long random tokens (session tokens, certificates) have 256 bits of entropy, so
a SHA-256 digest is enough to store and look them up; they are compared in
constant time. Nothing here logs or returns a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2id with the library's RFC 9106 "low memory" profile: safe and fast enough
# to answer a login in well under a second on a small server.
_hasher = PasswordHasher()

SPECIALS = "!#$%&*+-=?@_"


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    if not stored_hash:
        # Spend the same time as a real check, so unknown and wrong look alike.
        _burn(secret)
        return False
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _burn(secret: str) -> None:
    try:
        _hasher.verify(_DUMMY_HASH, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        pass


_DUMMY_HASH = _hasher.hash("campus-dummy-secret-for-timing")


def new_token() -> str:
    """A bearer token or certificate: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_token(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def random_digits(n: int) -> str:
    first = secrets.choice("123456789")
    return first + "".join(secrets.choice(string.digits) for _ in range(n - 1))


def generate_password(length: int = 14) -> str:
    """A random password that satisfies :func:`password_problems`."""
    pools = [string.ascii_lowercase, string.ascii_uppercase, string.digits, SPECIALS]
    alphabet = "".join(pools)
    while True:
        chars = [secrets.choice(pool) for pool in pools]
        chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
        secrets.SystemRandom().shuffle(chars)
        candidate = "".join(chars)
        if not password_problems(candidate):
            return candidate


PASSWORD_RULES: tuple[tuple[str, str], ...] = (
    ("min_length", "must contain at least 12 characters"),
    ("letter", "must contain at least one letter"),
    ("digit", "must contain at least one digit"),
    ("special", "must contain at least one special character (neither letter nor digit)"),
    ("mixed_case", "must mix lower-case and upper-case letters"),
)


def password_problems(password: str) -> list[str]:
    """Every rule of Campus fiche 4 that `password` breaks, as messages."""
    failed = []
    checks = {
        "min_length": len(password) >= 12,
        "letter": any(c.isalpha() for c in password),
        "digit": any(c.isdigit() for c in password),
        "special": any(not c.isalnum() for c in password),
        "mixed_case": any(c.islower() for c in password) and any(c.isupper() for c in password),
    }
    for rule, message in PASSWORD_RULES:
        if not checks[rule]:
            failed.append(message)
    return failed
