"""History reads within a school (issue 11): every filter of the API is an index seek, and the view's
layout (version 3) is built with those indexes.

The query-plan test is structural, not a timing: it asks SQLite how it would run the very statements
the view issues (``HistoryView.positions_statement`` / ``page_statement``) for every combination of the
API's filters, and checks that each reads an index of the school's rows (``tenant=?`` first) — never a
scan of the school's rows, never a sort of everything that matched. PostgreSQL chooses its plans from its
statistics (an empty table is read whole because that is cheapest), so there the test checks that the
indexes exist; docs/HISTORY.md gives the plans seen on a filled table.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timezone

import pytest
from school_helpers import service_school

from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.projections.history import SCHEMA_VERSION, TYPE_BRANCHES_MAX, HistoryQuery, HistoryView, Positions

FILTER_INDEXES = {
    "types": "campus_history_type", "actor": "campus_history_actor",
    "aggregate_id": "campus_history_tenant_aggregate", "planning_id": "campus_history_planning",
    "base_id": "campus_history_base",
}
TIME_INDEX = "campus_history_time"
ALL_INDEXES = {*FILTER_INDEXES.values(), TIME_INDEX, "campus_history_tenant", "campus_history_aggregate"}
INSTANT = datetime(2026, 9, 7, 8, 0, tzinfo=timezone.utc)
# "SEARCH campus_history USING [COVERING ]INDEX <name> (tenant=? AND …)": a seek into the school's rows.
SEEK = re.compile(r"^SEARCH (?:TABLE )?campus_history USING (?:COVERING )?INDEX (\w+) \((tenant=\?[^)]*)\)$")


def every_query() -> list[HistoryQuery]:
    """Every combination of the API's filters (types: none, one, several, more than the merged branches),
    with and without `after`, and with the bound an export adds (`upto`)."""
    many = tuple(f"Kind.Event{i}" for i in range(TYPE_BRANCHES_MAX + 1))
    queries = []
    for types, actor, aggregate, planning, base, time, after, upto in itertools.product(
            [(), ("Base.RecordAdded",), ("Base.RecordAdded", "Backup.Taken", "UserSession.Opened"), many],
            [None, "manager:123456789012"], [None, "a1"], [None, "p1"], [None, "b1"],
            ["", "since", "until", "since until"], [None, 40], [None, 90]):
        queries.append(HistoryQuery(
            tenant="t1", types=types, actor=actor, aggregate_id=aggregate, planning_id=planning, base_id=base,
            since=INSTANT if "since" in time else None, until=INSTANT if "until" in time else None,
            after=after, upto=upto, limit=1000))
    return queries


def plan(view: HistoryView, statement: str, params: list) -> list[str]:
    with view.datastore.transaction(commit=False) as curs:
        curs.execute("EXPLAIN QUERY PLAN " + statement, params)
        return [row[3] for row in curs.fetchall()]


def test_every_filter_of_the_history_is_an_index_seek_within_the_school(sqlite_only_settings: Settings):
    app = CampusApplication(sqlite_only_settings, clock=ManualClock())
    try:
        view = app.history
        for q in every_query():
            filters = {name for name in FILTER_INDEXES if getattr(q, name)}
            timed = q.since is not None or q.until is not None
            statements = []
            if timed:
                positions = view.positions_statement(q)
                assert positions is not None
                # The time range's first and last positions: from the time index alone.
                steps = plan(view, *positions)
                assert len(steps) == 1 and (seek := SEEK.match(steps[0])), (q, steps)
                assert seek.group(1) == TIME_INDEX and "COVERING" in steps[0], (q, steps)
                assert "timestamp" in seek.group(2), (q, steps)
            else:
                assert view.positions_statement(q) is None
            statements.append(view.page_statement(q, Positions(10, 100) if timed else None))
            for statement, params in statements:
                steps = plan(view, statement, params)
                reads = [s for s in steps if "campus_history" in s]
                assert reads, (q, steps)
                for step in reads:
                    seek = SEEK.match(step)
                    # Never a scan of the table or of a school's rows; always the school first.
                    assert seek, (q, step)
                    index, constraint = seek.groups()
                    if filters - {"types"} or (q.types and len(q.types) <= TYPE_BRANCHES_MAX):
                        # A filtered read seeks the value of one of its filters, not the whole school.
                        wanted = {FILTER_INDEXES[f] for f in filters}
                        if len(q.types) > TYPE_BRANCHES_MAX:  # hardly a filter: read in order, checked per row
                            wanted.discard(FILTER_INDEXES["types"])
                        assert index in wanted, (q, step)
                    else:
                        assert index == "campus_history_tenant", (q, step)
                    if q.after is not None or timed:
                        assert "position>" in constraint, (q, step)
                    if q.upto is not None or timed:
                        assert "position<" in constraint, (q, step)
                # Rows come in position order from the index: no sort of everything that matched.
                assert not any("TEMP B-TREE" in s for s in steps), (q, steps)
    finally:
        app.close()


def test_single_filters_use_their_own_index(sqlite_only_settings: Settings):
    app = CampusApplication(sqlite_only_settings, clock=ManualClock())
    try:
        view = app.history
        for name, index in FILTER_INDEXES.items():
            value = ("Base.RecordAdded",) if name == "types" else "x"
            steps = plan(view, *view.page_statement(HistoryQuery(tenant="t1", limit=1000, **{name: value})))
            assert [SEEK.match(s).group(1) for s in steps] == [index], (name, steps)  # type: ignore[union-attr]
    finally:
        app.close()


def history_indexes(view: HistoryView) -> set[str]:
    with view.datastore.transaction(commit=False) as curs:
        if view.is_postgres:
            curs.execute("SELECT indexname AS name FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                         (view.datastore.schema, "campus_history"))
        else:
            curs.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'campus_history'")
        return {str(r["name"]) for r in curs.fetchall()}


def test_a_view_of_the_previous_layout_is_rebuilt_with_the_indexes(settings: Settings, clock: ManualClock):
    # Given a store whose history view was built by the previous release (layout 2: no index per filter)
    app = CampusApplication(settings, clock=clock)
    try:
        account_id, _ = service_school(app)
        everything = HistoryQuery(tenant=str(account_id), limit=1000)
        before, _ = app.history.query(everything)
        view = app.history
        assert ALL_INDEXES <= history_indexes(view)
        with view.datastore.transaction(commit=True) as curs:
            for index in ("campus_history_type", "campus_history_actor", "campus_history_tenant_aggregate",
                          TIME_INDEX):
                curs.execute(f"DROP INDEX {view.table(index)}")
            curs.execute(view._sql(f"UPDATE {view.t_schema} SET version = 2 WHERE name = ?"), ("history",))
        assert not ALL_INDEXES <= history_indexes(view)
    finally:
        app.close()

    # When this release starts on it
    app = CampusApplication(settings, clock=clock)
    try:
        # Then the view is dropped and projected again, with every index, and reads the same
        assert SCHEMA_VERSION == 3
        assert ALL_INDEXES <= history_indexes(app.history)
        assert app.history.query(everything)[0] == before
        by_type, _ = app.history.query(HistoryQuery(tenant=str(account_id), types=("Base.Created",)))
        assert [e["type"] for e in by_type] == ["Base.Created"]
    finally:
        app.close()


@pytest.mark.parametrize("types", [("Base.Created", "Planning.Created", "Base.Created"),
                                   tuple(f"Kind.Event{i}" for i in range(TYPE_BRANCHES_MAX)) + ("Base.Created",
                                                                                                "Planning.Created")])
def test_several_types_are_merged_in_position_order_once_each(settings: Settings, clock: ManualClock,
                                                               types: tuple[str, ...]):
    app = CampusApplication(settings, clock=clock)
    try:
        account_id, _ = service_school(app)
        everything, _ = app.history.query(HistoryQuery(tenant=str(account_id), limit=1000))
        wanted = [e for e in everything if e["type"] in ("Base.Created", "Planning.Created")]
        assert len(wanted) >= 3
        found, cursor = [], None
        while True:  # pages of 2: the merge stops at the limit and says where the next page starts
            page, cursor = app.history.query(HistoryQuery(tenant=str(account_id), types=types, limit=2,
                                                          after=cursor))
            found += page
            if cursor is None:
                break
        assert found == wanted
    finally:
        app.close()
