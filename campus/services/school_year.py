"""The school-year change (hosting guide fiches 2, 6 and 12).

Every summer, for each planning that has a base, in the planning's time zone:

* **1 July, 00:00** — an archive of the year: the base the planning had at that
  instant, as it was then (hosting guide fiche 6: "une archive de l'année passée
  a été automatiquement générée début juillet");
* **15 August, 00:00** — a new empty base for the coming school year, its grid
  the current base's moved one year on (fiche 2), unless the account opted out
  (fiche 12: defer with "the base in service") or a base of that year exists.
  It joins the planning's bases but does not become current: the year in
  progress goes on;
* **31 August, 00:00** — the version change, following the account's choice
  (fiche 12): at release, deferred to a date, or the pre-release from a date
  then the release on 31 August. If the base in service is still of the ending
  year, the server is stopped and the coming year's base is mounted (the one
  prepared, else a new empty one); a base already of the coming year is kept.

Each operation is an event on the planning's :class:`YearChange` for that year
(a uuid5 of planning and year), recorded once: :meth:`run_due_year_operations`
(called every minute by a scheduler thread) can run twice or days late, each
happens once, and a late archive still holds the state at its instant. Nothing
is ever deleted or overwritten: an old base stays among the planning's bases,
and a risky step (a request to prepare the year, a base replaced) is preceded
by an automatic save. See docs/SCHOOL_YEAR.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from eventsourcing.application import AggregateNotFoundError

from campus.aggregates.account import HostingAccount
from campus.aggregates.backup import Backup
from campus.aggregates.planning import Planning
from campus.aggregates.school_base import Base
from campus.aggregates.school_year import YearChange, year_change_id
from campus.errors import Conflict, Invalid, NotFound
from campus.infra.context import context_changed
from campus.rules.school_calendar import (
    LATE_LIMIT,
    ORDER,
    YearOperation,
    is_done,
    move_grid,
    parse_school_year,
    school_year,
    year_of_grid,
    year_operations,
)
from campus.services.backups import EVERY, boundaries
from campus.services.base import Service


log = structlog.get_logger("campus.school_year")

SCHEDULER_SECONDS = 60


@dataclass(frozen=True)
class PreparedYear:
    year: str
    planning: Planning
    save: Backup
    archive: Backup
    base: Base


class SchoolYear(Service):
    """The school-year change and its scheduled operations (hosting guide fiches 2, 12)."""

    # The services it calls, by name (self.<name> is campus/services/<name>.py's), set by the composition root.
    uses = ("accounts", "backups", "bases", "outbox", "plannings")

    def _year_state(self) -> tuple[threading.Lock, dict[UUID, dict], set]:
        """(the scheduler's lock, the grid and name of each base from its first event, operations
        settled: done or not applicable). Caches only: the store stays the truth."""
        state = self.__dict__.get("_school_year")
        if state is None:
            state = self.__dict__.setdefault("_school_year", (threading.Lock(), {}, set()))
        return state

    def _base_facts(self, base_id: UUID) -> dict[str, Any]:
        """The base's name and grid as created: a base's grid never changes (a restore brings back
        its own earlier state), so reading the first event spares replaying a big base."""
        facts = self._year_state()[1]
        if base_id not in facts:
            created = next(iter(self.events.get(base_id, lte=1)))
            facts[base_id] = {"name": created.name, "grid": dict(created.grid)}
        return facts[base_id]

    def _base_year(self, base_id: UUID) -> int:
        return year_of_grid(self._base_facts(base_id)["grid"])

    def _base_name(self, account_id: UUID, base_id: UUID) -> str:
        with self._reading(account_id):
            return self.bases.get_base(account_id, base_id).name

    def _base_of_year(self, planning: Planning, cycle: int) -> UUID | None:
        """The newest of the planning's bases that is for the school year `cycle`, if any."""
        found = [b for b in planning.base_ids if self._base_year(b) == cycle]
        return found[-1] if found else None

    def _year_change(self, planning_id: UUID, year: str) -> YearChange | None:
        try:
            change = self.repository.get(year_change_id(planning_id, year))
        except AggregateNotFoundError:
            return None
        return change if isinstance(change, YearChange) else None

    def _year_change_for(self, planning: Planning, year: str) -> YearChange:
        return self._year_change(planning.id, year) or YearChange(
            account_id=planning.account_id, planning_id=planning.id, year=year)

    def _new_year_base(self, planning: Planning, source_id: UUID, cycle: int) -> Base:
        """A new empty base for the school year `cycle` with the grid of `source_id` moved to it."""
        grid = self._base_facts(source_id)["grid"]
        moved = move_grid(grid, cycle - year_of_grid(grid))
        return Base(account_id=planning.account_id, planning_id=planning.id, name=f"Base {school_year(cycle)}",
                    grid=moved, origin="year_change")

    def release_version(self, cycle: int) -> str:
        """The version installed in the summer `cycle` (CAMPUS_RELEASE_VERSION, else "2027" for 2027)."""
        return self.settings.release_version or str(cycle)

    def year_changes(self, account_id: UUID, planning_id: UUID) -> list[YearChange]:
        """The planning's school-year changes, oldest year first."""
        self.plannings.get_planning(account_id, planning_id)
        changes = [self.repository.get(i) for i in self.history.aggregate_ids(str(account_id), "YearChange")]
        return sorted((c for c in changes if c.planning_id == planning_id), key=lambda c: c.year)

    def upcoming_operations(self, account_id: UUID) -> list[dict[str, Any]]:
        """What the clock will do next for each planning: the next save and archive (plannings in
        service) and the next occurrence of each school-year operation (plannings with a base),
        soonest first. An operation already due but not yet run is listed with its past instant."""
        account = self.accounts.get_account(account_id)
        now = self.now()
        upcoming: list[dict[str, Any]] = []
        for planning in self.plannings.list_plannings(account_id):
            if planning.base_id is None:
                continue
            name = self._base_name(account_id, planning.base_id)
            if planning.in_service:
                for kind, every in EVERY.items():
                    upcoming.append({
                        "at": boundaries(kind, now, now + every)[0], "kind": kind,
                        "planning_id": str(planning.id), "planning": planning.name, "base_id": str(planning.base_id),
                        "description": (f"a save of the base {name!r} (every 2 hours)" if kind == "save" else
                                        f"an archive of the base {name!r} (every day at 00:00 UTC)")})
            upcoming += self._upcoming_year_operations(account, planning, now)
        return sorted(upcoming, key=lambda op: (op["at"], op["planning"], ORDER.get(op["kind"], -1)))

    def _upcoming_year_operations(self, account: HostingAccount, planning: Planning,
                                     now: datetime) -> list[dict[str, Any]]:
        this_year = now.astimezone(ZoneInfo(planning.time_zone)).year
        first: dict[str, YearOperation] = {}
        for cycle in (this_year - 1, this_year, this_year + 1):
            change = self._year_change(planning.id, school_year(cycle))
            for op in year_operations(cycle, planning.time_zone, account.version_change):
                if op.kind in first or is_done(op, change):
                    continue
                if op.at <= now and (now - op.at > LATE_LIMIT or self._base_at(planning, op.at) is None):
                    continue  # missed, or the planning had no base then: it will never run
                first[op.kind] = op
        return [self._describe(planning, op) for op in first.values()]

    def _describe(self, planning: Planning, op: YearOperation) -> dict[str, Any]:
        """An operation as the upcoming list shows it, with what it would do in today's state."""
        version = self.release_version(op.cycle)
        current = self._base_name(planning.account_id, planning.base_id)
        if op.kind == "year_archive":
            effect, text = "archive", (f"an archive of the base {current!r} for school year "
                                       f"{school_year(self._base_year(planning.base_id))}, as it is at that instant")
        elif op.kind == "next_base":
            effect, text = self._next_base_plan(planning, op)
        else:
            replace_it = self._replaces_base(planning, op)
            what = "the pre-release of version" if op.kind == "pre_release" else "version"
            effect = "replace_base" if replace_it else "keep_base"
            text = f"install {what} {version}; " + (
                f"the base in service, {current!r}, is replaced by the base for {op.year} (the server is "
                "stopped first; the previous base stays among the planning's bases)" if replace_it
                else f"the base in service, {current!r}, is kept")
        item = {"at": op.at, "kind": op.kind, "planning_id": str(planning.id), "planning": planning.name,
                "school_year": op.year, "effect": effect, "description": text}
        if op.kind in ("pre_release", "version_change"):
            item.update(version=version, choice=op.choice["choice"])
        return item

    def _next_base_plan(self, planning: Planning, op: YearOperation) -> tuple[str, str]:
        reason = self._no_next_base_reason(planning, op)
        if reason:
            return "nothing", f"no new base: {reason}"
        grid = move_grid(self._base_facts(planning.base_id)["grid"], op.cycle - self._base_year(planning.base_id))
        return "create_base", (f"a new empty base 'Base {op.year}' with the current grid moved to "
                               f"{grid['first_monday'].isoformat()} – {grid['last_sunday'].isoformat()}; "
                               "it does not go into service")

    def _no_next_base_reason(self, planning: Planning, op: YearOperation) -> str | None:
        if op.choice["choice"] == "defer" and op.choice["base"] == "current":
            return "the account chose to keep the base in service at the version change (defer, current)"
        if self._base_year(planning.base_id) >= op.cycle:
            return f"the base in service is already for {op.year}"
        existing = self._base_of_year(planning, op.cycle)
        if existing is not None:
            return f"the planning already has a base for {op.year} ({self._base_facts(existing)['name']!r})"
        return None

    def _replaces_base(self, planning: Planning, op: YearOperation) -> bool:
        """At a (pre-)version change: is the base in service still of an earlier school year?"""
        if op.choice["choice"] == "defer" and op.choice["base"] == "current":
            return False
        return self._base_year(planning.base_id) < op.cycle

    def _base_at(self, planning: Planning, instant: datetime) -> UUID | None:
        """The base the planning had at `instant` (None if none, or if it did not exist yet)."""
        found = self.history.version_at(planning.id, instant)
        if found is None:
            return None
        if found[0] == planning.version:
            return planning.base_id
        return self.repository.get(planning.id, version=found[0]).base_id

    def prepare_next_year(self, account_id: UUID, planning_id: UUID, *, confirm: bool,
                          year: str | None = None) -> PreparedYear:
        """Hosting guide "Préparer l'année suivante": a save, an archive of the year, and a new empty
        base for the next school year with the grid moved to it, which does not become current."""
        if not confirm:
            raise Invalid.field("confirm", "preparing the next year takes a save and an archive and adds a base: "
                                           "send \"confirm\": true")
        planning = self.plannings.get_planning(account_id, planning_id)
        if planning.base_id is None:
            raise NotFound(f"planning {planning.name!r} has no base yet: create or load one")
        source_id = planning.base_id
        current_year = self._base_year(source_id)
        cycle = parse_school_year(year) if year is not None else current_year + 1
        this_year = self.now().astimezone(ZoneInfo(planning.time_zone)).year
        if cycle <= current_year:
            raise Invalid.field("year", f"the base in service is already for {school_year(current_year)}: "
                                        f"prepare {school_year(current_year + 1)} or later")
        if cycle > this_year + 1:
            raise Invalid.field("year", f"{school_year(cycle)} is too far ahead: at most {school_year(this_year + 1)}")
        self._refuse_prepared(planning, cycle)
        save = self.backups.take_backup(account_id, planning_id, before="year change")
        archive = self._archive_now(account_id, planning_id, source_id)

        def body() -> PreparedYear:
            current = self.plannings.get_planning(account_id, planning_id)
            self._refuse_prepared(current, cycle)
            change = self._year_change_for(current, school_year(cycle))
            base = self._new_year_base(current, source_id, cycle)
            current.add_base(base_id=base.id)
            change.record_archive(backup_id=archive.id, base_id=source_id, taken_at=archive.taken_at,
                                  scheduled=False)
            change.record_next_base(base_id=base.id, source_base_id=source_id, scheduled=False)
            self.save(base, current, change)
            self.bases.base_cache.put(base)
            return PreparedYear(school_year(cycle), current, save, archive, base)

        return self._run(account_id, body)

    def _refuse_prepared(self, planning: Planning, cycle: int) -> None:
        existing = self._base_of_year(planning, cycle)
        if existing is not None:
            raise Conflict(f"{school_year(cycle)} is already prepared on {planning.name!r}: base "
                           f"{self._base_facts(existing)['name']!r} ({existing}) is for that year; mount it with "
                           "PUT …/base", code="year_already_prepared")

    def _archive_now(self, account_id: UUID, planning_id: UUID, base_id: UUID) -> Backup:
        from campus.services.exchange import snapshot_of

        with self._reading(account_id):
            taken_at = self.now()
            snapshot = snapshot_of(self.bases.get_base(account_id, base_id), taken_at)
            found = self.history.version_at(base_id, taken_at)
        name = (f"{snapshot.name} — archive of the school year {school_year(self._base_year(base_id))} "
                f"({taken_at:%Y-%m-%d %H:%M} UTC)")
        return self.backups.record_backup(account_id, planning_id, snapshot, kind="archive", name=name, taken_at=taken_at,
                                   position=found[1] if found else 0, scheduled=False, kept=True)

    def _notify(self, planning_id: UUID, ran: list[dict[str, Any]]) -> None:
        """Tell the manager what the school-year schedule just did (if the account page asks for it)."""
        if not ran:
            return
        planning = self.repository.get(planning_id)
        lines = [f"- {op['kind'].replace('_', ' ')} ({op['school_year']}) at {op['at'].isoformat()}" for op in ran]
        self.outbox.notify_manager(planning.account_id, "year_operations", f"school-year operations on {planning.name}",
                            "The school-year schedule ran on planning " + repr(planning.name) + ":\n"
                            + "\n".join(lines) + "\nNothing was deleted: previous bases and archives are kept.")

    def run_due_year_operations(self) -> list[dict[str, Any]]:
        """Run every school-year operation due and not yet recorded, for every planning with a base.

        Safe at any pace: each operation is recorded once on the planning's YearChange; an
        operation whose instant passed while the planning had no base never runs, nor one more
        than LATE_LIMIT late (logged as missed). Returns what was recorded
        ({"planning_id", "kind", "school_year", "at"}).
        """
        lock, _, settled = self._year_state()
        done: list[dict[str, Any]] = []
        with lock:
            with context_changed(actor="scheduler"):
                now = self.clock.now()
                for planning_id in self.history.all_aggregate_ids("Planning"):
                    try:
                        ran = self._run_due_for_planning(planning_id, now, settled)
                        done += ran
                        self._notify(planning_id, ran)
                    except Exception:
                        log.warning("school_year_operation_failed", planning_id=str(planning_id), exc_info=True)
        return done

    def _run_due_for_planning(self, planning_id: UUID, now: datetime,
                                 settled: set) -> list[dict[str, Any]]:
        planning = self.repository.get(planning_id)
        if not isinstance(planning, Planning) or planning.base_id is None:
            return []
        account: HostingAccount = self.repository.get(planning.account_id)
        this_year = now.astimezone(ZoneInfo(planning.time_zone)).year
        done = []
        for cycle in (this_year - 1, this_year):
            for op in year_operations(cycle, planning.time_zone, account.version_change):
                key = (planning.id, op.kind, op.cycle, op.at)
                if op.at > now or key in settled:
                    continue
                if is_done(op, self._year_change(planning.id, op.year)):
                    settled.add(key)
                    continue
                then = self._base_at(planning, op.at)
                if then is None:  # the planning had no base then: nothing of that summer concerns it
                    settled.add(key)
                    continue
                if now - op.at > LATE_LIMIT:
                    log.warning("school_year_operation_missed", planning_id=str(planning.id), kind=op.kind,
                                school_year=op.year, due_at=op.at.isoformat())
                    settled.add(key)
                    continue
                if self._run_year_operation(planning, op, then):
                    done.append({"planning_id": planning.id, "kind": op.kind, "school_year": op.year, "at": op.at})
                settled.add(key)
                planning = self.repository.get(planning_id)
        return done

    def _run_year_operation(self, planning: Planning, op: YearOperation,
                               base_then: UUID) -> bool:
        if op.kind == "year_archive":
            return self._scheduled_archive(planning, op, base_then)
        if op.kind == "next_base":
            return self._scheduled_next_base(planning, op)
        return self._scheduled_version_change(planning, op)

    def _scheduled_archive(self, planning: Planning, op: YearOperation, base_id: UUID) -> bool:
        """The July archive: the base the planning had at the instant, in its state at that instant."""
        from campus.services.exchange import snapshot_of

        found = self.history.version_at(base_id, op.at)
        if found is None:
            return False
        if is_done(op, self._year_change(planning.id, op.year)):
            return False  # recorded by another server since this round looked
        past = self.repository.get(base_id, version=found[0])
        local_day = op.at.astimezone(ZoneInfo(planning.time_zone)).date()
        name = (f"{past.name} — archive of the school year {school_year(year_of_grid(past.grid))} "
                f"({local_day.isoformat()})")
        archive = self.backups.record_backup(planning.account_id, planning.id, snapshot_of(past, op.at), kind="archive",
                                      name=name, taken_at=op.at, position=found[1], scheduled=False, kept=True)

        def body() -> bool:
            change = self._year_change_for(self.plannings.get_planning(planning.account_id, planning.id), op.year)
            if is_done(op, change):
                # Another server recorded it meanwhile (two rounds at once: a lease lost mid-round):
                # this archive is a spare copy, discarded at once so the planning lists one.
                spare: Backup = self.repository.get(archive.id)
                if not spare.discarded:
                    spare.discard(reason="a spare copy: the year's archive was recorded by another server")
                    self.save(spare)
                return False
            change.record_archive(backup_id=archive.id, base_id=base_id, taken_at=op.at, scheduled=True)
            self.save(change)
            return True

        recorded = self._run(planning.account_id, body)
        if not recorded:
            self.backups.backup_path(archive).unlink(missing_ok=True)
            self.backups.backup_cache().pop(archive.id, None)
        return recorded

    def _scheduled_next_base(self, planning: Planning, op: YearOperation) -> bool:
        """The August base: a new empty base for the coming year, not current, unless opted out."""
        def body() -> bool:
            current = self.plannings.get_planning(planning.account_id, planning.id)
            change = self._year_change_for(current, op.year)
            if is_done(op, change):
                return False
            reason = self._no_next_base_reason(current, op)
            if reason:
                change.skip_next_base(reason=reason, due_at=op.at)
                self.save(change)
                return True
            base = self._new_year_base(current, current.base_id, op.cycle)
            current.add_base(base_id=base.id)
            change.record_next_base(base_id=base.id, source_base_id=current.base_id, scheduled=True, due_at=op.at)
            self.save(base, current, change)
            self.bases.base_cache.put(base)
            return True

        return self._run(planning.account_id, body)

    def _scheduled_version_change(self, planning: Planning, op: YearOperation) -> bool:
        """The (pre-)release: record the version; replace a base of the ending year by the coming
        year's (stopping the server first, after a save), keep a base of the coming year."""
        account_id, previous = planning.account_id, planning.base_id
        replacing = self._replaces_base(planning, op)
        was_in_service = planning.in_service
        if replacing:
            self.backups.take_backup(account_id, planning.id, before="version change")
            if was_in_service:
                self.bases.set_server_state(account_id, planning.id, "stopped")

        def body() -> bool:
            current = self.plannings.get_planning(account_id, planning.id)
            change = self._year_change_for(current, op.year)
            if is_done(op, change):
                return False
            if current.base_id != previous or (replacing and current.in_service):
                raise Conflict("the planning changed while its version was being changed; retried next minute")
            changed: list[Any] = [current, change]
            target = previous
            if replacing:
                target = change.next_base_id if change.next_base_id in current.base_ids else None
                target = target or self._base_of_year(current, op.cycle)
                if target is None:
                    base = self._new_year_base(current, previous, op.cycle)
                    current.add_base(base_id=base.id)
                    change.record_next_base(base_id=base.id, source_base_id=previous, scheduled=True, due_at=op.at)
                    changed.append(base)
                    target = base.id
                current.mount_base(base_id=target)
            facts = {"version": self.release_version(op.cycle), "base_id": target, "previous_base_id": previous,
                     "replaced": replacing, "server_stopped": replacing and was_in_service, "due_at": op.at}
            if op.kind == "pre_release":
                change.install_pre_release(**facts)
            else:
                change.change_version(choice=op.choice["choice"], **facts)
            self.save(*changed)
            for item in changed:
                if isinstance(item, Base):
                    self.bases.base_cache.put(item)
            return True

        return self._run(account_id, body)

    def start_year_scheduler(self, stop: threading.Event,
                             every: float = SCHEDULER_SECONDS) -> threading.Thread:
        """The scheduler's thread (:meth:`~campus.services.backups.Backups.start_scheduler`): in the process
        holding the "scheduler" lease it calls :meth:`run_due_year_operations` every minute, after the
        due saves and archives; the same thread as ``start_backup_scheduler`` gives."""
        return self.backups.start_scheduler(stop, every)
