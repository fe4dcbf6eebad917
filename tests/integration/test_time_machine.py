"""Point-in-time reads and restores, as properties.

For random sequences of changes to a base and random instants T in the restore
window: the state read as of T equals the state that was current at T;
restoring to T then reading gives it too; and a restore followed by its undo
(a restore to the instant just before it) gives back the state before the
restore.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from school_helpers import service_school

import campus.rules.security
from campus.application import CampusApplication
from campus.errors import Conflict, Invalid
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings

NAMES = st.text(alphabet="ABCDEFGHIJ6789", min_size=1, max_size=4)

# One step: add a class, rename one, remove one (the chosen index wraps), add an annex, or let time pass.
STEP = st.one_of(
    st.tuples(st.just("add"), NAMES),
    st.tuples(st.just("annex"), NAMES),
    st.tuples(st.just("rename"), st.integers(0, 50), NAMES),
    st.tuples(st.just("remove"), st.integers(0, 50)),
    st.tuples(st.just("wait"), st.integers(1, 6 * 3600)),
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CampusApplication, ManualClock]]:
    mp = pytest.MonkeyPatch()
    mp.setattr(campus.rules.security, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    clock = ManualClock()
    folder = tmp_path_factory.mktemp("tm")
    application = CampusApplication(Settings(data_dir=folder, snapshots_dir=folder / "snapshots"), clock=clock)
    yield application, clock
    application.close()
    mp.undo()


def current(app: CampusApplication, account_id: UUID, planning_id: UUID) -> tuple[datetime, dict]:
    """The instant of the base's last event, and its records."""
    _, base = app.bases.current_base(account_id, planning_id)
    return base.modified_on, copy.deepcopy(base.records)


def current_records(app: CampusApplication, account_id: UUID, planning_id: UUID) -> dict:
    return current(app, account_id, planning_id)[1]


def run(app: CampusApplication, clock: ManualClock, account_id: UUID, planning_id: UUID,
        steps: list[tuple]) -> list[tuple[datetime, dict]]:
    """Apply the steps; return (instant of the change, state from that instant on) for each change."""
    timeline = [current(app, account_id, planning_id)]
    for step in steps:
        ids = list(timeline[-1][1]["classes"])
        if step[0] == "add":
            app.bases.add_record(account_id, planning_id, "classes", {"name": step[1]})
        elif step[0] == "rename" and ids:
            app.bases.change_record(account_id, planning_id, "classes", ids[step[1] % len(ids)], {"name": step[2]})
        elif step[0] == "remove" and ids:
            app.bases.remove_record(account_id, planning_id, "classes", ids[step[1] % len(ids)])
        elif step[0] == "annex":
            app.exchange.put_annex(account_id, planning_id, f"logo-{step[1]}.png", "image/png", step[1].encode() * 10)
        elif step[0] == "wait":
            clock.advance(timedelta(seconds=step[1]))
        at, state = current(app, account_id, planning_id)
        if at != timeline[-1][0]:
            timeline.append((at, state))
    clock.advance(timedelta(seconds=1))
    timeline.append((clock.now(), timeline[-1][1]))
    return timeline


def state_at(timeline: list[tuple[datetime, dict]], instant: datetime) -> dict:
    return [state for at, state in timeline if at <= instant][-1]


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=12), picks=st.lists(st.floats(0, 1), min_size=1, max_size=4))
def test_as_of_and_restore_give_the_state_current_at_that_instant(app: Any, steps: list, picks: list) -> None:
    application, clock = app
    account_id, planning_id = service_school(application)
    timeline = run(application, clock, account_id, planning_id, steps)
    start, end = timeline[0][0], timeline[-1][0]
    instants = [start + (end - start) * p for p in picks]

    for instant in instants:
        past = application.time_machine.base_as_of(account_id, planning_id, instant)
        expected = state_at(timeline, instant)
        assert application.timeline.records_at(past.base) == expected
        assert past.base.counts() == {kind: len(records) for kind, records in expected.items()}
        # Page by page (2 at a time), the records are the same, in the order they were entered.
        pages, after = [], None
        while True:
            page, after = application.bases.list_records(account_id, planning_id, "classes", after=after, limit=2,
                                                   as_of=instant)
            pages += page
            if after is None:
                break
        assert pages == list(expected["classes"].items())
        # What a restore would bring back equals what a full replay to that version gives.
        replayed = application.repository.get(past.base.id, version=past.base.version)
        assert application.timeline.restorable_state(past.base) == replayed.restorable_state()
        assert (past.base.name, past.base.grid, past.base.last_entry_at) == (
            replayed.name, replayed.grid, replayed.last_entry_at)

    application.bases.set_server_state(account_id, planning_id, "stopped")
    instant = instants[0]
    before = current_records(application, account_id, planning_id)
    _, restored_at = application.time_machine.restore_base(account_id, planning_id, as_of=instant, confirm=True, reason="test")
    assert current_records(application, account_id, planning_id) == state_at(timeline, instant)

    clock.advance(timedelta(seconds=1))
    application.time_machine.restore_base(account_id, planning_id, as_of=restored_at - timedelta(microseconds=1), confirm=True,
                             reason="undo")
    assert current_records(application, account_id, planning_id) == before
    # The timeline followed both restores: read as of now, the base is the current one.
    clock.advance(timedelta(seconds=1))
    now = application.time_machine.base_as_of(account_id, planning_id, clock.now())
    assert application.timeline.records_at(now.base) == before
    assert now.base.counts() == {kind: len(records) for kind, records in before.items()}


def test_restore_rules(app: Any) -> None:
    application, clock = app
    account_id, planning_id = service_school(application)
    application.bases.add_record(account_id, planning_id, "classes", {"name": "6A"})
    clock.advance(timedelta(days=40))
    earliest, latest = application.time_machine.restore_window(account_id, planning_id)
    assert latest - earliest == timedelta(days=30)
    with pytest.raises(Conflict) as in_service:
        application.time_machine.restore_base(account_id, planning_id, as_of=latest, confirm=True)
    assert in_service.value.code == "server_in_service"
    application.bases.set_server_state(account_id, planning_id, "stopped")
    with pytest.raises(Invalid) as unconfirmed:
        application.time_machine.restore_base(account_id, planning_id, as_of=latest, confirm=False)
    assert unconfirmed.value.errors[0]["field"] == "confirm"
    with pytest.raises(Invalid) as too_old:
        application.time_machine.restore_base(account_id, planning_id, as_of=earliest - timedelta(seconds=1), confirm=True)
    assert too_old.value.errors[0]["field"] == "as_of"
    # The history between stays readable: the record's creation is still there.
    from campus.projections.history import HistoryQuery

    events, _ = application.history.query(HistoryQuery(tenant=str(account_id), types=("Base.RecordAdded",)))
    assert [e["data"]["fields"]["name"] for e in events] == ["6A"]


def test_a_restore_and_a_load_first_save_the_base_they_replace(app: Any) -> None:
    from campus.rules.base_file_reader import read_base_file

    application, clock = app
    account_id, planning_id = service_school(application)
    application.bases.add_record(account_id, planning_id, "classes", {"name": "6A"})
    clock.advance(timedelta(hours=1))
    before_second = clock.now()
    clock.advance(timedelta(hours=1))
    application.bases.add_record(account_id, planning_id, "classes", {"name": "6B"})
    application.bases.set_server_state(account_id, planning_id, "stopped")
    application.time_machine.restore_base(account_id, planning_id, as_of=before_second, confirm=True)

    [save] = [b for b in application.backups.list_backups(account_id, planning_id) if "before restore" in b.name]
    with open(application.backups.verified_backup_path(save), "rb") as stream:
        saved = read_base_file(stream)
    assert saved.counts()["classes"] == 2  # the state the restore replaced, kept as a way back
    assert len(current_records(application, account_id, planning_id)["classes"]) == 1
