"""One scheduler for many servers (issue 9): two applications on ONE store (a PostgreSQL schema,
a SQLite file) stand for two ``campus serve`` processes. Scheduled saves and archives have a
deterministic identity per (planning, kind, slot), so running the due backups in both at the same
time takes each slot once; retention decides inside its command on fresh aggregates, so each
discard is recorded once; the schedule runs in the holder of the "scheduler" lease only; a file
missing from one server's snapshot storage is reported there, never recorded as damaged."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from api_helpers import cheap_argon2, make_client
from school_helpers import campus_school, service_school

from campus.aggregates.backup import Backup
from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.services.backup_schedule import base_file_at, scheduled_backup_id
from campus.services.backups import Gone, boundaries

START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
BACKLOG = timedelta(days=30)


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_argon2(monkeypatch)


@pytest.fixture
def two_apps(settings: Settings, clock: ManualClock) -> Any:
    """Two applications ("servers") on one store and one snapshots folder, one clock."""
    clock.set(START)
    apps = [CampusApplication(settings, clock=clock), CampusApplication(settings, clock=clock)]
    try:
        yield apps
    finally:
        for app in apps:
            app.close()


def _every_backup(app: CampusApplication, account_id: UUID, planning_id: UUID) -> list[Backup]:
    return [app.repository.get(b.id) for b in app.backups.backups_of(account_id, planning_id)]


def _event_names(app: CampusApplication, aggregate_id: UUID) -> list[str]:
    return [type(e).__name__ for e in app.events.get(aggregate_id)]


def _a_backlog(app: CampusApplication, clock: ManualClock) -> tuple[UUID, UUID]:
    """A base in service whose scheduler ran a day, then nothing for 30 days."""
    account_id, planning_id = service_school(app)
    clock.advance(timedelta(days=1))
    first = app.backup_schedule.run_due_backups()
    assert first and all(b.scheduled for b in first)
    clock.advance(BACKLOG)
    return account_id, planning_id


def _check_each_slot_once_and_retention(app: CampusApplication, account_id: UUID, planning_id: UUID) -> None:
    every = _every_backup(app, account_id, planning_id)
    slots = Counter((b.kind, b.taken_at) for b in every if b.scheduled)
    assert [slot for slot, n in slots.items() if n > 1] == [], "a slot was taken twice"
    live = [b for b in every if not b.discarded]
    assert Counter(b.kind for b in live) == {"save": 12, "archive": 30}
    now = app.clock.now()
    assert sorted(b.taken_at for b in live if b.kind == "save") == boundaries("save", now - timedelta(days=1),
                                                                              now)[-12:]
    assert sorted(b.taken_at for b in live if b.kind == "archive") == boundaries("archive", now - BACKLOG, now)
    for backup in every:
        assert _event_names(app, backup.id).count("Discarded") == (1 if backup.discarded else 0), backup.name
    # Every live backup's file is there and checks out; no discarded backup kept its file.
    folder = app.settings.snapshots_dir / str(account_id)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{b.id}.campus" for b in live)
    for backup in live:
        app.backups.verified_backup_path(backup)


def test_two_servers_running_the_due_backups_at_once_take_each_slot_once(two_apps: list[CampusApplication],
                                                                         clock: ManualClock) -> None:
    first, second = two_apps
    account_id, planning_id = _a_backlog(first, clock)
    go = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(app: CampusApplication) -> None:
        try:
            go.wait(10)
            app.backup_schedule.run_due_backups()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(app,)) for app in two_apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    # What neither finished (a slot skipped while the other was writing it) the next round takes.
    first.backup_schedule.run_due_backups()
    second.backup_schedule.run_due_backups()
    _check_each_slot_once_and_retention(first, account_id, planning_id)
    assert second.backup_schedule.run_due_backups() == [] and first.backup_schedule.run_due_backups() == []


def test_a_scheduled_backup_has_the_identity_of_its_slot(two_apps: list[CampusApplication],
                                                         clock: ManualClock) -> None:
    """The same slot taken by another server is a version-1 conflict: skipped as already taken."""
    first, second = two_apps
    account_id, planning_id = service_school(first)
    clock.advance(timedelta(hours=3))
    taken = first.backup_schedule.run_due_backups()
    assert [b.kind for b in taken] == ["save"]
    slot = taken[0]
    # The second server had not seen it (its view of the planning's backups is empty): it still
    # cannot take the slot again.
    second.backups.backups_of = lambda *_: []  # type: ignore[method-assign]
    assert second.backup_schedule.run_due_backups() == []
    again = [b for b in _every_backup(first, account_id, planning_id) if b.taken_at == slot.taken_at]
    assert [b.id for b in again] == [slot.id]


def test_scheduled_backups_stored_with_random_ids_still_count(settings: Settings, clock: ManualClock) -> None:
    """Scheduled backups recorded before issue 9 have random ids: their slots are not taken again,
    and retention counts and discards them as before."""
    clock.set(START)
    app = CampusApplication(settings, clock=clock)
    try:
        account_id, planning_id = service_school(app)
        base_id = app.plannings.get_planning(account_id, planning_id).base_id
        clock.advance(timedelta(hours=7))
        old = []
        for at in boundaries("save", START, clock.now()):  # what the scheduler of before recorded
            past = app.timeline.base_at(base_id, at)
            old.append(app.backups.record_backup(account_id, planning_id, base_file_at(app.timeline, past, at),
                                          kind="save", name=f"old save {at}", taken_at=at, position=past.position,
                                          scheduled=True))
        assert len(old) == 3 and all(b.id != scheduled_backup_id(planning_id, "save", b.taken_at) for b in old)
        assert app.backup_schedule.run_due_backups() == []  # those slots are taken
        clock.advance(timedelta(hours=22))  # 11 new slots: 14 saves, the 2 oldest go
        taken = app.backup_schedule.run_due_backups()
        assert [b.taken_at for b in taken if b.kind == "save"] == boundaries("save", old[-1].taken_at, clock.now())
        every = _every_backup(app, account_id, planning_id)
        assert Counter((b.kind, b.taken_at) for b in every).most_common(1)[0][1] == 1
        listed = app.backups.list_backups(account_id, planning_id)
        assert len([b for b in listed if b.kind == "save"]) == 12
        assert [b.id for b in every if b.discarded] == [b.id for b in old[:2]]  # the oldest go first
        assert old[2].id in {b.id for b in listed}
    finally:
        app.close()


def test_retention_reads_its_backups_again_when_its_command_is_retried(two_apps: list[CampusApplication],
                                                                       clock: ManualClock) -> None:
    """The other server applies retention between this one's reading and its command: each
    discard is recorded once, by whichever command got there first."""
    first, second = two_apps
    account_id, planning_id = service_school(first)
    saves = []
    for _ in range(14):
        clock.advance(timedelta(minutes=5))
        saves.append(first.backups.take_backup(account_id, planning_id))
    raced = []
    run = second.backup_schedule._run

    def racing(tenant: Any, body: Any) -> Any:
        if not raced:
            raced.append(first.backup_schedule._apply_retention(account_id, planning_id))
        return run(tenant, body)

    second.backup_schedule._run = racing  # type: ignore[method-assign]
    second.backup_schedule._apply_retention(account_id, planning_id)
    assert [b.id for b in raced[0]] == [s.id for s in saves[:2]]
    for save in saves:
        expected = 1 if save in saves[:2] else 0
        assert _event_names(first, save.id).count("Discarded") == expected, save.name
    assert len(first.backups.list_backups(account_id, planning_id)) == 12


def test_the_schedule_runs_in_the_lease_holder_only_and_moves_on_when_it_stops(
        two_apps: list[CampusApplication], clock: ManualClock) -> None:
    first, second = two_apps
    account_id, planning_id = _a_backlog(first, clock)
    rounds: dict[int, int] = {0: 0, 1: 0}
    for n, app in enumerate(two_apps):
        work = app.backup_schedule.run_due_backups

        def counted(n: int = n, work: Any = work) -> list:
            rounds[n] += 1
            return work()

        app.backup_schedule.run_due_backups = counted  # type: ignore[method-assign]
    stops = [threading.Event(), threading.Event()]
    threads = [app.backup_schedule.start_scheduler(stop, every=0.05, retry=0.05)
               for app, stop in zip(two_apps, stops, strict=True)]
    try:
        _wait_for(lambda: len(first.backups.list_backups(account_id, planning_id)) == 42)
        leader = 0 if rounds[0] else 1
        _wait_for(lambda: rounds[leader] >= 3)  # rounds go on, in the holder only
        assert rounds[1 - leader] == 0, rounds
        _check_each_slot_once_and_retention(first, account_id, planning_id)

        # The holder stops (a server shut down, or died): the other takes over and takes the next slot.
        stops[leader].set()
        threads[leader].join(10)
        assert not threads[leader].is_alive()
        clock.advance(timedelta(hours=2))
        _wait_for(lambda: rounds[1 - leader] >= 1)
        newest = boundaries("save", clock.now() - timedelta(hours=2), clock.now())[-1]
        _wait_for(lambda: any(b.taken_at == newest for b in first.backups.list_backups(account_id, planning_id))
                  and len(first.backups.list_backups(account_id, planning_id)) == 42)  # retention follows at once
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(10)


def test_the_backup_and_year_schedulers_are_one_thread_under_the_lease(two_apps: list[CampusApplication]) -> None:
    """What the app's lifespan starts: both names give the one scheduler thread (joinable)."""
    first, second = two_apps
    stop = threading.Event()
    try:
        backups = first.backup_schedule.start_backup_scheduler(stop)
        year = first.school_year.start_year_scheduler(stop)
        assert backups is year and backups.is_alive()
        other = second.backup_schedule.start_backup_scheduler(stop)
        _wait_for(lambda: first.backup_schedule._scheduler_lease().held)
        assert not second.backup_schedule._scheduler_lease().held
    finally:
        stop.set()
    for thread in (backups, other):
        thread.join(10)
        assert not thread.is_alive()
    assert not first.backup_schedule._scheduler_lease().held


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- a file missing from one server's snapshot storage ----------------------------------------------------
def test_a_file_missing_on_one_server_is_reported_there_not_recorded_as_damaged(
        settings: Settings, clock: ManualClock, tmp_path: Path) -> None:
    clock.set(START)
    here = CampusApplication(settings, clock=clock)
    # Another server on the same store whose snapshot storage is not shared (a misconfiguration).
    elsewhere = CampusApplication(dataclasses.replace(settings, snapshots_dir=tmp_path / "elsewhere"), clock=clock)
    try:
        account_id, planning_id = service_school(here)
        save = here.backups.take_backup(account_id, planning_id)
        assert elsewhere.backups.backup_status(save) == ("missing", "backup_file_missing")
        with pytest.raises(Gone) as missing:
            elsewhere.backups.trusted_backup_path(elsewhere.backups.get_backup(account_id, planning_id, save.id))
        assert missing.value.code == "backup_file_missing"
        assert "this server's snapshot storage" in missing.value.detail
        # Nothing was recorded for everyone: the backup is fine where its file is.
        assert _event_names(here, save.id) == ["Taken"]
        assert here.backups.backup_status(here.backups.get_backup(account_id, planning_id, save.id)) == ("ok", None)
        assert here.backups.trusted_backup_path(here.backups.get_backup(account_id, planning_id, save.id)).is_file()

        # A file present but altered is still recorded as damaged.
        path = here.backups.backup_path(save)
        path.write_bytes(path.read_bytes()[:-5])
        with pytest.raises(Exception) as corrupted:
            here.backups.trusted_backup_path(here.backups.get_backup(account_id, planning_id, save.id))
        assert getattr(corrupted.value, "code", None) == "backup_corrupted"
        assert _event_names(here, save.id) == ["Taken", "FoundDamaged"]
    finally:
        elsewhere.close()
        here.close()


def test_the_download_of_a_missing_file_says_it_is_not_on_this_server(
        sqlite_only_settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(sqlite_only_settings, snapshots_dir=tmp_path / "snapshots")
    with make_client(settings, ManualClock(START)) as client:
        cs = campus_school(client)
        url = f"/v1/console/plannings/{cs.planning01}/backups"
        save = client.post(url, headers=cs.console, json={}).json()
        app: CampusApplication = client.app.state.campus  # type: ignore[attr-defined]
        (settings.snapshots_dir / app.repository.get(UUID(save["id"])).file).unlink()
        r = client.get(f"{url}/{save['id']}/download", headers=cs.console)
        assert r.status_code == 410 and r.json()["code"] == "backup_file_missing"
        assert "not on this server's snapshot storage" in r.json()["detail"]
        assert r.headers["content-type"].startswith("application/problem+json")
        damaged = client.get("/v1/console/history", headers=cs.console,
                             params={"type": "Backup.FoundDamaged"}).json()["events"]
        assert damaged == []
        listed = client.get(url, headers=cs.console).json()["backups"]
        assert [(b["status"], b["problem"]) for b in listed] == [("missing", "backup_file_missing")]
