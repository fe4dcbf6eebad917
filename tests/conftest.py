"""Shared fixtures: stores (SQLite always, PostgreSQL when reachable), apps, clients.

PostgreSQL tests run against the server named by CAMPUS_TEST_POSTGRES_DSN
(default postgresql://postgres@127.0.0.1:5432/test), each in a schema of its
own that is dropped afterwards. Without a reachable server they skip, unless
CAMPUS_REQUIRE_POSTGRES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pg_support import PG_DSN, drop_schema, new_schema, postgres_or_skip

from campus.infra.clock import ManualClock
from campus.infra.settings import Settings

OPERATOR_TOKEN = "operator-test-token-0123456789-abcdefghij"  # 32+ characters, as `campus serve` requires


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """A test that runs a command in-process (`campus views rebuild` sets the level to warning)
    leaves structlog's configuration as it found it, so later tests in the worker see every line."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped after the test."""
    postgres_or_skip()
    schema = new_schema()
    yield schema
    drop_schema(schema)


def sqlite_settings(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", snapshots_dir=tmp_path / "snapshots",
                    operator_token=OPERATOR_TOKEN, **kw)


def postgres_settings(tmp_path: Path, schema: str, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", snapshots_dir=tmp_path / "snapshots",
                    operator_token=OPERATOR_TOKEN, postgres_dsn=f"{PG_DSN}?schema={schema}", **kw)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each store: the test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    schema = request.getfixturevalue("pg_schema")
    return postgres_settings(tmp_path, schema)


@pytest.fixture
def sqlite_only_settings(tmp_path: Path) -> Settings:
    return sqlite_settings(tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


# -- a real SMTP server (mail tests: tests/integration/test_mail.py, tests/e2e/test_mail_server.py) ---------
class SmtpServer:
    """A real local SMTP server (aiosmtpd) on a free port, keeping every message it accepts.

    ``stop()`` then ``start()`` simulate an outage (same port). With `user` and
    `password`, AUTH is required (over plain text: it is a local test server).
    """

    host = "127.0.0.1"

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        import socket
        import threading

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        self.user, self.password = user, password
        self.received: list = []  # email.message.EmailMessage, in arrival order
        self.envelopes: list[tuple[str, list[str]]] = []  # (MAIL FROM, RCPT TO) of each
        self._lock = threading.Lock()
        self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        kwargs: dict = {}
        if self.user:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=False)
        self._controller = Controller(self, hostname=self.host, port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == self.user.encode()
              and auth_data.password == self.password.encode())
        return AuthResult(success=ok)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802 - aiosmtpd's hook
        import email
        from email import policy

        message = email.message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self.received.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def messages(self) -> list:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 30.0) -> list:
        """The messages received, once there are at least `count` (fails after `timeout` seconds)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                return found
            time.sleep(0.02)
        pytest.fail(f"the SMTP server received {len(self.messages())} message(s) in {timeout}s; expected {count}")

    def env(self) -> dict[str, str]:
        """The CAMPUS_SMTP_* settings of a `campus serve` that sends through this server."""
        env = {"CAMPUS_SMTP_HOST": self.host, "CAMPUS_SMTP_PORT": str(self.port), "CAMPUS_SMTP_TLS": "none"}
        if self.user:
            env.update(CAMPUS_SMTP_USER=self.user, CAMPUS_SMTP_PASSWORD=self.password or "")
        return env


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running local SMTP server, stopped after the test."""
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_smtp_server() -> Iterator:
    """Factory: ``make_smtp_server(user, password)`` starts a local SMTP server (AUTH required when
    credentials are given); every server is stopped after the test."""
    servers: list[SmtpServer] = []

    def make(user: str | None = None, password: str | None = None) -> SmtpServer:
        servers.append(SmtpServer(user, password).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()
