"""kill -9 of one of two real ``campus serve`` on one PostgreSQL schema, under load (issue 9, third "Done
when"): nothing acknowledged is lost, the other server keeps answering, and its views keep up.

Two servers are started (one after the other) on an empty schema. Four teachers add records over both;
readers ask the survivor-to-be for the past and the history meanwhile. The server holding the history view's
lease (if its log says so; else the first) is killed with SIGKILL mid-load; writers whose server died go on
through the other. While the victim runs, each of its events waits 0.15 s between taking its id and
committing (a trigger conditioned on its connections' application name): the survivor's later ids commit
first, and the kill most likely leaves a taken id that never commits. Then:

- every record acknowledged (201) by either server, before or after the kill, is listed by the survivor, as
  acknowledged; the survivor answered every request it got, during and after the kill, without 5xx or 409;
- the survivor's history holds every stored event of the school exactly once (history = SSE = stored
  events), `as_of` now is the current state, and along every aggregate's versions the store has no gap and
  no timestamp going backwards;
- restarted, the killed server lists the same records and the same history.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from cluster_checks import (
    CLUSTER_ENV,
    Checks,
    Cluster,
    School,
    assert_as_of_now_is_current,
    assert_history_is_the_store,
    assert_stream_is_the_history,
    bearer,
    check_store,
    converged_history,
    history,
    now_iso,
    race,
    records,
    slow_commits,
    stored_events,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WRITERS = 4
KINDS = ("teachers", "classes")
LOAD_BEFORE_KILL = 1.5  # seconds of load on both servers before the kill
LOAD_AFTER_KILL = 1.5  # seconds of load on the survivor alone


def history_lease_holder(servers: list) -> int | None:  # noqa: ANN001
    """The server whose log says it took the history view's lease, if any does."""
    for i, server in enumerate(servers):
        for record in server.json_lines():
            if (record.get("event") == "view_leading" and record.get("view") == "history"
                    or record.get("event") == "lease_acquired" and "history" in str(record.get("lease"))):
                return i
    return None


def test_kill_9_of_one_of_two_servers_under_load(make_cluster) -> None:
    servers = make_cluster(2, extra_env=CLUSTER_ENV, start=False)
    for i, server in enumerate(servers):  # one after the other (starting together: the other file)
        server.env["PGAPPNAME"] = f"campus-crash-{i}"  # names its connections, for the slow commits below
        server.start()
    cluster = Cluster(servers, servers[0].postgres_schema)
    # Given a school with a base in service and four teachers in modification, two logged in through each server
    school = School(cluster, base=True)
    teachers = [f"teach{i}" for i in range(WRITERS)]
    school.create_users([(login, "user") for login in teachers])
    school.assign(school.p1, "modification", teachers)
    sessions = race([lambda i=i: school.log_in(cluster.client(i), teachers[i], station=f"Salle {i}")
                     for i in range(WRITERS)])
    assert [s.status_code for s in sessions] == [201] * WRITERS, [s.text for s in sessions]
    tokens = [s.json()["token"] for s in sessions]
    victim = history_lease_holder(servers)
    victim = 0 if victim is None else victim
    survivor = 1 - victim
    mark = cluster.mark()

    acknowledged: dict[str, dict] = {}  # record id -> the record as answered
    by_server = {0: 0, 1: 0}
    after_kill = {0: 0, 1: 0}
    unanswered: list[str] = []  # requests the killed server never answered (not acknowledged)
    refused: list[str] = []  # answers other than 201 (or 200 for reads)
    lock = threading.Lock()
    stop = threading.Event()
    killed = threading.Event()

    def writer(i: int) -> None:
        home = i % 2
        http = cluster.client(home)
        n = 0
        while not stop.is_set():
            kind = KINDS[n % len(KINDS)]
            body = ({"last_name": f"PROF{i}-{n}", "first_name": "Anne"} if kind == "teachers"
                    else {"name": f"{i}e{n}", "level": "6e"})
            try:
                r = http.post(f"/v1/plannings/{school.p1}/records/{kind}", headers=bearer(tokens[i]), json=body)
            except httpx.TransportError as exc:
                with lock:
                    unanswered.append(f"server {home}: {type(exc).__name__}")
                if home == victim and killed.is_set():
                    home, http = survivor, cluster.client(survivor)  # the load balancer takes it elsewhere
                    continue
                time.sleep(0.05)
                continue
            with lock:
                if r.status_code == 201:
                    acknowledged[r.json()["id"]] = {"kind": kind, **r.json()}
                    by_server[home] += 1
                    if killed.is_set():
                        after_kill[home] += 1
                else:
                    refused.append(f"server {home}{' after the kill' if killed.is_set() else ''}: {kind} "
                                   f"{r.status_code} {r.text[:200]}")
            n += 1

    def reader() -> None:
        # On the survivor all along: the past, the history, the users (a view-backed list)
        http = cluster.client(survivor)
        while not stop.is_set():
            for path, headers, params in (
                    (f"/v1/console/plannings/{school.p1}/base", school.console, {"as_of": now_iso()}),
                    ("/v1/console/history", school.console, {"limit": 5}),
                    ("/v1/console/users", school.console, {}),
                    (f"/v1/plannings/{school.p1}/records/teachers", bearer(tokens[survivor]), {"as_of": now_iso()})):
                r = http.get(path, headers=headers, params=params)
                if r.status_code != 200:
                    with lock:
                        refused.append(f"survivor read {path}{' after the kill' if killed.is_set() else ''}: "
                                       f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)] + [threading.Thread(target=reader)]
    # (the victim's events wait 0.15 s between taking their ids and committing: the survivor's later ids commit
    # first, and the kill most likely leaves an id that never commits)
    with slow_commits(cluster.schema, 0.15, application_name=f"campus-crash-{victim}"):
        for thread in threads:
            thread.start()
        try:
            # When, mid-load, the server holding the history view is killed (no shutdown at all)
            time.sleep(LOAD_BEFORE_KILL)
            servers[victim].kill()
            killed.set()
            time.sleep(LOAD_AFTER_KILL)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)

    positions = [e.position for e in stored_events(cluster.schema)]
    print(f"killed server {victim} (history lease holder: {history_lease_holder(servers)}); acknowledged per"
          f" server {by_server}, after the kill {after_kill}; unanswered {len(unanswered)}; ids never committed:"
          f" {sorted(set(range(1, max(positions) + 1)) - set(positions))}")
    checks = Checks()
    # Then the survivor answered everything, during and after the kill, and took the killed server's load
    with checks.check("the survivor answered every request"):
        assert not refused, f"{len(refused)} requests refused: {refused[:4]}"
    assert by_server[victim] > 0, "the killed server acknowledged nothing before the kill: the test proves nothing"
    with checks.check("the survivor took the load"):
        assert after_kill[survivor] > 0, f"no write was acknowledged after the kill ({by_server}, {unanswered[:3]})"
    http = cluster.client(survivor)
    where = f"the survivor (server {survivor})"
    # And every acknowledged record is there, as acknowledged
    listed: dict[str, dict] = {}
    with checks.check("nothing acknowledged is lost"):
        for kind in KINDS:
            listed.update({r["id"]: {"kind": kind, **r} for r in records(http, tokens[survivor], school.p1, kind)})
        lost = sorted(set(acknowledged) - set(listed))
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged records are lost, e.g. {lost[:5]}"
        assert {k: listed[k] for k in acknowledged} == acknowledged, "acknowledged records read back changed"
        # (what the killed server may have stored without answering is there, once, like everything else)
        assert len(listed) - len(acknowledged) <= WRITERS, (len(listed), len(acknowledged))
    # And the survivor's views keep up: its history is every stored event of the school, once; its stream
    # sends that history; as_of now is now
    events: list[dict] = []
    with checks.check(f"{where}: history = stored events"):
        events, stored = converged_history(http, school.console, cluster.schema, school.tenant)
        assert_history_is_the_store(events, stored, where)
    with checks.check(f"{where}: SSE = history"):
        assert_stream_is_the_history(http, school.console, events or history(http, school.console), where)
    with checks.check(f"{where}: as_of now = now"):
        assert_as_of_now_is_current(http, school, tokens[survivor], KINDS, where)
    with checks.check("store: versions contiguous, timestamps never decrease"):
        check_store(stored_events(cluster.schema))
    with checks.check("the survivor: no 5xx, no traceback"):
        cluster.assert_clean(mark, servers=[survivor])

    # And restarted, the killed server shows the same
    servers[victim].start()
    http = cluster.client(victim)
    where = f"the restarted server {victim}"
    with checks.check(f"{where}: same records"):
        again = {}
        for kind in KINDS:
            again.update({r["id"]: {"kind": kind, **r} for r in records(http, tokens[survivor], school.p1, kind)})
        assert again == listed, f"{len(again)} records listed, {len(listed)} by the survivor"
    with checks.check(f"{where}: history = stored events"):
        events_again, stored_again = converged_history(http, school.console, cluster.schema, school.tenant)
        assert_history_is_the_store(events_again, stored_again, where)
        assert json.dumps(events_again[:len(events)]) == json.dumps(events), "the two servers' histories differ"
    with checks.check(f"{where}: no traceback"):
        restarted_logs = servers[victim].stdout(-1) + servers[victim].stderr(-1)
        assert "Traceback" not in restarted_logs, restarted_logs[restarted_logs.find("Traceback") - 1500:][:4000]
    cluster.close_clients()
    checks.assert_all()
