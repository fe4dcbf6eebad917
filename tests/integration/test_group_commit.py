"""Group commit (issue 11): commands of different schools appended in one transaction on SQLite.

Every command is either wholly stored and acknowledged, or wholly absent and refused — whichever
other commands share its transaction, and when some of them fail. Failures are injected for real: a
trigger of the SQLite store fails the insert of any event whose state holds a marker.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from school_helpers import service_school
from test_application import acting

from campus.application import CampusApplication
from campus.errors import StoreUnavailable
from campus.infra.clock import SystemClock
from campus.infra.settings import Settings

SCHOOLS = 4
MARKER = "REFUSE-ME"
CONSTRAINT_MARKER = "CONSTRAINT-ME"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CampusApplication, list, Settings]]:
    """One SQLite store with SCHOOLS schools (a base in service each) and the refusing trigger."""
    folder = tmp_path_factory.mktemp("group")
    store_settings = Settings(data_dir=folder / "data", snapshots_dir=folder / "snapshots", operator_token="o" * 40)
    app = CampusApplication(store_settings, clock=SystemClock())
    with acting("manager:test"):
        schools = [service_school(app) for _ in range(SCHOOLS)]
    with sqlite3.connect(store_settings.data_dir / "campus.sqlite3") as db:
        # The store fails the insert (an error of the database at run time, not a conflict): the trigger
        # parses text that is not JSON.
        db.execute(f"CREATE TRIGGER refuse_marked BEFORE INSERT ON stored_events WHEN instr(NEW.state, "
                   f"CAST('{MARKER}' AS BLOB)) > 0 BEGIN SELECT json('not json'); END")
        # A constraint of the database refuses it (an integrity error that is not a version conflict).
        db.execute(f"CREATE TRIGGER constrain_marked BEFORE INSERT ON stored_events WHEN instr(NEW.state, "
                   f"CAST('{CONSTRAINT_MARKER}' AS BLOB)) > 0 BEGIN SELECT RAISE(ABORT, 'refused by a constraint'); END")
    try:
        yield app, schools, store_settings
    finally:
        app.close()


def add(app: CampusApplication, school: tuple, name: str) -> str:
    account_id, planning_id = school
    with acting("manager:test"):
        _, record_id, _ = app.bases.add_record(account_id, planning_id, "subjects", {"name": name})
    return str(record_id)


def run_together(app: CampusApplication, schools: list, plans: list[list[bool]], tag: str) -> dict:
    """Each school's commands in a thread of its own, all schools at once; name -> record id or error."""
    outcome: dict[str, str | Exception] = {}
    start = threading.Barrier(len(plans))

    def school_thread(index: int) -> None:
        start.wait()
        for n, refused in enumerate(plans[index]):
            name = f"{tag}-{index}-{n}" + (f"-{MARKER}" if refused else "")
            try:
                outcome[name] = add(app, schools[index], name)
            except Exception as exc:  # noqa: BLE001 - the outcome is checked below
                outcome[name] = exc

    with ThreadPoolExecutor(len(plans)) as pool:
        list(pool.map(school_thread, range(len(plans))))
    return outcome


def stored_subjects(store_settings: Settings, schools: list) -> dict[str, str]:
    """name -> record id of every subject, replayed from the store by a new application (no cache)."""
    fresh = CampusApplication(store_settings, clock=SystemClock())
    try:
        found = {}
        for account_id, planning_id in schools:
            base = fresh.repository.get(fresh.plannings.get_planning(account_id, planning_id).base_id)
            found.update({fields["name"]: str(record_id) for record_id, fields in base.records["subjects"].items()})
        return found
    finally:
        fresh.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=SCHOOLS, max_size=SCHOOLS),
       tag=st.uuids().map(lambda u: u.hex[:8]))
def test_each_command_is_wholly_stored_and_acknowledged_or_wholly_absent(world, plans, tag) -> None:  # noqa: ANN001
    app, schools, store_settings = world
    outcome = run_together(app, schools, plans, tag)
    stored = stored_subjects(store_settings, schools)
    for name, result in outcome.items():
        if MARKER in name:  # refused by the store: refused to the caller, and nothing of it stored
            assert isinstance(result, StoreUnavailable), f"{name}: {result!r}"
            assert name not in stored
        else:  # the others go on, whatever shared their transaction: acknowledged and stored
            assert isinstance(result, str), f"{name}: {result!r}"
            assert stored.get(name) == result
    # What the server lists is what the store holds (no refused change kept in memory).
    for index, (account_id, planning_id) in enumerate(schools):
        prefix = f"{tag}-{index}-"
        listed = {fields["name"] for _, fields in app.bases.list_records(account_id, planning_id, "subjects",
                                                                         limit=1000)[0]}
        assert {n for n in listed if n.startswith(prefix)} == {n for n in stored if n.startswith(prefix)}


def test_commands_of_different_schools_share_transactions(world) -> None:  # noqa: ANN001
    app, schools, _ = world
    group = app.commands.group
    transactions, writes = group.transactions, group.writes
    run_together(app, schools, [[False] * 25] * SCHOOLS, "shared")
    assert group.writes - writes == SCHOOLS * 25
    assert group.transactions - transactions < SCHOOLS * 25, "no command ever shared a commit"


def test_a_refusal_by_a_constraint_of_the_store_is_a_503_not_a_conflict(world) -> None:  # noqa: ANN001
    """Only a version conflict is retried (and answered 409 if it lasts); any other integrity error of the
    store is a refusal: 503 at once, nothing stored."""
    app, schools, store_settings = world
    with pytest.raises(StoreUnavailable):
        add(app, schools[0], f"x-{CONSTRAINT_MARKER}")
    assert f"x-{CONSTRAINT_MARKER}" not in stored_subjects(store_settings, schools)
    assert add(app, schools[0], "after the refusal")  # the school goes on
