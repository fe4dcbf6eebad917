"""The school-year change (hosting guide fiches 2, 6 and 12), lived on the clock: the July
archive, the August base and the version change happen once per planning, at their
instant in the planning's time zone, following the account's choice; they are listed
as upcoming before they happen; preparing the next year on request."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from api_helpers import (
    assert_problem,
    bearer,
    cheap_argon2,
    history,
    login_with_certificate,
    make_client,
    ready_school,
)
from school_helpers import add_record, campus_school, service_school, set_server
from structlog.testing import capture_logs

from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.rules.base_file_reader import read_base_file

JUNE_20 = datetime(2027, 6, 20, 8, 0, tzinfo=UTC)
# Europe/Paris is UTC+2 in summer: 00:00 local is 22:00 UTC the day before.
JULY_ARCHIVE = datetime(2027, 6, 30, 22, 0, tzinfo=UTC)
AUGUST_BASE = datetime(2027, 8, 14, 22, 0, tzinfo=UTC)
VERSION_CHANGE = datetime(2027, 8, 30, 22, 0, tzinfo=UTC)
YEAR_EVENTS = ("YearChange.YearArchived,YearChange.NextBasePrepared,YearChange.NextBaseSkipped,"
               "YearChange.PreReleaseInstalled,YearChange.VersionChanged")


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_argon2(monkeypatch)


@pytest.fixture
def june(clock: ManualClock) -> ManualClock:
    clock.set(JUNE_20)
    return clock


def live_until(app: CampusApplication, clock: ManualClock, until: datetime,
               step: timedelta = timedelta(hours=6)) -> list[tuple[str, datetime]]:
    """Advance the clock step by step, the scheduler running at each step (twice now and then);
    return (kind, when it ran) for each operation recorded."""
    ran: list[tuple[str, datetime]] = []
    while clock.now() < until:
        clock.advance(step)
        ran += [(op["kind"], clock.now()) for op in app.school_year.run_due_year_operations()]
        assert app.school_year.run_due_year_operations() == []  # called again at once: nothing happens twice
    return ran


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def upcoming(client: Any, headers: dict, planning_id: str) -> list[dict]:
    r = client.get("/v1/console/upcoming-operations", headers=headers)
    assert r.status_code == 200, r.text
    return [op for op in r.json()["operations"] if op["planning_id"] == planning_id]


def by_kind(ops: list[dict]) -> dict[str, dict]:
    return {op["kind"]: op for op in ops}


# -- a summer over HTTP ---------------------------------------------------------------------------------
def test_a_summer_each_operation_once_announced_before_and_in_the_history(settings: Settings) -> None:
    clock = ManualClock(JUNE_20)
    with make_client(settings, clock) as client:
        cs = campus_school(client)
        app = client.app.state.campus
        old_base = cs.base["id"]
        add_record(client, cs.headers_for("modif"), cs.records_url("classes"), name="2nde A")

        # Announced before they happen, in the planning's time zone (Europe/Paris).
        ops = by_kind(upcoming(client, cs.console, cs.planning01))
        assert set(ops) == {"save", "archive", "year_archive", "next_base", "version_change"}
        assert instant(ops["year_archive"]["at"]) == JULY_ARCHIVE
        assert instant(ops["next_base"]["at"]) == AUGUST_BASE and ops["next_base"]["effect"] == "create_base"
        assert "2027-08-30 – 2028-07-02" in ops["next_base"]["description"]
        assert instant(ops["version_change"]["at"]) == VERSION_CHANGE
        assert (ops["version_change"]["effect"], ops["version_change"]["version"]) == ("replace_base", "2027")
        assert instant(ops["save"]["at"]) == datetime(2027, 6, 20, 10, 0, tzinfo=UTC)
        assert instant(ops["archive"]["at"]) == datetime(2027, 6, 21, 0, 0, tzinfo=UTC)
        assert all(op["school_year"] == "2027-2028" for op in ops.values() if op["kind"] not in ("save", "archive"))
        assert upcoming(client, cs.console, cs.planning02) == []  # no base: not concerned

        # Until just before the July archive nothing happens; a class added then is in it,
        # one added after its instant (before the scheduler gets to it) is not.
        assert live_until(app, clock, JULY_ARCHIVE - timedelta(hours=6)) == []
        add_record(client, cs.headers_for("modif"), cs.records_url("classes"), name="2nde B")
        clock.set(JULY_ARCHIVE + timedelta(hours=3))
        add_record(client, cs.headers_for("modif"), cs.records_url("classes"), name="2nde C")
        clock.advance(timedelta(hours=1))
        assert [op["kind"] for op in app.school_year.run_due_year_operations()] == ["year_archive"]
        assert app.school_year.run_due_year_operations() == []

        ran = live_until(app, clock, datetime(2027, 9, 20, tzinfo=UTC))
        assert [kind for kind, _ in ran] == ["next_base", "version_change"]
        assert AUGUST_BASE <= ran[0][1] < AUGUST_BASE + timedelta(hours=6)
        assert VERSION_CHANGE <= ran[1][1] < VERSION_CHANGE + timedelta(hours=6)

        console = bearer(login_with_certificate(client, cs.school).json()["token"])
        events = history(client, console, type=YEAR_EVENTS)
        assert [e["type"] for e in events] == ["YearChange.YearArchived", "YearChange.NextBasePrepared",
                                               "YearChange.VersionChanged"]
        assert {e["actor"] for e in events} == {"scheduler"}
        archived, prepared, changed = (e["data"] for e in events)
        assert instant(archived["taken_at"]) == JULY_ARCHIVE and archived["scheduled"] is True
        assert instant(prepared["due_at"]) == AUGUST_BASE and prepared["source_base_id"] == old_base
        assert changed == {**changed, "version": "2027", "choice": "install_at_release", "replaced": True,
                           "server_stopped": True, "previous_base_id": old_base,
                           "base_id": prepared["base_id"]}

        # The archive holds the year at its instant: 2nde A and B, not C.
        archive = client.get(f"/v1/console/plannings/{cs.planning01}/backups/{archived['backup_id']}/download",
                             headers=console)
        assert archive.status_code == 200, archive.text
        assert read_base_file(io.BytesIO(archive.content)).counts()["classes"] == 2

        # The new year's base is current, the server stopped; the old base keeps its three classes.
        bases = client.get(f"/v1/console/plannings/{cs.planning01}/bases", headers=console).json()
        assert bases["current"] == prepared["base_id"]
        assert {b["id"]: (b["name"], b["counts"]["classes"], b["origin"]) for b in bases["bases"]} == {
            old_base: ("Base 2026", 3, "created"), prepared["base_id"]: ("Base 2027-2028", 0, "year_change")}
        base = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=console).json()
        assert (base["grid"]["first_monday"], base["grid"]["last_sunday"]) == ("2027-08-30", "2028-07-02")
        assert base["server_state"] == "stopped"
        assert client.get(f"/v1/console/plannings/{cs.planning02}/year-change", headers=console).json()[
            "school_years"] == []
        status = client.get(f"/v1/console/plannings/{cs.planning01}/year-change", headers=console).json()
        assert status["product_version"] == {"version": "2027", "channel": "release", "school_year": "2027-2028"}
        assert [y["school_year"] for y in status["school_years"]] == ["2027-2028"]

        # Next summer's operations are the upcoming ones now (no saves: the server is stopped).
        ops = by_kind(upcoming(client, console, cs.planning01))
        assert set(ops) == {"year_archive", "next_base", "version_change"}
        assert instant(ops["year_archive"]["at"]) == datetime(2028, 6, 30, 22, 0, tzinfo=UTC)
        assert (ops["version_change"]["school_year"], ops["version_change"]["effect"]) == ("2028-2029", "replace_base")
        # The manager was told of each operation as it ran (school-year notifications are on by default).
        outbox = client.get("/v1/console/outbox", headers=console).json()["messages"]
        assert len([m for m in outbox if m["subject"].startswith("[campus] school-year operations")]) == 3


def test_the_upcoming_list_is_the_manager_s_own(client: Any) -> None:
    cs = campus_school(client)
    other = ready_school(client, domain="autre", establishment="Collège Victor Hugo")
    assert client.get("/v1/console/upcoming-operations").status_code == 401
    assert client.get("/v1/console/upcoming-operations", headers=other.headers).json()["operations"] == []
    assert_problem(client.get(f"/v1/console/plannings/{cs.planning01}/year-change", headers=other.headers), 404)
    assert_problem(client.post(f"/v1/console/plannings/{cs.planning01}/year-change", headers=other.headers,
                               json={"confirm": True}), 404)


# -- a late scheduler, a restart ------------------------------------------------------------------------
def test_a_scheduler_down_all_summer_catches_up_once_with_the_state_at_each_instant(
        settings: Settings, june: ManualClock) -> None:
    settings = dataclasses.replace(settings, release_version="2027.0.3")
    app = CampusApplication(settings, clock=june)
    try:
        account_id, planning_id = service_school(app)
        old_base = app.plannings.get_planning(account_id, planning_id).base_id
        app.bases.add_record(account_id, planning_id, "classes", {"name": "2nde A"})
        june.set(datetime(2027, 7, 20, 10, 0, tzinfo=UTC))  # nineteen days after the July archive's instant
        app.bases.add_record(account_id, planning_id, "classes", {"name": "2nde B"})
        assert [(op["kind"], op["at"]) for op in app.school_year.run_due_year_operations()] == [("year_archive", JULY_ARCHIVE)]
        june.set(datetime(2027, 9, 2, 10, 0, tzinfo=UTC))
        done = app.school_year.run_due_year_operations()
        assert [(op["kind"], op["at"]) for op in done] == [("next_base", AUGUST_BASE),
                                                           ("version_change", VERSION_CHANGE)]
        assert app.school_year.run_due_year_operations() == []

        [change] = app.school_year.year_changes(account_id, planning_id)
        assert change.year == "2027-2028"
        archive = app.backups.get_backup(account_id, planning_id, change.archives[0]["backup_id"])
        assert (archive.kind, archive.taken_at, archive.counts["classes"]) == ("archive", JULY_ARCHIVE, 1)
        assert "archive of the school year 2026-2027" in archive.name
        planning = app.plannings.get_planning(account_id, planning_id)
        assert planning.base_ids == (old_base, change.next_base_id) and planning.base_id == change.next_base_id
        assert change.version_change["version"] == "2027.0.3"
        assert app.bases.get_base(account_id, old_base).counts()["classes"] == 2  # never lost

        # The store is the truth: another process (a restart) finds everything done.
        again = CampusApplication(settings, clock=june)
        try:
            assert again.school_year.run_due_year_operations() == []
        finally:
            again.close()
    finally:
        app.close()


def test_an_operation_more_than_a_month_late_is_missed_not_run_out_of_season(
        app: CampusApplication, june: ManualClock) -> None:
    account_id, planning_id = service_school(app)
    base_id = app.plannings.get_planning(account_id, planning_id).base_id
    june.set(datetime(2027, 10, 15, 8, 0, tzinfo=UTC))  # the scheduler was down since June
    with capture_logs() as logs:
        assert app.school_year.run_due_year_operations() == []
    assert sorted(e["kind"] for e in logs if e["event"] == "school_year_operation_missed") == [
        "next_base", "version_change", "year_archive"]
    planning = app.plannings.get_planning(account_id, planning_id)
    assert (planning.base_ids, planning.in_service) == ((base_id,), True)
    assert app.school_year.year_changes(account_id, planning_id) == []
    ops = {op["kind"]: op for op in app.school_year.upcoming_operations(account_id) if op["planning_id"] == str(planning_id)}
    assert ops["year_archive"]["at"] == datetime(2028, 6, 30, 22, 0, tzinfo=UTC)
    assert ops["version_change"]["school_year"] == "2028-2029"


def test_a_school_opened_after_the_summer_waits_for_the_next_one(app: CampusApplication, clock: ManualClock) -> None:
    clock.set(datetime(2027, 9, 1, 8, 0, tzinfo=UTC))
    account_id, planning_id = service_school(app)  # its base is for 2026-2027
    clock.advance(timedelta(days=1))
    assert app.school_year.run_due_year_operations() == []
    ops = {op["kind"]: op for op in app.school_year.upcoming_operations(account_id) if op["planning_id"] == str(planning_id)}
    assert ops["year_archive"]["at"] == datetime(2028, 6, 30, 22, 0, tzinfo=UTC)
    assert ops["next_base"]["school_year"] == "2028-2029"


# -- the account's choice ----------------------------------------------------------------------------
def _events(app: CampusApplication, account_id: UUID, planning_id: UUID) -> list[tuple[str, dict]]:
    from campus.projections.history import HistoryQuery

    rows, _ = app.history.query(HistoryQuery(tenant=str(account_id), types=tuple(YEAR_EVENTS.split(",")), limit=100))
    return [(r["type"].split(".")[1], r["data"]) for r in rows]


def test_defer_with_a_new_empty_base(app: CampusApplication, june: ManualClock) -> None:
    account_id, planning_id = service_school(app)
    old_base = app.plannings.get_planning(account_id, planning_id).base_id
    app.account_page.change_account(account_id, version_change={"choice": "defer", "date": date(2027, 9, 15), "base": "new_empty"})
    ops = {op["kind"]: op for op in app.school_year.upcoming_operations(account_id) if op["planning_id"] == str(planning_id)}
    assert ops["version_change"]["at"] == datetime(2027, 9, 14, 22, 0, tzinfo=UTC)
    assert ops["version_change"]["effect"] == "replace_base" and ops["next_base"]["effect"] == "create_base"

    ran = live_until(app, june, datetime(2027, 9, 10, tzinfo=UTC), step=timedelta(days=1))
    assert [kind for kind, _ in ran] == ["year_archive", "next_base"]  # 31 August passed: deferred
    planning = app.plannings.get_planning(account_id, planning_id)
    assert planning.base_id == old_base and len(planning.base_ids) == 2 and planning.in_service

    ran = live_until(app, june, datetime(2027, 9, 20, tzinfo=UTC), step=timedelta(days=1))
    assert [kind for kind, _ in ran] == ["version_change"]
    events = _events(app, account_id, planning_id)
    prepared = next(data for kind, data in events if kind == "NextBasePrepared")
    changed = next(data for kind, data in events if kind == "VersionChanged")
    assert (changed["choice"], changed["replaced"], changed["base_id"]) == ("defer", True, prepared["base_id"])
    planning = app.plannings.get_planning(account_id, planning_id)
    assert str(planning.base_id) == prepared["base_id"] and not planning.in_service


def test_defer_keeping_the_base_in_service_skips_the_august_base(app: CampusApplication, june: ManualClock) -> None:
    account_id, planning_id = service_school(app)
    old_base = app.plannings.get_planning(account_id, planning_id).base_id
    app.account_page.change_account(account_id, version_change={"choice": "defer", "date": date(2027, 9, 15), "base": "current"})
    ops = {op["kind"]: op for op in app.school_year.upcoming_operations(account_id) if op["planning_id"] == str(planning_id)}
    assert ops["next_base"]["effect"] == "nothing" and ops["version_change"]["effect"] == "keep_base"

    ran = live_until(app, june, datetime(2027, 9, 20, tzinfo=UTC), step=timedelta(days=1))
    assert [kind for kind, _ in ran] == ["year_archive", "next_base", "version_change"]
    events = _events(app, account_id, planning_id)
    assert [kind for kind, _ in events] == ["YearArchived", "NextBaseSkipped", "VersionChanged"]
    assert "keep the base in service" in events[1][1]["reason"]
    assert (events[2][1]["replaced"], events[2][1]["base_id"]) == (False, str(old_base))
    planning = app.plannings.get_planning(account_id, planning_id)
    assert planning.base_ids == (old_base,) and planning.base_id == old_base and planning.in_service


def test_the_pre_release_replaces_the_base_from_its_date_then_the_release_keeps_it(
        app: CampusApplication, june: ManualClock) -> None:
    account_id, planning_id = service_school(app)
    old_base = app.plannings.get_planning(account_id, planning_id).base_id
    app.account_page.change_account(account_id, version_change={"choice": "pre_release", "date": date(2027, 7, 10)})
    ops = {op["kind"]: op for op in app.school_year.upcoming_operations(account_id) if op["planning_id"] == str(planning_id)}
    assert ops["pre_release"]["at"] == datetime(2027, 7, 9, 22, 0, tzinfo=UTC)

    ran = live_until(app, june, datetime(2027, 9, 5, tzinfo=UTC), step=timedelta(hours=12))
    assert [kind for kind, _ in ran] == ["year_archive", "pre_release", "version_change"]
    events = _events(app, account_id, planning_id)
    assert [kind for kind, _ in events] == ["YearArchived", "NextBasePrepared", "PreReleaseInstalled",
                                            "VersionChanged"]
    pre, release = events[2][1], events[3][1]
    assert (pre["version"], pre["replaced"], pre["server_stopped"], pre["previous_base_id"]) == (
        "2027", True, True, str(old_base))
    assert (release["replaced"], release["base_id"]) == (False, pre["base_id"])
    planning = app.plannings.get_planning(account_id, planning_id)
    assert str(planning.base_id) == pre["base_id"] and planning.base_ids[0] == old_base


# -- time zones ------------------------------------------------------------------------------------------
def test_each_planning_follows_its_own_time_zone(app: CampusApplication, june: ManualClock) -> None:
    account_id, auckland = service_school(app)
    app.plannings.update_planning(account_id, auckland, {"time_zone": "Pacific/Auckland"})
    paris = app.plannings.list_plannings(account_id)[1].id
    app.bases.create_base(account_id, paris, name="Base Paris", first_monday=date(2026, 8, 31),
                    last_sunday=date(2027, 7, 4), working_days=["mon"], sequences_per_day=8,
                    sequence_minutes=60, split=1)
    archives = {op["planning_id"]: op["at"] for op in app.school_year.upcoming_operations(account_id)
                if op["kind"] == "year_archive"}
    assert archives == {str(auckland): datetime(2027, 6, 30, 12, 0, tzinfo=UTC), str(paris): JULY_ARCHIVE}

    june.set(datetime(2027, 6, 30, 13, 0, tzinfo=UTC))
    assert [(op["planning_id"], op["kind"]) for op in app.school_year.run_due_year_operations()] == [(auckland, "year_archive")]
    june.set(JULY_ARCHIVE + timedelta(minutes=1))
    assert [(op["planning_id"], op["kind"]) for op in app.school_year.run_due_year_operations()] == [(paris, "year_archive")]


# -- preparing the next year on request ---------------------------------------------------------------
def test_prepare_the_next_year_on_request(client: Any, clock: ManualClock) -> None:
    clock.set(JUNE_20)
    cs = campus_school(client)
    app = client.app.state.campus
    url = f"/v1/console/plannings/{cs.planning01}/year-change"
    add_record(client, cs.headers_for("modif"), cs.records_url("classes"), name="2nde A")

    assert_problem(client.post(url, headers=cs.console, json={}), 422, fields={"confirm"})
    assert_problem(client.post(url, headers=cs.console, json={"confirm": True, "year": "2027"}), 422, fields={"year"})
    assert_problem(client.post(url, headers=cs.console, json={"confirm": True, "year": "2026-2027"}), 422,
                   fields={"year"}, detail="already for 2026-2027")
    assert_problem(client.post(url, headers=cs.console, json={"confirm": True, "year": "2030-2031"}), 422,
                   fields={"year"})
    assert_problem(client.post(f"/v1/console/plannings/{cs.planning02}/year-change", headers=cs.console,
                               json={"confirm": True}), 404, detail="no base")

    r = client.post(url, headers=cs.console, json={"confirm": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["school_year"] == "2027-2028"
    assert body["save"]["kind"] == "save" and "save before year change" in body["save"]["name"]
    assert body["archive"]["kind"] == "archive" and body["archive"]["counts"]["classes"] == 1
    assert "archive of the school year 2026-2027" in body["archive"]["name"]
    new = body["base"]
    assert (new["name"], new["origin"], new["current"], new["counts"]["classes"]) == (
        "Base 2027-2028", "year_change", False, 0)
    assert (new["grid"]["first_monday"], new["grid"]["last_sunday"]) == ("2027-08-30", "2028-07-02")
    assert new["grid"]["working_days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert body["current_base_id"] == cs.base["id"]

    # The year in progress goes on: same base, in service, sessions unaffected.
    bases = client.get(f"/v1/console/plannings/{cs.planning01}/bases", headers=cs.console).json()
    assert bases["current"] == cs.base["id"] and [b["id"] for b in bases["bases"]] == [cs.base["id"], new["id"]]
    add_record(client, cs.headers_for("modif"), cs.records_url("classes"), name="2nde B")
    events = history(client, cs.console, type=YEAR_EVENTS + ",Planning.BaseAdded")
    assert [e["type"] for e in events] == ["Planning.BaseAdded", "YearChange.YearArchived",
                                           "YearChange.NextBasePrepared"]
    assert {e["actor"] for e in events} == {cs.school.actor}
    assert events[1]["data"]["scheduled"] is False

    r = client.post(url, headers=cs.console, json={"confirm": True, "year": "2027-2028"})
    assert_problem(r, 409, code="year_already_prepared")
    ops = by_kind(upcoming(client, cs.console, cs.planning01))
    assert ops["version_change"]["effect"] == "replace_base"
    assert ops["next_base"]["school_year"] == "2028-2029"  # this summer's base is prepared already

    # Mounting it is explicit (server stopped) or comes with the version change, which uses it.
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    assert set_server(client, cs.console, cs.planning01, "in_service").status_code == 200
    clock.set(JULY_ARCHIVE + timedelta(hours=1))
    assert [op["kind"] for op in app.school_year.run_due_year_operations()] == ["year_archive"]
    clock.set(VERSION_CHANGE + timedelta(hours=1))
    assert [op["kind"] for op in app.school_year.run_due_year_operations()] == ["version_change"]  # the August base exists
    [change] = app.school_year.year_changes(app.accounts.account_by_number(cs.school.hosting_number).id, UUID(cs.planning01))
    assert change.next_base_id == UUID(new["id"]) and change.version_change["base_id"] == UUID(new["id"])
    assert [a["scheduled"] for a in change.archives] == [False, True]


def test_the_year_archive_outlives_the_30_day_retention_of_daily_archives(sqlite_only_settings: Settings,
                                                                         june: ManualClock) -> None:
    """Retention is store-independent: SQLite only."""
    app = CampusApplication(sqlite_only_settings, clock=june)
    try:
        _year_archive_outlives_retention(app, june)
    finally:
        app.close()


def _year_archive_outlives_retention(app: CampusApplication, june: ManualClock) -> None:
    account_id, planning_id = service_school(app)
    app.bases.add_record(account_id, planning_id, "classes", {"name": "2nde A"})
    june.set(JULY_ARCHIVE + timedelta(hours=1))
    assert [op["kind"] for op in app.school_year.run_due_year_operations()] == ["year_archive"]
    [change] = app.school_year.year_changes(account_id, planning_id)
    year_archive = change.archives[0]["backup_id"]
    for _ in range(40):  # forty days of daily archives: retention keeps 30 of them, and the year's archive
        june.advance(timedelta(days=1))
        app.backup_schedule.run_due_backups()
    backups = [b for b in app.backups.list_backups(account_id, planning_id) if not b.discarded]
    assert [b.id for b in backups if b.kept] == [year_archive]
    assert len([b for b in backups if b.kind == "archive" and not b.kept]) == 30
    with open(app.backups.verified_backup_path(app.backups.get_backup(account_id, planning_id, year_archive)), "rb") as stream:
        assert read_base_file(stream).counts()["classes"] == 1
