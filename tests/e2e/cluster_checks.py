"""Helpers of the many-servers suites (issue 9): ``tests/e2e/test_many_servers.py`` (rules under concurrent
load spread over three servers) and ``tests/e2e/test_server_crash.py`` (kill -9 of one of two servers).

- :class:`Cluster` wraps the real ``campus serve`` processes of one PostgreSQL schema: httpx clients bound
  to a server by index (round-robin), every answer they got (to assert that none was a 5xx), and the count of
  ``Traceback`` in each server's logs (to assert that none appeared during a test).
- :class:`School` opens a school over HTTP (operator → console → licence → controller domain →
  superadministrator → activation), with a unique controller domain so several schools share one cluster.
- :func:`race` fires calls from threads released together by a barrier (each call has its own client).
- :func:`stored_events` reads the schema's ``campus_events`` straight from PostgreSQL and decodes each event
  (its tenant, timestamp) with the library's mapper and campus's msgpack transcoder: the truth the views are
  compared with.
- :func:`history`, :func:`stream_messages`, :func:`converged_history`: the history list, the SSE stream, and
  the wait (bounded) for a server's history to hold every stored event of a school.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from pg_support import PG_DSN
from server_tools import open_console

OPERATOR_TOKEN = "cluster-operator-token-0123456789abcdef"  # what make_cluster gives every server
PASSWORD = "Ecole-Martin-2026!"
GRID = {"name": "Année 2026-2027", "first_monday": "2026-08-31", "last_sunday": "2027-07-04",
        "working_days": ["mon", "tue", "wed", "thu", "fri"], "sequences_per_day": 8, "sequence_minutes": 60,
        "split": 2}
# Behind a "proxy" (the test itself): X-Forwarded-For gives each round of login guesses its own address.
CLUSTER_ENV = {"CAMPUS_TRUSTED_PROXIES": "127.0.0.1"}
HISTORY_TIMEOUT = 20.0  # seconds a server's views get to show every stored event


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url} -> {response.status_code}"
        f" (wanted {status}): {response.text[:600]}")
    return response.json() if response.content else None


def code_of(response: httpx.Response) -> str | None:
    try:
        return response.json().get("code")
    except ValueError:
        return None


def outcome(response: httpx.Response) -> str:
    """`201`, or `409 no_free_seat`: what a test tallies."""
    code = code_of(response) if response.status_code >= 400 else None
    return f"{response.status_code} {code}" if code else str(response.status_code)


class Checks:
    """Independent checks of one test: each runs whatever became of the others, and the test fails at the
    end naming every check that failed (so one run tells which rules hold and which do not)."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.failed.append(f"[{name}] {str(exc)[:1500]}")

    def assert_all(self) -> None:
        assert not self.failed, f"{len(self.failed)} check(s) failed:\n" + "\n".join(self.failed)


def short(message: str) -> str:
    """A server's start-up failure in a few lines: the first, the errors and their details, the last."""
    text = [line.rstrip() for line in str(message).splitlines() if line.strip()]
    telling = [line for line in text[1:-1] if "Error:" in line or "DETAIL" in line or "Exception:" in line]
    return "\n".join(text[:1] + telling[-6:] + text[-1:]) if len(text) > 2 else "\n".join(text)


# -- the servers ---------------------------------------------------------------------------------------------
@dataclass
class Answer:
    server: int
    method: str
    path: str
    status: int
    body: str = ""


class Cluster:
    """Real servers on one schema, and every answer the test's clients got from them."""

    def __init__(self, servers: Sequence[Any], schema: str) -> None:
        self.servers = list(servers)
        self.schema = schema
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._clients: list[httpx.Client] = []

    def __len__(self) -> int:
        return len(self.servers)

    def _hook(self, index: int) -> Callable[[httpx.Response], None]:
        def record(response: httpx.Response) -> None:
            body = ""
            if response.status_code >= 500:
                response.read()
                body = response.text[:800]
            with self._lock:
                self.answers.append(Answer(index, response.request.method, response.request.url.path,
                                           response.status_code, body))
        return record

    def client(self, index: int, timeout: float = 30.0) -> httpx.Client:
        """A new client of server `index % n` (each thread of a race uses its own)."""
        i = index % len(self.servers)
        client = httpx.Client(base_url=self.servers[i].base_url, timeout=timeout,
                              event_hooks={"response": [self._hook(i)]})
        with self._lock:
            self._clients.append(client)
        return client

    def warm(self, clients: Sequence[httpx.Client]) -> None:
        """Open each client's connection beforehand, so a race starts on open sockets."""
        for client in clients:
            expect(client.get("/healthz"), 200)

    def close_clients(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def tracebacks(self) -> list[int]:
        return [server.logs().count("Traceback") for server in self.servers]

    def mark(self) -> tuple[int, list[int]]:
        """Where the answers and the logs are now; :meth:`assert_clean` looks only after it."""
        return len(self.answers), self.tracebacks()

    def assert_clean(self, since: tuple[int, list[int]], servers: Sequence[int] | None = None) -> None:
        """No answer was a 5xx, and no server (of `servers`) logged a traceback, since the mark."""
        start, counts = since
        errors = [a for a in self.answers[start:] if a.status >= 500 and (servers is None or a.server in servers)]
        assert not errors, f"{len(errors)} answers were server errors, e.g.: {errors[:5]}"
        now = self.tracebacks()
        for i, server in enumerate(self.servers):
            if servers is not None and i not in servers:
                continue
            if now[i] > counts[i]:
                logs = server.logs()
                at = logs.rfind("Traceback")
                raise AssertionError(f"server {i} logged {now[i] - counts[i]} new traceback(s); the last:\n"
                                     f"{logs[max(0, at - 1500):at + 3000]}")


def race(calls: Sequence[Callable[[], Any]], timeout: float = 60.0) -> list[Any]:
    """Run every call in its own thread, all released at once by a barrier; their results, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait(timeout)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [f.result(timeout=timeout + 60) for f in futures]


def in_parallel(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run calls concurrently (no barrier): set-up work spread over the servers."""
    with ThreadPoolExecutor(max(1, len(calls))) as pool:
        return list(pool.map(lambda call: call(), calls))


# -- a school -------------------------------------------------------------------------------------------------
class School:
    """A school opened over HTTP on a cluster, with its console token and plannings."""

    def __init__(self, cluster: Cluster, *, activate: bool = True, base: bool = False) -> None:
        self.cluster = cluster
        self.label = f"ms{uuid.uuid4().hex[:12]}"  # the controller domain: unique in the deployment
        self.http = cluster.client(0)
        opened, self.console = open_console(self.http, OPERATOR_TOKEN, f"Collège {self.label}")
        self.account = opened
        expect(self.http.put("/v1/console/controller/domain", headers=self.console, json={"name": self.label}), 200)
        plannings = expect(self.http.get("/v1/console/plannings", headers=self.console), 200)["plannings"]
        by_number = {p["number"]: p["id"] for p in plannings}
        self.p1, self.p2 = by_number[1], by_number[2]
        self.passwords: dict[str, str] = {"pmartin": PASSWORD}
        expect(self.http.post("/v1/console/superadministrator", headers=self.console, json={
            "first_name": "Pierre", "last_name": "MARTIN", "login": "pmartin", "password": PASSWORD,
            "password_confirmation": PASSWORD}), 201)
        if activate:
            expect(self.http.post("/v1/console/controller/activation", headers=self.console), 200)
        self.base: dict | None = None
        if base:
            self.base = expect(self.http.post(f"/v1/console/plannings/{self.p1}/bases", headers=self.console,
                                              json=GRID), 201)
        # The school's tenant, as its events' meta names it: the account's id (a uuid5 of its number).
        from campus.aggregates.account import account_id_for

        self.tenant = str(account_id_for(opened["hosting_number"]))

    def create_users(self, specs: Sequence[tuple[str, str]]) -> None:
        """(login, status) users, created concurrently over the servers (argon2 hashes cost CPU)."""
        def make(i: int, login: str, status: str) -> Callable[[], None]:
            def call() -> None:
                client = self.cluster.client(i)
                user = expect(client.post("/v1/console/users", headers=self.console, json={
                    "login": login, "last_name": login.upper(), "first_name": "Test", "status": status}), 201)
                self.passwords[login] = user["password"]
            return call

        in_parallel([make(i, login, status) for i, (login, status) in enumerate(specs)])

    def assign(self, planning_id: str, profile: str, logins: list[str], client: httpx.Client | None = None) -> dict:
        return expect((client or self.http).put(f"/v1/console/plannings/{planning_id}/profiles/{profile}",
                                                headers=self.console, json={"logins": logins}), 200)

    def log_in(self, client: httpx.Client, login: str, *, station: str, access: str | None = None,
               password: str | None = None, address: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"domain": self.label, "login": login,
                                "password": password if password is not None else self.passwords[login],
                                "planning": self.p1, "mode": "administrative", "station": station}
        if access:
            body["access"] = access
        headers = {"X-Forwarded-For": address} if address else {}
        return client.post("/v1/sessions", json=body, headers=headers)

    def users(self, client: httpx.Client | None = None) -> dict[str, dict]:
        listed = expect((client or self.http).get("/v1/console/users", headers=self.console), 200)
        return {u["login"]: u for u in (listed["users"] if isinstance(listed, dict) else listed)}

    def plannings(self, client: httpx.Client | None = None) -> list[dict]:
        return expect((client or self.http).get("/v1/console/plannings", headers=self.console), 200)["plannings"]


# -- the store ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    position: int
    aggregate_id: str
    version: int
    type: str
    tenant: str | None
    timestamp: datetime


def stored_events(schema: str) -> list[Stored]:
    """Every event of the schema, in position order, decoded as campus decodes them."""
    from eventsourcing.persistence import Mapper, StoredEvent

    from campus.infra.transcoder import MsgpackTranscoder

    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            f'SELECT originator_id, originator_version, topic, state, notification_id FROM "{schema}".campus_events'
            " ORDER BY notification_id").fetchall()
    mapper = Mapper(transcoder=MsgpackTranscoder())
    found = []
    for originator_id, version, topic, state, position in rows:
        event = mapper.to_domain_event(StoredEvent(originator_id=originator_id, originator_version=version,
                                                   topic=topic, state=bytes(state)))
        meta = getattr(event, "meta", None) or {}
        found.append(Stored(int(position), str(originator_id), int(version), topic.split(":", 1)[1],
                            meta.get("tenant"), event.timestamp))
    return found


@contextmanager
def slow_commits(schema: str, seconds: float, *, originator_ids: Sequence[str] = (),
                 application_name: str | None = None) -> Iterator[None]:
    """While inside: every event of these aggregates (or inserted by the server whose connections carry that
    ``application_name``, its ``PGAPPNAME``), once inserted (its id taken), waits `seconds` before its
    transaction may commit. Other transactions' later ids commit first (ids commit out of order, as they do on
    PostgreSQL whenever transactions overlap: a view that reads "after the last id" skips them), and a server
    killed meanwhile leaves an id that never commits."""
    when = ""
    if originator_ids:
        when = "WHEN (NEW.originator_id IN ({}))".format(", ".join(f"'{uuid.UUID(i)}'" for i in originator_ids))
    sleep = f"PERFORM pg_sleep({seconds});"
    if application_name:
        sleep = f"IF current_setting('application_name') = '{application_name}' THEN {sleep} END IF;"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE OR REPLACE FUNCTION "{schema}".campus_test_slow_commit() RETURNS trigger'
                     f" LANGUAGE plpgsql AS $$ BEGIN {sleep} RETURN NULL; END $$")
        conn.execute(f'CREATE TRIGGER campus_test_slow_commit AFTER INSERT ON "{schema}".campus_events'
                     f' FOR EACH ROW {when} EXECUTE FUNCTION "{schema}".campus_test_slow_commit()')
    try:
        yield
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP TRIGGER IF EXISTS campus_test_slow_commit ON "{schema}".campus_events')
            conn.execute(f'DROP FUNCTION IF EXISTS "{schema}".campus_test_slow_commit()')


def check_store(events: list[Stored]) -> None:
    """Along every aggregate's versions: versions 1..n without a gap and timestamps that never decrease."""
    by_aggregate: dict[str, list[Stored]] = defaultdict(list)
    for e in events:
        by_aggregate[e.aggregate_id].append(e)
    gaps, backwards = [], []
    for aggregate_id, versions in by_aggregate.items():
        versions.sort(key=lambda e: e.version)
        if [e.version for e in versions] != list(range(1, len(versions) + 1)):
            gaps.append((aggregate_id, [e.version for e in versions]))
        for before, after in zip(versions, versions[1:]):
            if after.timestamp < before.timestamp:
                backwards.append((after.type, aggregate_id, before.version, before.timestamp.isoformat(),
                                  after.version, after.timestamp.isoformat()))
    assert not gaps, f"versions with gaps: {gaps[:5]}"
    assert not backwards, (f"{len(backwards)} events stamped earlier than the version before them"
                           f" (type, aggregate, version, timestamp, next version, its timestamp): {backwards[:5]}")


# -- the views ------------------------------------------------------------------------------------------------------
def history(client: httpx.Client, console: dict[str, str], **params: Any) -> list[dict]:
    events: list[dict] = []
    after = None
    while True:
        query = {**params, "limit": 500, **({"after": after} if after is not None else {})}
        page = expect(client.get("/v1/console/history", headers=console, params=query), 200)
        events += page["events"]
        after = page["next"]
        if after is None:
            return events


def converged_history(client: httpx.Client, console: dict[str, str], schema: str, tenant: str,
                      timeout: float = HISTORY_TIMEOUT) -> tuple[list[dict], list[Stored]]:
    """The school's history once it holds every stored event of the school (waits up to `timeout`),
    with the stored events it was compared with. Fails with the difference if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        stored = [e for e in stored_events(schema) if e.tenant == tenant]
        listed = history(client, console)
        if {e["position"] for e in listed} >= {e.position for e in stored} or time.monotonic() > deadline:
            return listed, stored
        time.sleep(0.25)


def assert_history_is_the_store(listed: list[dict], stored: list[Stored], where: str) -> None:
    """Every stored event of the school in the history exactly once, as stored; nothing else."""
    positions = [e["position"] for e in listed]
    duplicates = sorted({p for p in positions if positions.count(p) > 1})
    assert not duplicates, f"{where}: positions listed more than once: {duplicates[:10]}"
    assert positions == sorted(positions), f"{where}: the history is not in position order"
    by_position = {e.position: e for e in stored}
    missing = sorted(set(by_position) - set(positions))
    extra = sorted(set(positions) - set(by_position))
    assert not missing, (f"{where}: {len(missing)} of {len(stored)} stored events are missing from the history,"
                         f" e.g. {[(p, by_position[p].type) for p in missing[:10]]}")
    assert not extra, f"{where}: {len(extra)} listed events are not stored events of the school: {extra[:10]}"
    pairs = [(e["aggregate_id"], e["version"], e["type"]) for e in listed]
    assert pairs == [(by_position[p].aggregate_id, by_position[p].version, by_position[p].type)
                     for p in positions], f"{where}: listed events differ from the stored ones"
    listed_keys = [(e["aggregate_id"], e["version"]) for e in listed]
    assert len(set(listed_keys)) == len(listed_keys), f"{where}: an (aggregate, version) is listed twice"


def stream_messages(client: httpx.Client, console: dict[str, str], count: int, timeout: float = 20.0) -> list[dict]:
    """The first `count` messages of the live history stream (from the beginning of the school's history)."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", "/v1/console/history/stream", headers=console,
                       timeout=httpx.Timeout(timeout, connect=5.0)) as response:
        assert response.status_code == 200, response.read().decode(errors="replace")[:500]
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if len(messages) >= count or time.monotonic() > deadline:
                break
            if line.startswith(":"):
                continue
            if line == "":
                if "data" in fields:
                    messages.append({"id": fields.get("id"), "event": fields.get("event"),
                                     "data": json.loads(fields["data"])})
                    if len(messages) >= count:
                        break
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return messages


def assert_stream_is_the_history(client: httpx.Client, console: dict[str, str], listed: list[dict],
                                 where: str) -> None:
    """The SSE stream sends exactly the listed events, in order, each once (then nothing else yet)."""
    got = stream_messages(client, console, len(listed))
    assert len(got) == len(listed), f"{where}: the stream sent {len(got)} of the {len(listed)} listed events"
    assert [m["id"] for m in got] == [str(e["position"]) for e in listed], f"{where}: stream ids differ from the list"
    assert [m["data"] for m in got] == listed, f"{where}: stream data differ from the list"


# -- reading the present and the past ------------------------------------------------------------------------------
def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def records(client: httpx.Client, token: str, planning_id: str, kind: str, as_of: str | None = None) -> list[dict]:
    found: list[dict] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"after": after} if after else {}),
                                  **({"as_of": as_of} if as_of else {})}
        page = expect(client.get(f"/v1/plannings/{planning_id}/records/{kind}", headers=bearer(token),
                                 params=params), 200)
        found += page["records"]
        after = page["next"]
        if after is None:
            return found


def assert_as_of_now_is_current(client: httpx.Client, school: School, token: str, kinds: Sequence[str],
                                where: str) -> None:
    """The base, its records and the planning read `as_of` now are what they are now."""
    console, p1 = school.console, school.p1
    current_base = expect(client.get(f"/v1/console/plannings/{p1}/base", headers=console), 200)
    current_planning = expect(client.get(f"/v1/console/plannings/{p1}", headers=console), 200)
    current = {kind: records(client, token, p1, kind) for kind in kinds}
    time.sleep(0.01)
    instant = now_iso()
    past_base = expect(client.get(f"/v1/console/plannings/{p1}/base", headers=console,
                                  params={"as_of": instant}), 200)
    assert (past_base["id"], past_base["counts"]) == (current_base["id"], current_base["counts"]), (
        f"{where}: the base as of now {past_base['counts']} is not the base now {current_base['counts']}")
    for kind in kinds:
        past = records(client, token, p1, kind, as_of=instant)
        missing = {r["id"] for r in current[kind]} - {r["id"] for r in past}
        assert past == current[kind], (f"{where}: {kind} as of now differ from now ({len(past)} vs"
                                       f" {len(current[kind])}; missing as of now: {sorted(missing)[:5]})")
    past_planning = expect(client.get(f"/v1/console/plannings/{p1}", headers=console,
                                      params={"as_of": instant}), 200)
    past_planning = {k: v for k, v in past_planning.items() if k not in ("as_of", "position")}
    assert past_planning == current_planning, f"{where}: the planning as of now is not the planning now"
