"""Three real ``campus serve`` on ONE PostgreSQL schema, under concurrent load spread over them (issue 9,
second "Done when"). The school's rules hold whichever server answers:

- at most 6 modification seats (logins racing for the last seats);
- never zero superadministrators (every superadministrator demoted at once);
- unique planning names (both plannings renamed to one name at once);
- a user of status "user" never holds the Administration profile (status change and assignments at once);
- suspension after 10 failed logins, whichever servers counted them (one by one, and in a burst);
- plain record creations never answer 409; as_of reads never 500 under load; every stored event is in each
  server's history exactly once (history = SSE = stored events), also when ids commit out of order (a
  neighbouring school's events, held 0.2 s between taking their ids and committing by a trigger); `as_of`
  now is the current state; along every aggregate's versions timestamps never decrease;
- three servers start together on an empty schema (a round of its own, and the module's servers).

The servers (module fixture ``cluster``) are started together on an empty schema, behind a "proxy" (the test:
``CAMPUS_TRUSTED_PROXIES=127.0.0.1``, so ``X-Forwarded-For`` picks the client address of login guesses).
Each test opens its own school (its own controller domain). Races release their threads with a barrier;
each thread has its own client, bound to a server round-robin. Every test also checks that no answer was a
5xx and that no server logged a traceback meanwhile. The scheduler's backlog is checked elsewhere
(tests/e2e/test_scheduler_servers.py); kill -9 in tests/e2e/test_server_crash.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_checks import (
    CLUSTER_ENV,
    OPERATOR_TOKEN,
    Checks,
    Cluster,
    School,
    assert_as_of_now_is_current,
    assert_history_is_the_store,
    assert_stream_is_the_history,
    bearer,
    check_store,
    converged_history,
    expect,
    history,
    in_parallel,
    now_iso,
    outcome,
    race,
    records,
    short,
    slow_commits,
    stored_events,
)
from pg_support import drop_schema, new_schema, postgres_or_skip

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SERVERS = 3


# -- the cluster: three servers started together on an empty schema --------------------------------------------
def _e2e_conftest(config: pytest.Config) -> Any:
    """tests/e2e/conftest.py as pytest loaded it (test modules cannot import it by name)."""
    here = Path(__file__).with_name("conftest.py").resolve()
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == here:
            return plugin
    raise RuntimeError("tests/e2e/conftest.py is not loaded")


class StartedCluster(Cluster):
    start_failures: list[str]


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartedCluster]:
    """Three servers launched together on a fresh (empty) schema, one snapshots folder, one operator token.
    A server that fails to start is noted in `start_failures` (for the start-up test) and launched again,
    so the other tests still run."""
    postgres_or_skip()
    campus_server = _e2e_conftest(request.config).CampusServer
    schema = new_schema()
    shared = tmp_path_factory.mktemp("many_servers")
    env = {"CAMPUS_OPERATOR_TOKEN": OPERATOR_TOKEN, **CLUSTER_ENV}
    servers = []
    for i in range(SERVERS):
        (shared / f"server{i}").mkdir()
        servers.append(campus_server(shared / f"server{i}", postgres_schema=schema, extra_env=env,
                                     data_dir=shared / "data", snapshots_dir=shared / "snapshots"))
    started = StartedCluster(servers, schema)
    started.start_failures = []
    try:
        for server in servers:
            server.launch()
        for i, server in enumerate(servers):
            try:
                server.wait_started()
            except pytest.fail.Exception as failed:
                started.start_failures.append(f"server {i}: {short(str(failed))}")
                server.stop()
                server.start()
        yield started
    finally:
        started.close_clients()
        for server in servers:
            server.stop()
        drop_schema(schema)


# -- start-up ---------------------------------------------------------------------------------------------------
def _one_store(group: Cluster) -> None:
    """An account opened through the first server is read through every other."""
    mark = group.mark()
    opened = expect(group.client(0).post("/v1/operator/accounts", headers=bearer(OPERATOR_TOKEN), json={
        "establishment": "Lycée du démarrage", "manager": {"name": "C. D.", "email": "cd@ecole.fr"}}), 201)
    for i in range(len(group)):
        read = expect(group.client(i).get(f"/v1/operator/accounts/{opened['hosting_number']}",
                                          headers=bearer(OPERATOR_TOKEN)), 200)
        assert read["hosting_number"] == opened["hosting_number"]
    group.assert_clean(mark)


def test_three_servers_start_together_on_an_empty_schema(make_cluster) -> None:
    # (First in the file, so that with one worker it runs before the module's servers exist: every idle
    # server holds about 14 PostgreSQL connections, and six at once come close to max_connections = 100.)
    # When three servers are launched together on an empty schema (the old code failed to start one of them
    # in 2 of 6 rounds), then each comes up
    try:
        servers = make_cluster(SERVERS, together=True, extra_env=CLUSTER_ENV)
    except pytest.fail.Exception as failed:
        pytest.fail(short(str(failed)))
    group = Cluster(servers, schema="")
    try:
        # And they share one store
        _one_store(group)
    finally:
        group.close_clients()


def test_the_shared_servers_started_together_too(cluster: StartedCluster) -> None:
    # The module's servers were launched together on an empty schema as well: each came up the first time
    assert not cluster.start_failures, "\n\n".join(cluster.start_failures)
    _one_store(cluster)


# -- at most 6 modification seats -----------------------------------------------------------------------------
SEAT_ROUNDS = 3
RACERS = [f"prof{i}" for i in range(1, 6)]


def test_at_most_six_modification_seats_whichever_server_takes_them(cluster: StartedCluster) -> None:
    mark = cluster.mark()
    # Given a school whose licence has 6 seats in modification, 4 of them taken from 4 stations
    school = School(cluster, base=True)
    school.create_users([(login, "user") for login in RACERS])
    school.assign(school.p1, "modification", RACERS)
    clients = [cluster.client(i) for i in range(len(RACERS))]
    held = in_parallel([lambda i=i: school.log_in(clients[i], "prof1", station=f"Poste fixe {i}")
                        for i in range(4)])
    assert [r.status_code for r in held] == [201] * 4, [r.text for r in held]
    seats = expect(school.http.get("/v1/console/licence/seats", headers=school.console), 200)
    assert (seats["total"], seats["used"]) == (6, 4), seats

    for round_ in range(SEAT_ROUNDS):
        # When five users log in in modification at once, over the three servers, for the 2 free seats
        cluster.warm(clients)
        answers = race([lambda i=i: school.log_in(clients[i], RACERS[i], station=f"Course {round_}")
                        for i in range(len(RACERS))])
        # Then two get a seat and three are told no seat is free
        tally = Counter(outcome(a) for a in answers)
        assert tally == {"201": 2, "409 no_free_seat": 3}, f"round {round_}: {dict(tally)}"
        # And every server counts 6 seats used, none free
        for i in range(SERVERS):
            client = cluster.client(i)
            seats = expect(client.get("/v1/console/licence/seats", headers=school.console), 200)
            assert (seats["used"], seats["free"]) == (6, 0), f"round {round_}, server {i}: {seats}"
            listing = expect(client.get(f"/v1/console/plannings/{school.p1}/connections", headers=school.console),
                             200)
            assert listing["counts"]["access"]["modification"] == 6, (round_, i, listing["counts"])
        # And once the two winners log out, two seats are free again
        for answer in answers:
            if answer.status_code == 201:
                token = answer.json()["token"]
                assert cluster.client(round_).delete("/v1/sessions/current", headers=bearer(token)).status_code == 204
        seats = expect(school.http.get("/v1/console/licence/seats", headers=school.console), 200)
        assert seats["used"] == 4, f"round {round_}: {seats}"
    cluster.assert_clean(mark)


# -- never zero superadministrators -----------------------------------------------------------------------------
SUPERADMIN_ROUNDS = 8
SUPERADMINS = ["pmartin", "sadmin2", "sadmin3"]


def test_never_zero_superadministrators_whichever_server_demotes(cluster: StartedCluster) -> None:
    mark = cluster.mark()
    # Given a school with an active controller and three superadministrators
    school = School(cluster)
    school.create_users([("sadmin2", "superadministrator"), ("sadmin3", "superadministrator")])
    clients = [cluster.client(i) for i in range(len(SUPERADMINS))]

    for round_ in range(SUPERADMIN_ROUNDS):
        # When all three are demoted at once, each through another server
        cluster.warm(clients)
        answers = race([lambda i=i: clients[i].patch(f"/v1/console/users/{SUPERADMINS[i]}", headers=school.console,
                                                     json={"status": "base_administrator"})
                        for i in range(len(SUPERADMINS))])
        tally = Counter(outcome(a) for a in answers)
        # Then the last one is refused: the controller keeps a superadministrator
        assert tally == {"200": 2, "409 last_superadministrator": 1}, f"round {round_}: {dict(tally)}"
        for i in range(SERVERS):
            users = school.users(cluster.client(i))
            remaining = [login for login in SUPERADMINS if users[login]["status"] == "superadministrator"]
            assert len(remaining) == 1, f"round {round_}, server {i}: superadministrators now {remaining}"
        # (promote the demoted ones again for the next round)
        demoted = [SUPERADMINS[i] for i, a in enumerate(answers) if a.status_code == 200]
        for login in demoted:
            expect(school.http.patch(f"/v1/console/users/{login}", headers=school.console,
                                     json={"status": "superadministrator"}), 200)
    cluster.assert_clean(mark)


# -- unique planning names -----------------------------------------------------------------------------------------
NAME_ROUNDS = 8


def test_planning_names_stay_unique_whichever_server_renames(cluster: StartedCluster) -> None:
    mark = cluster.mark()
    school = School(cluster, activate=False)
    clients = [cluster.client(i) for i in range(2)]
    for round_ in range(NAME_ROUNDS):
        # When both plannings are renamed to one name at once, through two servers
        name = f"Année {round_}"
        cluster.warm(clients)
        answers = race([lambda i=i, pid=pid: clients[i].patch(f"/v1/console/plannings/{pid}",
                                                             headers=school.console, json={"name": name})
                        for i, pid in enumerate((school.p1, school.p2))])
        # Then one is renamed and the other refused
        assert sorted(a.status_code for a in answers) == [200, 409], (
            f"round {round_}: {[(a.status_code, a.text[:200]) for a in answers]}")
        # And no server shows two plannings of one name
        for i in range(SERVERS):
            names = [p["name"].casefold() for p in school.plannings(cluster.client(i))]
            assert len(set(names)) == len(names), f"round {round_}, server {i}: {names}"
    cluster.assert_clean(mark)


# -- the status/profile rule -------------------------------------------------------------------------------------
STATUS_ROUNDS = 8


def test_a_user_of_status_user_never_holds_administration(cluster: StartedCluster) -> None:
    mark = cluster.mark()
    # Given a base administrator, badmin, who holds no profile
    school = School(cluster, activate=False)
    school.create_users([("badmin", "base_administrator")])
    clients = [cluster.client(i) for i in range(3)]
    for round_ in range(STATUS_ROUNDS):
        # When, at once, badmin is given status "user" through one server and the Administration profile
        # of both plannings through the two others
        cluster.warm(clients)
        demote, *assign = race([
            lambda: clients[0].patch("/v1/console/users/badmin", headers=school.console, json={"status": "user"}),
            *[lambda i=i, pid=pid: clients[i].put(f"/v1/console/plannings/{pid}/profiles/administration",
                                                 headers=school.console, json={"logins": ["pmartin", "badmin"]})
              for i, pid in ((1, school.p1), (2, school.p2))]])
        statuses = [demote.status_code, *(a.status_code for a in assign)]
        assert set(statuses) <= {200, 409, 422}, [(a.status_code, a.text[:300]) for a in (demote, *assign)]
        # Then either the demotion won (both assignments refused) or it was refused (an assignment won first)
        if demote.status_code == 200:
            assert [a.status_code for a in assign] == [422, 422], f"round {round_}: {statuses}"
        else:
            assert demote.status_code == 409 and 200 in statuses, f"round {round_}: {statuses}"
        # And no server shows a "user" holding Administration
        for i in range(SERVERS):
            status = school.users(cluster.client(i))["badmin"]["status"]
            held = [p["number"] for p in school.plannings(cluster.client(i))
                    if "badmin" in p["profiles"]["administration"]]
            assert not (status == "user" and held), (
                f"round {round_}, server {i}: badmin has status user and holds Administration on {held}")
        # (back to the start: base administrator, no profile)
        for pid in (school.p1, school.p2):
            school.assign(pid, "administration", ["pmartin"])
        if demote.status_code == 200:
            expect(school.http.patch("/v1/console/users/badmin", headers=school.console,
                                     json={"status": "base_administrator"}), 200)
    cluster.assert_clean(mark)


# -- suspension after 10 failures, whichever server counted them -------------------------------------------------
WRONG = "Not-the-password-42!"
BURST = 12


def test_suspension_after_ten_failures_whichever_server_counted_them(cluster: StartedCluster) -> None:
    mark = cluster.mark()
    # Given a school whose teacher prof1 may log in (in consultation) to planning01
    school = School(cluster, base=True)
    school.create_users([("prof1", "user")])
    school.assign(school.p1, "consultation", ["prof1"])
    clients = [cluster.client(i) for i in range(BURST)]
    suspended = "/v1/console/security/suspended-addresses"

    def guess(i: int, address: str, password: str = WRONG) -> httpx.Response:
        return school.log_in(clients[i], "prof1", station=f"Poste {i}", access="consultation",
                             password=password, address=address)

    # ---- One address guesses ten times, one guess at a time, each through the next server -------------------
    slow = "203.0.113.10"
    answers = [guess(i, slow) for i in range(10)]
    assert [outcome(a) for a in answers] == ["401 invalid_credentials"] * 9 + ["429 address_suspended"], (
        [outcome(a) for a in answers])
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 900
    # Then the right password is refused from there on every server, and served from elsewhere
    for i in range(SERVERS):
        assert outcome(guess(i, slow, school.passwords["prof1"])) == "429 address_suspended"
    assert guess(0, "203.0.113.11", school.passwords["prof1"]).status_code == 201

    # ---- Another address fires a burst of guesses at all three servers at once --------------------------------
    fast = "203.0.113.20"
    late_clients = [cluster.client(i) for i in range(SERVERS)]
    cluster.warm(clients + late_clients)

    def right_password_after_the_burst() -> list[httpx.Response]:
        # The right password, sent while the burst's guesses are being checked: BURST wrong guesses came before
        # it, so it must not be checked (at most 10 failures are)
        time.sleep(0.2)
        return in_parallel([lambda i=i: school.log_in(late_clients[i], "prof1", station=f"Tard {i}",
                                                       access="consultation", address=fast)
                            for i in range(SERVERS)])

    *burst, late = race([*(lambda i=i: guess(i, fast) for i in range(BURST)), right_password_after_the_burst])
    tally = Counter(outcome(a) for a in burst)
    listed = {s["address"]: s for s in expect(school.http.get(suspended, headers=school.console), 200)[
        "suspended_addresses"]}
    afterwards = [outcome(guess(i, fast, school.passwords["prof1"])) for i in range(SERVERS)]
    seen = (f"burst of {BURST} wrong guesses: {dict(tally)}; suspended addresses: "
            f"{ {a: s['failures'] for a, s in listed.items()} }; the right password sent 0.2 s after the burst: "
            f"{[outcome(a) for a in late]}; the right password afterwards: {afterwards}")
    # Then nine guesses are told "wrong password", every other one 429: ten failures, whichever server counted
    assert tally == {"401 invalid_credentials": 9, "429 address_suspended": BURST - 9}, seen
    assert listed.keys() == {slow, fast}, seen
    assert (listed[slow]["failures"], listed[fast]["failures"]) == (10, 10), seen
    # And the right password sent after the burst got no answer but 429 (it was not checked), as afterwards
    assert [outcome(a) for a in late] == ["429 address_suspended"] * SERVERS, seen
    assert afterwards == ["429 address_suspended"] * SERVERS, seen
    cluster.assert_clean(mark)


# -- concurrent writes and reads: no 409, views = store, as_of now = now, timestamps ---------------------------
WRITERS = 6  # one teacher each, 6 seats
RECORDS_PER_WRITER = 20
KINDS = ("teachers", "classes", "subjects")


def _record(kind: str, writer: int, n: int) -> dict:
    if kind == "teachers":
        return {"last_name": f"PROF{writer}-{n}", "first_name": "Anne"}
    if kind == "classes":
        return {"name": f"{writer}e{n}", "level": "6e"}
    return {"name": f"Matière {writer}-{n}", "short_name": f"M{writer}{n}"}


def test_concurrent_load_keeps_views_equal_to_the_store(cluster: StartedCluster) -> None:
    mark = cluster.mark()
    # Given a school with a base in service and six teachers, logged in at once over the three servers, and a
    # neighbouring school on the same servers (other schools' commands run at the same time: their events'
    # ids commit in any order)
    school = School(cluster, base=True)
    neighbour = School(cluster, activate=False)
    teachers = [f"teach{i}" for i in range(WRITERS)]
    school.create_users([(login, "user") for login in teachers])
    school.assign(school.p1, "modification", teachers)
    clients = [cluster.client(i) for i in range(WRITERS)]
    sessions = race([lambda i=i: school.log_in(clients[i], teachers[i], station=f"Salle {i}")
                     for i in range(WRITERS)])
    assert [s.status_code for s in sessions] == [201] * WRITERS, [s.text for s in sessions]
    tokens = [s.json()["token"] for s in sessions]

    acknowledged: dict[str, dict] = {}  # record id -> the record answered
    refused: list[str] = []
    as_of_answers: list[tuple[int, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(i: int) -> None:
        http = clients[i]
        for n in range(RECORDS_PER_WRITER):
            kind = KINDS[(i + n) % len(KINDS)]
            r = http.post(f"/v1/plannings/{school.p1}/records/{kind}", headers=bearer(tokens[i]),
                          json=_record(kind, i, n))
            with lock:
                if r.status_code == 201:
                    acknowledged[r.json()["id"]] = {"kind": kind, **r.json()}
                else:
                    refused.append(f"{kind}: {r.status_code} {r.text[:200]}")
            if n % 5 == 4 and r.status_code == 201:  # and change a record now and then
                changed = http.patch(f"/v1/plannings/{school.p1}/records/{kind}/{r.json()['id']}",
                                     headers=bearer(tokens[i]), json=_record(kind, i, n + 100))
                with lock:
                    if changed.status_code == 200:
                        acknowledged[r.json()["id"]] = {"kind": kind, **changed.json()}
                    else:
                        refused.append(f"change {kind}: {changed.status_code} {changed.text[:200]}")

    def console_writer(manager: School, planning_id: str, server: int, pause: float) -> None:
        http = cluster.client(server)
        n = 0
        while not stop.is_set():
            r = http.patch(f"/v1/console/plannings/{planning_id}", headers=manager.console,
                           json={"publication_name": f"Publication {n}"})
            with lock:
                if r.status_code != 200:
                    refused.append(f"planning: {r.status_code} {r.text[:200]}")
            n += 1
            time.sleep(pause)

    def as_of_reader(i: int) -> None:
        http = cluster.client(i)
        while not stop.is_set():
            for path, headers in ((f"/v1/console/plannings/{school.p1}/base", school.console),
                                  (f"/v1/console/plannings/{school.p1}", school.console),
                                  (f"/v1/plannings/{school.p1}/records/classes", bearer(tokens[i]))):
                r = http.get(path, headers=headers, params={"as_of": now_iso()})
                with lock:
                    as_of_answers.append((r.status_code, r.text[:200] if r.status_code != 200 else ""))
            # (and the newest of the history: a read that makes the server's views catch up)
            r = http.get("/v1/console/history", headers=neighbour.console, params={"limit": 1, "after": 1 << 40})
            with lock:
                as_of_answers.append((r.status_code, r.text[:200] if r.status_code != 200 else ""))

    # When the six teachers add (and change) records at once, the manager changes the planning, and readers
    # read the past, all spread over the three servers
    background = [
        threading.Thread(target=console_writer, args=(school, school.p1, 1, 0.05)),
        *[threading.Thread(target=console_writer, args=(neighbour, pid, i, 0.0))
          for i, pid in enumerate((neighbour.p1, neighbour.p2, neighbour.p1))],
        *[threading.Thread(target=as_of_reader, args=(i,)) for i in range(SERVERS)]]
    # (the neighbour's events commit 0.2 s after taking their ids: later ids of the school commit before them)
    with slow_commits(cluster.schema, 0.2, originator_ids=[neighbour.p1, neighbour.p2]):
        for thread in background:
            thread.start()
        try:
            race([lambda i=i: writer(i) for i in range(WRITERS)])
        finally:
            stop.set()
            for thread in background:
                thread.join(30)

    print(f"load: {len(acknowledged)} records acknowledged, {len(as_of_answers)} reads under load,"
          f" {len(stored_events(cluster.schema))} events stored in the schema")
    checks = Checks()
    # Then every write was taken: no 409 for a write nobody else touched, no 5xx
    with checks.check("every write acknowledged"):
        assert not refused, f"{len(refused)} writes refused, e.g. {refused[:3]}"
        assert len(acknowledged) == WRITERS * RECORDS_PER_WRITER
    # And the past was readable throughout
    with checks.check("as_of (and history) reads under load"):
        bad = Counter(status for status, _ in as_of_answers if status != 200)
        assert not bad, (f"{len(as_of_answers)} as_of reads under load, answered {dict(bad)}:"
                         f" {[t for s, t in as_of_answers if s != 200][:3]}")

    for i in range(SERVERS):
        http = cluster.client(i)
        where = f"server {i}"
        # And every server lists every acknowledged record, as acknowledged
        with checks.check(f"{where}: records listed = records acknowledged"):
            listed = {}
            for kind in KINDS:
                listed.update({r["id"]: {"kind": kind, **r} for r in records(http, tokens[i], school.p1, kind)})
            assert listed == acknowledged, f"{len(listed)} records listed, {len(acknowledged)} acknowledged"
        # And its history holds every stored event of the school exactly once, and nothing else (the
        # neighbour's too)
        events: list[dict] = []
        with checks.check(f"{where}: history = stored events"):
            events, stored = converged_history(http, school.console, cluster.schema, school.tenant)
            assert_history_is_the_store(events, stored, where)
        with checks.check(f"{where}: the neighbour's history = its stored events"):
            assert_history_is_the_store(*converged_history(http, neighbour.console, cluster.schema, neighbour.tenant),
                                        f"{where}, the neighbour")
        # And its live stream sends exactly that history
        with checks.check(f"{where}: SSE = history"):
            assert_stream_is_the_history(http, school.console, events or history(http, school.console), where)
        # And as_of now is what is now
        with checks.check(f"{where}: as_of now = now"):
            assert_as_of_now_is_current(http, school, tokens[i], KINDS, where)
    # And along every aggregate's versions (every school of the schema), timestamps never decrease
    with checks.check("store: versions contiguous, timestamps never decrease"):
        check_store(stored_events(cluster.schema))
    with checks.check("no 5xx, no traceback"):
        cluster.assert_clean(mark)
    checks.assert_all()
