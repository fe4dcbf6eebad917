"""The repository every service reads aggregates from: what is in memory, never stale, never dirty.

Aggregates are kept in memory (:class:`AggregateCache`) once read or written. The cache only ever
holds committed states and is never changed in place: a command gets a copy (it may fail, and others
read meanwhile), which replaces the cached state once the command is stored (``committed``). Other
processes may have written since a state was kept: on PostgreSQL each read fast-forwards the aggregate
from the store (events after its version); on SQLite, where positions commit in order, one look at the
log per command and per HTTP request (:func:`fresh_reads`) finds what others changed since the last
look and drops it. See docs/DECISIONS.md, "At the speed of the disk".

Replay starts from the aggregate's newest library snapshot at or below the wanted version, if its stored
topic is one of ``snapshot_topics`` (the current layouts: older ones are ignored), else from the first
event.
"""

from __future__ import annotations

import copy
import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from itertools import chain
from typing import Any

import structlog
from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import PersistenceError

from campus.commands import CATCH_UP_ROWS, Scope, current_scope

log = structlog.get_logger("campus.repository")

AGGREGATE_CACHE_SIZE = 20_000  # committed aggregates kept in memory (sessions, users, plannings, ...)


class CommandRepository(Repository):
    """The library's repository, with what campus needs of it.

    - Inside a command it gives back the aggregates the command has already saved (their events wait for
      the command's one append), not their stored versions.
    - Aggregates are kept in memory (:class:`AggregateCache`). The cache only ever holds committed states
      and is never changed in place: a command gets a copy, which replaces the cached one once committed.
    - Other processes may have written since: on PostgreSQL each read fast-forwards the aggregate from the
      store; on SQLite, where positions commit in order, one look at the log's head per command and per
      HTTP request (:func:`fresh_reads`) finds what others changed since the last look, and drops it.
    - Replay uses a projector without the library's per-event runtime-protocol check, and starts from the
      newest snapshot at or below the wanted version when it is of a current layout (`snapshot_topics`).
    """

    def __init__(self, *args: Any, uncached: tuple[type, ...] = (), cache_size: int = AGGREGATE_CACHE_SIZE,
                 head: Callable[[int], list[tuple[int, Any]]] | None = None,
                 snapshot_topics: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memory = AggregateCache(cache_size)
        self.uncached = uncached  # kinds kept elsewhere (bases: BaseCache) or too big to keep
        self.head = head  # SQLite: the log after a position, as (position, aggregate id); None: fast-forward
        self.snapshot_topics = frozenset(snapshot_topics)  # stored topics of snapshots replay may start from

    def get(self, aggregate_id: Any, *, version: int | None = None, read_only: bool = False, **kwargs: Any) -> Any:
        """The aggregate, as of now or at `version`. Inside a command, a copy the command may change, unless
        `read_only` (the caller promises not to change it: it gets the state other readers share)."""
        scope = current_scope()
        if version is not None:
            return self._reconstruct_aggregate(aggregate_id, version, project)
        if scope is not None and aggregate_id in scope.saved:
            return scope.saved[aggregate_id]
        aggregate, shared = self._fresh(aggregate_id, scope)
        return copy.deepcopy(aggregate) if shared and scope is not None and not read_only else aggregate

    def _fresh(self, aggregate_id: Any, scope: Scope | None) -> tuple[Any, bool]:
        """The aggregate's committed state, as of now (from memory, fast-forwarded, or replayed), and
        whether that object is shared with other readers (kept in memory)."""
        seen = self._look_at_head(scope)
        cached = self.memory.get(aggregate_id)
        if cached is None:
            aggregate = self._reconstruct_aggregate(aggregate_id, None, project)
            if isinstance(aggregate, self.uncached):
                return aggregate, False
            return aggregate, self.memory.put(aggregate, as_of=seen)
        if self.head is not None:
            return cached, True
        new_events = list(self.event_store.get(originator_id=aggregate_id, gt=cached.version))
        if not new_events:
            return cached, True
        aggregate = project(copy.deepcopy(cached), new_events)  # copy on write: readers keep theirs
        return aggregate, self.memory.put(aggregate)

    def look_at_head(self) -> int | None:
        """SQLite: bring memory up to date with the log (once per command / HTTP request) and return the
        position it is right up to; None on PostgreSQL (each read fast-forwards instead)."""
        return self._look_at_head(current_scope())

    def _look_at_head(self, scope: Scope | None) -> int | None:
        """SQLite: drop what other processes changed since the last look (once per command, once per
        HTTP request, at every read elsewhere); the position up to which memory is now right."""
        if self.head is None:
            return None
        reads = scope if scope is not None else _request_reads.get()
        if reads is not None and reads.fresh:
            return self.memory.seen
        seen = self.memory.catch_up(self.head)
        if reads is not None:
            reads.fresh = True
        return seen

    def _reconstruct_aggregate(self, aggregate_id: Any, version: int | None, projector_func: Any) -> Any:
        """The aggregate at `version` (None: the last), replayed into a new object nobody else holds: from
        its newest usable snapshot at or below that version (:meth:`usable_snapshot`), then the events
        after it. The cyclic garbage collector is paused meanwhile (:func:`collector_paused`)."""
        with collector_paused():
            snapshot = self.usable_snapshot(aggregate_id, version)
            events = self.event_store.get(originator_id=aggregate_id,
                                          gt=snapshot.originator_version if snapshot else None, lte=version)
            aggregate = projector_func(None, chain([snapshot] if snapshot else [], events))
        if aggregate is None:
            raise AggregateNotFoundError(f"Aggregate {aggregate_id!r} version {version!r} not found.")
        return aggregate

    def usable_snapshot(self, aggregate_id: Any, version: int | None = None) -> Any:
        """The newest snapshot of the aggregate at or below `version`, if it is of a current layout
        (stored under one of `snapshot_topics`) and decodes; else None (replay from the first event)."""
        if self.snapshot_store is None or not self.snapshot_topics:
            return None
        stored = self.snapshot_store.recorder.select_events(aggregate_id, desc=True, limit=1, lte=version)
        if not stored or stored[0].topic not in self.snapshot_topics:
            return None
        try:
            return self.snapshot_store.mapper.to_domain_event(stored[0])
        except PersistenceError:
            raise
        except Exception:  # noqa: BLE001 - a snapshot is only a speed-up: replay from the events instead
            log.warning("snapshot_unreadable", aggregate_id=str(aggregate_id), version=stored[0].originator_version,
                        exc_info=True)
            return None

    def is_shared(self, aggregate: Any) -> bool:
        """Whether this object is the one readers share (to be changed only through a copy)."""
        return self.memory.get(aggregate.id) is aggregate

    def committed(self, aggregates: Any, positions: list[int]) -> None:
        """A command's aggregates are stored (at `positions`): their states are the newest committed ones."""
        if self.head is not None:
            self.memory.own(positions)
        last = max(positions, default=None)
        for aggregate in aggregates:
            if not isinstance(aggregate, self.uncached):
                self.memory.put(aggregate, as_of=last)


@dataclass
class RequestReads:
    fresh: bool = False  # memory was brought up to date for this request


_request_reads: ContextVar[RequestReads | None] = ContextVar("campus_request_reads", default=None)


def fresh_reads() -> Token:
    """Start an HTTP request's reads: the first one brings memory up to date with the log, the others
    read from memory (a request reads the store as of its first read, plus its own commands)."""
    return _request_reads.set(RequestReads())


class AggregateCache:
    """Committed aggregates, the most recently used last, at most `size` of them. Entries are replaced,
    never changed in place; an older version never replaces a newer one.

    On SQLite it also knows up to which log position it is right (`seen`): :meth:`catch_up` reads the
    positions written since, and drops the aggregates other processes changed (their positions are kept
    as "changed at", so a state read before that change is never put back).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._catching_up = threading.Lock()
        self.seen = 0  # every change up to this position is in memory or dropped from it
        self._own: set[int] = set()  # positions of this process's commands, not yet passed by `seen`
        self._changed: OrderedDict[Any, int] = OrderedDict()  # aggregate id -> position of its last change
        self._forgotten_changes = 0  # the newest position dropped from `_changed` (bounded like the entries)

    def get(self, aggregate_id: Any) -> Any:
        with self._lock:
            aggregate = self._entries.get(aggregate_id)
            if aggregate is not None:
                self._entries.move_to_end(aggregate_id)
            return aggregate

    def put(self, aggregate: Any, as_of: int | None = None) -> bool:
        """Keep `aggregate`, read (or written) when the log was at position `as_of` (None: not tracked);
        whether it is now the one kept."""
        with self._lock:
            if as_of is not None:
                changed = self._changed.get(aggregate.id, self._forgotten_changes)
                if changed > as_of:
                    return False  # changed by another process after this state was read
            current = self._entries.get(aggregate.id)
            if current is not None and current.version > aggregate.version:
                return False
            self._entries[aggregate.id] = aggregate
            self._entries.move_to_end(aggregate.id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return True

    def forget(self, ids: Any) -> None:
        with self._lock:
            for aggregate_id in ids:
                self._entries.pop(aggregate_id, None)

    def changed_since(self, aggregate_id: Any, position: int) -> bool:
        """Whether another process may have changed the aggregate after `position` (as far as the log was
        read: call after a catch-up). Changes older than the remembered ones count as possible."""
        with self._lock:
            return self._changed.get(aggregate_id, self._forgotten_changes) > position

    def own(self, positions: list[int]) -> None:
        """Positions this process wrote: nothing to drop when the log is read past them."""
        with self._lock:
            self._own.update(p for p in positions if p > self.seen)

    def catch_up(self, read_after: Callable[[int], list[tuple[int, Any]]]) -> int:
        """Read the log after `seen` and drop what others changed; the new `seen`."""
        with self._catching_up:
            while True:
                rows = read_after(self.seen)
                self._drop_changed(rows)
                if len(rows) < CATCH_UP_ROWS:
                    return self.seen

    def _drop_changed(self, rows: list[tuple[int, Any]]) -> None:
        with self._lock:
            for position, aggregate_id in rows:
                if position in self._own:
                    self._own.discard(position)
                    continue
                self._entries.pop(aggregate_id, None)
                self._changed[aggregate_id] = position
                self._changed.move_to_end(aggregate_id)
            while len(self._changed) > self.size:
                _, position = self._changed.popitem(last=False)
                self._forgotten_changes = max(self._forgotten_changes, position)
            if rows:
                self.seen = max(self.seen, rows[-1][0])
                self._own = {p for p in self._own if p > self.seen}


_collector_pauses = 0  # replays running in this process with the cyclic garbage collector paused
_collector_was_enabled = False
_collector_lock = threading.Lock()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a replay builds its aggregate (in any thread; it
    resumes when the last replay ends, if it was running before the first).

    Decoding a big state makes a million new objects, and each few hundred of them start a collection
    that walks the young ones, and regularly every object of the process: measured on a 92,742-record
    base, the decoding of its snapshot took 1.4 s with the collector and 0.55 s without. A replay
    makes no cyclic garbage (reference counting frees the events it folds); whatever other threads
    make meanwhile is collected once it resumes."""
    global _collector_pauses, _collector_was_enabled
    with _collector_lock:
        if _collector_pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _collector_pauses += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector_pauses -= 1
            if _collector_pauses == 0 and _collector_was_enabled:
                gc.enable()


def project(aggregate: Any, events: Any) -> Any:
    """Fold events into an aggregate (the library's projector without its per-event runtime-protocol
    check, which cost almost half of a replay)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate
