"""Use cases of bases and their records.

Bases are read and changed under the tenant's lock, from a small cache of
replayed bases that is brought up to date from the store before each use
(other processes may have written) and dropped whenever a command fails, so a
half-applied change is never seen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.planning import Planning
from campus.aggregates.school_base import Base
from campus.errors import Conflict, Invalid, NotFound
from campus.rules.grid import make_grid
from campus.rules.records import KINDS, REFERRERS, Kind, kind_of, validate_fields
from campus.rules.text import required_text
from campus.services.base import Core, Service, check_if_match


BASE_CACHE_SIZE = 64
MAX_PAGE = 1000


class BaseCache:
    """Replayed bases, most recently used last; the store stays the source of truth.

    A base handed to a command is remembered by the command path: if the command
    fails, :meth:`forget` drops it, so a change the store refused never stays here.
    """

    def __init__(self, core: Core, size: int = BASE_CACHE_SIZE) -> None:
        self.core = core
        self.size = size
        self._bases: OrderedDict[UUID, Base] = OrderedDict()
        self._synced: dict[UUID, int] = {}  # SQLite: base id -> log position its state is known right at
        self._lock = threading.Lock()

    def get(self, base_id: UUID) -> Base:
        self.core.commands.touch(base_id)
        repository = self.core.repository
        seen = repository.look_at_head()  # SQLite: the log position memory is right up to (else None)
        with self._lock:
            base = self._bases.pop(base_id, None)
            synced = self._synced.get(base_id)
        if base is None:
            base = repository.get(base_id)
        elif seen is None or synced is None or repository.memory.changed_since(base_id, synced):
            # Another process may have written to it: the events after the version we hold.
            for event in self.core.events.get(base_id, gt=base.version):
                event.mutate(base)
        # (SQLite, nothing written by another process since: no query. This process's own changes are
        # made to this very object under the school's guard.)
        self._keep(base, seen)
        return base

    def put(self, base: Base) -> None:
        """Keep a base built in memory by the current command (dropped if that command fails)."""
        self.core.commands.touch(base.id)
        self._keep(base, self.core.repository.look_at_head())

    def _keep(self, base: Base, seen: int | None) -> None:
        with self._lock:
            self._bases[base.id] = base
            if seen is None:
                self._synced.pop(base.id, None)
            else:
                self._synced[base.id] = seen  # up to date with every other process's change up to `seen`
            while len(self._bases) > self.size:
                dropped, _ = self._bases.popitem(last=False)
                self._synced.pop(dropped, None)

    def forget(self, base_ids: set[UUID]) -> None:
        """Drop these bases (a failed command touched them)."""
        with self._lock:
            for base_id in base_ids:
                self._bases.pop(base_id, None)
                self._synced.pop(base_id, None)

    def drop(self, base_id: UUID | None = None) -> None:
        with self._lock:
            if base_id is None:
                self._bases.clear()
                self._synced.clear()
            else:
                self._bases.pop(base_id, None)
                self._synced.pop(base_id, None)


class Bases(Service):
    """Bases and their records: create, mount, put in service, add, change and remove records (Campus fiche 6)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "plannings", "publication", "time_machine", "users")

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.base_cache = BaseCache(core)
        core.commands.on_failure_forget(self.base_cache.forget)

    def warm_up(self, stop: threading.Event | None = None, limit: int = BASE_CACHE_SIZE) -> int:
        """Replay the bases in service before anyone asks, so the first read is fast."""
        warmed = 0
        for planning_id in self.history.all_aggregate_ids("Planning"):
            if stop is not None and stop.is_set():
                break
            planning = self.repository.get(planning_id)
            if planning.in_service and planning.base_id is not None and warmed < limit:
                with self._reading(planning.account_id):  # never beside a command changing it
                    self.base_cache.get(planning.base_id)
                warmed += 1
        return warmed

    def get_base(self, account_id: UUID, base_id: UUID) -> Base:
        try:
            base = self.base_cache.get(base_id)
        except AggregateNotFoundError:
            raise NotFound("base not found") from None
        if not isinstance(base, Base) or base.account_id != account_id:
            raise NotFound("base not found")
        return base

    def current_base(self, account_id: UUID, planning_id: UUID) -> tuple[Planning, Base]:
        planning = self.plannings.get_planning(account_id, planning_id)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet: create or load one")
        with self._reading(account_id):
            return planning, self.get_base(account_id, planning.base_id)

    def list_bases(self, account_id: UUID, planning_id: UUID) -> tuple[Planning, list[Base]]:
        planning = self.plannings.get_planning(account_id, planning_id)
        with self._reading(account_id):
            return planning, [self.get_base(account_id, b) for b in planning.base_ids]

    def list_records(self, account_id: UUID, planning_id: UUID, kind_name: str,
                     after: UUID | None = None, limit: int = 100,
                     as_of: datetime | None = None) -> tuple[list[tuple[UUID, dict]], UUID | None]:
        kind = kind_of(kind_name)
        if as_of is not None:
            past = self.time_machine.base_as_of(account_id, planning_id, as_of)
            try:
                return self.timeline.records_page(past.base, kind.name, after, min(limit, MAX_PAGE))
            except LookupError:
                raise Invalid.field("after", f"no {kind.name} record with id {after} at that instant") from None
        else:
            planning, base = self.current_base(account_id, planning_id)
            with self._reading(account_id):
                items = list(base.records[kind.name].items())
        start = 0
        if after is not None:
            ids = [record_id for record_id, _ in items]
            if after not in ids:
                raise Invalid.field("after", f"no {kind.name} record with id {after}")
            start = ids.index(after) + 1
        page = items[start:start + min(limit, MAX_PAGE)]
        more = start + len(page) < len(items)
        return page, (page[-1][0] if more and page else None)

    def get_record(self, account_id: UUID, planning_id: UUID, kind_name: str,
                   record_id: UUID) -> tuple[str, dict]:
        """The record's fields (a copy) and its ETag."""
        kind = kind_of(kind_name)
        _, base = self.current_base(account_id, planning_id)
        with self._reading(account_id):
            fields = base.find(kind.name, record_id)
            if fields is None:
                raise NotFound(f"no {kind.name} {record_id} in this base")
            return record_etag(base, record_id), dict(fields)

    def create_base(self, account_id: UUID, planning_id: UUID, *, name: str,
                    first_monday: date, last_sunday: date, working_days: list[str], sequences_per_day: int,
                    sequence_minutes: int, split: int) -> tuple[Planning, Base]:
        name = required_text("name", name, 100)
        grid = make_grid(first_monday, last_sunday, working_days, sequences_per_day, sequence_minutes, split)

        def body() -> tuple[Planning, Base]:
            planning = self.plannings.get_planning(account_id, planning_id)
            self.require_stopped(planning, "create a base")
            base = Base(account_id=account_id, planning_id=planning.id, name=name, grid=grid, origin="created")
            planning.mount_base(base_id=base.id)
            if self.accounts.get_account(account_id).edition == "campus":
                # Campus fiche 6: "La base est automatiquement mise en service."
                self._require_superadministrator(account_id)
                planning.start_server()
                self.publication.publish_with_server(planning)  # hosting fiche 8: publication follows, same instant
            self.save(base, planning)
            self.base_cache.put(base)
            return planning, base

        return self._run(account_id, body)

    @staticmethod
    def require_stopped(planning: Planning, action: str) -> None:
        if planning.in_service:
            raise Conflict(
                f"the server of {planning.name!r} is in service: stop it (PUT …/server "
                f'{{"state": "stopped"}}) to {action}', code="server_in_service")

    def _require_superadministrator(self, account_id: UUID) -> None:
        if not self.users.has_superadministrator(account_id):
            raise Conflict("putting a base in service needs a superadministrator (POST /v1/console/superadministrator)",
                           code="superadministrator_required")

    def set_server_state(self, account_id: UUID, planning_id: UUID, state: str) -> Planning:
        def body() -> Planning:
            planning = self.plannings.get_planning(account_id, planning_id)
            if state == "in_service" and not planning.in_service:
                if planning.base_id is None:
                    raise Conflict(f"planning {planning.name!r} has no base: create or load one first",
                                   code="base_required")
                self._require_superadministrator(account_id)
                planning.start_server()
                self.publication.publish_with_server(planning)  # hosting fiche 8: publication follows, same instant
                self.save(planning)
            elif state == "stopped" and planning.in_service:
                planning.stop_server()
                self.save(planning)
            return planning

        return self._run(account_id, body)

    def mount_base(self, account_id: UUID, planning_id: UUID, base_id: UUID) -> Planning:
        def body() -> Planning:
            planning = self.plannings.get_planning(account_id, planning_id)
            if base_id not in planning.base_ids:
                raise NotFound(f"base {base_id} is not one of the bases of {planning.name!r}")
            if planning.base_id != base_id:
                self.require_stopped(planning, "change the base")
                planning.mount_base(base_id=base_id)
                self.save(planning)
            return planning

        return self._run(account_id, body)

    def add_record(self, account_id: UUID, planning_id: UUID, kind_name: str,
                   data: Any) -> tuple[Base, UUID, dict]:
        kind = kind_of(kind_name)
        fields = validate_fields(kind, data)

        def body() -> tuple[Base, UUID, dict]:
            _, base = self.writable_base(account_id, planning_id)
            _check_references(base, kind, fields)
            record_id = uuid4()
            base.add_record(kind=kind.name, record_id=record_id, fields=fields, at=self.now())
            self.save(base)
            return base, record_id, base.records[kind.name][record_id]

        return self._run(account_id, body)

    def change_record(self, account_id: UUID, planning_id: UUID, kind_name: str,
                      record_id: UUID, changes: Any, if_match: str | None = None) -> tuple[Base, dict]:
        kind = kind_of(kind_name)
        if not isinstance(changes, dict):
            raise Invalid("the body must be a JSON object", errors=[{"field": "body", "message": "must be a JSON object"}])

        def body() -> tuple[Base, dict]:
            _, base = self.writable_base(account_id, planning_id)
            current = base.find(kind.name, record_id)
            if current is None:
                raise NotFound(f"no {kind.name} record with id {record_id}")
            self._check_record_version(base, record_id, if_match)
            merged = {**_as_input(current), **changes}
            fields = validate_fields(kind, {k: v for k, v in merged.items() if v is not None})
            _check_references(base, kind, fields)
            delta = {k: v for k, v in fields.items() if current.get(k) != v}
            delta.update({k: None for k in current if k not in fields})
            if delta:
                base.change_record(kind=kind.name, record_id=record_id, changes=delta, at=self.now())
                self.save(base)
            return base, base.records[kind.name][record_id]

        return self._run(account_id, body)

    def remove_record(self, account_id: UUID, planning_id: UUID, kind_name: str,
                      record_id: UUID, if_match: str | None = None) -> None:
        kind = kind_of(kind_name)

        def body() -> None:
            _, base = self.writable_base(account_id, planning_id)
            if base.find(kind.name, record_id) is None:
                raise NotFound(f"no {kind.name} record with id {record_id}")
            self._check_record_version(base, record_id, if_match)
            users = _referrers(base, kind.name, record_id)
            if users:
                listed = ", ".join(f"{n} {k}" for k, n in users.items())
                raise Conflict(f"this {kind.singular} is still referred to by {listed}; remove those first",
                               code="record_in_use")
            base.remove_record(kind=kind.name, record_id=record_id, at=self.now())
            self.save(base)

        self._run(account_id, body)

    def writable_base(self, account_id: UUID, planning_id: UUID) -> tuple[Planning, Base]:
        """The planning's base, to change in a command (the planning is only read: it is not copied)."""
        planning = self.plannings.get_planning(account_id, planning_id, read_only=True)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet: create or load one")
        return planning, self.get_base(account_id, planning.base_id)

    @staticmethod
    def _check_record_version(base: Base, record_id: UUID, if_match: str | None) -> None:
        check_if_match(record_etag(base, record_id), if_match)


def record_etag(base: Base, record_id: UUID) -> str:
    return f'"{base.revisions.get(record_id, 0)}"'


def _as_input(fields: dict) -> dict:
    return dict(fields)


def _check_references(base: Base, kind: Kind, fields: dict) -> None:
    errors = []
    for field, target in kind.references.items():
        value = fields.get(field)
        if value is not None and value not in base.records[target]:
            errors.append({"field": field, "message": f"no {KINDS[target].singular} with id {value} in this base"})
    if errors:
        raise Invalid("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)


def _referrers(base: Base, kind_name: str, record_id: UUID) -> dict[str, int]:
    found: dict[str, int] = {}
    for referrer, field in REFERRERS.get(kind_name, []):
        n = sum(1 for fields in base.records[referrer].values() if fields.get(field) == record_id)
        if n:
            found[referrer] = n
    return found
