"""Three real ``campus serve`` on one PostgreSQL schema, started together after a 30-day backlog,
take each scheduled save and archive once (issue 9: "one scheduler"); when the holder of the
scheduler's lease is killed, another server takes the next due slots.

The store is built in-process on the schema (a CampusApplication on a ManualClock 31 days back:
a base in service whose scheduler ran one day, then nothing), then closed; the servers share it,
one snapshots folder and one operator token, as servers behind a load balancer would.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.services.backups import boundaries

# Same rule as tests/conftest.py (e2e modules cannot import the conftest files).
PG_DSN = os.environ.get("CAMPUS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "Superadmin-2026!"
BACKLOG_TIMEOUT = 120.0


@dataclass
class Built:
    hosting_number: str
    console_password: str
    invoice_number: str
    planning01: str
    planning02: str


def _grid_year(now: datetime) -> int:
    """A school year whose summer operations cannot fall inside the test (its base is never replaced)."""
    return now.year if now.month >= 7 else now.year - 1


def _dsn(schema: str) -> str:
    return f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={schema}"


def build(schema: str, snapshots: Path, workdir: Path) -> Built:
    settings = Settings(data_dir=workdir / "data", snapshots_dir=snapshots,
                        operator_token="builder-operator-token-0123456789abcdef", postgres_dsn=_dsn(schema))
    now = datetime.now(UTC)
    clock = ManualClock(now - timedelta(days=31))
    app = CampusApplication(settings, clock=clock)
    try:
        opened = app.accounts.open_account("Lycée Jean Moulin", "Claire Dupont", "claire@ecole.fr")
        account_id = opened.account.id
        app.accounts.accept_licence_agreement(account_id)
        app.users.create_first_superadministrator(account_id, first_name="Pierre", last_name="Martin", login="pmartin",
                                            password=PASSWORD, password_confirmation=PASSWORD)
        p1, p2 = app.plannings.list_plannings(account_id)[:2]
        year = _grid_year(now)
        first_monday = date(year, 8, 25) + timedelta(days=(7 - date(year, 8, 25).weekday()) % 7)
        for planning in (p1, p2):
            app.bases.create_base(account_id, planning.id, name=f"Base {planning.number}", first_monday=first_monday,
                            last_sunday=first_monday + timedelta(weeks=44, days=-1), working_days=["mon", "tue"],
                            sequences_per_day=8, sequence_minutes=60, split=1)
        app.bases.set_server_state(account_id, p2.id, "stopped")
        clock.advance(timedelta(days=1))
        taken = app.backup_schedule.run_due_backups()
        assert {b.kind for b in taken} == {"save", "archive"} and {b.planning_id for b in taken} == {p1.id}
        return Built(opened.account.hosting_number, opened.console_password, opened.invoice_number,
                     str(p1.id), str(p2.id))
    finally:
        app.close()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url.path} -> {response.status_code}: {response.text}"
    return response.json()


def console(server: Any, built: Built) -> dict[str, str]:
    session = ok(server.client.post("/v1/console/sessions", json={
        "hosting_number": built.hosting_number, "password": built.console_password,
        "invoice_number": built.invoice_number}), 201)
    return {"Authorization": f"Bearer {session['token']}"}


def scheduled(server: Any, headers: dict[str, str], planning_id: str) -> list[dict]:
    listed = ok(server.client.get(f"/v1/console/plannings/{planning_id}/backups", headers=headers))["backups"]
    return [b for b in listed if b["scheduled"]]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def backlog_taken(server: Any, headers: dict[str, str], planning_id: str) -> list[dict]:
    """The planning's scheduled backups once its backlog is taken: 12 saves up to the last 2-hour
    boundary, 30 archives up to the last midnight (fails after BACKLOG_TIMEOUT)."""
    deadline = time.monotonic() + BACKLOG_TIMEOUT
    while True:
        listed = scheduled(server, headers, planning_id)
        now = datetime.now(UTC)
        saves = sorted(instant(b["taken_at"]) for b in listed if b["kind"] == "save")
        archives = sorted(instant(b["taken_at"]) for b in listed if b["kind"] == "archive")
        if (saves and saves[-1] == boundaries("save", now - timedelta(hours=2), now)[-1]
                and archives and archives[-1] == boundaries("archive", now - timedelta(days=1), now)[-1]
                and (len(saves), len(archives)) == (12, 30)):
            return listed
        assert time.monotonic() < deadline, (f"backlog not taken in {BACKLOG_TIMEOUT}s: {len(saves)} saves, "
                                             f"{len(archives)} archives")
        time.sleep(0.5)


def history(server: Any, headers: dict[str, str], event_type: str) -> list[dict]:
    events: list[dict] = []
    after = None
    while True:
        params: dict[str, Any] = {"type": event_type, "limit": 500}
        if after is not None:
            params["after"] = after
        page = ok(server.client.get("/v1/console/history", headers=headers, params=params))
        events += page["events"]
        after = page["next"]
        if after is None:
            return events


def check_slots(server: Any, headers: dict[str, str], planning_id: str, listed: list[dict]) -> None:
    """Each slot taken once, ever (the history holds every Backup.Taken, discarded or not); retention
    exact; each discard recorded once; the listed files are there."""
    for kind, every in (("save", timedelta(hours=2)), ("archive", timedelta(days=1))):
        times = sorted(instant(b["taken_at"]) for b in listed if b["kind"] == kind)
        assert all(later - earlier == every for earlier, later in zip(times, times[1:], strict=False)), kind
    assert all(b["status"] == "ok" for b in listed)
    taken = [e for e in history(server, headers, "Backup.Taken")
             if e["data"].get("scheduled") and e["data"].get("planning_id") == planning_id]
    slots = Counter((e["data"]["kind"], e["data"]["taken_at"]) for e in taken)
    assert [slot for slot, n in slots.items() if n > 1] == [], "a slot was taken twice"
    ours = {e["aggregate_id"] for e in taken}
    discards = Counter(e["aggregate_id"] for e in history(server, headers, "Backup.Discarded")
                       if e["aggregate_id"] in ours)
    assert [b for b, n in discards.items() if n > 1] == [], "a discard was recorded twice"
    assert len(discards) == len(taken) - 42
    assert not {b["id"] for b in listed} & set(discards)


def leaders(servers: list[Any]) -> list[int]:
    """The servers that took the scheduler's lease, in the order of their logs."""
    found = []
    for n, server in enumerate(servers):
        found += [(r.get("timestamp", ""), n) for r in server.json_lines() if r.get("event") == "scheduler_leading"]
    return [n for _, n in sorted(found)]


def test_three_servers_started_together_take_a_30_day_backlog_once(pg_schema: str, make_cluster,
                                                                   tmp_path: Path) -> None:
    # pg_schema first: set up before make_cluster, so the servers are stopped before it is dropped.
    servers = make_cluster(3, "postgres", start=False, schema=pg_schema)
    built = build(pg_schema, Path(servers[0].env["CAMPUS_SNAPSHOTS_DIR"]), tmp_path / "builder")
    for server in servers:  # together: every process launched before any is waited for
        server.launch()
    for server in servers:
        server.wait_started()
    headers = console(servers[1], built)

    listed = backlog_taken(servers[1], headers, built.planning01)
    check_slots(servers[2], headers, built.planning01, listed)
    assert scheduled(servers[0], headers, built.planning02) == []  # stopped: nothing scheduled
    holders = leaders(servers)
    assert len(set(holders)) == 1, f"more than one server ran the scheduler: {holders}"
    for n, server in enumerate(servers):
        assert not [r for r in server.json_lines() if r.get("event") == "scheduled_backup_failed"], n

    # The holder dies: another server takes the lease and the next due slots (planning02's, put in
    # service now, its base 31 days old with nothing taken).
    holder = servers[holders[0]]
    survivors = [s for s in servers if s is not holder]
    holder.kill()
    ok(survivors[0].client.put(f"/v1/console/plannings/{built.planning02}/server", headers=headers,
                               json={"state": "in_service"}))
    listed02 = backlog_taken(survivors[1], headers, built.planning02)
    check_slots(survivors[0], headers, built.planning02, listed02)
    after = leaders(servers)
    assert after[0] == holders[0] and len(after) == 2 and servers[after[1]] in survivors, after
    assert len(scheduled(survivors[0], headers, built.planning01)) == 42  # planning01's are as they were
