"""Saves and archives: taken by the clock and on request, kept by retention,
downloaded and restored only when their file checks out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from api_helpers import cheap_argon2, login_with_certificate, make_client
from school_helpers import add_record, campus_school, service_school, set_server
from structlog.testing import capture_logs

from campus.aggregates.backup import Backup
from campus.application import CampusApplication
from campus.cli import main as cli_main
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.rules.base_file_reader import read_base_file
from campus.services.backups import boundaries

START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_argon2(monkeypatch)


@pytest.fixture(autouse=True)
def _fresh_backup_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A logger that honours capture_logs even if logging was configured (and cached) earlier."""
    import structlog

    import campus.services.backup_schedule
    import campus.services.backups

    monkeypatch.setattr(campus.services.backups, "log", structlog.get_logger("campus.backups"))
    monkeypatch.setattr(campus.services.backup_schedule, "log", structlog.get_logger("campus.backups"))


@pytest.fixture
def backup_settings(sqlite_only_settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(sqlite_only_settings, snapshots_dir=tmp_path / "snapshots")


def test_boundaries_are_utc_two_hours_and_midnight() -> None:
    after = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    until = datetime(2026, 9, 2, 1, 0, tzinfo=UTC)
    assert boundaries("save", after, until)[0] == datetime(2026, 9, 1, 10, 0, tzinfo=UTC)
    assert len(boundaries("save", after, until)) == 8  # 10:00 … 00:00
    assert boundaries("archive", after, until) == [datetime(2026, 9, 2, tzinfo=UTC)]


def test_forty_days_of_schedule_keep_30_archives_and_12_saves(backup_settings: Settings) -> None:
    clock = ManualClock(START)
    app = CampusApplication(backup_settings, clock=clock)
    try:
        account_id, planning_id = service_school(app)
        added: list[tuple[datetime, int]] = []  # (instant of the record, records from then on)
        for hour in range(1, 40 * 24 + 1):
            clock.advance(timedelta(hours=1))
            app.bases.add_record(account_id, planning_id, "classes", {"name": f"C{hour}"})
            added.append((app.bases.current_base(account_id, planning_id)[1].modified_on, hour))
            if hour % 6 == 0:  # the scheduler missed some boundaries: it must catch them all up
                app.backup_schedule.run_due_backups()

        listed = app.backups.list_backups(account_id, planning_id)
        saves = [b for b in listed if b.kind == "save"]
        archives = [b for b in listed if b.kind == "archive"]
        assert (len(saves), len(archives)) == (12, 30)
        assert [b.taken_at for b in listed] == sorted((b.taken_at for b in listed), reverse=True)
        now = clock.now()
        assert archives[0].taken_at == datetime(2026, 10, 11, tzinfo=UTC)
        assert all(a.taken_at.time().hour == 0 and a.taken_at.minute == 0 for a in archives)
        assert [s.taken_at for s in saves] == [b for b in reversed(boundaries("save", now - timedelta(days=2), now))][:12]
        for backup in listed:
            path = app.backups.verified_backup_path(backup)
            with open(path, "rb") as stream:
                loaded = read_base_file(stream)
            # The file holds the base's state AT the boundary, not when the scheduler ran.
            expected = max((n for at, n in added if at <= backup.taken_at), default=0)
            assert loaded.counts()["classes"] == expected == backup.counts["classes"]
        folder = backup_settings.snapshots_dir / str(account_id)
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{b.id}.campus" for b in listed)
        discarded = [b for b in app.backups.backups_of(account_id, planning_id) if b.discarded]
        assert len(discarded) == (40 * 12 - 12) + (40 - 30)  # 480 save and 40 archive boundaries passed
        assert not any(app.backups.backup_path(b).exists() for b in discarded)
        assert app.backup_schedule.run_due_backups() == []  # nothing new is due
    finally:
        app.close()


@pytest.fixture
def school(backup_settings: Settings) -> Any:
    clock = ManualClock(START)
    with make_client(backup_settings, clock) as client:
        cs = campus_school(client)
        yield cs, clock


def _url(cs: Any, suffix: str = "") -> str:
    return f"/v1/console/plannings/{cs.planning01}/backups{suffix}"


def test_save_on_request_list_download_and_restore(school: Any, backup_settings: Settings) -> None:
    cs, clock = school
    client = cs.client
    admin = cs.headers_for("direction")
    add_record(client, admin, cs.records_url("classes"), name="2nde A")
    r = client.post(_url(cs), headers=cs.console, json={"kind": "save"})
    assert r.status_code == 201, r.text
    save = r.json()
    assert {"id", "kind", "name", "taken_at", "position", "size", "counts"} <= save.keys()
    assert save["kind"] == "save" and save["counts"]["classes"] == 1
    assert client.post(_url(cs), headers=cs.console, json={"kind": "archive"}).status_code == 422

    listed = client.get(_url(cs), headers=cs.console).json()["backups"]
    assert [b["id"] for b in listed] == [save["id"]]
    download = client.get(_url(cs, f"/{save['id']}/download"), headers=cs.console)
    assert download.status_code == 200 and len(download.content) == save["size"]
    assert download.headers["content-disposition"].startswith("attachment")

    # Later changes, then a restore from the save.
    clock.advance(timedelta(hours=1))
    add_record(client, admin, cs.records_url("classes"), name="2nde B")
    body = {"backup_id": save["id"], "confirm": True}
    assert client.post(f"/v1/console/plannings/{cs.planning01}/restores", headers=cs.console,
                       json={**body, "confirm": False}).status_code == 422
    r = client.post(f"/v1/console/plannings/{cs.planning01}/restores", headers=cs.console, json=body)
    assert r.status_code == 409 and r.json()["code"] == "server_in_service"
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    r = client.post(f"/v1/console/plannings/{cs.planning01}/restores", headers=cs.console, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["base"]["counts"]["classes"] == 1
    assert r.json()["restored_to"] == save["taken_at"]
    _, base = client_app(cs).bases.current_base(_account(cs), UUID(cs.planning01))
    assert [f["name"] for f in base.records["classes"].values()] == ["2nde A"]

    # A corrupted file is never served; a restore from it falls back to the event log and says so.
    app = client_app(cs)
    path = backup_settings.snapshots_dir / app.backups.get_backup(_account(cs), UUID(cs.planning01), UUID(save["id"])).file
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    assert _listed(cs, save["id"])["status"] == "ok"  # the listing only looks for the file
    with capture_logs() as logs:
        r = client.get(_url(cs, f"/{save['id']}/download"), headers=cs.console)
    assert r.status_code == 409 and r.json()["code"] == "backup_corrupted"
    assert {"event": "backup_file_damaged", "problem": "backup_corrupted", "file": str(path.relative_to(
        backup_settings.snapshots_dir))}.items() <= next(e for e in logs if e["event"] == "backup_file_damaged").items()
    assert (_listed(cs, save["id"])["status"], _listed(cs, save["id"])["problem"]) == ("damaged", "backup_corrupted")

    assert set_server(client, cs.console, cs.planning01, "in_service").status_code == 200
    clock.advance(timedelta(hours=1))
    add_record(client, cs.headers_for("direction"), cs.records_url("classes"), name="2nde C")
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    r = client.post(f"/v1/console/plannings/{cs.planning01}/restores", headers=cs.console,
                    json={**body, "reason": "wrong marks entered"})
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["source"] == "event_log"
    assert "failed its checksum" in answer["warning"] and "event log" in answer["warning"]
    assert save["taken_at"][:19] in answer["warning"]
    assert answer["restored_to"] == save["taken_at"] and answer["base"]["counts"]["classes"] == 1
    _, base = app.bases.current_base(_account(cs), UUID(cs.planning01))
    assert [f["name"] for f in base.records["classes"].values()] == ["2nde A"]
    damaged = _history(cs, "Backup.FoundDamaged")
    assert [(e["aggregate_id"], e["data"]["problem"]) for e in damaged] == [(save["id"], "backup_corrupted")]
    # The manager is told once (backup problems are notified by default), not at each check.
    notices = [m for m in client.get("/v1/console/outbox", headers=cs.console).json()["messages"]
               if "is damaged" in m["subject"]]
    assert len(notices) == 1
    restored = _history(cs, "Base.Restored")[-1]
    assert restored["reason"] == "wrong marks entered"

    # A missing file: 410 on download, flagged in the listing, and the restore still happens from the log.
    # It is not recorded: missing from this server's snapshot storage says nothing about the backup.
    path.unlink()
    r = client.get(_url(cs, f"/{save['id']}/download"), headers=cs.console)
    assert r.status_code == 410 and r.json()["code"] == "backup_file_missing"
    assert (_listed(cs, save["id"])["status"], _listed(cs, save["id"])["problem"]) == ("missing", "backup_file_missing")
    r = client.post(f"/v1/console/plannings/{cs.planning01}/restores", headers=cs.console, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "event_log" and "is missing" in r.json()["warning"]
    assert r.json()["base"]["counts"]["classes"] == 1
    assert [e["data"]["problem"] for e in _history(cs, "Backup.FoundDamaged")] == ["backup_corrupted"]


def test_a_bad_file_outside_the_restore_window_restores_nothing(school: Any, backup_settings: Settings) -> None:
    cs, clock = school
    client = cs.client
    save = client.post(_url(cs), headers=cs.console, json={}).json()
    (backup_settings.snapshots_dir / client_app(cs).backups.get_backup(
        _account(cs), UUID(cs.planning01), UUID(save["id"])).file).unlink()
    clock.advance(timedelta(days=31))
    cs.school.token = login_with_certificate(client, cs.school).json()["token"]  # the session expired
    assert set_server(client, cs.console, cs.planning01, "stopped").status_code == 200
    before = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()
    r = client.post(f"/v1/console/plannings/{cs.planning01}/restores", headers=cs.console,
                    json={"backup_id": save["id"], "confirm": True})
    assert r.status_code == 409 and r.json()["code"] == "backup_unrecoverable", r.text
    assert "is missing" in r.json()["detail"] and "nothing was restored" in r.json()["detail"]
    after = client.get(f"/v1/console/plannings/{cs.planning01}/base", headers=cs.console).json()
    assert after["version"] == before["version"]


def _listed(cs: Any, backup_id: str) -> dict:
    r = cs.client.get(_url(cs), headers=cs.console)
    assert r.status_code == 200, r.text
    return next(b for b in r.json()["backups"] if b["id"] == backup_id)


def _history(cs: Any, event_type: str) -> list[dict]:
    r = cs.client.get("/v1/console/history", headers=cs.console, params={"type": event_type, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def _account(cs: Any) -> UUID:
    return client_app(cs).accounts.account_by_number(cs.school.hosting_number).id


def client_app(cs: Any) -> CampusApplication:
    return cs.client.app.state.campus


def test_another_tenants_backup_is_not_found(school: Any) -> None:
    cs, _ = school
    save = cs.client.post(_url(cs), headers=cs.console, json={}).json()
    other = campus_school(cs.client, domain="autre", establishment="Collège", users=False)
    url = f"/v1/console/plannings/{other.planning01}/backups/{save['id']}/download"
    assert cs.client.get(url, headers=other.console).status_code == 404
    assert cs.client.get(_url(other), headers=other.console).json() == {"backups": []}


def _two_saves(tmp_path: Path) -> tuple[Settings, Backup, Backup]:
    """A school with two saves on request, its application closed again."""
    settings = Settings(data_dir=tmp_path / "var", snapshots_dir=tmp_path / "snapshots")
    app = CampusApplication(settings, clock=ManualClock(START))
    try:
        account_id, planning_id = service_school(app)
        return settings, app.backups.take_backup(account_id, planning_id), app.backups.take_backup(account_id, planning_id)
    finally:
        app.close()


def test_snapshots_verify_reports_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings, good, bad = _two_saves(tmp_path)
    files_only = ["snapshots", "verify", "--snapshots-dir", str(settings.snapshots_dir),
                  "--data-dir", str(tmp_path / "nowhere")]
    assert cli_main(files_only) == 0
    path = settings.snapshots_dir / bad.file
    path.write_bytes(path.read_bytes()[:-10])
    assert cli_main(files_only) == 1
    out = capsys.readouterr().out
    assert f"OK   {good.file}" in out and f"BAD  {bad.file}" in out
    assert not (tmp_path / "nowhere").exists()  # verify never creates a store


def test_verify_reports_orphans_and_the_next_start_removes_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings, kept, lost = _two_saves(tmp_path)
    folder = settings.snapshots_dir
    args = ["snapshots", "verify", "--snapshots-dir", str(folder), "--data-dir", str(settings.data_dir)]
    assert cli_main(args) == 0
    assert f"OK   {kept.file}" in capsys.readouterr().out

    # What a crash leaves: a file whose Backup.Taken was never saved, an unfinished write;
    # and a file lost by hand. A folder of an account this store does not know is not ours.
    data = (folder / kept.file).read_bytes()
    orphan = f"{kept.account_id}/{uuid4()}.campus"
    (folder / orphan).write_bytes(data)
    unfinished = f"{kept.account_id}/{uuid4()}.campus.part"
    (folder / unfinished).write_bytes(data[: len(data) // 2])
    foreign = f"{uuid4()}/{uuid4()}.campus"
    (folder / foreign).parent.mkdir()
    (folder / foreign).write_bytes(data)
    (folder / lost.file).unlink()
    assert cli_main(args) == 1
    out = capsys.readouterr().out
    assert f"ORPHAN {orphan}:" in out and f"ORPHAN {foreign}:" in out
    assert f"UNFINISHED {unfinished}:" in out
    assert f"MISSING {lost.file}:" in out and str(lost.id) in out
    assert f"OK   {kept.file}" in out

    # A file replaced by another valid campus-base file is BAD: not what its backup recorded.
    (folder / kept.file).write_bytes((folder / orphan).read_bytes().replace(b'"position":', b'"position": ', 1))
    assert cli_main(args) == 1
    assert f"BAD  {kept.file}" in capsys.readouterr().out
    (folder / kept.file).write_bytes(data)

    with capture_logs() as logs, make_client(settings, ManualClock(START)):
        pass  # the start-up cleanup
    assert not (folder / orphan).exists() and not (folder / unfinished).exists()
    assert (folder / foreign).exists() and (folder / kept.file).exists()
    removed = {(e["event"], e["file"]) for e in logs if e["event"].startswith("snapshot_")}
    assert removed == {("snapshot_orphan_removed", orphan), ("snapshot_unfinished_write_removed", unfinished)}
    assert cli_main(args) == 1
    out = capsys.readouterr().out
    assert "UNFINISHED" not in out and f"ORPHAN {orphan}" not in out and f"MISSING {lost.file}" in out
