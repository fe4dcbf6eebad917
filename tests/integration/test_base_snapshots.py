"""Library snapshots of bases (issue 11, fast replay and cold start): campus/services/base_snapshots.py.

A snapshot never changes what is read: a base read through its snapshot (current reads, ``version=``
reads, a new application on the same store) is the base replayed from its events, attribute by
attribute, type by type. Snapshots of another layout, or unreadable, are ignored. The snapshotter takes
one when a base has grown by the threshold, keeps only the newest, and runs in one server at a time.
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta, timezone
from datetime import time as time_of_day
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from school_helpers import service_school

import campus.repository
import campus.services.base_snapshots as base_snapshots
from campus.aggregates.school_base import Base, snapshot_topic
from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.repository import project
from campus.rules.records import KINDS, Level


# -- comparing states exactly -------------------------------------------------------------------------------
def canon(value: Any) -> Any:
    """A value as nested tuples that are equal only if the values are: same types at every level, same
    order of dict items, Decimals by their digits and exponent, datetimes by their offset too."""
    if isinstance(value, dict):
        return ("dict", tuple((canon(k), canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canon(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, tuple(sorted(repr(canon(v)) for v in value)))
    if isinstance(value, (datetime, time_of_day)):
        return (type(value).__name__, value.isoformat(), type(value.tzinfo).__name__)
    return (type(value).__name__, repr(value))


def state(base: Any) -> dict[str, Any]:
    """Everything a base holds (its attributes, in any order), compared exactly."""
    return {name: canon(value) for name, value in vars(base).items()}


def from_events(app: CampusApplication, base_id: UUID, version: int | None = None) -> Base:
    """The base replayed from its events only (no snapshot), up to `version`."""
    return project(None, app.events.get(base_id, lte=version))


def assert_reads_equal_replay(app: CampusApplication, base_id: UUID, versions: list[int]) -> None:
    assert state(app.repository.get(base_id)) == state(from_events(app, base_id))
    for version in versions:
        assert state(app.repository.get(base_id, version=version)) == state(from_events(app, base_id, version))


# -- every kind of change, through the services ---------------------------------------------------------------
def add(app: CampusApplication, account_id: UUID, planning_id: UUID, kind: str, **fields: Any) -> str:
    _, record_id, _ = app.bases.add_record(account_id, planning_id, kind, fields)
    return str(record_id)


def fill_every_kind(app: CampusApplication, account_id: UUID, planning_id: UUID) -> dict[str, str]:
    """One record of each kind (and a second class), with every optional field: Decimals, dates, times,
    aware datetimes at several offsets, an enum, booleans, references."""
    a = (app, account_id, planning_id)
    ids: dict[str, str] = {}
    ids["teachers"] = add(*a, "teachers", last_name="Martin", first_name="Paul", civility="M.", email="p@ecole.fr")
    ids["subjects"] = add(*a, "subjects", name="Mathématiques", short_name="MATHS")
    ids["classes"] = add(*a, "classes", name="6A", level="6e")
    ids["class2"] = add(*a, "classes", name="6B")
    ids["groups"] = add(*a, "groups", name="6A-latin", class_id=ids["classes"])
    ids["students"] = add(*a, "students", last_name="Bernard", first_name="Lucie", class_id=ids["classes"],
                          birth_date="2014-03-02")
    ids["rooms"] = add(*a, "rooms", name="B215", capacity=30)
    ids["courses"] = add(*a, "courses", subject_id=ids["subjects"], teacher_id=ids["teachers"],
                         class_id=ids["classes"], group_id=ids["groups"], room_id=ids["rooms"], weekday="mon",
                         start="08:30", duration_minutes=55)
    ids["homework"] = add(*a, "homework", subject_id=ids["subjects"], class_id=ids["classes"], given_on="2026-09-01",
                          due_on="2026-09-08", description="Exercices 1 à 5 ✓")
    ids["grades"] = add(*a, "grades", student_id=ids["students"], subject_id=ids["subjects"], value="12.50",
                        scale="20", coefficient="1.5", date="2026-09-10", comment="Bien")
    ids["lesson_logs"] = add(*a, "lesson_logs", course_id=ids["courses"], date="2026-09-07", content="Fractions")
    ids["appraisals"] = add(*a, "appraisals", student_id=ids["students"], subject_id=ids["subjects"], period="T1",
                            text="Bon trimestre")
    ids["evaluations"] = add(*a, "evaluations", student_id=ids["students"], subject_id=ids["subjects"],
                             competence="C1.2", level="acquired", date="2026-09-12")
    ids["companies"] = add(*a, "companies", name="ACME", city="Lyon")
    ids["internships"] = add(*a, "internships", student_id=ids["students"], company_id=ids["companies"],
                             start="2027-01-04", end="2027-01-15")
    ids["absences"] = add(*a, "absences", student_id=ids["students"], start="2026-09-14T08:00:00+02:00",
                          end="2026-09-14T10:00:00.250+02:00", reason="malade", justified=True)
    ids["lateness"] = add(*a, "lateness", student_id=ids["students"], at="2026-09-15T08:10:00-03:30", minutes=10)
    ids["punishments"] = add(*a, "punishments", student_id=ids["students"], on="2026-09-16", nature="Retenue",
                             reason="bavardage")
    ids["sanctions"] = add(*a, "sanctions", student_id=ids["students"], on="2026-09-17", nature="Avertissement")
    return ids


def export_to(app: CampusApplication, account_id: UUID, planning_id: UUID, path: Path) -> Path:
    path.write_bytes(b"".join(app.exchange.export_base_file(account_id, planning_id).chunks()))
    return path


TRANSFER = {
    "grid": {"first_monday": date(2026, 8, 31), "last_sunday": date(2027, 7, 4), "working_days": ["mon", "tue", "thu"],
             "sequences_per_day": 9, "sequence_minutes": 50, "split": 2},
    "resources": {
        "teachers": [{"ref": "P1", "last_name": "Durand", "first_name": "Anne", "civility": "Mme"}],
        "subjects": [{"ref": "FR", "name": "Français"}],
        "classes": [{"ref": "C1", "name": "5A"}],
        "students": [{"ref": "E1", "last_name": "Petit", "first_name": "Hugo", "class_ref": "C1"}],
        "rooms": [{"ref": "S1", "name": "A101", "capacity": 28}],
        "courses": [{"subject_ref": "FR", "teacher_ref": "P1", "class_ref": "C1", "room_ref": "S1",
                     "weekday": "thu", "start": "10:05", "duration_minutes": 100}],
    },
    "connection_modes": {"direction": {"client": True, "spaces": ["direction"]},
                         "parents": {"public": True, "spaces": ["parents", "common"]}},
}


def test_a_base_read_through_its_snapshot_is_the_base_replayed_from_its_events(
        settings: Settings, clock: ManualClock, tmp_path: Path) -> None:
    app = CampusApplication(settings, clock=clock)
    try:
        account_id, planning_id = service_school(app)
        planning02 = app.plannings.list_plannings(account_id)[1].id
        base_id = app.plannings.get_planning(account_id, planning_id).base_id
        ids = fill_every_kind(app, account_id, planning_id)
        clock.advance(timedelta(minutes=5))
        before_changes = clock.now()
        clock.advance(timedelta(minutes=5))
        app.bases.change_record(account_id, planning_id, "grades", UUID(ids["grades"]),
                                {"value": "14.25", "comment": None})
        app.bases.change_record(account_id, planning_id, "absences", UUID(ids["absences"]),
                                {"end": "2026-09-14T14:00:00+05:45", "justified": False})
        app.exchange.put_annex(account_id, planning_id, "logo.png", "image/png",
                               b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
        snapshotted = app.base_snapshots.take(base_id)
        assert snapshotted == app.repository.get(base_id).version
        assert app.repository.usable_snapshot(base_id).originator_version == snapshotted
        assert_reads_equal_replay(app, base_id, [1, snapshotted - 1, snapshotted])

        # After the snapshot: a removal, a restore (the server stopped), changes after the restore.
        app.bases.remove_record(account_id, planning_id, "sanctions", UUID(ids["sanctions"]))
        app.bases.set_server_state(account_id, planning_id, "stopped")
        clock.advance(timedelta(minutes=5))
        app.time_machine.restore_base(account_id, planning_id, as_of=before_changes, confirm=True, reason="test")
        clock.advance(timedelta(minutes=5))
        app.bases.add_record(account_id, planning_id, "evaluations", {
            "student_id": ids["students"], "subject_id": ids["subjects"], "competence": "C2", "level": "exceeded"})
        current = app.repository.get(base_id).version
        assert_reads_equal_replay(app, base_id, [snapshotted + 1, current - 1, current])
        # The time machine reads the timeline, not snapshots: unchanged.
        past = app.time_machine.base_as_of(account_id, planning_id, before_changes)
        assert past.base.version == from_events(app, base_id, past.base.version).version

        second = app.base_snapshots.take(base_id)
        assert second == current
        assert [v for v, _ in app.base_snapshots.snapshot_versions(base_id)] == [second]  # the older one deleted

        # A load (records imported in chunks, annexes) and a transfer (connection modes) make bases too.
        exported = export_to(app, account_id, planning_id, tmp_path / "base.campus")
        _, loaded, _ = app.exchange.load_base_file(account_id, planning02, exported, name="Chargée")
        _, transferred, _ = app.exchange.transfer_base(account_id, planning02, name="EDT", **TRANSFER)
        for other in (loaded.id, transferred.id):
            assert app.base_snapshots.take(other) is not None
            assert_reads_equal_replay(app, other, [1])
        expected = {b: state(from_events(app, b)) for b in (base_id, loaded.id, transferred.id)}
    finally:
        app.close()

    # A restarted application reads each base through its snapshot (its cache is empty).
    restarted = CampusApplication(settings, clock=clock)
    try:
        for b, wanted in expected.items():
            assert restarted.repository.usable_snapshot(b) is not None
            assert state(restarted.bases.get_base(account_id, b)) == wanted
        # ... and writes on from it.
        app = restarted
        app.bases.set_server_state(account_id, planning_id, "in_service")
        app.bases.change_record(account_id, planning_id, "students", UUID(ids["students"]), {"birth_date": None})
        assert state(app.bases.get_base(account_id, base_id)) == state(from_events(app, base_id))
    finally:
        restarted.close()


# -- any value a record may hold, through the store ----------------------------------------------------------
offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
hashable = st.one_of(st.text(max_size=6), st.integers(min_value=-(2**70), max_value=2**70), st.uuids(), st.dates(),
                     st.booleans())
scalars = st.one_of(
    st.none(), hashable, st.floats(), st.decimals(allow_nan=True, allow_infinity=True), st.binary(max_size=8),
    st.datetimes(), st.datetimes(timezones=offsets | st.timezones()), st.times(timezones=st.none() | offsets),
    st.timedeltas(), st.sampled_from(list(Level)))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(hashable, inner, max_size=3), st.sets(hashable, max_size=3), st.frozensets(hashable, max_size=3)),
    max_leaves=6)
fields = st.dictionaries(st.text(min_size=1, max_size=6), values, max_size=4)
instants = st.datetimes(timezones=st.none() | offsets | st.timezones())
step = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(list(KINDS)), fields, instants),
    st.tuples(st.just("change"), st.integers(0, 20), fields, instants),
    st.tuples(st.just("unset"), st.integers(0, 20), instants),
    st.tuples(st.just("remove"), st.integers(0, 20), instants),
    st.tuples(st.just("import"), st.lists(st.tuples(st.sampled_from(list(KINDS)), fields), max_size=3),
              st.none() | instants),
    st.tuples(st.just("annex"), st.text(min_size=1, max_size=5), st.binary(max_size=20), instants),
    st.tuples(st.just("modes"), st.dictionaries(st.text(max_size=5), fields, max_size=2)),
    st.tuples(st.just("rename"), st.text(max_size=10)),
    st.tuples(st.just("restore"), st.integers(0, 20), instants),
)


def apply(base: Base, action: tuple, saved_states: list[tuple[dict, int]]) -> None:
    live = [(kind, rid) for kind, records in base.records.items() for rid in records]
    kind, rid = live[action[1] % len(live)] if live and isinstance(action[1], int) else (None, None)
    if action[0] == "add":
        base.add_record(kind=action[1], record_id=uuid4(), fields=action[2], at=action[3])
    elif action[0] == "change" and rid is not None:
        base.change_record(kind=kind, record_id=rid, changes=action[2], at=action[3])
    elif action[0] == "unset" and rid is not None and base.records[kind][rid]:
        base.change_record(kind=kind, record_id=rid, changes={next(iter(base.records[kind][rid])): None},
                           at=action[2])
    elif action[0] == "remove" and rid is not None:
        base.remove_record(kind=kind, record_id=rid, at=action[2])
    elif action[0] == "import":
        base.import_records(records=tuple((k, uuid4(), f) for k, f in action[1]), last_entry_at=action[2])
    elif action[0] == "annex":
        base.add_annex(name=action[1], content_type="application/octet-stream", sha256="0" * 64, data=action[2],
                       at=action[3])
    elif action[0] == "modes":
        base.set_connection_modes(modes=action[1])
    elif action[0] == "rename":
        base.rename(name=action[1])
    elif action[0] == "restore" and saved_states:
        restored, version = saved_states[action[1] % len(saved_states)]
        base.restore(state=restored, restored_to=action[2], from_version=version)


@pytest.fixture
def store_app(settings: Settings, clock: ManualClock) -> Any:
    app = CampusApplication(settings, clock=clock)
    yield app
    app.close()


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=14), cut=st.integers(0, 14), grid=st.dictionaries(
    st.text(max_size=5), values, max_size=3))
def test_any_state_a_base_holds_round_trips_through_a_snapshot(store_app: CampusApplication, steps: list,
                                                               cut: int, grid: dict) -> None:
    app = store_app
    base = Base(account_id=uuid4(), planning_id=uuid4(), name="B", grid=grid, origin="created")
    app.save(base)
    saved_states: list[tuple[dict, int]] = []
    snapshotted = None
    for i, action in enumerate(steps):
        if i == cut % len(steps):
            snapshotted = app.base_snapshots.take(base.id)
        apply(base, action, saved_states)
        app.save(base)
        # What a restore would carry, as the timeline gives it (decoded from the store).
        saved_states.append((from_events(app, base.id).restorable_state(), base.version))
    if snapshotted is None:
        snapshotted = app.base_snapshots.take(base.id)
    assert app.repository.usable_snapshot(base.id).originator_version == snapshotted
    assert_reads_equal_replay(app, base.id, sorted({1, snapshotted, base.version}))
    # A snapshot of the last version: the whole current state, re-encoded.
    app.base_snapshots.take(base.id)
    assert app.repository.usable_snapshot(base.id).originator_version == base.version
    assert state(app.repository.get(base.id)) == state(from_events(app, base.id))


# -- which snapshot replay starts from ---------------------------------------------------------------------------
def a_base(app: CampusApplication, records: int) -> Base:
    base = Base(account_id=uuid4(), planning_id=uuid4(), name="Original", grid={}, origin="created")
    for i in range(records):
        base.add_record(kind="classes", record_id=uuid4(), fields={"name": f"C{i}"}, at=datetime(2026, 9, 1, 8, i))
    app.save(base)
    return base


def poisoned(app: CampusApplication, base_id: UUID, version: int, name: str, topic: str | None = None) -> StoredEvent:
    """A snapshot of the base at `version` whose name says where replay started from (stored as it is)."""
    marked = from_events(app, base_id, version)
    marked.name = name
    stored = app.mapper.to_stored_event(Base.Snapshot.take(marked))
    if topic is not None:
        stored = StoredEvent(stored.originator_id, stored.originator_version, topic, stored.state)
    app.snapshots.recorder.insert_events([stored])
    return stored


def test_replay_starts_from_the_newest_snapshot_at_or_below_the_version_read(
        store_app: CampusApplication, monkeypatch: pytest.MonkeyPatch) -> None:
    app = store_app
    base = a_base(app, 9)  # versions 1-10
    poisoned(app, base.id, 4, "from the snapshot at 4")
    poisoned(app, base.id, 7, "from the snapshot at 7")
    folds = []

    def spy(aggregate: Any, events: Any) -> Any:
        folds.append(1)
        return project(aggregate, events)

    monkeypatch.setattr(campus.repository, "project", spy)
    assert app.repository.get(base.id).name == "from the snapshot at 7"
    assert [app.repository.get(base.id, version=v).name for v in (3, 4, 6, 7, 10)] == [
        "Original", "from the snapshot at 4", "from the snapshot at 4", "from the snapshot at 7",
        "from the snapshot at 7"]
    assert len(folds) == 6  # our projector, for current and `version=` reads alike
    # The records after the snapshot are folded onto it.
    assert len(app.repository.get(base.id, version=6).records["classes"]) == 5


def test_a_snapshot_of_another_layout_is_ignored(store_app: CampusApplication) -> None:
    app = store_app
    base = a_base(app, 9)
    expected = state(from_events(app, base.id))
    other_layout = snapshot_topic().rsplit("@", 1)[0] + "@0-000000000000"
    poisoned(app, base.id, 9, "another layout", topic=other_layout)
    poisoned(app, base.id, 10, "the library's own, taken by code before layouts",
             topic="campus.aggregates.core:CampusAggregate.Snapshot")
    assert app.repository.usable_snapshot(base.id) is None
    assert state(app.repository.get(base.id)) == expected
    assert app.repository.get(base.id, version=9).name == "Original"
    # The snapshotter counts them as none: the base is due, and its snapshot replaces them both.
    assert app.base_snapshots.take_due(every=10) == [base.id]
    assert app.base_snapshots.snapshot_versions(base.id) == [(10, snapshot_topic())]
    assert state(app.repository.get(base.id)) == expected


def test_an_unreadable_snapshot_is_ignored(store_app: CampusApplication) -> None:
    from structlog.testing import capture_logs

    app = store_app
    base = a_base(app, 9)
    app.snapshots.recorder.insert_events([StoredEvent(base.id, 10, snapshot_topic(), b"\xc1 not msgpack")])
    with capture_logs() as logs:
        assert app.repository.usable_snapshot(base.id) is None
        assert state(app.repository.get(base.id)) == state(from_events(app, base.id))
    assert [entry["event"] for entry in logs].count("snapshot_unreadable") == 2
    assert app.base_snapshots.take(base.id) == 10  # a new one replaces it
    assert app.repository.usable_snapshot(base.id).originator_version == 10


def test_a_new_layout_makes_another_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    import campus.aggregates.school_base as school_base

    current = snapshot_topic()
    assert current == Base.Snapshot.TOPIC and current.startswith("campus.aggregates.school_base:Base.Snapshot@1-")
    monkeypatch.setattr(Base, "SNAPSHOT_LAYOUT", 2)
    assert snapshot_topic() != current and "@2-" in snapshot_topic()
    monkeypatch.setattr(Base, "SNAPSHOT_LAYOUT", 1)
    monkeypatch.setattr(school_base, "KINDS", {**KINDS, "rewards": KINDS["sanctions"]})
    assert snapshot_topic() != current  # a new record kind changes what a base holds


# -- the snapshotter ------------------------------------------------------------------------------------------
def grow(app: CampusApplication, base_id: UUID, events: int) -> int:
    base = app.repository.get(base_id)
    for i in range(events):
        base.add_record(kind="rooms", record_id=uuid4(), fields={"name": f"R{i}", "capacity": Decimal(i)},
                        at=datetime(2026, 9, 1, tzinfo=timezone.utc) + timedelta(seconds=i))
    app.save(base)
    return base.version


def test_the_snapshotter_takes_a_snapshot_past_the_threshold_and_keeps_only_the_newest(
        store_app: CampusApplication) -> None:
    app = store_app
    small, big = a_base(app, 3), a_base(app, 12)  # versions 4 and 13
    assert app.base_snapshots.take_due(every=10) == [big.id]
    assert app.base_snapshots.snapshot_versions(big.id) == [(13, snapshot_topic())]
    assert app.base_snapshots.take_due(every=10) == []  # nothing grew
    grow(app, big.id, 9)  # 22: 9 since the snapshot
    grow(app, small.id, 6)  # 10: 10 since none
    assert app.base_snapshots.take_due(every=10) == [small.id]
    version = grow(app, big.id, 1)
    assert app.base_snapshots.take_due(every=10) == [big.id]
    assert app.base_snapshots.snapshot_versions(big.id) == [(version, snapshot_topic())]  # the older one deleted
    assert app.base_snapshots.snapshot_versions(small.id) == [(10, snapshot_topic())]
    assert app.repository.usable_snapshot(big.id).originator_version == version


def test_one_server_snapshots_in_the_background_the_others_stand_by(
        settings: Settings, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_snapshots, "SNAPSHOT_EVERY", 20)
    first, second = CampusApplication(settings, clock=clock), CampusApplication(settings, clock=clock)
    stop = threading.Event()
    threads = []
    try:
        threads.append(first.base_snapshots.start_snapshotter(stop, every=0.05, retry=0.05))
        deadline = time.monotonic() + 10
        while not first.base_snapshots.lease.held and time.monotonic() < deadline:
            time.sleep(0.02)
        threads.append(second.base_snapshots.start_snapshotter(stop, every=0.05, retry=0.05))
        base = a_base(second, 10)
        time.sleep(0.3)
        assert first.base_snapshots.snapshot_versions(base.id) == []  # below the threshold
        version = grow(second, base.id, 15)
        while not first.base_snapshots.snapshot_versions(base.id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.base_snapshots.snapshot_versions(base.id) == [(version, snapshot_topic())]
        assert first.base_snapshots.lease.held and not second.base_snapshots.lease.held
        assert state(second.repository.get(base.id)) == state(from_events(second, base.id))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        first.close()
        second.close()
    assert not any(thread.is_alive() for thread in threads)


def test_no_snapshot_is_taken_of_what_is_not_a_base(store_app: CampusApplication) -> None:
    app = store_app
    account_id = app.accounts.open_account("Lycée", "M", "m@example.org").account.id
    assert app.base_snapshots.take(account_id) is None
    assert app.base_snapshots.take(uuid4()) is None
    assert app.base_snapshots.take_due(every=1) == []
    assert app.base_snapshots.snapshot_versions(account_id) == []
