"""The one clock.

Every timestamp campus produces (event times, session expiry, schedules) comes
from a :class:`Clock`. Production uses :class:`SystemClock`; tests drive a
:class:`ManualClock` and can live through weeks in a second.

Aggregate events read the clock through :func:`current_clock`, which the
application sets (a context variable) around each command it runs.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualClock:
    """A clock that only moves when told to (tests, demos)."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 9, 1, 8, 0, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            # Strictly increasing, so two events never share an instant by accident.
            self._now += timedelta(microseconds=1)
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = instant.astimezone(timezone.utc)


class InstantTooEarly(Exception):
    """A command's instant is earlier than the last event of an aggregate it changes (another
    server's clock is ahead, or a test set the clock back): the command path runs it again at `at`."""

    def __init__(self, at: datetime) -> None:
        super().__init__(f"the command's instant is earlier than {at.isoformat()}")
        self.at = at


class FrozenClock:
    """One instant, for every event of one command."""

    def __init__(self, instant: datetime) -> None:
        self._instant = instant

    def now(self) -> datetime:
        return self._instant


_SYSTEM = SystemClock()
_current: ContextVar[Clock] = ContextVar("campus_clock", default=_SYSTEM)


def current_clock() -> Clock:
    return _current.get()


def use_clock(clock: Clock):  # noqa: ANN201 - returns a contextvars Token
    return _current.set(clock)


def reset_clock(token) -> None:  # noqa: ANN001
    _current.reset(token)
