"""The event store and the history view as stored: SQLite settings, msgpack, rebuilds, two writers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from campus.aggregates.user import Status
from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.context import RequestContext, reset_context, set_context
from campus.infra.settings import Settings
from campus.infra.transcoder import MsgpackTranscoder
from campus.projections.history import HistoryQuery


@pytest.fixture(autouse=True)
def _request_context() -> Iterator[None]:
    token = set_context(RequestContext(actor="operator:test", request_id="req-store", client_address="127.0.0.1"))
    yield
    reset_context(token)


def populate(app: CampusApplication) -> Any:
    opened = app.accounts.open_account("Lycée", "M. Dupont", "dupont@example.org")
    account_id = opened.account.id
    app.controllers.bind_controller_domain(account_id, "monecole")
    planning = app.plannings.list_plannings(account_id)[0]
    app.plannings.update_planning(account_id, planning.id, {"domain": "monecole-edt", "time_zone": "Indian/Reunion"})
    app.users.create_user(account_id, login="bob", last_name="Bob", first_name="B", status=Status.BASE_ADMINISTRATOR)
    return opened


def rows(app: CampusApplication, table: str, order: str) -> list[dict]:
    view = app.history
    with view.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT * FROM {table} ORDER BY {order}")
        return [dict(r) for r in curs.fetchall()]


def whole_view(app: CampusApplication) -> tuple[list[dict], list[dict], list[dict]]:
    view = app.history
    return (rows(app, view.t_history, "position"), rows(app, view.t_catalogue, "aggregate_id"),
            rows(app, view.t_tracking, "name"))


# -- SQLite ----------------------------------------------------------------------------------

def test_sqlite_file_lives_in_the_data_dir(sqlite_only_settings: Settings, clock: ManualClock) -> None:
    app = CampusApplication(sqlite_only_settings, clock=clock)
    try:
        populate(app)
        db_file = sqlite_only_settings.data_dir / "campus.sqlite3"
        assert db_file.is_file() and db_file.stat().st_size > 0
        with app.recorder.datastore.transaction(commit=False) as curs:
            curs.execute("PRAGMA database_list")
            main = [r for r in curs.fetchall() if r["name"] == "main"][0]
        assert Path(main["file"]).resolve() == db_file.resolve()
    finally:
        app.close()


def test_sqlite_is_wal_with_full_synchronous(sqlite_only_settings: Settings, clock: ManualClock) -> None:
    app = CampusApplication(sqlite_only_settings, clock=clock)
    try:
        populate(app)  # the pool now holds writer and reader connections
        for commit in (False, True, False):
            with app.recorder.datastore.transaction(commit=commit) as curs:
                curs.execute("PRAGMA journal_mode")
                assert curs.fetchone()[0].lower() == "wal"
                curs.execute("PRAGMA synchronous")
                assert curs.fetchone()[0] == 2, "SQLite must run with synchronous=FULL"
    finally:
        app.close()
    # A fresh connection to the file sees WAL too: the mode is persistent.
    import sqlite3

    with sqlite3.connect(sqlite_only_settings.data_dir / "campus.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


# -- msgpack ---------------------------------------------------------------------------------

def test_stored_event_state_is_msgpack(settings: Settings, clock: ManualClock, app: CampusApplication) -> None:
    opened = populate(app)
    table = app.recorder.events_table_name
    schema = getattr(app.recorder.datastore, "schema", "")
    if schema and not table.startswith(f"{schema}."):
        table = f'"{schema}".{table}'
    with app.recorder.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT originator_id, originator_version, topic, state FROM {table}")
        stored = curs.fetchall()
    assert len(stored) >= 10
    for row in stored:
        state = bytes(row["state"])
        with pytest.raises(ValueError):  # not JSON (UnicodeDecodeError and JSONDecodeError are ValueErrors)
            json.loads(state)
        decoded = msgpack.unpackb(state, strict_map_key=False, ext_hook=lambda code, data: (code, data))
        assert isinstance(decoded, dict)
        assert "meta" in decoded and decoded["meta"]["actor"] == "operator:test"
        assert "timestamp" in decoded
    opened_row = [r for r in stored if r["topic"].endswith(":HostingAccount.Opened")]
    assert len(opened_row) == 1
    state = MsgpackTranscoder().decode(bytes(opened_row[0]["state"]))
    assert state["hosting_number"] == opened.account.hosting_number
    assert state["console_password_hash"].startswith("$argon2id$")
    assert opened.console_password.encode() not in b"".join(bytes(r["state"]) for r in stored)


# -- the history view is a disposable projection --------------------------------------------

def test_history_view_can_be_dropped_and_rebuilt_identically(app: CampusApplication) -> None:
    opened = populate(app)
    query = HistoryQuery(tenant=str(opened.account.id), limit=1000)
    before_events, _ = app.history.query(query)
    before_users = [u.login for u in app.users.list_users(opened.account.id)]
    before = whole_view(app)
    assert len(before[0]) == len(before_events) >= 10
    assert before[2] == [{"name": "history", "position": before_events[-1]["position"]}]

    view = app.history
    with view.datastore.transaction(commit=True) as curs:
        for table in (view.t_history, view.t_catalogue, view.t_tracking):
            curs.execute(f"DELETE FROM {table}")
    assert whole_view(app) == ([], [], [])

    last = view.catch_up()
    assert last == before_events[-1]["position"]
    assert whole_view(app) == before
    assert app.history.query(query)[0] == before_events
    assert [u.login for u in app.users.list_users(opened.account.id)] == before_users == ["bob"]
    # Catching up again changes nothing.
    assert view.catch_up() == last
    assert whole_view(app) == before


def test_history_view_catches_up_after_a_partial_loss(app: CampusApplication) -> None:
    opened = populate(app)
    query = HistoryQuery(tenant=str(opened.account.id), limit=1000)
    before_events, _ = app.history.query(query)
    before = whole_view(app)
    keep = before_events[4]["position"]
    view = app.history
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(view._sql(f"DELETE FROM {view.t_history} WHERE position > ?"), (keep,))
        curs.execute(view._sql(f"DELETE FROM {view.t_catalogue} WHERE position > ?"), (keep,))
        curs.execute(view._sql(f"UPDATE {view.t_tracking} SET position = ?"), (keep,))
    assert app.history.query(query)[0] == before_events
    assert whole_view(app) == before


# -- two applications on one store ----------------------------------------------------------

def test_two_applications_on_one_sqlite_file_see_each_others_writes(sqlite_only_settings: Settings,
                                                                    clock: ManualClock) -> None:
    first = CampusApplication(sqlite_only_settings, clock=clock)
    second = CampusApplication(sqlite_only_settings, clock=clock)
    try:
        second.history.query(HistoryQuery(tenant="nobody"))  # second's view is up to date before the writes
        opened = populate(first)
        account_id = opened.account.id
        query = HistoryQuery(tenant=str(account_id), limit=1000)

        assert second.history.query(query)[0] == first.history.query(query)[0]
        assert [u.login for u in second.users.list_users(account_id)] == ["bob"]
        assert second.controllers.get_controller(account_id).domain == "monecole.pronote-campus.net"

        # And the other way round, including a write that depends on the first one's.
        second.users.create_user(account_id, login="carol", last_name="C", first_name="C")
        assert [u.login for u in first.users.list_users(account_id)] == ["bob", "carol"]
        second.users.update_user(account_id, "bob", {"email": "bob@example.org"})
        assert first.users.get_user(account_id, "bob").email == "bob@example.org"
        types = [e["type"] for e in first.history.query(query)[0]]
        assert types[-2:] == ["DirectoryUser.Created", "DirectoryUser.EmailChanged"]
        assert first.history.query(query)[0] == second.history.query(query)[0]
        # The shared domain claims hold across the two processes' writers.
        from campus.errors import Conflict

        other = second.accounts.open_account("Autre", "X", "x@example.org")
        with pytest.raises(Conflict):
            second.controllers.bind_controller_domain(other.account.id, "monecole")
    finally:
        second.close()
        first.close()


def test_two_applications_cannot_both_create_the_first_superadministrator(sqlite_only_settings: Settings,
                                                                          clock: ManualClock) -> None:
    """Two server processes on one store get the "first superadministrator" request at the same time.

    The interleaving is forced: the second process's request runs between the first's
    check ("is there a superadministrator yet?") and its write.
    """
    first = CampusApplication(sqlite_only_settings, clock=clock)
    second = CampusApplication(sqlite_only_settings, clock=clock)
    password = "Superadmin-2026!"
    try:
        opened = first.accounts.open_account("Lycée", "M. Dupont", "dupont@example.org")
        account_id = opened.account.id
        checked = first.users.list_users

        def list_users_then_other_process_writes(tenant: Any) -> Any:
            users = checked(tenant)
            first.users.list_users = checked  # only once
            second.users.create_first_superadministrator(account_id, first_name="B", last_name="B", login="admin2",
                                                   password=password, password_confirmation=password)
            return users

        first.users.list_users = list_users_then_other_process_writes  # type: ignore[method-assign]
        from campus.errors import Conflict

        try:
            first.users.create_first_superadministrator(account_id, first_name="A", last_name="A", login="admin1",
                                                  password=password, password_confirmation=password)
        except Conflict:
            pass
        supers = [u.login for u in second.users.list_users(account_id) if u.status == Status.SUPERADMINISTRATOR]
        assert len(supers) == 1, f"two first superadministrators were created: {supers}"
    finally:
        second.close()
        first.close()



@pytest.mark.postgres
@pytest.mark.parametrize("settings", ["postgres"], indirect=True)
def test_every_postgresql_statement_is_bounded(settings: Settings) -> None:
    """A statement timeout on every connection (CAMPUS_STATEMENT_TIMEOUT_SECONDS): a query that runs longer
    is cancelled by PostgreSQL, and the store's failure is a 503 that says nothing was changed."""
    from dataclasses import replace

    from eventsourcing.persistence import PersistenceError

    from campus.commands import store_unavailable

    app = CampusApplication(replace(settings, statement_timeout_seconds=0.5), clock=ManualClock())
    try:
        with app.recorder.datastore.transaction(commit=False) as curs:
            curs.execute("SHOW statement_timeout")
            assert curs.fetchone()["statement_timeout"] == "500ms"
        with pytest.raises(PersistenceError, match="statement timeout") as raised:
            with app.recorder.datastore.transaction(commit=False) as curs:
                curs.execute("SELECT pg_sleep(3)")
        problem = store_unavailable(raised.value)
        assert problem.status == 503 and problem.headers["Retry-After"] == "1"
        assert "nothing was changed" in problem.detail
    finally:
        app.close()
