"""The service layer (CampusApplication), on SQLite and on PostgreSQL.

Every test takes the ``settings`` fixture, so it runs once per store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from campus.aggregates.planning import Profile
from campus.aggregates.user import Status
from campus.application import CampusApplication
from campus.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    Unauthenticated,
)
from campus.infra.clock import ManualClock
from campus.infra.context import RequestContext, reset_context, set_context
from campus.infra.settings import Settings
from campus.projections.history import HistoryQuery
from campus.rules.security import (
    new_token,
    password_problems,
    token_digest,
    verify_secret,
)
from campus.services.accounts import OpenedAccount
from campus.services.console_sessions import ConsoleLogin

SUPER_PASSWORD = "Superadmin-2026!"


@pytest.fixture(autouse=True)
def _request_context() -> Iterator[None]:
    """Each test starts from, and leaves, a known request context (login sets the actor)."""
    token = set_context(RequestContext(actor="test", request_id="req-test", client_address="127.0.0.1"))
    yield
    reset_context(token)


@contextmanager
def acting(actor: str, request_id: str | None = None) -> Iterator[None]:
    token = set_context(RequestContext(actor=actor, request_id=request_id or f"req-{actor}",
                                       client_address="198.51.100.9"))
    try:
        yield
    finally:
        reset_context(token)


def open_account(app: CampusApplication, establishment: str = "Lycée Victor Hugo") -> OpenedAccount:
    with acting("operator:test"):
        return app.accounts.open_account(establishment, "M. Dupont", "dupont@example.org")


def first_login(app: CampusApplication, opened: OpenedAccount) -> ConsoleLogin:
    return app.console_sessions.open_console_session(opened.account.hosting_number, opened.console_password,
                                    opened.invoice_number, None)


def add_superadministrator(app: CampusApplication, opened: OpenedAccount, login: str = "admin") -> None:
    app.users.create_first_superadministrator(opened.account.id, first_name="Anne", last_name="Admin", login=login,
                                        password=SUPER_PASSWORD, password_confirmation=SUPER_PASSWORD)


def history(app: CampusApplication, opened: OpenedAccount, **filters: Any) -> list[dict]:
    events, _ = app.history.query(HistoryQuery(tenant=str(opened.account.id), limit=10_000, **filters))
    return events


def types_of(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def plannings(app: CampusApplication, opened: OpenedAccount):  # noqa: ANN201
    return app.plannings.list_plannings(opened.account.id)


# -- opening an account -------------------------------------------------------------------

def test_open_account_gives_the_numbers_and_two_default_plannings(app: CampusApplication) -> None:
    opened = open_account(app)
    account = opened.account
    assert re.fullmatch(r"[1-9]\d{11}", account.hosting_number)
    assert len(opened.console_password) == 14
    assert password_problems(opened.console_password) == []
    assert re.fullmatch(r"\d{10}", opened.invoice_number)
    # Only hashes are kept.
    assert opened.console_password not in json.dumps(vars(account), default=str)
    assert verify_secret(account.console_password_hash, opened.console_password)

    stored = app.accounts.account_by_number(account.hosting_number)
    assert stored.id == account.id and stored.establishment == "Lycée Victor Hugo"
    assert stored.manager == {"name": "M. Dupont", "email": "dupont@example.org"}
    assert stored.licence["modification_seats"] == 6
    assert stored.licence_accepted is False

    found = plannings(app, opened)
    assert [p.name for p in found] == ["planning01", "planning02"]
    assert [p.publication_name for p in found] == ["planning01", "planning02"]
    assert all(p.time_zone == "Europe/Paris" for p in found)
    assert all(p.net_licence is True for p in found)
    assert all(p.domain is None and p.server_state == "stopped" for p in found)

    controller = app.controllers.get_controller(account.id)
    assert controller.state == "stopped" and controller.domain is None

    other = open_account(app, "Collège Jean Moulin")
    assert other.account.hosting_number != account.hosting_number
    assert other.console_password != opened.console_password


# -- console login ---------------------------------------------------------------------------

def test_wrong_password_and_unknown_hosting_number_look_the_same(app: CampusApplication) -> None:
    opened = open_account(app)
    number = opened.account.hosting_number
    with pytest.raises(Unauthenticated) as wrong_password:
        app.console_sessions.open_console_session(number, opened.console_password + "x", opened.invoice_number, None)
    unknown = "1" + number[1:] if number[0] != "1" else "2" + number[1:]
    with pytest.raises(Unauthenticated) as unknown_number:
        app.console_sessions.open_console_session(unknown, opened.console_password, opened.invoice_number, None)
    assert wrong_password.value.detail == unknown_number.value.detail
    assert wrong_password.value.code == unknown_number.value.code == "invalid_credentials"
    # Nothing was recorded by the failed attempts.
    assert types_of(history(app, opened)).count("HostingAccount.CertificateInstalled") == 0


def test_certificate_flow(app: CampusApplication) -> None:
    opened = open_account(app)
    number, password = opened.account.hosting_number, opened.console_password

    with pytest.raises(Unauthenticated) as no_invoice:
        app.console_sessions.open_console_session(number, password, None, None)
    assert no_invoice.value.code == "certificate_required"

    with pytest.raises(Unauthenticated) as wrong_invoice:
        app.console_sessions.open_console_session(number, password, "0000000000", None)  # never issued: no leading 0
    assert wrong_invoice.value.code == "invalid_invoice_number"

    login = app.console_sessions.open_console_session(number, password, opened.invoice_number, None)
    assert login.certificate and len(login.certificate) >= 43
    assert login.token and login.token != login.certificate
    assert app.console_sessions.authenticate_console(login.token).id == opened.account.id
    assert token_digest(login.certificate) in app.accounts.get_account(opened.account.id).certificate_digests

    again = app.console_sessions.open_console_session(number, password, None, login.certificate)
    assert again.certificate is None  # no new certificate when one was presented
    assert again.token != login.token
    assert app.console_sessions.authenticate_console(again.token).id == opened.account.id

    with pytest.raises(Unauthenticated) as wrong_certificate:
        app.console_sessions.open_console_session(number, password, None, new_token())
    assert wrong_certificate.value.code == "certificate_required"

    # A certificate of another account is not valid here.
    other = open_account(app, "Autre")
    other_login = first_login(app, other)
    with pytest.raises(Unauthenticated):
        app.console_sessions.open_console_session(number, password, None, other_login.certificate)


def test_close_console_session_revokes_only_that_token(app: CampusApplication) -> None:
    opened = open_account(app)
    first = first_login(app, opened)
    second = app.console_sessions.open_console_session(opened.account.hosting_number, opened.console_password, None, first.certificate)
    app.console_sessions.close_console_session(first.token)
    with pytest.raises(Unauthenticated) as closed:
        app.console_sessions.authenticate_console(first.token)
    assert closed.value.code == "invalid_token"
    assert app.console_sessions.authenticate_console(second.token).id == opened.account.id
    with pytest.raises(Unauthenticated):
        app.console_sessions.close_console_session(first.token)
    with pytest.raises(Unauthenticated):
        app.console_sessions.authenticate_console("not-a-token")


def test_reset_console_password_invalidates_sessions_and_old_password(app: CampusApplication) -> None:
    opened = open_account(app)
    login = first_login(app, opened)
    account, new_password = app.accounts.reset_console_password(opened.account.hosting_number)
    assert new_password != opened.console_password
    assert len(new_password) == 14 and password_problems(new_password) == []
    assert account.password_epoch == 1

    with pytest.raises(Unauthenticated) as old_session:
        app.console_sessions.authenticate_console(login.token)
    assert old_session.value.code == "invalid_token"
    with pytest.raises(Unauthenticated) as old_password:
        app.console_sessions.open_console_session(opened.account.hosting_number, opened.console_password, None, login.certificate)
    assert old_password.value.code == "invalid_credentials"

    fresh = app.console_sessions.open_console_session(opened.account.hosting_number, new_password, None, login.certificate)
    assert app.console_sessions.authenticate_console(fresh.token).id == opened.account.id

    with pytest.raises(NotFound):
        app.accounts.reset_console_password("000000000000")


def test_console_session_expires_after_the_configured_hours(app: CampusApplication, clock: ManualClock) -> None:
    opened = open_account(app)
    login = first_login(app, opened)
    hours = app.settings.console_session_hours
    assert login.session.expires_at > clock.now()
    clock.advance(timedelta(hours=hours) - timedelta(seconds=1))
    assert app.console_sessions.authenticate_console(login.token).id == opened.account.id
    clock.advance(timedelta(seconds=2))
    with pytest.raises(Unauthenticated) as expired:
        app.console_sessions.authenticate_console(login.token)
    assert expired.value.code == "invalid_token"


# -- domain names ---------------------------------------------------------------------------

def test_controller_domain_and_port(app: CampusApplication) -> None:
    opened = open_account(app)
    controller = app.controllers.bind_controller_domain(opened.account.id, "monecole")
    assert controller.domain == "monecole.pronote-campus.net"
    assert controller.domain_label == "monecole"
    assert controller.port == 21200
    # The full name and upper case are accepted and mean the same label: nothing new happens.
    version = controller.version
    same = app.controllers.bind_controller_domain(opened.account.id, "  MonEcole.pronote-campus.net ")
    assert same.domain == "monecole.pronote-campus.net" and same.version == version
    assert app.controllers.get_controller(opened.account.id).domain == "monecole.pronote-campus.net"


@pytest.mark.parametrize("label", ["-bad", "bad-", "a_b", "a" * 64, "", "   ", "école", "a.b", "a b"])
def test_invalid_domain_labels_are_refused(sqlite_only_settings: Settings, clock: ManualClock, label: str) -> None:
    app = CampusApplication(sqlite_only_settings, clock=clock)
    try:
        # The label is checked before the account is looked up: no account (and no hashing) needed.
        with pytest.raises(Invalid) as refused:
            app.controllers.bind_controller_domain(uuid4(), label)
        assert refused.value.errors[0]["field"] == "name"
        assert "63" in refused.value.errors[0]["message"]
    finally:
        app.close()


def test_invalid_domain_labels_change_nothing(app: CampusApplication) -> None:
    opened = open_account(app)
    app.controllers.bind_controller_domain(opened.account.id, "a" * 63)  # 63 is the limit
    before = len(history(app, opened))
    planning = plannings(app, opened)[0]
    for label in ("-bad", "a_b", "a" * 64, ""):
        with pytest.raises(Invalid):
            app.controllers.bind_controller_domain(opened.account.id, label)
        if label:  # an empty domain in a planning update means "no change"
            with pytest.raises(Invalid) as refused:
                app.plannings.update_planning(opened.account.id, planning.id, {"domain": label})
            assert refused.value.errors[0]["field"] == "domain"
    assert app.controllers.get_controller(opened.account.id).domain == "a" * 63 + ".pronote-campus.net"
    assert len(history(app, opened)) == before


def test_a_domain_name_belongs_to_one_holder_across_tenants(app: CampusApplication) -> None:
    a, b = open_account(app, "A"), open_account(app, "B")
    app.controllers.bind_controller_domain(a.account.id, "monecole")
    b_planning = plannings(app, b)[0]
    a_planning = plannings(app, a)[0]
    b_before = len(history(app, b))

    with pytest.raises(Conflict):
        app.controllers.bind_controller_domain(b.account.id, "monecole")
    with pytest.raises(Conflict):
        app.plannings.update_planning(b.account.id, b_planning.id, {"domain": "monecole"})
    with pytest.raises(Conflict):  # not even another object of the same tenant
        app.plannings.update_planning(a.account.id, a_planning.id, {"domain": "monecole"})
    assert app.controllers.get_controller(b.account.id).domain is None
    assert app.plannings.get_planning(b.account.id, b_planning.id).domain is None
    assert len(history(app, b)) == b_before

    # Rebinding A's controller releases the old name: B can then take it.
    assert app.controllers.bind_controller_domain(a.account.id, "monecole-bis").domain == "monecole-bis.pronote-campus.net"
    taken = app.controllers.bind_controller_domain(b.account.id, "monecole")
    assert taken.domain == "monecole.pronote-campus.net"
    with pytest.raises(Conflict):
        app.controllers.bind_controller_domain(a.account.id, "monecole")
    assert app.controllers.get_controller(a.account.id).domain == "monecole-bis.pronote-campus.net"


def test_planning_domains_get_their_own_ports(app: CampusApplication) -> None:
    opened = open_account(app)
    first, second = plannings(app, opened)
    first = app.plannings.update_planning(opened.account.id, first.id, {"domain": "lycee"})
    second = app.plannings.update_planning(opened.account.id, second.id, {"domain": "college"})
    assert (first.domain, first.port) == ("lycee.pronote-campus.net", 21201)
    assert (second.domain, second.port) == ("college.pronote-campus.net", 21202)
    # The controller cannot take a planning's name; the planning's old name is released on rebinding.
    with pytest.raises(Conflict):
        app.controllers.bind_controller_domain(opened.account.id, "lycee")
    app.plannings.update_planning(opened.account.id, first.id, {"domain": "lycee2"})
    assert app.controllers.bind_controller_domain(opened.account.id, "lycee").port == 21200


# -- controller activation -----------------------------------------------------------------

def test_activation_needs_a_domain_and_a_superadministrator(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    with pytest.raises(Conflict) as no_domain:
        app.controllers.activate_controller(account_id)
    assert no_domain.value.code == "domain_required"
    app.controllers.bind_controller_domain(account_id, "monecole")
    with pytest.raises(Conflict) as no_super:
        app.controllers.activate_controller(account_id)
    assert no_super.value.code == "superadministrator_required"
    app.users.create_user(account_id, login="base", last_name="B", first_name="B", status=Status.BASE_ADMINISTRATOR)
    with pytest.raises(Conflict) as still_no_super:
        app.controllers.activate_controller(account_id)
    assert still_no_super.value.code == "superadministrator_required"
    assert app.controllers.get_controller(account_id).state == "stopped"

    add_superadministrator(app, opened)
    assert app.controllers.activate_controller(account_id).state == "active"
    assert app.controllers.get_controller(account_id).state == "active"
    assert types_of(history(app, opened, types=("Controller.Activated",))) == ["Controller.Activated"]
    assert app.controllers.deactivate_controller(account_id).state == "stopped"


# -- directory users -------------------------------------------------------------------------

def test_first_superadministrator_password_rules(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    with pytest.raises(Invalid) as refused:
        app.users.create_first_superadministrator(account_id, first_name="A", last_name="B", login="admin",
                                            password="abc", password_confirmation="abd")
    fields = [e["field"] for e in refused.value.errors]
    assert fields == ["password"] * 4 + ["password_confirmation"]
    messages = [e["message"] for e in refused.value.errors]
    assert any("12" in m for m in messages)
    assert all("abc" not in m for m in messages)

    with pytest.raises(Invalid) as mismatch:
        app.users.create_first_superadministrator(account_id, first_name="A", last_name="B", login="admin",
                                            password=SUPER_PASSWORD, password_confirmation=SUPER_PASSWORD + "x")
    assert [e["field"] for e in mismatch.value.errors] == ["password_confirmation"]
    assert app.users.list_users(account_id) == []

    add_superadministrator(app, opened)
    (admin,) = app.users.list_users(account_id)
    assert admin.status == Status.SUPERADMINISTRATOR and admin.login == "admin"
    assert verify_secret(admin.password_hash, SUPER_PASSWORD)

    with pytest.raises(Conflict):
        add_superadministrator(app, opened, login="admin2")
    assert [u.login for u in app.users.list_users(account_id)] == ["admin"]


def test_create_user(app: CampusApplication) -> None:
    a, b = open_account(app, "A"), open_account(app, "B")
    created = app.users.create_user(a.account.id, login="Alice.Martin", last_name="Martin", first_name="Alice",
                              email="alice@example.org")
    assert created.password and len(created.password) == 14 and password_problems(created.password) == []
    assert created.user.status == Status.USER
    assert created.user.console_access is False
    assert verify_secret(created.user.password_hash, created.password)
    stored = app.users.get_user(a.account.id, "alice.martin")  # found whatever the case
    assert stored.login == "Alice.Martin" and stored.email == "alice@example.org"

    for duplicate in ("alice.martin", "ALICE.MARTIN", " Alice.Martin "):
        with pytest.raises(Conflict):
            app.users.create_user(a.account.id, login=duplicate, last_name="X", first_name="Y")
    for bad_login in ("", "-x", "a b", "é"):
        with pytest.raises(Invalid):
            app.users.create_user(a.account.id, login=bad_login, last_name="X", first_name="Y")
    with pytest.raises(Invalid):
        app.users.create_user(a.account.id, login="nameless", last_name="  ", first_name="Y")

    same_login_elsewhere = app.users.create_user(b.account.id, login="alice.martin", last_name="M", first_name="A")
    assert same_login_elsewhere.user.id != created.user.id
    assert [u.login for u in app.users.list_users(a.account.id)] == ["Alice.Martin"]
    assert [u.login for u in app.users.list_users(b.account.id)] == ["alice.martin"]


def test_update_user(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    add_superadministrator(app, opened)
    app.users.create_user(account_id, login="bob", last_name="Bob", first_name="B", status=Status.BASE_ADMINISTRATOR)

    with pytest.raises(Invalid) as no_email:
        app.users.update_user(account_id, "bob", {"console_access": True})
    assert no_email.value.errors[0]["field"] == "console_access"
    user = app.users.update_user(account_id, "bob", {"email": "bob@example.org", "console_access": True})
    assert user.console_access is True and user.email == "bob@example.org"
    with pytest.raises(Invalid):  # removing the e-mail while console access is on
        app.users.update_user(account_id, "bob", {"email": None})

    planning = plannings(app, opened)[0]
    app.plannings.assign_profile(account_id, planning.id, Profile.ADMINISTRATION, ["bob"])
    with pytest.raises(Conflict) as holds_admin:
        app.users.update_user(account_id, "BOB", {"status": Status.USER})
    assert "planning01" in holds_admin.value.detail
    assert app.users.get_user(account_id, "bob").status == Status.BASE_ADMINISTRATOR

    promoted = app.users.update_user(account_id, "bob", {"status": Status.SUPERADMINISTRATOR})
    assert promoted.status == Status.SUPERADMINISTRATOR
    app.plannings.assign_profile(account_id, planning.id, Profile.MODIFICATION, ["bob"])
    demoted = app.users.update_user(account_id, "bob", {"status": Status.USER, "last_name": "Robert"})
    assert demoted.status == Status.USER and demoted.last_name == "Robert"
    assert types_of(history(app, opened, aggregate_id=str(user.id))) == [
        "DirectoryUser.Created", "DirectoryUser.EmailChanged", "DirectoryUser.ConsoleAccessChanged",
        "DirectoryUser.StatusChanged", "DirectoryUser.Renamed", "DirectoryUser.StatusChanged",
    ]
    with pytest.raises(NotFound):
        app.users.update_user(account_id, "nobody", {"last_name": "X"})


def test_assign_profile(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    add_superadministrator(app, opened)
    app.users.create_user(account_id, login="Carol", last_name="C", first_name="C")
    app.users.create_user(account_id, login="dan", last_name="D", first_name="D", status=Status.BASE_ADMINISTRATOR)
    planning = plannings(app, opened)[0]

    with pytest.raises(Invalid) as not_admin:
        app.plannings.assign_profile(account_id, planning.id, Profile.ADMINISTRATION, ["admin", "carol"])
    assert "Carol" in not_admin.value.detail
    assert [e["field"] for e in not_admin.value.errors] == ["logins[1]"]
    with pytest.raises(Invalid) as unknown:
        app.plannings.assign_profile(account_id, planning.id, Profile.CONSULTATION, ["carol", "ghost"])
    assert "ghost" in unknown.value.detail and unknown.value.errors[0]["field"] == "logins[1]"
    assert app.plannings.get_planning(account_id, planning.id).version == 1

    updated = app.plannings.assign_profile(account_id, planning.id, Profile.ADMINISTRATION, ["ADMIN", "dan"])
    assert updated.profiles["administration"] == ("admin", "dan")  # stored logins, not the typed case
    updated = app.plannings.assign_profile(account_id, planning.id, Profile.MODIFICATION, ["carol", "dan"])
    assert updated.profiles == {"administration": ("admin",), "modification": ("Carol", "dan"), "consultation": ()}
    updated = app.plannings.assign_profile(account_id, planning.id, Profile.CONSULTATION, ["carol"])
    assert updated.profile_of("Carol") == "consultation"
    assert updated.profiles["modification"] == ("dan",)
    # The other planning is untouched.
    assert plannings(app, opened)[1].profiles == {"administration": (), "modification": (), "consultation": ()}


def test_assignment_templates(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    add_superadministrator(app, opened)
    app.users.create_user(account_id, login="carol", last_name="C", first_name="C")
    first, second = plannings(app, opened)
    app.plannings.assign_profile(account_id, first.id, Profile.ADMINISTRATION, ["admin"])
    app.plannings.assign_profile(account_id, first.id, Profile.CONSULTATION, ["carol"])
    account = app.plannings.save_assignment_template(account_id, "Rentrée", first.id)
    assert "Rentrée" in account.assignment_templates

    applied = app.plannings.apply_assignment_template(account_id, second.id, "Rentrée")
    assert applied.profiles == {"administration": ("admin",), "modification": (), "consultation": ("carol",)}
    assert app.plannings.get_planning(account_id, second.id).profiles == app.plannings.get_planning(account_id, first.id).profiles
    with pytest.raises(NotFound):
        app.plannings.apply_assignment_template(account_id, second.id, "Inconnu")
    with pytest.raises(Invalid):
        app.plannings.save_assignment_template(account_id, "  ", first.id)


# -- versions and validation -----------------------------------------------------------------

def test_if_match_refuses_a_stale_version(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    planning = plannings(app, opened)[0]
    assert planning.etag == '"1"'
    moved = app.plannings.update_planning(account_id, planning.id, {"net_licence": False}, if_match='"1"')
    assert moved.etag == '"2"' and moved.net_licence is False
    with pytest.raises(PreconditionFailed):
        app.plannings.update_planning(account_id, planning.id, {"name": "Lycée"}, if_match='"1"')
    assert app.plannings.get_planning(account_id, planning.id).name == "planning01"
    assert app.plannings.update_planning(account_id, planning.id, {"name": "Lycée"}, if_match='W/"2"').name == "Lycée"
    assert app.plannings.update_planning(account_id, planning.id, {"time_zone": "Indian/Reunion"}, if_match="*").version == 4
    assert app.plannings.update_planning(account_id, planning.id, {"net_licence": True},
                               if_match='"1", "4"').net_licence is True
    with pytest.raises(PreconditionFailed):
        app.controllers.bind_controller_domain(account_id, "monecole", if_match='"7"')
    with pytest.raises(PreconditionFailed):
        app.plannings.assign_profile(account_id, planning.id, Profile.CONSULTATION, [], if_match='"1"')
    assert app.plannings.get_planning(account_id, planning.id).version == 5


def test_update_planning_validation(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    first, second = plannings(app, opened)
    with pytest.raises(Invalid) as bad_zone:
        app.plannings.update_planning(account_id, first.id, {"time_zone": "Mars/Olympus"})
    assert bad_zone.value.errors[0]["field"] == "time_zone"
    with pytest.raises(Invalid):
        app.plannings.update_planning(account_id, first.id, {"name": "   "})
    with pytest.raises(Conflict):
        app.plannings.update_planning(account_id, first.id, {"name": "PLANNING02"})
    renamed = app.plannings.update_planning(account_id, first.id, {"name": "Lycée", "publication_name": "Espace lycée"})
    assert (renamed.name, renamed.publication_name) == ("Lycée", "Espace lycée")
    reset = app.plannings.update_planning(account_id, first.id, {"publication_name": None})
    assert reset.publication_name == "Lycée"
    unchanged = app.plannings.update_planning(account_id, second.id, {"name": "planning02", "time_zone": "Europe/Paris"})
    assert unchanged.version == 1


# -- tenant isolation ---------------------------------------------------------------------------

def test_tenants_cannot_reach_each_others_objects(app: CampusApplication) -> None:
    a, b = open_account(app, "A"), open_account(app, "B")
    app.users.create_user(a.account.id, login="alice", last_name="A", first_name="A")
    a_planning = plannings(app, a)[0]
    b_id = b.account.id

    with pytest.raises(NotFound):
        app.plannings.get_planning(b_id, a_planning.id)
    with pytest.raises(NotFound):
        app.plannings.update_planning(b_id, a_planning.id, {"name": "pris"})
    with pytest.raises(NotFound):
        app.plannings.assign_profile(b_id, a_planning.id, Profile.CONSULTATION, [])
    with pytest.raises(NotFound):
        app.users.get_user(b_id, "alice")
    with pytest.raises(NotFound):
        app.users.update_user(b_id, "alice", {"last_name": "X"})
    with pytest.raises(NotFound):
        app.plannings.get_planning(a.account.id, a.account.controller_id)  # an id of another type
    with pytest.raises(NotFound):
        app.accounts.get_account(a.account.planning_ids[0])
    assert app.users.list_users(b_id) == []
    assert app.plannings.get_planning(a.account.id, a_planning.id).name == "planning01"
    a_ids = {e["aggregate_id"] for e in history(app, a)}
    assert not a_ids & {e["aggregate_id"] for e in history(app, b)}


# -- history -----------------------------------------------------------------------------------

def run_scenario(app: CampusApplication, clock: ManualClock) -> dict[str, Any]:
    """A day of a hosting manager; each command one hour after the previous one."""
    opened = open_account(app)
    account_id = opened.account.id
    number = opened.account.hosting_number
    marks = {}
    secrets: list[str] = [opened.console_password, opened.invoice_number]

    def step(name: str) -> None:
        marks[name] = clock.advance(timedelta(hours=1))

    step("login")
    with acting("anonymous", "req-login"):
        login = app.console_sessions.open_console_session(number, opened.console_password, opened.invoice_number, None)
        manager = f"manager:{number}"
        step("controller")
        app.controllers.bind_controller_domain(account_id, "monecole")
        step("planning")
        first = plannings(app, opened)[0]
        app.plannings.update_planning(account_id, first.id, {"domain": "monecole-edt", "net_licence": False})
        step("superadministrator")
        add_superadministrator(app, opened)
        step("activate")
        app.controllers.activate_controller(account_id)
        step("user")
        bob = app.users.create_user(account_id, login="bob", last_name="Bob", first_name="B")
        step("assign")
        app.plannings.assign_profile(account_id, first.id, Profile.ADMINISTRATION, ["admin"])
        step("email")
        app.users.update_user(account_id, "bob", {"email": "bob@example.org"})
        step("licence")
        app.accounts.accept_licence_agreement(account_id)
        step("logout")
        app.console_sessions.close_console_session(login.token)
    step("reset")
    with acting("operator:test"):
        _, new_password = app.accounts.reset_console_password(number)
    step("relogin")
    with acting("anonymous"):
        relogin = app.console_sessions.open_console_session(number, new_password, None, login.certificate)
    step("end")
    account = app.accounts.get_account(account_id)
    secrets += [login.token, login.certificate, new_password, relogin.token, bob.password, SUPER_PASSWORD,
                token_digest(login.token), token_digest(login.certificate), token_digest(relogin.token),
                opened.account.console_password_hash, opened.account.invoice_number_hash,
                account.console_password_hash, bob.user.password_hash,
                app.users.get_user(account_id, "admin").password_hash]
    return {"opened": opened, "manager": manager, "marks": marks, "secrets": secrets,
            "planning": first, "bob": bob.user}


EXPECTED_TYPES = [
    # open_account (operator)
    "HostingAccount.Opened", "Controller.Created", "Planning.Created", "Planning.Created",
    # first login
    "HostingAccount.CertificateInstalled", "ConsoleSession.Opened",
    "Controller.DomainBound", "DomainName.Claimed",
    "Planning.NetLicenceSwitched", "Planning.DomainBound", "DomainName.Claimed",
    "DirectoryUser.Created", "HostingAccount.FirstSuperadministratorCreated",
    "Controller.Activated",
    "DirectoryUser.Created",
    "Planning.ProfilesAssigned",
    "DirectoryUser.EmailChanged",
    "HostingAccount.LicenceAgreementAccepted",
    "ConsoleSession.Closed",
    # operator resets the password, manager logs in again with the certificate
    "HostingAccount.ConsolePasswordReset",
    "ConsoleSession.Opened",
]


def test_history_records_every_command_with_who_and_when(app: CampusApplication, clock: ManualClock) -> None:
    s = run_scenario(app, clock)
    events = history(app, s["opened"])
    assert types_of(events) == EXPECTED_TYPES
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    actors = [e["actor"] for e in events]
    assert actors[:4] == ["operator:test"] * 4
    assert actors[4:19] == [s["manager"]] * 15
    assert actors[19] == "operator:test"
    assert actors[20] == s["manager"]
    assert events[4]["request_id"] == "req-login" and events[4]["client_address"] == "198.51.100.9"
    timestamps = [e["timestamp"] for e in events]
    assert timestamps == sorted(timestamps)
    # One command, one instant.
    assert len({e["timestamp"] for e in events[:4]}) == 1
    assert datetime.fromisoformat(events[6]["timestamp"]) > s["marks"]["controller"]
    assert datetime.fromisoformat(events[6]["timestamp"]) < s["marks"]["planning"]
    # Every stored history row of the scenario is filed under the school's tenant.
    with app.history.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT position, tenant FROM {app.history.t_history} ORDER BY position")
        tenants = {int(r["position"]): r["tenant"] for r in curs.fetchall()}
    assert sorted(tenants) == positions
    assert set(tenants.values()) == {str(s["opened"].account.id)}
    controller_bound = events[6]
    assert controller_bound["aggregate_type"] == "Controller"
    assert controller_bound["data"]["domain"] == "monecole.pronote-campus.net"
    assert controller_bound["data"]["port"] == 21200
    assert events[15]["data"]["profiles"]["administration"] == ["admin"]


def test_history_filters_and_paging(app: CampusApplication, clock: ManualClock) -> None:
    s = run_scenario(app, clock)
    opened, marks = s["opened"], s["marks"]
    everything = history(app, opened)

    by_type = history(app, opened, types=("Planning.DomainBound", "Controller.DomainBound"))
    assert types_of(by_type) == ["Controller.DomainBound", "Planning.DomainBound"]
    assert types_of(history(app, opened, types=("Nope.Nothing",))) == []

    by_operator = history(app, opened, actor="operator:test")
    assert types_of(by_operator) == EXPECTED_TYPES[:4] + ["HostingAccount.ConsolePasswordReset"]

    planning = history(app, opened, aggregate_id=str(s["planning"].id))
    assert types_of(planning) == ["Planning.Created", "Planning.NetLicenceSwitched", "Planning.DomainBound",
                                  "Planning.ProfilesAssigned"]
    assert {e["aggregate_id"] for e in planning} == {str(s["planning"].id)}

    window = history(app, opened, since=marks["superadministrator"], until=marks["user"])
    assert types_of(window) == ["DirectoryUser.Created", "HostingAccount.FirstSuperadministratorCreated",
                                "Controller.Activated"]
    assert types_of(history(app, opened, since=marks["relogin"])) == ["ConsoleSession.Opened"]
    assert types_of(history(app, opened, until=marks["login"])) == EXPECTED_TYPES[:4]
    assert history(app, opened, since=marks["end"]) == []
    # Both bounds are inclusive: an event at exactly `since` or `until` is in.
    activated = history(app, opened, types=("Controller.Activated",))[0]
    at = datetime.fromisoformat(activated["timestamp"])
    assert types_of(history(app, opened, since=at, until=at)) == ["Controller.Activated"]
    assert history(app, opened, since=at + timedelta(microseconds=1), until=marks["user"]) == []
    combined = history(app, opened, types=("DirectoryUser.Created",), since=marks["user"])
    assert [e["aggregate_id"] for e in combined] == [str(s["bob"].id)]

    after = everything[9]["position"]
    assert history(app, opened, after=after) == everything[10:]

    pages, cursor = [], None
    while True:
        page, cursor = app.history.query(HistoryQuery(tenant=str(opened.account.id), limit=3, after=cursor))
        assert len(page) <= 3
        pages.append(page)
        if cursor is None:
            break
        assert cursor == page[-1]["position"]
    assert [e for p in pages for e in p] == everything
    assert len(pages) == -(-len(everything) // 3)
    exact, cursor = app.history.query(HistoryQuery(tenant=str(opened.account.id), limit=len(everything)))
    assert exact == everything and cursor is None


def test_no_secret_is_readable_from_the_history(app: CampusApplication, clock: ManualClock) -> None:
    s = run_scenario(app, clock)
    dump = json.dumps(history(app, s["opened"]))
    for secret in s["secrets"]:
        assert secret and secret not in dump, "a secret appears in the history"
    # The events that carried secrets still say that something was recorded.
    opened_event = history(app, s["opened"], types=("HostingAccount.Opened",))[0]
    assert opened_event["data"]["hosting_number"] == s["opened"].account.hosting_number
    assert opened_event["data"]["console_password_hash"] == "[redacted]"
    assert "$argon2" not in dump


# -- durability ---------------------------------------------------------------------------------

def test_state_survives_closing_and_reopening(settings: Settings, clock: ManualClock) -> None:
    first = CampusApplication(settings, clock=clock)
    try:
        s = run_scenario(first, clock)
        before = history(first, s["opened"])
    finally:
        first.close()
    opened = s["opened"]
    account_id = opened.account.id

    second = CampusApplication(settings, clock=clock)
    try:
        assert history(second, opened) == before
        controller = second.controllers.get_controller(account_id)
        assert (controller.domain, controller.state) == ("monecole.pronote-campus.net", "active")
        first_planning = second.plannings.list_plannings(account_id)[0]
        assert first_planning.domain == "monecole-edt.pronote-campus.net" and first_planning.net_licence is False
        assert first_planning.profiles["administration"] == ("admin",)
        assert [u.login for u in second.users.list_users(account_id)] == ["admin", "bob"]
        assert second.users.get_user(account_id, "bob").email == "bob@example.org"
        assert second.accounts.get_account(account_id).licence_accepted is True
        with pytest.raises(Conflict):  # the domain claims survive too
            second.controllers.bind_controller_domain(open_account(second, "C").account.id, "monecole")
        second.users.create_user(account_id, login="carol", last_name="C", first_name="C")
        assert [u.login for u in second.users.list_users(account_id)] == ["admin", "bob", "carol"]
    finally:
        second.close()


def test_the_only_superadministrator_of_an_active_controller_keeps_the_status(app: CampusApplication) -> None:
    opened = open_account(app)
    account_id = opened.account.id
    add_superadministrator(app, opened)
    app.controllers.bind_controller_domain(account_id, "lastadmin")
    # Before activation, the status may change freely.
    app.users.update_user(account_id, "admin", {"status": Status.BASE_ADMINISTRATOR})
    app.users.update_user(account_id, "admin", {"status": Status.SUPERADMINISTRATOR})
    app.controllers.activate_controller(account_id)
    with pytest.raises(Conflict) as refused:
        app.users.update_user(account_id, "admin", {"status": Status.BASE_ADMINISTRATOR})
    assert refused.value.code == "last_superadministrator"
    assert app.users.get_user(account_id, "admin").status == Status.SUPERADMINISTRATOR
    # With a second superadministrator, the first may step down.
    app.users.create_user(account_id, login="second", last_name="S", first_name="S", status=Status.SUPERADMINISTRATOR)
    assert app.users.update_user(account_id, "admin", {"status": Status.BASE_ADMINISTRATOR}).status == Status.BASE_ADMINISTRATOR
