"""End-to-end fixtures: a REAL ``campus serve`` process, driven over HTTP.

:class:`CampusServer` starts ``python -m campus serve`` on a free port with its
own data dir (and, for PostgreSQL, its own schema from the ``pg_schema`` fixture
of ``tests/conftest.py``), writes each run's stdout/stderr to files under the
test's ``tmp_path`` and answers its log lines afterwards. ``restart()`` stops the
process (SIGTERM) and starts it again on the same data dir / schema / port.

:class:`CampusGuide` drives the Campus guide walkthrough (fiches 1-8) step by
step; each step checks its HTTP statuses and keeps every secret it sees, so
tests can later look for them in logs and responses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg_support import PG_DSN

# Same rule as tests/conftest.py (which owns postgres_or_skip and pg_schema).

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
STORES = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_dsn_for(schema: str) -> str:
    return f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={schema}"


class CampusServer:
    """One ``campus serve`` subprocess (possibly restarted) and its logs."""

    def __init__(self, workdir: Path, *, postgres_schema: str | None = None,
                 extra_env: dict[str, str] | None = None, data_dir: Path | None = None,
                 snapshots_dir: Path | None = None, extra_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.extra_args = list(extra_args or [])
        self.data_dir = data_dir or workdir / "data"
        self.postgres_schema = postgres_schema
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CAMPUS_", "POSTGRES_", "SQLITE_", "PERSISTENCE_"))}
        env["CAMPUS_LOG_FORMAT"] = "json"
        env["PYTHONUNBUFFERED"] = "1"
        env["CAMPUS_SNAPSHOTS_DIR"] = str(snapshots_dir or workdir / "snapshots")
        if postgres_schema:
            env["CAMPUS_POSTGRES_DSN"] = pg_dsn_for(postgres_schema)
        env.update(extra_env or {})
        self.env = env
        self.process: subprocess.Popen | None = None
        self.runs: list[tuple[Path, Path]] = []  # (stdout, stderr) of each start
        self.returncodes: list[int] = []
        self.responses = 0  # HTTP responses received through every client of this server
        self._clients: list[httpx.Client] = []
        self._client: httpx.Client | None = None

    # -- lifecycle ---------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "campus", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), *self.extra_args]

    def start(self) -> CampusServer:
        self.launch()
        self.wait_started()
        return self

    def wait_started(self) -> CampusServer:
        self._wait_healthy()
        return self

    def kill(self) -> int | None:
        """SIGKILL (no shutdown at all), as a crash would; returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        process.kill()
        process.wait(10)
        self.returncodes.append(process.returncode)
        return process.returncode

    def launch(self) -> CampusServer:
        """Start the process without waiting for it to answer."""
        assert self.process is None or self.process.poll() is not None, "already running"
        n = len(self.runs)
        out_path, err_path = self.workdir / f"stdout.{n}.log", self.workdir / f"stderr.{n}.log"
        self.runs.append((out_path, err_path))
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.workdir, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL)
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last_error: Exception | None = None
        with httpx.Client(base_url=self.base_url, timeout=2.0) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"campus serve exited with {self.process.returncode} before answering /healthz;"
                                f" stderr:\n{self.stderr()}")
                try:
                    response = probe.get("/healthz")
                except httpx.TransportError as exc:
                    last_error = exc
                else:
                    self.responses += 1
                    if response.status_code == 200 and response.json() == {"status": "ok"}:
                        return
                    last_error = AssertionError(f"/healthz answered {response.status_code} {response.text}")
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"campus serve did not answer /healthz within {STARTUP_TIMEOUT}s ({last_error});"
                    f" stderr:\n{self.stderr()}")

    def stop(self, *, close_clients: bool = True) -> int | None:
        """SIGTERM, wait; SIGKILL after STOP_TIMEOUT. Returns the exit code (None if not running)."""
        if close_clients:
            self._close_clients()
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.returncodes.append(process.returncode)
        return process.returncode

    def restart(self) -> CampusServer:
        """Stop and start again on the same port, data dir and schema; clients stay usable."""
        self.stop(close_clients=False)
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- HTTP ----------------------------------------------------------------
    def new_client(self, **kw: Any) -> httpx.Client:
        def count(response: httpx.Response) -> None:
            self.responses += 1

        client = httpx.Client(base_url=self.base_url, timeout=kw.pop("timeout", 15.0),
                              event_hooks={"response": [count]}, **kw)
        self._clients.append(client)
        return client

    @property
    def client(self) -> httpx.Client:
        """The default client (kept across restarts)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def _close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._client = None

    # -- logs ------------------------------------------------------------------
    def stderr(self, run: int | None = None) -> str:
        paths = [err for _, err in self.runs] if run is None else [self.runs[run][1]]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def stdout(self, run: int | None = None) -> str:
        paths = [out for out, _ in self.runs] if run is None else [self.runs[run][0]]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def logs(self) -> str:
        """Everything every run of the process wrote (stdout and stderr)."""
        return self.stdout() + self.stderr()

    def log_lines(self, run: int | None = None) -> list[str]:
        return (self.stdout(run) + self.stderr(run)).splitlines()

    def json_lines(self, run: int | None = None) -> list[dict]:
        """The structured log lines (JSON objects) of one run, or of all."""
        records = []
        for line in self.log_lines(run):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def non_json_lines(self, run: int | None = None) -> list[str]:
        lines = []
        for line in self.log_lines(run):
            try:
                record = json.loads(line)
            except ValueError:
                lines.append(line)
                continue
            if not isinstance(record, dict):
                lines.append(line)
        return lines

    def request_lines(self, run: int | None = None) -> list[dict]:
        return [r for r in self.json_lines(run) if r.get("event") == "request"]

    def wait_for_request_lines(self, count: int, timeout: float = 5.0) -> list[dict]:
        """The access lines, once at least `count` were written (written just after each response)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.request_lines()
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


def _schema_for(request: pytest.FixtureRequest, servers: list[CampusServer]) -> str:
    """The test's PostgreSQL schema, with the servers stopped BEFORE it is dropped: `pg_schema` is set up
    here, after this factory, so pytest would tear it down first; a finalizer added to the test item now
    runs before the schema's (last in, first out)."""
    schema = request.getfixturevalue("pg_schema")
    request.node.addfinalizer(lambda: [server.stop() for server in servers])
    return schema


@pytest.fixture
def make_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., CampusServer]]:
    """Factory: ``make_server(store)`` starts a server on 'sqlite' or 'postgres' (own schema)."""
    servers: list[CampusServer] = []

    def make(store: str = "sqlite", *, name: str | None = None, extra_env: dict[str, str] | None = None,
             start: bool = True, data_dir: Path | None = None, extra_args: list[str] | None = None) -> CampusServer:
        schema = _schema_for(request, servers) if store == "postgres" else None
        workdir = tmp_path / (name or f"server{len(servers)}")
        workdir.mkdir()
        server = CampusServer(workdir, postgres_schema=schema, extra_env=extra_env, data_dir=data_dir,
                              extra_args=extra_args)
        servers.append(server)
        return server.start() if start else server

    yield make
    # Stopped before pg_schema (requested inside this fixture) drops the schema.
    for server in servers:
        server.stop()


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., list[CampusServer]]]:
    """Factory: ``make_cluster(n, store)`` starts `n` real servers on ONE store — one PostgreSQL schema, or
    one SQLite data dir — sharing one snapshots folder and one operator token (as servers behind a load
    balancer would). ``start=False`` leaves them stopped; ``together=True`` starts them all at once (each
    process launched before any is waited for). Every server is stopped after the test."""
    servers: list[CampusServer] = []

    def make(n: int, store: str = "postgres", *, extra_env: dict[str, str] | None = None, start: bool = True,
             together: bool = False, schema: str | None = None) -> list[CampusServer]:
        if store == "postgres" and schema is None:
            schema = _schema_for(request, servers)
        index = len(servers)
        shared = tmp_path / f"cluster{index}"
        shared.mkdir()
        env = {"CAMPUS_OPERATOR_TOKEN": "cluster-operator-token-0123456789abcdef", **(extra_env or {})}
        made = []
        for i in range(n):
            workdir = shared / f"server{i}"
            workdir.mkdir()
            server = CampusServer(workdir, postgres_schema=schema if store == "postgres" else None, extra_env=env,
                                  data_dir=shared / "data", snapshots_dir=shared / "snapshots")
            made.append(server)
        servers.extend(made)
        if start and together:
            for server in made:
                server.launch()
            for server in made:
                server.wait_started()
        elif start:
            for server in made:
                server.start()
        return made

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return request.param


# -- the Campus guide, fiches 1-8 ----------------------------------------------------------------------
COMPLIANT_PASSWORD = "Ecole-Martin-2026!"
# Fiche 7 lists the plannings by these names.
PLANNING_NAMES = {1: "Année en cours", 2: "Préparation année suivante"}
REFUSED_PASSWORD = "martin"  # too short, no digit, no special character, not mixed case


def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        f" (wanted {status}): {response.text}")
    return response.json() if response.content else None


@dataclass(eq=False)
class CampusGuide:
    """The hosting manager's walkthrough of the Campus quick-start guide, over HTTP."""

    # What the guide uses, for tests (e2e test modules cannot import this conftest).
    COMPLIANT_PASSWORD = COMPLIANT_PASSWORD
    REFUSED_PASSWORD = REFUSED_PASSWORD
    PLANNING_NAMES = PLANNING_NAMES
    expect = staticmethod(expect)

    server: CampusServer
    operator_token: str = ""
    account: dict = field(default_factory=dict)
    certificate: str = ""
    tokens: list[str] = field(default_factory=list)
    plannings: list[dict] = field(default_factory=list)
    generated_passwords: list[str] = field(default_factory=list)
    refusal: dict = field(default_factory=dict)

    @property
    def http(self) -> httpx.Client:
        return self.server.client

    @property
    def token(self) -> str:
        return self.tokens[-1]

    @property
    def hosting_number(self) -> str:
        return self.account["hosting_number"]

    @property
    def manager_actor(self) -> str:
        return f"manager:{self.hosting_number}"

    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_token}"}

    def console(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def secrets(self) -> dict[str, str]:
        """Every secret seen during the walk, by what it is."""
        found = {"operator token": self.operator_token, "certificate": self.certificate,
                 "pmartin password": COMPLIANT_PASSWORD}
        if self.account:
            found["console password"] = self.account["console_password"]
            found["invoice number"] = self.account["invoice_number"]
        found.update({f"session token {i}": t for i, t in enumerate(self.tokens)})
        found.update({f"generated password {i}": p for i, p in enumerate(self.generated_passwords)})
        return {k: v for k, v in found.items() if v}

    # -- fiche 1 ----------------------------------------------------------------------
    def read_operator_token(self) -> str:
        self.operator_token = (self.server.data_dir / "operator-token").read_text().strip()
        return self.operator_token

    def open_account(self) -> dict:
        self.account = expect(self.http.post(
            "/v1/operator/accounts", headers=self.operator(),
            json={"establishment": "École Martin", "manager": {"name": "Claire Dupont", "email": "claire@ecole.fr"}},
        ), 201)
        return self.account

    # -- fiche 2 ----------------------------------------------------------------------
    def login(self, *, invoice: bool = False, certificate: str | None = None) -> dict:
        body: dict[str, str] = {"hosting_number": self.hosting_number, "password": self.account["console_password"]}
        if invoice:
            body["invoice_number"] = self.account["invoice_number"]
        if certificate:
            body["certificate"] = certificate
        session = expect(self.http.post("/v1/console/sessions", json=body), 201)
        self.tokens.append(session["token"])
        if session.get("certificate"):
            self.certificate = session["certificate"]
        return session

    def accept_licence(self) -> dict:
        return expect(self.http.post("/v1/console/licence-agreement", headers=self.console()), 200)

    # -- fiche 3 ----------------------------------------------------------------------
    def bind_controller(self, name: str = "monecole") -> dict:
        return expect(self.http.put("/v1/console/controller/domain", headers=self.console(), json={"name": name}), 200)

    def list_plannings(self) -> list[dict]:
        self.plannings = expect(self.http.get("/v1/console/plannings", headers=self.console()), 200)["plannings"]
        return self.plannings

    def planning(self, number: int) -> dict:
        return next(p for p in self.list_plannings() if p["number"] == number)

    def update_planning(self, planning_id: str, **changes: Any) -> dict:
        return expect(self.http.patch(f"/v1/console/plannings/{planning_id}", headers=self.console(),
                                      json=changes), 200)

    # -- fiche 4 ----------------------------------------------------------------------
    def create_superadministrator(self, password: str = COMPLIANT_PASSWORD, status: int = 201) -> dict:
        return expect(self.http.post("/v1/console/superadministrator", headers=self.console(), json={
            "first_name": "Pierre", "last_name": "MARTIN", "login": "pmartin",
            "password": password, "password_confirmation": password}), status)

    def update_user(self, login: str, **changes: Any) -> dict:
        return expect(self.http.patch(f"/v1/console/users/{login}", headers=self.console(), json=changes), 200)

    def get_user(self, login: str) -> dict:
        return expect(self.http.get(f"/v1/console/users/{login}", headers=self.console()), 200)

    def assign(self, planning_id: str, profile: str, logins: list[str]) -> dict:
        return expect(self.http.put(f"/v1/console/plannings/{planning_id}/profiles/{profile}",
                                    headers=self.console(), json={"logins": logins}), 200)

    # -- fiche 5 ----------------------------------------------------------------------
    def activate_controller(self) -> dict:
        return expect(self.http.post("/v1/console/controller/activation", headers=self.console()), 200)

    # -- fiche 8 ----------------------------------------------------------------------
    def create_user(self, login: str, last_name: str, first_name: str, **extra: Any) -> dict:
        user = expect(self.http.post("/v1/console/users", headers=self.console(), json={
            "login": login, "last_name": last_name, "first_name": first_name, **extra}), 201)
        self.generated_passwords.append(user["password"])
        return user

    def save_template(self, name: str, planning_id: str) -> dict:
        return expect(self.http.post("/v1/console/assignment-templates", headers=self.console(),
                                     json={"name": name, "planning_id": planning_id}), 201)

    def apply_template(self, planning_id: str, name: str) -> dict:
        return expect(self.http.post(f"/v1/console/plannings/{planning_id}/assignment-template",
                                     headers=self.console(), json={"name": name}), 200)

    # -- reads ------------------------------------------------------------------------
    def history(self, **params: Any) -> list[dict]:
        events: list[dict] = []
        after = None
        while True:
            query = {**params, "limit": 500, **({"after": after} if after is not None else {})}
            page = expect(self.http.get("/v1/console/history", headers=self.console(), params=query), 200)
            events += page["events"]
            after = page["next"]
            if after is None:
                return events

    def snapshot(self) -> dict:
        """Everything the console shows, to compare before and after a restart."""
        h = self.console()
        return {
            "account": expect(self.http.get("/v1/console/account", headers=h), 200),
            "controller": expect(self.http.get("/v1/console/controller", headers=h), 200),
            "plannings": expect(self.http.get("/v1/console/plannings", headers=h), 200),
            "users": expect(self.http.get("/v1/console/users", headers=h), 200),
            "templates": expect(self.http.get("/v1/console/assignment-templates", headers=h), 200),
            "history": self.history(),
        }

    # -- the whole walk -------------------------------------------------------------------
    def walk(self) -> CampusGuide:
        """Fiches 1-8 in one go (the test_walkthrough test checks each step in detail)."""
        self.read_operator_token()
        self.open_account()
        self.login(invoice=True)
        self.accept_licence()
        self.login(certificate=self.certificate)
        self.bind_controller("monecole")
        p1, p2 = self.planning(1), self.planning(2)
        self.update_planning(p1["id"], name=PLANNING_NAMES[1], net_licence=True, domain="ecole-annee-en-cours",
                             time_zone="Europe/Paris")
        self.update_planning(p2["id"], name=PLANNING_NAMES[2], net_licence=True, domain="ecole-annee-suivante",
                             time_zone="Europe/Paris")
        self.refusal = expect(self.http.post("/v1/console/superadministrator", headers=self.console(), json={
            "first_name": "Pierre", "last_name": "MARTIN", "login": "pmartin",
            "password": REFUSED_PASSWORD, "password_confirmation": REFUSED_PASSWORD}), 422)
        self.create_superadministrator()
        self.update_user("pmartin", email="pmartin@ecole.fr")
        self.update_user("pmartin", console_access=True)
        self.assign(p1["id"], "administration", ["pmartin"])
        self.assign(p2["id"], "administration", ["pmartin"])
        self.activate_controller()
        self.create_user("afilaire", "FILAIRE", "Alain")
        self.update_user("afilaire", status="base_administrator", email="afilaire@ecole.fr")
        self.assign(p1["id"], "modification", ["afilaire"])
        self.assign(p2["id"], "consultation", ["afilaire"])
        self.save_template("Année en cours", p1["id"])
        self.apply_template(p2["id"], "Année en cours")
        return self


@pytest.fixture
def guide_for() -> Callable[[CampusServer], CampusGuide]:
    return CampusGuide
