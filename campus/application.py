"""The composition root: the one eventsourcing Application, and the services built around it.

:class:`CampusApplication` opens the store (SQLite file or PostgreSQL schema),
makes the command path, the views and the locks, then builds one service per
topic (:mod:`campus.services`) and gives each the others it calls, by name. The
HTTP layer and the command line reach the use cases through these attributes
(``app.bases.add_record(...)``, ``app.backups.take_backup(...)``).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.application import Application, Repository
from eventsourcing.persistence import Transcoder
from eventsourcing.utils import Environment, register_topic

from campus.aggregates.school_base import Base, snapshot_topic
from campus.commands import CommandPath
from campus.infra.clock import Clock, SystemClock
from campus.infra.locks import StoreLocks
from campus.infra.settings import Settings
from campus.infra.transcoder import MsgpackTranscoder
from campus.projections.history import HistoryView
from campus.repository import CommandRepository
from campus.projections.timeline import TimelineView
from campus.rules.records import Level
from campus.rules.urls import UrlRule
from campus.services.account_page import AccountPage
from campus.services.accounts import Accounts
from campus.services.backup_schedule import BackupSchedule
from campus.services.backups import Backups
from campus.services.base import Core, Service
from campus.services.base_snapshots import BaseSnapshots
from campus.services.bases import Bases
from campus.services.console_sessions import ConsoleSessions
from campus.services.controllers import Controllers
from campus.services.exchange import Exchange
from campus.services.login_guard import LoginGuard
from campus.services.mail import Mail
from campus.services.outbox import MailKeys, Outbox
from campus.services.plannings import Plannings
from campus.services.publication import Publication
from campus.services.school_year import SchoolYear
from campus.services.time_machine import TimeMachine
from campus.services.user_sessions import Access, ClientApplication, Mode, UserSessions
from campus.services.users import Users

# Enums are stored by class topic (campus/infra/transcoder.py): the ones whose module moved since they
# were first stored are registered under their old topics too, so stored events keep decoding.
MOVED_ENUMS = {
    "campus.records:Level": Level,  # campus/rules/records.py since issue 10
    "campus.urls:UrlRule": UrlRule,  # campus/rules/urls.py since issue 10
    "campus.user_sessions:Mode": Mode,  # campus/services/user_sessions.py since issue 10
    "campus.user_sessions:Access": Access,
    "campus.user_sessions:ClientApplication": ClientApplication,
}
for _topic, _enum in MOVED_ENUMS.items():
    register_topic(_topic, _enum)

# The services, by the name each is reached by (on the application, and from the services that call it).
SERVICES: dict[str, type[Service]] = {
    "accounts": Accounts, "console_sessions": ConsoleSessions, "controllers": Controllers,
    "plannings": Plannings, "users": Users, "bases": Bases, "user_sessions": UserSessions,
    "login_guard": LoginGuard, "exchange": Exchange, "time_machine": TimeMachine, "backups": Backups,
    "backup_schedule": BackupSchedule, "base_snapshots": BaseSnapshots,
    "school_year": SchoolYear, "publication": Publication, "mail": Mail, "outbox": Outbox, "account_page": AccountPage,
}


class CampusApplication(Application):
    name = "campus"
    # Library snapshots of bases only, taken in the background by one server (services/base_snapshots.py),
    # never inside a command: taken there they held a big school's lock for 1-2 s at each 5,000th event.
    # Replay starts from one of the current layout (campus/repository.py); see docs/DECISIONS.md.

    accounts: Accounts
    console_sessions: ConsoleSessions
    controllers: Controllers
    plannings: Plannings
    users: Users
    bases: Bases
    user_sessions: UserSessions
    login_guard: LoginGuard
    exchange: Exchange
    time_machine: TimeMachine
    backups: Backups
    base_snapshots: BaseSnapshots
    school_year: SchoolYear
    publication: Publication
    mail: Mail
    outbox: Outbox
    account_page: AccountPage

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        env = settings.persistence_env()
        env["IS_SNAPSHOTTING_ENABLED"] = "y"  # the library's snapshot table (bases' snapshots: base_snapshots)
        if not settings.uses_postgres:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.locks = StoreLocks(env, settings.data_dir)
        # Servers started together on an empty store: one at a time creates the schema and tables.
        with self.locks.exclusive("create-tables"):
            if settings.uses_postgres and env.get("POSTGRES_SCHEMA"):
                _create_schema(env)
            super().__init__(env=env)
            self.commands = CommandPath(clock=self.clock, recorder=self.recorder, mapper=self.mapper, locks=self.locks)
            self.commands.on_commit(self.repository.committed)
            self.commands.on_failure_forget(self.repository.memory.forget)
            self.commands.shared = self.repository.is_shared
            if not settings.uses_postgres:  # positions commit in order: one look at the head per request
                self.repository.head = self.commands.log_after
                self.repository.memory.seen = self.recorder.max_notification_id() or 0  # memory is empty
            self.history = HistoryView(self)
            self.timeline = TimelineView(self)
            MailKeys.create_table(self)
            self.core = Core(settings=settings, clock=self.clock, commands=self.commands,
                             repository=self.repository, events=self.events, mapper=self.mapper,
                             recorder=self.recorder, history=self.history, timeline=self.timeline, locks=self.locks)
            for name, cls in SERVICES.items():
                setattr(self, name, cls(self.core))
        for name in SERVICES:
            service: Service = getattr(self, name)
            service.wire(**{other: getattr(self, other) for other in collaborators(type(service))})

    # -- infrastructure hooks ------------------------------------------------
    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Settings were read once at the composition root: ignore os.environ here.
        return Environment(name, dict(env or {}))

    def construct_transcoder(self) -> Transcoder:
        return MsgpackTranscoder()

    def construct_repository(self) -> Repository:
        # Bases are kept by the bases service (BaseCache), changed in place under the school's guard; their
        # replay starts from a snapshot of the current layout (the only ones used).
        return CommandRepository(event_store=self.events, snapshot_store=self.snapshots, uncached=(Base,),
                                 snapshot_topics=(snapshot_topic(),))

    def close(self) -> None:
        self.commands.close()
        super().close()

    def save(self, *objs: Any, **kwargs: Any) -> list:
        """Every save goes through the command path (campus/commands.py), never the library's own."""
        return self.commands.save(*objs)

    def now(self) -> Any:
        """The running command's instant, or the clock's outside a command."""
        return self.commands.now()


def collaborators(cls: type[Service]) -> list[str]:
    """The services a service class says it calls (its ``uses``)."""
    unknown = [name for name in cls.uses if name not in SERVICES]
    if unknown:
        raise TypeError(f"{cls.__name__} uses unknown services {unknown}")
    return list(cls.uses)


def _create_schema(env: dict[str, str]) -> None:
    """The library creates its tables but not a named schema: create that first."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=env["POSTGRES_HOST"], port=env.get("POSTGRES_PORT", "5432"), dbname=env["POSTGRES_DBNAME"],
        user=env["POSTGRES_USER"], password=env.get("POSTGRES_PASSWORD") or None, autocommit=True,
    ) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(env["POSTGRES_SCHEMA"])))
