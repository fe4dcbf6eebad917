"""The views follow the log: every event exactly once, one projector at a time, readers wait (issue 9).

* An event whose id commits after later ids (PostgreSQL) is projected once, in id
  order, in the history and the timeline; the views do not pass it while its
  transaction is open, and a rolled-back id (a hole) does not stall them.
* Two applications on one store (as two servers): only the lease holder projects,
  the tracking positions never go back, the views equal the log; when the leader
  stops, the other takes over.
* A reader waits for the leader (never projects beside it), sees its own writes,
  also inside a command; past its bound it answers 503 ``view_behind``.
* ``campus views rebuild`` rebuilds both views identical to what they were, with
  progress, and refuses while a running server leads them.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_helpers import cheap_argon2
from pg_support import PG_DSN
from school_helpers import service_school

from campus.aggregates.user import Status
from campus.application import CampusApplication
from campus.cli import main
from campus.errors import Conflict, StoreUnavailable
from campus.infra.clock import FrozenClock, ManualClock, reset_clock, use_clock
from campus.infra.settings import Settings
from campus.projections.history import HistoryQuery

BASE_TOPIC = "campus.aggregates.school_base:Base."


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_argon2(monkeypatch)


def pg_settings(tmp_path: Path, schema: str, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", snapshots_dir=tmp_path / "snapshots",
                    postgres_dsn=f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={schema}", **kw)


@pytest.fixture
def apps() -> Iterator[list[CampusApplication]]:
    """Applications made by the test (append to the list), closed after their followers stopped."""
    made: list[CampusApplication] = []
    yield made
    for app in made:
        app.close()


class Followers:
    """The follower threads of applications, as their servers' lifespans start them."""

    def __init__(self) -> None:
        self.stops: dict[int, threading.Event] = {}
        self.threads: dict[int, list[threading.Thread]] = {}

    def start(self, app: CampusApplication) -> None:
        stop = self.stops[id(app)] = threading.Event()
        self.threads[id(app)] = [app.history.follow(stop), app.timeline.follow(stop)]

    def stop(self, app: CampusApplication) -> None:
        self.stops[id(app)].set()
        for thread in self.threads.pop(id(app)):
            thread.join(10)
            assert not thread.is_alive()

    def stop_all(self) -> None:
        for key in list(self.threads):
            self.stops[key].set()
            for thread in self.threads.pop(key):
                thread.join(10)


@pytest.fixture
def followers() -> Iterator[Followers]:
    started = Followers()
    yield started
    started.stop_all()


def spy_projections(app: CampusApplication) -> dict[str, int]:
    """Count the events each view of `app` projects (whoever calls the projector: follower or reader)."""
    counts = {"history": 0, "timeline": 0}
    for name, view in (("history", app.history), ("timeline", app.timeline)):
        original = view._project

        def spy(notifications: Any, *args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            result = _original(notifications, *args, **kw)
            counts[_name] += len(notifications)
            return result

        view._project = spy  # type: ignore[method-assign]
    return counts


# -- what the store holds against what the views hold ----------------------------------------------

def _select(app: CampusApplication, statement: str) -> list[dict]:
    with app.recorder.datastore.transaction(commit=False) as curs:
        curs.execute(statement)
        return [dict(r) for r in curs.fetchall()]


def stored(app: CampusApplication) -> list[Any]:
    return list(app.recorder.select_notifications(start=1, limit=10_000_000))


def tracked(app: CampusApplication) -> dict[str, int]:
    history = _select(app, f"SELECT position FROM {app.history.table('campus_view_tracking')} WHERE name = 'history'")
    timeline = _select(app, f"SELECT position FROM {app.history.table('campus_tl_tracking')} WHERE name = 'timeline'")
    return {"history": int(history[0]["position"]) if history else 0,
            "timeline": int(timeline[0]["position"]) if timeline else 0}


def assert_views_equal_the_log(app: CampusApplication) -> None:
    """Every stored event exactly once in the history, every base event once in the timeline, and both
    tracking positions at the last event."""
    log = stored(app)
    ids = [n.id for n in log]
    history = [int(r["position"]) for r in _select(
        app, f"SELECT position FROM {app.history.t_history} ORDER BY position")]
    assert history == ids
    timeline = [int(r["position"]) for r in _select(
        app, f"SELECT position FROM {app.timeline.t_events} ORDER BY position")]
    assert timeline == [n.id for n in log if n.topic.startswith(BASE_TOPIC)]
    assert tracked(app) == {"history": ids[-1], "timeline": ids[-1]}


def assert_timeline_equals_replay(app: CampusApplication, base_id: uuid.UUID, clock: ManualClock) -> None:
    replayed = app.repository.get(base_id)
    past = app.timeline.base_at(base_id, clock.now())
    assert past is not None and past.version == replayed.version
    assert {k: v for k, v in app.timeline.records_at(past).items() if v} == {
        k: v for k, v in replayed.records.items() if v}


# -- PostgreSQL: ids that commit out of order -----------------------------------------------------

def _begin_insert(app: CampusApplication, event: Any) -> tuple[psycopg.Connection, int]:
    """A slow writer, as campus writes: its transaction takes its id, then an id for the event; left open."""
    s = app.mapper.to_stored_event(event)
    conn = psycopg.connect(**app.locks.connect_kwargs)
    conn.execute("SELECT pg_current_xact_id()")
    row = conn.execute(
        f'INSERT INTO "{app.locks.schema}".{app.recorder.events_table_name}'
        " (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s) RETURNING notification_id",
        (s.originator_id, s.originator_version, s.topic, s.state)).fetchone()
    return conn, int(row[0])


@pytest.mark.postgres
@pytest.mark.parametrize("following", [True, False], ids=["follower", "reader-leads"])
def test_an_id_committed_late_is_projected_once_in_order_and_a_hole_does_not_stall(
        pg_schema: str, tmp_path: Path, clock: ManualClock, apps: list, followers: Followers, following: bool):
    app = CampusApplication(pg_settings(tmp_path, pg_schema, view_wait_seconds=2.0), clock=clock)
    apps.append(app)
    if following:
        followers.start(app)
    account_id, planning_id = service_school(app)
    other = app.accounts.open_account("Autre", "N", "n@example.org").account.id
    _, base = app.bases.current_base(account_id, planning_id)
    # Two real events of the base, made aside: a class added late, and one that will never be stored
    aside = copy.deepcopy(base)
    token = use_clock(FrozenClock(clock.now()))
    try:
        aside.add_record(kind="classes", record_id=uuid.uuid4(), fields={"name": "LATE"}, at=clock.now())
        aside.add_record(kind="classes", record_id=uuid.uuid4(), fields={"name": "NEVER"}, at=clock.now())
    finally:
        reset_clock(token)
    late_event, never_event = aside.collect_events()

    # Given a writer that took an id and has not committed
    conn, late_id = _begin_insert(app, late_event)
    try:
        # When later commands commit
        app.users.create_user(other, login="u1", last_name="U", first_name="Un")
        app.users.create_user(other, login="u2", last_name="U", first_name="Deux")
        assert app.recorder.max_notification_id() > late_id
        # Then no view passes the open id: a reader waits, then says the view is behind
        with pytest.raises(StoreUnavailable) as behind:
            app.history.query(HistoryQuery(tenant=str(other)))
        assert behind.value.code == "view_behind" and behind.value.status == 503
        assert max(tracked(app).values()) < late_id
        conn.commit()
    finally:
        conn.close()

    # And once it commits, both views hold it, once, in id order
    events, _ = app.history.query(HistoryQuery(tenant=str(account_id), limit=1000))
    assert [e["position"] for e in events if e["data"].get("fields") == {"name": "LATE"}] == [late_id]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert {u.login for u in app.users.list_users(other)} == {"u1", "u2"}
    app.timeline.catch_up()
    assert_views_equal_the_log(app)
    assert_timeline_equals_replay(app, base.id, clock)
    classes = app.timeline.records_at(app.timeline.base_at(base.id, clock.now()))["classes"]
    assert "LATE" in {fields["name"] for fields in classes.values()}

    # Given an id taken by a transaction that rolls back (a hole for ever)
    conn, hole_id = _begin_insert(app, never_event)
    conn.rollback()
    conn.close()
    # When a later command commits
    app.users.create_user(other, login="u3", last_name="U", first_name="Trois")
    # Then the views pass the hole within a few seconds and hold everything else
    started = time.monotonic()
    assert {u.login for u in app.users.list_users(other)} == {"u1", "u2", "u3"}
    app.timeline.catch_up()
    assert time.monotonic() - started < 5
    assert hole_id not in {n.id for n in stored(app)}
    assert_views_equal_the_log(app)
    assert_timeline_equals_replay(app, base.id, clock)


# -- two applications on one schema (two servers) ---------------------------------------------------

@pytest.mark.postgres
def test_two_applications_on_one_schema_never_both_project_and_hand_over(
        pg_schema: str, tmp_path: Path, clock: ManualClock, apps: list, followers: Followers):
    settings = pg_settings(tmp_path, pg_schema)
    first = CampusApplication(settings, clock=clock)
    second = CampusApplication(settings, clock=clock)
    apps += [first, second]
    counts = {"first": spy_projections(first), "second": spy_projections(second)}
    schools = [service_school(first), service_school(second)]
    followers.start(first)
    followers.start(second)
    for c in counts.values():  # before the followers started, readers led the views themselves
        c.update(history=0, timeline=0)

    positions: list[dict[str, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        with psycopg.connect(**first.locks.connect_kwargs, autocommit=True) as conn:
            while not sampling.is_set():
                row = conn.execute(
                    f'SELECT (SELECT position FROM "{first.locks.schema}".campus_view_tracking WHERE name = %s),'
                    f' (SELECT position FROM "{first.locks.schema}".campus_tl_tracking WHERE name = %s)',
                    ("history", "timeline")).fetchone()
                positions.append({"history": row[0] or 0, "timeline": row[1] or 0})
                time.sleep(0.003)

    def work(app: CampusApplication, school: tuple, label: str, rounds: int) -> None:
        account_id, planning_id = school
        for i in range(rounds):
            app.bases.add_record(account_id, planning_id, "classes", {"name": f"{label}{i}"})
            if i % 5 == 4:  # read right after writing: the view holds every write so far
                events, _ = app.history.query(HistoryQuery(tenant=str(account_id), limit=1000))
                names = {e["data"].get("fields", {}).get("name") for e in events}
                assert names >= {f"{label}{j}" for j in range(i + 1)}

    def run(rounds: int, through: tuple[CampusApplication, CampusApplication]) -> None:
        workers = [threading.Thread(target=work, args=(app, school, f"{label}-", rounds))
                   for app, school, label in ((through[0], schools[0], f"a{len(positions)}"),
                                              (through[1], schools[1], f"b{len(positions)}"))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
            assert not worker.is_alive()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run(30, (first, second))
        first.history.catch_up()
        first.timeline.catch_up()
        # Then one application projected each view, the other none
        for view in ("history", "timeline"):
            by = {name: c[view] for name, c in counts.items() if c[view]}
            assert len(by) == 1, f"{view} projected by {by}"
        leader_name = next(name for name, c in counts.items() if c["history"])
        leader, other = (first, second) if leader_name == "first" else (second, first)
        assert_views_equal_the_log(first)

        # When the leader stops (its server shuts down), the other takes the views over
        followers.stop(leader)
        before = dict(counts["second" if leader is first else "first"])
        run(15, (other, other))
        other.history.catch_up()
        other.timeline.catch_up()
        after = counts["second" if leader is first else "first"]
        assert after["history"] > before["history"] and after["timeline"] > before["timeline"]
        assert_views_equal_the_log(first)
    finally:
        sampling.set()
        sampler.join(10)
    # And no tracking position ever went back
    assert len(positions) > 100
    for view in ("history", "timeline"):
        seen = [p[view] for p in positions]
        assert seen == sorted(seen), view
    for school, app in zip(schools, (first, second)):
        _, base = app.bases.current_base(*school)
        assert_timeline_equals_replay(other, base.id, clock)


# -- readers wait for the leader ---------------------------------------------------------------------

def test_a_reader_waits_for_the_leader_and_sees_its_own_writes_even_inside_a_command(
        settings: Settings, clock: ManualClock, apps: list, followers: Followers):
    leader = CampusApplication(settings, clock=clock)
    reader = CampusApplication(settings, clock=clock)
    apps += [leader, reader]
    followers.start(leader)
    projected_by_reader = spy_projections(reader)

    account_id, planning_id = service_school(reader)
    reader.controllers.bind_controller_domain(account_id, "monecole")
    reader.controllers.activate_controller(account_id)
    for i in range(5):
        reader.bases.add_record(account_id, planning_id, "classes", {"name": f"C{i}"})
        # History right after a write is the school's stored events
        events, _ = reader.history.query(HistoryQuery(tenant=str(account_id), limit=1000))
        ours = [n.id for n in stored(reader)
                if (reader.mapper.to_domain_event(n).meta or {}).get("tenant") == str(account_id)]
        assert [e["position"] for e in events] == ours

    # A command's own reads see what another server committed a moment before: the last-superadministrator
    # rule counts the superadministrator just created through the leader
    leader.users.create_user(account_id, login="second", last_name="S", first_name="S", status=Status.SUPERADMINISTRATOR)
    reader.users.update_user(account_id, "admin", {"status": Status.BASE_ADMINISTRATOR})
    with pytest.raises(Conflict) as last:
        reader.users.update_user(account_id, "second", {"status": Status.BASE_ADMINISTRATOR})
    assert last.value.code == "last_superadministrator"
    # And the reader never projected: the leader did
    assert projected_by_reader == {"history": 0, "timeline": 0}
    assert_views_equal_the_log(reader)


def test_a_reader_answers_view_behind_when_the_leader_does_not_keep_up(
        settings: Settings, clock: ManualClock, apps: list):
    settings = dataclasses.replace(settings, view_wait_seconds=0.5)
    stalled = CampusApplication(settings, clock=clock)
    reader = CampusApplication(settings, clock=clock)
    apps += [stalled, reader]
    account_id = reader.accounts.open_account("Lycée", "M", "m@example.org").account.id
    assert reader.users.list_users(account_id) == []  # nobody leads: the reader projects, then lets go
    # Given a leader that holds the view and does not project (a hung server)
    hung = stalled.locks.lease("view:history")
    assert hung.try_acquire()
    reader.users.create_user(account_id, login="bob", last_name="B", first_name="B")
    # Then a read waits its bound, then answers 503 view_behind with Retry-After, and projects nothing
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as behind:
        reader.users.list_users(account_id)
    assert 0.5 <= time.monotonic() - started < 5
    assert behind.value.code == "view_behind" and behind.value.headers["Retry-After"]
    assert tracked(reader)["history"] < reader.recorder.max_notification_id()
    # And once the lease is free again, the reader catches up itself
    hung.release()
    assert [u.login for u in reader.users.list_users(account_id)] == ["bob"]


# -- campus views rebuild ---------------------------------------------------------------------------------

VIEW_TABLES = {
    "history": (("campus_history", "position"), ("campus_catalogue", "aggregate_id"),
                ("campus_history_scope", "aggregate_id"), ("campus_view_tracking", "name")),
    "timeline": (("campus_tl_events", "base_id, position"), ("campus_tl_records", "base_id, record_id, position"),
                 ("campus_tl_lives", "base_id, kind, birth, record_id"), ("campus_tl_annexes", "base_id, sha256"),
                 ("campus_tl_tracking", "name")),
}


def view_rows(app: CampusApplication) -> dict[str, list[dict]]:
    return {table: [{k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}
                    for row in _select(app, f"SELECT * FROM {app.history.table(table)} ORDER BY {order}")]
            for tables in VIEW_TABLES.values() for table, order in tables}


def _cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for key in list(os.environ):
        if key.startswith(("CAMPUS_", "POSTGRES_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CAMPUS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CAMPUS_SNAPSHOTS_DIR", str(settings.snapshots_dir))
    if settings.postgres_dsn:
        monkeypatch.setenv("CAMPUS_POSTGRES_DSN", settings.postgres_dsn)


def test_campus_views_rebuild_gives_the_same_views_with_progress_and_refuses_beside_a_server(
        settings: Settings, clock: ManualClock, apps: list, followers: Followers, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]):
    app = CampusApplication(settings, clock=clock)
    apps.append(app)
    account_id, planning_id = service_school(app)
    added = [app.bases.add_record(account_id, planning_id, "classes", {"name": f"C{i}"})[1] for i in range(6)]
    app.bases.change_record(account_id, planning_id, "classes", added[1], {"name": "C1bis"})
    app.bases.remove_record(account_id, planning_id, "classes", added[2])
    app.exchange.put_annex(account_id, planning_id, "logo.png", "image/png", b"png" * 50)
    app.users.create_user(account_id, login="bob", last_name="B", first_name="B")
    app.history.catch_up()
    app.timeline.catch_up()
    before = view_rows(app)
    assert len(before["campus_history"]) == len(stored(app)) and before["campus_tl_lives"]
    _cli_env(monkeypatch, settings)
    capsys.readouterr()

    # When the views are rebuilt (no server running)
    assert main(["views", "rebuild"]) == 0
    err = capsys.readouterr().err
    # Then they are what they were, and the command said how far it went
    assert view_rows(app) == before
    total = len(stored(app))
    for name in ("history", "timeline"):
        assert f"campus views rebuild: {name}: 0/{total} events" in err
        assert f"campus views rebuild: {name} rebuilt from {total} events" in err
    assert "\r" not in err  # not a terminal: whole lines only

    # And one view alone can be rebuilt
    assert main(["views", "rebuild", "timeline"]) == 0
    assert "history" not in capsys.readouterr().err
    assert view_rows(app) == before

    # But beside a running server (which leads the views) it waits a moment, says why, and changes nothing
    followers.start(app)
    deadline = time.monotonic() + 5
    while not (app.history.lease.held and app.timeline.lease.held) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert main(["views", "rebuild", "--wait", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "running server" in err and "Nothing was changed" in err
    assert view_rows(app) == before
