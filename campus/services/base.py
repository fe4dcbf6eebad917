"""What every service is built with, and the few things every use case does the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.core import CampusAggregate
from campus.commands import CommandPath
from campus.errors import NotFound, PreconditionFailed
from campus.infra.clock import Clock, FrozenClock, current_clock, reset_clock, use_clock
from campus.infra.locks import StoreLocks
from campus.infra.settings import Settings
from campus.projections.history import HistoryView
from campus.projections.timeline import TimelineView

A = TypeVar("A", bound=CampusAggregate)
T = TypeVar("T")


@dataclass(frozen=True)
class Core:
    """The infrastructure a use case works with, made once by the composition root."""

    settings: Settings
    clock: Clock
    commands: CommandPath  # the one write path
    repository: Any  # aggregates read from the store (campus.repository.CommandRepository)
    events: Any  # the library's event store (a base's events after a version)
    mapper: Any  # stored event <-> domain event
    recorder: Any  # the library's recorder (its datastore holds our own tables)
    history: HistoryView
    timeline: TimelineView
    locks: StoreLocks


class Service:
    """A use-case service. Subclasses name the services they call in :attr:`uses`; the composition root
    gives them (:meth:`wire`): ``self.plannings`` is then the service of campus/services/plannings.py."""

    uses: tuple[str, ...] = ()

    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings
        self.clock = core.clock
        self.commands = core.commands
        self.repository = core.repository
        self.events = core.events
        self.history = core.history
        self.timeline = core.timeline

    def wire(self, **services: Service) -> None:
        """Give this service the other services it calls, by name."""
        for name, service in services.items():
            setattr(self, name, service)

    # -- what every use case does the same way ----------------------------------------------------
    def _run(self, tenant: Any, body: Callable[[], T]) -> T:
        """Run a command of `tenant`'s school (campus/commands.py: guard, instant, one append, no trace)."""
        return self.commands.run(tenant, body)

    def save(self, *aggregates: Any) -> list:
        return self.commands.save(*aggregates)

    def now(self) -> datetime:
        """The running command's instant, or the clock's outside a command."""
        return self.commands.now()

    @contextmanager
    def _reading(self, tenant: Any) -> Iterator[None]:
        """Read a school's cached aggregates (its bases) while no command of this process changes them,
        with one instant for the whole read."""
        with self.core.locks.school_slot(tenant):
            if isinstance(current_clock(), FrozenClock):  # inside a command: keep its instant
                yield
                return
            token = use_clock(FrozenClock(self.clock.now()))
            try:
                yield
            finally:
                reset_clock(token)

    def _get(self, cls: type[A], aggregate_id: UUID, account_id: UUID, what: str, *, read_only: bool = False) -> A:
        """The aggregate, if it is a `cls` of this school; else 404 (another school's is not found either).
        `read_only`: the caller will not change it (no copy inside a command: campus/repository.py)."""
        try:
            aggregate = self.repository.get(aggregate_id, read_only=read_only)
        except AggregateNotFoundError:
            raise NotFound(f"{what} not found") from None
        if not isinstance(aggregate, cls) or aggregate.account_id != account_id:
            raise NotFound(f"{what} not found")
        return aggregate

    @staticmethod
    def _check_version(aggregate: CampusAggregate, if_match: str | None) -> None:
        check_if_match(aggregate.etag, if_match)


def check_if_match(current: str, if_match: str | None) -> None:
    """Refuse (412) a change whose If-Match does not name the current ETag."""
    if if_match is None:
        return
    candidates = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" not in candidates and current not in candidates:
        raise PreconditionFailed(
            f"If-Match {if_match} does not match the current version {current}; read it again and retry"
        )
