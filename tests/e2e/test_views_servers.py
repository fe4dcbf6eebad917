"""Two real ``campus serve`` on one PostgreSQL schema: one of them projects the views, the other's
readers wait for it; when the projecting server is killed (kill -9), the other takes the views over
within seconds (issue 9: "views that never skip and never collide").

Checked throughout: each write is in the history read right after it from the same server (whichever
server projects), every stored event of the school is in the history exactly once, the SSE stream
sends the same events, the timeline holds every base event once, and neither view's tracking
position ever goes back.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from cluster_checks import (
    CLUSTER_ENV,
    PG_DSN,
    Cluster,
    School,
    assert_history_is_the_store,
    assert_stream_is_the_history,
    expect,
    history,
    stored_events,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
VIEWS = ("history", "timeline")
TAKEOVER_TIMEOUT = 15.0


def lease_holders(servers: list[Any], since: list[int] | None = None) -> dict[str, list[int]]:
    """For each view, the servers whose follower logged that it leads it (after line `since[i]`)."""
    holders: dict[str, list[int]] = {view: [] for view in VIEWS}
    for i, server in enumerate(servers):
        lines = server.json_lines()[since[i] if since else 0:]
        for view in VIEWS:
            if any(r.get("event") == "view_leading" and r.get("view") == view for r in lines):
                holders[view].append(i)
    return holders


def wait_for_holders(servers: list[Any], since: list[int] | None = None) -> dict[str, list[int]]:
    deadline = time.monotonic() + TAKEOVER_TIMEOUT
    while True:
        holders = lease_holders(servers, since)
        if all(holders.values()) or time.monotonic() > deadline:
            return holders
        time.sleep(0.1)


class TrackingSampler:
    """Reads both views' tracking positions every few milliseconds, from PostgreSQL itself."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.seen: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    f'SELECT (SELECT position FROM "{self.schema}".campus_view_tracking WHERE name = %s),'
                    f' (SELECT position FROM "{self.schema}".campus_tl_tracking WHERE name = %s)',
                    ("history", "timeline")).fetchone()
                self.seen.append((row[0] or 0, row[1] or 0))
                time.sleep(0.005)

    def __enter__(self) -> TrackingSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def assert_never_back(self) -> None:
        assert len(self.seen) > 50
        for index, view in enumerate(("history", "timeline")):
            positions = [p[index] for p in self.seen]
            assert positions == sorted(positions), f"the {view} tracking position went back"


def write_then_read(cluster: Cluster, school: School, server: int, login: str) -> None:
    """A write through `server`, then the history read through the same server at once: it holds the
    write and everything stored before the read, and nothing that is not stored."""
    client = cluster.client(server)
    expect(client.post("/v1/console/users", headers=school.console, json={
        "login": login, "last_name": login.upper(), "first_name": "Test", "status": "user"}), 201)
    before = {e.position for e in stored_events(cluster.schema) if e.tenant == school.tenant}
    listed = history(client, school.console)
    after = {e.position for e in stored_events(cluster.schema) if e.tenant == school.tenant}
    positions = [e["position"] for e in listed]
    assert positions == sorted(set(positions)), f"server {server}: duplicates or disorder in the history"
    assert before <= set(positions) <= after, (
        f"server {server}: the history read right after a write misses {sorted(before - set(positions))[:10]}"
        f" or holds unknown {sorted(set(positions) - after)[:10]}")
    assert any(e["type"] == "DirectoryUser.Created" and e["data"].get("login") == login for e in listed)


def _ids(schema: str, statement: str, *params: Any) -> list[int]:
    with psycopg.connect(PG_DSN) as conn:
        return [int(r[0]) for r in conn.execute(statement.format(schema=f'"{schema}"'), params)]


def assert_views_hold_the_store(cluster: Cluster, school: School, server: int) -> None:
    """The school's history (list and stream) is its stored events; both views hold every event stored
    before the read (the history read waits for them), in id order, once."""
    head = max(_ids(cluster.schema, "SELECT notification_id FROM {schema}.campus_events"))
    client = cluster.client(server)
    listed = history(client, school.console)
    assert_history_is_the_store(listed, [e for e in stored_events(cluster.schema) if e.tenant == school.tenant],
                                f"server {server}")
    assert_stream_is_the_history(client, school.console, listed, f"server {server}")
    expect(client.get(f"/v1/console/plannings/{school.p1}/base", headers=school.console,
                      params={"as_of": datetime.now(UTC).isoformat()}), 200)  # waits for the timeline
    ids = _ids(cluster.schema, "SELECT notification_id FROM {schema}.campus_events WHERE notification_id <= %s"
               " ORDER BY notification_id", head)
    base_ids = _ids(cluster.schema, "SELECT notification_id FROM {schema}.campus_events WHERE notification_id <= %s"
                    " AND topic LIKE %s ORDER BY notification_id", head, "campus.aggregates.school_base:Base.%")
    assert _ids(cluster.schema, "SELECT position FROM {schema}.campus_history WHERE position <= %s"
                " ORDER BY position", head) == ids
    assert _ids(cluster.schema, "SELECT position FROM {schema}.campus_tl_events WHERE position <= %s"
                " ORDER BY position", head) == base_ids


def test_one_server_projects_the_views_and_the_other_takes_over_when_it_is_killed(make_cluster, pg_schema):
    servers = make_cluster(2, "postgres", extra_env=CLUSTER_ENV)
    cluster = Cluster(servers, pg_schema)
    try:
        school = School(cluster, base=True)
        # One server leads each view (the other's follower finds the lease taken)
        holders = wait_for_holders(servers)
        assert all(len(found) == 1 for found in holders.values()), holders
        leader = holders["history"][0]
        mark = cluster.mark()
        with TrackingSampler(pg_schema) as sampler:
            # Writes spread over both servers, each read back at once from the server that took it
            for i in range(12):
                write_then_read(cluster, school, i % 2, f"user{i}")
            assert_views_hold_the_store(cluster, school, 1 - leader)
            cluster.assert_clean(mark)

            # When the projecting server is killed
            lines = [len(s.json_lines()) for s in servers]
            killed = servers[leader]
            killed.kill()
            survivor = 1 - leader
            # Then the other takes both views over within seconds and its readers see every write
            taken = wait_for_holders(servers, lines)
            assert taken == {view: [survivor] for view in VIEWS}, taken
            mark = cluster.mark()
            for i in range(12, 20):
                write_then_read(cluster, school, survivor, f"user{i}")
            assert_views_hold_the_store(cluster, school, survivor)
            cluster.assert_clean(mark, servers=[survivor])
        sampler.assert_never_back()
        # And no server ever logged a duplicate key or a failed projection
        for server in servers:
            logs = server.logs()
            assert "duplicate key" not in logs and "view_follower_failed" not in logs
    finally:
        cluster.close_clients()
