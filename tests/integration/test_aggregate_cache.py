"""Aggregates kept in memory (issue 11): served from the cache, yet never stale, never dirty.

Each test runs on SQLite and on PostgreSQL (the `settings` fixture). "Two servers" are two
applications on the same store, each with its own cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_application import acting, open_account

from campus.application import CampusApplication
from campus.repository import AggregateCache
from campus.errors import Conflict
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings


@pytest.fixture
def second(settings: Settings, clock: ManualClock, app: CampusApplication) -> Iterator[CampusApplication]:
    """Another server on the same store (made after `app`, which created the tables)."""
    other = CampusApplication(settings, clock=clock)
    try:
        yield other
    finally:
        other.close()


def first_planning(app: CampusApplication, account_id):  # noqa: ANN001, ANN201
    return app.plannings.list_plannings(account_id)[0]


def test_a_change_made_by_another_server_is_read_at_once(app: CampusApplication, second: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    planning = first_planning(app, account_id)
    assert app.plannings.get_planning(account_id, planning.id).name == "planning01"  # now in app's memory

    with acting("manager:test"):
        second.plannings.update_planning(account_id, planning.id, {"name": "Lycée"})

    read = app.plannings.get_planning(account_id, planning.id)
    assert read.name == "Lycée" and read.version == planning.version + 1
    # And app's next command builds on that version, not on the one it had in memory.
    with acting("manager:test"):
        app.plannings.update_planning(account_id, planning.id, {"name": "Lycée général"}, if_match=read.etag)
    assert second.plannings.get_planning(account_id, planning.id).name == "Lycée général"


def test_a_failed_command_leaves_memory_as_it_was(app: CampusApplication) -> None:
    taken = open_account(app, "Collège Jean Moulin")
    with acting("manager:other"):
        app.plannings.update_planning(taken.account.id, first_planning(app, taken.account.id).id,
                                      {"domain": "pris"})
    opened = open_account(app)
    account_id = opened.account.id
    before = app.plannings.get_planning(account_id, first_planning(app, account_id).id)

    # The rename happens in the command, then the domain claim fails: nothing of it may stay.
    with acting("manager:test"), pytest.raises(Conflict):
        app.plannings.update_planning(account_id, before.id, {"name": "Renommé", "domain": "pris"})

    after = app.plannings.get_planning(account_id, before.id)
    assert (after.name, after.version, after.domain) == ("planning01", before.version, None)
    assert before.name == "planning01", "the state a reader held was not changed by the command"


def test_a_reader_keeps_the_state_it_read_while_a_command_changes_the_aggregate(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    read = app.plannings.get_planning(account_id, first_planning(app, account_id).id)
    with acting("manager:test"):
        changed = app.plannings.update_planning(account_id, read.id, {"name": "Nouveau nom"})
    assert (read.name, changed.name) == ("planning01", "Nouveau nom")
    assert read is not changed
    assert app.plannings.get_planning(account_id, read.id).name == "Nouveau nom"


def test_the_cache_holds_at_most_its_size_and_never_goes_back_a_version(app: CampusApplication) -> None:
    opened = open_account(app)
    plannings = app.plannings.list_plannings(opened.account.id)
    cache = AggregateCache(size=1)
    cache.put(plannings[0])
    cache.put(plannings[1])
    assert cache.get(plannings[0].id) is None and cache.get(plannings[1].id) is plannings[1]

    with acting("manager:test"):
        newer = app.plannings.update_planning(opened.account.id, plannings[1].id, {"name": "Autre"})
    cache.put(newer)
    cache.put(plannings[1])  # an older version arriving late
    assert cache.get(plannings[1].id) is newer


def test_memory_catching_up_with_the_log_drops_what_others_wrote_and_keeps_its_own(app: CampusApplication) -> None:
    opened = open_account(app)
    first, second = app.plannings.list_plannings(opened.account.id)
    cache = AggregateCache(size=10)
    cache.seen = 5
    assert cache.put(first, as_of=5) and cache.put(second, as_of=5)
    log = {5: [(6, first.id), (7, second.id)], 7: []}

    cache.own([7])  # this process wrote position 7 (second): nothing to drop for it
    assert cache.catch_up(lambda after: log[after]) == 7
    assert cache.get(first.id) is None and cache.get(second.id) is second

    # A state of `first` read before position 6 (say, replayed while another process wrote) is not kept.
    assert cache.put(first, as_of=5) is False and cache.get(first.id) is None
    assert cache.put(first, as_of=7) is True and cache.get(first.id) is first


def test_a_base_changed_by_another_server_is_read_and_built_on(app: CampusApplication,
                                                               second: CampusApplication) -> None:
    """Bases are kept in memory too (BaseCache): a record another server added is listed at once, and the
    next change here follows it (no version written twice, none skipped)."""
    from school_helpers import service_school

    with acting("manager:test"):
        account_id, planning_id = service_school(app)
        _, here, _ = app.bases.add_record(account_id, planning_id, "subjects", {"name": "Maths"})
        _, there, _ = second.bases.add_record(account_id, planning_id, "subjects", {"name": "Physique"})
        seen_here = {record_id for record_id, _ in app.bases.list_records(account_id, planning_id, "subjects")[0]}
        assert seen_here == {here, there}, "the other server's record is listed here at once"
        _, again, _ = app.bases.add_record(account_id, planning_id, "subjects", {"name": "Chimie"})
    listed = {record_id for record_id, _ in app.bases.list_records(account_id, planning_id, "subjects")[0]}
    assert listed == {here, there, again}
    replayed = app.repository.get(app.bases.current_base(account_id, planning_id)[1].id, version=None)
    assert set(replayed.records["subjects"]) == {here, there, again}
