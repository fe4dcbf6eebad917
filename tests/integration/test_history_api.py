"""The history for auditors (issue 4): filters by planning and base, the live stream's
contract, and the view's rebuild when its table layout changes.

The stream's behaviour over time (live events, Last-Event-ID, keep-alives, shutdown)
needs a real server: see tests/e2e/test_history_stream.py. Here, on SQLite and on
PostgreSQL, what an in-process client can see.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from api_helpers import (
    assert_problem,
    bearer,
    cheap_argon2,
    create_user,
    history,
    make_client,
    operator_headers,
)
from school_helpers import (
    CampusSchool,
    add_record,
    campus_school,
    create_base,
    service_school,
)
from eventsourcing.persistence import OperationalError
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from campus.application import CampusApplication
from campus.infra.clock import ManualClock
from campus.infra.settings import Settings
from campus.projections.history import HistoryQuery

LIST = "/v1/console/history"
STREAM = "/v1/console/history/stream"
EXPORT = "/v1/console/history/export"
SMALL_PAGE = 5  # history_page_max of `small_pages`: an export of a school at work is many pages


@pytest.fixture
def any_client(settings: Settings, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An in-process API client on each store."""
    cheap_argon2(monkeypatch)
    with make_client(settings, clock) as c:
        yield c


@pytest.fixture
def small_pages(settings: Settings, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An in-process API client on each store, whose history reads pages of SMALL_PAGE events."""
    cheap_argon2(monkeypatch)
    with make_client(settings, clock, history_page_max=SMALL_PAGE) as c:
        yield c


def export(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict]:
    r = client.get(EXPORT, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return [orjson.loads(line) for line in r.content.splitlines()]


def a_school_at_work(client: TestClient, **kw: Any) -> tuple[CampusSchool, dict[str, Any]]:
    """A school with a base in service on planning01, where a teacher logs in, adds a record and
    logs out, and the manager takes a save; then a second base on planning02."""
    cs = campus_school(client, **kw)
    teacher = cs.headers_for("modif")
    add_record(client, teacher, cs.records_url("subjects"), name="Anglais")
    assert client.delete("/v1/sessions/current", headers=teacher).status_code == 204
    save = client.post(f"/v1/console/plannings/{cs.planning01}/backups", headers=cs.console, json={"kind": "save"})
    assert save.status_code == 201, save.text
    base2 = create_base(client, cs.console, cs.planning02, name="Base 2027")
    assert cs.base is not None
    return cs, {"base1": cs.base["id"], "base2": base2["id"], "save": save.json()["id"]}


def sessions_opened(events: list[dict]) -> dict[str, dict]:
    """User session id -> what its Opened event says (planning_id, base_id)."""
    return {e["aggregate_id"]: e["data"] for e in events if e["type"] == "UserSession.Opened"}


# -- filters ------------------------------------------------------------------------------------------

def test_planning_filter_gives_the_planning_its_bases_their_saves_and_the_sessions_opened_on_it(any_client):
    # Given a school that worked on planning01 (base, records, a session, a save) and created a base on planning02
    cs, ids = a_school_at_work(any_client)
    everything = history(any_client, cs.console)
    sessions = sessions_opened(everything)

    # When the history is read for planning01
    p1 = history(any_client, cs.console, planning_id=cs.planning01)

    # Then it holds exactly the events of planning01, of its base, of the save, of the sessions opened on it
    def of_planning01(e: dict) -> bool:
        session = sessions.get(e["aggregate_id"])
        return (e["aggregate_id"] in (cs.planning01, ids["base1"], ids["save"])
                or (session is not None and session["planning_id"] == cs.planning01))
    assert p1 == [e for e in everything if of_planning01(e)]
    # including the later events that do not name the planning (a record added, a session closed)
    assert {"Planning.Created", "Planning.BaseMounted", "Base.Created", "Base.RecordAdded", "Backup.Taken",
            "UserSession.Opened", "UserSession.Closed"} <= {e["type"] for e in p1}
    assert ids["base2"] not in {e["aggregate_id"] for e in p1}
    # And the export gives the same events, as JSON lines
    assert export(any_client, cs.console, planning_id=cs.planning01) == p1

    # And planning02's history has its own base, not planning01's
    p2 = history(any_client, cs.console, planning_id=cs.planning02)
    assert {e["aggregate_id"] for e in p2} == {cs.planning02, ids["base2"]}
    assert [e["type"] for e in p2 if e["aggregate_id"] == ids["base2"]] == ["Base.Created"]


def test_base_filter_gives_the_base_its_mounting_its_saves_and_the_sessions_opened_on_it(any_client):
    cs, ids = a_school_at_work(any_client)
    everything = history(any_client, cs.console)
    sessions = sessions_opened(everything)

    # When the history is read for the first base
    b1 = history(any_client, cs.console, base_id=ids["base1"])

    # Then it holds the base's events, its mounting on planning01, the save, and the session opened on it
    def of_base1(e: dict) -> bool:
        session = sessions.get(e["aggregate_id"])
        return (e["aggregate_id"] in (ids["base1"], ids["save"])
                or (e["type"] == "Planning.BaseMounted" and e["data"]["base_id"] == ids["base1"])
                or (session is not None and session["base_id"] == ids["base1"]))
    assert b1 == [e for e in everything if of_base1(e)]
    assert {"Planning.BaseMounted", "Base.Created", "Base.RecordAdded", "Backup.Taken", "UserSession.Opened",
            "UserSession.Closed"} <= {e["type"] for e in b1}
    # And planning and base filters combine (and with the others)
    both = history(any_client, cs.console, planning_id=cs.planning01, base_id=ids["base1"])
    assert both == b1
    assert history(any_client, cs.console, planning_id=cs.planning02, base_id=ids["base1"]) == []
    assert history(any_client, cs.console, base_id=ids["base1"], type="Base.RecordAdded") == [
        e for e in b1 if e["type"] == "Base.RecordAdded"]
    assert export(any_client, cs.console, base_id=ids["base2"]) == history(any_client, cs.console,
                                                                           base_id=ids["base2"])


def test_another_schools_or_an_unknown_planning_gives_no_events(any_client):
    # Given two schools, each at work
    a, a_ids = a_school_at_work(any_client, domain="ecole-a", establishment="École A")
    b, b_ids = a_school_at_work(any_client, domain="ecole-b", establishment="École B")

    # When school A asks for school B's planning or base, or for an id nobody has
    for params in ({"planning_id": b.planning01}, {"base_id": b_ids["base1"]}, {"planning_id": str(uuid.uuid4())},
                   {"base_id": str(uuid.uuid4())}):
        # Then the answer is empty (not another school's events, not an error)
        assert history(any_client, a.console, **params) == [], params
        assert export(any_client, a.console, **params) == [], params

    # While school B sees its own planning's events, all of them of its own school
    own = {e["position"] for e in history(any_client, b.console, planning_id=b.planning01)}
    assert own and own <= {e["position"] for e in history(any_client, b.console)}
    assert not own & {e["position"] for e in history(any_client, a.console)}


@pytest.mark.parametrize("path", ["/v1/console/history", EXPORT, STREAM])
def test_planning_and_base_must_be_ids(any_client, path: str):
    cs = campus_school(any_client, users=False, base=False)
    for name in ("planning_id", "base_id"):
        r = any_client.get(path, headers=cs.console, params={name: "planning01"})
        assert_problem(r, 422, fields={f"query.{name}"})


# -- paging and the streamed export (issue 11) ----------------------------------------------------------------

def test_a_page_holds_up_to_1000_events_and_no_more(any_client):
    cs = campus_school(any_client, users=False, base=False)
    everything = history(any_client, cs.console)
    # limit=1000 is accepted (the school has fewer events: one page, no next)
    r = any_client.get(LIST, headers=cs.console, params={"limit": 1000})
    assert r.status_code == 200, r.text
    assert r.json() == {"events": everything, "next": None}
    # 1001 is refused, naming the parameter
    assert_problem(any_client.get(LIST, headers=cs.console, params={"limit": 1001}), 422, fields={"query.limit"})
    # a smaller page says where the next one starts
    page = any_client.get(LIST, headers=cs.console, params={"limit": 3}).json()
    assert page == {"events": everything[:3], "next": everything[2]["position"]}
    # and the API document says so
    doc = any_client.get("/openapi.json").json()
    limit = next(p for p in doc["paths"][LIST]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000 and limit["schema"]["default"] == 100


def test_the_export_streams_every_page_in_order_as_the_paged_reads_give_them(small_pages):
    # Given a school at work, with more events than a page (history_page_max=5 here)
    cs, ids = a_school_at_work(small_pages)
    everything = history(small_pages, cs.console)  # paged: pages of 5 (the limit is capped to the maximum)
    assert len(everything) > 4 * SMALL_PAGE

    # When the history is exported
    with small_pages.stream("GET", EXPORT, headers=cs.console) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        assert r.headers["content-disposition"] == 'attachment; filename="history.jsonl"'
        chunks = list(r.iter_raw())

    # Then it came a page at a time, every event once, in position order, as the list gives them
    lines = [line for chunk in chunks for line in chunk.splitlines()]
    assert len(chunks) == -(-len(everything) // SMALL_PAGE)
    assert all(chunk.endswith(b"\n") and chunk.count(b"\n") <= SMALL_PAGE for chunk in chunks)
    exported = [orjson.loads(line) for line in lines]
    assert exported == everything
    positions = [e["position"] for e in exported]
    assert positions == sorted(set(positions))
    # filtered and resumed (`after`) the same way
    after = everything[len(everything) // 2]["position"]
    assert export(small_pages, cs.console, after=after) == [e for e in everything if e["position"] > after]
    for params in ({"planning_id": cs.planning01}, {"base_id": ids["base1"]},
                   {"type": "UserSession.Opened,Base.RecordAdded,UserSession.Closed"}):
        assert export(small_pages, cs.console, **params) == history(small_pages, cs.console, **params), params


def test_the_export_holds_the_events_up_to_where_the_history_was_when_it_began(small_pages):
    cs, _ = a_school_at_work(small_pages)
    before = history(small_pages, cs.console)

    with small_pages.stream("GET", EXPORT, headers=cs.console) as r:
        chunks = r.iter_raw()
        first = next(chunks)
        # While the export is being read, the school records new events, and they reach the view
        create_user(small_pages, cs.school, "nouveau")
        after = history(small_pages, cs.console)
        assert "DirectoryUser.Created" in {e["type"] for e in after[len(before):]}
        rest = list(chunks)

    # Then the export is the history as it was when it began: nothing of what came after
    exported = [orjson.loads(line) for chunk in (first, *rest) for line in chunk.splitlines()]
    assert exported == before
    # and the next export has them
    assert export(small_pages, cs.console) == after


def test_a_store_failure_in_the_middle_of_an_export_cuts_it_short(small_pages, monkeypatch: pytest.MonkeyPatch):
    cs, _ = a_school_at_work(small_pages)
    everything = history(small_pages, cs.console)
    view = small_pages.app.state.campus.history  # type: ignore[attr-defined]
    read = view._rows
    calls = []

    def failing_after_the_first_page(*args: Any) -> Any:
        calls.append(args)
        if len(calls) > 1:
            raise OperationalError("the store went away")
        return read(*args)

    monkeypatch.setattr(view, "_rows", failing_after_the_first_page)
    with capture_logs() as logs:
        r = small_pages.get(EXPORT, headers=cs.console)
    # The answer had started: it stops after what was sent (over HTTP, without the end of the chunked
    # body, so the client sees an incomplete download), and the log says why
    assert r.status_code == 200
    assert [orjson.loads(line) for line in r.content.splitlines()] == everything[:SMALL_PAGE]
    cut = [e for e in logs if e["event"] == "history_export_cut"]
    assert cut and cut[0]["error_type"] == "OperationalError", logs

    # A failure before the first byte is a problem like any other
    calls.clear()
    monkeypatch.setattr(view, "_rows", lambda *args: (_ for _ in ()).throw(OperationalError("down")))
    assert_problem(small_pages.get(EXPORT, headers=cs.console), 503)


# -- the stream's contract ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "12 13", str(2**63), "²".encode("latin-1")])
def test_stream_refuses_a_last_event_id_that_is_not_a_position(any_client, value: str | bytes):
    cs = campus_school(any_client, users=False, base=False)
    r = any_client.get(STREAM, headers={**cs.console, "Last-Event-ID": value})
    assert_problem(r, 422, fields={"header.Last-Event-ID"})


def test_stream_needs_a_console_session_of_a_school_that_accepted_the_licence(any_client):
    assert_problem(any_client.get(STREAM), 401)
    assert_problem(any_client.get(STREAM, headers=bearer("not-a-token")), 401)
    r = any_client.post("/v1/operator/accounts", headers=operator_headers(any_client),
                        json={"establishment": "École", "manager": {"name": "M", "email": "m@example.org"}})
    account = r.json()
    session = any_client.post("/v1/console/sessions", json={
        "hosting_number": account["hosting_number"], "password": account["console_password"],
        "invoice_number": account["invoice_number"]}).json()
    assert_problem(any_client.get(STREAM, headers=bearer(session["token"])), 403, code="licence_not_accepted")


def test_openapi_documents_the_stream_and_the_new_filters(any_client):
    doc = any_client.get("/openapi.json").json()
    stream = doc["paths"][STREAM]["get"]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    assert list(doc["paths"][EXPORT]["get"]["responses"]["200"]["content"]) == ["application/x-ndjson"]
    for path in ("/v1/console/history", EXPORT, STREAM):
        names = {p["name"] for p in doc["paths"][path]["get"]["parameters"]}
        assert {"planning_id", "base_id", "after", "type", "actor", "since", "until"} <= names, path


# -- the view's layout ------------------------------------------------------------------------------------

# The history table as the first release created it (no planning_id, no base_id, no version row).
V1_HISTORY = ("CREATE TABLE {table} (position {big} PRIMARY KEY, tenant TEXT, aggregate_id TEXT NOT NULL,"
              " aggregate_type TEXT NOT NULL, type TEXT NOT NULL, version INTEGER NOT NULL,"
              " actor TEXT, request_id TEXT, client_address TEXT, reason TEXT,"
              " timestamp TEXT NOT NULL, data TEXT NOT NULL)")
V1_COLUMNS = ("position, tenant, aggregate_id, aggregate_type, type, version, actor, request_id, client_address,"
              " reason, timestamp, data")


def _as_first_release_left_it(app: CampusApplication) -> None:
    """Turn the stored view into what the first release left: the old table, full, and no version."""
    view = app.history
    big = "BIGINT" if view.is_postgres else "INTEGER"
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(f"ALTER TABLE {view.t_history} RENAME TO campus_history_now")
        curs.execute(V1_HISTORY.format(table=view.t_history, big=big))
        now = view.t_history.replace("campus_history", "campus_history_now")
        curs.execute(f"INSERT INTO {view.t_history} ({V1_COLUMNS}) SELECT {V1_COLUMNS} FROM {now}")
        curs.execute(f"DROP TABLE {now}")
        for table in (view.t_scope, view.t_schema):
            curs.execute(f"DROP TABLE {table}")


def _tracked_position(app: CampusApplication) -> int | None:
    view = app.history
    with view.datastore.transaction(commit=False) as curs:
        curs.execute(view._sql(f"SELECT position FROM {view.t_tracking} WHERE name = ?"), ("history",))
        row = curs.fetchone()
    return int(row["position"]) if row else None


def test_a_view_left_by_the_first_release_is_rebuilt_with_the_new_columns(settings: Settings, clock: ManualClock):
    # Given a database whose history view was built by the first release
    app = CampusApplication(settings, clock=clock)
    try:
        account_id, planning_id = service_school(app)
        everything = HistoryQuery(tenant=str(account_id), limit=1000)
        before, _ = app.history.query(everything)
        _as_first_release_left_it(app)
    finally:
        app.close()

    # When the new release starts on it
    app = CampusApplication(settings, clock=clock)
    try:
        # Then the view is rebuilt from the events: the same history, now filterable by planning and base
        assert app.history.query(everything)[0] == before
        of_planning, _ = app.history.query(HistoryQuery(tenant=str(account_id), planning_id=str(planning_id)))
        assert {e["type"] for e in of_planning} >= {"Planning.Created", "Planning.BaseMounted", "Base.Created"}
        base_id = next(e["aggregate_id"] for e in of_planning if e["type"] == "Base.Created")
        of_base, _ = app.history.query(HistoryQuery(tenant=str(account_id), base_id=base_id))
        assert {e["aggregate_id"] for e in of_base} == {str(planning_id), base_id}
        # And the users list (read from the rebuilt catalogue) is whole
        assert [u.login for u in app.users.list_users(account_id)] == ["admin"]
        position = _tracked_position(app)
        assert position == before[-1]["position"]
    finally:
        app.close()

    # And a later start with the same layout keeps the view as it is (no rebuild)
    app = CampusApplication(settings, clock=clock)
    try:
        assert _tracked_position(app) == position
        assert app.history.query(everything)[0] == before
    finally:
        app.close()
