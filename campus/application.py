"""The service layer: one eventsourcing Application, one method per use case.

Each public command method validates its input, reads the clock, generates
secrets, then calls decorated aggregate methods (which only assign state) and
saves every changed aggregate in one atomic ``save``. Reads return aggregates;
the HTTP layer turns them into views.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.persistence import Transcoder
from eventsourcing.utils import Environment

from campus.aggregates.account import HostingAccount, account_id_for, default_licence
from campus.aggregates.core import CampusAggregate
from campus.aggregates.controller import CONTROLLER_PORT, Controller
from campus.aggregates.domain_name import DomainName, domain_claim_id
from campus.aggregates.planning import DEFAULT_TIME_ZONE, FIRST_PLANNING_PORT, Planning, Profile
from campus.aggregates.session import ConsoleSession, console_session_id_for
from campus.aggregates.user import DirectoryUser, Status, user_id_for
from campus.account_page import AccountPageUseCases
from campus.backups import BackupUseCases
from campus.bases import BaseCache, BaseUseCases
from campus.exchange import ExchangeUseCases
from campus.login_guard import FailureKind, LoginFailures, LoginGuardUseCases
from campus.mail import MailKeys, MailUseCases
from campus.publication import PublicationUseCases
from campus.school_year import SchoolYearUseCases
from campus.time_machine import TimeMachineUseCases
from campus.user_sessions import UserSessionUseCases
from campus.clock import Clock, FrozenClock, SystemClock, current_clock, reset_clock, use_clock
from campus.command_path import CommandPath, current_scope
from campus.locks import StoreLocks
from campus.context import set_actor
from campus.errors import Conflict, Invalid, NotFound, PreconditionFailed, Unauthenticated
from campus.projections.history import HistoryQuery, HistoryView
from campus.projections.timeline import TimelineView
from campus.security import (
    generate_password,
    hash_secret,
    new_token,
    password_problems,
    random_digits,
    token_digest,
    verify_secret,
)
from campus.settings import Settings
from campus.transcoder import MsgpackTranscoder

A = TypeVar("A", bound=CampusAggregate)

DOMAIN_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
LOGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class OpenedAccount:
    account: HostingAccount
    console_password: str
    invoice_number: str


@dataclass(frozen=True)
class ConsoleLogin:
    token: str
    certificate: str | None
    session: ConsoleSession


@dataclass(frozen=True)
class CreatedUser:
    user: DirectoryUser
    password: str | None


class CampusApplication(BaseUseCases, UserSessionUseCases, ExchangeUseCases, TimeMachineUseCases, BackupUseCases,
                        LoginGuardUseCases, PublicationUseCases, MailUseCases, SchoolYearUseCases,
                        AccountPageUseCases, Application):
    name = "campus"
    # No library snapshots for now: taken inside a command they held a big school's lock for
    # 1-2 s at each 5,000th event, and on SQLite every read looked them up (bench/large_school.py).
    # Long bases are served from BaseCache instead; see docs/DECISIONS.md.

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        env = settings.persistence_env()
        if not settings.uses_postgres:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.locks = StoreLocks(env, settings.data_dir)
        # Servers started together on an empty store: one at a time creates the schema and tables.
        with self.locks.exclusive("create-tables"):
            if settings.uses_postgres and env.get("POSTGRES_SCHEMA"):
                _create_schema(env)
            super().__init__(env=env)
            self.commands = CommandPath(self)
            self.history = HistoryView(self)
            self.timeline = TimelineView(self)
            MailKeys.create_table(self)
            self.login_failures = LoginFailures(self)
        self.base_cache = BaseCache(self)
        self.commands.on_failure_forget(self.base_cache.forget)

    # -- infrastructure hooks ------------------------------------------------
    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Settings were read once at the composition root: ignore os.environ here.
        return Environment(name, dict(env or {}))

    def construct_transcoder(self) -> Transcoder:
        return MsgpackTranscoder()

    def construct_repository(self) -> Repository:
        return CommandRepository(event_store=self.events, snapshot_store=self.snapshots)

    # -- command plumbing (campus/command_path.py) -----------------------------
    def _run(self, tenant: Any, body: Callable[[], Any]) -> Any:
        """Run a command of `tenant`'s school: see :class:`~campus.command_path.CommandPath`."""
        return self.commands.run(tenant, body)

    def save(self, *objs: Any, **kwargs: Any) -> list:
        """Inside a command: collect the events for the command's one append. Outside: a command of its own."""
        scope = current_scope()
        if scope is not None:
            self.commands.collect(scope, objs)
            return []
        tenant = next((getattr(o, "account_id", None) for o in objs if o is not None), None)
        return self._run(tenant, lambda: self.save(*objs))

    @contextmanager
    def _reading(self, tenant: Any) -> Iterator[None]:
        """Read a school's cached aggregates (its bases) while no command of this process changes them,
        with one instant for the whole read."""
        with self.locks.school_slot(tenant):
            if isinstance(current_clock(), FrozenClock):  # inside a command: keep its instant
                yield
                return
            token = use_clock(FrozenClock(self.clock.now()))
            try:
                yield
            finally:
                reset_clock(token)

    def now(self) -> datetime:
        """The current command's instant, or the clock's outside a command."""
        clock = current_clock()
        return clock.now() if isinstance(clock, FrozenClock) else self.clock.now()

    def _get(self, cls: type[A], aggregate_id: UUID, account_id: UUID, what: str) -> A:
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} not found") from None
        if not isinstance(aggregate, cls) or aggregate.account_id != account_id:
            raise NotFound(f"{what} not found")
        return aggregate

    @staticmethod
    def _check_version(aggregate: CampusAggregate, if_match: str | None) -> None:
        check_if_match(aggregate.etag, if_match)

    # -- operator: hosting accounts -------------------------------------------
    def check_operator_token(self, token: str) -> bool:
        expected = self.settings.operator_token
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())

    def open_account(self, establishment: str, manager_name: str, manager_email: str,
                     edition: str = "campus") -> OpenedAccount:
        for _ in range(10):
            hosting_number = random_digits(12)
            account_id = account_id_for(hosting_number)
            if account_id not in self.repository:
                break
        else:  # pragma: no cover - 10 collisions in 10^12 numbers
            raise Conflict("could not allocate a hosting number; retry")

        def body() -> OpenedAccount:
            password, invoice = generate_password(14), random_digits(10)
            controller = Controller(account_id=account_id)
            plannings = [
                Planning(account_id=account_id, number=n, name=f"planning0{n}", time_zone=DEFAULT_TIME_ZONE)
                for n in (1, 2)
            ]
            account = HostingAccount(
                hosting_number=hosting_number,
                account_id=account_id,
                establishment=establishment,
                manager={"name": manager_name, "email": manager_email},
                console_password_hash=hash_secret(password),
                invoice_number_hash=hash_secret(invoice),
                licence=default_licence(self.now().date()),
                planning_ids=tuple(p.id for p in plannings),
                controller_id=controller.id,
                edition=edition,
            )
            self.save(account, controller, *plannings)
            return OpenedAccount(account, password, invoice)

        return self._run(account_id, body)

    def account_by_number(self, hosting_number: str) -> HostingAccount:
        try:
            account = self.repository.get(account_id_for(hosting_number))
        except AggregateNotFoundError:
            raise NotFound("hosting account not found") from None
        assert isinstance(account, HostingAccount)
        return account

    def reset_console_password(self, hosting_number: str) -> tuple[HostingAccount, str]:
        account = self.account_by_number(hosting_number)

        def body() -> tuple[HostingAccount, str]:
            current = self.repository.get(account.id)
            password = generate_password(14)
            current.reset_console_password(console_password_hash=hash_secret(password))
            self.save(current)
            return current, password

        return self._run(account.id, body)

    # -- hosting manager: console sessions --------------------------------------
    def open_console_session(
        self, hosting_number: str, password: str, invoice_number: str | None, certificate: str | None
    ) -> ConsoleLogin:
        # An unknown number is guarded under the id its account would have: it answers like a wrong password.
        tenant = account_id_for(hosting_number)
        self.refuse_if_suspended(tenant, console=True)  # also: too many failed console logins from here
        try:
            account = self.account_by_number(hosting_number)
        except NotFound:
            account = None
        # The same check either way: an unknown number verifies against a fixed dummy argon2 hash
        # (verify_secret(None, …)), so the time of the answer does not tell whether the number exists.
        self.check_secret(tenant, account.console_password_hash if account else None, password,
                          FailureKind.CONSOLE_PASSWORD, hosting_number, Unauthenticated(
                              "the hosting number or the console password is wrong", code="invalid_credentials"))
        assert account is not None  # (an unknown number never passes the check)
        # The invoice number is checked before the command: a failure is counted, whatever the command does.
        certified = bool(certificate) and token_digest(certificate) in account.certificate_digests
        if not certified and invoice_number:
            self.check_secret(tenant, account.invoice_number_hash, invoice_number, FailureKind.INVOICE_NUMBER,
                              hosting_number, Unauthenticated("the invoice number is wrong",
                                                              code="invalid_invoice_number"))
        set_actor(f"manager:{account.hosting_number}")

        def body() -> ConsoleLogin:
            current: HostingAccount = self.repository.get(account.id)
            issued: str | None = None
            if certificate and token_digest(certificate) in current.certificate_digests:
                pass
            elif invoice_number:
                if certified and not verify_secret(current.invoice_number_hash, invoice_number):
                    # (its certificate was removed meanwhile, so the invoice number was not checked above)
                    raise Unauthenticated("the invoice number is wrong", code="invalid_invoice_number")
                issued = new_token()
                current.install_certificate(certificate_digest=token_digest(issued), installed_at=self.now())
            else:
                raise Unauthenticated(
                    "first login from this machine: send invoice_number (10 digits, from your invoice) "
                    "to install a certificate, or present a certificate installed earlier",
                    code="certificate_required",
                )
            token = new_token()
            session = ConsoleSession(
                token_digest=token_digest(token),
                account_id=current.id,
                expires_at=self.now() + timedelta(hours=self.settings.console_session_hours),
                password_epoch=current.password_epoch,
                new_certificate=issued is not None,
            )
            self.save(current, session)
            return ConsoleLogin(token, issued, session)

        return self._run(account.id, body)

    def authenticate_console(self, token: str) -> HostingAccount:
        invalid = Unauthenticated("the console token is invalid or has expired; open a new session", code="invalid_token")
        try:
            session = self.repository.get(console_session_id_for(token_digest(token)))
        except AggregateNotFoundError:
            raise invalid from None
        if not isinstance(session, ConsoleSession) or session.closed or session.expires_at <= self.now():
            raise invalid
        account: HostingAccount = self.repository.get(session.account_id)
        if account.password_epoch != session.password_epoch:
            raise invalid
        return account

    def close_console_session(self, token: str) -> None:
        account = self.authenticate_console(token)

        def body() -> None:
            session = self.repository.get(console_session_id_for(token_digest(token)))
            session.close()
            self.save(session)

        self._run(account.id, body)

    def accept_licence_agreement(self, account_id: UUID) -> HostingAccount:
        def body() -> HostingAccount:
            account: HostingAccount = self.repository.get(account_id)
            if not account.licence_accepted:
                account.accept_licence_agreement(accepted_at=self.now())
                self.save(account)
            return account

        return self._run(account_id, body)

    def get_account(self, account_id: UUID) -> HostingAccount:
        return self._get(HostingAccount, account_id, account_id, "hosting account")

    # -- domain names ---------------------------------------------------------
    def _domain(self, field: str, label: str) -> tuple[str, str]:
        label = label.strip().lower()
        suffix = "." + self.settings.domain_suffix
        if label.endswith(suffix):
            label = label[: -len(suffix)]
        if not DOMAIN_LABEL.match(label):
            raise Invalid.field(
                field,
                "a domain name is 1 to 63 characters among a-z, 0-9 and '-', "
                "not starting or ending with '-'",
            )
        return label, f"{label}.{self.settings.domain_suffix}"

    def _claim_domain(self, domain: str, account_id: UUID, holder_id: UUID, previous: str | None) -> list[DomainName]:
        changed: list[DomainName] = []
        try:
            claim: DomainName = self.repository.get(domain_claim_id(domain))
        except AggregateNotFoundError:
            changed.append(DomainName(domain=domain, account_id=account_id, holder_id=holder_id))
        else:
            if claim.holder_id is not None and claim.holder_id != holder_id:
                raise Conflict(f"the domain name {domain} is already in use; choose another one")
            claim.reclaim(account_id=account_id, holder_id=holder_id)
            changed.append(claim)
        if previous and previous != domain:
            old: DomainName = self.repository.get(domain_claim_id(previous))
            old.release()
            changed.append(old)
        return changed

    # -- controller -------------------------------------------------------------
    def get_controller(self, account_id: UUID) -> Controller:
        account = self.get_account(account_id)
        return self._get(Controller, account.controller_id, account_id, "controller")

    def bind_controller_domain(self, account_id: UUID, name: str, if_match: str | None = None) -> Controller:
        label, domain = self._domain("name", name)

        def body() -> Controller:
            controller = self.get_controller(account_id)
            self._check_version(controller, if_match)
            if controller.domain == domain:
                return controller
            claims = self._claim_domain(domain, account_id, controller.id, controller.domain)
            controller.bind_domain(label=label, domain=domain, port=CONTROLLER_PORT)
            self.save(controller, *claims)
            return controller

        return self._run(account_id, body)

    def activate_controller(self, account_id: UUID) -> Controller:
        def body() -> Controller:
            controller = self.get_controller(account_id)
            if controller.state == "active":
                return controller
            if controller.domain is None:
                raise Conflict(
                    "the controller needs a domain name before it can be activated "
                    "(PUT /v1/console/controller/domain)", code="domain_required")
            if not self.has_superadministrator(account_id):
                raise Conflict(
                    "the controller needs a superadministrator before it can be activated "
                    "(POST /v1/console/superadministrator)", code="superadministrator_required")
            controller.activate()
            self.save(controller)
            return controller

        return self._run(account_id, body)

    def deactivate_controller(self, account_id: UUID) -> Controller:
        def body() -> Controller:
            controller = self.get_controller(account_id)
            if controller.state != "stopped":
                controller.deactivate()
                self.save(controller)
            return controller

        return self._run(account_id, body)

    # -- plannings ------------------------------------------------------------
    def list_plannings(self, account_id: UUID) -> list[Planning]:
        account = self.get_account(account_id)
        return [self._get(Planning, pid, account_id, "planning") for pid in account.planning_ids]

    def get_planning(self, account_id: UUID, planning_id: UUID) -> Planning:
        return self._get(Planning, planning_id, account_id, "planning")

    def get_planning_by_text(self, account_id: UUID, planning_id: str) -> Planning:
        try:
            return self.get_planning(account_id, UUID(planning_id))
        except ValueError:
            raise NotFound("planning not found") from None

    def update_planning(
        self, account_id: UUID, planning_id: UUID, changes: dict[str, Any], if_match: str | None = None
    ) -> Planning:
        if "time_zone" in changes:
            validate_time_zone(changes["time_zone"])
        domain = self._domain("domain", changes["domain"]) if changes.get("domain") else None
        if "name" in changes:
            changes["name"] = _required_text("name", changes["name"], 64)
        if changes.get("publication_name") is not None:
            changes["publication_name"] = _required_text("publication_name", changes["publication_name"], 64)

        def body() -> Planning:
            planning = self.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            extra: list[CampusAggregate] = []
            if "name" in changes and changes["name"] != planning.name:
                others = [p for p in self.list_plannings(account_id) if p.id != planning.id]
                if any(p.name.casefold() == changes["name"].casefold() for p in others):
                    raise Conflict(f"another planning is already named {changes['name']!r}")
                planning.rename(name=changes["name"])
            if "publication_name" in changes and changes["publication_name"] != planning.custom_publication_name:
                planning.change_publication_name(publication_name=changes["publication_name"])
            if "net_licence" in changes and changes["net_licence"] != planning.net_licence:
                planning.switch_net_licence(enabled=changes["net_licence"])
                if not changes["net_licence"] and planning.publication_state == "published":
                    planning.stop_publication()  # without the .net licence nothing may stay published
            if "time_zone" in changes and changes["time_zone"] != planning.time_zone:
                planning.change_time_zone(time_zone=changes["time_zone"])
            if domain and domain[1] != planning.domain:
                extra = self._claim_domain(domain[1], account_id, planning.id, planning.domain)
                planning.bind_domain(label=domain[0], domain=domain[1], port=FIRST_PLANNING_PORT + planning.number - 1)
            self.save(planning, *extra)
            return planning

        return self._run(account_id, body)

    def assign_profile(
        self, account_id: UUID, planning_id: UUID, profile: Profile, logins: list[str], if_match: str | None = None
    ) -> Planning:
        def body() -> Planning:
            planning = self.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            assigned = self._resolve_assignable(account_id, profile, logins, "logins")
            profiles = {p: tuple(l for l in ls if l not in assigned) for p, ls in planning.profiles.items()}
            profiles[profile.value] = tuple(assigned)
            if profiles != planning.profiles:
                planning.assign_profiles(profiles=profiles)
                self.save(planning)
            return planning

        return self._run(account_id, body)

    def _resolve_assignable(self, account_id: UUID, profile: Profile, logins: list[str], field: str) -> list[str]:
        """Stored logins for `logins`, checking each exists and may hold `profile`."""

        def may_hold(user: DirectoryUser) -> str | None:
            if profile == Profile.ADMINISTRATION and not user.is_administrative:
                return (f"{user.login!r} has status {user.status.value}: the Administration profile "
                        "is only for superadministrators and base administrators")
            return None

        return [user.login for user in self.users_named(account_id, logins, field, may_hold)]

    def users_named(self, account_id: UUID, logins: list[str], field: str,
                    refuse: Callable[[DirectoryUser], str | None] | None = None) -> list[DirectoryUser]:
        """The users `logins` name, each once, in order. 422 names every unknown login and every
        user `refuse` has a reason to refuse (as `field[index]`), all at once."""
        errors, users = [], []
        for index, login in enumerate(logins):
            try:
                user = self.get_user(account_id, login)
            except NotFound:
                errors.append({"field": f"{field}[{index}]", "message": f"no user with login {login!r}"})
                continue
            reason = refuse(user) if refuse else None
            if reason:
                errors.append({"field": f"{field}[{index}]", "message": reason})
            elif all(u.id != user.id for u in users):
                users.append(user)
        if errors:
            raise Invalid("; ".join(e["message"] for e in errors), errors=errors)
        return users

    def save_assignment_template(self, account_id: UUID, name: str, planning_id: UUID) -> HostingAccount:
        name = _required_text("name", name, 64)

        def body() -> HostingAccount:
            planning = self.get_planning(account_id, planning_id)
            account = self.get_account(account_id)
            account.save_assignment_template(name=name, assignments=dict(planning.profiles), source_planning_id=planning.id)
            self.save(account)
            return account

        return self._run(account_id, body)

    def apply_assignment_template(
        self, account_id: UUID, planning_id: UUID, name: str, if_match: str | None = None
    ) -> Planning:
        def body() -> Planning:
            account = self.get_account(account_id)
            if name not in account.assignment_templates:
                raise NotFound(f"no assignment template named {name!r}")
            planning = self.get_planning(account_id, planning_id)
            self._check_version(planning, if_match)
            template = account.assignment_templates[name]["assignments"]
            profiles = {
                p.value: tuple(self._resolve_assignable(account_id, p, list(template.get(p.value, ())), p.value))
                for p in Profile
            }
            planning.assign_profiles(profiles=profiles, template=name)
            self.save(planning)
            return planning

        return self._run(account_id, body)

    # -- directory users --------------------------------------------------------
    def list_users(self, account_id: UUID) -> list[DirectoryUser]:
        return sorted(self._users(account_id), key=lambda u: u.login)

    def _users(self, account_id: UUID) -> Iterator[DirectoryUser]:
        """The school's users one at a time, oldest first: a check that one is enough stops early."""
        for user_id in self.history.aggregate_ids(str(account_id), "DirectoryUser"):
            yield self._get(DirectoryUser, user_id, account_id, "user")

    def has_superadministrator(self, account_id: UUID, other_than: UUID | None = None) -> bool:
        """Whether a superadministrator (other than `other_than`) exists. The first one is usually
        the school's first user, so this rarely reads more than one user, however big the school."""
        return any(u.status == Status.SUPERADMINISTRATOR and u.id != other_than for u in self._users(account_id))

    def get_user(self, account_id: UUID, login: str) -> DirectoryUser:
        return self._get(DirectoryUser, user_id_for(account_id, login), account_id, f"user {login!r}")

    def create_first_superadministrator(
        self, account_id: UUID, *, first_name: str, last_name: str, login: str, password: str, password_confirmation: str
    ) -> DirectoryUser:
        errors = [{"field": "password", "message": f"the password {m}"} for m in password_problems(password)]
        if password != password_confirmation:
            errors.append({"field": "password_confirmation", "message": "does not match the password"})
        if errors:
            raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)

        def body() -> DirectoryUser:
            account = self.get_account(account_id)
            if account.first_superadministrator is not None:
                raise Conflict("the first superadministrator already exists; add other users with POST /v1/console/users")
            account.record_first_superadministrator(login=login.strip())
            return self._new_user(account_id, login=login, last_name=last_name, first_name=first_name,
                                  status=Status.SUPERADMINISTRATOR, password=password, also_save=(account,))

        return self._run(account_id, body)

    def create_user(self, account_id: UUID, *, login: str, last_name: str, first_name: str,
                    civility: str | None = None, status: Status = Status.USER, email: str | None = None,
                    external_ids: dict | None = None) -> CreatedUser:
        def body() -> CreatedUser:
            password = generate_password(14)
            user = self._new_user(account_id, login=login, last_name=last_name, first_name=first_name,
                                  status=status, password=password, civility=civility, email=email,
                                  external_ids=external_ids)
            return CreatedUser(user, password)

        return self._run(account_id, body)

    def _new_user(self, account_id: UUID, *, login: str, last_name: str, first_name: str, status: Status,
                  password: str, civility: str | None = None, email: str | None = None,
                  external_ids: dict | None = None, also_save: tuple[CampusAggregate, ...] = ()) -> DirectoryUser:
        login = login.strip()
        if not LOGIN.match(login):
            raise Invalid.field("login", "1 to 64 characters among letters, digits and . _ @ -, starting with a letter or digit")
        if user_id_for(account_id, login) in self.repository:
            raise Conflict(f"the login {login!r} is already used in this school")
        user = DirectoryUser(
            account_id=account_id, login=login,
            last_name=_required_text("last_name", last_name, 100),
            first_name=_required_text("first_name", first_name, 100),
            civility=civility, status=status, email=email, password_hash=hash_secret(password),
            external_ids={k: v for k, v in (external_ids or {}).items() if v},
        )
        self.save(user, *also_save)
        return user

    def update_user(self, account_id: UUID, login: str, changes: dict[str, Any], if_match: str | None = None) -> DirectoryUser:
        for field in ("last_name", "first_name"):
            if field in changes:
                changes[field] = _required_text(field, changes[field], 100)

        def body() -> DirectoryUser:
            user = self.get_user(account_id, login)
            self._check_version(user, if_match)
            email = changes.get("email", user.email) if "email" in changes else user.email
            access = changes.get("console_access", user.console_access)
            if access and not email:
                raise Invalid.field("console_access", "console access needs a valid e-mail address; set email first")
            names = (changes.get("last_name", user.last_name), changes.get("first_name", user.first_name),
                     changes.get("civility", user.civility))
            if names != (user.last_name, user.first_name, user.civility):
                user.rename(last_name=names[0], first_name=names[1], civility=names[2])
            status = changes.get("status")
            if status is not None and status != user.status:
                if status == Status.USER:
                    self._check_can_leave_administration(account_id, user)
                if user.status == Status.SUPERADMINISTRATOR:
                    self._check_not_last_superadministrator(account_id, user)
                user.change_status(status=status)
            if "email" in changes and changes["email"] != user.email:
                user.change_email(email=changes["email"])
            if "console_access" in changes and changes["console_access"] != user.console_access:
                user.change_console_access(console_access=changes["console_access"])
            if "external_ids" in changes:
                merged = {**user.external_ids, **changes["external_ids"]}
                merged = {k: v for k, v in merged.items() if v}
                if merged != user.external_ids:
                    user.change_external_ids(external_ids=merged)
            self.save(user)
            return user

        return self._run(account_id, body)

    def reset_user_password(self, account_id: UUID, login: str) -> tuple[DirectoryUser, str]:
        """A new generated password (shown once); the user's open sessions end."""
        def body() -> tuple[DirectoryUser, str]:
            user = self.get_user(account_id, login)
            password, password_hash = self._new_password()
            user.change_password(password_hash=password_hash)
            self.save(user)
            return user, password

        return self._run(account_id, body)

    @staticmethod
    def _new_password() -> tuple[str, str]:
        """A generated password (14 characters, fiche 4's rules) and its argon2id hash; shared by the reset
        and the mailing of connection details (campus/mail.py)."""
        password = generate_password(14)
        return password, hash_secret(password)

    def _check_not_last_superadministrator(self, account_id: UUID, user: DirectoryUser) -> None:
        if self.get_controller(account_id).state != "active":
            return
        if not self.has_superadministrator(account_id, other_than=user.id):
            raise Conflict(
                f"{user.login!r} is the only superadministrator and the controller is active; "
                "make someone else superadministrator first", code="last_superadministrator")

    def _check_can_leave_administration(self, account_id: UUID, user: DirectoryUser) -> None:
        held = [p.name for p in self.list_plannings(account_id) if user.login in p.profiles[Profile.ADMINISTRATION.value]]
        if held:
            raise Conflict(
                f"{user.login!r} holds the Administration profile on {', '.join(held)}; "
                "remove it from that profile before giving the status user"
            )

    # -- history ----------------------------------------------------------------
    def read_history(self, query: HistoryQuery) -> tuple[list[dict], int | None]:
        return self.history.query(query)


class CommandRepository(Repository):
    """The library's repository, which inside a command gives back the aggregates the command has
    already saved (their events wait for the command's one append), not their stored versions."""

    def get(self, aggregate_id: Any, *, version: int | None = None, **kwargs: Any) -> Any:
        scope = current_scope()
        if version is None and scope is not None and aggregate_id in scope.saved:
            return scope.saved[aggregate_id]
        return super().get(aggregate_id, version=version, **kwargs)


def check_if_match(current: str, if_match: str | None) -> None:
    """Refuse (412) a change whose If-Match does not name the current ETag."""
    if if_match is None:
        return
    candidates = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" not in candidates and current not in candidates:
        raise PreconditionFailed(
            f"If-Match {if_match} does not match the current version {current}; read it again and retry"
        )


def validate_time_zone(name: Any) -> None:
    if not isinstance(name, str) or name not in _time_zones():
        raise Invalid.field("time_zone", f"{name!r} is not an IANA time zone name (for example Europe/Paris)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - listed but unreadable
        raise Invalid.field("time_zone", f"{name!r} is not an IANA time zone name") from None


_TZ_CACHE: set[str] = set()


def _time_zones() -> set[str]:
    if not _TZ_CACHE:
        _TZ_CACHE.update(available_timezones())
    return _TZ_CACHE


def _required_text(field: str, value: Any, max_length: int) -> str:
    """A required name: 422 naming `field` if it shows nothing (empty, spaces, zero-width or control
    characters only) or is too long; trimmed of invisible characters at both ends (campus/text.py)."""
    from campus.text import required_text

    return required_text(field, value, max_length)

def _create_schema(env: dict[str, str]) -> None:
    """The library creates its tables but not a named schema: create that first."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=env["POSTGRES_HOST"], port=env.get("POSTGRES_PORT", "5432"), dbname=env["POSTGRES_DBNAME"],
        user=env["POSTGRES_USER"], password=env.get("POSTGRES_PASSWORD") or None, autocommit=True,
    ) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(env["POSTGRES_SCHEMA"])))
