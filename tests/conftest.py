"""Shared fixtures: stores (SQLite always, PostgreSQL when reachable), apps, clients.

PostgreSQL tests run against the server named by CAMPUS_TEST_POSTGRES_DSN
(default postgresql://postgres@127.0.0.1:5432/test), each in a schema of its
own that is dropped afterwards. Without a reachable server they skip, unless
CAMPUS_REQUIRE_POSTGRES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from campus.clock import ManualClock
from campus.settings import Settings

PG_DSN = os.environ.get("CAMPUS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("CAMPUS_REQUIRE_POSTGRES") == "1"
OPERATOR_TOKEN = "operator-test-token-0123456789-abcdefghij"  # 32+ characters, as `campus serve` requires


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_DSN}: {exc}"
    return None


_PG_PROBLEM: str | None | bool = False


def postgres_or_skip() -> None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _postgres_problem()
    if _PG_PROBLEM:
        if REQUIRE_PG:
            pytest.fail(f"CAMPUS_REQUIRE_POSTGRES=1 but {_PG_PROBLEM}")
        pytest.skip(f"{_PG_PROBLEM} (set CAMPUS_REQUIRE_POSTGRES=1 to make this a failure)")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped after the test."""
    postgres_or_skip()
    import psycopg

    schema = f"campus_test_{uuid.uuid4().hex[:12]}"
    yield schema
    # A server stopped a moment ago may still have a backend finishing its last statement:
    # if the drop deadlocks with it, PostgreSQL aborts one of the two; try again.
    for attempt in range(5):
        try:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == 4:
                raise
            time.sleep(0.5)


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
