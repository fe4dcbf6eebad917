"""Configuration, read once at the composition root and passed down.

Nothing else in campus reads ``os.environ``. Tests build a :class:`Settings`
directly.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_DOMAIN_SUFFIX = "pronote-campus.net"
# CAMPUS_OPERATOR_TOKEN shorter than this stops the start-up (the generated one has 43 characters).
MIN_OPERATOR_TOKEN_LENGTH = 32


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    # Saves and archives of bases: <snapshots_dir>/<account id>/<backup id>.campus
    snapshots_dir: Path = Path("./snapshots")
    # PostgreSQL: a libpq-style URL, e.g. postgresql://campus@127.0.0.1:5432/campus
    postgres_dsn: str | None = None
    # Extra eventsourcing variables (POSTGRES_* and others) passed to the library as-is.
    library_env: Mapping[str, str] = field(default_factory=dict)
    operator_token: str | None = None
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
    console_session_hours: int = 12
    max_body_bytes: int = 1024 * 1024
    # Uploaded base files (loads) are streamed to <data_dir>/tmp under this cap.
    max_upload_bytes: int = 256 * 1024 * 1024
    # The largest page of the history list (its `limit`); also the page the export and stream read at a time.
    history_page_max: int = 1000
    # The product version the school-year change installs (CAMPUS_RELEASE_VERSION); None: the year
    # the coming school year starts in ("2027" for 2027-2028), as the seeds name versions.
    release_version: str | None = None
    # A live history stream sends a comment after this many quiet seconds (and checks its session).
    history_heartbeat_seconds: float = 15.0
    # An open history stream checks its console session at least this often (and before each event).
    history_session_check_seconds: float = 5.0
    # PostgreSQL: no statement runs longer than this (CAMPUS_STATEMENT_TIMEOUT_SECONDS).
    statement_timeout_seconds: float = 60.0
    # Views (history, timeline): a read waits at most this long for the view to hold every event
    # committed before it (503 `view_behind` after; CAMPUS_VIEW_WAIT_SECONDS), and the process
    # leading a view looks at the log this often for other processes' writes (CAMPUS_VIEW_POLL_SECONDS;
    # its own writes wake it at once). See docs/HISTORY.md.
    view_wait_seconds: float = 10.0
    view_poll_seconds: float = 0.1
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    # Failed authentications per (school, client address): after `login_failures_max` within
    # `login_failures_window_minutes`, the address is suspended for `login_suspension_minutes`.
    login_failures_max: int = 10
    login_failures_window_minutes: int = 15
    login_suspension_minutes: int = 15
    # Failed console logins from one address across every hosting number (the same window): at this
    # many, console logins from that address are refused until enough failures leave the window.
    console_login_failures_max: int = 30
    # Reverse proxies whose X-Forwarded-For is believed (addresses or CIDRs); none by default.
    trusted_proxies: tuple[str, ...] = ()
    # Mail (docs/MAIL.md). Without an SMTP host, mail stays queued in the outbox and it says why.
    smtp_host: str | None = None
    smtp_port: int | None = None  # default by TLS mode: 25 (none), 587 (starttls), 465 (ssl)
    smtp_tls: str = "starttls"  # none | starttls | ssl
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    mail_from: str | None = None  # the envelope and From address; default no-reply@<domain suffix>
    # Seals queued messages' keys (base64 of 32 bytes); default: <data_dir>/mail-key, made once.
    mail_key: str | None = field(default=None, repr=False)
    mail_retry_seconds: float = 30.0  # first retry after a failure; doubles each time, at most 1 hour
    mail_max_attempts: int = 8  # then the message is abandoned
    mail_poll_seconds: float = 2.0  # the sender also wakes at once when mail is queued

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if environ is None else environ
        kwargs: dict = {}
        if env.get("CAMPUS_DATA_DIR"):
            kwargs["data_dir"] = Path(env["CAMPUS_DATA_DIR"])
        if env.get("CAMPUS_SNAPSHOTS_DIR"):
            kwargs["snapshots_dir"] = Path(env["CAMPUS_SNAPSHOTS_DIR"])
        if env.get("CAMPUS_POSTGRES_DSN"):
            kwargs["postgres_dsn"] = env["CAMPUS_POSTGRES_DSN"]
        kwargs["library_env"] = {k: v for k, v in env.items() if k.startswith("POSTGRES_")}
        if env.get("CAMPUS_OPERATOR_TOKEN"):
            kwargs["operator_token"] = operator_token_checked(env["CAMPUS_OPERATOR_TOKEN"], "CAMPUS_OPERATOR_TOKEN")
        if env.get("CAMPUS_DOMAIN_SUFFIX"):
            kwargs["domain_suffix"] = env["CAMPUS_DOMAIN_SUFFIX"]
        if env.get("CAMPUS_LOG_FORMAT"):
            kwargs["log_format"] = env["CAMPUS_LOG_FORMAT"]
        if env.get("CAMPUS_LOG_LEVEL"):
            kwargs["log_level"] = env["CAMPUS_LOG_LEVEL"]
        if env.get("CAMPUS_MAX_BODY_BYTES"):
            kwargs["max_body_bytes"] = int(env["CAMPUS_MAX_BODY_BYTES"])
        if env.get("CAMPUS_MAX_UPLOAD_BYTES"):
            kwargs["max_upload_bytes"] = int(env["CAMPUS_MAX_UPLOAD_BYTES"])
        if env.get("CAMPUS_RELEASE_VERSION"):
            kwargs["release_version"] = env["CAMPUS_RELEASE_VERSION"].strip()
        if env.get("CAMPUS_STATEMENT_TIMEOUT_SECONDS"):
            kwargs["statement_timeout_seconds"] = float(env["CAMPUS_STATEMENT_TIMEOUT_SECONDS"])
        for name in ("view_wait_seconds", "view_poll_seconds"):
            if env.get(f"CAMPUS_{name.upper()}"):
                kwargs[name] = _positive_seconds(f"CAMPUS_{name.upper()}", env[f"CAMPUS_{name.upper()}"])
        if env.get("CAMPUS_HISTORY_HEARTBEAT_SECONDS"):
            kwargs["history_heartbeat_seconds"] = float(env["CAMPUS_HISTORY_HEARTBEAT_SECONDS"])
        if env.get("CAMPUS_HISTORY_SESSION_CHECK_SECONDS"):
            kwargs["history_session_check_seconds"] = _positive_seconds(
                "CAMPUS_HISTORY_SESSION_CHECK_SECONDS", env["CAMPUS_HISTORY_SESSION_CHECK_SECONDS"])
        for name in ("login_failures_max", "login_failures_window_minutes", "login_suspension_minutes",
                     "console_login_failures_max"):
            if env.get(f"CAMPUS_{name.upper()}"):
                kwargs[name] = _positive_int(f"CAMPUS_{name.upper()}", env[f"CAMPUS_{name.upper()}"])
        if env.get("CAMPUS_TRUSTED_PROXIES"):
            kwargs["trusted_proxies"] = parse_trusted_proxies(env["CAMPUS_TRUSTED_PROXIES"])
        kwargs.update(_mail_settings(env))
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    @property
    def uses_postgres(self) -> bool:
        return bool(self.postgres_dsn or self.library_env.get("POSTGRES_DBNAME"))

    def persistence_env(self) -> dict[str, str]:
        """The eventsourcing library's environment for our one Application."""
        if not self.uses_postgres:
            return {
                "PERSISTENCE_MODULE": "campus.infra.store:DurableSQLiteFactory",
                "SQLITE_DBNAME": str(self.data_dir / "campus.sqlite3"),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        # campus appends events itself (campus/commands.py), in the transaction holding the
        # school's advisory lock; the factory adds a statement timeout and bindable connections.
        env = {
            "PERSISTENCE_MODULE": "campus.infra.store:CampusPostgresFactory",
            "POSTGRES_STATEMENT_TIMEOUT": str(self.statement_timeout_seconds),
            # A command's transaction stays open while it reads and checks: allow for long ones (loads).
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "300",
            # Two connections kept open, up to 20 on demand (a command holds one for its whole run).
            "POSTGRES_POOL_SIZE": "2",
            "POSTGRES_MAX_OVERFLOW": "18",
            "POSTGRES_CONNECT_TIMEOUT": "10",
        }
        if self.postgres_dsn:
            env.update(dsn_to_library_env(self.postgres_dsn))
        env.update(self.library_env)
        env.setdefault("POSTGRES_USER", "postgres")
        env.setdefault("POSTGRES_PASSWORD", "")
        env.setdefault("POSTGRES_HOST", "127.0.0.1")
        return env


def dsn_to_library_env(dsn: str) -> dict[str, str]:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("CAMPUS_POSTGRES_DSN must be a postgresql:// URL")
    env = {
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }
    schema = parse_qs(parts.query).get("schema")
    if schema:
        env["POSTGRES_SCHEMA"] = schema[0]
    return env


def _mail_settings(env: Mapping[str, str]) -> dict:
    """CAMPUS_SMTP_* and CAMPUS_MAIL_*; a bad value stops the start-up."""
    kwargs: dict = {}
    for name in ("smtp_host", "smtp_user", "smtp_password", "mail_from", "mail_key"):
        if env.get(f"CAMPUS_{name.upper()}"):
            kwargs[name] = env[f"CAMPUS_{name.upper()}"].strip()
    if env.get("CAMPUS_SMTP_TLS"):
        tls = env["CAMPUS_SMTP_TLS"].strip().lower()
        if tls not in ("none", "starttls", "ssl"):
            raise ValueError(f"CAMPUS_SMTP_TLS must be none, starttls or ssl, not {tls!r}")
        kwargs["smtp_tls"] = tls
    for name in ("smtp_port", "mail_max_attempts"):
        if env.get(f"CAMPUS_{name.upper()}"):
            kwargs[name] = _positive_int(f"CAMPUS_{name.upper()}", env[f"CAMPUS_{name.upper()}"])
    for name in ("mail_retry_seconds", "mail_poll_seconds"):
        if env.get(f"CAMPUS_{name.upper()}"):
            value = float(env[f"CAMPUS_{name.upper()}"])
            if value <= 0:
                raise ValueError(f"CAMPUS_{name.upper()} must be a positive number of seconds")
            kwargs[name] = value
    return kwargs


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return number


def _positive_seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


def operator_token_checked(token: str, origin: str) -> str:
    """The operator token, or ValueError naming `origin` if it is too short to be a secret."""
    token = token.strip()
    if len(token) < MIN_OPERATOR_TOKEN_LENGTH:
        raise ValueError(f"{origin} must be at least {MIN_OPERATOR_TOKEN_LENGTH} characters long (it has "
                         f"{len(token)}); leave it unset and campus generates one")
    return token


def parse_trusted_proxies(value: str) -> tuple[str, ...]:
    """`CAMPUS_TRUSTED_PROXIES`: comma-separated addresses or CIDRs; a bad one stops the start-up."""
    proxies = tuple(part.strip() for part in value.split(",") if part.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ValueError(f"CAMPUS_TRUSTED_PROXIES: {proxy!r} is neither an IP address nor a CIDR") from None
    return proxies


def operator_token(settings: Settings) -> tuple[str, bool]:
    """The operator token, and whether it was made now: from the settings, else kept in the data dir
    (made once, mode 0600; servers starting together keep the first one written).

    A token shorter than 32 characters (in the settings or the file) stops the start-up with one line.
    """
    path = settings.data_dir / "operator-token"
    try:
        if settings.operator_token:
            return operator_token_checked(settings.operator_token, "CAMPUS_OPERATOR_TOKEN"), False
        if path.exists():
            return operator_token_checked(path.read_text(), f"the operator token in {path}"), False
    except (ValueError, OSError) as exc:
        raise SystemExit(f"campus: {exc}") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    part = path.with_name(f"operator-token.{os.getpid()}.part")  # whole before it has its name
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    try:
        os.link(part, path)
    except FileExistsError:  # another server made it first: use theirs
        return operator_token_checked(path.read_text(), f"the operator token in {path}"), False
    finally:
        part.unlink()
    return token, True
