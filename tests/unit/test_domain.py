"""The aggregates on their own, without a store or an application."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from campus.aggregates.account import HostingAccount, account_id_for, default_licence
from campus.aggregates.controller import CONTROLLER_PORT, Controller, controller_id_for
from campus.aggregates.core import CampusAggregate, natural_id
from campus.aggregates.domain_name import DomainName, domain_claim_id
from campus.aggregates.planning import (
    DEFAULT_TIME_ZONE,
    Planning,
    Profile,
    planning_id_for,
)
from campus.aggregates.session import ConsoleSession, console_session_id_for
from campus.aggregates.user import DirectoryUser, Status, user_id_for
from campus.infra.clock import FrozenClock, ManualClock, reset_clock, use_clock
from campus.infra.context import (
    RequestContext,
    current_context,
    reset_context,
    set_actor,
    set_context,
)

START = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc)


@pytest.fixture
def manual_clock() -> Iterator[ManualClock]:
    clock = ManualClock(START)
    token = use_clock(clock)
    yield clock
    reset_clock(token)


@pytest.fixture
def request_context() -> Iterator[RequestContext]:
    ctx = RequestContext(actor="manager:123456789012", request_id="req-1", client_address="192.0.2.7")
    token = set_context(ctx)
    yield ctx
    reset_context(token)


def new_planning(account_id: UUID | None = None, number: int = 1) -> Planning:
    return Planning(account_id=account_id or uuid4(), number=number, name=f"planning0{number}",
                    time_zone=DEFAULT_TIME_ZONE)


def new_user(account_id: UUID, login: str = "alice", status: Status = Status.USER) -> DirectoryUser:
    return DirectoryUser(account_id=account_id, login=login, last_name="Martin", first_name="Alice",
                         civility=None, status=status, email=None, password_hash="$argon2id$fake",
                         external_ids={"ldap": "uid=alice"})


def replay(events: list) -> CampusAggregate:
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert aggregate is not None
    return aggregate


def public_state(aggregate: CampusAggregate) -> dict:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


# -- meta: who, from where, for which tenant ---------------------------------------------

def test_every_event_carries_the_request_context_and_the_tenant(request_context: RequestContext,
                                                                manual_clock: ManualClock) -> None:
    account_id = uuid4()
    planning = new_planning(account_id)
    planning.rename(name="Lycée")
    planning.switch_net_licence(enabled=False)
    events = planning.collect_events()
    assert [type(e).__qualname__ for e in events] == [
        "Planning.Created", "Planning.Renamed", "Planning.NetLicenceSwitched"]
    for event in events:
        assert event.meta == {
            "actor": "manager:123456789012",
            "request_id": "req-1",
            "client_address": "192.0.2.7",
            "tenant": str(account_id),
        }


def test_meta_follows_a_context_change_between_events(manual_clock: ManualClock) -> None:
    account_id = uuid4()
    token = set_context(RequestContext(actor="operator", request_id="r1", client_address="10.0.0.1"))
    try:
        user = new_user(account_id)
        set_actor("manager:000000000001")
        user.change_status(status=Status.BASE_ADMINISTRATOR)
        set_context(RequestContext(actor="auditor", request_id="r2", client_address=None, reason="restore drill"))
        user.change_email(email="alice@example.org")
    finally:
        reset_context(token)
    created, status_changed, email_changed = user.collect_events()
    assert created.meta["actor"] == "operator"
    assert created.meta["request_id"] == "r1"
    assert "reason" not in created.meta
    assert status_changed.meta["actor"] == "manager:000000000001"
    assert status_changed.meta["request_id"] == "r1"  # set_actor keeps the rest of the context
    assert email_changed.meta == {"actor": "auditor", "request_id": "r2", "client_address": None,
                                  "tenant": str(account_id), "reason": "restore drill"}
    # After the reset, the context is the default one again.
    assert current_context() == RequestContext()


def test_events_outside_any_request_are_by_system() -> None:
    controller = Controller(account_id=uuid4())
    (created,) = controller.collect_events()
    assert created.meta["actor"] == "system"
    assert created.meta["request_id"] is None
    assert created.meta["client_address"] is None


def test_domain_claim_events_are_filed_under_the_tenant_that_acts(request_context: RequestContext) -> None:
    tenant_a, tenant_b = uuid4(), uuid4()
    claim = DomainName(domain="monecole.pronote-campus.net", account_id=tenant_a, holder_id=uuid4())
    claim.release()
    holder_b = uuid4()
    claim.reclaim(account_id=tenant_b, holder_id=holder_b)
    claim.release()
    created, released_a, reclaimed, released_b = claim.collect_events()
    assert created.meta["tenant"] == str(tenant_a)
    assert released_a.meta["tenant"] == str(tenant_a)
    assert reclaimed.meta["tenant"] == str(tenant_b)
    assert released_b.meta["tenant"] == str(tenant_b)
    assert claim.id == domain_claim_id("monecole.pronote-campus.net")
    assert claim.holder_id is None and claim.account_id == tenant_b


# -- timestamps from the one clock -----------------------------------------------------------

def test_event_timestamps_come_from_the_current_clock(manual_clock: ManualClock) -> None:
    planning = new_planning()
    manual_clock.advance(timedelta(days=3))
    planning.change_time_zone(time_zone="America/Cayenne")
    created, changed = planning.collect_events()
    assert START < created.timestamp < START + timedelta(days=1)
    assert START + timedelta(days=3) < changed.timestamp < START + timedelta(days=4)
    assert created.timestamp.utcoffset() == timedelta(0)
    assert planning.created_on == created.timestamp
    assert planning.modified_on == changed.timestamp


def test_a_frozen_clock_gives_every_event_the_same_instant() -> None:
    instant = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)
    token = use_clock(FrozenClock(instant))
    try:
        user = new_user(uuid4())
        user.change_console_access(console_access=True)
    finally:
        reset_clock(token)
    assert [e.timestamp for e in user.collect_events()] == [instant, instant]


def test_manual_clock_only_moves_forward_when_read_or_told() -> None:
    clock = ManualClock(START)
    first, second = clock.now(), clock.now()
    assert START < first < second < START + timedelta(seconds=1)
    assert clock.advance(timedelta(hours=12)) > START + timedelta(hours=12)
    clock.set(datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now().utcoffset() == timedelta(0)
    with pytest.raises(ValueError):
        ManualClock(datetime(2000, 1, 1))


# -- planning ----------------------------------------------------------------------------------

def test_planning_defaults() -> None:
    account_id = uuid4()
    planning = new_planning(account_id, 2)
    assert planning.id == planning_id_for(account_id, 2)
    assert planning.name == "planning02"
    assert planning.time_zone == "Europe/Paris"
    assert planning.net_licence is True
    assert planning.server_state == "stopped" and planning.publication_state == "stopped"
    assert planning.domain is None and planning.port is None
    assert planning.profiles == {"administration": (), "modification": (), "consultation": ()}
    assert planning.etag == '"1"'


def test_publication_name_follows_the_name_until_set() -> None:
    planning = new_planning()
    assert planning.publication_name == "planning01"
    planning.rename(name="Lycée Victor Hugo")
    assert planning.publication_name == "Lycée Victor Hugo"
    planning.change_publication_name(publication_name="Espace VH")
    planning.rename(name="Lycée VH")
    assert planning.publication_name == "Espace VH"
    assert planning.name == "Lycée VH"
    planning.change_publication_name(publication_name=None)
    assert planning.publication_name == "Lycée VH"


def test_profile_of() -> None:
    planning = new_planning()
    planning.assign_profiles(profiles={"administration": ["admin"], "modification": ("bob", "carol"),
                                       "consultation": ()})
    assert planning.profile_of("admin") == Profile.ADMINISTRATION == "administration"
    assert planning.profile_of("carol") == "modification"
    assert planning.profile_of("dave") is None
    # Stored as tuples whatever the caller passed.
    assert planning.profiles["administration"] == ("admin",)


def test_planning_replay_gives_the_same_state(manual_clock: ManualClock, request_context: RequestContext) -> None:
    planning = new_planning()
    planning.rename(name="Collège")
    planning.change_publication_name(publication_name="Espace collège")
    planning.switch_net_licence(enabled=False)
    planning.bind_domain(label="college", domain="college.pronote-campus.net", port=CONTROLLER_PORT + 1)
    planning.change_time_zone(time_zone="Indian/Reunion")
    planning.assign_profiles(profiles={"administration": ("admin",), "modification": ("bob",),
                                       "consultation": ()}, template="rentrée")
    events = planning.collect_events()
    assert len(events) == 7
    copy = replay(events)
    assert isinstance(copy, Planning)
    assert public_state(copy) == public_state(planning)
    assert copy.version == 7
    assert copy.etag == '"7"'
    assert copy.publication_name == "Espace collège"
    assert copy.profile_of("bob") == "modification"


def test_replaying_a_prefix_gives_the_past_state() -> None:
    planning = new_planning()
    planning.rename(name="A")
    planning.rename(name="B")
    events = planning.collect_events()
    assert replay(events[:2]).name == "A"
    assert replay(events[:1]).name == "planning01"


# -- the other aggregates ------------------------------------------------------------------

def test_account_replay_and_natural_id(manual_clock: ManualClock) -> None:
    account_id = account_id_for("123456789012")
    account = HostingAccount(
        hosting_number="123456789012", account_id=account_id, establishment="Lycée",
        manager={"name": "M. Dupont", "email": "dupont@example.org"},
        console_password_hash="$argon2id$p", invoice_number_hash="$argon2id$i",
        licence=default_licence(date(2026, 9, 1)), planning_ids=(uuid4(), uuid4()),
        controller_id=controller_id_for(account_id),
    )
    assert account.id == account_id == natural_id("account", "123456789012")
    assert account.licence_accepted is False
    account.accept_licence_agreement(accepted_at=manual_clock.now())
    account.install_certificate(certificate_digest="d" * 64, installed_at=manual_clock.now())
    account.reset_console_password(console_password_hash="$argon2id$p2")
    account.save_assignment_template(name="rentrée", assignments={"administration": ["admin"]},
                                     source_planning_id=account.planning_ids[0])
    assert account.licence_accepted is True
    assert account.password_epoch == 1
    assert account.assignment_templates["rentrée"]["assignments"] == {"administration": ("admin",)}
    copy = replay(account.collect_events())
    assert public_state(copy) == public_state(account)
    assert account.collect_events() == []  # already collected: nothing pending


def test_default_licence_expires_a_year_later_and_has_six_seats() -> None:
    licence = default_licence(date(2026, 9, 1))
    assert licence["expires_on"] == date(2027, 9, 1)
    assert licence["modification_seats"] == 6
    assert set(licence["options"]) == {"edt_connection", "consultation", "sms", "web_publication"}
    assert default_licence(date(2028, 2, 29))["expires_on"] == date(2029, 2, 28)


@pytest.mark.parametrize("opened_on", [date(2026, 9, 30), date(2027, 1, 31), date(2026, 12, 29)])
def test_default_licence_lasts_a_whole_year_at_the_end_of_a_month(opened_on: date) -> None:
    """Only 29 February has no anniversary; a licence opened on the 30th must not lose days."""
    assert default_licence(opened_on)["expires_on"] == opened_on.replace(year=opened_on.year + 1)


def test_controller_binds_a_domain_and_activates() -> None:
    account_id = uuid4()
    controller = Controller(account_id=account_id)
    assert controller.id == controller_id_for(account_id)
    assert controller.state == "stopped" and controller.domain is None
    controller.bind_domain(label="monecole", domain="monecole.pronote-campus.net", port=CONTROLLER_PORT)
    controller.activate()
    assert (controller.domain, controller.port, controller.state) == ("monecole.pronote-campus.net", 21200, "active")
    copy = replay(controller.collect_events())
    assert public_state(copy) == public_state(controller)
    copy.deactivate()
    assert copy.state == "stopped"


def test_user_replay_keeps_the_status_enum() -> None:
    account_id = uuid4()
    user = new_user(account_id, login="Alice.Martin", status=Status.BASE_ADMINISTRATOR)
    assert user.id == user_id_for(account_id, "alice.martin") == user_id_for(account_id, " ALICE.MARTIN ")
    assert user.id != user_id_for(uuid4(), "alice.martin")
    assert user.is_administrative
    user.change_status(status=Status.USER)
    assert not user.is_administrative
    user.change_password(password_hash="$argon2id$new")
    user.change_external_ids(external_ids={"cas": "am"})
    user.rename(last_name="Durand", first_name="Alice", civility="Mme")
    copy = replay(user.collect_events())
    assert public_state(copy) == public_state(user)
    assert copy.status is Status.USER
    assert copy.credentials_epoch == 2  # the status change and the password change
    assert copy.login == "Alice.Martin"


def test_console_session_is_found_by_the_token_digest_and_stores_no_token() -> None:
    digest = "ab" * 32
    session = ConsoleSession(token_digest=digest, account_id=uuid4(),
                             expires_at=START + timedelta(hours=12), password_epoch=0, new_certificate=True)
    assert session.id == console_session_id_for(digest)
    assert digest not in vars(session).values()
    assert session.closed is False
    session.close()
    copy = replay(session.collect_events())
    assert copy.closed is True
    assert copy.expires_at == START + timedelta(hours=12)
